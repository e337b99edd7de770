"""The boost report: does a pool of unpaired samples of one modality improve the other modality's representation?

    python -m analysis.boost --study boost --out out/boost_report           # sounds fixed, unpaired images swept
    python -m analysis.boost --study boost_mirror --out out/boost_mirror    # the mirror

Reads one study from MLflow (only what the engine records: params, final metrics), finds the swept pool
(``regime.unpaired_images`` or ``regime.unpaired_sounds``), and writes, for the probes of the *other* modality
(the sound probes when images are swept) and of the swept one:

- ``curves.{csv,md}``: mean and 95 % t-interval over seeds of each probe at each label budget, per variant, pool
  size and remaining cell key (e.g. the number of pairs);
- ``tests.{csv,md}``: paired tests (by seed: nested regimes make a seed one data draw for every variant and pool)
  of bma vs unimodal, bma vs paired_only at every pool size, and of every variant's largest pool vs no pool;
  t-test and Wilcoxon, Holm-corrected within each metric across all the tests of this report;
- ``exchange.{csv,md}``: unpaired samples per pair for the same gain, from the finite differences of the
  accuracy along the pairs axis and along the pool axis (per seed, then mean and t-interval), where both exist;
- ``information.{csv,md}``: the information quantities (info/*) per variant and pool, mean and 95 % t-interval;
- ``boost_<metric>.png``: accuracy against pool size per variant with the t-band, one panel per label budget.
Every number carries its sample size (seeds).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.aggregate import t_interval
from analysis.collect import AnalysisError, collect_study
from analysis.compare import holm, paired_test

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


def tests(runs: pd.DataFrame, metrics: list[str], pool: str, others: list[str]) -> pd.DataFrame:
    """Paired-by-seed tests: variants against each other at each pool size, and each variant's largest pool
    against no pool (the boost itself); Holm within each metric over every row of this table."""
    rows = []
    cells = others + [pool]
    for key, group in runs.groupby(cells, dropna=False, sort=True):
        where = dict(zip(cells, key if isinstance(key, tuple) else (key,)))
        for a, b in COMPARISONS:
            va, vb = group[group[VARIANT] == a], group[group[VARIANT] == b]
            if va.empty or vb.empty:
                continue
            for metric in metrics:
                sa, sb = _by_seed(va, metric), _by_seed(vb, metric)
                common = sa.index.intersection(sb.index)
                rows.append({**where, "test": f"{a} - {b}", "metric": metric.removeprefix("final/"),
                             **paired_test(sb[common].to_numpy(), sa[common].to_numpy())})
    levels = sorted(runs[pool].dropna().unique())
    if len(levels) > 1:
        low, high = levels[0], levels[-1]
        for key, group in runs.groupby(others + [VARIANT] if others else [VARIANT], dropna=False, sort=True):
            where = dict(zip(others + [VARIANT], key if isinstance(key, tuple) else (key,)))
            g_low, g_high = group[group[pool] == low], group[group[pool] == high]
            for metric in metrics:
                s_low, s_high = _by_seed(g_low, metric), _by_seed(g_high, metric)
                common = s_low.index.intersection(s_high.index)
                rows.append({**where, pool: f"{high:g} vs {low:g}", "test": f"pool {high:g} - pool {low:g}",
                             "metric": metric.removeprefix("final/"),
                             **paired_test(s_low[common].to_numpy(), s_high[common].to_numpy())})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    for column in ("p_ttest", "p_wilcoxon"):
        table[f"{column}_holm"] = np.nan
        for metric, idx in table.groupby("metric").groups.items():
            table.loc[idx, f"{column}_holm"] = holm(table.loc[idx, column].to_numpy(float))
    return table


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


def write_tables(tables: dict[str, pd.DataFrame], out: Path) -> None:
    """Each report table as CSV and Markdown (the report modules' one output format)."""
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.md").write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n" if not table.empty
                                        else "(empty)\n")


def report_cli(prog: str, description: str, report_fn, argv: list[str] | None, extra=()) -> int:
    """The report modules' command line: --study, --tracking-uri, --out (and ``extra`` (flag, kwargs) options
    passed to ``report_fn`` by name); exit 2 with one line on an AnalysisError."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--study", required=True)
    p.add_argument("--tracking-uri", default=None, help="MLflow store (default: sqlite:///mlflow.db in the cwd)")
    p.add_argument("--out", required=True, type=Path, help="folder for the tables and plots (created)")
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


def report(study: str, tracking_uri: str | None, out: Path, data=None) -> dict[str, pd.DataFrame]:
    """``data``: the study as collect_study read it already (the study page passes its own), else read here."""
    data = data if data is not None else collect_study(study, tracking_uri)
    runs = data.used.copy()
    if runs.empty:
        raise AnalysisError(f"study {study}: no finished trial to report")
    pool = swept_pool(runs)
    others = cell_keys(runs, data.keys, pool)
    metrics = probe_metrics(runs)
    info = sorted(c for c in runs.columns if c.startswith("final/info/") and runs[c].notna().any())
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "curves": curves(runs, metrics, others + [pool, VARIANT]),
        "tests": tests(runs, metrics, pool, others),
        "exchange": exchange(runs, metrics, pool),
        "information": curves(runs, info, others + [pool, VARIANT]),
    }
    write_tables(tables, out)
    for stem in sorted({PROBE_RE.match(m).group(0).removeprefix("final/").split("/k")[0] for m in metrics}):
        plot(tables["curves"], pool, others, out, stem, len(runs))
    return tables


def main(argv: list[str] | None = None) -> int:
    return report_cli("python -m analysis.boost", __doc__.split("\n\n")[0], report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
