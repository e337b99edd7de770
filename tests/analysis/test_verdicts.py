"""analysis.verdicts against hand computations: closed-form Student-t distributions for small df (no scipy in the
expected values), each verdict branch, TOST p values, seeds_needed by hand iteration, the trend slope by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.compare import paired_test
from analysis.verdicts import (
    ROW_COLUMNS,
    UNDETERMINED,
    VERDICTS,
    contrast,
    parse_sesoi,
    per_seed_slopes,
    seeds_needed,
    sesoi_for,
    trend,
)

# Student-t CDFs in closed form (Abramowitz & Stegun 26.7.3-4):
#   df = 2:  F(t) = 1/2 + t / (2 sqrt(2 + t^2))          ->  t_p = (2p - 1) / sqrt(2 p (1 - p))
#   df = 3:  F(t) = 1/2 + (theta + sin theta cos theta) / pi,  theta = atan(t / sqrt 3)
#   df = 4:  F(t) = 1/2 + (3/4) s (1 - s^2 / 3),  s = t / sqrt(4 + t^2)
# Quantiles for df >= 3 from the printed tables, each checked against its closed-form CDF in the first test.
T975 = {2: 4.302653, 3: 3.182446, 4: 2.776445, 5: 2.570582, 6: 2.446912}
T95 = {2: 2.919986, 3: 2.353363, 4: 2.131847}


def F2(t: float) -> float:
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def F3(t: float) -> float:
    theta = math.atan(t / math.sqrt(3))
    return 0.5 + (theta + math.sin(theta) * math.cos(theta)) / math.pi


def F4(t: float) -> float:
    # F(t) = 1/2 + (3/4) s (1 - s^2 / 3),  s = t / sqrt(4 + t^2)   (the df = 4 closed form)
    s = t / math.sqrt(4 + t * t)
    return 0.5 + 0.75 * s * (1 - s * s / 3)


def t2_quantile(p: float) -> float:
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


T975[2], T95[2] = t2_quantile(0.975), t2_quantile(0.95)  # df = 2 exactly, from the closed form


def test_the_hand_t_distributions_agree_with_the_printed_tables():
    assert t2_quantile(0.975) == pytest.approx(4.302653, abs=1e-6)
    assert t2_quantile(0.95) == pytest.approx(2.919986, abs=1e-6)
    assert F3(T975[3]) == pytest.approx(0.975, abs=1e-6) and F3(T95[3]) == pytest.approx(0.95, abs=1e-6)
    assert F4(T975[4]) == pytest.approx(0.975, abs=1e-6) and F4(T95[4]) == pytest.approx(0.95, abs=1e-6)


# -- verdict branches --------------------------------------------------------------------------------------------

GAIN = [0.2, 0.3, 0.4]  # mean 0.3, sd 0.1, se = 0.1 / sqrt 3
SE = 0.1 / math.sqrt(3)


def test_gain_interval_and_two_sided_p_by_hand():
    c = contrast(GAIN)
    assert (c.n, c.estimate, c.sd) == (3, pytest.approx(0.3), pytest.approx(0.1))
    assert c.ci95 == pytest.approx((0.3 - T975[2] * SE, 0.3 + T975[2] * SE), abs=1e-6)
    assert c.ci90 == pytest.approx((0.3 - T95[2] * SE, 0.3 + T95[2] * SE), abs=1e-6)
    # t = 0.3 / se = 3 sqrt 3; p = 2 (1 - F2(t)) = 1 - t / sqrt(2 + t^2) = 1 - 5.196152 / sqrt 29
    assert c.p_two_sided == pytest.approx(1 - 3 * math.sqrt(3) / math.sqrt(29), rel=1e-9)
    assert c.p_two_sided == pytest.approx(0.035099, abs=1e-6)
    assert c.verdict == "gain" and math.isnan(c.seeds_needed) and math.isnan(c.p_tost)
    assert "no SESOI" in c.note and not c.within_sesoi


def test_loss_is_the_mirror_of_gain():
    c = contrast([-v for v in GAIN])
    assert c.verdict == "loss"
    assert c.ci95 == pytest.approx((-0.3 - T975[2] * SE, -0.3 + T975[2] * SE), abs=1e-6)
    assert c.p_two_sided == pytest.approx(contrast(GAIN).p_two_sided, rel=1e-12)


def test_gain_with_a_large_delta_tost_p_by_hand():
    # delta 0.1: p_low = 1 - F2((0.3 + 0.1)/se), p_high = F2((0.3 - 0.1)/se) = F2(2 sqrt 3) = 0.96291
    c = contrast(GAIN, sesoi=0.1)
    p_low, p_high = 1 - F2(0.4 / SE), F2(0.2 / SE)
    assert p_high == pytest.approx(0.5 + 2 * math.sqrt(3) / (2 * math.sqrt(14)), rel=1e-12)
    assert c.p_tost == pytest.approx(max(p_low, p_high), rel=1e-9) == pytest.approx(0.962910, abs=1e-6)
    assert c.verdict == "gain" and not c.within_sesoi and "smaller than delta" not in c.note


def test_gain_smaller_than_delta_keeps_the_sign_verdict_and_says_so():
    # delta 1: p_high = F2((0.3 - 1) / se) = F2(-7 sqrt 3) = 0.5 - 7 sqrt 3 / (2 sqrt 149) = 0.003380
    c = contrast(GAIN, sesoi=1.0)
    t = -0.7 / SE
    assert c.p_tost == pytest.approx(F2(t), rel=1e-9) == pytest.approx(0.5 - 7 * math.sqrt(3) / (2 * math.sqrt(149)),
                                                                         rel=1e-9)
    assert c.verdict == "gain" and c.within_sesoi and "gain, smaller than delta" in c.note


def test_equivalent_by_tost_with_hand_p():
    # [-0.01, 0, 0.01]: mean 0, sd 0.01; delta 0.02: p_tost = F2(-0.02 / se) = 1 - F2(2 sqrt 3) = 0.037090
    d, se = [-0.01, 0.0, 0.01], 0.01 / math.sqrt(3)
    c = contrast(d, sesoi=0.02)
    assert c.p_tost == pytest.approx(F2(-0.02 / se), rel=1e-9) == pytest.approx(0.037090, abs=1e-6)
    assert c.ci90 == pytest.approx((-T95[2] * se, T95[2] * se), abs=1e-9)
    assert c.verdict == "equivalent" and c.within_sesoi and math.isnan(c.seeds_needed)
    assert c.p_two_sided == pytest.approx(1.0)


def test_inconclusive_equivalence_seeds_needed_by_hand_iteration():
    # delta 0.015, sd 0.01, mean 0: only equivalence can settle it; 90 % half-width must reach 0.015:
    #   n = 3: 2.919986 * 0.01 / sqrt 3 = 0.016859 > 0.015;   n = 4: 2.353363 * 0.01 / 2 = 0.011767 <= 0.015 -> 4
    c = contrast([-0.01, 0.0, 0.01], sesoi=0.015)
    assert T95[2] * 0.01 / math.sqrt(3) > 0.015 >= T95[3] * 0.01 / 2
    assert c.verdict == "inconclusive" and c.seeds_needed == 4 and "equivalence" in c.note
    assert c.p_tost == pytest.approx(F2(-0.015 / (0.01 / math.sqrt(3))), rel=1e-9)


def test_inconclusive_takes_the_nearer_way_to_settle():
    # [-0.005, 0.005, 0.015]: mean 0.005, sd 0.01; delta 0.02.  equivalence: 90 % half-width <= 0.015 -> n = 4 (as
    # above); excluding 0: 95 % half-width <= 0.005 needs more than 4 (n = 4 gives 3.182446 * 0.01 / 2 = 0.0159)
    c = contrast([-0.005, 0.005, 0.015], sesoi=0.02)
    assert c.verdict == "inconclusive"
    assert c.seeds_needed == 4 and "to show equivalence" in c.note and "planning estimate" in c.note
    assert seeds_needed(0.01, 0.005, 0.95) > 4


def test_inconclusive_without_delta_needs_seeds_to_exclude_zero():
    # [1, 2, 3]: mean 2, sd 1; 95 % half-width <= 2:  n = 3: 4.302653 / sqrt 3 = 2.484 > 2;  n = 4: 3.182446 / 2 = 1.591
    c = contrast([1.0, 2.0, 3.0])
    assert c.verdict == "inconclusive" and c.seeds_needed == 4 and "to exclude 0" in c.note
    # mean exactly 0 and no delta: nothing settles it
    c0 = contrast([-1.0, 0.0, 1.0])
    assert c0.verdict == "inconclusive" and math.isnan(c0.seeds_needed) and "no seed count" in c0.note


def test_every_verdict_is_one_of_the_declared_names():
    for d, delta in ((GAIN, None), ([-0.3, -0.2, -0.4], None), ([-0.01, 0, 0.01], 0.02), ([1, 2, 3], None)):
        assert contrast(d, delta).verdict in VERDICTS


# -- degenerate cases --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d, note", [([], "0 seeds: at least 3 needed"), ([0.1], "1 seed: at least 3 needed"),
                                     ([0.1, 0.3], "2 seeds: at least 3 needed"),
                                     ([0.1, float("nan"), 0.3], "2 seeds: at least 3 needed"),
                                     ([0.2, 0.2], "2 seeds: at least 3 needed"),
                                     ([0.2, 0.2, 0.2], "zero variance across seeds")])
def test_degenerate_gives_nan_and_a_note_never_p_zero(d, note):
    c = contrast(d, sesoi=0.05)
    assert c.verdict == UNDETERMINED and note in c.note
    for v in (*c.ci95, *c.ci90, c.p_two_sided, c.p_tost, c.seeds_needed):
        assert math.isnan(v)


def test_bad_delta_is_refused():
    with pytest.raises(ValueError):
        contrast(GAIN, sesoi=0.0)


def test_row_flattens_every_field():
    row = contrast(GAIN, sesoi=0.1).row("x_")
    assert tuple(k.removeprefix("x_") for k in row) == ROW_COLUMNS
    assert row["x_ci95_low"] == pytest.approx(0.3 - T975[2] * SE, abs=1e-6) and row["x_sesoi"] == 0.1


# -- seeds_needed ------------------------------------------------------------------------------------------------


def test_seeds_needed_by_hand_iteration():
    # sd 1, half-width 1, 95 %: n=3: 4.302653/1.732 = 2.484; n=4: 3.182446/2 = 1.591; n=5: 2.776445/2.236 = 1.242;
    # n=6: 2.570582/2.449 = 1.049; n=7: 2.446912/2.646 = 0.925 <= 1  ->  7
    steps = [T975[n - 1] / math.sqrt(n) for n in range(3, 8)]
    assert all(s > 1 for s in steps[:-1]) and steps[-1] <= 1
    assert seeds_needed(1.0, 1.0) == 7
    assert seeds_needed(2.0, 2.0) == 7  # scale-free
    assert seeds_needed(1.0, 2.0) == 4  # 1.591 <= 2 (n = 3 gives 2.484)
    assert seeds_needed(0.0, 0.1) == 3  # no spread: the minimum a verdict needs
    # large n: the normal-theory start is a lower bound; check the answer is the first n that passes
    n = seeds_needed(0.01, 0.001)
    from scipy import stats

    half = lambda m: stats.t.ppf(0.975, m - 1) * 0.01 / math.sqrt(m)  # noqa: E731
    assert half(n) <= 0.001 < half(n - 1)
    with pytest.raises(ValueError):
        seeds_needed(1.0, 0.0)


# -- trend -------------------------------------------------------------------------------------------------------


def test_trend_is_the_t_interval_of_per_seed_ols_slopes_by_hand():
    # x = 0, 1, 2 (x̄ = 1, Σ(x - x̄)^2 = 2); slope = [(-1)(y0 - ȳ) + (1)(y2 - ȳ)] / 2 = (y2 - y0) / 2
    y = [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [0.0, 1.0, 2.5]]
    slopes, note = per_seed_slopes(y, [0, 1, 2])
    np.testing.assert_allclose(slopes, [1.0, 2.0, 1.25])
    assert note == ""
    c = trend(y, [0, 1, 2])
    mean = (1 + 2 + 1.25) / 3
    sd = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (1.25 - mean) ** 2) / 2)
    half = T975[2] * sd / math.sqrt(3)
    assert c.estimate == pytest.approx(17 / 12) and c.sd == pytest.approx(sd)
    assert c.ci95 == pytest.approx((mean - half, mean + half), rel=1e-6)


def test_trend_on_uneven_x_and_missing_levels():
    # x = 0, 1, 3 (x̄ = 4/3, Σ(x-x̄)^2 = 16/9 + 1/9 + 25/9 = 42/9); y = x exactly -> slope 1; y = 2x + 1 -> 2
    x = [0.0, 1.0, 3.0]
    y = [[0.0, 1.0, 3.0], [1.0, 3.0, 7.0], [0.0, float("nan"), 3.0], [5.0, float("nan"), float("nan")]]
    slopes, note = per_seed_slopes(y, x)
    np.testing.assert_allclose(slopes[:3], [1.0, 2.0, 1.0])
    assert math.isnan(slopes[3]) and "2 seed(s) miss some levels" in note
    c = trend(y, x, sesoi=0.5)
    assert c.n == 3 and "fewer than 2 levels" in c.note


# -- paired_test (analysis.compare): the degenerate t-test --------------------------------------------------------


def test_paired_test_constant_difference_is_no_test_not_p_zero():
    row = paired_test([0.5, 0.6], [0.6, 0.7])  # 2 seeds, difference 0.1 both times: t = inf
    assert math.isnan(row["p_ttest"]) and math.isnan(row["t_stat"]) and "constant" in row["note"]
    row = paired_test([0.5, 0.6, 0.7], [0.6, 0.7, 0.8])
    assert math.isnan(row["p_ttest"])


# -- the smallest effect of interest per metric ------------------------------------------------------------------


def test_parse_sesoi_and_lookup():
    assert parse_sesoi(["0.02"]) == {"acc/*": 0.02}
    assert parse_sesoi(["acc/*=0.02", "assoc/i2s_acc=0.05"]) == {"acc/*": 0.02, "assoc/i2s_acc": 0.05}
    assert parse_sesoi({"acc/*": "0.01"}) == {"acc/*": 0.01}
    for bad in (["x"], ["acc/*=-1"], ["acc/*=0"]):
        with pytest.raises(ValueError):
            parse_sesoi(bad)
    table = {"acc/*": 0.02, "acc/sound_probe_h/*": 0.03, "assoc/i2s_acc": 0.05}
    assert sesoi_for("final/acc/image_probe_h", table) == 0.02
    assert sesoi_for("acc/sound_probe_h/k5", table) == 0.03  # the longer glob wins
    assert sesoi_for("assoc/i2s_acc", table) == 0.05
    assert sesoi_for("retrieval/i2s_r1", table) is None and sesoi_for("acc/x", None) is None


def test_seeds_needed_is_infinite_for_a_target_within_rounding():
    """delta - |estimate| can be ~1e-12: the normal-theory n then overflows t's degrees of freedom (it raised
    TypeError in scipy on the boost_mirror study); such a target is out of any study's reach."""
    import math

    from analysis.verdicts import SEEDS_NEEDED_CAP, seeds_needed

    assert seeds_needed(0.03, 1e-12) == math.inf
    assert seeds_needed(0.03, 0.03 * 1.96 / math.sqrt(SEEDS_NEEDED_CAP) * 0.5) == math.inf
    assert seeds_needed(0.03, 0.02) < SEEDS_NEEDED_CAP
