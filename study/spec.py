"""A study spec (YAML) validated up front, and its expansion into trial configurations.

    name: quick
    data:  {image: {source: mnist}, sound: {source: fsdd}, classmap: null}
    grid:  {pairing_ratio: [0.1, 0.5], variant: [unimodal, bma], seed: [0, 1]}   # Cartesian product
    trial: {epochs: 5, batch_size: 128}                                        # fixed settings of every trial
    resources: {cpu: 1, gpu: 0}                                                # per trial; fractional gpu allowed

Grid and trial keys are a setting's short name (``tau_m``), its dotted path (``model.tau_m``) or, in ``trial``,
a nested section (``model: {tau_m: 0.1}``). Every problem is collected with its path in the file, so one run of
the validator reports them all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from bma.config import (
    FLAT_TYPES,
    SHORT_NAMES,
    ConfigError,
    SourceConfig,
    TrialConfig,
    effective_config,
    expand_feature_preset,
    num_rounds,
)
from bma import record as R
# The bounded reader of YAML text files (and its error) is shared with bma-trial's --config: it lives in bma, below
# every layer that reads a file (tests/test_layers.py); re-exported here under the names importers use.
from bma.text_input import MAX_YAML_NODES, SpecError, parse_yaml, read_text_file  # noqa: F401
from bma.text_input import _parse_yaml  # noqa: F401

TOP_LEVEL = {"name", "description", "data", "grid", "trial", "arms", "resources", "max_concurrent_trials", "max_failures",
             "trial_plots",
             "smoke", "search", "analysis", "precision", "report"}
ANALYSIS_KEYS = {"sesoi"}
# search: the hyperparameter side of the engine (Ray Tune's own searchers and schedulers)
SEARCH_KEYS = {"algorithm", "num_samples", "metric", "mode", "scheduler", "space", "seed", "grace_period",
               "reduction_factor"}
SEARCH_ALGORITHMS = ("grid", "random", "optuna")  # grid: the Cartesian product of `grid` (the default)
SCHEDULERS = ("asha",)
# report: the study's page (analysis/report.py), refreshed by the driver while it runs (study/live_report.py)
REPORT_DEFAULTS = {"live": True, "every_s": 30.0}
# search.space: one distribution per setting, {kind: [arguments]}, each a tune.* sampler; the kinds a setting's type
# can take (a string setting can only be chosen among values; a list setting is not searched)
DISTRIBUTIONS = {"uniform": (float,), "loguniform": (float,), "randint": (int,), "lograndint": (int,),
                 "choice": (float, int, str, bool)}
DATA_KEYS = {"image", "sound", "classmap", "cache_dir"}
SOURCE_KEYS = {f.name for f in dataclasses.fields(SourceConfig)}  # a data.<side> block's keys: SourceConfig's fields
RESOURCE_KEYS = {"cpu", "gpu"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_TRIALS = 20_000
MAX_SPEC_BYTES = 1 << 20  # a study spec is a short text file; anything larger is a mistake (or an attack)
MAX_CLASSMAP_BYTES = 16 << 20
MAX_SHOWN = 120  # characters of a value quoted in a message
# Settings that belong to the data section, not to a grid or trial block.
DATA_PATHS = {p for p in FLAT_TYPES if p.startswith("data.")}


@dataclass(frozen=True)
class StudySpec:
    name: str
    base: dict[str, Any]  # dotted path -> value, fixed for every trial (data section included)
    grid: dict[str, list[Any]]  # dotted path -> values
    resources: dict[str, float]
    max_concurrent_trials: int | None = None
    max_failures: int = 0
    description: str = ""
    source_path: str = ""
    smoke: dict[str, Any] = field(default_factory=dict)
    # dotted path -> where the file sets it (grid.tau_m, trial.model.tau_m; "smoke:" + path -> smoke.epochs):
    # problems found after parsing name the place a user edits, not the internal path
    labels: dict[str, str] = field(default_factory=dict, compare=False)
    # named arms (an ablation): arm name -> the settings it changes from base; each arm is crossed with the grid
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the hyperparameter search (None: the grid): algorithm, num_samples, metric, mode, scheduler, space, ...
    search: dict[str, Any] | None = None
    # each trial also draws curves.png (its losses and probes over rounds; ~0.5 s of matplotlib per trial): off by
    # default, since MLflow's UI draws the same curves from the logged metrics. Not part of the fingerprint.
    trial_plots: bool = False
    # analysis.sesoi: the smallest effect of interest per metric glob, declared before the study runs; recorded on
    # the parent run (R.SESOI), read by the reports' verdicts and by the precision rounds
    sesoi: dict[str, float] = field(default_factory=dict)
    # precision: the contrasts whose cells get more seeds until they are known (study.precision.PrecisionPlan)
    precision: Any = None
    # the study's page as report.html on the parent run: live (refreshed while it runs, and at its end), at most
    # every every_s seconds. Not part of the fingerprint.
    report: dict[str, Any] = field(default_factory=lambda: dict(REPORT_DEFAULTS))

    @property
    def n_trials(self) -> int:
        """Grid points (or, for a search, samples times arms)."""
        if self.search is not None:
            return self.search["num_samples"] * max(1, len(self.arms))
        return self.n_points

    @property
    def n_points(self) -> int:
        n = max(1, len(self.arms))
        for values in self.grid.values():
            n *= len(values)
        return n

    def trial_flats(self) -> list[dict[str, Any]]:
        """One flat dict (dotted paths) per trial: base, overlaid with one arm's settings, then one grid combination."""
        keys = list(self.grid)
        combos = list(itertools.product(*(self.grid[k] for k in keys)))
        return [{**self.base, **arm, **dict(zip(keys, combo))} for arm in (self.arms.values() or [{}]) for combo in combos]

    def grid_points(self) -> list[tuple[str | None, dict[str, Any]]]:
        """(arm name or None, {grid path: value}) per grid point, in the order of trial_flats."""
        keys = list(self.grid)
        combos = list(itertools.product(*(self.grid[k] for k in keys)))
        return [(arm, dict(zip(keys, combo))) for arm in (list(self.arms) or [None]) for combo in combos]

    def distinct_trials(self) -> list["DistinctTrial"]:
        """The grid's points grouped by effective configuration (bma.config.effective_config): each group is one
        computation, trained once and counted in every cell of its members."""
        return self.distinct_trials_of(self.grid_points())

    def distinct_trials_of(self, points: list[tuple[str | None, dict[str, Any]]]) -> list["DistinctTrial"]:
        """distinct_trials of any (arm, grid point) list, e.g. a precision round's cells x its new seeds."""
        groups: dict[TrialConfig, DistinctTrial] = {}
        for arm, point in points:
            flat = {**self.base, **(self.arms.get(arm, {}) if arm is not None else {}), **point}
            cfg = TrialConfig.from_flat(flat)
            eff = effective_config(cfg)
            group = groups.get(eff)
            if group is None:
                group = groups[eff] = DistinctTrial(arm, point, eff.to_flat(), [])
            group.members.append(cell_overrides(cfg.to_flat(), group.effective, arm))
        return list(groups.values())
    @property
    def axes(self) -> tuple[str, ...]:
        """What the study varies besides the seed (recorded on its parent run; the analysis groups cells by it):
        the variant, the grid's keys, the search space's keys, and the arm when there are named arms."""
        keys = [R.VARIANT_KEY] + list(self.grid) + list((self.search or {}).get("space", {}))
        keys += [R.ARM] if self.arms else []
        return tuple(dict.fromkeys(k for k in keys if k != R.SEED_KEY))

    def fingerprint(self) -> str:
        """Identifies the study's content: resuming with a changed spec is refused rather than mixed."""
        content: dict[str, Any] = {"base": self.base, "grid": self.grid}
        if self.arms:  # only specs with arms hash them: older fingerprints stay what they were
            content["arms"] = self.arms
        if self.search is not None:  # likewise for a search
            content["search"] = self.search
        if self.sesoi:  # and for the declared effects and precision targets
            content["sesoi"] = self.sesoi
        if self.precision is not None:
            content["precision"] = dataclasses.asdict(self.precision)
        blob = json.dumps(content, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass
class DistinctTrial:
    """One trial the engine trains: the first grid point that makes it (its arm and grid values), its effective
    flat configuration, and per grid point it stands for the settings in which that point differs from it."""

    arm: str | None
    point: dict[str, Any]
    effective: dict[str, Any]
    members: list[dict[str, Any]]


ARM_CELL = R.ARM  # the key of a member's arm name in a cell override


def cell_overrides(flat: dict[str, Any], effective: dict[str, Any], arm: str | None) -> dict[str, Any]:
    """What places a shared trial in one member's cell: the member's value of every setting that differs from the
    trained configuration (the settings its variant ignores), and its arm."""
    out = {k: v for k, v in flat.items() if v != effective.get(k)}
    if arm is not None:
        out[ARM_CELL] = arm
    return out


def _path_of(key: Any) -> str:
    return SHORT_NAMES.get(key, key) if isinstance(key, str) else str(key)


def _flatten_section(section: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(key as written, value) pairs of a trial/smoke block; nested sections become dotted keys. A list, not a
    dict: ``model: {tau_m: ..}`` and ``model.tau_m: ..`` both give the key "model.tau_m", and both must be seen."""
    out: list[tuple[str, Any]] = []
    for k, v in section.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and f"{path}" not in FLAT_TYPES and _path_of(path) not in FLAT_TYPES:
            out.extend(_flatten_section(v, path + "."))
        else:
            out.append((path, v))
    return out


def _settings(block: str, pairs: list[tuple[str, Any]], allowed, problems: list[str]) -> dict[str, tuple[str, Any]]:
    """{dotted path: (key as written, value)} of one block; a setting named twice in any spelling (short name and
    dotted path, nested section and dotted key) is refused rather than letting the last one win."""
    out: dict[str, tuple[str, Any]] = {}
    for key, value in pairs:
        path = _path_of(key)
        if not allowed(path) and path in DATA_PATHS:
            problems.append(f"{block}.{key}: data settings are study-wide (every trial shares the features computed "
                            f"before the study starts) and cannot differ between trials; set {path[len('data.'):]} "
                            "in the data: section, or run one study per value")
            continue
        if not allowed(path):
            problems.append(f"{block}.{key}: unknown setting (see docs/spec.md for the list)")
            continue
        if path in out:
            first = out[path][0]
            spelled = f"as {block}.{first} and {block}.{key}" if first != key else f"twice as {block}.{key}"
            problems.append(f"{block}.{key}: {path} is set {spelled}; name a setting once")
            continue
        out[path] = (key, value)
    return out


def _canonical(path: str, value: Any) -> Any:
    """The value a trial will see (YAML reads ``1e-3`` as a string and ``16.0`` as a float; the config coerces
    both), or a marker of the raw value when it is not valid on its own (reported by the trial check)."""
    try:
        return TrialConfig.from_flat({path: value}).to_flat()[path]
    except (ConfigError, TypeError, ValueError, OverflowError):
        return ("raw", _show(value))


def _canonical_value(path: str, value: Any) -> Any:
    """The value a trial sees, or the value as written when it is not valid (reported elsewhere)."""
    canon = _canonical(path, value)
    return value if isinstance(canon, tuple) and canon[:1] == ("raw",) else canon


def _parse_analysis(raw: Any, problems: list[str]) -> dict[str, float]:
    """The spec's ``analysis:`` block: ``sesoi: {metric glob: delta}`` (or one number, for acc/*)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"analysis: expected a mapping like {{sesoi: {{'acc/*': 0.02}}}}, got {_show(raw)}")
        return {}
    for key in sorted(set(raw) - ANALYSIS_KEYS, key=str):
        problems.append(f"analysis.{key}: unknown key (expected one of {sorted(ANALYSIS_KEYS)})")
    from analysis.verdicts import parse_sesoi

    value = raw.get("sesoi")
    if value is None:
        return {}
    if isinstance(value, bool) or not isinstance(value, (dict, int, float)):
        problems.append(f"analysis.sesoi: expected a number (for acc/*) or a mapping of metric glob -> delta, "
                        f"got {_show(value)}")
        return {}
    try:
        sesoi = parse_sesoi(value if isinstance(value, dict) else str(value))
    except ValueError as exc:
        problems.append(f"analysis.sesoi: {exc}")
        return {}
    for glob in sesoi:
        if not any(R.metric_family(name) for name in (glob, glob.replace("*", "x"))) and "*" not in glob:
            problems.append(f"analysis.sesoi: {glob!r} names no metric the trials report (bma/record.py METRICS)")
    return sesoi


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def load_spec(path: str | Path, smoke: bool = False) -> StudySpec:
    """Read and validate; raises SpecError listing every problem (with its location in the file)."""
    path = Path(path)
    where = str(path)
    text = read_text_file(path, "a study spec YAML, e.g. study/specs/quick.yaml", MAX_SPEC_BYTES, where)
    raw, duplicates = _parse_yaml(text, where)
    try:
        spec = parse_spec(raw, where)
    except SpecError as exc:
        raise SpecError(where, duplicates + exc.problems) from None
    if duplicates:
        raise SpecError(where, duplicates)
    return shrink_for_smoke(spec) if smoke else spec


def _show(value: Any) -> str:
    """repr of a value for a message, cut to MAX_SHOWN characters."""
    try:
        text = repr(value)
    except RecursionError:
        text = "<recursive>"
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def parse_spec(raw: Any, where: str = "<spec>") -> StudySpec:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise SpecError(where, [f"top level: expected a mapping with keys name, data, grid, trial, resources; got {type(raw).__name__}"])

    for key in sorted(set(raw) - TOP_LEVEL, key=str):
        problems.append(f"{key}: unknown top-level key (expected one of {sorted(TOP_LEVEL)})")

    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(f"name: expected a study name of letters, digits, '_', '-', '.' (1-64 chars), got {_show(name)}")

    base: dict[str, Any] = {}
    # -- data ---------------------------------------------------------------------------------------------------
    data = raw.get("data")
    data = {} if data is None else data  # an empty `data:` section means the default sources, as for trial/smoke
    if not isinstance(data, dict):
        problems.append(f"data: expected a mapping with image and sound, got {type(data).__name__}")
        data = {}
    for key in sorted(set(data) - DATA_KEYS, key=str):
        problems.append(f"data.{key}: unknown key (expected {sorted(DATA_KEYS)})")
    for side in ("image", "sound"):
        src = data.get(side)
        if src is None:
            continue  # default source
        if isinstance(src, str):
            src = {"source": src}
        if not isinstance(src, dict):
            problems.append(f"data.{side}: expected a mapping like {{source: ...}}, got {_show(src)}")
            continue
        for key in sorted(set(src) - SOURCE_KEYS, key=str):
            problems.append(f"data.{side}.{key}: unknown key (expected {sorted(SOURCE_KEYS)})")
        for key in SOURCE_KEYS & set(src):
            base[f"data.{side}.{key}"] = src[key]
        root = src.get("root")
        if root is not None and src.get("source") == "manifest":  # a manifest's root is its CSV file
            if not _exists(root):
                problems.append(f"data.{side}.root: {_show_path(root)} does not exist (expected the manifest's CSV)")
        elif root is not None and (why := _folder_problem(root)):
            problems.append(f"data.{side}.root: {_show_path(root)} {why} (expected the dataset's folder, or null for "
                            "the mirror/download)")
    classmap = data.get("classmap")
    if classmap is not None:
        base["data.classmap"] = classmap
        problem = _classmap_problem(classmap)
        if problem:
            problems.append(f"data.classmap: {problem}")
    if data.get("cache_dir") is not None:
        base["data.cache_dir"] = data["cache_dir"]

    # -- trial (fixed settings) -----------------------------------------------------------------------------------
    trial = raw.get("trial", {}) or {}
    if not isinstance(trial, dict):
        problems.append(f"trial: expected a mapping of fixed settings, got {type(trial).__name__}")
        trial = {}
    try:  # `features: esc50` selects a named set of sound-feature settings (bma.config.FEATURE_PRESETS)
        trial = expand_feature_preset(trial)
    except ConfigError as exc:
        problems.extend(f"trial.{p}" for p in exc.problems)
        trial = {k: v for k, v in trial.items() if k != "features"}
    labels: dict[str, str] = {}
    settable = lambda path: path in FLAT_TYPES and path not in DATA_PATHS  # noqa: E731
    for path, (key, value) in _settings("trial", _flatten_section(trial), settable, problems).items():
        base[path] = value
        labels[path] = f"trial.{key}"

    # -- grid -----------------------------------------------------------------------------------------------------
    grid_raw = raw.get("grid")
    grid: dict[str, list[Any]] = {}
    searching = isinstance(raw.get("search"), dict) and raw["search"].get("algorithm", "grid") != "grid"
    if searching and grid_raw is None:
        grid_raw = {}  # a search samples search.space: a grid is optional
    elif not isinstance(grid_raw, dict) or (not grid_raw and not searching):
        problems.append("grid: expected a non-empty mapping of setting -> list of values")
        grid_raw = {}
    for path, (key, values) in _settings("grid", [(str(k), v) for k, v in grid_raw.items()], settable,
                                         problems).items():
        if not isinstance(values, list):
            problems.append(f"grid.{key}: expected a list of values, got {_show(values)}")
            continue
        if not values:
            problems.append(f"grid.{key}: empty list: the grid would have no trials")
            continue
        # Compared as the trial will see them: [1e-3, 0.001] and [16, 16.0] are one value spelled twice, and two
        # Tune trials would train one configuration into one MLflow run.
        seen: dict[Any, Any] = {}
        repeated = []
        for value in values:
            canon = _hashable(_canonical(path, value))
            try:
                if canon in seen:
                    repeated.append(f"{_show(seen[canon])} and {_show(value)}" if _show(seen[canon]) != _show(value)
                                    else _show(value))
                else:
                    seen[canon] = value
            except TypeError:  # an unhashable value (a mapping): the trial check reports its type
                continue
        if repeated:
            problems.append(f"grid.{key}: repeated values ({', '.join(repeated)} are the same {path}); "
                            "expected each value once")
        if path in base:
            problems.append(f"grid.{key}: also set in trial (as {labels.get(path, path)}); a setting is either fixed "
                            "or swept")
        grid[path] = values
        labels[path] = f"grid.{key}"

    # -- arms (named setting overrides, crossed with the grid) -----------------------------------------------------
    arms_raw = raw.get("arms") or {}
    arms: dict[str, dict[str, Any]] = {}
    if not isinstance(arms_raw, dict):
        problems.append(f"arms: expected a mapping of arm name -> settings it changes, got {_show(arms_raw)}")
        arms_raw = {}
    for arm_name, arm_settings in arms_raw.items():
        if not isinstance(arm_name, str) or not NAME_RE.match(arm_name):
            problems.append(f"arms.{arm_name}: expected an arm name of letters, digits, '_', '-', '.'")
            continue
        arm_settings = arm_settings or {}
        if not isinstance(arm_settings, dict):
            problems.append(f"arms.{arm_name}: expected a mapping of settings (or {{}}), got {_show(arm_settings)}")
            continue
        arm: dict[str, Any] = {}
        before = len(problems)
        for path, (key, value) in _settings(f"arms.{arm_name}", _flatten_section(arm_settings), settable,
                                            problems).items():
            if path in grid:
                problems.append(f"arms.{arm_name}.{key}: also swept in grid; an arm changes fixed settings only")
                continue
            arm[path] = value
            labels.setdefault(path, f"arms.{arm_name}.{key}")
            labels[f"arm:{arm_name}:{path}"] = f"arms.{arm_name}.{key}"  # a problem of this arm's trials names it
        if len(problems) == before:
            arms[arm_name] = arm
    if arms and not problems:
        bodies = [json.dumps(a, sort_keys=True, default=str) for a in arms.values()]
        twins = sorted({n for n, b in zip(arms, bodies) if bodies.count(b) > 1})
        if twins:
            problems.append(f"arms: {twins} change the same settings to the same values; expected each arm once")

    # -- resources ------------------------------------------------------------------------------------------------
    res = raw.get("resources", {"cpu": 1, "gpu": 0}) or {}
    resources = {"cpu": 1.0, "gpu": 0.0}
    if not isinstance(res, dict):
        problems.append(f"resources: expected a mapping {{cpu: N, gpu: N}}, got {_show(res)}")
        res = {}
    for key in sorted(set(res) - RESOURCE_KEYS, key=str):
        problems.append(f"resources.{key}: unknown key (expected cpu, gpu)")
    for key in sorted(RESOURCE_KEYS & set(res)):
        value = res[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            problems.append(f"resources.{key}: expected a finite number >= 0, got {_show(value)}")
        elif key == "gpu" and value > 1 and not float(value).is_integer():
            problems.append(f"resources.gpu: fractions are allowed below 1 only (Ray's rule), got {value}")
        else:
            resources[key] = float(value)
    if resources["cpu"] == 0 and resources["gpu"] == 0:
        problems.append("resources: a trial needs cpu > 0 or gpu > 0")

    mct = raw.get("max_concurrent_trials")
    if mct is not None and (isinstance(mct, bool) or not isinstance(mct, int) or mct < 1):
        problems.append(f"max_concurrent_trials: expected a positive integer or null, got {_show(mct)}")
    mf = raw.get("max_failures", 0)
    if isinstance(mf, bool) or not isinstance(mf, int) or mf < -1:
        problems.append(f"max_failures: expected an integer >= -1 (retries of a failed trial; -1 = forever), got {_show(mf)}")
    trial_plots = raw.get("trial_plots", False)
    if not isinstance(trial_plots, bool):
        problems.append(f"trial_plots: expected true or false (draw each trial's curves.png), got {_show(trial_plots)}")
    report = _parse_report(raw.get("report"), problems)
    description = raw.get("description", "")
    smoke = raw.get("smoke", {}) or {}
    if not isinstance(smoke, dict):
        problems.append(f"smoke: expected a mapping of settings used by --smoke, got {_show(smoke)}")
        smoke = {}
    smoke_flat = {}
    smoke_labels = {}
    for path, (key, value) in _settings("smoke", _flatten_section(smoke), lambda p: p in FLAT_TYPES,
                                        problems).items():
        smoke_flat[path] = value
        smoke_labels[f"smoke:{path}"] = f"smoke.{key}"

    search = _parse_search(raw.get("search"), grid, arms, base, settable, problems, labels)
    sesoi = _parse_analysis(raw.get("analysis"), problems)
    from study.precision import parse_precision

    precision = parse_precision(raw.get("precision"), grid, arms, search is not None, _canonical_value, _path_of,
                                _show, problems)

    # -- every trial must make a valid TrialConfig ----------------------------------------------------------------
    spec = StudySpec(
        name=name if isinstance(name, str) else "",
        base=base,
        grid=grid,
        resources=resources,
        max_concurrent_trials=mct if isinstance(mct, int) else None,
        max_failures=mf if isinstance(mf, int) else 0,
        description="" if description is None else str(description),
        source_path=where,
        smoke=smoke_flat,
        labels={**labels, **smoke_labels},
        arms=arms,
        search=search,
        trial_plots=trial_plots is True,
        sesoi=sesoi,
        precision=precision,
        report=report,
    )
    problems.extend(_xdomain_root_problems(spec))
    if search is not None and not problems:
        problems.extend(_space_problems(spec))
    if spec.n_trials > MAX_TRIALS:
        problems.append(f"grid: {spec.n_trials} trials exceed the limit of {MAX_TRIALS}; split the study")
    elif grid or search is not None:
        problems.extend(_trial_problems(spec, distinct=not problems))
        if smoke_flat and not problems:
            # The smoke block's own values, checked on one trial (cheap); --smoke checks every shrunk trial.
            first = StudySpec(spec.name, {**spec.trial_flats()[0], **smoke_flat}, {}, resources, smoke=smoke_flat,
                              labels=spec.labels)
            problems.extend(_trial_problems(first, smoke=True))
    if problems:
        raise SpecError(where, problems)
    return spec


def _parse_report(raw: Any, problems: list[str]) -> dict[str, Any]:
    """``report: {live: true, every_s: 30}`` (either key may be left out; ``report: false`` = live: false)."""
    if raw is None or raw is True:
        return dict(REPORT_DEFAULTS)
    if raw is False:
        return {**REPORT_DEFAULTS, "live": False}
    if not isinstance(raw, dict):
        problems.append(f"report: expected a mapping like {{live: true, every_s: 30}}, got {_show(raw)}")
        return dict(REPORT_DEFAULTS)
    out = dict(REPORT_DEFAULTS)
    for key in sorted(set(raw) - set(REPORT_DEFAULTS), key=str):
        problems.append(f"report.{key}: unknown key (expected {sorted(REPORT_DEFAULTS)})")
    live = raw.get("live", True)
    if not isinstance(live, bool):
        problems.append(f"report.live: expected true or false (refresh the study's report.html), got {_show(live)}")
    else:
        out["live"] = live
    every = raw.get("every_s", REPORT_DEFAULTS["every_s"])
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not math.isfinite(every) or every < 1:
        problems.append(f"report.every_s: expected seconds >= 1 between refreshes, got {_show(every)}")
    else:
        out["every_s"] = float(every)
    return out


def _parse_search(raw: Any, grid: dict, arms: dict, base: dict, settable, problems: list[str],
                  labels: dict[str, str]) -> dict | None:
    """The normalised ``search:`` block, or None for a grid study (no block, or ``algorithm: grid``)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append(f"search: expected a mapping {{algorithm: optuna, num_samples: N, metric: ..., mode: max}}, "
                        f"got {_show(raw)}")
        return None
    for key in sorted(set(raw) - SEARCH_KEYS, key=str):
        problems.append(f"search.{key}: unknown key (expected one of {sorted(SEARCH_KEYS)})")
    algorithm = raw.get("algorithm", "grid")
    if algorithm not in SEARCH_ALGORITHMS:
        problems.append(f"search.algorithm: expected one of {SEARCH_ALGORITHMS}, got {_show(algorithm)}")
        return None
    scheduler = raw.get("scheduler")
    if scheduler is not None and scheduler not in SCHEDULERS:
        problems.append(f"search.scheduler: expected null or one of {SCHEDULERS}, got {_show(scheduler)}")
    metric, mode = raw.get("metric"), raw.get("mode")
    selects = algorithm != "grid" or scheduler is not None
    family = R.metric_family(metric) if isinstance(metric, str) else None
    if selects and (not isinstance(metric, str) or not metric):
        problems.append(f"search.metric: expected the name of a reported metric (e.g. {R.SELECTION_METRIC}), got "
                        f"{_show(metric)}")
    elif selects and family is not None and family.split not in R.SELECTABLE_SPLITS:
        problems.append(f"search.metric: {metric} is measured on the {family.split} split; a search selects "
                        f"settings, so it reads the {' or '.join(R.SELECTABLE_SPLITS)} split only (e.g. "
                        f"{R.SELECTION_METRIC})")
    elif selects and (why := R.direction_problem(metric)):
        problems.append(f"search.metric: {why}")
    if selects and mode is None and family is not None and family.direction is not None:
        mode = family.direction  # the registry knows which value is better
    if selects and mode not in ("max", "min"):
        problems.append(f"search.mode: expected max or min, got {_show(mode)}")
    elif selects and family is not None and family.direction not in (None, mode):
        better = "larger" if family.direction == "max" else "smaller"
        problems.append(f"search.mode: {mode}, but a better {metric} is a {better} one (mode: {family.direction})")
    num = raw.get("num_samples", 1 if algorithm == "grid" else None)
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        problems.append(f"search.num_samples: expected a whole number of trials >= 1, got {_show(num)}")
        num = 1
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(f"search.seed: expected an integer >= 0, got {_show(seed)}")
    for key, low in (("grace_period", 1), ("reduction_factor", 2)):
        value = raw.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            problems.append(f"search.{key}: expected an integer >= {low} (ASHA), got {_show(value)}")
    for key in ("grace_period", "reduction_factor"):
        if raw.get(key) is not None and scheduler is None:
            problems.append(f"search.{key}: only read by a scheduler; set search.scheduler: asha or remove it")
    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, dict):
        problems.append(f"search.space: expected a mapping of setting -> {{kind: [arguments]}}, got {_show(space_raw)}")
        space_raw = {}
    space: dict[str, tuple[str, list]] = {}
    for path, (key, dist) in _settings("search.space", [(str(k), v) for k, v in space_raw.items()], settable,
                                        problems).items():
        where = f"search.space.{key}"
        if path in grid or path in base or any(path in a for a in arms.values()):
            problems.append(f"{where}: also set in grid, trial or an arm; a setting is either fixed, swept or searched")
            continue
        if path == R.SEED_KEY:
            problems.append(f"{where}: a search cannot sample the seed (two samples of one seed would be one "
                            "configuration trained twice into one MLflow run); put the seeds in grid, e.g. "
                            "grid: {seed: [0, 1, 2]}")
            continue
        kind, args = _distribution(dist, where, problems)
        if kind is None:
            continue
        if kind == "choice":
            canon = [_hashable(_canonical(path, v)) for v in args]
            try:
                repeated = sorted({_show(v) for v, c in zip(args, canon) if canon.count(c) > 1})
            except TypeError:
                repeated = []
            if repeated:
                problems.append(f"{where}.choice: repeated values ({', '.join(repeated)} are the same {path}); "
                                "expected each value once")
                continue
        hint = FLAT_TYPES[path]
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        setting_type = [a for a in typing.get_args(hint) if a is not type(None)][0] if optional else hint
        if typing.get_origin(setting_type) is tuple or setting_type not in DISTRIBUTIONS[kind]:
            what = "a list" if typing.get_origin(setting_type) is tuple else getattr(setting_type, "__name__", "?")
            fits = sorted(k for k, ok in DISTRIBUTIONS.items() if setting_type in ok)
            problems.append(f"{where}: {path} is {what}; {kind} cannot sample it (expected "
                            f"{' or '.join(fits) if fits else 'no search: it cannot be sampled; fix it in trial'})")
            continue
        space[path] = (kind, args)
        labels[path] = where
    data_decided = [k for k in space if k.startswith("features.") or k.startswith("eval.xdomain_")
                    or k == "eval.test_sound_snr_db"]
    for k in data_decided:
        problems.append(f"{labels[k]}: {k} decides the features a study computes before it starts; it cannot be "
                        "searched (sweep it in grid, or run one study per value)")
    if algorithm == "grid":
        if space:
            problems.append("search.space: the grid does not sample; use search.algorithm random or optuna, or grid")
        if num != 1:
            problems.append("search.num_samples: a grid runs each point once; expected 1 (or a search algorithm)")
        if scheduler is None:
            return None
    else:
        if not space and not space_raw:
            problems.append("search.space: expected at least one setting to search, e.g. tau_m: {loguniform: [0.02, 0.5]}")
        swept = [k for k, v in grid.items() if isinstance(v, list) and len(v) > 1]
        if swept:
            problems.append(f"grid: {', '.join(swept)} swept in a {algorithm} search; put it in search.space as "
                            "{choice: [...]} (a searcher samples one space)")
        if arms and algorithm == "optuna":
            problems.append("arms: an optuna search samples one space and cannot cross it with arms; run one study "
                            "per arm, or use search.algorithm: random")
    return {"algorithm": algorithm, "num_samples": num, "metric": metric, "mode": mode, "scheduler": scheduler,
            "space": space, "seed": seed if isinstance(seed, int) else 0,
            "grace_period": raw.get("grace_period") or 1, "reduction_factor": raw.get("reduction_factor") or 2}


def _distribution(dist: Any, where: str, problems: list[str]) -> tuple[str | None, list]:
    """(kind, arguments) of one ``{kind: [arguments]}`` entry of search.space."""
    if not isinstance(dist, dict) or len(dist) != 1:
        problems.append(f"{where}: expected one distribution {{kind: [arguments]}} with kind one of "
                        f"{sorted(DISTRIBUTIONS)}, got {_show(dist)}")
        return None, []
    (kind, args), = dist.items()
    if kind not in DISTRIBUTIONS:
        problems.append(f"{where}: unknown distribution {_show(kind)}; expected one of {sorted(DISTRIBUTIONS)}")
        return None, []
    if not isinstance(args, list) or not args:
        problems.append(f"{where}.{kind}: expected a list of arguments, got {_show(args)}")
        return None, []
    if kind == "choice":
        return kind, args
    if len(args) != 2 or any(isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a)
                             for a in args) or not args[0] < args[1]:
        problems.append(f"{where}.{kind}: expected [low, high], two finite numbers with low < high, got {_show(args)}")
        return None, []
    if kind.startswith("log") and args[0] <= 0:
        problems.append(f"{where}.{kind}: a log scale needs low > 0, got {_show(args)}")
        return None, []
    if kind.endswith("randint") and not all(float(a).is_integer() for a in args):
        problems.append(f"{where}.{kind}: expected whole numbers [low, high), got {_show(args)}")
        return None, []
    return kind, args


def reported_every_round(metric: str, cfg: TrialConfig) -> bool:
    """Whether every report of a trial carries ``metric`` (Tune's searchers and schedulers need it in each one),
    from its cadence in the record's registry: every round, or every eval.eval_every / eval.info_every round."""
    family = R.metric_family(metric)
    cadence = family.cadence if family is not None else "eval"
    if cadence == "info":
        return cfg.eval.info_every == 1
    return cadence == "round" or cfg.eval.eval_every == 1


def search_flats(spec: StudySpec) -> list[dict[str, Any]]:
    """The trials a search may make at the edges of its space: per searched setting, each bound of a range
    (randint's high is exclusive) and each value of a choice, on every trial of base x arms."""
    out = []
    for flat in spec.trial_flats():
        for path, (kind, args) in spec.search["space"].items():
            values = args if kind == "choice" else [args[0], args[1] - 1 if kind.endswith("randint") else args[1]]
            out.extend({**flat, path: value} for value in values)
    return out


def _space_problems(spec: StudySpec) -> list[str]:
    """Every value a search may sample must make a valid trial (search_flats), and the metric must be in every
    report."""
    first = spec.trial_flats()[0]
    out: dict[str, None] = {}
    metric = spec.search["metric"]
    if metric:
        try:
            cfg = TrialConfig.from_flat(first)
        except (ConfigError, TypeError, ValueError, OverflowError):
            cfg = None  # reported by the trial check
        if cfg is not None and not reported_every_round(metric, cfg):
            family = R.metric_family(metric)
            every = "eval.info_every" if family is not None and family.cadence == "info" else "eval.eval_every"
            out[f"search.metric: {metric} is reported every {getattr(cfg.eval, every.split('.')[1])} rounds, but a "
                f"searcher and a scheduler read it in every report; set trial.{every}: 1"] = None
    if spec.search["scheduler"]:
        # ASHA counts grace_period in rounds (Tune's training_iteration): past the longest trial it can stop nothing,
        # and Tune refuses it only once the study has started
        try:
            rounds = max(num_rounds(TrialConfig.from_flat(f)) for f in spec.trial_flats())
        except (ConfigError, TypeError, ValueError, OverflowError):
            rounds = None  # reported by the trial check
        grace = spec.search["grace_period"]
        if rounds is not None and grace > rounds:
            out[f"search.grace_period: {grace} rounds, but the trials train {rounds} round(s) (optim.epochs, or "
                f"optim.steps / optim.round_steps); expected an integer from 1 to {rounds}"] = None
    for path, (kind, args) in spec.search["space"].items():
        label = spec.labels.get(path, f"search.space.{path}")
        values = args if kind == "choice" else [args[0], args[1] - 1 if kind.endswith("randint") else args[1]]
        for value in values:
            try:
                TrialConfig.from_flat({**first, path: value})
            except ConfigError as exc:
                for problem in exc.problems:
                    out.setdefault(f"{label}: {_show(value)} cannot be sampled:{problem.partition(':')[2]}", None)
            except (TypeError, ValueError, OverflowError) as exc:
                out.setdefault(f"{label}: {_show(value)} cannot be sampled ({type(exc).__name__})", None)
    return list(out)


def _exists(path: Any) -> bool:
    try:
        return Path(str(path)).expanduser().exists()
    except (OSError, ValueError):  # a NUL byte, a name too long
        return False


def _folder_problem(path: Any) -> str | None:
    """Why ``path`` is not an existing folder ("does not exist", "is a file, not a folder"), or None."""
    if not _exists(path):
        return "does not exist"
    try:
        return None if Path(str(path)).expanduser().is_dir() else "is a file, not a folder"
    except (OSError, ValueError):
        return "cannot be read"


def _xdomain_root_problems(spec: "StudySpec") -> list[str]:
    """eval.xdomain_<side>_root, wherever the spec sets it (trial, grid, an arm): an existing folder. Checked with
    the spec, so a wrong path is named as the setting it is, not as the training data's data.<side>.root."""
    out: dict[str, None] = {}
    for side in ("image", "sound"):
        path = f"eval.xdomain_{side}_root"
        values = [(spec.labels.get(path, f"trial.{path}"), spec.base.get(path))]
        values += [(spec.labels.get(path, f"grid.{path}"), v) for v in spec.grid.get(path, [])]
        values += [(f"arms.{n}.{path}", a[path]) for n, a in spec.arms.items() if path in a]
        for label, root in values:
            manifest = spec.base.get(f"eval.xdomain_{side}_source") == "manifest"
            why = ("does not exist" if not _exists(root) else None) if manifest else _folder_problem(root)
            if isinstance(root, str) and why:
                out[f"{label}: {_show_path(root)} {why} (expected the other dataset's folder, "
                    "root/<class>/files)"] = None
    return list(out)


def _show_path(path: Any) -> str:
    text = str(path)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."


def _classmap_problem(classmap: Any) -> str | None:
    """Why the class-map file cannot be read as a UTF-8 CSV, or None (its columns and classes are checked with
    the data by study/run.py)."""
    if not isinstance(classmap, str):
        return f"expected the path of a CSV image_class,sound_class, got {_show(classmap)}"
    path = Path(classmap).expanduser()
    if not _exists(path):
        return f"{_show_path(classmap)} does not exist (expected a CSV image_class,sound_class)"
    try:
        read_text_file(path, "a CSV image_class,sound_class", MAX_CLASSMAP_BYTES)
    except SpecError as exc:
        return exc.problems[0]
    return None


def _trial_problems(spec: StudySpec, smoke: bool = False, distinct: bool = True) -> list[str]:
    """Config errors of any trial, each reported once, located where the file sets the value (grid.*, trial.*,
    data.*, and smoke.* when ``smoke``); a problem of a default nobody set is located as trial.<dotted path>.
    With ``distinct``, two grid points that make the same configuration are refused too: Tune would train it
    twice into one MLflow run (and report both as finished)."""
    seen: dict[str, None] = {}
    short = {v: k for k, v in SHORT_NAMES.items()}
    configs: dict[TrialConfig, int] = {}
    flats = spec.trial_flats()
    arms = [arm for arm, _ in spec.grid_points()]
    for index, flat in enumerate(flats):
        try:
            cfg = TrialConfig.from_flat(flat)
        except ConfigError as exc:
            for problem in exc.problems:
                path, _, what = problem.partition(":")
                if smoke and path in spec.smoke:
                    label = spec.labels.get(f"smoke:{path}", f"smoke.{path}")
                elif f"arm:{arms[index]}:{path}" in spec.labels:  # set by this trial's arm, not the first one's
                    label = spec.labels[f"arm:{arms[index]}:{path}"]
                elif path in spec.labels:
                    label = spec.labels[path]
                elif path in spec.grid:
                    label = f"grid.{short.get(path, path)}"
                elif path.startswith("data."):
                    label = path
                else:
                    label = f"trial.{path}"
                seen.setdefault(f"{label}:{what}", None)
            continue
        except (TypeError, ValueError, OverflowError) as exc:  # a value no setting can take (a mapping, a huge int)
            seen.setdefault(f"grid: a trial cannot be built ({type(exc).__name__}: {_show(str(exc))})", None)
            continue
        try:
            first = configs.setdefault(cfg, index)
        except TypeError:
            continue
        if distinct and first != index and not seen:
            a, b = flats[first], flat
            differ = {k: (a.get(k), b.get(k)) for k in spec.grid if a.get(k) != b.get(k)}
            where = ", ".join(f"{spec.labels.get(k, k)} {_show(x)} vs {_show(y)}" for k, (x, y) in differ.items())
            seen.setdefault(f"grid: two grid points make the same trial configuration ({where}); expected each "
                            "trial once (remove one of the values)", None)
    return list(seen)


SMOKE_SAMPLES = 4  # --smoke runs at most this many samples of a search
SMOKE_DEFAULTS: dict[str, Any] = {"optim.epochs": 1, "eval.info_samples": 300, "eval.probe_max_iter": 50,
                                  "regime.val_per_class": 5}


SMOKE_PRECISION_SEEDS = 2  # --smoke: one added round of at most this many seeds


def _smoke_precision(plan, grid: dict[str, list], arms: dict):
    """A precision plan for the shrunk grid: the contrasts whose cells the smoke grid still holds, and one round
    of at most SMOKE_PRECISION_SEEDS added seeds (the loop runs end to end, in seconds)."""
    if plan is None or "regime.seed" not in grid:
        return None
    axes = [p for p in grid if p != "regime.seed"] + ([R.ARM] if arms else [])
    values = {p: list(arms) if p == R.ARM else [_canonical_value(p, v) for v in grid[p]] for p in axes}
    kept = tuple(c for c in plan.contrasts
                 if all(p in values and v in values[p] for cell in (c.a, c.b) for p, v in cell.items()))
    if not kept:
        return None
    spr = min(plan.seeds_per_round, SMOKE_PRECISION_SEEDS)
    return dataclasses.replace(plan, contrasts=kept, seeds_per_round=spr, max_seeds=len(grid["regime.seed"]) + spr)


def shrink_for_smoke(spec: StudySpec) -> StudySpec:
    """Seconds-long version of any spec: one epoch, small train sizes (distinct, in the same relative order as the
    original), few information samples. A spec's own ``smoke:`` block overrides these defaults. A swept setting
    that smoke fixes (an ``epochs`` axis, or any key of the smoke block) stops being swept. Raises SpecError when
    a shrunk trial is not a valid configuration (e.g. ``smoke: {epochs: 0}``)."""
    base = dict(spec.base)
    grid = dict(spec.grid)
    base.update(SMOKE_DEFAULTS)
    if "regime.train_size" in grid:
        sizes = sorted(grid["regime.train_size"])
        grid["regime.train_size"] = [min(v, 100 * (i + 1)) for i, v in enumerate(sizes)]
    else:
        base["regime.train_size"] = min(int(base.get("regime.train_size", TrialConfig().regime.train_size)), 100)
    base.update(spec.smoke)
    for key in list(grid):
        if key in spec.smoke or key in SMOKE_DEFAULTS:
            grid.pop(key)
    search = spec.search
    if search is not None:  # a searched setting the smoke rules fix stops being searched, as a swept one does
        space = {k: v for k, v in search["space"].items() if k not in spec.smoke and k not in SMOKE_DEFAULTS}
        search = {**search, "space": space, "num_samples": min(search["num_samples"], SMOKE_SAMPLES)}
    shrunk = StudySpec(spec.name, base, grid, spec.resources, spec.max_concurrent_trials, spec.max_failures,
                       spec.description, spec.source_path, spec.smoke, spec.labels, spec.arms, search,
                       spec.trial_plots, spec.sesoi, _smoke_precision(spec.precision, grid, spec.arms), spec.report)
    problems = _trial_problems(shrunk, smoke=True)
    if problems:
        raise SpecError(spec.source_path or "<spec>", [f"{p} (with --smoke)" for p in problems])
    if search is not None and search["scheduler"]:  # the smoke rounds are few: a grace period cannot outlast them
        rounds = max(num_rounds(TrialConfig.from_flat(f)) for f in shrunk.trial_flats())
        search["grace_period"] = min(search["grace_period"], rounds)
    return shrunk
