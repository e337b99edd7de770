"""Aggregate trials across seeds within each cell: mean, std, 95 % confidence interval, seed and failure counts."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

CI_LEVEL = 0.95
CI_METHODS = ("t", "bootstrap")  # Student t (the default) or percentile bootstrap over seeds
BOOTSTRAP_RESAMPLES = 9999  # resamples of the bootstrap interval
VALUE_PREFIXES = ("final/", "selected/")  # per-run value columns (analysis.collect): last step, validation-selected
STAT_SUFFIXES = ("mean", "std", "ci95_low", "ci95_high", "n")

# the curated columns of the Markdown/LaTeX tables (present ones only), in this order
MAIN_METRICS = (
    "acc/image_probe_h",
    "acc/sound_probe_h",
    "retrieval/i2s_r1",
    "retrieval/s2i_r1",
    "assoc/i2s_acc",
    "assoc/s2i_acc",
)
# metrics compared between variants (paired tests): accuracy-like families, final values
COMPARE_PREFIXES = ("acc/", "retrieval/", "assoc/")


def t_interval(values, level: float = CI_LEVEL) -> tuple[float, float]:
    """Student-t interval for the mean: mean +- t_{(1+level)/2, n-1} * s / sqrt(n); NaN for n < 2."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if n < 2:
        return float("nan"), float("nan")
    mean, sem = x.mean(), x.std(ddof=1) / np.sqrt(n)
    if sem == 0:
        return float(mean), float(mean)
    half = stats.t.ppf((1 + level) / 2, df=n - 1) * sem
    return float(mean - half), float(mean + half)


def bootstrap_interval(values, level: float = CI_LEVEL, n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (scipy.stats.bootstrap); NaN for n < 2, a point if constant."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return float("nan"), float("nan")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-n degeneracy warnings: the interval is what it is
        res = stats.bootstrap(
            (x,), np.mean, confidence_level=level, n_resamples=n_resamples, method="percentile",
            vectorized=True, rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def describe(values, ci: str = CI_METHODS[0], n_resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, float]:
    """mean, std (ddof=1), ci95_low, ci95_high, n over the non-NaN values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = len(x)
    if ci not in CI_METHODS:
        raise ValueError(f"ci: expected one of {CI_METHODS}, got {ci!r}")
    low, high = t_interval(x) if ci == "t" else bootstrap_interval(x, n_resamples=n_resamples)
    return {
        "mean": float(x.mean()) if n else float("nan"),
        "std": float(x.std(ddof=1)) if n > 1 else float("nan"),
        "ci95_low": low,
        "ci95_high": high,
        "n": n,
    }


def value_columns(runs: pd.DataFrame) -> list[str]:
    return [c for c in runs.columns if c.startswith(VALUE_PREFIXES)]


def summarize(runs: pd.DataFrame, keys: list[str], ci: str = CI_METHODS[0], n_resamples: int = BOOTSTRAP_RESAMPLES) -> pd.DataFrame:
    """One row per cell (``keys``): n_seeds / n_failed / n_running and, per value column, the STAT_SUFFIXES.

    Statistics use the trials with ``used`` (the finished run of each cell and seed); failed and running trials
    are counted, never aggregated. A cell whose trials all failed still gets a row (n_seeds = 0, NaN stats).
    """
    cols = value_columns(runs)
    rows = []
    for key, grp in runs.groupby(keys, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        used = grp[grp["used"]]
        live = grp[~grp["superseded"]]
        row["variant"] = grp["variant"].iloc[0]
        row["regime"] = grp["regime"].dropna().iloc[0] if grp["regime"].notna().any() else None
        row["n_seeds"] = len(used)
        row["n_failed"] = int((live["state"] == "failed").sum())
        row["n_running"] = int((live["state"] == "running").sum())
        row["n_trials"] = len(grp)
        row["seeds"] = ",".join(str(s) for s in sorted(used["seed"].dropna().astype(int)))
        for c in cols:
            for suffix, value in describe(used[c].to_numpy(dtype=float), ci, n_resamples).items():
                row[f"{c}_{suffix}"] = value
        rows.append(row)
    out = pd.DataFrame(rows)
    for c in out.columns:
        if c.endswith("_n") or c in ("n_seeds", "n_failed", "n_running", "n_trials"):
            out[c] = out[c].astype("int64")
    return out


def constant_keys(table: pd.DataFrame, keys: list[str]) -> dict[str, object]:
    """Keys that take one value over the whole table (shown once above a table instead of in every row)."""
    return {k: table[k].iloc[0] for k in keys if k in table and table[k].astype(str).nunique(dropna=False) == 1}


def present_main(metrics: list[str], prefix: str = "final/") -> list[str]:
    """The MAIN_METRICS present among ``metrics``, as value-column names (``final/acc/image_probe_h``)."""
    return [f"{prefix}{m}" for m in MAIN_METRICS if m in metrics]


def failure_reason(trials: pd.DataFrame) -> str:
    """Why a group of trials has no finished one: counts by state and the distinct errors, e.g.
    ``3 failed (RuntimeError: CUDA out of memory x3)``; empty when the group has no trial at all."""
    if trials.empty:
        return ""
    parts = []
    for state, grp in trials.groupby("state", sort=True):
        errors = grp["error"].dropna().astype(str).map(lambda e: " ".join(e.split())[:120]) if "error" in grp else []
        counted = pd.Series(errors).value_counts() if len(errors) else pd.Series(dtype=int)
        why = "; ".join(f"{e} x{n}" if n > 1 else e for e, n in counted.items())
        parts.append(f"{len(grp)} {state}" + (f" ({why})" if why else ""))
    return ", ".join(parts)


def absent_groups(trials: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The groups (``by``) of the study's trials (superseded ones left out) without a finished trial, with the
    reason: one row per group, columns ``by`` + ``reason``. What a report says instead of dropping them."""
    live = trials[~trials["superseded"]] if "superseded" in trials else trials
    rows = []
    for key, grp in live.groupby(by, dropna=False, sort=True):
        if not grp["used"].any():
            rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), "reason": failure_reason(grp)})
    return pd.DataFrame(rows, columns=by + ["reason"])
