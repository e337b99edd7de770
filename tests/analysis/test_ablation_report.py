"""The ablation report on a store written by the real writer (TrialTracker), with known per-arm effects."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.ablation import main, report
from bma import record as R
from tests.analysis.tracker_store import write_study

ARMS = {"bma": {}, "variance": {"loss.w_variance": 1.0}, "reseed": {"model.slot_reseed_every": 50}}
SEEDS = (0, 1, 2, 3)


def metrics_of(arm: str, seed: int, shift: float = 0.0) -> dict:
    noise = 0.001 * seed * (seed % 2 * 2 - 1)  # differs per seed, so paired differences vary a little
    return {
        "acc/sound_probe_h/k5": 0.5 + 0.01 * seed + shift + (0.05 + noise if arm == "variance" else 0.0),
        "acc/image_probe_h/k5": 0.6 + 0.01 * seed,
        "info/I_hv_Y/probe_bound": 1.0 + 0.1 * seed + (0.3 + noise if arm == "variance" else 0.0),
        "info/eff_slots_v/exact": 10.0 + seed + (0.01 * (-1) ** seed if arm == "reseed" else 0.0),  # no move
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    trials = [({"variant": "bma", "seed": seed, **settings}, metrics_of(arm, seed), {R.ARM: arm})
              for arm, settings in ARMS.items() for seed in SEEDS]
    return write_study(tmp_path_factory.mktemp("ablation-store"), "abl", trials, axes=("model.variant", R.ARM))


def test_ablation_report_finds_what_moved(store, tmp_path):
    tables = report("abl", store, tmp_path / "r")
    t1 = tables["table1"].set_index("arm")
    assert t1.loc["variance", "switch"] == "loss.w_variance"
    assert t1.loc["variance", "target delta"] == pytest.approx(0.3, abs=0.01)
    assert t1.loc["variance", "target moved"] == "yes, up" and t1.loc["variance", "sound k5 moved"] == "yes, up"
    assert t1.loc["variance", "image k5 moved"] == "n/a (no test)"  # all differences zero
    assert t1.loc["reseed", "target moved"] == "inconclusive"  # no delta declared: "no move" is not "no effect"
    vs = tables["vs_baseline"]
    row = vs[(vs["arm"] == "variance") & (vs["metric"] == "acc/sound_probe_h/k5")].iloc[0]
    assert row["n"] == 4 and row["p_holm"] >= row["p"] and row["verdict"] == "gain"
    assert (tmp_path / "r" / "table1.md").read_text().startswith("| arm")
    md = (tmp_path / "r" / "vs_baseline.md").read_text()
    # two non-baseline arms, one cell: 2 rows per metric; a zero-variance contrast has no test and is not counted
    # (reseed's sound probe, both arms' image probe)
    assert "Holm over 1 test within `acc/sound_probe_h/k5`" in md
    assert "Holm over 0 tests within `acc/image_probe_h/k5`" in md
    fam = vs[vs["family"] == "info/eff_slots_v/exact"]
    assert len(fam) == 2 and set(fam["family_size"]) == {1}


def test_ablation_with_a_delta_says_equivalent(store, tmp_path):
    tables = report("abl", store, tmp_path / "r", sesoi=["info/eff_slots_v/*=0.5"])
    t1 = tables["table1"].set_index("arm")
    # reseed's eff_slots differences: +0.01, -0.01, +0.01, -0.01: mean 0, far inside +-0.5
    assert t1.loc["reseed", "target moved"] == "no (equivalent within delta)"


def test_ablation_cli_names_a_missing_baseline(store, tmp_path, capsys):
    assert main(["--study", "abl", "--tracking-uri", store, "--baseline", "none", "--out", str(tmp_path / "x")]) == 2
    assert "baseline arm 'none'" in capsys.readouterr().err


def test_ablation_refuses_a_folder_it_did_not_write(store, tmp_path, capsys):
    thesis = tmp_path / "mythesis"
    thesis.mkdir()
    (thesis / "arms.csv").write_text("my arms\n")
    assert main(["--study", "abl", "--tracking-uri", store, "--out", str(thesis)]) == 2
    assert "was not written by `python -m analysis.ablation`" in capsys.readouterr().err
    assert [p.name for p in thesis.iterdir()] == ["arms.csv"] and (thesis / "arms.csv").read_text() == "my arms\n"


# -- seeds are counted as seeds, and paired within a cell ---------------------------------------------------------


@pytest.fixture(scope="module")
def two_cell_store(tmp_path_factory):
    """One seed, two cells (pairs 50 and 200): the variance arm moves the sound probe by +0.05 at 50 pairs only."""
    trials = []
    for arm, settings in ARMS.items():
        for pairs in (50, 200):
            m = metrics_of(arm if pairs == 50 else "bma", 0, shift=0.1 * (pairs == 200))
            trials.append(({"variant": "bma", "seed": 0, "pairs": pairs, **settings}, m, {R.ARM: arm}))
    return write_study(tmp_path_factory.mktemp("ablation-1seed"), "abl1", trials,
                       axes=("model.variant", "regime.pairs", R.ARM))


def test_a_one_seed_study_has_one_seed_per_cell_and_no_interval(two_cell_store, tmp_path):
    tables = report("abl1", two_cell_store, tmp_path / "r")
    arms = tables["arms"]
    assert set(arms["n_seeds"]) == {1}  # not 2: the two cells of an arm are not two seeds
    assert arms["ci95_low"].isna().all()
    assert set(arms["regime.pairs"]) == {50, 200}
    vs = tables["vs_baseline"]
    sound = vs[(vs["arm"] == "variance") & (vs["metric"] == "acc/sound_probe_h/k5")].set_index("regime.pairs")
    # paired by seed within each cell: +0.05 at 50 pairs, 0 at 200 (not their mean, 0.025, over "2 seeds")
    assert sound.loc[50, "estimate"] == pytest.approx(0.05) and sound.loc[200, "estimate"] == pytest.approx(0.0)
    assert (sound["n"] == 1).all() and (sound["verdict"] == "undetermined").all()
    assert sound["note"].str.contains("1 seed: at least 3 needed").all()
    assert sound["p"].isna().all() and math.isnan(sound.loc[50, "ci95_low"])


# -- an arm whose trials all failed ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failed_arm_store(tmp_path_factory):
    trials = [({"variant": "bma", "seed": seed, **settings}, metrics_of(arm, seed), {R.ARM: arm})
              for arm, settings in ARMS.items() for seed in SEEDS]
    trials += [({"variant": "bma", "seed": seed, "loss.w_infomax": 1.0}, {}, {R.ARM: "infomax"},
                "ValueError: NaN loss at step 3") for seed in SEEDS]
    return write_study(tmp_path_factory.mktemp("ablation-failed"), "ablfail", trials, axes=("model.variant", R.ARM))


def test_an_arm_whose_trials_all_failed_is_said_not_dropped(failed_arm_store, tmp_path, capsys):
    assert main(["--study", "ablfail", "--tracking-uri", failed_arm_store, "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "arm 'infomax': no finished trial (4 failed (RuntimeError: ValueError: NaN loss at step 3 x4))" in err
    arms = pd.read_csv(tmp_path / "r" / "arms.csv")
    inf = arms[arms["arm"] == "infomax"]
    assert len(inf) and (inf["n_seeds"] == 0).all() and inf["note"].str.contains("4 failed").all()
    vs = pd.read_csv(tmp_path / "r" / "vs_baseline.csv")
    inf = vs[vs["arm"] == "infomax"]
    assert len(inf) and (inf["n"] == 0).all() and inf["note"].str.contains("NaN loss").all()
    t1 = pd.read_csv(tmp_path / "r" / "table1.csv").set_index("arm")
    assert t1.loc["infomax", "switch"] == "loss.w_infomax"
    assert t1.loc["infomax", "sound k5 moved"] == "n/a (no finished trial)"
    assert "infomax" in (tmp_path / "r" / "vs_baseline.md").read_text()


def test_an_unset_setting_is_no_switch():
    """An arm that sets model.tau_m_final leaves it unset (NaN) in every other arm: unset on both sides is no change
    (pandas 3 keeps NaN through astype(str), and NaN != NaN made every arm an annealing arm)."""
    from analysis.ablation import arm_switches

    runs = pd.DataFrame({"arm": ["bma", "anneal", "variance"], "model.tau_m_final": [math.nan, 0.03, math.nan],
                         "loss.w_variance": [0.0, 0.0, 1.0]})
    assert arm_switches(runs, "bma") == {"anneal": ["model.tau_m_final"], "bma": [],
                                         "variance": ["loss.w_variance"]}
