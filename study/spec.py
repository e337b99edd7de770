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

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bma.config import FLAT_TYPES, SHORT_NAMES, ConfigError, TrialConfig

TOP_LEVEL = {"name", "description", "data", "grid", "trial", "resources", "max_concurrent_trials", "max_failures", "smoke"}
DATA_KEYS = {"image", "sound", "classmap", "cache_dir"}
SOURCE_KEYS = {"source", "root", "test_fold", "download"}
RESOURCE_KEYS = {"cpu", "gpu"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_TRIALS = 20_000
# Settings that belong to the data section, not to a grid or trial block.
DATA_PATHS = {p for p in FLAT_TYPES if p.startswith("data.")}


class SpecError(ValueError):
    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s) in the study spec:\n  " + "\n  ".join(problems))


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

    @property
    def n_trials(self) -> int:
        n = 1
        for values in self.grid.values():
            n *= len(values)
        return n

    def trial_flats(self) -> list[dict[str, Any]]:
        """One flat dict (dotted paths) per trial: base overlaid with one grid combination."""
        keys = list(self.grid)
        return [{**self.base, **dict(zip(keys, combo))} for combo in itertools.product(*(self.grid[k] for k in keys))]

    def fingerprint(self) -> str:
        """Identifies the study's content: resuming with a changed spec is refused rather than mixed."""
        blob = json.dumps({"base": self.base, "grid": self.grid}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _path_of(key: str) -> str:
    return SHORT_NAMES.get(key, key)


def _flatten_section(section: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in section.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and f"{path}" not in FLAT_TYPES and _path_of(path) not in FLAT_TYPES:
            out.update(_flatten_section(v, path + "."))
        else:
            out[path] = v
    return out


def load_spec(path: str | Path, smoke: bool = False) -> StudySpec:
    """Read and validate; raises SpecError listing every problem (with its location in the file)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise SpecError(where, [f"{where}: no such file (expected a study spec YAML, e.g. study/specs/quick.yaml)"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(where, [f"not valid YAML: {exc}"]) from None
    spec = parse_spec(raw, where)
    return shrink_for_smoke(spec) if smoke else spec


def parse_spec(raw: Any, where: str = "<spec>") -> StudySpec:
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise SpecError(where, [f"top level: expected a mapping with keys name, data, grid, trial, resources; got {type(raw).__name__}"])

    for key in sorted(set(raw) - TOP_LEVEL):
        problems.append(f"{key}: unknown top-level key (expected one of {sorted(TOP_LEVEL)})")

    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(f"name: expected a study name of letters, digits, '_', '-', '.' (1-64 chars), got {name!r}")

    base: dict[str, Any] = {}
    # -- data ---------------------------------------------------------------------------------------------------
    data = raw.get("data")
    data = {} if data is None else data  # an empty `data:` section means the default sources, as for trial/smoke
    if not isinstance(data, dict):
        problems.append(f"data: expected a mapping with image and sound, got {type(data).__name__}")
        data = {}
    for key in sorted(set(data) - DATA_KEYS):
        problems.append(f"data.{key}: unknown key (expected {sorted(DATA_KEYS)})")
    for side in ("image", "sound"):
        src = data.get(side)
        if src is None:
            continue  # default source
        if isinstance(src, str):
            src = {"source": src}
        if not isinstance(src, dict):
            problems.append(f"data.{side}: expected a mapping like {{source: ...}}, got {src!r}")
            continue
        for key in sorted(set(src) - SOURCE_KEYS):
            problems.append(f"data.{side}.{key}: unknown key (expected {sorted(SOURCE_KEYS)})")
        for key in SOURCE_KEYS & set(src):
            base[f"data.{side}.{key}"] = src[key]
        root = src.get("root")
        if root is not None and not Path(str(root)).expanduser().exists():
            problems.append(f"data.{side}.root: {root} does not exist (expected the dataset's folder, or null for the mirror/download)")
    if data.get("classmap") is not None:
        base["data.classmap"] = data["classmap"]
        if not Path(str(data["classmap"])).is_file():
            problems.append(f"data.classmap: {data['classmap']} does not exist (expected a CSV image_class,sound_class)")
    if data.get("cache_dir") is not None:
        base["data.cache_dir"] = data["cache_dir"]

    # -- trial (fixed settings) -----------------------------------------------------------------------------------
    trial = raw.get("trial", {}) or {}
    if not isinstance(trial, dict):
        problems.append(f"trial: expected a mapping of fixed settings, got {type(trial).__name__}")
        trial = {}
    labels: dict[str, str] = {}
    for key, value in _flatten_section(trial).items():
        path = _path_of(key)
        if path not in FLAT_TYPES or path in DATA_PATHS:
            problems.append(f"trial.{key}: unknown setting (see docs/spec.md for the list)")
            continue
        base[path] = value
        labels[path] = f"trial.{key}"

    # -- grid -----------------------------------------------------------------------------------------------------
    grid_raw = raw.get("grid")
    grid: dict[str, list[Any]] = {}
    if not isinstance(grid_raw, dict) or not grid_raw:
        problems.append("grid: expected a non-empty mapping of setting -> list of values")
        grid_raw = {}
    for key, values in grid_raw.items():
        path = _path_of(key)
        if path not in FLAT_TYPES or path in DATA_PATHS:
            problems.append(f"grid.{key}: unknown setting (see docs/spec.md for the list)")
            continue
        if not isinstance(values, list):
            problems.append(f"grid.{key}: expected a list of values, got {values!r}")
            continue
        if not values:
            problems.append(f"grid.{key}: empty list: the grid would have no trials")
            continue
        if len(set(map(repr, values))) != len(values):
            problems.append(f"grid.{key}: repeated values {values}")
        if path in base:
            problems.append(f"grid.{key}: also set in trial; a setting is either fixed or swept")
        grid[path] = values
        labels[path] = f"grid.{key}"

    # -- resources ------------------------------------------------------------------------------------------------
    res = raw.get("resources", {"cpu": 1, "gpu": 0}) or {}
    resources = {"cpu": 1.0, "gpu": 0.0}
    if not isinstance(res, dict):
        problems.append(f"resources: expected a mapping {{cpu: N, gpu: N}}, got {res!r}")
        res = {}
    for key in sorted(set(res) - RESOURCE_KEYS):
        problems.append(f"resources.{key}: unknown key (expected cpu, gpu)")
    for key in RESOURCE_KEYS & set(res):
        value = res[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            problems.append(f"resources.{key}: expected a number >= 0, got {value!r}")
        elif key == "gpu" and value > 1 and not float(value).is_integer():
            problems.append(f"resources.gpu: fractions are allowed below 1 only (Ray's rule), got {value}")
        else:
            resources[key] = float(value)
    if resources["cpu"] == 0 and resources["gpu"] == 0:
        problems.append("resources: a trial needs cpu > 0 or gpu > 0")

    mct = raw.get("max_concurrent_trials")
    if mct is not None and (isinstance(mct, bool) or not isinstance(mct, int) or mct < 1):
        problems.append(f"max_concurrent_trials: expected a positive integer or null, got {mct!r}")
    mf = raw.get("max_failures", 0)
    if isinstance(mf, bool) or not isinstance(mf, int) or mf < -1:
        problems.append(f"max_failures: expected an integer >= -1 (retries of a failed trial; -1 = forever), got {mf!r}")
    smoke = raw.get("smoke", {}) or {}
    if not isinstance(smoke, dict):
        problems.append(f"smoke: expected a mapping of settings used by --smoke, got {smoke!r}")
        smoke = {}
    smoke_flat = {}
    smoke_labels = {}
    for key, value in _flatten_section(smoke).items():
        path = _path_of(key)
        if path not in FLAT_TYPES:
            problems.append(f"smoke.{key}: unknown setting")
        else:
            smoke_flat[path] = value
            smoke_labels[f"smoke:{path}"] = f"smoke.{key}"

    # -- every trial must make a valid TrialConfig ----------------------------------------------------------------
    spec = StudySpec(
        name=name if isinstance(name, str) else "",
        base=base,
        grid=grid,
        resources=resources,
        max_concurrent_trials=mct if isinstance(mct, int) else None,
        max_failures=mf if isinstance(mf, int) else 0,
        description=str(raw.get("description", "")),
        source_path=where,
        smoke=smoke_flat,
        labels={**labels, **smoke_labels},
    )
    if grid and spec.n_trials > MAX_TRIALS:
        problems.append(f"grid: {spec.n_trials} trials exceed the limit of {MAX_TRIALS}; split the study")
    elif grid:
        problems.extend(_trial_problems(spec))
        if smoke_flat and not problems:
            # The smoke block's own values, checked on one trial (cheap); --smoke checks every shrunk trial.
            first = StudySpec(spec.name, {**spec.trial_flats()[0], **smoke_flat}, {}, resources, smoke=smoke_flat,
                              labels=spec.labels)
            problems.extend(_trial_problems(first, smoke=True))
    if problems:
        raise SpecError(where, problems)
    return spec


def _trial_problems(spec: StudySpec, smoke: bool = False) -> list[str]:
    """Config errors of any trial, each reported once, located where the file sets the value (grid.*, trial.*,
    data.*, and smoke.* when ``smoke``); a problem of a default nobody set is located as trial.<dotted path>."""
    seen: dict[str, None] = {}
    short = {v: k for k, v in SHORT_NAMES.items()}
    for flat in spec.trial_flats():
        try:
            TrialConfig.from_flat(flat)
        except ConfigError as exc:
            for problem in exc.problems:
                path, _, what = problem.partition(":")
                if smoke and path in spec.smoke:
                    label = spec.labels.get(f"smoke:{path}", f"smoke.{path}")
                elif path in spec.labels:
                    label = spec.labels[path]
                elif path in spec.grid:
                    label = f"grid.{short.get(path, path)}"
                elif path.startswith("data."):
                    label = path
                else:
                    label = f"trial.{path}"
                seen.setdefault(f"{label}:{what}", None)
    return list(seen)


SMOKE_DEFAULTS: dict[str, Any] = {"optim.epochs": 1, "eval.info_samples": 100, "eval.probe_max_iter": 50,
                                  "regime.val_per_class": 5}


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
        base["regime.train_size"] = min(int(base.get("regime.train_size", 2000)), 100)
    base.update(spec.smoke)
    for key in list(grid):
        if key in spec.smoke or key in SMOKE_DEFAULTS:
            grid.pop(key)
    shrunk = StudySpec(spec.name, base, grid, spec.resources, spec.max_concurrent_trials, spec.max_failures,
                       spec.description, spec.source_path, spec.smoke, spec.labels)
    problems = _trial_problems(shrunk, smoke=True)
    if problems:
        raise SpecError(spec.source_path or "<spec>", [f"{p} (with --smoke)" for p in problems])
    return shrunk
