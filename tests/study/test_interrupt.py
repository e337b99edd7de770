"""Ctrl-C is not completion: a smoke study whose driver gets SIGINT once a trial has logged a round exits 130 and
says how to resume; the cut-off trial's MLflow run is marked interrupted (bma/record.py STATUSES, MLflow KILLED),
not finished and not stopped early, and the analysis does not count it; rerunning the same command resumes it from
its checkpoint into the same run and finishes the study with one run per trial and each round logged once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bma import record as R

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "study" / "run.py"
EPOCHS = 8

SPEC = f"""
name: interrupt
data: {{image: {{source: mnist}}, sound: {{source: fsdd}}}}
grid:
  variant: [unimodal, bma]
trial: {{train_size: 300, batch_size: 32, eval: {{info_every: 0, eval_every: 100}}}}
resources: {{cpu: 1}}
smoke: {{epochs: {EPOCHS}}}
"""


def _rounds_logged(db: Path) -> dict[str, int]:
    """{trial run id: rounds of loss/total logged}, read-only with plain sqlite3 (never races the driver's own
    creation of the store); empty while the store is not there yet."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            rows = con.execute("select run_uuid, count(*) from metrics where key = 'loss/total' group by run_uuid")
            return dict(rows.fetchall())
    except sqlite3.Error:
        return {}


def _command(tmp: Path) -> list[str]:
    return [sys.executable, str(RUN), str(tmp / "spec.yaml"), "--smoke", "--num-cpus", "1"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigint_marks_trials_interrupted_and_the_rerun_resumes_them(tmp_path: Path, feature_cache: Path):
    from mlflow.tracking import MlflowClient

    (tmp_path / "spec.yaml").write_text(SPEC)
    env = {**os.environ, "BMA_CACHE_DIR": str(feature_cache), "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    db = tmp_path / "mlflow.db"
    driver = subprocess.Popen(_command(tmp_path), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 400
        cut = None
        while cut is None and time.monotonic() < deadline:
            assert driver.poll() is None, f"driver exited before a round was logged:\n{driver.stdout.read()[-3000:]}"
            cut = next((run for run, n in _rounds_logged(db).items() if 1 <= n < EPOCHS), None)
            time.sleep(0.2)
        assert cut is not None, "no trial logged a round within 400 s"
        driver.send_signal(signal.SIGINT)  # the driver alone, as Ctrl-C in a terminal reaches it
        out, _ = driver.communicate(timeout=180)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    assert driver.returncode == 130, out[-3000:]
    assert "interrupted" in out and "resume:" in out, out[-3000:]
    assert "done 2/2" not in out and "2 of 2 trials finished" not in out, out[-3000:]
    client = MlflowClient(f"sqlite:///{db}")
    run = client.get_run(cut)
    assert run.info.status == R.MLFLOW_INTERRUPTED and run.data.tags[R.STATUS] == R.STATUS_INTERRUPTED, \
        (run.info.status, run.data.tags.get(R.STATUS))
    assert R.STOPPED_EARLY not in run.data.tags
    parent = client.get_run(run.data.tags[R.PARENT])
    assert parent.info.status == R.MLFLOW_INTERRUPTED
    # the analysis never counts it as a result
    from analysis.collect import collect_study

    collected = collect_study("interrupt-smoke", f"sqlite:///{db}")
    row = collected.runs.set_index("run_id").loc[cut]
    assert row["state"] == R.STATUS_INTERRUPTED and not row["used"], row.to_dict()

    second = subprocess.run(_command(tmp_path), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming study interrupt-smoke" in second.stdout
    runs = client.search_runs([run.info.experiment_id], f"tags.`{R.ROLE}` = '{R.ROLE_TRIAL}'")
    keys = [r.data.tags[R.TRIAL_KEY] for r in runs]
    assert len(runs) == 2 and len(set(keys)) == 2, f"expected one run per trial, got {len(runs)} for {len(set(keys))}"
    assert all(r.info.status == "FINISHED" and r.data.tags[R.STATUS] == R.STATUS_FINISHED for r in runs)
    assert not any(R.STOPPED_EARLY in r.data.tags for r in runs)
    assert all(r.data.tags[R.THREADS] == "1" for r in runs), "resources.cpu 1: one torch thread, recorded"
    resumed = client.get_run(cut)
    assert resumed.data.tags[R.ATTEMPTS] == "2", "the interrupted trial resumed into its own run"
    for r in runs:
        steps = sorted(m.step for m in client.get_metric_history(r.info.run_id, "loss/total"))
        assert steps == list(range(1, EPOCHS + 1)), f"{r.info.run_name}: rounds logged {steps}"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_driver_that_fails_mid_study_ends_its_parent_run_failed(tmp_path, monkeypatch):
    """Any failure of the driver once the parent run exists (here Tune itself raising, as its grace_period
    assertion did) ends the parent run FAILED, never RUNNING."""
    from mlflow.tracking import MlflowClient
    from ray import tune

    from bma.config import TrialConfig
    from study.run import parse_args, run_study
    from study.spec import load_spec
    from tests.study.test_engine_synthetic import SPEC as SYNTHETIC
    from tests.synthetic_data import synthetic_trial_data
    from trainables.bma_trainable import data_key

    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SYNTHETIC)
    spec = load_spec(tmp_path / "spec.yaml")
    datas = {data_key(TrialConfig.from_flat(f)): synthetic_trial_data() for f in spec.trial_flats()}

    def broken_fit(self):
        raise AssertionError("grace_period must be <= max_t!")

    monkeypatch.setattr(tune.Tuner, "fit", broken_fit)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = parse_args([str(tmp_path / "spec.yaml"), "--num-cpus", "1"])
    with pytest.raises(AssertionError, match="grace_period"):
        run_study(spec, spec.name, spec.fingerprint(), (datas, []), uri, str(tmp_path / "ray_results"),
                  tmp_path / "ray_results" / spec.name, args, spec.distinct_trials())
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(spec.name)
    parents = client.search_runs([experiment.experiment_id], f"tags.`{R.ROLE}` = '{R.ROLE_STUDY}'")
    assert [p.info.status for p in parents] == ["FAILED"]
