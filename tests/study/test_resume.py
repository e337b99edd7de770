"""The study engine end to end: a smoke study on a local Ray whose driver is SIGKILLed mid-study, then resumed.

Asserts what a user relies on: the rerun of the same command finishes the study, the store holds exactly one run
per trial, and trials that had finished before the kill were not trained again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "study" / "run.py"

SPEC = """
name: resume
data: {image: {source: mnist}, sound: {source: fsdd}}
grid:
  variant: [paired_only, bma]   # not unimodal: its two pairing ratios would be one trial (common random numbers)
  pairing_ratio: [0.1, 0.5]
  seed: [0]
trial: {train_size: 300, batch_size: 64, eval: {info_every: 0}}
resources: {cpu: 1}
smoke: {epochs: 3}
"""


def _client(tmp: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")


def _trial_runs(tmp: Path):
    if not (tmp / "mlflow.db").exists():
        return []
    client = _client(tmp)
    try:
        exp = client.get_experiment_by_name("resume-smoke")
    except Exception:  # store still being created by the driver
        return []
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], "tags.`bma.role` = 'trial'")


def _finished_trials(tmp: Path) -> dict[str, int] | None:
    """{trial_key: end_time} of finished trial runs, read with plain sqlite3 (read-only), so that polling never
    races the driver's own creation of the MLflow tables; None while the store is not there yet."""
    import sqlite3

    db = tmp / "mlflow.db"
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute(
                "select t.value, r.end_time from runs r join tags t on r.run_uuid = t.run_uuid "
                "where t.key = 'bma.trial_key' and r.status = 'FINISHED'"
            ).fetchall()
    except sqlite3.Error:
        return None
    return dict(rows)


def _command(tmp: Path) -> list[str]:
    return [sys.executable, str(RUN), str(tmp / "spec.yaml"), "--smoke", "--num-cpus", "1"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killed_driver_resumes_without_duplicates_or_retraining(tmp_path: Path, feature_cache: Path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    env = {**os.environ, "BMA_CACHE_DIR": str(feature_cache), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(_command(tmp_path), cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.time() + 300
        finished_before: dict[str, int] = {}
        while time.time() < deadline:
            done = _finished_trials(tmp_path)
            if done and len(done) < 4:
                finished_before = done
                break
            assert driver.poll() is None, f"driver exited early:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
            time.sleep(0.5)
        assert finished_before, "no trial finished within 300 s"
        driver.send_signal(signal.SIGKILL)  # the driver alone, as a crashed or killed login session would
        driver.wait(timeout=30)
    finally:
        _kill_group(driver)
        log.close()

    # the resumed driver follows another metric: its own progress view runs, not the one Tune pickled
    second = subprocess.run(_command(tmp_path) + ["--metric", "loss/total"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=420)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming study resume-smoke" in second.stdout
    progress = [line for line in second.stdout.splitlines() if line.startswith("[") and " done " in line]
    assert progress and all("best loss/total" in line for line in progress), second.stdout[-2000:]
    assert "done 4/4" in progress[-1] and re.search(r"best loss/total \d+\.\d{4}$", progress[-1]), progress[-1]

    runs = _trial_runs(tmp_path)
    keys = [r.data.tags["bma.trial_key"] for r in runs]
    assert len(runs) == 4 and len(set(keys)) == 4, f"expected one run per trial, got {len(runs)} runs for {len(set(keys))} trials"
    assert all(r.info.status == "FINISHED" and r.data.tags["bma.status"] == "finished" for r in runs)
    client = _client(tmp_path)
    for run in runs:
        key = run.data.tags["bma.trial_key"]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss/total")]
        assert sorted(steps) == [1, 2, 3], f"{run.info.run_name}: epochs logged {steps}"
        if key in finished_before:  # finished before the kill: untouched by the resumed study
            assert run.info.end_time == finished_before[key], f"{run.info.run_name} was trained again"
            assert run.data.tags["bma.attempts"] == "1"
    parents = client.search_runs([runs[0].info.experiment_id], "tags.`bma.role` = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
