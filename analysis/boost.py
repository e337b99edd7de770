"""The boost report: does a pool of unpaired samples of one modality improve the other modality's representation?

    python -m analysis.boost --study boost --out out/boost_report           # sounds fixed, unpaired images swept
    python -m analysis.boost --study boost_mirror --out out/boost_mirror    # the mirror

Reads one study from MLflow (only what the engine records: params, final metrics), finds the swept pool
(``regime.unpaired_images`` or ``regime.unpaired_sounds``), and writes, for the probes of the *other* modality
(the sound probes when images are swept) and of the swept one:

- ``curves.{csv,md}``: mean and 95 % t-interval over seeds of each probe at each label budget, per variant, pool
  size and remaining cell key (e.g. the number of pairs);
- ``tests.{csv,md}``: paired contrasts (by seed: nested regimes make a seed one data draw for every variant and
  pool) of bma - unimodal, bma - paired_only, paired_only - unimodal at every pool size, of every variant's largest
  pool vs no pool, and every variant's trend over all pool levels (slope per log10(1 + pool), seeds as blocks),
  each with its verdict (analysis.verdicts: estimate, 95 % and 90 % CI, delta, gain / loss / equivalent /
  inconclusive, p, seeds needed); Holm within one family per metric (every row of that metric: ``family``,
  ``family_size``; tests.md states "Holm over N tests within <metric>");
- ``exchange.{csv,md}``: unpaired samples per pair for the same gain, from the finite differences of the
  accuracy along the pairs axis and along the pool axis (per seed, then mean and t-interval), where both exist;
- ``information.{csv,md}``: the information quantities (info/*) per variant and pool, mean and 95 % t-interval;
- ``boost_<metric>.png``: accuracy against pool size per variant with the t-band, one panel per label budget.
Every number carries its sample size (seeds). A variant (or cell) whose trials all failed is said, not dropped: a
note in tests.md and on stderr, and rows with n = 0 and the failures. ``--out`` follows the export's rule
(analysis.export.write_folder): a folder a report did not write is refused (exit 2), nothing written.
``--sesoi`` (``0.02`` for acc/*, or ``GLOB=0.02``) replaces the spec's recorded analysis.sesoi.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.aggregate import absent_groups, failure_reason, t_interval
from analysis.collect import AnalysisError, collect_study, study_sesoi
from analysis.compare import VERDICT_COLUMNS, holm_families, missing_row, resolve_sesoi, verdict_row
from analysis.tables import verdict_markdown
from analysis.verdicts import sesoi_for, trend

POOL_KEYS = ("regime.unpaired_images", "regime.unpaired_sounds")
VARIANT, SEED = "model.variant", "seed"  # columns of collect_study's runs table
PROBE_RE = re.compile(r"^final/(xdomain/[^/]+/)?acc/(image|sound)_probe_(f|h)(/k\d+)?$")
COMPARISONS = (("bma", "unimodal"), ("bma", "paired_only"), ("paired_only", "unimodal"))


def swept_pool(runs: pd.DataFrame) -> str:
    varying = [k for k in POOL_KEYS if k in runs.columns and runs[k].nunique() > 1]
    if len(varying) != 1:
        raise AnalysisError(f"expected exactly one swept pool among {POOL_KEYS}, found {varying or 'none'}")
    return varying[0]


def probe_metrics(runs: pd.DataFrame) -> list[str]:
    """The probe accuracies the study logged: in-domain and cross-domain, full labels and label budgets."""
    return sorted(c for c in runs.columns if PROBE_RE.match(c) and runs[c].notna().any())


def cell_keys(runs: pd.DataFrame, keys: list[str], pool: str) -> list[str]:
    """The recorded cell keys that vary besides the pool and the variant (e.g. regime.pairs, features.sound_snr_db)."""
    return [k for k in keys if k not in (pool, VARIANT, SEED, "regime.seed") and k in runs.columns and runs[k].nunique(dropna=False) > 1]


def curves(runs: pd.DataFrame, metrics: list[str], by: list[str]) -> pd.DataFrame:
    rows = []
    for key, group in runs.groupby(by, dropna=False, sort=True):
        for metric in metrics:
            x = group[metric].to_numpy(float)
            x = x[~np.isnan(x)]
            if not len(x):
                continue
            low, high = t_interval(x)
            rows.append({**dict(zip(by, key)), "metric": metric.removeprefix("final/"), "n_seeds": len(x),
                         "mean": x.mean(), "std": x.std(ddof=1) if len(x) > 1 else np.nan,
                         "ci95_low": low, "ci95_high": high})
    return pd.DataFrame(rows)


def _by_seed(group: pd.DataFrame, metric: str) -> pd.Series:
    return group.groupby(SEED)[metric].mean()


TREND_X = "log10(1 + pool)"  # the trend's axis: pools are log-spaced and include 0


def trend_x(levels) -> np.ndarray:
    return np.log10(1.0 + np.asarray(levels, dtype=float))


def _select(frame: pd.DataFrame, where: dict) -> pd.DataFrame:
    sel = np.ones(len(frame), dtype=bool)
    for k, v in where.items():
        col = frame[k]
        sel &= (col.isna().to_numpy() if pd.isna(v) else (col == v).to_numpy())
    return frame[sel]


def tests(trials: pd.DataFrame, metrics: list[str], pool: str, others: list[str],
          sesoi: dict[str, float] | None = None) -> pd.DataFrame:
    """Paired-by-seed contrasts with their verdicts (analysis.verdicts): variants against each other at each pool
    size, each variant's largest pool against no pool (the boost itself), and each variant's trend over all pool
    levels (per-seed OLS slope of the metric on log10(1 + pool), t-interval over seeds; its delta is the metric's
    delta over the swept span of x, so "equivalent" means the fitted change across the sweep stays within delta).
    Holm within one family per metric: every row of that metric in this table (``family``, ``family_size``).

    ``trials``: the study's trials as collected (finished, failed, running); the statistics use the ``used`` ones.
    A contrast with a side whose trials all failed keeps its row, n = 0, the failures in ``note``."""
    live = trials[~trials["superseded"]] if "superseded" in trials else trials
    runs = live[live["used"]]
    rows = []
    cells = others + [pool]

    def missing(side: pd.DataFrame, label: str) -> str:
        return f"no finished trial of {label}" + (f": {failure_reason(side)}" if len(side) else "")

    for key, everything in live.groupby(cells, dropna=False, sort=True):
        where = dict(zip(cells, key if isinstance(key, tuple) else (key,)))
        group = everything[everything["used"]]
        present = set(everything[VARIANT].dropna())
        for a, b in COMPARISONS:
            if a not in present or b not in present:
                continue  # not a contrast of this study
            va, vb = group[group[VARIANT] == a], group[group[VARIANT] == b]
            for metric in metrics:
                name, delta = metric.removeprefix("final/"), sesoi_for(metric, sesoi)
                if va.empty or vb.empty:
                    why = "; ".join(missing(everything[everything[VARIANT] == v], v)
                                    for v, side in ((a, va), (b, vb)) if side.empty)
                    rows.append({**where, "test": f"{a} - {b}", "metric": name, **missing_row(delta, why)})
                    continue
                sa, sb = _by_seed(va, metric), _by_seed(vb, metric)
                common = sa.index.intersection(sb.index)
                rows.append({**where, "test": f"{a} - {b}", "metric": name,
                             **verdict_row((sa[common] - sb[common]).dropna(), delta)})
    levels = sorted(live[pool].dropna().unique())
    if len(levels) > 1:
        low, high = levels[0], levels[-1]
        x = trend_x(levels)
        span = float(x[-1] - x[0])
        by = others + [VARIANT]
        for key, everything in live.groupby(by, dropna=False, sort=True):
            where = dict(zip(by, key if isinstance(key, tuple) else (key,)))
            group = everything[everything["used"]]
            gone = [lv for lv in (low, high) if group.empty or lv not in set(group[pool])]
            note = "; ".join(missing(everything[everything[pool] == lv], f"{where[VARIANT]} at pool {lv:g}")
                             for lv in gone)
            g_low, g_high = group[group[pool] == low], group[group[pool] == high]
            for metric in metrics:
                delta = sesoi_for(metric, sesoi)
                name = metric.removeprefix("final/")
                s_low, s_high = _by_seed(g_low, metric), _by_seed(g_high, metric)
                common = s_low.index.intersection(s_high.index)
                rows.append({**where, pool: f"{high:g} vs {low:g}", "test": f"pool {high:g} - pool {low:g}",
                             "metric": name,
                             **verdict_row((s_high[common] - s_low[common]).dropna(), delta, note=note)})
                grid = group.pivot_table(index=SEED, columns=pool, values=metric, aggfunc="mean") if len(group) \
                    else pd.DataFrame(columns=levels)
                grid = grid.reindex(columns=levels)
                c = trend(grid.to_numpy(float).reshape(-1, len(levels)), x, None if delta is None else delta / span)
                row = verdict_row(np.array([]), None)
                row.update(c.row())
                row["seeds"] = ",".join(str(int(s)) for s in grid.index[grid.notna().sum(axis=1) >= 2])
                missing_levels = [f"{lv:g}" for lv in levels if group.empty or lv not in set(group[pool])]
                row["note"] = "; ".join(t for t in (
                    f"slope per unit {TREND_X} over {len(levels) - len(missing_levels)} of {len(levels)} levels"
                    + (f"; delta {delta:g} over the span {span:.3g} of x" if delta else ""),
                    ("no finished trial at pool " + ", ".join(missing_levels)) if missing_levels else "",
                    row["note"]) if t)
                rows.append({**where, pool: "all levels", "test": f"trend per {TREND_X}", "metric": name, **row})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = holm_families(table, table["metric"])
    lead = [c for c in others + [pool, VARIANT, "test", "metric"] if c in table.columns]
    return table[lead + [c for c in VERDICT_COLUMNS if c not in lead]]


FAMILY_DEFINITION = ("every test of this metric in this report: the variant contrasts at each cell and pool, each "
                     "variant's largest pool against none, and each variant's trend over the pools")


def exchange(runs: pd.DataFrame, metrics: list[str], pool: str) -> pd.DataFrame:
    """Unpaired samples per pair for the same gain, per variant: R = (dA/dP) / (dA/dU), with dA/dP the per-pair
    gain between the two pair levels at a fixed pool and dA/dU the per-sample gain between adjacent pool levels at
    a fixed number of pairs (both averaged over the two edges of each rectangle, per seed). Reported only where
    both gains are positive on average; otherwise more of one kind does not help and the ratio means nothing."""
    if "regime.pairs" not in runs.columns or runs["regime.pairs"].nunique() < 2:
        return pd.DataFrame()
    pairs = sorted(runs["regime.pairs"].unique())
    levels = sorted(runs[pool].unique())
    rows = []
    for variant, group in runs.groupby(VARIANT):
        for metric in metrics:
            table = group.pivot_table(index=SEED, columns=["regime.pairs", pool], values=metric, aggfunc="mean")
            for p0, p1 in zip(pairs, pairs[1:]):
                for u0, u1 in zip(levels, levels[1:]):
                    try:
                        a00, a01 = table[(p0, u0)], table[(p0, u1)]
                        a10, a11 = table[(p1, u0)], table[(p1, u1)]
                    except KeyError:
                        continue
                    d_pair = ((a10 - a00) + (a11 - a01)) / 2 / (p1 - p0)  # per seed
                    d_unpair = ((a01 - a00) + (a11 - a10)) / 2 / (u1 - u0)
                    ok = ~(d_pair.isna() | d_unpair.isna())
                    dp, du = d_pair[ok].to_numpy(), d_unpair[ok].to_numpy()
                    if not len(dp):
                        continue
                    rate = dp.mean() / du.mean() if dp.mean() > 0 and du.mean() > 0 else np.nan
                    rows.append({
                        "variant": variant, "metric": metric.removeprefix("final/"), "pairs": f"{p0:g}-{p1:g}",
                        "pool": f"{u0:g}-{u1:g}", "n_seeds": len(dp),
                        "dA_per_1k_pairs": 1000 * dp.mean(), "dA_per_1k_pairs_ci95": _ci(1000 * dp),
                        "dA_per_1k_unpaired": 1000 * du.mean(), "dA_per_1k_unpaired_ci95": _ci(1000 * du),
                        "unpaired_per_pair": rate,
                        "note": "" if np.isfinite(rate) else "a gain is not positive: no exchange rate",
                    })
    return pd.DataFrame(rows)


def _ci(x: np.ndarray) -> str:
    low, high = t_interval(x)
    return f"[{low:.3g}, {high:.3g}]" if np.isfinite(low) else ""


def plot(curve: pd.DataFrame, pool: str, others: list[str], out: Path, metric_stem: str, n_runs: int) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = curve[curve["metric"].str.fullmatch(re.escape(metric_stem) + r"(/k\d+)?")]
    if rows.empty:
        return None
    budgets = sorted(rows["metric"].unique(), key=lambda m: int(m.rsplit("/k", 1)[1]) if "/k" in m else 10**9)
    groups = [()] if not others else sorted(rows.groupby(others, dropna=False).groups)
    levels = sorted(rows[pool].unique())  # evenly spaced on the axis: the pools are log-spaced and include 0
    fig, axes = plt.subplots(len(groups), len(budgets), figsize=(3.2 * len(budgets), 2.8 * len(groups)),
                             squeeze=False, sharex=True)
    for i, group in enumerate(groups):
        sel = rows if not others else rows[(rows[others] == pd.Series(group if isinstance(group, tuple) else (group,),
                                                                        index=others)).all(axis=1)]
        for j, metric in enumerate(budgets):
            ax = axes[i][j]
            for variant, v in sel[sel["metric"] == metric].groupby(VARIANT):
                v = v.sort_values(pool)
                x = [levels.index(u) for u in v[pool]]
                ax.plot(x, v["mean"], marker="o", label=variant)
                ax.fill_between(x, v["ci95_low"], v["ci95_high"], alpha=0.2)
            ax.set_xticks(range(len(levels)), [f"{u:,.0f}" for u in levels])
            label = "all labels" if "/k" not in metric else f"{metric.rsplit('/k', 1)[1]} labels/class"
            title = label + ("" if not others else "\n" + ", ".join(f"{k.split('.')[-1]}={g}" for k, g in
                                                                     zip(others, group if isinstance(group, tuple) else (group,))))
            ax.set_title(title, fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(groups) - 1:
                ax.set_xlabel(pool.split(".")[-1].replace("_", " "), fontsize=8)
            if j == 0:
                ax.set_ylabel(metric_stem.removeprefix("acc/"), fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{metric_stem}: linear probe on the official test split; mean and 95 % t-band over seeds "
                 f"({n_runs} trials)", fontsize=8)
    fig.tight_layout()
    path = out / f"boost_{metric_stem.replace('/', '_')}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_tables(tables: dict[str, pd.DataFrame], out: Path, texts: dict[str, str] | None = None,
                 notes: list[str] = ()) -> list[str]:
    """Each report table as CSV and Markdown (the report modules' one output format): ``texts[name]`` when given
    (a curated rendering), else the whole table under the report's notes. Returns the files written."""
    files = []
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        text = (texts or {}).get(name)
        if text is None:
            head = "".join(f"- {n}\n" for n in notes) + ("\n" if notes else "")
            text = head + (table.to_markdown(index=False, floatfmt=".4g") + "\n" if not table.empty else "(empty)\n")
        (out / f"{name}.md").write_text(text)
        files += [str(out / f"{name}.csv"), str(out / f"{name}.md")]
    return files


def write_report(out: Path, command: str, study: str, tables: dict[str, pd.DataFrame],
                 texts: dict[str, str] | None = None, notes: list[str] = (), draw=None, **meta) -> list[str]:
    """Write a report's tables (``write_tables``), figures (``draw(folder) -> files``) and manifest into ``out``
    the way every report command writes its --out (analysis.export.write_folder: a folder a report did not write is
    refused, nothing written; the folder appears complete or not at all). The notes go to stderr as well."""
    from analysis.export import write_folder, write_manifest

    def build(tmp: str):
        folder = Path(tmp)
        files = write_tables(tables, folder, texts, notes)
        if draw is not None:
            files += [str(f) for f in draw(folder) if f]
        files.append(write_manifest(tmp, f"bma-study {command.removeprefix('python -m ')}", files, study=study,
                                    command=command, notes=list(notes), **meta))
        return files, None

    files, _ = write_folder(str(out), build, command)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    return files


SESOI_OPTION = ("--sesoi", {"nargs": "+", "metavar": "DELTA", "default": None,
                            "help": "smallest effect of interest for the verdicts: '0.02' (for acc/*) or 'GLOB=0.02', "
                                    "repeatable; replaces the spec's analysis.sesoi"})


def report_cli(prog: str, description: str, report_fn, argv: list[str] | None, extra=()) -> int:
    """The report modules' command line: --study, --tracking-uri, --out, --sesoi (and ``extra`` (flag, kwargs)
    options passed to ``report_fn`` by name); exit 2 with one line on an AnalysisError (an --out folder a report
    did not write among them: nothing is written then)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--study", required=True)
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///mlflow.db in the cwd)")
    p.add_argument("--out", required=True, type=Path, help="folder for the tables and plots: created, or replaced "
                   "only when an earlier report wrote it (its manifest.json lists every file in it)")
    p.add_argument(SESOI_OPTION[0], **SESOI_OPTION[1])
    for flag, kwargs in extra:
        p.add_argument(flag, **kwargs)
    args = vars(p.parse_args(argv))
    study, uri, out = args.pop("study"), args.pop("tracking_uri"), args.pop("out")
    try:
        tables = report_fn(study, uri, out, **args)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"study {study}: " + ", ".join(f"{k} {len(v)} rows" for k, v in tables.items()) + f" -> {out}")
    return 0


def report_sesoi(study: str, tracking_uri: str | None, cli) -> tuple[dict[str, float], str, list[str]]:
    """(deltas, where they come from, notes): ``--sesoi`` values, else the spec's recorded analysis.sesoi."""
    recorded, notes = study_sesoi(study, tracking_uri)
    try:
        sesoi, source = resolve_sesoi(cli, recorded)
    except ValueError as exc:
        raise AnalysisError(f"--sesoi: {exc}") from None
    return sesoi, source, notes


def absent_notes(absent: pd.DataFrame, label) -> list[str]:
    """One line per group whose trials all failed (``label(row)`` names it)."""
    return [f"{label(r)}: no finished trial ({r['reason']}); its contrasts are rows with n = 0"
            for _, r in absent.iterrows()]


def report(study: str, tracking_uri: str | None, out: Path, sesoi: list[str] | None = None) -> dict[str, pd.DataFrame]:
    data = collect_study(study, tracking_uri)
    runs = data.used.copy()
    if runs.empty:
        raise AnalysisError(f"study {study}: no finished trial to report")
    deltas, source, notes = report_sesoi(study, tracking_uri, sesoi)
    pool = swept_pool(data.runs)
    others = cell_keys(runs, data.keys, pool)
    metrics = probe_metrics(runs)
    info = sorted(c for c in runs.columns if c.startswith("final/info/") and runs[c].notna().any())
    by = others + [pool, VARIANT]
    absent = absent_groups(data.runs, by)
    notes += absent_notes(absent, lambda r: ", ".join(f"{short(k)}={r[k]}" for k in by))
    test_table = tests(data.runs, metrics, pool, others, deltas)
    tables = {
        "curves": _with_absent(curves(runs, metrics, by), absent, by),
        "tests": test_table,
        "exchange": exchange(runs, metrics, pool),
        "information": curves(runs, info, by),
    }
    texts = {"tests": verdict_markdown(test_table, f"Study `{study}`: paired tests and verdicts",
                                       others + [pool, VARIANT, "test"], FAMILY_DEFINITION, source, notes)}

    def draw(folder: Path) -> list:
        return [plot(tables["curves"], pool, others, folder, stem, len(runs))
                for stem in sorted({PROBE_RE.match(m).group(0).removeprefix("final/").split("/k")[0] for m in metrics})]

    write_report(out, "python -m analysis.boost", study, tables, texts, notes, draw, sesoi=deltas)
    return tables


def short(key: str) -> str:
    return key.split(".")[-1]


def _with_absent(table: pd.DataFrame, absent: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The curves plus a row (n_seeds 0, the failures in ``note``) for each group whose trials all failed."""
    if absent.empty:
        return table
    extra = absent.rename(columns={"reason": "note"}).assign(metric="(all)", n_seeds=0)
    return pd.concat([table, extra], ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    return report_cli("python -m analysis.boost", __doc__.split("\n\n")[0], report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
