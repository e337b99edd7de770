"""The shared interface: registry, Estimate records, input validation (every estimator, the same messages)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bma.info import Estimate, EntropyEstimator, MIEstimator, get_entropy_estimator, get_mi_estimator
from bma.info.estimators import CONTINUOUS_MI_ESTIMATORS, ENTROPY_ESTIMATORS, MI_ESTIMATORS, NEURAL_MI_ESTIMATORS

FAST_MI = [n for n in MI_ESTIMATORS if n not in NEURAL_MI_ESTIMATORS]
CHEAP_NEURAL = {"steps": 5, "hidden": 8, "embed_dim": 4}


def make(name):
    return get_mi_estimator(name, **(CHEAP_NEURAL if name in NEURAL_MI_ESTIMATORS else {}))


def test_registry_names():
    assert set(MI_ESTIMATORS) == {
        "auto", "gaussian", "cca", "copula", "ksg", "infonce", "nwj", "mine", "smile", "plugin_mi", "miller_madow_mi",
    }
    # what the probes (and the study config's validation) accept: every MI estimator of continuous features
    assert set(CONTINUOUS_MI_ESTIMATORS) == set(MI_ESTIMATORS) - {"plugin_mi", "miller_madow_mi"}
    assert set(ENTROPY_ESTIMATORS) == {"kl", "plugin", "miller_madow"}
    with pytest.raises(ValueError, match="name"):
        get_mi_estimator("mutual_magic")
    with pytest.raises(ValueError, match="name"):
        get_entropy_estimator("ksg")
    with pytest.raises(TypeError):
        get_mi_estimator("ksg", kk=3)


@pytest.mark.parametrize("name", list(MI_ESTIMATORS))
def test_mi_estimators_implement_the_protocol(name):
    est = make(name)
    assert isinstance(est, MIEstimator) and est.name == name
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, 64).astype(float)  # 1-D input is read as (N, 1); integer-valued works for all
    y = x + rng.standard_normal(64) * (0 if name.endswith("_mi") else 1)
    e = est.estimate(x, y)
    assert isinstance(e, Estimate) and isinstance(e.value, float)
    assert e.estimator == name and e.n_samples == 64
    assert e.params == est.parameters() if name != "auto" else e.params.items() >= est.parameters().items()
    if name in NEURAL_MI_ESTIMATORS:  # a 5-step critic on 32 held-out rows may be flagged: then NaN, with a reason
        assert e.ok == (not e.flags)  # flagged exactly when it says why
        if e.ok:
            assert np.isfinite(e.value) and e.raw_value == e.value
        else:  # the raw value is kept for inspection, and it is what the critic really gave
            assert e.raw_value is not None and all(isinstance(f, str) and f for f in e.flags)
    else:
        assert e.ok and np.isfinite(e.value) and e.raw_value == e.value
    assert (e.train_value is not None) == (name in NEURAL_MI_ESTIMATORS)
    assert (e.upper_bound is not None) == (name == "infonce")


@pytest.mark.parametrize("name", list(ENTROPY_ESTIMATORS))
def test_entropy_estimators_implement_the_protocol(name):
    est = get_entropy_estimator(name)
    assert isinstance(est, EntropyEstimator) and est.name == name
    x = np.random.default_rng(0).integers(0, 5, 50).astype(float)
    e = est.estimate(x + np.arange(50) * 1e-3 if name == "kl" else x)
    assert isinstance(e, Estimate) and e.estimator == name and e.n_samples == 50


@pytest.mark.parametrize("name", FAST_MI + list(NEURAL_MI_ESTIMATORS))
def test_mi_input_validation(name):
    est = make(name)
    x = np.random.default_rng(0).standard_normal((50, 2))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="x"):
        est.estimate(bad, x)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="y"):
        est.estimate(x, bad)
    with pytest.raises(ValueError, match="x, y"):
        est.estimate(x, x[:40])
    few = 0 if name.endswith("_mi") else 2  # discrete estimators work from one sample, continuous ones need more
    with pytest.raises(ValueError, match="samples"):
        est.estimate(x[:few], x[:few])
    with pytest.raises(ValueError, match="x"):
        est.estimate(x[:, :, None], x)


@pytest.mark.parametrize("name", list(ENTROPY_ESTIMATORS))
def test_entropy_input_validation(name):
    est = get_entropy_estimator(name)
    with pytest.raises(ValueError, match="x"):
        est.estimate(np.array([1.0, np.nan, 2.0, 3.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match="samples"):
        est.estimate(np.zeros((0, 2)))


def test_estimate_is_a_frozen_record():
    e = Estimate(1.5, "ksg", 100, {"k": 3})
    assert float(e) == 1.5 and e.ok and e.raw_value == 1.5 and e.flags == ()
    with pytest.raises(AttributeError):
        e.value = 2.0  # type: ignore[misc]


def test_a_flagged_estimate_carries_no_number():
    from bma.info.interface import flagged

    e = Estimate(-1e37, "nwj", 100, flags=("diverged",))
    assert math.isnan(e.value) and e.raw_value == -1e37 and not e.ok
    f = flagged(Estimate(0.3, "smile", 100), "above its ceiling", "")
    assert math.isnan(f.value) and f.raw_value == 0.3 and f.flags == ("above its ceiling",)
    assert flagged(Estimate(0.3, "ksg", 10)).ok


def test_importing_the_registry_does_not_import_torch_ray_or_mlflow():
    import subprocess
    import sys

    code = (
        "import sys, bma.info, bma.info.probes; "
        "bad = [m for m in ('torch', 'ray', 'mlflow') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
