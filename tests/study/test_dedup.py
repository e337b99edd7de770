"""No trial runs twice: trials whose effective configurations are equal (bma.config.VARIANT_IGNORES) are trained
once, recorded once in MLflow, and counted in every cell that contains them.

The declaration is checked against the trainer (two unimodal trials differing only in ignored settings give the
same metrics), the counts against the shipped specs, and the engine end to end on a four-point grid."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bma.config import VARIANT_IGNORES, TrialConfig, effective_config
from study.spec import load_spec, parse_spec
from tests.core.conftest import core_cache, full_data, mirror, small_data, tiny_cfg  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "study" / "run.py"


def test_paper_grid_has_1305_distinct_trials():
    spec = load_spec(REPO / "study" / "specs" / "paper.yaml")
    distinct = spec.distinct_trials()
    assert spec.n_points == 1944 and len(distinct) == 1305
    # the 648 unimodal grid points are 9 trials (3 sizes x 3 seeds): memory_slots, tau_m and tau_l are not read, and
    # the 4 pairing ratios of one size give the same single-sample pools; each is shared by 3 x 3 x 2 x 4 = 72 cells
    unimodal = [t for t in distinct if t.effective["model.variant"] == "unimodal"]
    assert len(unimodal) == 9 and {len(t.members) for t in unimodal} == {72}
    assert all(len(t.members) == 1 for t in distinct if t.effective["model.variant"] != "unimodal")


def test_unimodal_reads_its_pool_sizes_not_their_split_into_pairs():
    """A unimodal trial reads how many samples each modality's single-sample pool holds (pairs + unpaired), not
    which of them are pairs: across pairing ratios at one training size it is one trial
    (tests/core/test_common_random_numbers.py shows the trainer computes the same thing)."""
    for path in ("regime.pairing_ratio", "regime.pairs", "regime.unpaired_images", "regime.unpaired_sounds",
                 "regime.train_size", "regime.seed"):
        assert path not in VARIANT_IGNORES["unimodal"]
    a = TrialConfig().with_updates(variant="unimodal", pairing_ratio=0.1)
    assert effective_config(a) == effective_config(a.with_updates(pairing_ratio=0.5))
    assert effective_config(a) == effective_config(a.with_updates(pairs=7, unpaired_images=1993, unpaired_sounds=1993))
    assert effective_config(a) != effective_config(a.with_updates(train_size=1000))
    assert effective_config(a) != effective_config(a.with_updates(pairs=7, unpaired_images=2500, unpaired_sounds=1993))
    bma = a.with_updates(variant="bma")
    assert effective_config(bma) != effective_config(bma.with_updates(pairing_ratio=0.5))
    paired = TrialConfig().with_updates(variant="paired_only", **{"loss.w_unpair": 0.0})
    assert effective_config(paired) == effective_config(paired.with_updates(**{"loss.w_unpair": 2.0}))
    assert effective_config(paired) != effective_config(paired.with_updates(tau_l=0.2))


def test_ignored_settings_do_not_change_a_unimodal_trial(tiny_cfg, small_data):  # noqa: F811
    import torch

    from bma.trainer import fit

    a = tiny_cfg.with_updates(variant="unimodal")
    b = a.with_updates(memory_slots=16, tau_m=0.5, tau_l=0.2, addressing="topk", **{
        "model.top_k": 4, "loss.w_pair": 2.0, "loss.w_unpair": 0.5, "loss.pair_negatives": "all",
        "optim.lr_control": "cycle_plateau", "loss.w_infomax": 1.0, "model.slot_reseed_every": 5})
    assert effective_config(a) == effective_config(b)
    weights: list[dict] = []

    def keep(epoch, metrics, state):
        weights.append({k: v.clone() for k, v in state.model.state_dict().items()
                        if k.startswith(("image_encoder", "sound_encoder", "classify", "ssl"))})

    ra, rb = fit(a, keep, data=small_data), fit(b, keep, data=small_data)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the same encoders, bit for bit
    # Every computed value is equal except three that are not results of training: train/tau_m and
    # train/lr_control_* echo the setting, time/* is wall clock, and loss/val_pair* is L_pair of the unimodal
    # model's projection heads (never trained: no L_pair) read out at the cell's tau_l. The shared trial reports
    # that read-out at the default tau_l (docs/spec.md, "Distinct trials").
    echo = ("time/", "train/tau_m", "train/lr_control", "loss/val_pair")
    computed = [k for k in ra.final if not k.startswith(echo)]
    assert len(computed) > 20 and set(computed) <= set(rb.final)
    for k in computed:
        x, y = ra.final[k], rb.final[k]
        assert (math.isnan(x) and math.isnan(y)) or x == y, f"{k}: {x} vs {y}"


def test_validate_only_says_points_and_distinct_trials(tmp_path):
    (tmp_path / "s.yaml").write_text(SPEC)
    proc = subprocess.run([sys.executable, str(RUN), str(tmp_path / "s.yaml"), "--smoke", "--validate-only"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "BMA_CACHE_DIR": str(tmp_path / "cache")})
    # the data check needs the mirror; the first line is printed before it
    assert proc.stdout.splitlines()[0].startswith("study dedup-smoke: 4 grid points, 3 distinct trials"), proc.stdout


def test_twin_grid_points_are_still_refused():
    """Two grid points with equal *whole* configurations (a value spelled twice) remain an error."""
    raw = {"name": "x", "grid": {"tau_m": [0.1, 0.10]}}
    with pytest.raises(Exception, match="repeated values"):
        parse_spec(raw)


SPEC = """
name: dedup
data: {image: {source: mnist}, sound: {source: fsdd}}
grid:
  variant: [unimodal, bma]
  memory_slots: [16, 32]
trial: {train_size: 200, batch_size: 64, eval: {info_every: 0}}
resources: {cpu: 1}
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_shared_trial_trained_once_and_counted_in_every_cell(tmp_path: Path, feature_cache: Path):
    from mlflow.tracking import MlflowClient

    from analysis.collect import collect_study

    (tmp_path / "s.yaml").write_text(SPEC)
    env = {**os.environ, "BMA_CACHE_DIR": str(feature_cache)}
    proc = subprocess.run([sys.executable, str(RUN), str(tmp_path / "s.yaml"), "--smoke", "--num-cpus", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "4 grid points, 3 distinct trials" in proc.stdout
    assert "3 of 3 trials finished" in proc.stdout
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("dedup-smoke")
    runs = client.search_runs([exp.experiment_id], "tags.`bma.role` = 'trial'")
    assert len(runs) == 3  # the unimodal trial once, not once per memory size
    uni = [r for r in runs if r.data.tags["bma.variant"] == "unimodal"]
    assert len(uni) == 1 and uni[0].data.tags["bma.shared"] == "2"
    assert uni[0].data.params["model.memory_slots"] == "64"  # the effective configuration: the default

    data = collect_study("dedup-smoke", uri)
    used = data.used
    assert len(used) == 4  # every cell has its trial
    cells = used[used["model.variant"] == "unimodal"]
    assert sorted(cells["model.memory_slots"]) == [16, 32] and set(cells["shared"]) == {2}
    assert cells["run_id"].nunique() == 1
    assert (used[used["model.variant"] == "bma"]["shared"] == 1).all()
    metric = "final/loss/total"
    assert cells[metric].nunique() == 1

    # resume of the finished study trains nothing and records nothing new
    again = subprocess.run([sys.executable, str(RUN), str(tmp_path / "s.yaml"), "--smoke", "--num-cpus", "2"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(client.search_runs([exp.experiment_id], "tags.`bma.role` = 'trial'")) == 3
