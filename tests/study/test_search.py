"""The hyperparameter side of the engine: `search:` (Ray Tune's random search and OptunaSearch TPE, ASHA early
stopping). Validation refuses what a searcher cannot sample; a smoke optuna + asha study finishes, resumes after
a SIGKILL of its driver with one MLflow run per trial, records early-stopped trials as such, and exports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from study.spec import SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "study" / "run.py"


def _search(**search) -> dict:
    return {"name": "s", "grid": {"variant": ["bma"]}, "trial": {"eval": {"eval_every": 1}},
            "search": {"algorithm": "optuna", "num_samples": 4, "metric": "loss/val_pair", "mode": "min",
                       "space": {"tau_m": {"loguniform": [0.02, 0.5]}}, **search}}


def _problems(raw: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    return info.value.problems


def test_shipped_search_spec_is_valid():
    spec = load_spec(REPO / "study" / "specs" / "search.yaml")
    assert spec.search["algorithm"] == "optuna" and spec.search["scheduler"] == "asha"
    assert set(spec.search["space"]) == {"model.tau_m", "loss.tau_l", "model.memory_slots", "optim.lr"}
    assert spec.n_trials == 32
    assert load_spec(REPO / "study" / "specs" / "search.yaml", smoke=True).n_trials == 4


def test_a_search_changes_the_fingerprint_and_a_grid_spec_keeps_its_own():
    a = parse_spec(_search())
    b = parse_spec(_search(num_samples=8))
    assert a.fingerprint() != b.fingerprint()
    plain = {"name": "s", "grid": {"variant": ["bma"]}}
    assert parse_spec(plain).fingerprint() == parse_spec({**plain, "search": {"algorithm": "grid"}}).fingerprint()


@pytest.mark.parametrize("space, expected", [
    ({"addressing": {"uniform": [0, 1]}}, "search.space.addressing: model.addressing is str; uniform cannot sample it"),
    ({"label_budgets": {"choice": [[1], [5]]}}, "eval.label_budgets is a list; choice cannot sample it"),
    ({"memory_slots": {"loguniform": [16, 256]}}, "model.memory_slots is int; loguniform cannot sample it"),
    ({"tau_m": {"loguniform": [0, 0.5]}}, "search.space.tau_m.loguniform: a log scale needs low > 0"),
    ({"tau_m": {"uniform": [0.5, 0.1]}}, "two finite numbers with low < high"),
    ({"memory_slots": {"choice": [16, 0]}}, "search.space.memory_slots: 0 cannot be sampled"),
    ({"sound_snr_db": {"uniform": [0, 20]}}, "decides the features a study computes before it starts"),
    ({"tau_m": {"normal": [0, 1]}}, "unknown distribution 'normal'"),
    ({"gird": {"choice": [1]}}, "search.space.gird: unknown setting"),
])
def test_a_setting_that_cannot_be_sampled_is_refused(space, expected):
    problems = _problems(_search(space=space))
    assert any(expected in p for p in problems), problems


def test_search_block_errors_name_the_field():
    cases = [
        (_search(algorithm="bayes"), "search.algorithm: expected one of"),
        (_search(scheduler="hyperband"), "search.scheduler: expected null or one of"),
        (_search(mode="up"), "search.mode: expected max or min"),
        (_search(num_samples=0), "search.num_samples: expected a whole number"),
        (_search(metric="loss/val_pair", **{"grace_period": 2}), "search.grace_period: only read by a scheduler"),
        ({**_search(), "grid": {"variant": ["bma", "unimodal"]}}, "grid: model.variant swept in a optuna search"),
        ({**_search(), "trial": {}}, "search.metric: loss/val_pair is reported every 5 rounds"),
        (_search(metric="acc/sound_probe_h", mode="max"), "search.metric: acc/sound_probe_h is measured on the test split"),
        ({**_search(), "arms": {"a": {}, "b": {"tau_l": 0.2}}}, "arms: an optuna search"),
        ({**_search(), "trial": {"eval": {"eval_every": 1}, "tau_m": 0.1}}, "search.space.tau_m: also set in grid"),
    ]
    for raw, expected in cases:
        problems = _problems(raw)
        assert any(expected in p for p in problems), (expected, problems)


def test_bad_search_through_the_driver_is_exit_2_with_nothing_written(tmp_path):
    (tmp_path / "s.yaml").write_text("name: s\ngrid: {variant: [bma]}\nsearch: {algorithm: optuna, num_samples: 2, "
                                     "metric: loss/total, mode: min, space: {addressing: {uniform: [0, 1]}}}\n")
    proc = subprocess.run([sys.executable, str(RUN), str(tmp_path / "s.yaml")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "search.space.addressing" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


SPEC = """
name: osearch
data: {image: {source: mnist}, sound: {source: fsdd}}
search:
  algorithm: optuna
  num_samples: 4
  metric: loss/total
  mode: min
  scheduler: asha
  grace_period: 1
  reduction_factor: 2
  space:
    tau_m: {loguniform: [0.05, 0.5]}
    lr: {loguniform: [0.0003, 0.01]}
grid: {variant: [bma]}
trial: {train_size: 200, batch_size: 64, eval: {info_every: 0}}
resources: {cpu: 1}
max_concurrent_trials: 1
smoke: {epochs: 4}
"""


def _trial_runs(tmp: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    exp = client.get_experiment_by_name("osearch-smoke")
    return client, client.search_runs([exp.experiment_id], "tags.`bma.role` = 'trial'")


def _ended_runs(tmp: Path) -> int:
    import sqlite3

    db = tmp / "mlflow.db"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("select count(*) from runs r join tags t on r.run_uuid = t.run_uuid where "
                               "t.key = 'bma.role' and t.value = 'trial' and r.status = 'FINISHED'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_optuna_asha_study_resumes_after_sigkill_and_exports(tmp_path: Path, feature_cache: Path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    env = {**os.environ, "BMA_CACHE_DIR": str(feature_cache), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(RUN), str(tmp_path / "spec.yaml"), "--smoke", "--num-cpus", "2"]
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and _ended_runs(tmp_path) < 1:
                assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                time.sleep(0.5)
            assert _ended_runs(tmp_path) >= 1, "no trial ended within 300 s"
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=30)
        finally:
            try:
                os.killpg(driver.pid, signal.SIGKILL)  # the Ray processes this driver started
            except (ProcessLookupError, PermissionError):
                pass
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming study osearch-smoke" in second.stdout
    assert "4 of 4 trials finished" in second.stdout

    client, runs = _trial_runs(tmp_path)
    assert len(runs) == 4 and len({r.data.tags["bma.trial_key"] for r in runs}) == 4  # one run per trial
    assert all(r.info.status == "FINISHED" and r.data.tags["bma.status"] == "finished" for r in runs), [
        (r.info.run_name, r.info.status, r.data.tags.get("bma.status"), r.data.tags.get("bma.attempts"),
         r.data.tags.get("bma.stopped_early")) for r in runs]
    for run in runs:  # early stopped <=> fewer rounds than its schedule, and then so tagged
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss/total"))
        assert steps == list(range(1, len(steps) + 1))
        assert (run.data.tags.get("bma.stopped_early") == "true") == (len(steps) < 4), (run.info.run_name, steps)
    n_stopped = sum(r.data.tags.get("bma.stopped_early") == "true" for r in runs)

    out = tmp_path / "tables"
    proc = subprocess.run([sys.executable, "-m", "analysis", "export", "--study", "osearch-smoke", "--tracking-uri",
                           f"sqlite:///{tmp_path / 'mlflow.db'}", "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    exported = pd.read_parquet(out / "runs.parquet")
    assert len(exported) == 4 and exported["used"].all()  # early-stopped trials counted, not dropped
    assert int(exported["stopped_early"].sum()) == n_stopped
