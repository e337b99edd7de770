"""Statistics helpers against hand computations and closed forms, not against the scipy calls they make (no MLflow)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.aggregate import bootstrap_interval, describe, t_interval
from analysis.compare import holm, paired_test
from analysis.exchange import _marginals


def test_holm_matches_hand_computation():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> running max 0.06)
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_keeps_nan_out_of_the_family_and_handles_ties():
    np.testing.assert_allclose(holm([0.5, 0.6]), [1.0, 1.0])
    out = holm([0.02, float("nan"), 0.04])  # m = 2, not 3
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.04, 0.04])
    np.testing.assert_allclose(holm([0.01, 0.01, 0.01]), [0.03, 0.03, 0.03])
    assert holm([]).shape == (0,)
    assert np.isnan(holm([float("nan")])).all()


# Student-t quantiles and tail probabilities without scipy, from the closed forms of the small-df distributions:
#   df = 2:  F(t) = 1/2 + t / (2 sqrt(2 + t^2)),  so  t_p = (2p - 1) / sqrt(2 p (1 - p))
#   df = 3:  F(t) = 1/2 + (theta + sin(theta) cos(theta)) / pi,  theta = atan(t / sqrt(3))
# (t_{0.975,2} = 4.3027 and t_{0.975,3} = 3.1824 in the printed tables.)


def t2_quantile(p: float) -> float:
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def t3_cdf(t: float) -> float:
    theta = math.atan(t / math.sqrt(3))
    return 0.5 + (theta + math.sin(theta) * math.cos(theta)) / math.pi


def test_small_df_t_formulas_match_the_printed_tables():
    assert t2_quantile(0.975) == pytest.approx(4.303, abs=5e-4)
    assert t2_quantile(0.95) == pytest.approx(2.920, abs=5e-4)
    assert t3_cdf(3.182) == pytest.approx(0.975, abs=1e-4) and t3_cdf(0.0) == 0.5


def test_t_interval_matches_the_formula_by_hand():
    # [1, 2, 3]: mean 2, s = 1, s / sqrt(3) = 0.57735; half width t_{0.975,2} * 0.57735 = 2.48414
    half = t2_quantile(0.975) / math.sqrt(3)
    assert half == pytest.approx(2.484138, abs=1e-6)
    assert t_interval([1.0, 2.0, 3.0]) == pytest.approx((2 - half, 2 + half), rel=1e-12)
    assert t_interval([1.0, 2.0, 3.0], level=0.90) == pytest.approx(
        (2 - t2_quantile(0.95) / math.sqrt(3), 2 + t2_quantile(0.95) / math.sqrt(3)), rel=1e-12)
    # NaNs are dropped before anything is computed: the same interval
    assert t_interval([1.0, float("nan"), 2.0, 3.0]) == pytest.approx((2 - half, 2 + half), rel=1e-12)
    # [1, 2, 3, 4]: mean 2.5, s^2 = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; the half width over s / sqrt(4) is the
    # df=3 quantile, which the closed-form CDF puts at 0.975
    lo, hi = t_interval([1.0, 2.0, 3.0, 4.0])
    sem = math.sqrt(5 / 3) / 2
    assert (lo + hi) / 2 == pytest.approx(2.5, rel=1e-12)
    assert t3_cdf((hi - 2.5) / sem) == pytest.approx(0.975, abs=1e-10)
    assert (hi - 2.5) / sem == pytest.approx(3.1824, abs=1e-4)
    # fewer than 2 values: no interval; zero spread: a point
    assert all(math.isnan(v) for v in t_interval([0.5]))
    assert all(math.isnan(v) for v in t_interval([0.5, float("nan")]))
    assert t_interval([0.5, 0.5]) == (0.5, 0.5)


def test_describe_by_hand():
    # [0.61, 0.64, 0.58] (the NaN dropped): mean 0.61, deviations 0, +0.03, -0.03, s^2 = 0.0018 / 2, s = 0.03
    d = describe([0.61, float("nan"), 0.64, 0.58])
    half = t2_quantile(0.975) * 0.03 / math.sqrt(3)
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(0.61, abs=1e-12) and d["std"] == pytest.approx(0.03, abs=1e-12)
    assert (d["ci95_low"], d["ci95_high"]) == pytest.approx((0.61 - half, 0.61 + half), abs=1e-12)
    one = describe([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7 and math.isnan(one["std"]) and math.isnan(one["ci95_low"])
    none = describe([float("nan")])
    assert none["n"] == 0 and math.isnan(none["mean"]) and math.isnan(none["std"])
    # the bootstrap interval of a two-point sample: see test_bootstrap_interval_of_tiny_samples_by_hand
    boot = describe([0.0, 1.0], ci="bootstrap", n_resamples=999)
    assert (boot["mean"], boot["ci95_low"], boot["ci95_high"]) == (0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="ci"):
        describe([1.0, 2.0], ci="normal")


def test_bootstrap_interval_of_tiny_samples_by_hand():
    # Resampling [0, 1] with replacement gives a mean of 0 (probability 1/4), 0.5 (1/2) or 1 (1/4). The 2.5 % and
    # 97.5 % percentiles of that are 0 and 1; the 30 % and 70 % ones (level 0.4) are both 0.5. With 9999
    # resamples the share of zeros is 0.25 +- 0.005, far from 0.025 and from 0.3.
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_interval([0.0, 1.0], level=0.4) == (0.5, 0.5)
    assert bootstrap_interval([0.0, float("nan"), 1.0], level=0.4) == (0.5, 0.5)  # NaN dropped
    # a skewed one, where the percentile interval is not the "basic" 2 * mean - percentiles: resampling [0, 0, 1]
    # gives a mean of k/3 with k ~ Binomial(3, 1/3): P(k <= 0, 1, 2) = 8/27, 20/27, 26/27 = 0.296, 0.741, 0.963.
    # 95 %: the 2.5 % point is 0 and the 97.5 % point is past 0.963, so 1; 90 %: the 95 % point is 2/3.
    assert bootstrap_interval([0.0, 0.0, 1.0]) == pytest.approx((0.0, 1.0))
    assert bootstrap_interval([0.0, 0.0, 1.0], level=0.9) == pytest.approx((0.0, 2 / 3))


def test_bootstrap_interval_properties():
    x = np.array([0.61, 0.64, 0.58, 0.66, 0.60])
    lo, hi = bootstrap_interval(x, n_resamples=2000, seed=7)
    # a resampled mean lies between the sample's extremes; the interval holds the sample mean
    assert 0.58 <= lo < x.mean() < hi <= 0.66
    # the same seed, the same interval; a lower level, a narrower one
    assert bootstrap_interval(x, n_resamples=2000, seed=7) == (lo, hi)
    lo50, hi50 = bootstrap_interval(x, level=0.5, n_resamples=2000, seed=7)
    assert lo < lo50 < hi50 < hi
    # four copies of the sample: the same spread over 4x the values, a width about sqrt(5 / 20) = 1/2 as large
    lo4, hi4 = bootstrap_interval(np.tile(x, 4), n_resamples=2000, seed=7)
    assert lo4 < x.mean() < hi4
    assert 0.4 < (hi4 - lo4) / (hi - lo) < 0.6
    # a constant sample: a point; fewer than two values: none
    assert bootstrap_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in bootstrap_interval([0.3]))
    assert all(math.isnan(v) for v in bootstrap_interval([0.3, float("nan")]))


def test_bootstrap_interval_of_a_large_sample_is_the_normal_interval():
    # 0, 1, ..., 99: mean 49.5, population sd sqrt((100^2 - 1) / 12) = 28.866, so the resampled mean is close to
    # normal with sd 2.8866 and the percentile interval close to 49.5 +- 1.96 * 2.8866 = [43.84, 55.16]
    lo, hi = bootstrap_interval(np.arange(100.0))
    half = 1.959964 * math.sqrt((100 ** 2 - 1) / 12) / 10
    assert lo == pytest.approx(49.5 - half, abs=0.5) and hi == pytest.approx(49.5 + half, abs=0.5)


def test_paired_test_by_hand():
    base = np.array([0.50, 0.55, 0.52, 0.58])
    var = np.array([0.56, 0.58, 0.60, 0.59])
    row = paired_test(base, var)
    # differences variant - baseline: 0.06, 0.03, 0.08, 0.01; mean 0.045; deviations +-0.015, +-0.035,
    # sum of squares 2 * 0.000225 + 2 * 0.001225 = 0.0029, s = sqrt(0.0029 / 3), t = 0.045 / (s / 2) = 2.8947
    s = math.sqrt(0.0029 / 3)
    t = 0.045 / (s / 2)
    assert t == pytest.approx(2.8947, abs=1e-4)
    assert row["n_pairs"] == 4
    assert row["mean_baseline"] == pytest.approx(0.5375) and row["mean_variant"] == pytest.approx(0.5825)
    assert row["mean_diff"] == pytest.approx(0.045) and row["std_diff"] == pytest.approx(s)
    assert row["t_stat"] == pytest.approx(t, rel=1e-9)  # positive: the variant is the higher one
    # two-sided p of the t-test, df = 3: 2 (1 - F_3(t))
    assert row["p_ttest"] == pytest.approx(2 * (1 - t3_cdf(t)), rel=1e-9)
    assert row["p_ttest"] == pytest.approx(0.0628, abs=1e-4)
    # Wilcoxon: all 4 differences positive, W- = 0; exactly 1 of the 2^4 sign patterns has W- = 0 and 1 has W+ = 0,
    # so the exact two-sided p is 2/16, the smallest possible at n = 4 (as the note says)
    assert row["p_wilcoxon"] == pytest.approx(0.125, rel=1e-12)
    assert "smallest possible two-sided wilcoxon p is 0.125" in row["note"]
    # the difference interval: mean +- t_{0.975,3} s / 2, whose endpoint the df=3 CDF puts at 0.975
    lo, hi = row["diff_ci95_low"], row["diff_ci95_high"]
    assert (lo + hi) / 2 == pytest.approx(0.045)
    assert t3_cdf((hi - 0.045) / (s / 2)) == pytest.approx(0.975, abs=1e-10)
    # swapping the sides flips the sign of t and of the interval, not the p-values
    back = paired_test(var, base)
    assert back["t_stat"] == pytest.approx(-t, rel=1e-9) and back["p_ttest"] == pytest.approx(row["p_ttest"])
    assert (back["diff_ci95_low"], back["diff_ci95_high"]) == pytest.approx((-hi, -lo))


def test_paired_wilcoxon_with_a_negative_difference_by_hand():
    # differences 0.06, -0.03, 0.08, 0.01, 0.05: ranks of |d| 4, 2, 5, 1, 3, so W- = 2. The sign patterns with
    # W- <= 2 are the negative sets {}, {1}, {2}: 3 of 2^5 = 32, and the two-sided p is 2 * 3/32 = 0.1875
    base = [0.50, 0.50, 0.50, 0.50, 0.50]
    var = [0.56, 0.47, 0.58, 0.51, 0.55]
    assert paired_test(base, var)["p_wilcoxon"] == pytest.approx(0.1875, rel=1e-12)


def test_summarize_aggregates_the_used_trials_and_counts_the_rest_by_hand():
    import pandas as pd

    from analysis.aggregate import summarize

    nan = float("nan")
    runs = pd.DataFrame({
        "model.variant": ["bma"] * 5 + ["unimodal"] * 2 + ["solo"],
        "variant": ["bma"] * 5 + ["unimodal"] * 2 + ["solo"],
        "regime": ["r"] * 8,
        "seed": [0, 1, 2, 1, 3, 0, 1, 0],
        # bma: seeds 0-2 finished (seed 1 after a failed attempt, superseded), seed 3 failed for good;
        # unimodal: seed 0 finished, seed 1 still running; solo: its one trial failed
        "state": ["finished", "finished", "finished", "failed", "failed", "finished", "running", "failed"],
        "used": [True, True, True, False, False, True, False, False],
        "superseded": [False, False, False, True, False, False, False, False],
        "final/acc/x": [1.0, 2.0, 3.0, 9.0, nan, 0.5, 0.7, nan],
    })
    out = summarize(runs, ["model.variant"]).set_index("model.variant")
    assert list(out.index) == ["bma", "solo", "unimodal"]
    bma, solo, uni = out.loc["bma"], out.loc["solo"], out.loc["unimodal"]
    # bma: the used values 1, 2, 3 (the superseded 9.0 left out): mean 2, s = 1, 2 +- t_{0.975,2} / sqrt(3)
    half = t2_quantile(0.975) / math.sqrt(3)
    assert (bma["n_seeds"], bma["n_failed"], bma["n_running"], bma["n_trials"]) == (3, 1, 0, 5)
    assert bma["seeds"] == "0,1,2" and bma["final/acc/x_n"] == 3
    assert bma["final/acc/x_mean"] == pytest.approx(2.0) and bma["final/acc/x_std"] == pytest.approx(1.0)
    assert (bma["final/acc/x_ci95_low"], bma["final/acc/x_ci95_high"]) == pytest.approx((2 - half, 2 + half))
    # unimodal: one used value, the running trial counted but not aggregated
    assert (uni["n_seeds"], uni["n_failed"], uni["n_running"], uni["seeds"]) == (1, 0, 1, "0")
    assert uni["final/acc/x_mean"] == 0.5 and math.isnan(uni["final/acc/x_std"])
    assert math.isnan(uni["final/acc/x_ci95_low"]) and uni["final/acc/x_n"] == 1
    # solo: every trial failed, still a row, with no statistics
    assert (solo["n_seeds"], solo["n_failed"], solo["seeds"]) == (0, 1, "")
    assert math.isnan(solo["final/acc/x_mean"]) and solo["final/acc/x_n"] == 0
    assert str(out["n_seeds"].dtype) == "int64" and str(out["final/acc/x_n"].dtype) == "int64"


def test_paired_test_degenerate_cases_give_nan_with_a_note():
    one = paired_test([0.5], [0.6])
    assert math.isnan(one["p_ttest"]) and math.isnan(one["p_wilcoxon"]) and "n=1" in one["note"]
    zero = paired_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert math.isnan(zero["p_ttest"]) and math.isnan(zero["p_wilcoxon"]) and "zero" in zero["note"]
    dropped = paired_test([0.5, float("nan"), 0.7], [0.6, 0.2, 0.8])
    assert dropped["n_pairs"] == 2


def test_exchange_marginals_recover_the_partials_of_a_bilinear_surface():
    # A = c0 + c1 p + c2 ln N + c3 p ln N is reproduced exactly by the bilinear interpolant in (p, ln N); its true
    # partials in (P, U) at the rectangle centre come from central differences in P and U directly
    c0, c1, c2, c3 = 0.1, 0.2, 0.05, 0.03

    def A(p, n):
        return c0 + c1 * p + c2 * np.log(n) + c3 * p * np.log(n)

    def A_pu(P, U):
        return A(P / (P + U), P + U)

    p0, p1, n0, n1 = 0.1, 0.5, 1000, 4000
    _, _, d_pair, d_unpair = _marginals(A(p0, n0), A(p1, n0), A(p0, n1), A(p1, n1), p0, p1, n0, n1)
    n_mid = np.sqrt(n0 * n1)
    P, U, h = 0.3 * n_mid, 0.7 * n_mid, 1e-3
    assert d_pair == pytest.approx((A_pu(P + h, U) - A_pu(P - h, U)) / (2 * h), rel=1e-6)
    assert d_unpair == pytest.approx((A_pu(P, U + h) - A_pu(P, U - h)) / (2 * h), rel=1e-6)


# -- information estimates: flagged counts, plane quantities (no MLflow: hand-built frames) -----------------------


def _info_summary():
    import pandas as pd

    from analysis.aggregate import summarize

    runs = pd.DataFrame({
        "model.variant": ["bma"] * 3 + ["unimodal"] * 3, "variant": ["bma"] * 3 + ["unimodal"] * 3,
        "regime": ["r"] * 6, "seed": [0, 1, 2] * 2, "state": ["finished"] * 6, "used": [True] * 6,
        "superseded": [False] * 6,
        "final/info/n_flagged": [0.0, 2.0, 1.0, 0.0, 0.0, 0.0],
        "final/info/n_estimates": [35.0] * 6,
        "final/info/I_S_Sprime/gauss_noise_1": [7.0, 7.2, 7.4, np.nan, np.nan, np.nan],
        "final/info/I_S_Sprime/gaussian": [60.0, 65.0, 70.0, np.nan, np.nan, np.nan],
        "final/info/I_zv_zs/infonce_cos": [1.0, 1.1, 1.2, 0.5, 0.6, 0.7],
        "final/acc/image_probe_h": [0.9, 0.91, 0.92, 0.8, 0.81, 0.82],
    })
    return runs, summarize(runs, ["model.variant"])


def test_flagged_counts_sum_over_seeds_per_cell():
    from analysis.tables import flagged_counts, flagged_line, summary_display

    runs, summary = _info_summary()
    assert flagged_counts(summary) == ["3/105", "0/105"]  # bma: 0 + 2 + 1 flagged of 3 x 35
    line = flagged_line(runs)
    assert "3 of 210" in line and "in 2 of 6 trials" in line
    shown = summary_display(summary, ["model.variant"], ["final/acc/image_probe_h"], "t")
    assert list(shown["info flagged"]) == ["3/105", "0/105"]
    assert flagged_counts(summary.drop(columns=[c for c in summary if "n_flagged" in c])) is None


def test_plane_table_shows_only_quantities_finite_by_definition_with_their_ci():
    from analysis.tables import plane_display

    runs, summary = _info_summary()
    plane = plane_display(summary, ["model.variant"], "t")
    assert "I_S_Sprime/gauss_noise_1" in plane and "I_zv_zs/infonce_cos" in plane
    assert "I_S_Sprime/gaussian" not in plane  # a Gaussian MI of a near-deterministic map: a monitor only
    # [7.0, 7.2, 7.4]: mean 7.2, s = 0.2, half width t_{0.975,2} * 0.2 / sqrt(3) = 4.30265 * 0.11547 = 0.4968
    assert plane["I_S_Sprime/gauss_noise_1"].iloc[0] == "7.200 ± 0.497"


def test_info_metric_names_exclude_counts_and_flags():
    from analysis.plots import parse_info, plane_rank

    assert parse_info("info/I_zv_zs/infonce_cos") == ("I_zv_zs", "infonce_cos")
    for name in ("info/n_samples", "info/n_flagged", "info/n_estimates", "info/flag/I_S_Sprime/nwj"):
        assert parse_info(name) is None
    assert plane_rank("gauss_noise_1") == 0 and plane_rank("infonce") is not None
    assert plane_rank("gaussian") is None and plane_rank("ksg") is None and plane_rank("auto") is None


def test_plane_axes_take_finite_quantities_first():
    from analysis.plots import _pick_estimator

    available = {"I_zv_zs": {"gaussian", "infonce_cos", "auto"}, "I_S_Sprime": {"gaussian", "gauss_noise_1", "ksg"}}
    assert _pick_estimator(available, "I_zv_zs", "I_S_Sprime", None, None) == ("infonce_cos", "gauss_noise_1")
    only_monitors = {"I_zv_zs": {"gaussian"}, "I_S_Sprime": {"gaussian", "ksg"}}
    assert _pick_estimator(only_monitors, "I_zv_zs", "I_S_Sprime", None, None) == (None, None)
    # asked for explicitly: drawn as asked
    assert _pick_estimator(only_monitors, "I_zv_zs", "I_S_Sprime", "gaussian", "gaussian") == ("gaussian", "gaussian")
    shared = {"I_zv_zs": {"infonce", "gaussian"}, "I_S_Sprime": {"infonce", "gaussian"}}
    assert _pick_estimator(shared, "I_zv_zs", "I_S_Sprime", None, None) == ("infonce", "infonce")
