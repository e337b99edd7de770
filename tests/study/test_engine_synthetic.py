"""The study engine end to end on a checkout without the data mirror: a two-trial, one-epoch study of synthetic
features (tests/synthetic_data.py) through study/run.py's run_study (embedded Ray, SQLite MLflow in tmp_path)."""

from __future__ import annotations

import math

import pytest

from tests.synthetic_data import synthetic_trial_data

SPEC = """
name: synthetic
data: {image: {source: mnist}, sound: {source: fsdd}}
grid:
  variant: [unimodal, bma]
trial:
  train_size: 100
  pairing_ratio: 0.2
  batch_size: 50
  epochs: 1
  regime: {val_per_class: 5}
  model: {memory_slots: 16, encoder_width: 4, feature_dim: 32, projection_dim: 16}
  eval: {eval_every: 1, info_every: 0, probe_max_iter: 30}
resources: {cpu: 1}
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("pool", ["in_memory", "mapped"])
def test_a_study_of_synthetic_data_records_finished_runs(tmp_path, monkeypatch, pool):
    """``mapped``: the features memory-mapped (as a pool above the in-memory threshold is), so they reach the
    trials through Ray's object store as references to their files, and the trials gather batches from the map."""
    from mlflow.tracking import MlflowClient

    from bma.config import TrialConfig
    from study.run import parse_args, run_study
    from study.spec import load_spec
    from tests.conftest import mirror_available
    from trainables.bma_trainable import data_key

    # An empty mirror and no downloads: a trial that reached for MNIST or FSDD would fail, not fetch them.
    (tmp_path / "empty-mirror").mkdir()
    monkeypatch.setenv("BMA_DATA_MIRROR", str(tmp_path / "empty-mirror"))
    monkeypatch.setenv("BMA_OFFLINE", "1")
    monkeypatch.setenv("BMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert not mirror_available()
    (tmp_path / "spec.yaml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.yaml")
    # What study/run.py's prepare_data builds, {data_key: TrialData}, with the synthetic data for every key.
    synthetic = synthetic_trial_data()
    if pool == "mapped":
        from tests.synthetic_data import mapped_trial_data

        monkeypatch.setenv("BMA_IN_MEMORY_MAX_MB", "0")  # forwarded to the trials by run_study
        (tmp_path / "pools").mkdir()
        synthetic = mapped_trial_data(synthetic, tmp_path / "pools")
    datas = {data_key(TrialConfig.from_flat(flat)): synthetic for flat in spec.trial_flats()}
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "ray_results")
    args = parse_args([str(tmp_path / "spec.yaml"), "--num-cpus", "2"])
    rc = run_study(spec, spec.name, spec.fingerprint(), (datas, []), tracking_uri, storage,
                   tmp_path / "ray_results" / spec.name, args, spec.distinct_trials())
    assert rc == 0

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(spec.name)
    runs = client.search_runs([experiment.experiment_id], "tags.`bma.role` = 'trial'")
    assert sorted(r.data.tags["bma.variant"] for r in runs) == ["bma", "unimodal"]
    for run in runs:
        assert run.info.status == "FINISHED", run.info.run_name
        metrics = run.data.metrics
        assert {"loss/total", "loss/encoder", "acc/image_probe_f", "acc/sound_probe_h"} <= set(metrics)
        assert ("loss/unpair" in metrics) == (run.data.tags["bma.variant"] == "bma")
        not_finite = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        assert not not_finite, not_finite
