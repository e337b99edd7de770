"""The information analysis: the plan's Table 1 per regime cell, how it moves with the swept axes, the cycles'
per-step losses, and which quantities predict what the memory adds.

    python -m analysis.information --study boost --out out/info_boost
    python -m analysis.information --study boost --study boost_mirror --tracking-uri URI --out out/info_both

Reads the studies from MLflow (read-only: analysis.collect), final-round values only: each metric's last logged
value in each trial. A cell is a grid point without the seed (the recorded axes that vary, the variant always, and
the study when several are read); statistics are over seeds, the ``used`` trial of each (cell, seed). Writes:

- ``table1.{csv,md,tex}``: per cell and Table-1 quantity (``info/<quantity>/<estimator>``, in the plan's order,
  bma/record.py TABLE1_ROWS): mean, sd and 95 % t-interval over seeds (NaN and a note below 3 seeds), the
  estimator, the sample size (``info/n_samples``), the seeds; for an InfoNCE bound its ceiling log N;
- ``trends.{csv,md}``: per quantity, and per probe accuracy with a label budget, the slope over each swept numeric
  axis with seeds as blocks
  (analysis.verdicts.trend: per seed the OLS slope over that seed's levels, then a t-interval over seeds), against
  the axis's scale (``x`` column: log10 for memory_slots, tau_m, tau_l; log10(1 + x) for a pool or count spanning
  a decade; the pairing ratio as is) and its verdict: rises / falls (95 % CI excludes 0), flat (TOST inside the
  spec's delta over the swept span), open, untested; Holm within each axis's family;
- ``cycle_steps.{csv,md}`` and ``cycle_loss.{csv,md}``: per cell, the steps S -> I_pseudo -> S' and
  V -> S_pseudo -> V': dH and dI per step (and the whole cycle), mean and 95 % t-interval; which step loses the
  most (the most negative mean), the paired-by-seed difference to the other step with its verdict, and whether
  that step is the same across cells; ``cycle__<cell>.png``: the figure of both cycles;
- ``predictors.{csv,md}`` and ``holdout.{csv,md}``: across every trial of the studies, Spearman's rho of each
  quantity with (a) acc_h - acc_f of the same probe (memory variants' trials: the memory's half of h) and (b)
  bma - unimodal of an h probe at the same cell and seed (bma's quantities); rho over units with a percentile
  bootstrap over cells, and rho within cells (cell means removed) with a Fisher-z interval; held out: leave one
  cell out, a linear fit on each standardised quantity, and a ridge on the 3 quantities with the largest |rho| on
  the training cells (chosen again in each fold): held-out R^2 against the training mean, rank correlation of the
  held-out predictions with the truth.

``--out`` follows every report's rule (analysis.export.write_folder): a folder a report did not write is refused
(exit 2), nothing written. ``--sesoi`` (``GLOB=delta``, e.g. ``'info/H_Wv/*=0.1'``) replaces the specs' recorded
analysis.sesoi for the trends' flat verdict.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.aggregate import t_interval
from analysis.boost import COMPARISONS, PROBE_RE, SESOI_OPTION, report_sesoi, trend_x, write_report
from analysis.collect import AnalysisError, collect_study, short_name
from analysis.compare import holm_families
from analysis.export import replace_problem
from analysis.plots import parse_info, save, slug
from analysis.tables import DASH, fmt_key, fmt_p, to_latex, to_markdown, verdict_display
from analysis.verdicts import MIN_SEEDS, contrast, is_constant, sesoi_for, trend
from bma import record as R

COMMAND = "python -m analysis.information"
VARIANT, SEED, STUDY = "model.variant", "seed", "study"  # columns of the collected runs (+ the study's name)
METRICS = ["info/*", "acc/*"]  # what is read of each trial
CEILING = "infonce_logN"  # info/<quantity>/infonce_logN: the ceiling log N of that quantity's InfoNCE bounds
TREATMENT, BASELINE = COMPARISONS[0]  # bma - unimodal: what the memory and the unpaired pools add together
# axis scales of the trends: the memory size n and the temperatures are swept geometrically (log10 x); the pairing
# ratio is a fraction (as is); any other numeric axis (pools, pairs, train size) is log10(1 + x) when its levels
# span a decade or more (a pool includes 0), else as is
LOG_AXES = ("model.memory_slots", "model.tau_m", "loss.tau_l")
LINEAR_AXES = ("regime.pairing_ratio",)
BOOTSTRAP = 2000  # resamples of the cluster bootstrap over cells
MIN_BOOTSTRAP_CELLS = 4  # below this many cells a bootstrap over cells has too few distinct resamples to mean much
SPEARMAN_Z_VAR = 1.06  # var(atanh rho_Spearman) ~ 1.06 / (n - 3) (Fieller, Hartley & Pearson 1957)
RIDGE_TOP, RIDGE_ALPHA = 3, 1.0  # the held-out ridge: the top quantities by |rho| in each fold, L2 on standardised x
TOP_SHOWN = 5  # quantities per target in predictors.md


# -- reading --------------------------------------------------------------------------------------------------------


def load(studies: list[str], tracking_uri: str | None, sesoi: list[str] | None):
    """(every collected trial with a ``study`` column, the cell keys (union over studies), {study: deltas},
    where the deltas come from, notes, histories)."""
    frames, hists, keys, deltas, sources, notes = [], [], [], {}, [], []
    for study in studies:
        data = collect_study(study, tracking_uri, METRICS)
        frames.append(data.runs.assign(**{STUDY: study}))
        hists.append(data.histories)
        keys += [k for k in data.keys if k not in keys]
        deltas[study], source, snotes = report_sesoi(study, tracking_uri, sesoi)
        sources.append(f"{study}: {source}")
        notes += data.notes + snotes
    runs = pd.concat(frames, ignore_index=True)
    if not runs["used"].any():
        raise AnalysisError(f"{', '.join(studies)}: no finished trial to report")
    if not any(parse_info(c.removeprefix("final/")) for c in runs.columns if c.startswith("final/info/")):
        raise AnalysisError(f"{', '.join(studies)}: the trials logged no information quantity (info/<quantity>/"
                            "<estimator>); was eval.info_every set?")
    return runs, keys, deltas, sources, notes, pd.concat(hists, ignore_index=True)


def cell_keys(used: pd.DataFrame, keys: list[str]) -> list[str]:
    """The keys that make a cell: the study (when several), the recorded axes that vary, and the variant."""
    out = [STUDY] if used[STUDY].nunique() > 1 else []
    out += [k for k in keys if k not in (SEED, R.SEED_KEY, VARIANT) and k in used
            and used[k].astype(str).nunique(dropna=False) > 1]
    return out + [VARIANT]


def quantity_metrics(used: pd.DataFrame) -> list[str]:
    """The final/info/<quantity>/<estimator> columns with a value, in Table 1's order (unknown quantities last),
    without the counts, flag codes and InfoNCE ceilings."""
    order = list(R.INFO_QUANTITIES)
    found = []
    for c in used.columns:
        parsed = parse_info(c.removeprefix("final/")) if c.startswith("final/info/") else None
        if parsed and parsed[1] != CEILING and c.removeprefix("final/") not in R.INFO_COUNTS \
                and used[c].notna().any():
            found.append((order.index(parsed[0]) if parsed[0] in order else len(order), parsed, c))
    return [c for *_, c in sorted(found)]


def probe_metrics(used: pd.DataFrame) -> list[str]:
    """The in-domain probe accuracies with a label budget (final/acc/<side>_probe_<f|h>/k<K>): the trends report
    how the probes move with each swept axis beside the Table-1 quantities."""
    return sorted(c for c in used.columns if (m := PROBE_RE.match(c)) and m.group(1) is None and m.group(4)
                  and used[c].notna().any())


PROBE_ROW = "probe accuracy (test split, mean over labelled draws)"


def split_metric(column: str) -> tuple[str, str]:
    name = column.removeprefix("final/")
    if name.startswith("acc/"):  # acc/sound_probe_h/k5 -> (sound_probe_h, "5 labels per class")
        _, probe, budget = name.split("/")
        return probe, f"{budget.removeprefix('k')} labels per class"
    return parse_info(name)


def row_of(quantity: str) -> str:
    if re.fullmatch(r"(image|sound)_probe_[fh]", quantity):
        return PROBE_ROW
    return R.INFO_QUANTITIES.get(quantity, "other (not in the plan's Table 1)")


def _groups(frame: pd.DataFrame, by: list[str]):
    for key, group in frame.groupby(by, dropna=False, sort=True):
        yield dict(zip(by, key if isinstance(key, tuple) else (key,))), group


def _by_seed(group: pd.DataFrame, column: str) -> pd.Series:
    return group.groupby(SEED)[column].mean().dropna()


def sample_size(group: pd.DataFrame) -> str:
    """``300``, ``300-1000`` when it varies, or a dash when info/n_samples was not logged."""
    col = f"final/{R.INFO_N_SAMPLES}"
    n = group[col].dropna() if col in group else pd.Series(dtype=float)
    if n.empty:
        return DASH
    return f"{n.min():.0f}" if n.min() == n.max() else f"{n.min():.0f}-{n.max():.0f}"


def level(values) -> dict:
    """mean, sd and 95 % t-interval over seeds; the interval is NaN (with a note) below MIN_SEEDS seeds."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    low, high = t_interval(x) if n >= MIN_SEEDS else (np.nan, np.nan)
    note = "" if n >= MIN_SEEDS else f"{n} seed{'s' if n != 1 else ''}: no interval (at least {MIN_SEEDS} needed)"
    return {"n_seeds": n, "mean": x.mean() if n else np.nan, "sd": x.std(ddof=1) if n > 1 else np.nan,
            "ci95_low": low, "ci95_high": high, "note": note}


def stale_trials(hist: pd.DataFrame) -> dict[tuple[str, str], bool]:
    """(run_id, metric) whose last logged value comes from an earlier round than the run's last information round
    (the estimate was flagged NaN or not computed there: MLflow keeps no NaN, so the last value is an older one)."""
    info = hist[hist["metric"].str.startswith("info/")]
    if info.empty:
        return {}
    last = info.groupby(["run_id", "metric"])["step"].max()
    final = info[info["metric"] == R.INFO_N_SAMPLES].groupby("run_id")["step"].max()
    out = {}
    for (run, metric), step in last.items():
        if run in final.index and step < final[run]:
            out[(run, metric)] = True
    return out


# -- 1. Table 1 per cell -----------------------------------------------------------------------------------------


def table1(used: pd.DataFrame, cells: list[str], metrics: list[str], stale: dict) -> pd.DataFrame:
    rows = []
    for where, group in _groups(used, cells):
        n_samples = sample_size(group)
        for column in metrics:
            seeds = _by_seed(group, column)
            if seeds.empty:
                continue
            quantity, estimator = split_metric(column)
            metric = column.removeprefix("final/")
            stats_ = level(seeds.to_numpy())
            notes = [stats_.pop("note")]
            n_stale = sum(stale.get((r, metric), False) for r in group["run_id"])
            if n_stale:
                notes.append(f"{n_stale} trial(s): the last value predates the final round (flagged or not "
                             "computed there)")
            ceiling = f"final/info/{quantity}/{CEILING}"
            rows.append({**where, "table1_row": row_of(quantity), "quantity": quantity, "estimator": estimator,
                         "metric": metric, **stats_, "seeds": ",".join(str(int(s)) for s in seeds.index),
                         "n_samples": n_samples,
                         "ceiling_logN": group[ceiling].mean() if estimator.startswith("infonce")
                         and ceiling in group else np.nan,
                         "n_stale": n_stale, "note": "; ".join(n for n in notes if n)})
    return pd.DataFrame(rows)


def table1_wide(table: pd.DataFrame, cells: list[str]) -> pd.DataFrame:
    """Quantities as rows, cells as columns, each entry ``mean ± half-width (n)``: the Markdown/LaTeX Table 1."""
    if table.empty:
        return table
    shown = [k for k in cells if table[k].astype(str).nunique() > 1] or cells[-1:]

    def label(row) -> str:
        return ", ".join(f"{short_name(k)}={fmt_key(row[k])}" if k != VARIANT else str(row[k]) for k in shown)

    t = table.assign(cell=table.apply(label, axis=1))
    t["entry"] = [(DASH if math.isnan(m) else f"{m:.3g}" + ("" if math.isnan(lo) else f" ± {(hi - lo) / 2:.2g}")
                   + f" ({n})") for m, lo, hi, n in zip(t["mean"], t["ci95_low"], t["ci95_high"], t["n_seeds"])]
    order = list(dict.fromkeys(t["cell"]))
    wide = t.pivot_table(index=["table1_row", "quantity", "estimator", "n_samples"], columns="cell", values="entry",
                         aggfunc="first", sort=False).reindex(columns=order).fillna(DASH).reset_index()
    return wide.rename(columns={"table1_row": "Table 1", "n_samples": "N"})


# -- 1b. trends over the swept axes -------------------------------------------------------------------------------


def axis_scale(axis: str, levels) -> tuple[np.ndarray, str]:
    """The x of a trend over ``axis`` at ``levels`` and its label (module doc, LOG_AXES)."""
    lv = np.asarray(levels, dtype=float)
    name = short_name(axis)
    if axis in LINEAR_AXES:
        return lv, name
    if axis in LOG_AXES and (lv > 0).all():
        return np.log10(lv), f"log10({name})"
    positive = lv[lv > 0]
    if len(positive) and lv.min() >= 0 and lv.max() >= 10 * (positive.min() if lv.min() > 0 else 1.0):
        if lv.min() > 0:
            return np.log10(lv), f"log10({name})"
        return trend_x(lv), f"log10(1 + {name})"
    return lv, name


def trend_axes(used: pd.DataFrame, cells: list[str]) -> list[str]:
    return [k for k in cells if k not in (STUDY, VARIANT) and pd.api.types.is_numeric_dtype(used[k])
            and used[k].nunique() > 1]


DIRECTION = {"gain": "rises", "loss": "falls", "equivalent": "flat (within ±δ)", "inconclusive": "open",
             "undetermined": "untested"}


def trends(used: pd.DataFrame, cells: list[str], metrics: list[str], deltas: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for axis in trend_axes(used, cells):
        others = [k for k in cells if k != axis]
        for where, group in _groups(used, others):
            levels = sorted(group[axis].dropna().unique())
            if len(levels) < 2:
                continue
            x, label = axis_scale(axis, levels)
            span = float(x.max() - x.min())
            study = where.get(STUDY, group[STUDY].iloc[0])
            for column in metrics:
                grid = group.pivot_table(index=SEED, columns=axis, values=column, aggfunc="mean")
                if grid.empty or grid.notna().sum().sum() == 0:
                    continue
                grid = grid.reindex(columns=levels)
                metric = column.removeprefix("final/")
                delta = sesoi_for(metric, deltas.get(study))
                c = trend(grid.to_numpy(float), x, None if delta is None else delta / span)
                quantity, estimator = split_metric(column)
                row = {**where, "axis": axis, "x": label, "levels": ",".join(f"{v:g}" for v in levels),
                       "table1_row": row_of(quantity), "quantity": quantity, "estimator": estimator,
                       "metric": metric, **c.row()}
                row["seeds"] = ",".join(str(int(s)) for s in grid.index[grid.notna().sum(axis=1) >= 2])
                row["direction"] = DIRECTION.get(c.verdict, c.verdict)
                row["settled"] = c.verdict in ("gain", "loss", "equivalent")
                row["note"] = "; ".join(t for t in (f"slope per unit {label}" + (
                    f"; delta {delta:g} over the span {span:.3g} of x" if delta else ""), row["note"]) if t)
                rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # two families per axis: the probes' accuracies and the Table-1 quantities (two questions, each Holm-corrected)
    what = np.where(table["table1_row"] == PROBE_ROW, ", probe accuracies", ", Table-1 quantities")
    return holm_families(table, "trend over " + table["x"] + what)


# -- 2. the cycles ------------------------------------------------------------------------------------------------


def pretty(name: str) -> str:
    """``Ipseudo`` -> ``I_pseudo``, ``Sprime`` -> ``S'``."""
    return re.sub(r"^(\w)prime$", r"\1'", re.sub(r"^(\w)pseudo$", r"\1_pseudo", name))


def cycle_label(source: str, pseudo: str) -> str:
    return f"{source} → {pretty(pseudo)} → {source}'"


def step_label(step: str) -> str:
    a, b = step.split("_", 1)
    return f"{pretty(a)} → {pretty(b)}"


def cycle_steps(used: pd.DataFrame, cells: list[str]) -> pd.DataFrame:
    """Per cell, cycle, measure (dH, dI) and estimator: each step's and the whole cycle's (their per-seed sum)
    mean and 95 % t-interval over seeds; also the per-seed values, for the paired step contrasts."""
    rows = []
    for where, group in _groups(used, cells):
        n_samples = sample_size(group)
        for source, pseudo in R.CYCLES:
            first, second, _ = R.cycle_steps(source, pseudo)
            for measure in ("dH", "dI"):
                prefix = f"final/info/{measure}_{first}/"
                for column in sorted(c for c in used.columns if c.startswith(prefix)):
                    estimator = column.removeprefix(prefix)
                    other = f"final/info/{measure}_{second}/{estimator}"
                    if other not in group or group[column].isna().all():
                        continue
                    a, b = _by_seed(group, column), _by_seed(group, other)
                    both = a.index.intersection(b.index)
                    for step, values in ((step_label(first), a), (step_label(second), b),
                                         ("whole cycle", a[both] + b[both])):
                        rows.append({**where, "cycle": cycle_label(source, pseudo), "measure": measure,
                                     "estimator": estimator, "step": step, **level(values.to_numpy()),
                                     "seeds": ",".join(str(int(s)) for s in values.index), "n_samples": n_samples,
                                     "_values": values})
    return pd.DataFrame(rows)


def cycle_loss(steps: pd.DataFrame, cells: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Per cell, cycle, measure and estimator: the step that loses the most (most negative mean change), the
    paired-by-seed difference (that step - the other) with its verdict ("loss": it loses significantly more), and
    lines saying whether that step is the same in every cell."""
    if steps.empty:
        return pd.DataFrame(), []
    rows = []
    by = cells + ["cycle", "measure", "estimator"]
    for where, group in _groups(steps[steps["step"] != "whole cycle"], by):
        if len(group) != 2:
            continue
        g = group.sort_values("mean", kind="stable")
        worst, other = g.iloc[0], g.iloc[1]
        d = (worst["_values"] - other["_values"]).dropna()
        c = contrast(d.to_numpy())
        rows.append({**where, "worst_step": worst["step"], "worst_mean": worst["mean"],
                     "worst_ci95_low": worst["ci95_low"], "worst_ci95_high": worst["ci95_high"],
                     "other_step": other["step"], "other_mean": other["mean"],
                     "loses": bool(worst["mean"] < 0), "n_samples": worst["n_samples"],
                     **{f"diff_{k}": v for k, v in c.row().items() if k in ("estimate", "ci95_low", "ci95_high", "n",
                                                                             "verdict", "p", "note")},
                     "settled": c.verdict == "loss"})
    table = pd.DataFrame(rows)
    lines = []
    if table.empty:
        return table, lines
    for (cycle, measure, estimator), sub in table.groupby(["cycle", "measure", "estimator"], sort=False):
        counts = sub["worst_step"].value_counts()
        settled = sub[sub["settled"]]["worst_step"].value_counts()
        what = "entropy" if measure == "dH" else "class information"
        if len(counts) == 1:
            step = counts.index[0]
            lines.append(f"{cycle}, {measure} ({what}, {estimator}): {step} changes it most downward in every one "
                         f"of {len(sub)} cells (the difference to the other step settled in {settled.get(step, 0)})")
        else:
            parts = ", ".join(f"{s} in {n} (settled in {settled.get(s, 0)})" for s, n in counts.items())
            lines.append(f"{cycle}, {measure} ({what}, {estimator}): the step that loses most changes across "
                         f"cells: {parts}")
        if not sub["loses"].any():
            lines.append(f"  ({cycle}, {measure}: no step has a negative mean change in any cell: nothing is lost)")
    return table, lines


def cycle_figure(steps: pd.DataFrame, where: dict, cells: list[str], folder: Path) -> Path | None:
    """One figure per cell: columns = the two cycles, rows = dH and dI; point-range per step (mean, 95 % t) and
    the whole cycle (hollow); titled with the estimators and the sample size."""
    from matplotlib.figure import Figure

    sel = steps
    for k, v in where.items():
        sel = sel[sel[k].isna()] if pd.isna(v) else sel[sel[k] == v]
    if sel.empty:
        return None
    cycles = list(dict.fromkeys(sel["cycle"]))
    measures = [m for m in ("dH", "dI") if m in set(sel["measure"])]
    fig = Figure(figsize=(4.2 * len(cycles), 3.0 * len(measures)))
    axes = fig.subplots(len(measures), len(cycles), squeeze=False)
    for i, measure in enumerate(measures):
        for j, cycle in enumerate(cycles):
            ax = axes[i][j]
            part = sel[(sel["measure"] == measure) & (sel["cycle"] == cycle)]
            estimators = list(dict.fromkeys(part["estimator"]))
            for e, estimator in enumerate(estimators):
                rows = part[part["estimator"] == estimator].reset_index(drop=True)
                offset = (e - (len(estimators) - 1) / 2) * 0.15
                for k, r in rows.iterrows():
                    whole = r["step"] == "whole cycle"
                    lo, hi = r["ci95_low"], r["ci95_high"]
                    yerr = None if math.isnan(lo) else [[r["mean"] - lo], [hi - r["mean"]]]
                    ax.errorbar([k + offset], [r["mean"]], yerr=yerr, fmt="o", capsize=4, color=f"C{e}",
                                mfc="white" if whole else f"C{e}", label=estimator if k == 0 else None)
                ax.set_xticks(range(len(rows)), list(rows["step"]), fontsize=8)
            ax.axhline(0, color="grey", lw=0.8, ls="--")
            what = "ΔH (entropy)" if measure == "dH" else "ΔI (class information)"
            ax.set_title(f"{cycle}: {what}\nestimator {', '.join(estimators)}", fontsize=8)
            ax.set_ylabel("nats", fontsize=8)
            ax.tick_params(labelsize=7)
            if len(estimators) > 1:
                ax.legend(fontsize=7)
    n_seeds = sorted(set(sel["n_seeds"]))
    seeds = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}-{n_seeds[-1]}"
    cell = ", ".join(f"{short_name(k)}={fmt_key(where[k])}" for k in cells)
    fig.suptitle(f"{cell}\nN = {sel['n_samples'].iloc[0]} held-out samples per estimate; mean and 95 % t-interval "
                 f"over {seeds} seeds (hollow: the whole cycle)", fontsize=8)
    fig.tight_layout()
    name = "cycle__" + slug("__".join(f"{short_name(k)}={fmt_key(where[k])}" for k in cells))
    return Path(save(fig, str(folder), name, formats=("png",), dpi=120)[0])


# -- 3. predictors of what the memory adds ---------------------------------------------------------------------


def hf_units(used: pd.DataFrame, cells: list[str], metrics: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """(a): the memory variants' trials; targets acc_h - acc_f of each probe (h: [f; f_mem])."""
    units = used[used["variant"].isin(R.MEMORY_VARIANTS)].copy()
    units["_cell"] = units[cells].astype(str).agg(" | ".join, axis=1)
    targets = []
    for h in sorted(c for c in used.columns if PROBE_RE.match(c) and "_probe_h" in c):
        f = h.replace("_probe_h", "_probe_f")
        if f in units and units[h].notna().any() and units[f].notna().any():
            name = f"{h.removeprefix('final/')} - {f.removeprefix('final/')}"
            units[name] = units[h] - units[f]
            targets.append(name)
    return units[["_cell", SEED] + targets + metrics], targets


def variant_units(used: pd.DataFrame, cells: list[str], metrics: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """(b): (cell without the variant, seed) pairs with both TREATMENT and BASELINE; targets their difference of
    each h probe (common random numbers: a paired difference); predictors: the TREATMENT's quantities."""
    where = [k for k in cells if k != VARIANT]
    a, b = used[used["variant"] == TREATMENT], used[used["variant"] == BASELINE]
    if a.empty or b.empty:
        return pd.DataFrame(), []
    probes = sorted(c for c in used.columns if PROBE_RE.match(c) and "_probe_h" in c)
    on = where + [SEED]
    pairs = a[on + probes + metrics].merge(b[on + probes], on=on, suffixes=("", "@base"))
    pairs["_cell"] = pairs[where].astype(str).agg(" | ".join, axis=1) if where else "all"
    targets = []
    for p in probes:
        name = f"{p.removeprefix('final/')}: {TREATMENT} - {BASELINE}"
        pairs[name] = pairs[p] - pairs[f"{p}@base"]
        if pairs[name].notna().any():
            targets.append(name)
    return pairs[["_cell", SEED] + targets + metrics], targets


def _rank_corr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each column of x (n, k) with y (n,): Pearson of average ranks; NaN for a constant side."""
    rx, ry = stats.rankdata(x, axis=0), stats.rankdata(y)
    rx, ry = rx - rx.mean(axis=0), ry - ry.mean()
    den = np.sqrt((rx * rx).sum(axis=0) * (ry * ry).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry[:, None]).sum(axis=0) / den, np.nan)


def _cluster_bootstrap(x: np.ndarray, y: np.ndarray, cells: np.ndarray, seed: int = 0) -> np.ndarray:
    """(BOOTSTRAP, k) rho of each column when whole cells are resampled with replacement."""
    rng = np.random.default_rng(seed)
    ids = np.unique(cells)
    members = [np.flatnonzero(cells == c) for c in ids]
    out = np.empty((BOOTSTRAP, x.shape[1]))
    for b in range(BOOTSTRAP):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
        out[b] = _rank_corr(x[idx], y[idx])
    return out


def _within(x: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """x (n, k) with each cell's column means removed, to 12 decimals: values that tie within their cells (the
    same offset from the cell mean) would otherwise differ by rounding noise and be ranked apart."""
    frame = pd.DataFrame(x)
    return np.round((frame - frame.groupby(cells).transform("mean")).to_numpy(), 12)


def screen(units: pd.DataFrame, targets: list[str], metrics: list[str], what: str) -> tuple[pd.DataFrame, list[str]]:
    """Spearman's rho of every quantity with every target over the units (module doc); one Holm family per target
    over the within-cell tests."""
    rows, same = [], {}
    for target in targets:
        sub = units[units[target].notna()]
        y, cells = sub[target].to_numpy(float), sub["_cell"].to_numpy()
        usable, aliases = _distinct_predictors(sub, metrics)
        same.update(dict(aliases))
        complete = [c for c in usable if sub[c].notna().all()]
        batches = [(complete, np.ones(len(sub), dtype=bool))] if complete else []
        batches += [([c], sub[c].notna().to_numpy()) for c in usable if c not in complete]
        found = {}
        for columns, ok in batches:  # the complete columns in one pass: one bootstrap loop for all of them
            for column, assoc in zip(columns, _association(sub[columns].to_numpy(float)[ok], y[ok], cells[ok])):
                found[column] = (int(ok.sum()), len(np.unique(cells[ok])), assoc)
        for column in usable:
            n, n_cells, assoc = found[column]
            quantity, estimator = split_metric(column)
            rows.append({"what": what, "target": target, "table1_row": row_of(quantity), "quantity": quantity,
                         "estimator": estimator, "metric": column.removeprefix("final/"), "n_units": n,
                         "n_cells": n_cells, **assoc})
    notes = [f"{what}: quantities with the same values as another over these units, screened once (as the "
             "other): " + "; ".join(f"{a.removeprefix('final/info/')} = {b.removeprefix('final/info/')}"
                                    for a, b in same.items())] if same else []
    table = pd.DataFrame(rows)
    if table.empty:
        return table, notes
    table = table.rename(columns={"p_within": "p"})
    table = holm_families(table, table["what"] + ": " + table["target"]).rename(
        columns={"p": "p_within", "p_holm": "p_within_holm"})
    return table, notes


def _distinct_predictors(sub: pd.DataFrame, metrics: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """The quantities that vary over these units, each set of identical columns kept once (the first in Table 1's
    order: e.g. H_fsmem_given_fv/address_entropy is H_Wv/exact by definition)."""
    matrix = sub[metrics].to_numpy(float)
    nan = np.isnan(matrix)
    kept, aliases = [], []
    for j, column in enumerate(metrics):
        v, miss = matrix[:, j], nan[:, j]
        if miss.all() or np.nanstd(v) == 0:
            continue
        twin = next((i for i in kept if np.array_equal(miss, nan[:, i])
                     and np.allclose(v[~miss], matrix[~miss, i], rtol=1e-9, atol=0)), None)
        if twin is None:
            kept.append(j)
        else:
            aliases.append((column, metrics[twin]))
    return [metrics[j] for j in kept], aliases


def _association(x: np.ndarray, y: np.ndarray, cells: np.ndarray) -> list[dict]:
    """Per column of x (n, k): rho over units with a bootstrap-over-cells interval; rho within cells with a
    Fisher-z interval and p."""
    n, k = x.shape
    n_cells = len(np.unique(cells))
    notes = [[] for _ in range(k)]
    rho = _rank_corr(x, y) if n >= 3 else np.full(k, np.nan)
    lo = hi = np.full(k, np.nan)
    if n_cells >= MIN_BOOTSTRAP_CELLS:
        boot = _cluster_bootstrap(x, y, cells)
        finite = np.isfinite(boot).sum(axis=0)
        with np.errstate(invalid="ignore"):
            lo, hi = np.nanpercentile(boot, [2.5, 97.5], axis=0)
        for j in np.flatnonzero(finite < 0.9 * len(boot)):
            lo[j] = hi[j] = np.nan
            notes[j].append(f"{len(boot) - finite[j]} of {len(boot)} bootstrap resamples constant: no interval")
    else:
        for note in notes:
            note.append(f"{n_cells} cells: no bootstrap interval over cells (at least {MIN_BOOTSTRAP_CELLS} needed)")
    n_eff = n - n_cells + 1  # centring each cell spends one degree of freedom per cell beyond the first
    rho_w = _rank_corr(_within(x, cells), _within(y[:, None], cells)[:, 0]) if n_eff > 3 else np.full(k, np.nan)
    out = []
    for j in range(k):
        lo_w = hi_w = p_w = np.nan
        if n_eff > 3 and np.isfinite(rho_w[j]):
            se = math.sqrt(SPEARMAN_Z_VAR / (n_eff - 3))
            z = math.atanh(min(max(float(rho_w[j]), -0.999999), 0.999999))
            half = stats.norm.ppf(0.975) * se
            lo_w, hi_w = math.tanh(z - half), math.tanh(z + half)
            p_w = float(2 * stats.norm.sf(abs(z) / se))
        elif n_eff <= 3:
            notes[j].append(f"{n} units in {n_cells} cells: too few within cells for a Fisher-z interval")
        out.append({"rho": float(rho[j]), "rho_ci95_low": float(lo[j]), "rho_ci95_high": float(hi[j]),
                    "rho_within": float(rho_w[j]), "rho_within_ci95_low": lo_w, "rho_within_ci95_high": hi_w,
                    "p_within": p_w, "note": "; ".join(notes[j])})
    return out


def _fit_predict(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, alpha: float) -> np.ndarray:
    """Linear (alpha = 0) or ridge fit on standardised columns of xtr (n, k) (scikit-learn); predictions at xte.
    A constant column standardises to 0 and adds nothing, so a fold with no varying column predicts the mean."""
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha) if alpha else LinearRegression())
    return model.fit(xtr, ytr).predict(xte)


def _holdout_scores(y: np.ndarray, pred: np.ndarray, base: np.ndarray) -> dict:
    sse, sse0 = float(((y - pred) ** 2).sum()), float(((y - base) ** 2).sum())
    r2 = 1 - sse / sse0 if sse0 > 0 else np.nan
    rank = float(_rank_corr(pred[:, None], y)[0]) if len(y) >= 3 else np.nan
    return {"r2_holdout": r2, "rank_corr_holdout": rank}


def holdout(units: pd.DataFrame, targets: list[str], metrics: list[str], what: str) -> pd.DataFrame:
    """Leave one cell out: per quantity a linear fit on the standardised quantity; and a ridge on the RIDGE_TOP
    quantities with the largest |rho| on the training cells (chosen in each fold). Scored on the held-out cells'
    units against the training cells' mean of the target (R^2 <= 0: no better than the mean)."""
    rows = []
    for target in targets:
        sub = units[units[target].notna()]
        usable, _ = _distinct_predictors(sub, metrics)
        complete = [c for c in usable if sub[c].notna().all()]
        cells = sub["_cell"].to_numpy()
        ids = np.unique(cells)
        y = sub[target].to_numpy(float)
        base = np.array([y[cells != c].mean() if (cells != c).any() else np.nan for c in cells])
        head = {"what": what, "target": target, "n_units": len(sub), "n_cells": len(ids)}
        if len(ids) < 3:
            rows.append({**head, "model": "(none)", "note": f"{len(ids)} cells: leave-one-cell-out needs 3"})
            continue
        for column in usable:
            ok = sub[column].notna().to_numpy()
            x = sub[column].to_numpy(float)
            pred = np.full(len(y), np.nan)
            for c in ids:
                tr, te = ok & (cells != c), ok & (cells == c)
                if te.any() and tr.sum() >= 3:
                    pred[te] = _fit_predict(x[tr, None], y[tr], x[te, None], 0.0)
            m = ~np.isnan(pred)
            quantity, estimator = split_metric(column)
            rows.append({**head, "model": "linear", "metric": column.removeprefix("final/"), "quantity": quantity,
                         "estimator": estimator, "table1_row": row_of(quantity), "n_units": int(m.sum()),
                         **_holdout_scores(y[m], pred[m], base[m]), "chosen": "", "note": ""})
        if len(complete) >= 1:
            X = sub[complete].to_numpy(float)
            pred, chosen = np.full(len(y), np.nan), []
            for c in ids:
                tr, te = cells != c, cells == c
                rho = np.abs(_rank_corr(X[tr], y[tr]))
                top = np.argsort(-np.nan_to_num(rho, nan=-1))[:RIDGE_TOP]
                chosen += [complete[i].removeprefix("final/info/") for i in top]
                pred[te] = _fit_predict(X[tr][:, top], y[tr], X[te][:, top], RIDGE_ALPHA)
            counts = pd.Series(chosen).value_counts()
            rows.append({**head, "model": f"ridge on the top {RIDGE_TOP} by |rho| (chosen in each fold, "
                                          f"alpha {RIDGE_ALPHA:g})", "metric": "", "quantity": "", "estimator": "",
                         "table1_row": "", **_holdout_scores(y, pred, base),
                         "chosen": ", ".join(f"{k} x{v}" for k, v in counts.items()),
                         "note": f"{len(complete)} quantities complete over these units"})
    return pd.DataFrame(rows)


# -- Markdown -----------------------------------------------------------------------------------------------------


def _ci(mean, low, high, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return DASH
    return f"{mean:+.{digits}f}" + ("" if math.isnan(low) else f" [{low:+.{digits}f}, {high:+.{digits}f}]")


def _head(title: str, studies: list[str], fixed: dict, notes: list[str]) -> list[str]:
    lines = [f"# {title}", "", f"- studies: {', '.join(studies)}"]
    if fixed:
        lines.append("- the same in every cell: " + ", ".join(f"{short_name(k)} = {fmt_key(v)}"
                                                              for k, v in fixed.items()))
    return lines + [n if n.startswith("- ") else f"- {n}" for n in notes] + [""]


def table1_markdown(table, cells, studies, fixed, notes) -> str:
    lines = _head("Table 1 per regime cell (final round)", studies, fixed, notes + [
        "entry: mean ± 95 % t half-width over seeds (number of seeds); no half-width below 3 seeds",
        "N: held-out samples behind each estimate (info/n_samples); every value in nats (eff_slots: slots)",
        "never compare values across estimators: each estimates something else (docs/information.md)"])
    return "\n".join(lines + [to_markdown(table1_wide(table, cells))])


def trends_markdown(table, studies, fixed, sources, notes) -> str:
    lines = _head("How each quantity moves with the swept axes", studies, fixed, notes + [
        "slope: per seed the OLS slope over that seed's levels, then mean and 95 % t-interval over seeds "
        "(seeds as blocks; analysis.verdicts.trend); the x column says the axis's scale",
        "direction: rises / falls when the 95 % CI excludes 0; flat when TOST puts the 90 % CI inside ±δ (δ: the "
        "metric's SESOI over the swept span of x); open otherwise; untested below 3 seeds. The direction reads each "
        "test's own CI; Holm p says whether it survives the correction over its family (stated above each table)",
        "SESOI: " + "; ".join(sources)])
    if table.empty:
        return "\n".join(lines + ["_(no swept numeric axis with 2 levels: no trend)_", ""])
    keys = [k for k in table.columns if k in (STUDY, VARIANT) or "." in k]
    for family, sub in table.groupby("family", sort=False):
        shown = [k for k in keys if sub[k].astype(str).nunique() > 1 or k == VARIANT]
        base = verdict_display(sub, shown)
        show = base.iloc[:, :len(shown)].assign(
            quantity=(sub["quantity"] + " [" + sub["estimator"] + "]").to_numpy(), n=base["n"],
            **{"slope [95 % CI]": base["estimate [95 % CI]"], "δ (slope)": base["δ"],
               "direction": sub["direction"].to_numpy(), "p": base["p"], "Holm p": base["Holm p"],
               "seeds needed": base["seeds needed"], "note": base["note"]})
        lines += [f"## {family}", "", f"Holm over {int(sub['family_size'].iloc[0])} tests within `{family}` "
                  "(every quantity and group on this axis)", "", to_markdown(show)]
    return "\n".join(lines)


def cycles_markdown(loss, steps, cells, studies, fixed, lines_, notes) -> str:
    lines = _head("The cycles S → I_pseudo → S' and V → S_pseudo → V', step by step", studies, fixed, notes + [
        "dH: entropy change of the step (noise-regularised Gaussian entropy at fixed total variance); dI: change "
        "of the class information (probe bound I(.; Y)); nats; mean and 95 % t-interval over seeds",
        "worst step: the one with the most negative mean change; difference: worst - other per seed, its 95 % CI "
        "and verdict ('loss': the worst step loses significantly more)"])
    lines += ["## Which step loses most, across cells", ""] + [f"- {s}" for s in lines_] + [""]
    if not loss.empty:
        show = pd.DataFrame({**{short_name(k): loss[k].map(fmt_key) for k in cells},
                             "cycle": loss["cycle"], "measure": loss["measure"], "estimator": loss["estimator"],
                             "N": loss["n_samples"], "worst step": loss["worst_step"],
                             "its change [95 % CI]": [_ci(m, lo, hi) for m, lo, hi in
                                                      zip(loss["worst_mean"], loss["worst_ci95_low"],
                                                          loss["worst_ci95_high"])],
                             "other step": loss["other_step"], "its change": loss["other_mean"].map(
                                 lambda v: f"{v:+.3f}"),
                             "difference [95 % CI]": [_ci(m, lo, hi) for m, lo, hi in
                                                      zip(loss["diff_estimate"], loss["diff_ci95_low"],
                                                          loss["diff_ci95_high"])],
                             "n": loss["diff_n"], "verdict": loss["diff_verdict"]})
        lines += ["## Per cell", "", to_markdown(show)]
    return "\n".join(lines)


def predictor_summary(table: pd.DataFrame, hold: pd.DataFrame) -> pd.DataFrame:
    """One line per target: how many quantities, how many with rho's CI away from 0 and Holm-significant within
    cells, the strongest rho, and the held-out scores (ridge; the best single quantity)."""
    rows = []
    for (what, target), sub in table.groupby(["what", "target"], sort=False):
        top = sub.loc[sub["rho"].abs().idxmax()]
        boot = sub["rho_ci95_low"].notna().any()
        excl = int(((sub["rho_ci95_low"] > 0) | (sub["rho_ci95_high"] < 0)).sum())
        h = hold[(hold["what"] == what) & (hold["target"] == target)] if not hold.empty else hold
        ridge = h[h["model"].str.startswith("ridge")] if not h.empty else h
        single = h[h["model"] == "linear"] if not h.empty else h
        best = single.loc[single["r2_holdout"].idxmax()] if len(single) and single["r2_holdout"].notna().any() \
            else None
        rows.append({"what": what, "target": target, "units": str(int(sub["n_units"].max())),
                     "cells": str(int(sub["n_cells"].max())), "quantities": str(len(sub)),
                     "CI excl. 0": str(excl) if boot else DASH, "Holm within": str(int((sub["p_within_holm"] < 0.05)
                                                                                       .sum())),
                     "strongest rho": f"{top['metric'].removeprefix('info/')} {top['rho']:+.2f}",
                     "ridge R^2 / rank": DASH if ridge.empty else
                     f"{ridge['r2_holdout'].iloc[0]:+.2f} / {ridge['rank_corr_holdout'].iloc[0]:+.2f}",
                     "best single R^2": DASH if best is None else
                     f"{best['metric'].removeprefix('info/')} {best['r2_holdout']:+.2f}"})
    return pd.DataFrame(rows)


def predictors_markdown(table, hold, studies, fixed, notes) -> str:
    lines = _head("Which Table-1 quantities predict what the memory adds", studies, fixed, notes + [
        "(a) acc_h - acc_f of one probe over the memory variants' trials; (b) bma - unimodal of an h probe at the "
        "same cell and seed (paired: common random numbers), against bma's quantities",
        f"rho: Spearman over units; its 95 % CI: percentile bootstrap over cells ({BOOTSTRAP} resamples of whole "
        f"cells; none below {MIN_BOOTSTRAP_CELLS} cells). rho within: Spearman after removing each cell's mean "
        "(seed-to-seed co-variation), 95 % CI by Fisher z (var 1.06 / (n_eff - 3), n_eff = units - cells + 1), "
        "p and Holm p within the target's family (every quantity screened for it)",
        "the CIs are per quantity, not adjusted: with K quantities screened, about 0.05 K of them exclude 0 by "
        "chance alone",
        "held out: leave one cell out; R^2 against the training cells' mean (<= 0: no better than the mean); "
        "rank: Spearman of the held-out predictions with the truth. The best of many single-quantity rows is an "
        "optimistic pick; the ridge row chooses its quantities inside each fold"])
    if table.empty:
        return "\n".join(lines + ["_(no target with a varying quantity: nothing to screen)_", ""])
    lines += ["## Summary", "", to_markdown(predictor_summary(table, hold)), ""]
    for (what, target), sub in table.groupby(["what", "target"], sort=False):
        excl = sub[(sub["rho_ci95_low"] > 0) | (sub["rho_ci95_high"] < 0)]
        holm_sig = sub[sub["p_within_holm"] < 0.05]
        boot = (f"rho's CI (bootstrap over cells) excludes 0 for {len(excl)}"
                + (f" ({', '.join(excl['metric'].head(6))})" if len(excl) else "")
                if sub["rho_ci95_low"].notna().any() else "no bootstrap CI over cells (too few cells)")
        lines += [f"## {what}: `{target}`", "",
                  f"- {len(sub)} quantities screened over {int(sub['n_units'].max())} units in "
                  f"{int(sub['n_cells'].max())} cells; {boot}; within cells, {len(holm_sig)} survive Holm"
                  + (f" ({', '.join(holm_sig['metric'].head(6))})" if len(holm_sig) else "")]
        h = hold[(hold["what"] == what) & (hold["target"] == target)] if not hold.empty else hold
        ridge = h[h["model"].str.startswith("ridge")] if not h.empty else h
        for _, r in ridge.iterrows():
            lines.append(f"- held out, {r['model']}: R^2 {r['r2_holdout']:+.3f}, rank {r['rank_corr_holdout']:+.3f}"
                         f" (chosen: {r['chosen']})")
        single = h[h["model"] == "linear"].sort_values("r2_holdout", ascending=False) if not h.empty else h
        if len(single):
            best = single.iloc[0]
            lines.append(f"- held out, best single quantity: {best['metric']}: R^2 {best['r2_holdout']:+.3f}, "
                         f"rank {best['rank_corr_holdout']:+.3f}; {int((single['r2_holdout'] > 0).sum())} of "
                         f"{len(single)} beat the mean")
        top = sub.reindex(sub["rho"].abs().sort_values(ascending=False).index).head(TOP_SHOWN)
        show = pd.DataFrame({"quantity": top["metric"], "n": top["n_units"].astype(str),
                             "cells": top["n_cells"].astype(str),
                             "rho [95 % CI, over cells]": [_ci(m, lo, hi, 2) for m, lo, hi in
                                                          zip(top["rho"], top["rho_ci95_low"], top["rho_ci95_high"])],
                             "rho within [95 % CI]": [_ci(m, lo, hi, 2) for m, lo, hi in
                                                      zip(top["rho_within"], top["rho_within_ci95_low"],
                                                          top["rho_within_ci95_high"])],
                             "Holm p": top["p_within_holm"].map(fmt_p), "note": top["note"].fillna("")})
        lines += ["", to_markdown(show)]
    return "\n".join(lines)


# -- odd data -----------------------------------------------------------------------------------------------------


def coverage_notes(used: pd.DataFrame, metrics: list[str]) -> list[str]:
    """Where a variant lacks a quantity the record says it logs (bma/record.py METRICS: its variants), logs one the
    record says it does not, or a quantity takes one value in every trial."""
    out = []
    for variant, group in used.groupby("variant"):
        missing, extra = [], []
        for column in metrics:
            family = R.metric_family(column.removeprefix("final/"))
            have = int(group[column].notna().sum())
            expected = family is not None and variant in family.variants
            if expected and have < len(group):
                missing.append(f"{column.removeprefix('final/')} ({have} of {len(group)})")
            elif not expected and have:
                extra.append(column.removeprefix("final/"))
        if missing:
            out.append(f"variant {variant}: expected quantities missing in some trials: " + ", ".join(missing[:8])
                       + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
        if extra:
            out.append(f"variant {variant}: logs quantities the record does not expect of it: " + ", ".join(extra))
    for column in metrics:
        values = used[column].dropna()
        if len(values) > 1 and is_constant(values):
            out.append(f"{column.removeprefix('final/')} takes one value ({values.iloc[0]:.3g}) in every one of its "
                       f"{len(values)} trials: a degenerate estimate, not a measurement")
    return out


# -- the report ---------------------------------------------------------------------------------------------------


def report(studies: list[str] | str, tracking_uri: str | None, out: Path,
           sesoi: list[str] | None = None) -> dict[str, pd.DataFrame]:
    studies = [studies] if isinstance(studies, str) else list(studies)
    problem = replace_problem(os.path.abspath(out), COMMAND)  # said before minutes of reading (write_folder again)
    if problem:
        raise AnalysisError(problem)
    runs, keys, deltas, sources, notes, hist = load(studies, tracking_uri, sesoi)
    used = runs[runs["used"]].copy()
    cells = cell_keys(used, keys)
    fixed = {k: used[k].iloc[0] for k in keys if k in used and k not in cells and k != R.SEED_KEY
             and used[k].astype(str).nunique(dropna=False) == 1}
    metrics = quantity_metrics(used)
    notes = notes + coverage_notes(used, metrics)
    stale = stale_trials(hist)

    t1 = table1(used, cells, metrics, stale)
    tr = trends(used, cells, metrics + probe_metrics(used), deltas)
    steps = cycle_steps(used, cells)
    loss, loss_lines = cycle_loss(steps, cells)
    a_units, a_targets = hf_units(used, cells, metrics)
    b_units, b_targets = variant_units(used, cells, metrics)
    what_a, what_b = "(a) acc_h - acc_f", f"(b) {TREATMENT} - {BASELINE}"
    pa, na = screen(a_units, a_targets, metrics, what_a)
    pb, nb = screen(b_units, b_targets, metrics, what_b) if b_targets else (pd.DataFrame(), [
        f"(b): no {TREATMENT} and {BASELINE} trials of one cell and seed: no paired target"])
    pred = pd.concat([pa, pb], ignore_index=True)
    hold = pd.concat([holdout(a_units, a_targets, metrics, what_a)]
                     + ([holdout(b_units, b_targets, metrics, what_b)] if b_targets else []), ignore_index=True)
    steps_out = steps.drop(columns="_values") if not steps.empty else steps

    tables = {"table1": t1, "trends": tr, "cycle_steps": steps_out, "cycle_loss": loss, "predictors": pred,
              "holdout": hold}
    texts = {"table1": table1_markdown(t1, cells, studies, fixed, []),
             "trends": trends_markdown(tr, studies, fixed, sources, []),
             "cycle_loss": cycles_markdown(loss, steps, cells, studies, fixed, loss_lines, []),
             "predictors": predictors_markdown(pred, hold, studies, fixed, na + nb)}

    def draw(folder: Path) -> list:
        files = []
        if not t1.empty:
            tex = folder / "table1.tex"
            tex.write_text(to_latex(table1_wide(t1, cells), f"Table 1 per regime cell ({', '.join(studies)}): mean "
                                    "± 95 % t half-width over seeds (seeds), nats", "tab:table1"))
            files.append(tex)
        if not steps.empty:
            for where, _ in _groups(steps_out, cells):
                files.append(cycle_figure(steps_out, where, cells, folder))
        return files

    write_report(out, COMMAND, ",".join(studies), tables, texts, notes, draw, studies=studies, cells=cells,
                 sesoi={s: d for s, d in deltas.items()})
    return tables


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True, action="append", help="study name (repeatable: the predictors pool "
                   "every study's trials; the tables keep them apart)")
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///mlflow.db in the cwd)")
    p.add_argument("--out", required=True, type=Path, help="folder for the tables and figures: created, or replaced "
                   "only when an earlier report wrote it (its manifest.json lists every file in it)")
    p.add_argument(SESOI_OPTION[0], **{**SESOI_OPTION[1], "help": "smallest effect of interest of the trends' flat "
                                       "verdict: 'GLOB=delta' (e.g. 'info/H_Wv/*=0.1'), repeatable; replaces the "
                                       "specs' analysis.sesoi"})
    args = p.parse_args(argv)
    try:
        tables = report(args.study, args.tracking_uri, args.out, args.sesoi)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"studies {', '.join(args.study)}: " + ", ".join(f"{k} {len(v)} rows" for k, v in tables.items())
          + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
