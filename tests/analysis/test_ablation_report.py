"""The ablation report on a store written by the real writer (TrialTracker), with known per-arm effects."""

from __future__ import annotations

import pytest

from analysis.ablation import main, report
from study import record as R
from tests.analysis.tracker_store import write_study

ARMS = {"bma": {}, "variance": {"loss.w_variance": 1.0}, "reseed": {"model.slot_reseed_every": 50}}
SEEDS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    def trials():
        for arm, settings in ARMS.items():
            for seed in SEEDS:
                noise = 0.001 * seed * (seed % 2 * 2 - 1)  # differs per seed, so paired differences vary a little
                metrics = {
                    "acc/sound_probe_h/k5": 0.5 + 0.01 * seed + (0.05 + noise if arm == "variance" else 0.0),
                    "acc/image_probe_h/k5": 0.6 + 0.01 * seed,
                    "info/I_hv_Y/probe_bound": 1.0 + 0.1 * seed + (0.3 + noise if arm == "variance" else 0.0),
                    "info/eff_slots_v/exact": 10.0 + seed + (0.01 * (-1) ** seed if arm == "reseed" else 0.0),  # no move
                }
                yield {"variant": "bma", "seed": seed, **settings}, metrics, {R.ARM: arm}

    return write_study(tmp_path_factory.mktemp("ablation-store"), "abl", trials(), axes=("model.variant", R.ARM))


def test_ablation_report_finds_what_moved(store, tmp_path):
    tables = report("abl", store, tmp_path)
    t1 = tables["table1"].set_index("arm")
    assert t1.loc["variance", "switch"] == "loss.w_variance"
    assert t1.loc["variance", "target delta"] == pytest.approx(0.3, abs=0.01)
    assert t1.loc["variance", "target moved"] == "yes" and t1.loc["variance", "sound k5 moved"] == "yes"
    assert t1.loc["variance", "image k5 moved"] == "n/a (no test)"  # all differences zero
    assert t1.loc["reseed", "target moved"] == "no"
    vs = tables["vs_baseline"]
    row = vs[(vs["arm"] == "variance") & (vs["metric"] == "acc/sound_probe_h/k5")].iloc[0]
    assert row["n_pairs"] == 4 and row["p_ttest_holm"] >= row["p_ttest"]
    assert (tmp_path / "table1.md").read_text().startswith("| arm")


def test_ablation_cli_names_a_missing_baseline(store, tmp_path, capsys):
    assert main(["--study", "abl", "--tracking-uri", store, "--baseline", "none", "--out", str(tmp_path)]) == 2
    assert "baseline arm 'none'" in capsys.readouterr().err
