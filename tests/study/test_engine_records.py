"""One smoke study of the shipped quick spec through the real engine (embedded Ray, sqlite MLflow), then:
what MLflow holds for every trial (params, per-epoch histories of every information quantity, tags, artifacts),
and the analysis export of it, read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bma.config import TrialConfig
from bma import record as R

REPO = Path(__file__).resolve().parents[2]
STUDY = "quick-smoke"

# Every quantity the trainer streams for a memory variant (docs/information.md); the estimator part is checked
# separately, since which estimators apply depends on the sample size.
MEMORY_QUANTITIES = [
    "H_Wv", "H_Ws", "H_Mv", "H_Ms", "eff_slots_v", "eff_slots_s", "I_slot_class_v", "I_slot_class_s",
    "I_fv_fsmem", "I_fs_fvmem", "H_fsmem_given_fv", "I_hv_Y", "I_hv_Xv_Xs", "I_zv_zs", "I_S_Sprime",
    "dH_S_Ipseudo", "dI_S_Ipseudo",
]


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory, feature_cache):
    work = tmp_path_factory.mktemp("engine")
    spec = work / "quick.yaml"
    # The shipped spec, with the probes run every epoch so that a one-epoch smoke run records them.
    spec.write_text((REPO / "study" / "specs" / "quick.yaml").read_text() + "smoke: {eval: {info_every: 1}}\n")
    env = {**os.environ, "BMA_CACHE_DIR": str(feature_cache)}
    proc = subprocess.run([sys.executable, str(REPO / "study" / "run.py"), str(spec), "--smoke"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, proc


def _runs(work: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name(STUDY)
    return client, client.search_runs([exp.experiment_id], "tags.`bma.role` = 'trial'")


@pytest.mark.slow
def test_every_trial_has_one_complete_run(smoke_study):
    work, proc = smoke_study
    # 8 grid points, 6 trials: unimodal's two pairing ratios are one trial per seed (common random numbers)
    assert "6 of 6 trials finished" in proc.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{work / 'mlflow.db'}" in proc.stdout
    client, runs = _runs(work)
    assert len(runs) == 6
    assert len({r.data.tags["bma.trial_key"] for r in runs}) == 6
    for run in runs:
        assert run.info.status == "FINISHED"
        # Every trial-config field is a param, and the run rebuilds its config.
        cfg = TrialConfig.from_flat(run.data.params)
        assert set(run.data.params) == set(cfg.to_flat())
        assert run.data.tags["bma.variant"] == cfg.model.variant
        assert run.data.tags["bma.seed"] == str(cfg.regime.seed)
        assert run.data.tags["bma.git_commit"]
        assert run.data.tags["bma.device"] == "cpu"
        assert run.data.tags["mlflow.parentRunId"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"checkpoint", "metrics.json"} <= artifacts
        assert "curves.png" not in artifacts  # quick.yaml leaves trial_plots off: MLflow's UI draws the curves
        # every metric a trial logs is in the record's registry, for its variant
        unregistered = [m for m in run.data.metrics
                        if (f := R.metric_family(m)) is None or cfg.model.variant not in f.variants]
        assert not unregistered, f"{run.info.run_name}: not in bma/record.py METRICS: {unregistered}"
    # run names are unique in the study and show the study's axes, recorded on the parent run
    assert len({r.info.run_name for r in runs}) == 6
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    axes = R.read_axes(parent.data.tags)
    assert axes and "regime.pairing_ratio" in axes and R.SEED_KEY not in axes
    assert all("pairing_ratio=" in r.info.run_name for r in runs)


@pytest.mark.slow
def test_information_quantities_are_streamed(smoke_study):
    work, _ = smoke_study
    client, runs = _runs(work)
    bma = [r for r in runs if r.data.tags["bma.variant"] == "bma"]
    unimodal = [r for r in runs if r.data.tags["bma.variant"] == "unimodal"]
    assert bma and unimodal
    for run in bma:
        names = [k for k in run.data.metrics if k.startswith("info/")]
        for quantity in MEMORY_QUANTITIES:
            assert any(n.startswith(f"info/{quantity}/") for n in names), f"{quantity} missing from {run.info.run_name}"
        history = client.get_metric_history(run.info.run_id, "info/H_Wv/exact")
        assert [m.step for m in history] == [1]
        assert run.data.metrics["info/n_samples"] == 300  # study.spec.SMOKE_DEFAULTS
    for run in unimodal:  # no memory: no memory quantities, but the representation ones are there
        names = [k for k in run.data.metrics if k.startswith("info/")]
        assert not any(n.startswith("info/H_Wv/") for n in names)
        assert any(n.startswith("info/I_hv_Y/") for n in names)


@pytest.mark.slow
def test_analysis_export_reads_back(smoke_study, tmp_path):
    work, _ = smoke_study
    out = tmp_path / "tables"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "export", "--study", STUDY, "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}",
         "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 8  # one row per grid point: a shared unimodal trial counts in both of its cells
    summary_csv = pd.read_csv(out / "summary.csv")
    summary_pq = pd.read_parquet(out / "summary.parquet")
    assert len(summary_csv) == len(summary_pq) == 4  # 2 pairing ratios x 2 variants, seeds aggregated
    assert (summary_pq["n_seeds"] == 2).all()
    assert {"final/acc/sound_probe_h_mean", "final/acc/sound_probe_h_ci95_low", "final/acc/sound_probe_h_ci95_high"} <= set(summary_pq.columns)
    markdown = (out / "summary.md").read_text()
    latex = (out / "summary.tex").read_text()
    for _, row in summary_pq.iterrows():
        for text in (markdown, latex):
            assert row["model.variant"] in text
            assert f"{row['regime.pairing_ratio']:g}" in text
    compare = pd.read_parquet(out / "compare.parquet")
    assert set(compare["variant"]) == {"bma"}
    assert any((out / "plots").glob("*.png"))
