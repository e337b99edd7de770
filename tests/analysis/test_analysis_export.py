"""The export against the hand-built store of conftest.py: records, aggregates, tests, exports, plots, CLI errors."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from analysis.__main__ import main
from analysis.collect import collect_study
from analysis.export import ExportOptions, run_export
from analysis.plots import accuracy_vs_pairing, info_over_epochs
from bma import record as R

KEYS = ["regime.pairing_ratio", "regime.train_size", "model.memory_slots", "model.tau_m", "model.variant"]
MAIN = "acc/image_probe_h"


def _cell(df, variant, p, n, slots=64, tau_m=0.1):
    m = (df["model.variant"] == variant) & np.isclose(df["regime.pairing_ratio"], p) & (df["regime.train_size"] == n) \
        & (df["model.memory_slots"] == slots) & np.isclose(df["model.tau_m"], tau_m)
    return df[m]


def _finals(store, variant, p, n, metric, slots=64, tau_m=0.1, seeds=(0, 1, 2)):
    return np.array([store.values[(variant, p, n, slots, tau_m, s)][metric][-1] for s in seeds])


def _selected(store, variant, p, n, metric, slots=64, tau_m=0.1, seeds=(0, 1, 2)):
    """Each seed's value at its lowest validation loss (the selected/ columns)."""
    out = []
    for s in seeds:
        vals = store.values[(variant, p, n, slots, tau_m, s)]
        out.append(vals[metric][int(np.argmin(vals["loss/val_pair"]))])
    return np.array(out)


# -- reference statistics, derived without scipy: the cells tested have 3 seeds, so 2 degrees of freedom ----------


def _mean_sd(x) -> tuple[float, float]:
    """Arithmetic mean and sample standard deviation (n - 1 in the denominator)."""
    x = [float(v) for v in x]
    mean = sum(x) / len(x)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in x) / (len(x) - 1))


def _t_cdf_df2(t: float) -> float:
    """Student t CDF for 2 degrees of freedom, in closed form."""
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def _t_quantile_df2(p: float) -> float:
    """The inverse of _t_cdf_df2: t_{p,2} = (2p - 1) / sqrt(2p(1 - p)) (4.3027 at p = 0.975)."""
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def _t_ci95_3(x) -> tuple[float, float]:
    """mean +- t_{0.975,2} * s / sqrt(3) for 3 values."""
    assert len(x) == 3
    mean, sd = _mean_sd(x)
    half = _t_quantile_df2(0.975) * sd / math.sqrt(3)
    return mean - half, mean + half


def _paired_t_3(d) -> tuple[float, float]:
    """Paired t statistic of 3 differences, mean(d) / (s_d / sqrt(3)), and its two-sided p, 2 (1 - F(|t|))."""
    assert len(d) == 3
    mean, sd = _mean_sd(d)
    t = mean / (sd / math.sqrt(3))
    return t, 2 * (1 - _t_cdf_df2(abs(t)))


def _wilcoxon_exact_two_sided(d) -> float:
    """Exact two-sided signed-rank p, the definition analysis.compare gets from scipy.stats.wilcoxon(d) with its
    defaults (zero_method "wilcox", two-sided, method "auto": exact for n <= 50 without zeros or ties, which the
    assertion checks): W+ = the sum of the ranks of |d| over the positive d; under the null each of the 2^n sign
    assignments is equally likely; p = min(1, 2 min(P(W+ <= w), P(W+ >= w)))."""
    a = [abs(float(v)) for v in d]
    n = len(a)
    assert 0 not in a and len(set(a)) == n  # no zero, no tie
    rank = {v: r + 1 for r, v in enumerate(sorted(a))}
    w = sum(rank[abs(float(v))] for v in d if v > 0)
    null = [sum(r for r, positive in zip(range(1, n + 1), signs) if positive)
            for signs in itertools.product((False, True), repeat=n)]
    le = sum(x <= w for x in null) / len(null)
    ge = sum(x >= w for x in null) / len(null)
    return min(1.0, 2 * min(le, ge))


def _holm_by_procedure(p) -> list[float]:
    """Holm's (1979) adjusted p-values read off the step-down procedure itself: at level alpha, compare the sorted
    p_(1) <= p_(2) <= ... with alpha / m, alpha / (m - 1), ... and reject until the first that exceeds its bound;
    a hypothesis's adjusted p is the smallest alpha at which it is rejected, capped at 1. The rejected set changes
    only at the levels (m - k) p_(k), so the smallest such level is among them."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])

    def rejected(alpha):
        out = set()
        for k, i in enumerate(order):
            if (m - k) * p[i] > alpha:
                break
            out.add(i)
        return out

    levels = sorted((m - k) * p[i] for k, i in enumerate(order))
    return [min(1.0, next(a for a in levels if i in rejected(a))) for i in range(m)]


# -- runs.parquet ------------------------------------------------------------------------------------------------


def test_runs_one_row_per_trial_with_typed_keys(exported, store):
    runs = pd.read_parquet(os.path.join(exported.out_dir, "runs.parquet"))
    assert len(runs) == len(store.values) + 2  # + the failed and the running trial
    assert runs["run_id"].is_unique
    assert set(runs["run_id"]) == {rid for k, rid in store.run_ids.items() if k[0] != "edge"}
    for k in R.CLASSIC_AXES:
        assert k in runs.columns
    assert runs["regime.pairing_ratio"].dtype == np.float64
    assert runs["regime.train_size"].dtype == np.int64
    assert runs["model.memory_slots"].dtype == np.int64
    assert set(runs["model.variant"]) == {"bma", "unimodal"}
    assert runs["seed"].notna().all() and set(runs["seed"]) == {0, 1, 2, 3}
    assert set(runs["state"]) == {"finished", "failed", "running"}


def test_final_and_validation_selected_per_metric(exported, store):
    runs = exported.data.runs.set_index("run_id")
    for key, vals in store.values.items():
        row = runs.loc[store.run_ids[key]]
        picked = int(np.argmin(vals["loss/val_pair"]))  # the selection reads the validation loss only
        assert row["selected_step"] == picked + 1
        for metric, series in vals.items():
            assert row[f"final/{metric}"] == pytest.approx(series[-1])
            assert row[f"selected/{metric}"] == pytest.approx(series[picked])
        assert row["n_epochs"] == 3
    # selected differs from final where the fixture made it so, and it is not the test maximum: epoch 2's
    # accuracy is the largest here, but a run whose validation loss is lowest at epoch 3 would report epoch 3's
    key = ("bma", 0.1, 1000, 64, 0.1, 0)
    row = runs.loc[store.run_ids[key]]
    assert row[f"selected/{MAIN}"] == pytest.approx(store.values[key][MAIN][1]) != row[f"final/{MAIN}"]
    assert not [c for c in exported.data.runs.columns if c.startswith("best/")]  # no selection on the test split
    # unimodal logs no association metric: NaN, not absent
    assert math.isnan(runs.loc[store.run_ids[("unimodal", 0.1, 1000, 64, 0.1, 0)], "final/assoc/i2s_acc"])


def test_selection_ignores_test_metrics():
    """The step chosen follows loss/val_pair even where a test metric peaks elsewhere."""
    from analysis.collect import _final_and_selected

    hist = pd.DataFrame({"run_id": ["r"] * 6, "metric": ["loss/val_pair"] * 3 + [MAIN] * 3,
                         "step": [1, 2, 3] * 2, "value": [0.9, 0.7, 0.8, 0.5, 0.6, 0.95]})
    wide = _final_and_selected(hist, [MAIN])
    assert wide.loc["r", "selected_step"] == 2
    assert wide.loc["r", f"selected/{MAIN}"] == pytest.approx(0.6)  # not the test maximum 0.95
    no_val = _final_and_selected(hist[hist["metric"] == MAIN], [MAIN])
    assert math.isnan(no_val.loc["r", f"selected/{MAIN}"])


def test_histories_one_row_per_logged_value(exported, store):
    hist = pd.read_parquet(os.path.join(exported.out_dir, "histories.parquet"))
    assert list(hist.columns) == ["run_id", "metric", "step", "value"]
    key = ("bma", 0.5, 1000, 64, 0.1, 2)
    h = hist[(hist["run_id"] == store.run_ids[key]) & (hist["metric"] == "info/I_zv_zs/infonce")]
    assert h["step"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(h["value"], store.values[key]["info/I_zv_zs/infonce"])


def test_metric_globs_select_metrics(store):
    data = collect_study(store.study, store.uri, metrics=["acc/*"])
    assert data.metrics == ["acc/image_probe_h", "acc/sound_probe_h"]
    assert not [c for c in data.runs.columns if c.startswith("final/") and "acc/" not in c]


def test_info_metrics_bring_their_sample_size_and_flag_counts():
    from analysis.collect import select_metrics

    names = ["acc/a", "info/I_x/auto", "info/n_samples", "info/n_flagged", "info/n_estimates", "loss/total"]
    assert select_metrics(names, ["info/I_*"]) == ["info/I_x/auto", "info/n_estimates", "info/n_flagged", "info/n_samples"]
    assert select_metrics(names, ["acc/*"]) == ["acc/a"]


# -- summary -----------------------------------------------------------------------------------------------------


def test_summary_mean_std_t_interval_by_closed_form(exported, store):
    summary = pd.read_parquet(os.path.join(exported.out_dir, "summary.parquet"))
    for variant in ("bma", "unimodal"):
        for p in (0.1, 0.5):
            row = _cell(summary, variant, p, 1000).iloc[0]
            assert row["n_seeds"] == 3
            for col, x in ((f"final/{MAIN}", _finals(store, variant, p, 1000, MAIN)),
                           (f"selected/{MAIN}", _selected(store, variant, p, 1000, MAIN))):
                mean, sd = _mean_sd(x)
                lo, hi = _t_ci95_3(x)
                assert row[f"{col}_n"] == 3
                assert row[f"{col}_mean"] == pytest.approx(mean, rel=1e-12)
                assert row[f"{col}_std"] == pytest.approx(sd, rel=1e-9)
                assert row[f"{col}_ci95_low"] == pytest.approx(lo, rel=1e-9)
                assert row[f"{col}_ci95_high"] == pytest.approx(hi, rel=1e-9)


def test_summary_bootstrap_option_is_a_percentile_bootstrap(exported, store):
    """Properties the percentile bootstrap of the mean has on 3 distinct values, without calling the bootstrap:
    each resample is one of 27 equally likely ordered draws, so the interval's ends are resample means (the
    quantiles interpolate between neighbouring order statistics, which at 999 resamples are the same resample mean
    here); it lies within the seeds' range and holds their mean; the same seed gives the same interval; and it is
    not the t interval."""
    from analysis.aggregate import summarize

    summary = summarize(exported.data.runs, exported.data.keys, ci="bootstrap", n_resamples=999)
    again = summarize(exported.data.runs, exported.data.keys, ci="bootstrap", n_resamples=999)
    col = f"final/{MAIN}"
    for variant in ("bma", "unimodal"):
        for p in (0.1, 0.5):
            x = _finals(store, variant, p, 1000, MAIN)
            assert len(set(x)) == 3
            row = _cell(summary, variant, p, 1000).iloc[0]
            lo, hi = row[f"{col}_ci95_low"], row[f"{col}_ci95_high"]
            mean, sd = _mean_sd(x)
            assert row[f"{col}_mean"] == pytest.approx(mean) and row[f"{col}_std"] == pytest.approx(sd)
            assert x.min() - 1e-12 <= lo < mean < hi <= x.max() + 1e-12
            achievable = [sum(r) / 3 for r in itertools.product(x, repeat=3)]
            assert any(math.isclose(lo, a, rel_tol=1e-12) for a in achievable), (lo, sorted(set(achievable)))
            assert any(math.isclose(hi, a, rel_tol=1e-12) for a in achievable), (hi, sorted(set(achievable)))
            t_lo, t_hi = _t_ci95_3(x)
            assert (lo, hi) != pytest.approx((t_lo, t_hi), rel=1e-6)
            row2 = _cell(again, variant, p, 1000).iloc[0]
            assert (row2[f"{col}_ci95_low"], row2[f"{col}_ci95_high"]) == (lo, hi)
    # 999 resamples put each end on an extreme resample mean almost whatever the draw; with 19 the ends move with
    # the random stream, so equal tables say the stream is seeded
    ci_cols = [c for c in summary.columns if c.endswith(("_ci95_low", "_ci95_high"))]
    few = [summarize(exported.data.runs, exported.data.keys, ci="bootstrap", n_resamples=19)[ci_cols] for _ in "ab"]
    pd.testing.assert_frame_equal(few[0], few[1])


def test_failed_and_running_are_counted_and_listed(exported, store):
    summary = exported.summary
    failed_cell = _cell(summary, "bma", 0.5, 1000).iloc[0]
    assert failed_cell["n_failed"] == 1 and failed_cell["n_seeds"] == 3 and failed_cell["seeds"] == "0,1,2"
    running_cell = _cell(summary, "unimodal", 0.1, 2000).iloc[0]
    assert running_cell["n_running"] == 1 and running_cell["n_seeds"] == 1
    assert summary["n_failed"].sum() == 1 and summary["n_running"].sum() == 1
    md = open(os.path.join(exported.out_dir, "summary.md")).read()
    assert "Failed and running trials (2)" in md
    assert store.run_ids[("failed",)] in md and "CUDA out of memory" in md
    assert store.run_ids[("running",)] in md
    # the failed trial's one epoch never reaches the aggregate
    runs = exported.data.runs.set_index("run_id")
    assert not runs.loc[store.run_ids[("failed",)], "used"]


def test_single_seed_cell_has_nan_ci_and_says_so(exported):
    row = _cell(exported.summary, "bma", 0.5, 2000).iloc[0]
    assert row["n_seeds"] == 1
    assert not math.isnan(row[f"final/{MAIN}_mean"])
    for suffix in ("std", "ci95_low", "ci95_high"):
        assert math.isnan(row[f"final/{MAIN}_{suffix}"])
    md = open(os.path.join(exported.out_dir, "summary.md")).read()
    assert "n=1, no CI" in md


def _norm(line: str) -> str:
    return re.sub(r"\s+", "", line)


def test_every_export_reads_back_and_tables_contain_every_cell(exported):
    out = exported.out_dir
    summary = exported.summary
    for name in ("runs", "summary", "compare", "exchange_rate"):
        csv = pd.read_csv(os.path.join(out, f"{name}.csv"))
        parquet = pd.read_parquet(os.path.join(out, f"{name}.parquet"))
        assert len(csv) == len(parquet) > 0
        assert list(csv.columns) == list(parquet.columns)
    csv = pd.read_csv(os.path.join(out, "summary.csv"))
    np.testing.assert_allclose(csv[f"final/{MAIN}_mean"], summary[f"final/{MAIN}_mean"])
    md = _norm(open(os.path.join(out, "summary.md")).read())
    tex = _norm(open(os.path.join(out, "summary.tex")).read())
    assert tex.startswith(r"\begin{table}") and r"\end{tabular}" in tex
    for _, r in summary.iterrows():
        cells = [r["variant"], f"{r['regime.pairing_ratio']:g}", str(r["regime.train_size"]),
                 str(r["model.memory_slots"]), f"{r['model.tau_m']:g}", str(r["n_seeds"])]
        assert "|" + "|".join(cells) + "|" in md, cells
        assert "&".join(cells) + "&" in tex, cells
    for name in ("compare.md", "compare.tex", "exchange_rate.md"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["study"] == "quick" and manifest["trials"] == {"finished": 19, "failed": 1, "running": 1}
    assert not [f for f in os.listdir(os.path.dirname(out)) if ".partial-" in f or ".old-" in f]


# -- comparisons -------------------------------------------------------------------------------------------------


def test_paired_tests_by_formula_and_holm_per_metric(exported, store):
    cmp = pd.read_parquet(os.path.join(exported.out_dir, "compare.parquet"))
    metric = f"final/{MAIN}"
    tested, p_t, p_w = [], [], []
    for p in (0.1, 0.5):
        base = _finals(store, "unimodal", p, 1000, MAIN)
        var = _finals(store, "bma", p, 1000, MAIN)
        d = var - base  # paired by seed: same order of seeds on both sides
        rows = cmp[(cmp["metric"] == metric) & (cmp["variant"] == "bma")].assign(**{"model.variant": "bma"})
        row = _cell(rows, "bma", p, 1000).iloc[0]
        assert row["baseline"] == "unimodal" and row["n_pairs"] == 3
        mean_d, sd_d = _mean_sd(d)
        t, p_two = _paired_t_3(d)
        assert row["mean_diff"] == pytest.approx(mean_d)
        assert row["std_diff"] == pytest.approx(sd_d, rel=1e-9)
        assert (row["diff_ci95_low"], row["diff_ci95_high"]) == pytest.approx(_t_ci95_3(d), rel=1e-9)
        assert row["t_stat"] == pytest.approx(t, rel=1e-9)
        assert row["p_ttest"] == pytest.approx(p_two, rel=1e-6)
        assert row["p_wilcoxon"] == pytest.approx(_wilcoxon_exact_two_sided(d), rel=1e-12)
        tested.append(row)
        p_t.append(p_two)
        p_w.append(_wilcoxon_exact_two_sided(d))
    # the family of this metric: the two cells with 3 pairs (the single-seed cells have n=1: NaN, no test)
    fam = cmp[cmp["metric"] == metric]
    assert fam["p_ttest"].notna().sum() == 2 and fam["p_wilcoxon"].notna().sum() == 2
    assert [r["p_ttest_holm"] for r in tested] == pytest.approx(_holm_by_procedure(p_t), rel=1e-6)
    assert [r["p_wilcoxon_holm"] for r in tested] == pytest.approx(_holm_by_procedure(p_w), rel=1e-12)
    single = fam[fam["n_pairs"] == 1]
    assert len(single) == 2 and single["p_ttest"].isna().all() and single["note"].str.contains("n=1").all()
    # metrics the baseline never logs are not compared
    assert "final/assoc/i2s_acc" not in set(cmp["metric"])


def test_compare_carries_verdicts_and_states_its_families(exported, store):
    cmp = pd.read_parquet(os.path.join(exported.out_dir, "compare.parquet"))
    metric = f"final/{MAIN}"
    fam = cmp[cmp["metric"] == metric]
    # one family per metric, named and counted as the Holm step computed it: the p values present
    assert set(fam["family"]) == {MAIN} and set(fam["family_size"]) == {int(fam["p_ttest"].notna().sum())} == {2}
    for p in (0.1, 0.5):
        d = _finals(store, "bma", p, 1000, MAIN) - _finals(store, "unimodal", p, 1000, MAIN)
        row = _cell(fam.assign(**{"model.variant": fam["variant"]}), "bma", p, 1000).iloc[0]
        low, high = _t_ci95_3(d)
        verdict = "gain" if low > 0 else "loss" if high < 0 else "inconclusive"  # no delta: never "equivalent"
        assert row["verdict"] == verdict and math.isnan(row["sesoi"]) and math.isnan(row["p_tost"])
    single = fam[fam["n_pairs"] == 1]
    assert (single["verdict"] == "undetermined").all() and single["note"].str.contains("at least 3 needed").all()
    md = open(os.path.join(exported.out_dir, "compare.md")).read()
    assert f"Holm over 2 tests within `{MAIN}`" in md and "verdict" in md


def test_cli_sesoi_reaches_the_comparison(store, tmp_path):
    out = tmp_path / "s"
    assert main(["export", "--study", "quick", "--tracking-uri", store.uri, "--out", str(out), "--no-plots", "-q",
                 "--sesoi", "acc/*=0.5"]) == 0
    cmp = pd.read_csv(out / "compare.csv")
    acc = cmp[cmp["metric"].str.startswith("final/acc/") & (cmp["n_pairs"] >= 3)]
    assert (acc["sesoi"] == 0.5).all() and acc["p_tost"].notna().all()
    assert cmp[cmp["metric"].str.startswith("final/retrieval/")]["sesoi"].isna().all()
    assert "--sesoi: acc/* = 0.5" in (out / "compare.md").read_text()
    assert main(["export", "--study", "quick", "--tracking-uri", store.uri, "--out", str(tmp_path / "b"),
                 "--sesoi", "acc/*=-1"]) == 2


def test_paired_test_with_mixed_signs_by_formula():
    """Differences of both signs (the fixture's are all positive, the extreme of the signed-rank null): ranks of
    |d| = (0.3, 0.1, 0.2) are (3, 1, 2), W+ = 3 + 2 = 5, P(W+ >= 5) = 2/8, two-sided p = 1/2."""
    from analysis.compare import paired_test

    base = np.array([0.50, 0.60, 0.40])
    d = np.array([0.30, -0.10, 0.20])
    var = base + d
    row = paired_test(base, var)
    t, p_two = _paired_t_3(var - base)
    assert row["n_pairs"] == 3
    assert row["t_stat"] == pytest.approx(t, rel=1e-9) and row["p_ttest"] == pytest.approx(p_two, rel=1e-6)
    assert _wilcoxon_exact_two_sided(var - base) == 0.5
    assert row["p_wilcoxon"] == pytest.approx(0.5, rel=1e-12)


# -- exchange rate -----------------------------------------------------------------------------------------------


def test_exchange_rate_matches_a_direct_solution(exported, store):
    table = pd.read_csv(os.path.join(exported.out_dir, "exchange_rate.csv"))
    row = table[(table["metric"] == f"final/{MAIN}") & (table["model.variant"] == "bma")
                & (table["model.memory_slots"] == 64) & np.isclose(table["model.tau_m"], 0.1)].iloc[0]
    mean = lambda p, n: _finals(store, "bma", p, n, MAIN, seeds=(0, 1, 2) if n == 1000 else (0,)).mean()  # noqa
    a = {(p, n): mean(p, n) for p in (0.1, 0.5) for n in (1000, 2000)}
    pm, nm = 0.3, math.sqrt(1000 * 2000)
    g_p = ((a[0.5, 1000] - a[0.1, 1000]) + (a[0.5, 2000] - a[0.1, 2000])) / 2 / 0.4
    g_l = ((a[0.1, 2000] - a[0.1, 1000]) + (a[0.5, 2000] - a[0.5, 1000])) / 2 / math.log(2)
    # dA/dp = N (A_P - A_U), dA/dlnN = N (p A_P + (1 - p) A_U)
    a_p, a_u = np.linalg.solve([[nm, -nm], [pm * nm, (1 - pm) * nm]], [g_p, g_l])
    assert row["N_mid"] == pytest.approx(nm)
    assert row["dA_dP_per_1k"] == pytest.approx(1000 * a_p)
    assert row["dA_dU_per_1k"] == pytest.approx(1000 * a_u)
    assert row["exchange_rate"] == pytest.approx(a_p / a_u)
    assert row["n_seeds"] == 1  # only seed 0 ran in all four corners
    assert f"{a_p / a_u:.3g}" in open(os.path.join(exported.out_dir, "exchange_rate.md")).read()


# -- plots -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "acc_vs_pairing__final-acc-image_probe_h",
    "heatmap__final-acc-image_probe_h__bma",
    "info_epochs__bma",
    "info_plane__bma",
    "exchange_rate__final-acc-image_probe_h",
])
def test_plot_files_exist_and_are_png_and_svg(exported, name):
    png = os.path.join(exported.out_dir, "plots", f"{name}.png")
    svg = os.path.join(exported.out_dir, "plots", f"{name}.svg")
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 5000
    text = open(svg).read()
    assert "<svg" in text and text.rstrip().endswith("</svg>")
    if name.startswith("info_"):  # an information figure names its estimators and its sample size
        assert "infonce" in text and "n = 500" in text


def test_plots_skip_gracefully_without_their_axis(exported, tmp_path):
    one_p = exported.summary[np.isclose(exported.summary["regime.pairing_ratio"], 0.1)]
    files, notes = accuracy_vs_pairing(one_p, exported.data.keys, f"final/{MAIN}", str(tmp_path))
    assert files == [] and "one pairing ratio" in notes[0]
    runs = exported.data.runs
    no_info = exported.data.histories[~exported.data.histories["metric"].str.startswith("info/")]
    files, notes = info_over_epochs(runs, no_info, exported.data.keys, str(tmp_path))
    assert files == [] and "no info" in notes[0]
    assert not os.listdir(tmp_path)


# -- CLI and errors ----------------------------------------------------------------------------------------------


def test_cli_export_succeeds_and_replaces_the_output(store, tmp_path, capsys):
    out = tmp_path / "rep" / "quick"
    assert main(["export", "--study", "quick", "--tracking-uri", store.uri, "--out", str(out), "-q"]) == 0
    assert (out / "plots").is_dir()
    assert main(["export", "--study", "quick", "--tracking-uri", store.uri, "--out", str(out), "--no-plots", "-q"]) == 0
    assert not (out / "plots").exists() and (out / "summary.md").exists()
    assert sorted(os.listdir(tmp_path / "rep")) == ["quick"]


def test_cli_unknown_study_exits_2_naming_it(store, tmp_path):
    out = tmp_path / "o" / "nope"
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "export", "--study", "nope", "--tracking-uri", store.uri, "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "unknown study 'nope'" in proc.stderr and "quick" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_cli_empty_experiment_and_missing_store_exit_2(store, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["export", "--study", "empty", "--tracking-uri", store.uri, "--out", str(out / "e")]) == 2
    assert "no trial runs" in capsys.readouterr().err
    missing = tmp_path / "nowhere" / "mlflow.db"
    assert main(["export", "--study", "quick", "--tracking-uri", f"sqlite:///{missing}", "--out", str(out / "m")]) == 2
    err = capsys.readouterr().err
    assert "no MLflow store" in err and str(missing) in err
    assert not missing.exists() and not out.exists()


def test_cli_unknown_baseline_exits_2(store, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["export", "--study", "quick", "--tracking-uri", store.uri, "--out", str(out / "q"),
                 "--baseline", "unimdal", "--no-plots"]) == 2
    assert "unimdal" in capsys.readouterr().err
    assert not out.exists()


def test_cli_unreachable_server_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    out = tmp_path / "o"
    assert main(["export", "--study", "quick", "--tracking-uri", "http://127.0.0.1:9", "--out", str(out)]) == 2
    assert "http://127.0.0.1:9" in capsys.readouterr().err
    assert not out.exists()


# -- the --out folder rule: an export replaces only what an earlier export wrote -----------------------------------


def _tree(folder) -> dict[str, bytes]:
    """Every file under ``folder`` with its content: what must survive a refused export byte for byte."""
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            path = os.path.join(root, n)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


def _study_folder(store, tmp_path):
    """A folder as `python study/run.py` leaves it: the store, its artifacts and Tune's results."""
    import shutil

    folder = tmp_path / "study"
    (folder / "mlartifacts" / "1").mkdir(parents=True)
    (folder / "ray_results" / "quick").mkdir(parents=True)
    shutil.copy(os.path.join(store.root, "mlflow.db"), folder / "mlflow.db")
    (folder / "mlartifacts" / "1" / "checkpoint.pt").write_bytes(b"weights")
    (folder / "ray_results" / "quick" / "bma_fingerprint.txt").write_text("dd14b3e0de92")
    return folder


def test_export_into_the_study_folder_is_refused_and_deletes_nothing(store, tmp_path, capsys, monkeypatch):
    """`--out .` in a study's folder used to replace it wholesale: mlflow.db, mlartifacts/, ray_results/ gone."""
    folder = _study_folder(store, tmp_path)
    before = _tree(folder)
    monkeypatch.chdir(folder)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    for out in (".", str(folder), str(tmp_path)):
        assert main(["export", "--study", "quick", "--tracking-uri", uri, "--out", out, "--no-plots", "-q"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out ") and "Traceback" not in err
        assert "current folder" in err or "not written by `python -m analysis export`" in err, err
    assert _tree(folder) == before
    assert sorted(os.listdir(tmp_path)) == ["study"]  # no partial folder left beside it either


def test_export_over_a_folder_it_did_not_write_is_refused(store, tmp_path, capsys):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.tex").write_text("\\chapter{Introduction}")
    (thesis / "manifest.json").write_text('{"name": "my thesis"}')  # a manifest, but not an export's
    before = _tree(thesis)
    assert main(["export", "--study", "quick", "--tracking-uri", store.uri, "--out", str(thesis), "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert f"--out {thesis} exists and was not written by `python -m analysis export`" in err
    assert "choose a new or empty folder" in err
    assert _tree(thesis) == before and sorted(os.listdir(tmp_path)) == ["thesis"]
    # a file where the folder should be
    (tmp_path / "report").write_text("mine")
    assert main(["export", "--study", "quick", "--tracking-uri", store.uri, "--out", str(tmp_path / "report")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err
    assert (tmp_path / "report").read_text() == "mine"


def test_an_earlier_export_with_a_file_added_is_not_replaced(store, tmp_path, capsys):
    out = tmp_path / "quick"
    args = ["export", "--study", "quick", "--tracking-uri", store.uri, "--out", str(out), "--no-plots", "-q"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == "bma-study analysis export"
    assert sorted(manifest["files"] + ["manifest.json"]) == sorted(_tree(out))
    (out / "my-notes.md").write_text("what the table means")
    before = _tree(out)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds an earlier report plus files it did not write (my-notes.md)" in err
    assert _tree(out) == before
    (out / "my-notes.md").unlink()
    assert main(args) == 0  # exactly what the export wrote: replaced
    assert sorted(os.listdir(tmp_path)) == ["quick"]


def test_an_empty_folder_and_an_earlier_export_without_the_mark_are_replaced(store, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", "--study", "quick", "--tracking-uri", store.uri, "--out", str(empty), "--no-plots",
                 "-q"]) == 0
    assert (empty / "summary.md").is_file()
    # an export written before folders were marked: its manifest lists its files, without "generator"
    manifest = json.loads((empty / "manifest.json").read_text())
    del manifest["generator"]
    (empty / "manifest.json").write_text(json.dumps(manifest))
    assert main(["export", "--study", "quick", "--tracking-uri", store.uri, "--out", str(empty), "--no-plots",
                 "-q"]) == 0
    assert json.loads((empty / "manifest.json").read_text())["generator"] == "bma-study analysis export"


def test_export_into_a_read_only_place_exits_2(store, tmp_path, capsys):
    target = "/sys/bma-export" if os.geteuid() == 0 else str(tmp_path / "ro" / "quick")
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
    assert main(["export", "--study", "quick", "--tracking-uri", store.uri, "--out", target, "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {target}: cannot write in") and "Traceback" not in err
    assert not os.path.exists(target)


def test_cli_silent_server_exits_2_in_seconds(tmp_path, capsys, monkeypatch):
    """A server that accepts the connection and never answers: refused after the probe's timeout (here the 2 s the
    user asked for), not after MLflow's minutes of retries."""
    from tests.conftest import silent_server

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with silent_server() as (uri, accepted):
        assert main(["export", "--study", "quick", "--tracking-uri", uri, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"--tracking-uri {uri}: the MLflow tracking server cannot be used (no answer within 2 s)" in err
    # bounded by attempts, not by a clock: the probe's connections, not MLflow's minutes of retries
    assert 1 <= len(accepted) <= 2, f"{len(accepted)} connections to a server that never answers"
    assert not (tmp_path / "o").exists()


def test_failure_while_writing_leaves_no_partial_output(store, tmp_path, monkeypatch):
    import analysis.export as export

    def boom(data, opts, out_dir):
        open(os.path.join(out_dir, "runs.csv"), "w").write("partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "build_outputs", boom)
    out = tmp_path / "new" / "deeper" / "quick"
    with pytest.raises(RuntimeError, match="disk full"):
        run_export(ExportOptions(study="quick", tracking_uri=store.uri, out=str(out)))
    assert not (tmp_path / "new").exists()


# -- an awkward study: one variant, one regime, an extra varying config field, reruns, an all-failed cell ---------


def test_edge_study_exports_with_notes(store, tmp_path):
    out = tmp_path / "edge"
    res = run_export(ExportOptions(study="edge", tracking_uri=store.uri, out=str(out)))
    data = res.data
    assert "model.addressing" in data.keys  # a recorded axis: never pooled as seeds
    runs = data.runs.set_index("run_id")
    assert not runs.loc[store.run_ids[("edge", "softmax", 0)], "used"]
    assert runs.loc[store.run_ids[("edge", "softmax", 0)], "superseded"]
    assert runs.loc[store.run_ids[("edge", "softmax", 0, "rerun")], "used"]
    assert runs.loc[store.run_ids[("edge", "topk", 1)], "state"] == "failed"  # KILLED
    s = res.summary.set_index("model.addressing")
    assert s.loc["softmax", "n_seeds"] == 2 and s.loc["sparsemax", "n_seeds"] == 2
    assert s.loc["topk", "n_seeds"] == 0 and s.loc["topk", "n_failed"] == 2
    assert math.isnan(s.loc["topk", f"final/{MAIN}_mean"])
    md = open(out / "summary.md").read()
    assert "topk" in md and "ValueError: boom" in md and "Failed and running trials (2)" in md
    # no baseline, one pairing ratio, one (slots, tau_m), no info metric: every such output skips with a note
    notes = " | ".join(res.notes)
    for phrase in ("default baseline 'unimodal' absent", "exchange rate skipped", "one pairing ratio",
                   "heatmap skipped"):
        assert phrase in notes, phrase
    for name in ("compare", "exchange_rate"):
        assert len(pd.read_csv(out / f"{name}.csv")) == 0
        assert len(pd.read_parquet(out / f"{name}.parquet")) == 0
    pngs = sorted(f for f in os.listdir(out / "plots") if f.endswith(".png"))
    assert pngs == ["info_epochs__bma.png", "info_plane__bma.png"]  # the regimes differ by addressing only


def test_explicit_baseline(exported):
    from analysis.compare import compare_variants

    table, baseline, _ = compare_variants(exported.data.runs, exported.data.keys, baseline="bma")
    assert baseline == "bma" and set(table["variant"]) == {"unimodal"}
    idx = ["regime.pairing_ratio", "regime.train_size", "model.memory_slots", "model.tau_m", "metric"]
    key = (0.1, 1000, 64, 0.1, f"final/{MAIN}")
    fwd, rev = exported.compare.set_index(idx), table.set_index(idx)
    assert rev.loc[key, "mean_diff"] == pytest.approx(-fwd.loc[key, "mean_diff"])
    assert rev.loc[key, "p_ttest"] == pytest.approx(fwd.loc[key, "p_ttest"])
