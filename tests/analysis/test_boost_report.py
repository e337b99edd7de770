"""The boost report on a store written by the real writer (TrialTracker) with known metric values."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.boost import main, report
from tests.analysis.student_t import t2_cdf, t2_quantile
from tests.analysis.tracker_store import write_study

POOLS = (0, 1000, 10_000)
PAIRS = (50, 200)
SEEDS = (0, 1, 2)
VARIANTS = ("unimodal", "bma")
WIGGLE = (-1, 0, 1)  # per-seed noise pattern: sums to 0 over the seeds, so every cell mean is the noiseless value


def noise(variant: str, pool: int, seed: int) -> float:
    """0.003 x (-1, 0, 1) x a factor per (variant, pool): paired differences vary across seeds (no zero variance)."""
    return 0.003 * WIGGLE[seed] * (1 + POOLS.index(pool) + 3 * VARIANTS.index(variant))


def accuracy(variant: str, pairs: int, pool: int, seed: int) -> float:
    """Known truth: only bma gains from the pool (0.02 per 1,000 unpaired images); pairs help paired variants."""
    value = 0.5 + 0.01 * seed
    if variant != "unimodal":
        value += 0.0002 * pairs
    if variant == "bma":
        value += 0.02 * pool / 1000
    return value


def trial(variant, pairs, pool, seed):
    acc = accuracy(variant, pairs, pool, seed)
    metrics = {"acc/sound_probe_h": acc + 0.1, "acc/sound_probe_h/k5": acc + noise(variant, pool, seed),
               "acc/image_probe_h/k5": 0.7, "loss/total": 1.0}
    if variant != "unimodal":
        metrics["info/H_Wv/exact"] = 1.0 + pool / 10_000
    flat = {"variant": variant, "pairs": pairs, "unpaired_images": pool, "unpaired_sounds": 500, "seed": seed,
            "steps": 10}
    return flat, metrics, {}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    trials = [trial(v, p, u, s) for v in VARIANTS for p in PAIRS for u in POOLS for s in SEEDS]
    return write_study(tmp_path_factory.mktemp("boost-store"), "boostlike", trials,
                       axes=("model.variant", "regime.pairs", "regime.unpaired_images"),
                       sesoi={"acc/*": 0.02, "acc/image_probe_h/*": 0.05})


@pytest.fixture(scope="module")
def tables(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("boost-out") / "report"
    return report("boostlike", store, out), out


def test_report_recovers_the_known_effects(tables):
    tables, out = tables
    curves = tables["curves"]
    row = curves[(curves["metric"] == "acc/sound_probe_h") & (curves["model.variant"] == "bma")
                 & (curves["regime.pairs"] == 50) & (curves["regime.unpaired_images"] == 10_000)]
    assert len(row) == 1 and row["n_seeds"].item() == 3
    assert row["mean"].item() == pytest.approx(accuracy("bma", 50, 10_000, 1) + 0.1)
    # seeds 0,1,2 add 0, .01, .02: sd 0.01, t(0.975, 2) = 4.303 -> half-width 4.303 * 0.01 / sqrt(3)
    assert row["ci95_high"].item() - row["mean"].item() == pytest.approx(t2_quantile(0.975) * 0.01 / np.sqrt(3),
                                                                         rel=1e-9)

    tests = tables["tests"]
    boost = tests[(tests["test"] == "pool 10000 - pool 0") & (tests["metric"] == "acc/sound_probe_h/k5")
                  & (tests["regime.pairs"] == 50)].set_index("model.variant")
    assert boost.loc["bma", "estimate"] == pytest.approx(0.2)
    assert boost.loc["unimodal", "estimate"] == pytest.approx(0.0)
    vs = tests[(tests["test"] == "bma - unimodal") & (tests["metric"] == "acc/sound_probe_h/k5")
               & (tests["regime.unpaired_images"] == 0) & (tests["regime.pairs"] == 200)]
    assert vs["estimate"].item() == pytest.approx(0.04)
    tested = tests["p"].notna()
    assert (tests.loc[tested, "p_holm"] >= tests.loc[tested, "p"]).all()

    ex = tables["exchange"]
    bma = ex[(ex["variant"] == "bma") & (ex["metric"] == "acc/sound_probe_h/k5") & (ex["pool"] == "0-1000")]
    # dA/dP = 0.0002 per pair, dA/dU = 0.00002 per unpaired image -> 10 unpaired images per pair
    assert bma["unpaired_per_pair"].item() == pytest.approx(10.0)
    uni = ex[(ex["variant"] == "unimodal") & (ex["metric"] == "acc/sound_probe_h/k5")]
    assert uni["unpaired_per_pair"].isna().all()  # neither kind of sample helps it: no rate
    info = tables["information"]
    assert set(info["metric"]) == {"info/H_Wv/exact"}
    assert (out / "boost_acc_sound_probe_h.png").stat().st_size > 5000
    assert pd.read_csv(out / "tests.csv").shape[0] == len(tests)


def test_verdicts_against_the_spec_sesoi_by_hand(tables):
    tests = tables[0]["tests"]
    k5 = tests[(tests["metric"] == "acc/sound_probe_h/k5") & (tests["regime.pairs"] == 50)]
    boost = k5[k5["test"] == "pool 10000 - pool 0"].set_index("model.variant")
    # bma: differences 0.2 + 0.003 x (-1, 0, 1) x (3 - 1) = 0.2 + 0.006 x (-1, 0, 1): sd 0.006 -> a gain
    se = 0.006 / math.sqrt(3)
    assert boost.loc["bma", "verdict"] == "gain" and boost.loc["bma", "sesoi"] == 0.02
    assert boost.loc["bma", "ci95_low"] == pytest.approx(0.2 - t2_quantile(0.975) * se, rel=1e-9)
    # unimodal: mean 0, sd 0.006; 90 % CI +-2.92 x 0.00346 = +-0.0101 inside +-0.02: equivalent;
    # TOST p = F2(-0.02 / se) (both one-sided p equal at mean 0)
    uni = boost.loc["unimodal"]
    assert uni["verdict"] == "equivalent" and uni["p_tost"] == pytest.approx(t2_cdf(-0.02 / se), rel=1e-9)
    assert uni["ci90_high"] == pytest.approx(t2_quantile(0.95) * se, rel=1e-9)
    # the image probe's own delta: the longer glob acc/image_probe_h/* wins
    assert set(tests[tests["metric"] == "acc/image_probe_h/k5"]["sesoi"].dropna()) <= {0.05, 0.05 / math.log10(10_001)}


def test_trend_is_the_mean_of_per_seed_slopes_over_log_pool(tables):
    tests = tables[0]["tests"]
    tr = tests[(tests["test"] == "trend per log10(1 + pool)") & (tests["metric"] == "acc/sound_probe_h/k5")
               & (tests["regime.pairs"] == 50)].set_index("model.variant")
    x = np.log10(1 + np.array(POOLS, dtype=float))
    dx = x - x.mean()
    slopes = []
    for seed in SEEDS:
        y = np.array([accuracy("bma", 50, u, seed) + noise("bma", u, seed) for u in POOLS])
        slopes.append(float(dx @ (y - y.mean()) / (dx @ dx)))
    assert tr.loc["bma", "estimate"] == pytest.approx(np.mean(slopes), rel=1e-9)
    assert tr.loc["bma", "sd"] == pytest.approx(np.std(slopes, ddof=1), rel=1e-6)
    assert tr.loc["bma", "n"] == 3 and tr.loc["bma", "verdict"] == "gain"
    # its delta: the metric's 0.02 over the span of x (the fitted change across the sweep within +-0.02)
    assert tr.loc["bma", "sesoi"] == pytest.approx(0.02 / (x[-1] - x[0]))


def test_families_are_stated_as_computed(tables):
    tables, out = tables
    tests = tables["tests"]
    for family, sub in tests.groupby("family"):
        assert (sub["metric"] == family).all()
        assert (sub["family_size"] == sub["p"].notna().sum()).all()
    size = int(tests[tests["family"] == "acc/sound_probe_h/k5"]["family_size"].iloc[0])
    # per pairs level: bma - unimodal at 3 pools, + 2 variants x (pool test + trend) = 7; x 2 pairs levels = 14
    assert size == 14
    md = (out / "tests.md").read_text()
    assert f"Holm over {size} tests within `acc/sound_probe_h/k5`" in md
    assert "acc/* = 0.02" in md  # where the deltas come from


def test_cli_sesoi_replaces_the_spec(store, tmp_path):
    tables = report("boostlike", store, tmp_path / "r", sesoi=["0.001"])
    tests = tables["tests"]
    uni = tests[(tests["test"] == "pool 10000 - pool 0") & (tests["metric"] == "acc/sound_probe_h/k5")
                & (tests["model.variant"] == "unimodal")]
    assert set(uni["sesoi"]) == {0.001} and set(uni["verdict"]) == {"inconclusive"}
    assert (uni["seeds_needed"] > 3).all()
    assert "--sesoi" in (tmp_path / "r" / "tests.md").read_text()


def test_cli_refuses_a_study_without_a_swept_pool(store, tmp_path, capsys):
    assert main(["--study", "nosuchstudy", "--tracking-uri", store, "--out", str(tmp_path / "x")]) == 2
    assert "nosuchstudy" in capsys.readouterr().err


# -- a folder the report did not write -------------------------------------------------------------------------


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_refuses_a_folder_it_did_not_write_and_writes_nothing(store, tmp_path, capsys):
    thesis = tmp_path / "mythesis"
    thesis.mkdir()
    (thesis / "curves.csv").write_text("my own curves, hours of work\n")
    (thesis / "chapter1.tex").write_text("\\chapter{Intro}\n")
    before = _tree(thesis)
    assert main(["--study", "boostlike", "--tracking-uri", store, "--out", str(thesis)]) == 2
    err = capsys.readouterr().err
    assert f"--out {thesis} exists and was not written by `python -m analysis.boost`" in err
    assert _tree(thesis) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mythesis"]  # no partial folder beside it either


def test_report_replaces_its_own_earlier_folder(store, tmp_path):
    out = tmp_path / "again"
    assert main(["--study", "boostlike", "--tracking-uri", store, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == "bma-study analysis.boost"
    assert sorted(manifest["files"] + ["manifest.json"]) == sorted(_tree(out))
    assert main(["--study", "boostlike", "--tracking-uri", store, "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")  # a user's file in it: now refused
    assert main(["--study", "boostlike", "--tracking-uri", store, "--out", str(out)]) == 2
    assert (out / "notes.txt").read_text() == "mine"


# -- a variant whose trials all failed ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def failed_store(tmp_path_factory):
    trials = [trial(v, 50, u, s) for v in VARIANTS for u in POOLS for s in SEEDS]
    trials += [({**trial("bma", 50, u, s)[0], "variant": "paired_only"}, {}, {}, "CUDA out of memory")
               for u in POOLS for s in SEEDS]
    return write_study(tmp_path_factory.mktemp("boost-failed"), "boostfail", trials,
                       axes=("model.variant", "regime.unpaired_images"))


def test_a_variant_whose_trials_all_failed_is_said_not_dropped(failed_store, tmp_path, capsys):
    assert main(["--study", "boostfail", "--tracking-uri", failed_store, "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "paired_only" in err and "no finished trial" in err and "CUDA out of memory" in err
    tests = pd.read_csv(tmp_path / "r" / "tests.csv")
    gone = tests[tests["test"].str.contains("paired_only")]
    # bma - paired_only and paired_only - unimodal at each pool, for each probe metric: rows with n = 0
    assert len(gone) and (gone["n"] == 0).all() and gone["note"].str.contains("3 failed").all()
    po = tests[tests["model.variant"] == "paired_only"]
    assert len(po) and (po["n"] == 0).all()  # its pool test and trend: there, empty, explained
    curves = pd.read_csv(tmp_path / "r" / "curves.csv")
    assert (curves[curves["model.variant"] == "paired_only"]["n_seeds"] == 0).all()
    assert "paired_only" in (tmp_path / "r" / "tests.md").read_text()


def test_the_export_comparison_names_a_variant_whose_trials_all_failed(failed_store):
    from analysis.collect import collect_study
    from analysis.compare import compare_variants

    data = collect_study("boostfail", failed_store)
    table, baseline, notes = compare_variants(data.runs, data.keys)
    assert baseline == "unimodal" and "paired_only" not in set(table["variant"])
    assert any("'paired_only': no finished trial (9 failed" in n and "CUDA out of memory" in n for n in notes)
