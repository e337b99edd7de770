"""The exchange rate between paired and unpaired samples, interpolated from the (pairing ratio x train size) grid.

Definition (docs/analysis.md, "Exchange rate"). A cell with train size N (samples per modality) and pairing ratio
p trains on P = pN pairs and U = (1 - p)N unpaired samples per modality. Read the accuracy as a surface A(P, U).
The marginal value of a pair is dA/dP (U fixed), of an unpaired sample dA/dU (P fixed), and the

    exchange rate R = (dA/dP) / (dA/dU)

is the number of unpaired samples that buy the same gain as one more pair. The grid moves along p (N fixed) and
along N (p fixed), never along P or U alone; by the chain rule, with g_p = dA/dp at fixed N and
g_l = dA/d(ln N) = N dA/dN at fixed p:

    g_p = N (dA/dP - dA/dU),   g_l = N (p dA/dP + (1 - p) dA/dU)
    =>  dA/dP = (g_l + (1 - p) g_p) / N,   dA/dU = (g_l - p g_p) / N,   R = (g_l + (1 - p) g_p) / (g_l - p g_p).

Each rectangle of adjacent grid values [p_i, p_i+1] x [N_j, N_j+1] whose four corners ran gives one estimate at
its centre (p = arithmetic mean of the p's, N = geometric mean of the N's): the gradient of the bilinear
interpolant in (p, ln N), i.e. g_p and g_l are the means of the two opposite-edge finite differences. Train
sizes are log-spaced and learning curves are closer to linear in ln N than in N, hence ln N. R is reported only
where both marginal values are positive (otherwise more of that kind of sample does not help here and the ratio
means nothing).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.aggregate import t_interval

P_KEY, N_KEY = "regime.pairing_ratio", "regime.train_size"


def _marginals(a00, a10, a01, a11, p0, p1, n0, n1):
    """(g_p, g_l, dA/dP, dA/dU) at the rectangle centre; a_ij = A(p_i, N_j). Works on arrays."""
    pm, nm = (p0 + p1) / 2, np.sqrt(n0 * n1)
    g_p = ((a10 - a00) + (a11 - a01)) / 2 / (p1 - p0)
    g_l = ((a01 - a00) + (a11 - a10)) / 2 / np.log(n1 / n0)
    d_pair = (g_l + (1 - pm) * g_p) / nm
    d_unpair = (g_l - pm * g_p) / nm
    return g_p, g_l, d_pair, d_unpair


COLUMNS = ["metric", "p_low", "p_high", "N_low", "N_high", "p_mid", "N_mid", "P_mid", "U_mid", "dA_dp", "dA_dlnN",
           "dA_dP_per_1k", "dA_dU_per_1k", "n_seeds", "dA_dP_per_1k_ci95_low", "dA_dP_per_1k_ci95_high",
           "dA_dU_per_1k_ci95_low", "dA_dU_per_1k_ci95_high", "exchange_rate", "note"]


def exchange_rates(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """(table, notes): one row per (other keys, metric, grid rectangle). ``runs``: rows with ``used`` count."""
    notes: list[str] = []
    used = runs[runs["used"]]
    group = [k for k in keys if k not in (P_KEY, N_KEY)]
    empty = pd.DataFrame(columns=group + COLUMNS)
    if P_KEY not in keys or N_KEY not in keys or used.empty:
        return empty, ["exchange rate skipped: no finished trial with regime.pairing_ratio and regime.train_size"]
    ps = sorted(used[P_KEY].dropna().unique())
    ns = sorted(used[N_KEY].dropna().unique())
    if len(ps) < 2 or len(ns) < 2:
        notes.append(
            f"exchange rate skipped: the grid needs >= 2 pairing ratios and >= 2 train sizes "
            f"(has {len(ps)} and {len(ns)}): along p alone only dA/dP - dA/dU is identified"
        )
        return empty, notes
    rows = []
    for gkey, grp in used.groupby(group, dropna=False, sort=True):
        gkey = gkey if isinstance(gkey, tuple) else (gkey,)
        gp = sorted(grp[P_KEY].unique())
        gn = sorted(grp[N_KEY].unique())
        for metric in metrics:
            if metric not in grp or grp[metric].isna().all():
                continue
            means = grp.groupby([P_KEY, N_KEY])[metric].mean()
            per_seed = grp.pivot_table(index="seed", columns=[P_KEY, N_KEY], values=metric, aggfunc="mean")
            for i in range(len(gp) - 1):
                for j in range(len(gn) - 1):
                    p0, p1, n0, n1 = gp[i], gp[i + 1], gn[j], gn[j + 1]
                    corners = [(p0, n0), (p1, n0), (p0, n1), (p1, n1)]
                    if not all(c in means.index and not np.isnan(means[c]) for c in corners):
                        continue
                    g_p, g_l, d_pair, d_unpair = _marginals(*(means[c] for c in corners), p0, p1, n0, n1)
                    row = {**dict(zip(group, gkey)), "metric": metric, "p_low": p0, "p_high": p1,
                           "N_low": int(n0), "N_high": int(n1), "p_mid": (p0 + p1) / 2,
                           "N_mid": float(np.sqrt(n0 * n1))}
                    row["P_mid"] = row["p_mid"] * row["N_mid"]
                    row["U_mid"] = (1 - row["p_mid"]) * row["N_mid"]
                    row["dA_dp"] = g_p
                    row["dA_dlnN"] = g_l
                    row["dA_dP_per_1k"] = 1000 * d_pair
                    row["dA_dU_per_1k"] = 1000 * d_unpair
                    # seed-wise estimates (nested regimes share a draw per seed) give the intervals
                    complete = per_seed[[c for c in corners if c in per_seed.columns]].dropna() \
                        if all(c in per_seed.columns for c in corners) else pd.DataFrame()
                    if len(complete):
                        _, _, sp, su = _marginals(*(complete[c].to_numpy() for c in corners), p0, p1, n0, n1)
                    else:
                        sp = su = np.array([])
                    row["n_seeds"] = len(sp)
                    lo, hi = t_interval(1000 * sp)
                    row["dA_dP_per_1k_ci95_low"], row["dA_dP_per_1k_ci95_high"] = lo, hi
                    lo, hi = t_interval(1000 * su)
                    row["dA_dU_per_1k_ci95_low"], row["dA_dU_per_1k_ci95_high"] = lo, hi
                    if d_pair > 0 and d_unpair > 0:
                        row["exchange_rate"] = d_pair / d_unpair
                        row["note"] = ""
                    else:
                        row["exchange_rate"] = np.nan
                        which = "unpaired samples" if d_unpair <= 0 else "pairs"
                        row["note"] = f"more {which} do not raise the metric here: rate undefined"
                    rows.append(row)
    if not rows:
        notes.append("exchange rate: no grid rectangle with all four corners finished")
        return empty, notes
    table = pd.DataFrame(rows)[group + COLUMNS]
    table["n_seeds"] = table["n_seeds"].astype("int64")
    return table, notes
