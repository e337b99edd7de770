"""Precision targets: a study that adds seeds until its contrasts are known to the precision it asked for.

    precision:
      contrasts:
        - {name: boost_k5, metric: acc/sound_probe_h/k5,
           a: {variant: bma, unpaired_images: 59000}, b: {variant: bma, unpaired_images: 0}}
      target: {half_width: 0.02}     # or {verdict: true}: settled (gain/loss/equivalent) at analysis.sesoi
      seeds_per_round: 4             # seeds added per round to the cells of the contrasts still open
      max_seeds: 24                  # the cap per cell

A contrast is a metric's difference between two cells, paired by seed (DESIGN.md). ``a`` and ``b`` fix some of the
grid's axes; every other axis (except the seed) is free, and the contrast is made for each combination of the free
axes' values (``boost_k5[regime.pairs=50]``). The grid's seeds are the first round; each later round adds the next
``seeds_per_round`` seeds, only to the cells of the contrasts still open, as one more Ray Tune experiment over the
same MLflow study (``<study>.precision-<round>``). A killed driver resumes round by round: the finished rounds'
Tune experiments restore at once and give the same results, so the same decisions; the open round resumes.

Stopping on the CI half-width (the default) does not depend on the estimate, so the intervals stay honest. Stopping
as soon as a verdict is reached is a sequential test: each look then uses alpha / L (Bonferroni over the L looks the
cap allows, a conservative alpha-spending rule), and the record says so.

Pure functions (parse, expand, decide, plan); study/run.py runs the rounds."""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from analysis import verdicts as V
from bma import record as R

PRECISION_KEYS = {"contrasts", "target", "seeds_per_round", "max_seeds"}
CONTRAST_KEYS = {"name", "metric", "a", "b"}
TARGET_KEYS = {"half_width", "verdict"}
SEED_PATH = R.SEED_KEY
DEFAULT_SEEDS_PER_ROUND = 4
MAX_SEEDS_LIMIT = 1000
TAG_NAME_RE = re.compile(r"[^A-Za-z0-9_.\-/ ]")  # what MLflow accepts in a tag or metric key


@dataclass(frozen=True)
class ContrastSpec:
    name: str
    metric: str
    a: dict[str, Any]  # dotted path (or R.ARM) -> value: the cell a fixes
    b: dict[str, Any]


@dataclass(frozen=True)
class PrecisionPlan:
    contrasts: tuple[ContrastSpec, ...]
    half_width: float | None  # stop a contrast when its 95 % CI half-width is at most this
    verdict: bool  # stop a contrast when its verdict is settled at its sesoi (alpha spent over the looks)
    seeds_per_round: int
    max_seeds: int

    def looks(self, initial_seeds: int) -> int:
        """The most times a contrast can be looked at: the first round and each added round up to the cap."""
        return 1 + max(0, math.ceil((self.max_seeds - initial_seeds) / self.seeds_per_round))


@dataclass(frozen=True)
class CellContrast:
    """One concrete contrast: ``metric`` of cell ``a`` minus cell ``b`` (cells: {axis: canonical value})."""

    name: str
    metric: str
    a: tuple[tuple[str, Any], ...]
    b: tuple[tuple[str, Any], ...]


@dataclass
class ContrastStatus:
    contrast: CellContrast
    seeds: list[int]  # seeds with a value in both cells
    result: V.Contrast
    open: bool
    reason: str
    alpha: float = V.ALPHA
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        r = self.result
        return {"metric": self.contrast.metric, "a": dict(self.contrast.a), "b": dict(self.contrast.b),
                "seeds": self.seeds, "n": r.n, "estimate": r.estimate, "ci95": list(r.ci95), "ci90": list(r.ci90),
                "half_width": half_width(r), "sesoi": r.sesoi, "verdict": r.verdict, "alpha": self.alpha,
                "seeds_needed": r.seeds_needed, "state": "open" if self.open else "closed", "reason": self.reason}

    def line(self) -> str:
        r = self.result
        ci = f"[{r.ci95[0]:+.3f}, {r.ci95[1]:+.3f}]" if not math.isnan(r.ci95[0]) else "[n/a]"
        return (f"{self.contrast.name}: {r.estimate:+.3f} {ci} n={r.n} half-width {half_width(r):.3f} "
                f"{r.verdict} -> {'open' if self.open else 'closed'} ({self.reason})")


def half_width(result: V.Contrast) -> float:
    low, high = result.ci95
    return (high - low) / 2 if not (math.isnan(low) or math.isnan(high)) else math.inf


def tag_name(name: str) -> str:
    return TAG_NAME_RE.sub("_", name)


# -- parsing (study/spec.py calls this) -------------------------------------------------------------------------

def parse_precision(raw: Any, grid: dict[str, list], arms: dict, searching: bool, canonical: Callable,
                    path_of: Callable, show: Callable, problems: list[str]) -> PrecisionPlan | None:
    """The spec's ``precision:`` block, every problem appended with its place in the file."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"precision: expected a mapping with contrasts, target, seeds_per_round, max_seeds; got {show(raw)}")
        return None
    before = len(problems)
    for key in sorted(set(raw) - PRECISION_KEYS, key=str):
        problems.append(f"precision.{key}: unknown key (expected one of {sorted(PRECISION_KEYS)})")
    if searching:
        problems.append("precision: needs a grid study (a search samples its own configurations; precision adds "
                        "seeds to grid cells)")
    if SEED_PATH not in grid:
        problems.append("precision: the grid must sweep seed (its seeds are the first round; rounds add more)")
    target = raw.get("target", {"half_width": 0.02})
    half, verdict = None, False
    if not isinstance(target, dict) or not target or set(target) - TARGET_KEYS:
        problems.append(f"precision.target: expected {{half_width: 0.02}} or {{verdict: true}}, got {show(target)}")
    else:
        if "half_width" in target:
            h = target["half_width"]
            if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h <= 0:
                problems.append(f"precision.target.half_width: expected a positive number (the 95 % CI half-width "
                                f"to reach, in the metric's units), got {show(h)}")
            else:
                half = float(h)
        if "verdict" in target:
            if target["verdict"] is not True:
                problems.append(f"precision.target.verdict: expected true (stop when the verdict is settled at "
                                f"analysis.sesoi), got {show(target['verdict'])}")
            verdict = True
    spr = raw.get("seeds_per_round", DEFAULT_SEEDS_PER_ROUND)
    if isinstance(spr, bool) or not isinstance(spr, int) or not 1 <= spr <= 100:
        problems.append(f"precision.seeds_per_round: expected an integer 1..100, got {show(spr)}")
        spr = DEFAULT_SEEDS_PER_ROUND
    initial = len(grid.get(SEED_PATH, []))
    cap = raw.get("max_seeds")
    if isinstance(cap, bool) or not isinstance(cap, int) or not initial <= cap <= MAX_SEEDS_LIMIT:
        problems.append(f"precision.max_seeds: expected an integer from the grid's {initial} seeds to "
                        f"{MAX_SEEDS_LIMIT} (the cap on seeds per cell), got {show(cap)}")
        cap = initial
    contrasts: list[ContrastSpec] = []
    items = raw.get("contrasts")
    if not isinstance(items, list) or not items:
        problems.append("precision.contrasts: expected a non-empty list of {name, metric, a, b}")
        items = []
    axes = [p for p in grid if p != SEED_PATH] + ([R.ARM] if arms else [])
    names = set()
    for i, item in enumerate(items):
        where = f"precision.contrasts[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping {{name, metric, a, b}}, got {show(item)}")
            continue
        for key in sorted(set(item) - CONTRAST_KEYS, key=str):
            problems.append(f"{where}.{key}: unknown key (expected one of {sorted(CONTRAST_KEYS)})")
        name = item.get("name")
        if not isinstance(name, str) or not name or TAG_NAME_RE.search(name):
            problems.append(f"{where}.name: expected a name of letters, digits, '_', '-', '.', got {show(name)}")
            continue
        if name in names:
            problems.append(f"{where}.name: {name!r} is used twice; expected each contrast once")
        names.add(name)
        metric = item.get("metric")
        family = R.metric_family(metric) if isinstance(metric, str) else None
        if family is None:
            problems.append(f"{where}.metric: {show(metric)} is not a metric the trials report "
                            "(bma/record.py METRICS lists the families)")
        cells = {}
        for side in ("a", "b"):
            cell = item.get(side)
            if not isinstance(cell, dict) or not cell:
                problems.append(f"{where}.{side}: expected a mapping of grid axis -> value (the cell), got {show(cell)}")
                continue
            fixed = {}
            for key, value in cell.items():
                path = R.ARM if key in ("arm", R.ARM) else path_of(str(key))
                if path == SEED_PATH:
                    problems.append(f"{where}.{side}.{key}: a contrast pairs cells by seed; the seed is not a cell axis")
                elif path not in axes:
                    problems.append(f"{where}.{side}.{key}: not an axis of the grid (axes: "
                                    f"{[a for a in axes]}); a contrast compares cells of the grid")
                else:
                    value = value if path == R.ARM else canonical(path, value)
                    known = list(arms) if path == R.ARM else [canonical(path, v) for v in grid[path]]
                    if value not in known:
                        problems.append(f"{where}.{side}.{key}: {show(value)} is not one of the grid's values "
                                        f"{known}")
                    fixed[path] = value
            cells[side] = fixed
        if len(cells) == 2 and cells["a"] == cells["b"]:
            problems.append(f"{where}: a and b are the same cell; expected two cells that differ")
        if len(cells) == 2 and isinstance(metric, str):
            contrasts.append(ContrastSpec(name, metric, cells["a"], cells["b"]))
    if half is None and not verdict and len(problems) == before:
        problems.append("precision.target: expected half_width or verdict")
    if len(problems) > before:
        return None
    return PrecisionPlan(tuple(contrasts), half, verdict, spr, cap)


# -- contrasts over cells ----------------------------------------------------------------------------------------

def expand(plan: PrecisionPlan, grid: dict[str, list], arms: dict, canonical: Callable) -> list[CellContrast]:
    """Each contrast made concrete: one per combination of the values of the axes it leaves free."""
    axes = [p for p in grid if p != SEED_PATH] + ([R.ARM] if arms else [])
    values = {p: ([canonical(p, v) for v in grid[p]] if p != R.ARM else list(arms)) for p in axes}
    out = []
    for c in plan.contrasts:
        free = [p for p in axes if p not in c.a and p not in c.b]
        for combo in itertools.product(*(values[p] for p in free)):
            shared = dict(zip(free, combo))
            a = {**shared, **c.a}
            b = {**shared, **c.b}
            a = {**{p: b[p] for p in b if p not in a}, **a}  # an axis fixed on one side only is the same on both
            b = {**{p: a[p] for p in a if p not in b}, **b}
            named = {p: v for p, v in shared.items() if len(values[p]) > 1}  # a one-value axis names nothing
            suffix = "" if not named else "[" + ",".join(f"{p.rsplit('.', 1)[-1]}={v}" for p, v in named.items()) + "]"
            out.append(CellContrast(c.name + suffix, c.metric, tuple(sorted(a.items())), tuple(sorted(b.items()))))
    return out


def cell_key(flat: dict[str, Any], axes: list[str]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((p, flat.get(p)) for p in axes))


def decide(contrasts: list[CellContrast], table: dict, plan: PrecisionPlan, sesoi: dict[str, float],
           initial_seeds: int) -> list[ContrastStatus]:
    """The status of every contrast from ``table`` {(metric, cell key, seed): value}: open, or closed and why."""
    looks = plan.looks(initial_seeds)
    alpha = V.ALPHA / looks if plan.verdict else V.ALPHA
    out = []
    for c in contrasts:
        a = {s: v for (m, cell, s), v in table.items() if m == c.metric and cell == c.a}
        b = {s: v for (m, cell, s), v in table.items() if m == c.metric and cell == c.b}
        seeds = sorted(set(a) & set(b))
        result = V.contrast([a[s] - b[s] for s in seeds], V.sesoi_for(c.metric, sesoi), alpha=alpha)
        width = half_width(result)
        attempted = max(len(a), len(b))
        if plan.half_width is not None and width <= plan.half_width:
            state, reason = False, f"95 % CI half-width {width:.4f} <= target {plan.half_width:g}"
        elif plan.verdict and result.verdict in V.VERDICTS and result.verdict != "inconclusive":
            state, reason = False, f"verdict {result.verdict} at alpha {alpha:.4g} (Bonferroni over {looks} looks)"
        elif attempted >= plan.max_seeds:
            need = result.seeds_needed if not math.isnan(result.seeds_needed) else float("nan")
            if plan.half_width is not None and result.sd == result.sd and result.sd > 0:
                need = V.seeds_needed(result.sd, plan.half_width)
            state, reason = False, f"cap of {plan.max_seeds} seeds reached; about {need:g} seeds would reach the target"
        else:
            state, reason = True, "open"
        out.append(ContrastStatus(c, seeds, result, state, reason, alpha))
    return out


def next_round(statuses: list[ContrastStatus], seeds_done: list[int], plan: PrecisionPlan) -> tuple[list, list[int]]:
    """(the cells that get seeds, the seeds): the next seeds_per_round seeds after every seed used so far, up to the
    cap, for the cells of the open contrasts; ([], []) when nothing is open."""
    open_ = [s for s in statuses if s.open]
    if not open_:
        return [], []
    room = plan.max_seeds - len(seeds_done)
    if room <= 0:
        return [], []
    start = max(seeds_done) + 1 if seeds_done else 0
    seeds = list(range(start, start + min(plan.seeds_per_round, room)))
    cells = []
    for s in open_:
        for cell in (s.contrast.a, s.contrast.b):
            if cell not in cells:
                cells.append(cell)
    return cells, seeds


def round_points(cells: list, seeds: list[int], grid: dict[str, list]) -> list[tuple[str | None, dict[str, Any]]]:
    """(arm, grid point) per cell and seed: the points study.spec.StudySpec.distinct_trials_of groups."""
    out = []
    for cell in cells:
        values = dict(cell)
        arm = values.pop(R.ARM, None)
        for seed in seeds:
            out.append((arm, {**{p: values[p] for p in grid if p in values}, SEED_PATH: seed}))
    return out


def records(statuses: list[ContrastStatus], round_index: int) -> dict[str, str]:
    """The parent run's tags: one JSON record per contrast (R.PRECISION + name)."""
    return {R.PRECISION + tag_name(s.contrast.name): json.dumps({**s.record(), "round": round_index}, default=float)
            for s in statuses}
