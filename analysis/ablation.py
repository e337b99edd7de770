"""The ablation report: does each stage-3 improvement move the Table-1 quantity it targets, and the accuracy?

    python -m analysis.ablation --study ablation --out out/ablation

Reads one study whose trials carry the ``bma.arm`` tag (a spec with ``arms:``, e.g. study/specs/ablation.yaml) and
compares every arm with the baseline arm (``bma`` by default) paired by seed: each seed is one data draw for every
arm (nested regimes), so the per-seed difference removes the draw's share of the variance. Writes:

- ``arms.{csv,md}``: per arm, cell (the grid keys besides the arm that vary, e.g. regime.pairs) and metric, the
  seeds (one value per seed: ``n_seeds`` counts seeds, never cells), mean and 95 % t-interval over seeds;
- ``vs_baseline.{csv,md}``: per arm, cell and metric, the contrast arm - baseline paired by seed within the cell,
  with its verdict (analysis.verdicts: estimate, 95 % and 90 % CI, delta, gain / loss / equivalent / inconclusive,
  p, seeds needed) and Holm within one family per metric (every arm, every cell: ``family``, ``family_size``);
- ``table1.{csv,md}``: the plan's Table 1 with a "did it move" column: for each arm (and cell), its targeted
  quantity's change and the sound and image probe accuracies' changes: "yes, up/down" = a gain or loss whose t-test
  also survives Holm; "no (equivalent within delta)"; "inconclusive"; "n/a (no test)" below 3 seeds.

An arm (or a cell of one) whose trials all failed is said, not dropped: a line in the report and on stderr, and
rows with n = 0 and the failures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.aggregate import t_interval
from analysis.boost import (_select, absent_groups, absent_notes, failure_reason, report_cli, report_sesoi, short,
                            write_report)
from analysis.collect import AnalysisError, collect_study
from analysis.compare import VERDICT_COLUMNS, holm_families, missing_row, verdict_row
from analysis.tables import verdict_markdown
from analysis.verdicts import sesoi_for

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

    def differs(a, b) -> bool:  # unset (None / NaN) on both sides is no change; pandas 3 keeps NaN through astype(str)
        return not (pd.isna(a) and pd.isna(b)) and str(a) != str(b)

    out: dict[str, list[str]] = {}
    for arm, group in runs.groupby("arm"):
        out[arm] = [s for s in TARGETS if s in runs.columns and not base.empty
                    and differs(group[s].iloc[0], base[s].iloc[0])]
    return out


ARM_COLUMNS = ("arm", "model.variant", "variant")  # what an arm is; never a cell key of the pairing


def ablation_cells(runs: pd.DataFrame, keys: list[str]) -> list[str]:
    """The cell keys an arm is compared within: the study's keys besides the arm (and the variant an arm may set)
    that take more than one value (e.g. regime.pairs when the ablation grid sweeps it). Seeds pair within a cell."""
    return [k for k in keys if k not in ARM_COLUMNS and k not in (SEED, "regime.seed") and k in runs.columns
            and runs[k].astype(str).nunique(dropna=False) > 1]


FAMILY_DEFINITION = "every arm against the baseline arm, in every cell, for this metric"


def _moved(verdict: str, p_holm: float, within: bool, n: int = 3) -> str:
    """Table 1's "did it move": the contrast's verdict, and whether its t-test survives Holm within its family."""
    if n == 0:
        return "n/a (no finished trial)"
    if verdict in ("gain", "loss"):
        way = "up" if verdict == "gain" else "down"
        if not (p_holm < ALPHA):
            return f"{verdict} by its own CI, not after Holm"
        return f"yes, {way}" + (" (smaller than delta)" if within else "")
    if verdict == "equivalent":
        return "no (equivalent within delta)"
    if verdict == "inconclusive":
        return "inconclusive"
    return "n/a (no test)"


def report(study: str, tracking_uri: str | None, out: Path, baseline: str = "bma",
           sesoi: list[str] | None = None, data=None) -> dict[str, pd.DataFrame]:
    """``data``: the study as collect_study read it already (the study page passes its own), else read here."""
    data = data if data is not None else collect_study(study, tracking_uri)
    everything = data.runs[~data.runs["superseded"]].copy()
    everything["arm"] = everything["arm"].fillna("")  # the arm tag (bma/record.py ARM), as collected
    runs = everything[everything["used"]]
    if runs.empty:
        raise AnalysisError(f"study {study}: no finished trial")
    if baseline not in set(runs["arm"]):
        why = failure_reason(everything[everything["arm"] == baseline])
        raise AnalysisError(f"study {study}: no finished trial of the baseline arm {baseline!r}"
                            + (f" ({why})" if why else "") + f" (arms: {sorted(set(everything['arm']))})")
    deltas, source, notes = report_sesoi(study, tracking_uri, sesoi)
    cells = ablation_cells(everything, data.keys)
    # the arms' switches are columns of the collected runs already (settings that differ between cells)
    metrics = [m for m in ACCURACY if f"final/{m}" in runs.columns]
    targets = {s: next((m for m in ms if f"final/{m}" in runs.columns and runs[f"final/{m}"].notna().any()), None)
               for s, (_, ms) in TARGETS.items()}
    info = sorted({m for m in targets.values() if m})
    absent = absent_groups(everything, ["arm"] + cells)
    notes += absent_notes(absent, lambda r: "arm " + ", ".join(
        [repr(r["arm"])] + [f"{short(k)}={r[k]}" for k in cells]))

    # per arm, cell and metric: the seeds (one value per seed), mean and t-interval
    rows = []
    for key, group in everything.groupby(["arm"] + cells, dropna=False, sort=True):
        where = dict(zip(["arm"] + cells, key if isinstance(key, tuple) else (key,)))
        used = group[group["used"]]
        for metric in metrics + info:
            by_seed = used.groupby(SEED)[f"final/{metric}"].mean().dropna()
            low, high = t_interval(by_seed.to_numpy())
            rows.append({**where, "metric": metric, "n_seeds": len(by_seed),
                         "seeds": ",".join(str(int(s)) for s in by_seed.index),
                         "mean": by_seed.mean() if len(by_seed) else np.nan, "ci95_low": low, "ci95_high": high,
                         "note": "" if len(by_seed) else "no finished trial: " + failure_reason(group)})
    arms_table = pd.DataFrame(rows)

    # each arm against the baseline arm, paired by seed within a cell
    rows = []
    for key, group in everything[everything["arm"] != baseline].groupby(["arm"] + cells, dropna=False, sort=True):
        where = dict(zip(["arm"] + cells, key if isinstance(key, tuple) else (key,)))
        cell = {k: where[k] for k in cells}
        base_all = _select(everything[everything["arm"] == baseline], cell)
        base, mine = base_all[base_all["used"]], group[group["used"]]
        for metric in metrics + info:
            delta = sesoi_for(metric, deltas)
            if mine.empty or base.empty:
                why = "; ".join(f"no finished trial of arm {a!r} in this cell" + (f": {failure_reason(g)}" if len(g)
                                                                                  else "")
                                for a, side, g in ((where["arm"], mine, group), (baseline, base, base_all))
                                if side.empty)
                rows.append({**where, "metric": metric, **missing_row(delta, why)})
                continue
            b = base.groupby(SEED)[f"final/{metric}"].mean()
            a = mine.groupby(SEED)[f"final/{metric}"].mean()
            common = b.index.intersection(a.index)
            rows.append({**where, "metric": metric, **verdict_row((a[common] - b[common]).dropna(), delta)})
    vs = pd.DataFrame(rows)
    if not vs.empty:
        vs = holm_families(vs, vs["metric"])
        lead = ["arm"] + cells + ["metric"]
        vs = vs[lead + [c for c in VERDICT_COLUMNS if c not in lead]]

    switches = arm_switches(everything, baseline)
    rows = []
    for arm in sorted(set(everything["arm"]) - {baseline}):
        for setting in switches.get(arm, []):
            quantity = TARGETS[setting][0] if setting in TARGETS else ""
            metric_of = targets.get(setting)
            for cell_key, _ in (vs[vs["arm"] == arm].groupby(cells, dropna=False, sort=True) if cells and len(vs)
                                else [((), None)]):
                cell = dict(zip(cells, cell_key if isinstance(cell_key, tuple) else (cell_key,)))
                row = {"arm": arm, **cell, "switch": setting, "targeted quantity": quantity, "metric": metric_of}
                for label, metric in (("target", metric_of), ("sound k5", "acc/sound_probe_h/k5"),
                                      ("image k5", "acc/image_probe_h/k5")):
                    hit = _select(vs, {"arm": arm, "metric": metric, **cell}) if metric and len(vs) else pd.DataFrame()
                    if hit.empty:
                        row[f"{label} delta"], row[f"{label} moved"] = np.nan, "not logged"
                        continue
                    h = hit.iloc[0]
                    row[f"{label} delta"] = h["estimate"]
                    row[f"{label} ci95"] = (f"[{h['ci95_low']:.3g}, {h['ci95_high']:.3g}]"
                                            if np.isfinite(h["ci95_low"]) else "")
                    row[f"{label} n"] = int(h["n"])
                    row[f"{label} verdict"] = h["verdict"]
                    row[f"{label} p_holm"] = h["p_holm"]
                    row[f"{label} moved"] = _moved(h["verdict"], h["p_holm"], bool(h["within_sesoi"]), int(h["n"]))
                rows.append(row)
    table1 = pd.DataFrame(rows)
    tables = {"arms": arms_table, "vs_baseline": vs, "table1": table1}
    texts = {"vs_baseline": verdict_markdown(vs, f"Study `{study}`: each arm against the baseline arm `{baseline}`",
                                             ["arm"] + cells, FAMILY_DEFINITION, source, notes)}
    write_report(out, "python -m analysis.ablation", study, tables, texts, notes, baseline=baseline, sesoi=deltas)
    return tables


def main(argv: list[str] | None = None) -> int:
    extra = (("--baseline", {"default": "bma", "help": "the arm every other arm is compared with"}),)
    return report_cli("python -m analysis.ablation", __doc__.split("\n\n")[0], report, argv, extra)


if __name__ == "__main__":
    raise SystemExit(main())
