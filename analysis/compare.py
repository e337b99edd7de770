"""Paired comparisons of each variant against a baseline variant: same cell (all keys but the variant), same seed.

Nested regimes make seeds a natural pairing: with one seed, the data draw of a cell is the same for every variant,
so the per-seed difference removes the draw's share of the variance. For each (variant, cell, metric):
mean difference (variant - baseline) with a t-interval, the paired t-test (scipy.stats.ttest_rel) and the
Wilcoxon signed-rank test (scipy.stats.wilcoxon), each Holm-corrected across every test of the same metric
(all cells and all variants compared with the baseline: the ``family`` column names it, ``family_size`` counts the
p values in it), and the contrast's verdict (analysis.verdicts: gain / loss / equivalent / inconclusive against the
metric's smallest effect of interest, undetermined below 3 seeds or at zero variance).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from analysis.aggregate import COMPARE_PREFIXES, failure_reason, t_interval
from analysis.verdicts import contrast, is_constant, parse_sesoi, sesoi_for

DEFAULT_BASELINE = "unimodal"
VARIANT_COLUMNS = ("model.variant", "variant")


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down; NaNs are left out of the family and stay NaN).

    With the m non-NaN p-values sorted ascending, p_(1) <= ... <= p_(m):
        adj_(i) = min(1, max_{j <= i} (m - j + 1) * p_(j))
    and each adjusted value goes back to its original position. Rejecting where adj <= alpha controls the
    family-wise error rate at alpha (Holm 1979). Same result as statsmodels' multipletests(method="holm").
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    mask = ~np.isnan(p)
    q = p[mask]
    m = len(q)
    if m == 0:
        return out
    order = np.argsort(q, kind="stable")
    scaled = (m - np.arange(m)) * q[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    back = np.empty(m)
    back[order] = adjusted
    out[mask] = back
    return out


def paired_test(baseline, variant) -> dict:
    """Statistics of the paired differences variant - baseline (pairs with a NaN on either side are dropped)."""
    b = np.asarray(baseline, dtype=float)
    v = np.asarray(variant, dtype=float)
    ok = ~(np.isnan(b) | np.isnan(v))
    b, v = b[ok], v[ok]
    d = v - b
    n = len(d)
    low, high = t_interval(d)
    row = {
        "n_pairs": n,
        "mean_baseline": float(b.mean()) if n else np.nan,
        "mean_variant": float(v.mean()) if n else np.nan,
        "mean_diff": float(d.mean()) if n else np.nan,
        "std_diff": float(d.std(ddof=1)) if n > 1 else np.nan,
        "diff_ci95_low": low,
        "diff_ci95_high": high,
        "t_stat": np.nan,
        "p_ttest": np.nan,
        "p_wilcoxon": np.nan,
        "note": "",
    }
    if n < 2:
        row["note"] = f"n={n} pair(s): no test"
        return row
    if np.all(d == 0):
        row["note"] = "all differences zero: no test"
        return row
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if is_constant(d):
            # zero variance (up to rounding): t = inf and scipy's p = 0 would read as certainty; there is no test
            notes.append("constant nonzero difference across seeds: zero variance, no t-test (NaN, not p = 0)")
        else:
            t = stats.ttest_rel(v, b)
            row["t_stat"], row["p_ttest"] = float(t.statistic), float(t.pvalue)
        try:
            row["p_wilcoxon"] = float(stats.wilcoxon(d).pvalue)
        except ValueError as exc:
            notes.append(f"wilcoxon: {exc}")
    if np.any(d == 0):
        notes.append("zero differences dropped by wilcoxon")
    if n < 6:
        notes.append(f"n={n}: smallest possible two-sided wilcoxon p is {2 / 2 ** n:.3g}")
    row["note"] = "; ".join(notes)
    return row


# -- verdict tables (the reports' contrasts: DESIGN.md "How a study settles a question") -------------------------

VERDICT_COLUMNS = ["family", "family_size", "n", "seeds", "estimate", "ci95_low", "ci95_high", "ci90_low",
                   "ci90_high", "sd", "sesoi", "verdict", "within_sesoi", "p", "p_holm", "p_tost", "seeds_needed",
                   "note"]


def verdict_row(diffs: pd.Series | np.ndarray, sesoi: float | None, seeds=None, note: str = "") -> dict:
    """The VERDICT_COLUMNS of one contrast (family, family_size and p_holm are filled by ``holm_families``):
    ``diffs`` the per-seed paired differences, ``seeds`` their seeds; ``note`` goes before the contrast's own."""
    d = pd.Series(diffs, dtype=float) if not isinstance(diffs, pd.Series) else diffs.astype(float)
    if seeds is None:
        seeds = d.index[d.notna()] if isinstance(diffs, pd.Series) else []
    row = contrast(d.to_numpy(), sesoi).row()
    row["note"] = "; ".join(x for x in (note, row["note"]) if x)
    return {"family": "", "family_size": 0, "seeds": ",".join(str(int(s)) for s in sorted(seeds)), **row,
            "p_holm": np.nan}


def missing_row(sesoi: float | None, note: str) -> dict:
    """A contrast one side of which has no finished trial: n = 0, no statistic, the reason in ``note``."""
    return verdict_row(np.array([]), sesoi, seeds=[], note=note) | {"note": note}


def holm_families(table: pd.DataFrame, family: pd.Series) -> pd.DataFrame:
    """Set ``family`` (a label per row), ``p_holm`` (Holm within each family over the rows with a p value) and
    ``family_size`` (how many p values that is: the m of the correction; rows without a test are not counted)."""
    table = table.copy()
    table["family"] = family.to_numpy()
    table["p_holm"] = np.nan
    table["family_size"] = 0
    for _, idx in table.groupby("family", sort=False).groups.items():
        table.loc[idx, "p_holm"] = holm(table.loc[idx, "p"].to_numpy(float))
        table.loc[idx, "family_size"] = int(table.loc[idx, "p"].notna().sum())
    table["family_size"] = table["family_size"].astype("int64")
    return table


def resolve_sesoi(cli, recorded: dict[str, float] | None) -> tuple[dict[str, float], str]:
    """The deltas a report uses and where they come from: ``--sesoi`` values when given (they replace the spec's
    whole mapping), else the study's recorded analysis.sesoi, else none (equivalence is then not tested)."""
    if cli:
        sesoi, source = parse_sesoi(cli), "--sesoi"
    elif recorded:
        sesoi, source = parse_sesoi(recorded), "the spec's analysis.sesoi (parent-run tag bma.sesoi)"
    else:
        return {}, "none declared (spec analysis.sesoi or --sesoi): equivalence not tested"
    return sesoi, source + ": " + ", ".join(f"{g} = {d:g}" for g, d in sesoi.items())


STAT_COLUMNS = ["variant", "baseline", "metric", "family", "family_size", "n_pairs", "seeds", "mean_baseline",
                "mean_variant", "mean_diff", "std_diff", "diff_ci95_low", "diff_ci95_high", "diff_ci90_low",
                "diff_ci90_high", "sesoi", "verdict", "within_sesoi", "seeds_needed", "t_stat", "p_ttest",
                "p_ttest_holm", "p_tost", "p_wilcoxon", "p_wilcoxon_holm", "note"]
FAMILY_DEFINITION = "every test of this metric in the comparison (all cells, every variant against the baseline)"


def _with_verdict(row: dict, base, variant, sesoi: float | None) -> dict:
    """paired_test's row plus the contrast's verdict columns (analysis.verdicts) on the same pairs."""
    b, v = np.asarray(base, dtype=float), np.asarray(variant, dtype=float)
    c = contrast(v - b, sesoi)
    row.update({"diff_ci90_low": c.ci90[0], "diff_ci90_high": c.ci90[1], "sesoi": np.nan if sesoi is None else sesoi,
                "verdict": c.verdict, "within_sesoi": c.within_sesoi, "seeds_needed": c.seeds_needed,
                "p_tost": c.p_tost})
    extra = c.note if c.verdict in ("undetermined", "inconclusive") or "smaller than delta" in c.note else ""
    row["note"] = "; ".join(x for x in (row["note"], extra) if x)
    return row


def _empty(cell: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=cell + STAT_COLUMNS)


def compare_metrics(runs: pd.DataFrame) -> list[str]:
    """The value columns compared by default: final values of accuracy, retrieval and association metrics."""
    return [c for c in runs.columns if c.startswith("final/") and c[len("final/") :].startswith(COMPARE_PREFIXES)]


def compare_variants(
    runs: pd.DataFrame,
    keys: list[str],
    baseline: str | None = None,
    metrics: list[str] | None = None,
    sesoi: dict[str, float] | None = None,
) -> tuple[pd.DataFrame, str | None, list[str]]:
    """(table, baseline used, notes). ``runs`` as collected: only rows with ``used`` enter the comparison.
    ``sesoi``: {metric glob: delta} for the verdicts (analysis.verdicts.sesoi_for picks each metric's)."""
    notes: list[str] = []
    used = runs[runs["used"]]
    cell = [k for k in keys if k not in VARIANT_COLUMNS]
    variants = sorted(used["variant"].dropna().unique())
    if baseline is None:
        if DEFAULT_BASELINE in variants:
            baseline = DEFAULT_BASELINE
        else:
            notes.append(f"no comparison: default baseline {DEFAULT_BASELINE!r} absent (variants: "
                         f"{', '.join(variants) or 'none'}); pass --baseline")
            return _empty(cell), None, notes
    if baseline not in variants:
        notes.append(f"no comparison: baseline {baseline!r} has no finished trial (variants: {', '.join(variants)})")
        return _empty(cell), baseline, notes
    live = runs[~runs["superseded"]] if "superseded" in runs else runs
    for variant in sorted(set(live["variant"].dropna()) - set(variants)):
        notes.append(f"variant {variant!r}: no finished trial "
                     f"({failure_reason(live[live['variant'] == variant])}); not compared")
    others = [v for v in variants if v != baseline]
    if not others:
        notes.append(f"no comparison: only the baseline variant {baseline!r} ran")
        return _empty(cell), baseline, notes
    metrics = metrics if metrics is not None else compare_metrics(runs)

    base = used[used["variant"] == baseline]
    absent = [m for m in metrics if m in base and base[m].isna().all()]
    if absent:
        notes.append(f"not compared, the baseline {baseline!r} logs no value of: "
                     + ", ".join(m.removeprefix("final/") for m in absent))
        metrics = [m for m in metrics if m not in absent]
    rows = []
    for variant in others:
        mine = used[used["variant"] == variant]
        pairs = mine.merge(base, on=cell + ["seed"], suffixes=("", "__base"))
        for ckey, grp in mine.groupby(cell, dropna=False, sort=True):
            ckey = ckey if isinstance(ckey, tuple) else (ckey,)
            sel = np.ones(len(pairs), dtype=bool)
            for k, val in zip(cell, ckey):
                col = pairs[k]
                sel &= (col.isna().to_numpy() if pd.isna(val) else (col == val).to_numpy())
            cp = pairs[sel]
            for metric in metrics:
                if metric not in pairs.columns or grp[metric].isna().all():
                    continue
                delta = sesoi_for(metric, sesoi)
                if cp.empty or cp[f"{metric}__base"].isna().all():
                    row = _with_verdict(paired_test([], []), [], [], delta)
                    row["note"] = f"baseline {baseline!r} has no value for this cell/metric" if not cp.empty else \
                        f"no seed shared with baseline {baseline!r} in this cell"
                else:
                    row = _with_verdict(paired_test(cp[f"{metric}__base"], cp[metric]), cp[f"{metric}__base"],
                                        cp[metric], delta)
                rows.append({**dict(zip(cell, ckey)), "variant": variant, "baseline": baseline, "metric": metric,
                             "seeds": ",".join(str(int(s)) for s in sorted(cp["seed"].dropna())), **row})
    table = pd.DataFrame(rows)
    if table.empty:
        notes.append("no comparison: no metric shared between the baseline and the other variants")
        return _empty(cell), baseline, notes
    table["p_ttest_holm"] = np.nan
    table["p_wilcoxon_holm"] = np.nan
    table["family"] = table["metric"].str.removeprefix("final/")  # the Holm family: one per metric
    table["family_size"] = 0
    for _, idx in table.groupby("family", sort=False).groups.items():
        table.loc[idx, "p_ttest_holm"] = holm(table.loc[idx, "p_ttest"])
        table.loc[idx, "p_wilcoxon_holm"] = holm(table.loc[idx, "p_wilcoxon"])
        table.loc[idx, "family_size"] = int(table.loc[idx, "p_ttest"].notna().sum())
    table["family_size"] = table["family_size"].astype("int64")
    table = table[cell + STAT_COLUMNS]
    table["n_pairs"] = table["n_pairs"].astype("int64")
    return table, baseline, notes
