"""The ground-truth tasks: their MI is what they claim (closed forms checked by Monte Carlo), samples are sane."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bma.info.tasks import SUITE, TASKS, Task, gaussian_pair_mi, student_t_correction, student_t_mi


@pytest.mark.parametrize(("nu", "dx", "dy", "rhos"), [(1, 1, 1, ()), (3, 2, 3, (0.5,)), (2, 1, 1, (0.7,))])
def test_student_t_mi_matches_monte_carlo(nu, dx, dy, rhos):
    # I = E[log p(x, y) - log p(x) - log p(y)] with scipy's multivariate-t densities, on the task's own samples
    task = Task("t", "student", dx, dy, rhos, nu=nu)
    x, y = task.sample(60_000, seed=1)
    disp = np.eye(dx + dy)
    for i, r in enumerate(rhos):
        disp[i, dx + i] = disp[dx + i, i] = r
    t = lambda idx: stats.multivariate_t(np.zeros(len(idx)), disp[np.ix_(idx, idx)], df=nu)  # noqa: E731
    jx, jy = list(range(dx)), list(range(dx, dx + dy))
    pmi = t(jx + jy).logpdf(np.hstack([x, y])) - t(jx).logpdf(x) - t(jy).logpdf(y)
    se = pmi.std() / math.sqrt(len(pmi))
    assert task.mi == pytest.approx(student_t_mi(nu, dx, dy, rhos))
    assert pmi.mean() == pytest.approx(task.mi, abs=4 * se)


def test_student_t_correction_vanishes_as_the_tails_lighten():
    assert student_t_correction(1, 1, 1) == pytest.approx(0.2242, abs=1e-3)  # bmi's Student-t 1 x 1, 1 dof
    assert student_t_correction(1e6, 3, 3) < 1e-4
    assert student_t_correction(2, 2, 2) > student_t_correction(5, 2, 2) > 0


def test_suite_has_forty_distinct_tasks_with_known_mi():
    assert len(SUITE) == 40 and len(TASKS) == 40
    families = {t.family for t in SUITE}
    assert families == {"gauss", "student", "independent"}
    for task in SUITE:
        x, y = task.sample(64, seed=0)
        assert x.shape == (64, task.dx) and y.shape == (64, task.dy)
        assert np.isfinite(x).all() and np.isfinite(y).all()
        assert 0.0 <= task.mi < 3.0
    assert TASKS["gauss-dense-5x5-mi1"].mi == pytest.approx(1.0)
    assert TASKS["indep-student-2x2-nu1"].mi == 0.0


def test_gauss_task_matches_its_closed_form():
    task = TASKS["gauss-sparse-5x5-mi1"]
    x, y = task.sample(20_000, seed=2)
    r = [np.corrcoef(x[:, i], y[:, i])[0, 1] for i in range(5)]
    assert gaussian_pair_mi(tuple(r[:2])) == pytest.approx(1.0, abs=0.03)
    assert max(abs(v) for v in r[2:]) < 0.03  # only the first two pairs interact


def test_spiral_keeps_the_norm_and_is_invertible():
    from bma.info.tasks import spiral

    a = np.random.default_rng(3).standard_normal((500, 3))
    b = spiral(a)
    assert np.allclose(np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1))
    assert np.allclose(spiral(b, speed=-0.5), a)  # rotating back by the same angle (the norm is unchanged)
