"""Discrete entropy and MI: exact values on fixed counts, known answers on samples, parity with ``infomeasure``."""

from __future__ import annotations

import math

import infomeasure as im
import numpy as np
import pytest

from bma.info.estimators import get_entropy_estimator, get_mi_estimator


def H(name, x):
    return get_entropy_estimator(name).estimate(x).value


def I(name, x, y):
    return get_mi_estimator(name).estimate(x, y).value


def test_plugin_entropy_exact_on_fixed_counts():
    x = np.array([0] * 1 + [1] * 2 + [2] * 3 + [3] * 4)
    p = np.array([1, 2, 3, 4]) / 10
    assert H("plugin", x) == pytest.approx(float(-(p * np.log(p)).sum()), abs=1e-12)
    assert H("miller_madow", x) == pytest.approx(H("plugin", x) + 3 / 20, abs=1e-12)
    assert H("plugin", np.zeros(7)) == 0.0


def test_entropy_known_answer_on_samples():
    # uniform over 8 symbols, N = 4000: the plug-in bias is -(m-1)/(2N) = -0.0009; std ~ sqrt(var/N) is 0 for a
    # uniform law to first order, so 0.01 is generous for any seed
    x = np.random.default_rng(0).integers(0, 8, 4000)
    assert H("plugin", x) == pytest.approx(math.log(8), abs=0.01)
    assert H("miller_madow", x) == pytest.approx(math.log(8), abs=0.01)
    # skewed law: H = 0.8018 nats; std of the plug-in over seeds ~0.012 at N = 4000
    p = np.array([0.7, 0.2, 0.05, 0.05])
    y = np.random.default_rng(1).choice(4, size=4000, p=p)
    assert H("miller_madow", y) == pytest.approx(float(-(p * np.log(p)).sum()), abs=0.05)


def test_miller_madow_reduces_the_small_sample_bias():
    # 30 symbols, N = 100: plug-in is biased low by ~(m-1)/(2N) = 0.145; averaged over seeds MM is much closer
    true = math.log(30)
    samples = [np.random.default_rng(s).integers(0, 30, 100) for s in range(20)]
    plug = np.mean([H("plugin", s) for s in samples]) - true
    mm = np.mean([H("miller_madow", s) for s in samples]) - true
    assert plug < -0.1 and abs(mm) < abs(plug) / 2


def test_mi_known_answers():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 4, 5000)
    assert I("plugin_mi", x, x) == pytest.approx(H("plugin", x), abs=1e-12)
    # y = x + a fair bit (mod 4): I = H(Y) - H(Y|X) = log 4 - log 2
    y = (x + rng.integers(0, 2, 5000)) % 4
    assert I("miller_madow_mi", x, y) == pytest.approx(math.log(2), abs=0.03)
    # independent: plug-in is biased high by ~(mx-1)(my-1)/(2N) = 0.0009
    z = rng.integers(0, 4, 5000)
    assert abs(I("miller_madow_mi", x, z)) < 0.01


def test_rows_are_symbols_and_labels_may_be_strings():
    a = np.array([[0, 1], [0, 1], [1, 0], [1, 1]])
    assert H("plugin", a) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    s = np.array(["cat", "dog", "cat", "bird"])
    assert H("plugin", s) == pytest.approx(H("plugin", np.array([0, 1, 0, 2])))
    assert I("plugin_mi", s, np.array([0, 1, 0, 2])) == pytest.approx(H("plugin", s))


@pytest.mark.parametrize(("ours", "ref"), [("plugin", "discrete"), ("miller_madow", "miller_madow")])
def test_entropy_matches_infomeasure(ours, ref):
    x = np.random.default_rng(3).integers(0, 12, 300)
    assert H(ours, x) == pytest.approx(im.entropy(x, approach=ref), abs=1e-10)


@pytest.mark.parametrize(("ours", "ref"), [("plugin_mi", "discrete"), ("miller_madow_mi", "miller_madow")])
def test_mi_matches_infomeasure(ours, ref):
    rng = np.random.default_rng(4)
    x = rng.integers(0, 6, 400)
    y = (x + rng.integers(0, 3, 400)) % 6
    assert I(ours, x, y) == pytest.approx(im.mutual_information(x, y, approach=ref), abs=1e-10)
