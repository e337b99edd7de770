"""The boost report on a store written by the real writer (TrialTracker) with known metric values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.boost import main, report
from tests.analysis.tracker_store import write_study

POOLS = (0, 1000, 10_000)
PAIRS = (50, 200)
SEEDS = (0, 1, 2)
VARIANTS = ("unimodal", "bma")


def accuracy(variant: str, pairs: int, pool: int, seed: int) -> float:
    """Known truth: only bma gains from the pool (0.02 per 1,000 unpaired images); pairs help paired variants."""
    value = 0.5 + 0.01 * seed
    if variant != "unimodal":
        value += 0.0002 * pairs
    if variant == "bma":
        value += 0.02 * pool / 1000
    return value


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    def trials():
        for variant in VARIANTS:
            for pairs in PAIRS:
                for pool in POOLS:
                    for seed in SEEDS:
                        acc = accuracy(variant, pairs, pool, seed)
                        metrics = {"acc/sound_probe_h": acc + 0.1, "acc/sound_probe_h/k5": acc,
                                   "acc/image_probe_h/k5": 0.7, "loss/total": 1.0}
                        if variant != "unimodal":
                            metrics["info/H_Wv/exact"] = 1.0 + pool / 10_000
                        flat = {"variant": variant, "pairs": pairs, "unpaired_images": pool, "unpaired_sounds": 500,
                                "seed": seed, "steps": 10}
                        yield flat, metrics, {}

    return write_study(tmp_path_factory.mktemp("boost-store"), "boostlike", trials(),
                       axes=("model.variant", "regime.pairs", "regime.unpaired_images"))


def test_report_recovers_the_known_effects(store, tmp_path):
    tables = report("boostlike", store, tmp_path)
    curves = tables["curves"]
    row = curves[(curves["metric"] == "acc/sound_probe_h/k5") & (curves["model.variant"] == "bma")
                 & (curves["regime.pairs"] == 50) & (curves["regime.unpaired_images"] == 10_000)]
    assert len(row) == 1 and row["n_seeds"].item() == 3
    assert row["mean"].item() == pytest.approx(accuracy("bma", 50, 10_000, 1))
    # seeds 0,1,2 add 0, .01, .02: sd 0.01, t(0.975, 2) = 4.303 -> half-width 4.303 * 0.01 / sqrt(3)
    assert row["ci95_high"].item() - row["mean"].item() == pytest.approx(4.303 * 0.01 / np.sqrt(3), rel=1e-3)

    tests = tables["tests"]
    boost = tests[(tests["test"] == "pool 10000 - pool 0") & (tests["metric"] == "acc/sound_probe_h/k5")
                  & (tests["regime.pairs"] == 50)]
    by_variant = boost.set_index("model.variant")["mean_diff"]
    assert by_variant["bma"] == pytest.approx(0.2) and by_variant["unimodal"] == pytest.approx(0.0)
    vs = tests[(tests["test"] == "bma - unimodal") & (tests["metric"] == "acc/sound_probe_h/k5")
               & (tests["regime.unpaired_images"] == 0) & (tests["regime.pairs"] == 200)]
    assert vs["mean_diff"].item() == pytest.approx(0.04)
    assert (tests["p_ttest_holm"].dropna() >= tests["p_ttest"].dropna().loc[tests["p_ttest_holm"].dropna().index]).all()

    ex = tables["exchange"]
    bma = ex[(ex["variant"] == "bma") & (ex["metric"] == "acc/sound_probe_h/k5") & (ex["pool"] == "0-1000")]
    # dA/dP = 0.0002 per pair, dA/dU = 0.00002 per unpaired image -> 10 unpaired images per pair
    assert bma["unpaired_per_pair"].item() == pytest.approx(10.0)
    uni = ex[(ex["variant"] == "unimodal") & (ex["metric"] == "acc/sound_probe_h/k5")]
    assert uni["unpaired_per_pair"].isna().all()  # neither kind of sample helps it: no rate
    info = tables["information"]
    assert set(info["metric"]) == {"info/H_Wv/exact"}
    assert (tmp_path / "boost_acc_sound_probe_h.png").stat().st_size > 5000
    assert pd.read_csv(tmp_path / "tests.csv").shape[0] == len(tests)


def test_cli_refuses_a_study_without_a_swept_pool(store, tmp_path, capsys):
    assert main(["--study", "nosuchstudy", "--tracking-uri", store, "--out", str(tmp_path / "x")]) == 2
    assert "nosuchstudy" in capsys.readouterr().err
