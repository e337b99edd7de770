"""The information analysis on a store written by the real writer (TrialTracker) with known ground truth: a quantity
with a known slope over log10(n), one that is flat, one that predicts the memory's gain exactly and one that is
noise, and cycles whose lossiest step is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.information import axis_scale, level, main, report, stale_trials
from bma import record as R
from tests.analysis.student_t import t2_quantile
from tests.analysis.tracker_store import write_study

SLOTS = (16, 64, 256)  # the one swept axis besides the variant: 2 memory variants x 3 = 6 cells
SEEDS = {"unimodal": (0, 1, 2), "paired_only": (0, 1), "bma": (0, 1, 2)}  # paired_only: 2 seeds, no interval
WIGGLE = (-1, 0, 1)  # per-seed pattern: sums to 0, so a cell mean is the noiseless value
N_SAMPLES = 300
PERFECT = "info/I_S_Sprime/gauss_noise_1"  # constructed as 2 + 10 x the gain
NOISE = "info/I_zv_zs/infonce_cos"  # independent of everything
SLOPED = "info/H_Wv/exact"  # 1 + 0.5 log10(n), per-seed wiggle
FLAT = "info/H_Ms/exact"  # 2, tiny per-seed wiggle: flat within the spec's delta
SOUND_F, SOUND_H = "acc/sound_probe_f/k5", "acc/sound_probe_h/k5"
S1, S2, _ = R.cycle_steps(*R.CYCLES[0])  # S_Ipseudo, Ipseudo_Sprime
V1, V2, _ = R.cycle_steps(*R.CYCLES[1])  # V_Spseudo, Spseudo_Vprime


def gain(variant: str, slots: int, seed: int) -> float:
    """acc_h - acc_f of the sound probe (0 for unimodal: h is f); also bma - unimodal of acc_h for bma."""
    if variant == "unimodal":
        return 0.0
    return 0.01 * (1 + SLOTS.index(slots)) + 0.004 * seed + 0.005 * (variant == "bma")


def sloped(slots: int, seed: int) -> float:
    return 1.0 + 0.5 * math.log10(slots) + 0.02 * WIGGLE[seed] * (1 + SLOTS.index(slots))


def trial(variant, slots, seed, rng):
    g = gain(variant, slots, seed)
    f = 0.5 + 0.01 * seed
    metrics = {SOUND_F: f, SOUND_H: f + g, R.INFO_N_SAMPLES: N_SAMPLES, NOISE: float(rng.normal()),
               "loss/total": 1.0}
    if variant != "unimodal":
        w = WIGGLE[seed]
        metrics.update({
            SLOPED: sloped(slots, seed), FLAT: 2.0 + 0.001 * w * SLOTS.index(slots), PERFECT: 2.0 + 10.0 * g,
            # sound cycle: the first step loses most; image cycle: the second
            f"info/dI_{S1}/probe_bound": -0.3 + 0.01 * w, f"info/dI_{S2}/probe_bound": -0.1 + 0.02 * w,
            f"info/dI_{V1}/probe_bound": -0.05 + 0.01 * w, f"info/dI_{V2}/probe_bound": -0.4 + 0.005 * w,
            f"info/dH_{S1}/gauss_noise_0.1": -5.0 + w, f"info/dH_{S2}/gauss_noise_0.1": 4.0 + 0.5 * w,
            f"info/dH_{V1}/gauss_noise_0.1": -2.0 + 0.3 * w, f"info/dH_{V2}/gauss_noise_0.1": -1.0 + 0.2 * w,
        })
    flat = {"variant": variant, "memory_slots": slots, "pairs": 50, "seed": seed, "steps": 10}
    return flat, metrics, {}


AXES = ("model.variant", "model.memory_slots")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(7)
    trials = [trial(v, n, s, rng) for v, seeds in SEEDS.items() for n in SLOTS for s in seeds]
    return write_study(tmp_path_factory.mktemp("info-store"), "infolike", trials, axes=AXES,
                       sesoi={"acc/*": 0.02, "info/H_Ms/*": 0.5})


@pytest.fixture(scope="module")
def tables(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("info-out") / "report"
    return report("infolike", store, out), out


def _cell(frame, **where):
    keys = {"variant": "model.variant", "slots": "model.memory_slots"}
    sel = np.ones(len(frame), dtype=bool)
    for k, v in where.items():
        sel &= (frame[keys.get(k, k)] == v).to_numpy()
    return frame[sel]


def test_axis_scales():
    assert axis_scale("model.tau_m", [0.05, 0.1, 0.5])[1] == "log10(tau_m)"
    assert axis_scale("regime.pairing_ratio", [0.1, 0.5])[1] == "pairing_ratio"
    x, label = axis_scale("regime.unpaired_images", [0, 10_000, 59_000])
    assert label == "log10(1 + unpaired_images)" and x[0] == 0
    assert axis_scale("regime.pairs", [50, 200])[1] == "pairs"  # less than a decade: as is
    assert math.isnan(level([1.0, 2.0])["ci95_low"]) and level([1.0, 2.0, 3.0])["ci95_low"] < 2


def test_a_value_older_than_the_final_round_is_named():
    # run r1 logged its MI at rounds 1 and 2 and its sample size at rounds 1, 2, 3: the MI was NaN at round 3
    hist = pd.DataFrame({"run_id": ["r1"] * 5 + ["r2"] * 2, "step": [1, 2, 1, 2, 3, 1, 1],
                         "metric": [PERFECT] * 2 + [R.INFO_N_SAMPLES] * 3 + [PERFECT, R.INFO_N_SAMPLES],
                         "value": 1.0})
    assert stale_trials(hist) == {("r1", PERFECT): True}


def test_the_folder_rule(store, tmp_path, capsys):
    thesis = tmp_path / "mine"
    thesis.mkdir()
    (thesis / "table1.csv").write_text("my own table\n")
    assert main(["--study", "infolike", "--tracking-uri", store, "--out", str(thesis)]) == 2
    assert f"--out {thesis} exists and was not written by `python -m analysis.information`" in capsys.readouterr().err
    assert [p.name for p in thesis.iterdir()] == ["table1.csv"] and sorted(p.name for p in tmp_path.iterdir()) == \
        ["mine"]
    assert main(["--study", "nosuchstudy", "--tracking-uri", store, "--out", str(tmp_path / "x")]) == 2


def test_table1_mean_interval_estimator_and_sample_size(tables):
    t1 = tables[0]["table1"]
    row = _cell(t1, variant="bma", slots=64)
    row = row[row["metric"] == SLOPED].iloc[0]
    # seeds add 0.04 x (-1, 0, 1): sd 0.04, half-width t(0.975, 2) x 0.04 / sqrt(3)
    assert row["mean"] == pytest.approx(1 + 0.5 * math.log10(64))
    assert row["ci95_high"] - row["mean"] == pytest.approx(t2_quantile(0.975) * 0.04 / math.sqrt(3), rel=1e-9)
    assert (row["n_seeds"], row["estimator"], row["quantity"], row["n_samples"]) == (3, "exact", "H_Wv", "300")
    assert row["table1_row"] == R.INFO_QUANTITIES["H_Wv"]
    two = _cell(t1, variant="paired_only", slots=64)
    two = two[two["metric"] == SLOPED].iloc[0]
    assert two["n_seeds"] == 2 and math.isnan(two["ci95_low"]) and "2 seeds: no interval" in two["note"]
    # the memory quantities are not rows of unimodal; what unimodal logs is
    uni = _cell(t1, variant="unimodal")
    assert set(uni["metric"]) == {NOISE}


def test_trend_over_log_n_with_seeds_as_blocks(tables):
    tr = tables[0]["trends"]
    row = _cell(tr, variant="bma")
    row = row[(row["metric"] == SLOPED) & (row["axis"] == "model.memory_slots")].iloc[0]
    assert row["x"] == "log10(memory_slots)"
    x = np.log10(SLOTS)
    dx = x - x.mean()
    slopes = [float(dx @ (y - y.mean()) / (dx @ dx)) for y in
              (np.array([sloped(n, s) for n in SLOTS]) for s in SEEDS["bma"])]
    assert row["estimate"] == pytest.approx(np.mean(slopes), rel=1e-9)
    assert row["sd"] == pytest.approx(np.std(slopes, ddof=1), rel=1e-6)
    assert row["verdict"] == "gain" and row["direction"] == "rises" and row["settled"]
    flat = _cell(tr, variant="bma")
    flat = flat[(flat["metric"] == FLAT) & (flat["axis"] == "model.memory_slots")].iloc[0]
    # the spec's delta 0.5 for info/H_Ms/* over the span of log10(n): the slope's delta
    assert flat["sesoi"] == pytest.approx(0.5 / (x[-1] - x[0]))
    assert flat["verdict"] == "equivalent" and flat["direction"].startswith("flat")
    two = _cell(tr, variant="paired_only")
    assert set(two["verdict"]) == {"undetermined"}  # 2 seeds
    # one Holm family per axis and kind: the Table-1 quantities, and the probes' accuracies
    kind = np.where(tr["metric"].str.startswith("acc/"), ", probe accuracies", ", Table-1 quantities")
    assert (tr["family"] == "trend over " + tr["x"] + kind).all()


def test_cycles_name_the_lossiest_step(tables):
    tables_, out = tables
    loss = tables_["cycle_loss"]
    bma = loss[(loss["model.variant"] == "bma") & (loss["measure"] == "dI")]
    assert len(bma) == 2 * len(SLOTS)
    sound = bma[bma["cycle"].str.startswith("S ")]
    image = bma[bma["cycle"].str.startswith("V ")]
    assert set(sound["worst_step"]) == {"S → I_pseudo"} and set(image["worst_step"]) == {"S_pseudo → V'"}
    assert sound["diff_estimate"].to_numpy() == pytest.approx(-0.2)
    assert sound["settled"].all() and set(sound["diff_verdict"]) == {"loss"}
    md = (out / "cycle_loss.md").read_text()
    assert "S → I_pseudo changes it most downward in every one of 6 cells" in md
    steps = tables_["cycle_steps"]
    whole = steps[(steps["step"] == "whole cycle") & (steps["measure"] == "dI") & (steps["model.variant"] == "bma")]
    assert set(whole[whole["cycle"].str.startswith("S ")]["mean"].round(9)) == {-0.4}  # -0.3 + -0.1
    figures = sorted(p.name for p in out.glob("cycle__*.png"))
    assert len(figures) == 2 * len(SLOTS)  # bma and paired_only cells
    assert all((out / f).stat().st_size > 5000 for f in figures)


def test_a_perfect_predictor_and_a_noise_quantity(tables):
    tables_, out = tables
    pred, hold = tables_["predictors"], tables_["holdout"]
    a = pred[(pred["what"] == "(a) acc_h - acc_f") & (pred["target"] == f"{SOUND_H} - {SOUND_F}")]
    perfect = a[a["metric"] == PERFECT].iloc[0]
    assert perfect["rho"] == pytest.approx(1.0) and perfect["rho_ci95_low"] == pytest.approx(1.0)
    assert perfect["n_units"] == 3 * len(SLOTS) + 2 * len(SLOTS) and perfect["n_cells"] == 2 * len(SLOTS)
    assert perfect["rho_within"] == pytest.approx(1.0) and perfect["p_within_holm"] < 1e-6
    noise = a[a["metric"] == NOISE].iloc[0]
    assert noise["rho_ci95_low"] < 0 < noise["rho_ci95_high"] and noise["p_within_holm"] > 0.05
    h = hold[(hold["what"] == "(a) acc_h - acc_f") & (hold["target"] == f"{SOUND_H} - {SOUND_F}")]
    lin = h[h["model"] == "linear"].set_index("metric")
    assert lin.loc[PERFECT, "r2_holdout"] == pytest.approx(1.0) and lin.loc[PERFECT, "rank_corr_holdout"] == \
        pytest.approx(1.0)
    assert lin.loc[NOISE, "r2_holdout"] < 0.1
    ridge = h[h["model"].str.startswith("ridge")].iloc[0]
    assert ridge["r2_holdout"] > 0.8 and ridge["rank_corr_holdout"] > 0.9
    assert ridge["chosen"].startswith("I_S_Sprime/gauss_noise_1 x6")  # chosen in every fold
    # (b): bma - unimodal of the h probe, paired by cell and seed: bma's gain again
    b = pred[pred["what"] == "(b) bma - unimodal"]
    b = b[b["target"] == f"{SOUND_H}: bma - unimodal"].set_index("metric")
    assert b.loc[PERFECT, "n_units"] == 3 * len(SLOTS) and b.loc[PERFECT, "rho"] == pytest.approx(1.0)
    # 3 cells: too few to resample cells; the within-cell interval still stands
    assert math.isnan(b.loc[PERFECT, "rho_ci95_low"]) and "3 cells: no bootstrap" in b.loc[PERFECT, "note"]
    assert b.loc[PERFECT, "rho_within"] == pytest.approx(1.0)
    md = (out / "predictors.md").read_text()
    assert "bootstrap over cells" in md and "Fisher z" in md and "## Summary" in md


def test_an_earlier_report_is_replaced_and_the_manifest_lists_every_file(tables, store, capsys):
    _, out = tables
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == "bma-study analysis.information"
    assert sorted(manifest["files"] + ["manifest.json"]) == sorted(p.name for p in out.iterdir())
    assert {"table1.csv", "table1.md", "table1.tex", "trends.md", "predictors.csv", "holdout.csv"} <= set(
        manifest["files"])
    assert main(["--study", "infolike", "--tracking-uri", store, "--out", str(out)]) == 0  # its own: replaced
    (out / "notes.txt").write_text("mine")
    assert main(["--study", "infolike", "--tracking-uri", store, "--out", str(out)]) == 2  # now a user's file in it
    assert (out / "notes.txt").read_text() == "mine" and "notes.txt" in capsys.readouterr().err


def test_several_studies_pool_the_predictors_and_keep_their_cells_apart(store, tmp_path):
    root = store.removeprefix("sqlite:///").rsplit("/", 1)[0]
    rng = np.random.default_rng(8)
    write_study(root, "infolike2", [trial("bma", n, s, rng) for n in SLOTS[:2] for s in (0, 1, 2)], axes=AXES)
    tables = report(["infolike", "infolike2"], store, tmp_path / "both")
    t1 = tables["table1"]
    assert set(t1["study"]) == {"infolike", "infolike2"}
    assert len(_cell(t1, study="infolike2", variant="bma", slots=16).query("metric == @SLOPED")) == 1
    pred = tables["predictors"]
    a = pred[(pred["what"] == "(a) acc_h - acc_f") & (pred["metric"] == PERFECT)].iloc[0]
    assert (a["n_units"], a["n_cells"]) == (5 * len(SLOTS) + 6, 2 * len(SLOTS) + 2)
    tr = tables["trends"]
    assert set(tr[tr["metric"] == SLOPED]["study"]) == {"infolike", "infolike2"}  # each study its own trend
