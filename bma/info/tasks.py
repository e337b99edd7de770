"""Ground-truth tasks: samplers of (x, y) whose mutual information is known exactly, in nats.

The suite of benchmarks/mi_suite.py and the known-answer tests draw from here. Families (each an instance of
:class:`Task`; ``SUITE`` lists the benchmark's 40):

  gauss        jointly Gaussian x (N, dx), y (N, dy): coordinate i of y correlated with coordinate i of x (rho_i);
               I = -1/2 sum_i log(1 - rho_i^2). "dense": every pair correlated, "sparse": only the first few.
  student      multivariate Student-t with nu degrees of freedom and dispersion [[I, R], [R^T, I]] (R the same
               pairwise correlations): I = I_gauss(R) + c(nu, dx, dy), the shared chi-square scale adding c > 0
               even when R = 0 (Arellano-Valle, Contreras-Reyes & Genton 2013; :func:`student_t_mi`).
  transformed  an invertible elementwise map of a gauss or student task (asinh, cubic, half-cube x |x|^(1/2),
               exp, normal CDF, x + 0.3 sin 2x) or an invertible map of the whole vector (spiral: a rotation of
               x by an angle proportional to |x|^2): the MI is that of the untransformed task.
  independent  x and y independent (Gaussian, Student-t or uniform coordinates): I = 0.

Heavy tails (Student-t with nu <= 2 has no variance) and non-linear maps are what separate the estimators; the
independent controls catch a positive bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.special import digamma, gammaln, ndtr


def gaussian_pair_mi(rhos: tuple[float, ...]) -> float:
    """I(X; Y) of unit-variance Gaussian pairs with correlations rho_i (independent across pairs), nats."""
    return float(-0.5 * sum(math.log1p(-r * r) for r in rhos))


def _t_entropy_shape(nu: float, d: int) -> float:
    # the part of the d-dim Student-t entropy that depends only on (nu, d), less the d/2 log(nu pi) term (cancels)
    if d == 0:
        return 0.0
    return float(gammaln(nu / 2) - gammaln((nu + d) / 2) + (nu + d) / 2 * (digamma((nu + d) / 2) - digamma(nu / 2)))


def student_t_correction(nu: float, dx: int, dy: int) -> float:
    """c(nu, dx, dy) = I_t - I_gauss of a multivariate t with the same dispersion, nats (> 0, -> 0 as nu -> inf).

    From h(t_d) = 1/2 log det S + d/2 log(nu pi) + log Gamma(nu/2) - log Gamma((nu+d)/2)
    + (nu+d)/2 (psi((nu+d)/2) - psi(nu/2)) and I = h(X) + h(Y) - h(X, Y); the tests check it by Monte Carlo.
    """
    return _t_entropy_shape(nu, dx) + _t_entropy_shape(nu, dy) - _t_entropy_shape(nu, dx + dy)


def student_t_mi(nu: float, dx: int, dy: int, rhos: tuple[float, ...]) -> float:
    """Exact I(X; Y) of the multivariate t of :class:`Task` family ``student``, nats."""
    return gaussian_pair_mi(rhos) + student_t_correction(nu, dx, dy)


# -- invertible maps (the MI of the mapped variables is unchanged) -------------------------------------------------


def half_cube(a: np.ndarray) -> np.ndarray:
    return a * np.sqrt(np.abs(a))


def wiggly(a: np.ndarray) -> np.ndarray:
    return a + 0.3 * np.sin(2.0 * a)  # derivative 1 + 0.6 cos(2a) >= 0.4: strictly increasing


def spiral(a: np.ndarray, speed: float = 0.5) -> np.ndarray:
    """Rotate the first two coordinates by speed * |a|^2 (radians): invertible (the norm is kept), not elementwise."""
    out = a.copy()
    theta = speed * (a * a).sum(axis=1)
    c, s = np.cos(theta), np.sin(theta)
    out[:, 0] = c * a[:, 0] - s * a[:, 1]
    out[:, 1] = s * a[:, 0] + c * a[:, 1]
    return out


MAPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "asinh": np.arcsinh,
    "cubic": lambda a: a**3,
    "halfcube": half_cube,
    "exp": np.exp,
    "normcdf": ndtr,
    "wiggly": wiggly,
    "spiral": spiral,
}


@dataclass(frozen=True)
class Task:
    """One ground-truth task. ``sample(n, seed) -> (x (n, dx), y (n, dy))``; ``mi`` is exact, nats.

    family: gauss | student | independent. rhos: correlations of the first len(rhos) coordinate pairs.
    nu: Student-t degrees of freedom (student family; independent family: t marginals when set).
    map_x, map_y: names in MAPS applied to x and y after sampling (invertible: the MI is unchanged).
    marginal: for the independent family, "gauss", "student" or "uniform".
    """

    name: str
    family: str
    dx: int
    dy: int
    rhos: tuple[float, ...] = ()
    nu: float | None = None
    map_x: str | None = None
    map_y: str | None = None
    marginal: str = "gauss"
    tags: tuple[str, ...] = field(default=())

    @property
    def mi(self) -> float:
        if self.family == "independent":
            return 0.0
        if self.family == "student":
            return student_t_mi(self.nu, self.dx, self.dy, self.rhos)
        return gaussian_pair_mi(self.rhos)

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        if self.family == "independent":
            x, y = (self._independent(rng, n, d) for d in (self.dx, self.dy))
        else:
            x = rng.standard_normal((n, self.dx))
            y = rng.standard_normal((n, self.dy))
            k = len(self.rhos)
            r = np.asarray(self.rhos)
            y[:, :k] = r * x[:, :k] + np.sqrt(1.0 - r * r) * y[:, :k]
            if self.family == "student":
                scale = np.sqrt(self.nu / rng.chisquare(self.nu, size=(n, 1)))  # one scale per row, shared
                x, y = x * scale, y * scale
        if self.map_x:
            x = MAPS[self.map_x](x)
        if self.map_y:
            y = MAPS[self.map_y](y)
        return x, y

    def _independent(self, rng: np.random.Generator, n: int, d: int) -> np.ndarray:
        if self.marginal == "uniform":
            return rng.uniform(size=(n, d))
        if self.marginal == "student":
            return rng.standard_t(self.nu or 1.0, size=(n, d))
        return rng.standard_normal((n, d))


def rho_for(mi: float, pairs: int) -> tuple[float, ...]:
    """Equal correlations on ``pairs`` coordinate pairs giving ``mi`` nats in all."""
    rho = math.sqrt(1.0 - math.exp(-2.0 * mi / pairs))
    return (rho,) * pairs


def _gauss(dx: int, dy: int, mi: float, pairs: int | None = None, **kw) -> Task:
    pairs = pairs or min(dx, dy)
    kind = "dense" if pairs == min(dx, dy) else "sparse"
    name = kw.pop("name", None) or f"gauss-{kind}-{dx}x{dy}-mi{mi:g}"
    return Task(name, "gauss", dx, dy, rho_for(mi, pairs), **kw)


def _student(dx: int, dy: int, nu: float, rhos: tuple[float, ...] = (), **kw) -> Task:
    name = kw.pop("name", None) or f"student-{dx}x{dy}-nu{nu:g}" + ("-corr" if rhos else "")
    return Task(name, "student", dx, dy, rhos, nu=nu, tags=("heavy",), **kw)


def build_suite() -> list[Task]:
    """The benchmark's 40 tasks (benchmarks/mi_suite.py); their true MI ranges 0 to 3 nats."""
    t: list[Task] = []
    # Gaussian, dense and sparse, 1 to 50 dimensions
    t += [_gauss(1, 1, 0.5), _gauss(1, 1, 2.0), _gauss(2, 2, 1.0), _gauss(3, 3, 1.0), _gauss(5, 5, 1.0),
          _gauss(5, 5, 2.5), _gauss(10, 10, 2.0), _gauss(25, 25, 2.0), _gauss(50, 50, 2.0)]
    t += [_gauss(5, 5, 1.0, pairs=2), _gauss(25, 25, 1.0, pairs=2), _gauss(50, 50, 1.5, pairs=3),
          _gauss(2, 10, 1.0, pairs=2)]
    # Student-t: identity dispersion (dependence through the shared scale only) and correlated
    t += [_student(1, 1, nu) for nu in (1, 2, 3, 5)]
    t += [_student(2, 2, 1), _student(2, 2, 3), _student(3, 3, 2), _student(5, 5, 3)]
    t += [_student(1, 1, 2, rho_for(0.5, 1)), _student(3, 3, 3, rho_for(1.0, 3)), _student(5, 5, 1, rho_for(1.0, 5)),
          _student(5, 5, 5, rho_for(1.0, 2))]
    # invertible transforms: the MI of the untransformed task
    t += [_gauss(1, 1, 1.0, map_x="cubic", map_y="cubic", name="cubic-1x1-mi1"),
          _gauss(5, 5, 1.0, map_x="cubic", map_y="exp", name="cubic-exp-5x5-mi1"),
          _gauss(1, 1, 1.0, map_x="halfcube", map_y="halfcube", name="halfcube-1x1-mi1"),
          _gauss(25, 25, 2.0, map_x="halfcube", map_y="halfcube", name="halfcube-25x25-mi2"),
          _gauss(3, 3, 1.0, map_x="normcdf", map_y="wiggly", name="normcdf-wiggly-3x3-mi1"),
          _student(1, 1, 1, name="asinh-student-1x1-nu1", map_x="asinh", map_y="asinh"),
          _student(3, 3, 2, rho_for(1.0, 3), name="asinh-student-3x3-nu2-corr", map_x="asinh", map_y="asinh"),
          _gauss(2, 2, 1.0, map_x="spiral", name="spiral-2x2-mi1"),
          _gauss(3, 3, 1.0, map_x="spiral", map_y="spiral", name="spiral-3x3-mi1"),
          _gauss(5, 5, 1.0, map_x="spiral", name="spiral-5x5-mi1")]
    # independent controls
    t += [Task("indep-gauss-1x1", "independent", 1, 1), Task("indep-gauss-5x5", "independent", 5, 5),
          Task("indep-gauss-25x25", "independent", 25, 25),
          Task("indep-student-2x2-nu1", "independent", 2, 2, nu=1.0, marginal="student", tags=("heavy",)),
          Task("indep-uniform-3x3", "independent", 3, 3, marginal="uniform")]
    return t


SUITE: list[Task] = build_suite()
TASKS: dict[str, Task] = {task.name: task for task in SUITE}
