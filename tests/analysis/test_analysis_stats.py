"""Statistics helpers against scipy and against hand computations (no MLflow)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

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


def test_t_interval_equals_scipy():
    x = np.array([0.61, 0.64, 0.58, 0.66])
    lo, hi = t_interval(x)
    ref = stats.t.interval(0.95, df=len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    assert lo == pytest.approx(ref[0]) and hi == pytest.approx(ref[1])
    assert all(math.isnan(v) for v in t_interval([0.5]))
    assert t_interval([0.5, 0.5]) == (0.5, 0.5)
    d = describe([0.61, float("nan"), 0.64, 0.58])
    assert d["n"] == 3 and d["std"] == pytest.approx(np.std([0.61, 0.64, 0.58], ddof=1))


def test_bootstrap_interval_equals_scipy_percentile():
    x = np.array([0.61, 0.64, 0.58, 0.66, 0.60])
    lo, hi = bootstrap_interval(x, n_resamples=2000, seed=7)
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(7))
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert all(math.isnan(v) for v in bootstrap_interval([0.3]))


def test_paired_test_equals_scipy():
    base = np.array([0.50, 0.55, 0.52, 0.58])
    var = np.array([0.56, 0.58, 0.60, 0.59])
    row = paired_test(base, var)
    assert row["p_ttest"] == pytest.approx(stats.ttest_rel(var, base).pvalue)
    assert row["t_stat"] == pytest.approx(stats.ttest_rel(var, base).statistic)
    assert row["p_wilcoxon"] == pytest.approx(stats.wilcoxon(var - base).pvalue)
    assert row["mean_diff"] == pytest.approx((var - base).mean())
    lo, hi = stats.t.interval(0.95, df=3, loc=(var - base).mean(), scale=stats.sem(var - base))
    assert (row["diff_ci95_low"], row["diff_ci95_high"]) == pytest.approx((lo, hi))


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
    lo, hi = stats.t.interval(0.95, df=2, loc=7.2, scale=stats.sem([7.0, 7.2, 7.4]))
    assert plane["I_S_Sprime/gauss_noise_1"].iloc[0] == f"7.200 ± {(hi - lo) / 2:.3f}"


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
