"""Verdicts of a paired contrast: gain, loss, equivalent or inconclusive (DESIGN.md, "How a study settles a
question"), the seeds that would settle an open one, and the trend of a metric over a swept axis.

Pure functions over arrays; imports numpy and scipy only (and the standard library), nothing else of the package,
so the study driver's precision loop and the reports share one definition.

Definitions (``contrast``), over the per-seed paired differences d_1..d_n (NaNs dropped), with
mean m, sd s (ddof 1), se = s / sqrt(n) and t_q the Student-t quantile with n - 1 degrees of freedom:

- ``ci95`` = m +- t_{1-alpha/2} se and ``ci90`` = m +- t_{1-alpha} se (95 % and 90 % at the default alpha = 0.05);
- ``p_two_sided``: t-test of mean 0, 2 P(T > |m / se|);
- ``p_tost``: two one-sided tests against +-delta, max(P(T > (m + delta) / se), P(T < (m - delta) / se)); it is
  below alpha exactly when the 90 % CI lies strictly inside (-delta, +delta);
- ``verdict`` (one rule, applied in this order):
    1. ``undetermined`` when n < 3 or s = 0 up to rounding (``is_constant``): nothing is tested, every interval
       and p value is NaN and ``note`` says why (a p value is never 0 from t = inf);
    2. ``gain`` when the 95 % CI lies above 0, ``loss`` when below 0. The sign is the verdict even when the 90 % CI
       also lies inside +-delta: then ``within_sesoi`` is True and the note reads "gain, smaller than delta" -- a
       real effect, too small to matter by the spec's own standard;
    3. ``equivalent`` when a delta is given and TOST passes (p_tost < alpha);
    4. ``inconclusive`` otherwise ("not significant" is never "no effect").
- ``seeds_needed`` (inconclusive contrasts only; NaN otherwise): a *planning estimate* of the total number of seeds
  (those already run included) that would settle the contrast if the estimate and the sd stayed as observed.
  Two ways to settle it, and the smaller n is reported (the note names which):
    * exclude 0: the 95 % CI half-width must reach |m|, so n = seeds_needed(s, |m|, 0.95);
    * equivalence (only with a delta and |m| < delta): the 90 % CI (the one TOST reads) half-width must reach
      delta - |m|, so n = seeds_needed(s, delta - |m|, 0.90).
  With m = 0 and no delta, nothing settles it: NaN. It is not a stopping rule: adding seeds until a verdict appears is
  a sequential test and needs an alpha-spending correction (DESIGN.md, "Precision targets").

``trend``: the slope of a metric over a swept axis with seeds as blocks: per seed, the OLS slope of the metric on x
over that seed's levels, then ``contrast`` of the per-seed slopes (a t-interval over seeds; the delta is per unit x).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats

VERDICTS = ("gain", "loss", "equivalent", "inconclusive")
UNDETERMINED = "undetermined"
ALPHA = 0.05
MIN_SEEDS = 3  # a verdict needs at least this many seeds
NAN = float("nan")


@dataclass(frozen=True)
class Contrast:
    estimate: float  # mean paired difference (NaN without any)
    n: int  # seeds (pairs) with a value on both sides
    sd: float  # sd of the differences, ddof 1 (NaN for n < 2)
    ci95: tuple[float, float]
    ci90: tuple[float, float]
    sesoi: float | None  # delta, the smallest effect of interest (None: equivalence is not tested)
    verdict: str  # one of VERDICTS, or UNDETERMINED (n < 3 or sd == 0)
    p_two_sided: float
    p_tost: float
    seeds_needed: float
    note: str
    within_sesoi: bool = False  # the 90 % CI lies inside +-delta (TOST passes), whatever the verdict

    def row(self, prefix: str = "") -> dict:
        """The flat columns of a report table (``ci95_low`` ... ``note``), each name with ``prefix``."""
        d = asdict(self)
        (lo95, hi95), (lo90, hi90) = d.pop("ci95"), d.pop("ci90")
        flat = {"estimate": d["estimate"], "ci95_low": lo95, "ci95_high": hi95, "ci90_low": lo90, "ci90_high": hi90,
                "n": d["n"], "sd": d["sd"], "sesoi": NAN if d["sesoi"] is None else d["sesoi"],
                "verdict": d["verdict"], "p": d["p_two_sided"], "p_tost": d["p_tost"],
                "seeds_needed": d["seeds_needed"], "within_sesoi": d["within_sesoi"], "note": d["note"]}
        return {f"{prefix}{k}": v for k, v in flat.items()}


ROW_COLUMNS = tuple(Contrast(NAN, 0, NAN, (NAN, NAN), (NAN, NAN), None, UNDETERMINED, NAN, NAN, NAN, "").row())


SEEDS_NEEDED_CAP = 100_000  # beyond this, "seeds needed" is infinite: no study will run it (and t's df overflows)


def seeds_needed(sd: float, half_width: float, level: float = 0.95, min_n: int = MIN_SEEDS) -> float:
    """The smallest n >= ``min_n`` with t_{(1+level)/2, n-1} * sd / sqrt(n) <= half_width; inf past
    SEEDS_NEEDED_CAP (a target within rounding of the estimate, e.g. delta - |estimate| ~ 1e-12).

    The left side falls with n, and exceeds the normal-quantile version z * sd / sqrt(n), so the search starts at
    the normal-theory n = (z sd / half_width)^2 and steps up by one.
    """
    if not (sd >= 0) or not (half_width > 0) or not (0 < level < 1):
        raise ValueError(f"seeds_needed: needs sd >= 0, half_width > 0, 0 < level < 1 "
                         f"(got {sd}, {half_width}, {level})")
    q = (1 + level) / 2
    normal = (stats.norm.ppf(q) * sd / half_width) ** 2
    if not normal < SEEDS_NEEDED_CAP:
        return math.inf
    n = max(min_n, 2, int(math.floor(normal)))
    while stats.t.ppf(q, n - 1) * sd / math.sqrt(n) > half_width:
        n += 1
    return n


CONSTANT_RTOL = 1e-10  # a spread below this fraction of the largest |value| is rounding, not variance


def is_constant(values) -> bool:
    """Whether the values are equal up to floating-point rounding (0.6 - 0.5 and 0.7 - 0.6 differ in the 17th digit):
    their spread (max - min) is at most CONSTANT_RTOL times the largest |value|. A t-test of such values has
    t = +-inf or a t of rounding noise; either way, no test."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if not len(x):
        return False
    return float(x.max() - x.min()) <= CONSTANT_RTOL * float(np.abs(x).max())


def _undetermined(estimate, n, sd, sesoi, note) -> Contrast:
    return Contrast(estimate, n, sd, (NAN, NAN), (NAN, NAN), sesoi, UNDETERMINED, NAN, NAN, NAN, note)


def contrast(diffs, sesoi: float | None = None, alpha: float = ALPHA) -> Contrast:
    """The verdict of the per-seed paired differences ``diffs`` against 0 and against +-``sesoi`` (module doc)."""
    d = np.asarray(diffs, dtype=float).ravel()
    d = d[~np.isnan(d)]
    n = len(d)
    if sesoi is not None:
        sesoi = float(sesoi)
        if not sesoi > 0:
            raise ValueError(f"sesoi: a positive delta, got {sesoi}")
    estimate = float(d.mean()) if n else NAN
    sd = float(d.std(ddof=1)) if n > 1 else NAN
    if n < MIN_SEEDS:
        return _undetermined(estimate, n, sd, sesoi, f"{n} seed{'s' if n != 1 else ''}: at least {MIN_SEEDS} needed")
    if is_constant(d):
        return _undetermined(estimate, n, sd, sesoi, f"zero variance across seeds (every difference is {d[0]:.6g}):"
                                                     " no interval, no test")
    df = n - 1
    se = sd / math.sqrt(n)
    h95 = float(stats.t.ppf(1 - alpha / 2, df)) * se
    h90 = float(stats.t.ppf(1 - alpha, df)) * se
    ci95 = (estimate - h95, estimate + h95)
    ci90 = (estimate - h90, estimate + h90)
    p = float(2 * stats.t.sf(abs(estimate) / se, df))
    notes = []
    if sesoi is None:
        p_tost, within = NAN, False
        notes.append("no SESOI: equivalence not tested")
    else:
        p_low = float(stats.t.sf((estimate + sesoi) / se, df))  # H0: mean <= -delta
        p_high = float(stats.t.cdf((estimate - sesoi) / se, df))  # H0: mean >= +delta
        p_tost = max(p_low, p_high)
        within = p_tost < alpha
    if ci95[0] > 0 or ci95[1] < 0:
        verdict = "gain" if ci95[0] > 0 else "loss"
        if within:
            notes.append(f"{verdict}, smaller than delta: the 90 % CI also lies inside +-{sesoi:g}")
    elif within:
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    needed = NAN
    if verdict == "inconclusive":
        options = []
        if estimate != 0:
            options.append((seeds_needed(sd, abs(estimate), 1 - alpha), "to exclude 0"))
        if sesoi is not None and abs(estimate) < sesoi:
            options.append((seeds_needed(sd, sesoi - abs(estimate), 1 - 2 * alpha), "to show equivalence"))
        if options:
            needed, how = min(options)
            notes.append(f"about {needed} seeds {how} if the estimate and sd held (a planning estimate)")
        else:
            notes.append("estimate exactly 0 and no SESOI: no seed count settles it")
    return Contrast(estimate, n, sd, ci95, ci90, sesoi, verdict, p, p_tost, float(needed), "; ".join(notes), within)


def per_seed_slopes(values_by_seed, x) -> tuple[np.ndarray, str]:
    """Per row (seed) of ``values_by_seed`` (seeds x levels), the OLS slope of the values on ``x`` over the row's
    non-NaN levels: sum((x - x̄)(y - ȳ)) / sum((x - x̄)^2). A row with fewer than 2 distinct x gives NaN."""
    y = np.asarray(values_by_seed, dtype=float)
    if y.ndim != 2:
        raise ValueError(f"values_by_seed: a 2-D array (seeds x levels), got shape {y.shape}")
    xs = np.asarray(x, dtype=float).ravel()
    if y.shape[1] != len(xs):
        raise ValueError(f"x: {len(xs)} levels for {y.shape[1]} columns")
    out = np.full(y.shape[0], np.nan)
    partial = 0
    for i, row in enumerate(y):
        ok = ~np.isnan(row)
        if ok.sum() < len(xs):
            partial += 1
        xi, yi = xs[ok], row[ok]
        if len(np.unique(xi)) < 2:
            continue
        dx = xi - xi.mean()
        out[i] = float(np.sum(dx * (yi - yi.mean())) / np.sum(dx * dx))
    note = f"{partial} seed(s) miss some levels: their slope uses the levels they have" if partial else ""
    return out, note


def trend(values_by_seed, x, sesoi: float | None = None, alpha: float = ALPHA) -> Contrast:
    """The slope of the metric on ``x`` with seeds as blocks: ``contrast`` of the per-seed OLS slopes (the
    estimate is the mean slope per unit x; ``sesoi`` is a slope, per unit x)."""
    slopes, note = per_seed_slopes(values_by_seed, x)
    c = contrast(slopes, sesoi, alpha)
    dropped = int(np.isnan(slopes).sum())
    extra = [s for s in (note, f"{dropped} seed(s) with fewer than 2 levels: no slope" if dropped else "") if s]
    if not extra:
        return c
    return replace(c, note="; ".join([c.note] * bool(c.note) + extra))


# -- the smallest effect of interest per metric ---------------------------------------------------------------------

DEFAULT_SESOI_GLOB = "acc/*"  # a bare ``--sesoi 0.02`` applies to the probe and association accuracies' ``acc/*``


def parse_sesoi(items) -> dict[str, float]:
    """``--sesoi`` values: ``0.02`` (for ``acc/*``) or ``'GLOB=0.02'``, repeatable; a JSON mapping's dict passes."""
    if items is None:
        return {}
    if isinstance(items, dict):
        return {str(k): _delta(v, k) for k, v in items.items()}
    if isinstance(items, str):
        items = [items]
    out: dict[str, float] = {}
    for item in items:
        glob, sep, value = str(item).rpartition("=")
        out[glob.strip() if sep else DEFAULT_SESOI_GLOB] = _delta(value, item)
    return out


def _delta(value, where) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"sesoi {where!r}: expected a number or GLOB=number") from None
    if not v > 0 or math.isinf(v):
        raise ValueError(f"sesoi {where!r}: delta must be a positive number")
    return v


def sesoi_for(metric: str, sesoi: dict[str, float] | None) -> float | None:
    """The delta of ``metric`` (``final/`` prefix ignored): an exact name first, else the longest matching glob."""
    if not sesoi:
        return None
    name = metric.removeprefix("final/")
    if name in sesoi:
        return sesoi[name]
    hits = [g for g in sesoi if fnmatch.fnmatchcase(name, g)]
    return sesoi[max(hits, key=len)] if hits else None


__all__ = ["ALPHA", "Contrast", "DEFAULT_SESOI_GLOB", "MIN_SEEDS", "ROW_COLUMNS", "UNDETERMINED", "VERDICTS",
           "contrast", "is_constant", "parse_sesoi", "per_seed_slopes", "seeds_needed", "sesoi_for", "trend"]
