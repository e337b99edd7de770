"""Issue 22 (red team): read-only commands never write. The analysis CLIs and study/reproduce.py open the store
through analysis/store.py: a missing store is refused, not created; a 0-byte or non-SQLite file is refused, not
migrated into MLflow's schema; an existing store is read through SQLite's read-only mode. Each case checks exit 2,
a message naming --tracking-uri, no traceback, and the store's bytes and mtime unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

COMMANDS = {
    "analysis export": [sys.executable, "-m", "analysis", "export", "--study", "s", "--out", "OUT"],
    "analysis.boost": [sys.executable, "-m", "analysis.boost", "--study", "s", "--out", "OUT"],
    "analysis.ablation": [sys.executable, "-m", "analysis.ablation", "--study", "s", "--out", "OUT"],
    "reproduce": [sys.executable, str(REPO / "study" / "reproduce.py"), "--study", "s"],
}
STORES = {  # what the file holds (None: no file), what the message says about it
    "missing": (None, "no MLflow store at"),
    "0-byte": (b"", "empty file, not an MLflow store"),
    "text": (b"experiment,metric\nboost,0.5\n", "not an SQLite database"),
}


def _snapshot(path: Path):
    return (path.read_bytes(), path.stat().st_mtime_ns) if path.exists() else None


@pytest.fixture(scope="module")
def real_store(tmp_path_factory) -> Path:
    """An MLflow store with one experiment (not the study the commands ask for)."""
    from mlflow.tracking import MlflowClient

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").create_experiment("another")
    return db


def _run(command: str, db: Path, out: Path):
    args = [a.replace("OUT", str(out)) for a in COMMANDS[command]] + ["--tracking-uri", f"sqlite:///{db}"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(args, cwd=db.parent, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
@pytest.mark.parametrize("store", list(STORES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_read_only_command_refuses_a_store_that_is_not_there_and_writes_nothing(tmp_path, command, store):
    content, said = STORES[store]
    db = tmp_path / "mlflow.db"
    if content is not None:
        db.write_bytes(content)
    before = _snapshot(db)
    proc = _run(command, db, tmp_path / "out")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert "--tracking-uri" in proc.stderr and said in proc.stderr, proc.stderr
    assert _snapshot(db) == before, "the store was created or changed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if content is None else ["mlflow.db"])


@pytest.mark.slow
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_read_only_command_leaves_an_existing_store_unchanged(tmp_path, real_store, command):
    before = _snapshot(real_store)
    proc = _run(command, real_store, tmp_path / "out")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "'s'" in proc.stderr or "--study s" in proc.stderr, proc.stderr  # no such study there
    assert _snapshot(real_store) == before, "the store was changed"


def test_reproduce_trains_with_the_thread_count_the_trial_ran_with(tmp_path, monkeypatch):
    """A float sum's order depends on torch's thread count: reproduce.py sets the trial's (its bma.torch_threads
    tag) before training, so a faithful rerun reports "same" instead of DIFFERS."""
    import torch
    from mlflow.tracking import MlflowClient

    import bma.trainer
    from bma.config import TrialConfig
    from bma import record as R
    from study import reproduce

    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.create_experiment("s")
    flat = TrialConfig().to_flat()
    run = client.create_run(experiment, tags={R.ROLE: R.ROLE_TRIAL, R.THREADS: "3"})
    for key, value in flat.items():
        client.log_param(run.info.run_id, key, R.param_text(value))
    client.log_metric(run.info.run_id, "loss/total", 1.5)
    client.set_terminated(run.info.run_id, "FINISHED")
    seen = []

    class Result:
        final = {"loss/total": 1.5}

    def fake_fit(cfg):
        seen.append(torch.get_num_threads())
        return Result()

    monkeypatch.setattr(bma.trainer, "fit", fake_fit)
    before = torch.get_num_threads()
    try:
        code = reproduce.main(["--study", "s", "--tracking-uri", f"sqlite:///{db}", "--metrics", "loss/total"])
    finally:
        torch.set_num_threads(before)
    assert code == 0 and seen == [3]
