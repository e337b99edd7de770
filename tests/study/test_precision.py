"""Precision targets (study/precision.py, study/run.py precision_rounds): studies that add seeds until they know.

- the spec's precision block is validated with every problem named;
- a contrast expands over the axes it leaves free;
- on a fast synthetic trainable (values drawn per cell and seed, no Ray), the loop adds seeds only to the cells of
  open contrasts, and stops each contrast at its target or its cap, recording why on the parent run;
- a driver SIGKILLed in a precision round resumes it without a duplicate run (engine, real data mirror).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from study import precision as P
from bma import record as R
from study.spec import SpecError, parse_spec
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "study" / "run.py"

BASE = {
    "name": "p",
    "data": {"image": {"source": "mnist"}, "sound": {"source": "fsdd"}},
    "grid": {"unpaired_images": [0, 2000], "pairs": [50, 200], "variant": ["unimodal", "bma"], "seed": [0, 1, 2]},
    "trial": {"steps": 6, "round_steps": 3, "unpaired_sounds": 200},
}
CONTRAST = {"name": "boost", "metric": "acc/sound_probe_h/k5",
            "a": {"variant": "bma", "unpaired_images": 2000}, "b": {"variant": "bma", "unpaired_images": 0}}


def spec_with(precision, **extra):
    return parse_spec({**BASE, "precision": precision, **extra}, "spec.yaml")


def refused(precision, **extra) -> list[str]:
    with pytest.raises(SpecError) as info:
        spec_with(precision, **extra)
    return info.value.problems


@pytest.mark.parametrize(("precision", "fragment"), [
    ({"contrasts": [CONTRAST], "max_seeds": 2}, "precision.max_seeds: expected an integer from the grid's 3 seeds"),
    ({"contrasts": [], "max_seeds": 8}, "precision.contrasts: expected a non-empty list"),
    ({"contrasts": [{**CONTRAST, "metric": "accuracy/sound"}], "max_seeds": 8},
     "precision.contrasts[0].metric: 'accuracy/sound' is not a metric"),
    ({"contrasts": [{**CONTRAST, "a": {"variant": "bma", "tau_m": 0.2}}], "max_seeds": 8},
     "precision.contrasts[0].a.tau_m: not an axis of the grid"),
    ({"contrasts": [{**CONTRAST, "a": {"variant": "bma", "unpaired_images": 999}}], "max_seeds": 8},
     "precision.contrasts[0].a.unpaired_images: 999 is not one of the grid's values"),
    ({"contrasts": [{**CONTRAST, "a": {"seed": 1}}], "max_seeds": 8}, "the seed is not a cell axis"),
    ({"contrasts": [{**CONTRAST, "a": CONTRAST["b"]}], "max_seeds": 8}, "a and b are the same cell"),
    ({"contrasts": [CONTRAST], "max_seeds": 8, "target": {"half_width": -1}},
     "precision.target.half_width: expected a positive number"),
    ({"contrasts": [CONTRAST, CONTRAST], "max_seeds": 8}, "'boost' is used twice"),
    ({"contrasts": [CONTRAST], "max_seeds": 8, "seeds": 4}, "precision.seeds: unknown key"),
])
def test_a_bad_precision_block_is_refused_naming_the_field(precision, fragment):
    problems = refused(precision)
    assert any(fragment in p for p in problems), problems


def test_precision_needs_seeds_in_the_grid():
    grid = {k: v for k, v in BASE["grid"].items() if k != "seed"}
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, "grid": grid, "precision": {"contrasts": [CONTRAST], "max_seeds": 8}}, "spec.yaml")
    assert any("the grid must sweep seed" in p for p in info.value.problems)


def test_a_contrast_expands_over_the_axes_it_leaves_free():
    spec = spec_with({"contrasts": [CONTRAST], "max_seeds": 8})
    from study.spec import _canonical_value

    cells = P.expand(spec.precision, spec.grid, spec.arms, _canonical_value)
    assert [c.name for c in cells] == ["boost[pairs=50]", "boost[pairs=200]"]
    for c, pairs in zip(cells, (50, 200)):
        assert dict(c.a) == {"regime.pairs": pairs, "model.variant": "bma", "regime.unpaired_images": 2000}
        assert dict(c.b) == {"regime.pairs": pairs, "model.variant": "bma", "regime.unpaired_images": 0}


def test_sesoi_and_precision_change_the_fingerprint():
    plain = parse_spec(BASE, "spec.yaml")
    with_sesoi = parse_spec({**BASE, "analysis": {"sesoi": {"acc/*": 0.02}}}, "spec.yaml")
    assert with_sesoi.sesoi == {"acc/*": 0.02}
    assert len({plain.fingerprint(), with_sesoi.fingerprint(),
                spec_with({"contrasts": [CONTRAST], "max_seeds": 8}).fingerprint()}) == 3


# -- the loop, on a fast synthetic trainable --------------------------------------------------------------------

@dataclass
class FakeResult:
    config: dict
    metrics: dict
    error: object = None
    path: str = ""


@dataclass
class FakeClient:
    tags: dict = field(default_factory=dict)
    metrics: list = field(default_factory=list)

    def log_batch(self, run_id, tags=()):
        self.tags.update({t.key: t.value for t in tags})

    def log_metric(self, run_id, key, value, step=0):
        self.metrics.append((key, value, step))


class FakeProgress:
    def __init__(self, **kwargs):
        pass

    def close(self):
        pass


def synthetic_study(spec, effects: dict, noise: dict):
    """A fit_experiment that 'trains' each distinct trial at once: the metric is 0.5 + the cell's effect + noise of
    the cell's sd, drawn per (cell, seed) (a fixed function, so a rerun gives the same value)."""
    from trainables.bma_trainable import POINT_KEY

    experiments: list[tuple[str, list[dict]]] = []

    def fit_experiment(name, space, keywords, callback):
        points = space[POINT_KEY]["grid_search"]
        results = []
        for point in points:
            cell = (point.get("model.variant"), point.get("regime.unpaired_images"), point.get("regime.pairs"))
            seed = point["regime.seed"]
            rng = np.random.default_rng([hash(cell) % 2**31, seed])
            value = 0.5 + effects.get(cell, 0.0) + noise.get(cell, 0.01) * rng.standard_normal()
            results.append(FakeResult({POINT_KEY: point}, {"acc/sound_probe_h/k5": value}))
        experiments.append((name, points))
        return results

    return fit_experiment, experiments


def run_rounds(spec, effects, noise):
    from study.run import grid_space, precision_rounds

    fit_experiment, experiments = synthetic_study(spec, effects, noise)
    first = fit_experiment(spec.name, grid_space(spec, spec.distinct_trials()), {}, None)
    client = FakeClient()
    results = precision_rounds(spec, spec.name, first, fit_experiment, client, "parent", grid_space, FakeProgress,
                               "acc/sound_probe_h", "max")
    return results, experiments, client


def test_the_loop_adds_seeds_only_to_open_contrasts_and_stops_at_target_or_cap():
    grid = {"unpaired_images": [0, 2000], "variant": ["unimodal", "bma"], "seed": [0, 1, 2]}
    precision = {"contrasts": [
        # quiet cells: settled by the first 3 seeds
        {"name": "quiet", "metric": "acc/sound_probe_h/k5", "a": {"variant": "unimodal", "unpaired_images": 2000},
         "b": {"variant": "unimodal", "unpaired_images": 0}},
        # noisy cells: open until the cap
        {"name": "noisy", "metric": "acc/sound_probe_h/k5", "a": {"variant": "bma", "unpaired_images": 2000},
         "b": {"variant": "bma", "unpaired_images": 0}},
    ], "target": {"half_width": 0.02}, "seeds_per_round": 2, "max_seeds": 7}
    spec = parse_spec({**BASE, "grid": grid, "trial": {**BASE["trial"], "pairs": 50}, "precision": precision},
                      "spec.yaml")
    noise = {("unimodal", 0, None): 0.001, ("unimodal", 2000, None): 0.001,
             ("bma", 0, None): 0.2, ("bma", 2000, None): 0.2}
    results, experiments, client = run_rounds(spec, {}, noise)

    names = [name for name, _ in experiments]
    assert names == ["p", "p.precision-1", "p.precision-2"], names  # 3 + 2 + 2 seeds = the cap of 7
    for _, points in experiments[1:]:
        assert {p["model.variant"] for p in points} == {"bma"}, "seeds went to a settled contrast's cells"
    assert sorted({p["regime.seed"] for _, pts in experiments[1:] for p in pts}) == [3, 4, 5, 6]
    quiet = json.loads(client.tags[R.PRECISION + "quiet"])
    noisy = json.loads(client.tags[R.PRECISION + "noisy"])
    assert quiet["state"] == "closed" and quiet["n"] == 3 and "half-width" in quiet["reason"]
    assert noisy["state"] == "closed" and noisy["n"] == 7 and noisy["reason"].startswith("cap of 7 seeds reached")
    assert noisy["half_width"] > 0.02 and noisy["round"] == 2
    assert [s for k, _, s in client.metrics if k == "precision/noisy/half_width"] == [0, 1, 2]


def test_a_verdict_target_spends_alpha_over_the_looks():
    plan = P.PrecisionPlan((), None, True, seeds_per_round=4, max_seeds=11)
    assert plan.looks(3) == 3  # seeds 3, 7, 11
    contrast = P.CellContrast("c", "acc/x", (("model.variant", "bma"),), (("model.variant", "unimodal"),))
    table = {}
    for seed, diff in enumerate([0.030, 0.034, 0.029, 0.031, 0.033]):
        table[("acc/x", contrast.a, seed)] = 0.5 + diff
        table[("acc/x", contrast.b, seed)] = 0.5
    (status,) = P.decide([contrast], table, plan, {"acc/*": 0.02}, initial_seeds=3)
    assert status.alpha == pytest.approx(0.05 / 3)
    assert status.result.verdict == "gain" and not status.open and "Bonferroni over 3 looks" in status.reason
    # the interval behind the verdict is the (1 - alpha/3) one, wider than the plain 95 % one
    plain = P.decide([contrast], table, P.PrecisionPlan((), 0.001, False, 4, 5), {}, 3)[0]
    width = lambda s: s.result.ci95[1] - s.result.ci95[0]  # noqa: E731
    assert width(status) > width(plain)
    assert math.isclose(plain.alpha, 0.05)


# -- the engine: a SIGKILL mid-round resumes without a duplicate run --------------------------------------------

SPEC = """
name: prec
data: {image: {source: mnist}, sound: {source: fsdd}}
grid:
  unpaired_images: [0, 200]
  variant: [unimodal]
  seed: [0, 1, 2]
trial: {pairs: 50, unpaired_sounds: 100, batch_size: 32, encoder_objective: contrastive, pair_negatives: all,
        eval: {info_every: 0, label_budgets: [1, 5], label_draws: 2}}
resources: {cpu: 1}
precision:
  target: {half_width: 0.0000001}
  seeds_per_round: 2
  max_seeds: 5
  contrasts:
    - {name: pool, metric: acc/image_probe_h/k5, a: {unpaired_images: 200}, b: {unpaired_images: 0}}
smoke: {steps: 3, round_steps: 3}
"""


def _runs(tmp: Path):
    import sqlite3

    db = tmp / "mlflow.db"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("select t.value, r.status from runs r join tags t on r.run_uuid = t.run_uuid "
                               "where t.key = 'bma.trial_key'").fetchall()
    except sqlite3.Error:
        return []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_killed_driver_resumes_its_precision_round_without_duplicates(tmp_path: Path, feature_cache: Path):
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(SPEC))
    env = {**os.environ, "BMA_CACHE_DIR": str(feature_cache), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(RUN), str(tmp_path / "spec.yaml"), "--smoke", "--num-cpus", "1"]
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        # the grid's 6 trials, then a round for seeds 3-4: kill once a round-1 trial finished
        wait_for(lambda: driver.poll() is not None or sum(s == "FINISHED" for _, s in _runs(tmp_path)) >= 7,
                 timeout=600, what="a precision round's first trial to finish", detail=lambda: log.read_text()[-3000:])
        assert driver.poll() is None, f"the driver ended before the kill:\n{log.read_text()[-3000:]}"
        assert "precision round 1: seeds 3..4" in log.read_text()
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming study prec-smoke.precision-1" in second.stdout
    runs = _runs(tmp_path)
    keys = [k for k, _ in runs]
    # 2 cells x 5 seeds (the cap), each trained once
    assert len(keys) == 10 and len(set(keys)) == 10, f"{len(keys)} runs for {len(set(keys))} trials"
    assert all(s == "FINISHED" for _, s in runs)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("prec-smoke")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`bma.role` = 'study'")
    record = json.loads(parent.data.tags[R.PRECISION + "pool"])
    assert record["n"] == 5 and record["state"] == "closed" and record["reason"].startswith("cap of 5 seeds")


@pytest.mark.parametrize(("analysis", "fragment"), [
    ({"sesoi": -0.02}, "analysis.sesoi: sesoi '-0.02': delta must be a positive number"),
    ({"sesoi": "big"}, "analysis.sesoi: expected a number (for acc/*) or a mapping"),
    ({"sesoi": {"acc/*": 0.02}, "alpha": 0.1}, "analysis.alpha: unknown key"),
    ("0.02", "analysis: expected a mapping like"),
])
def test_a_bad_analysis_block_is_refused_naming_the_field(analysis, fragment):
    with pytest.raises(SpecError) as info:
        parse_spec({**BASE, "analysis": analysis}, "spec.yaml")
    assert any(fragment in p for p in info.value.problems), info.value.problems
