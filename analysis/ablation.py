"""The ablation report: does each stage-3 improvement move the Table-1 quantity it targets, and the accuracy?

    python -m analysis.ablation --study ablation --out out/ablation

Reads one study whose trials carry the ``bma.arm`` tag (a spec with ``arms:``, e.g. study/specs/ablation.yaml) and
compares every arm with the baseline arm (``bma`` by default) paired by seed: each seed is one data draw for every
arm (nested regimes), so the per-seed difference removes the draw's share of the variance. Writes:

- ``arms.{csv,md}``: per arm and metric, mean and 95 % t-interval over seeds;
- ``vs_baseline.{csv,md}``: per arm and metric, the mean paired difference arm - baseline with its t-interval, the
  paired t-test and Wilcoxon, Holm-corrected within each metric across the arms;
- ``table1.{csv,md}``: the plan's Table 1 with a "did it move" column: for each arm, its targeted quantity's change
  and the sound and image probe accuracies' changes (moved = Holm-adjusted t-test p < 0.05).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.aggregate import t_interval
from analysis.boost import report_cli, write_tables
from analysis.collect import AnalysisError, collect_study
from analysis.compare import holm, paired_test

SEED = "seed"
ALPHA = 0.05
# The Table-1 quantity each switch targets (docs/model.md, "Improvements"), by the setting that turns it on; the
# first metric the study logged is used. An arm that sets several switches targets all of them.
CYCLE_MI = ("info/I_S_Sprime/gauss_noise_1", "info/I_S_Sprime/auto", "info/I_S_Sprime/ksg", "info/I_S_Sprime/gaussian")
TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model.tau_m_final": ("H(W_v)", ("info/H_Wv/exact",)),
    "model.addressing": ("H(W_v)", ("info/H_Wv/exact",)),
    "loss.w_slot_decorrelation": ("I(slot; class)", ("info/I_slot_class_v/miller_madow",)),
    "loss.w_variance": ("I(h_v; Y) (probe bound)", ("info/I_hv_Y/probe_bound",)),
    "loss.w_infomax": ("I(h_v; X_v, X_true_s) (InfoNCE bound)", ("info/I_hv_Xv_Xs/infonce_bound",)),
    "model.slot_reseed_every": ("eff_slots_v = exp H(M_v)", ("info/eff_slots_v/exact",)),
    "loss.cycle_space": ("I(S; S')", CYCLE_MI),
    "optim.lr_control": ("I(S; S')", CYCLE_MI),
}
ACCURACY = ("acc/sound_probe_h/k5", "acc/image_probe_h/k5", "acc/sound_probe_h/k20", "acc/image_probe_h/k20",
            "acc/sound_probe_h", "acc/image_probe_h", "assoc/i2s_acc", "assoc/s2i_acc")


def arm_switches(runs: pd.DataFrame, baseline: str) -> dict[str, list[str]]:
    """Which TARGETS settings each arm changes from the baseline arm (the collected runs carry every setting that
    differs between cells as a column; one that never differs is no switch)."""
    base = runs[runs["arm"] == baseline]
    out: dict[str, list[str]] = {}
    for arm, group in runs.groupby("arm"):
        out[arm] = [s for s in TARGETS if s in runs.columns and not base.empty
                    and group[s].astype(str).iloc[0] != base[s].astype(str).iloc[0]]
    return out


def report(study: str, tracking_uri: str | None, out: Path, baseline: str = "bma",
           data=None) -> dict[str, pd.DataFrame]:
    """``data``: the study as collect_study read it already (the study page passes its own), else read here."""
    data = data if data is not None else collect_study(study, tracking_uri)
    runs = data.used.copy()
    if runs.empty:
        raise AnalysisError(f"study {study}: no finished trial")
    runs["arm"] = runs["arm"].fillna("")  # the arm tag (study/record.py ARM), as collected
    if baseline not in set(runs["arm"]):
        raise AnalysisError(f"study {study}: no trial of the baseline arm {baseline!r} (arms: {sorted(set(runs['arm']))})")
    # the arms' switches are columns of the collected runs already (settings that differ between cells)
    metrics = [m for m in ACCURACY if f"final/{m}" in runs.columns]
    targets = {s: next((m for m in ms if f"final/{m}" in runs.columns and runs[f"final/{m}"].notna().any()), None)
               for s, (_, ms) in TARGETS.items()}
    info = sorted({m for m in targets.values() if m})
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    for arm, group in runs.groupby("arm"):
        for metric in metrics + info:
            x = group[f"final/{metric}"].to_numpy(float)
            x = x[~np.isnan(x)]
            low, high = t_interval(x)
            rows.append({"arm": arm, "metric": metric, "n_seeds": len(x), "mean": x.mean() if len(x) else np.nan,
                         "ci95_low": low, "ci95_high": high})
    arms_table = pd.DataFrame(rows)

    base = runs[runs["arm"] == baseline].groupby(SEED)
    rows = []
    for arm, group in runs[runs["arm"] != baseline].groupby("arm"):
        g = group.groupby(SEED)
        for metric in metrics + info:
            b, a = base[f"final/{metric}"].mean(), g[f"final/{metric}"].mean()
            common = b.index.intersection(a.index)
            rows.append({"arm": arm, "metric": metric, **paired_test(b[common].to_numpy(), a[common].to_numpy())})
    vs = pd.DataFrame(rows)
    if not vs.empty:
        for column in ("p_ttest", "p_wilcoxon"):
            vs[f"{column}_holm"] = np.nan
            for _, idx in vs.groupby("metric").groups.items():
                vs.loc[idx, f"{column}_holm"] = holm(vs.loc[idx, column].to_numpy(float))

    switches = arm_switches(runs, baseline)
    rows = []
    for arm in sorted(set(runs["arm"]) - {baseline}):
        for setting in switches.get(arm, []):
            quantity, _ = TARGETS[setting]
            row = {"arm": arm, "switch": setting, "targeted quantity": quantity, "metric": targets[setting]}
            for label, metric in (("target", targets[setting]), ("sound k5", "acc/sound_probe_h/k5"),
                                  ("image k5", "acc/image_probe_h/k5")):
                hit = vs[(vs["arm"] == arm) & (vs["metric"] == metric)] if metric else pd.DataFrame()
                if hit.empty:
                    row[f"{label} delta"], row[f"{label} moved"] = np.nan, "not logged"
                    continue
                h = hit.iloc[0]
                row[f"{label} delta"] = h["mean_diff"]
                row[f"{label} ci95"] = f"[{h['diff_ci95_low']:.3g}, {h['diff_ci95_high']:.3g}]"
                row[f"{label} p_holm"] = h["p_ttest_holm"]
                p_holm = h["p_ttest_holm"]
                row[f"{label} moved"] = "n/a (no test)" if np.isnan(p_holm) else ("yes" if p_holm < ALPHA else "no")
            rows.append(row)
    table1 = pd.DataFrame(rows)
    tables = {"arms": arms_table, "vs_baseline": vs, "table1": table1}
    write_tables(tables, out)
    return tables


def main(argv: list[str] | None = None) -> int:
    extra = (("--baseline", {"default": "bma", "help": "the arm every other arm is compared with"}),)
    return report_cli("python -m analysis.ablation", __doc__.split("\n\n")[0], report, argv, extra)


if __name__ == "__main__":
    raise SystemExit(main())
