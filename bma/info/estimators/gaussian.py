"""Closed-form MI under a joint-Gaussian model: log-determinants (``gaussian``) and canonical correlations (``cca``).

Both compute I = 1/2 (log det Sx + log det Sy - log det S) = -1/2 sum_i log(1 - rho_i^2) from the sample
covariances; they are two implementations of one number (tests check they agree). Exact for Gaussian data up to
sampling error, blind to non-linear dependence (a spiral or a cubic map is under-reported).

Bias. The plug-in value is biased high: under independence 2N * I_hat ~ chi2(dx * dy), so E[I_hat] ~ dx dy / (2N)
(+9.4 nats at 128 x 128, N = 1000). ``bias_correction``:
  "exact" (default, or True)  subtract 1/2 (B(dx) + B(dy) - B(dx + dy)), B(d) = sum_{i=1..d} digamma((N - i) / 2).
                        E[log det S] = log det Sigma + B(d) + d log(2 / (N - 1)) exactly for Gaussian data
                        (Wishart), so the corrected value is unbiased at any d / N and any true MI.
  "first_order"         subtract dx dy / (2N), DESIGN.md's correction (the large-N expansion of "exact"); it
                        undercorrects by 1.2 nats at 128 x 128, N = 1000 (measured: +1.23 vs -0.02 for "exact").
  "none" (or False)     the plug-in value.
The corrected value is not clipped at 0: clipping would re-introduce a positive bias near independence.

Rank. Each variable is first reduced to its principal scores (singular values above ``rtol`` = 1e-7 times the
largest, i.e. float32 round-off of features computed in single precision counts as zero):
a degenerate Gaussian's MI is that of its non-degenerate coordinates, so a recalled feature confined to the span
of n < d memory slots is handled. dx, dy in the correction are these ranks. If the joint covariance is singular
(an exact linear relation between x and y) the Gaussian MI is infinite: the estimate is flagged (value NaN,
``raw_value`` inf).

Heavy tails. The sample covariance of heavy-tailed data is dominated by its few largest rows, so the Gaussian MI of
heavy-tailed data is not only blind to non-linear dependence: it can be far off in either direction (Student-t,
5 x 5, 1 degree of freedom: see docs/information.md). ``copula`` (below) is the robust variant: it rank-transforms
each coordinate to a standard normal first (normal scores), which leaves the MI unchanged (an invertible map of each
coordinate) and removes the tails, then computes the same closed form.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma, ndtri
from scipy.stats import rankdata

from bma.info.interface import Estimate, check_pair, flagged

BIAS_CORRECTIONS = ("first_order", "exact", "none")


def _principal_scores(x: np.ndarray, rtol: float) -> np.ndarray:
    """Centred x expressed in its principal axes with non-negligible variance: (N, rank).

    Eigendecomposition of the (d, d) covariance rather than an SVD of the (N, d) data: ~10x cheaper at
    N = 1000, d = 128. A direction is kept when its variance exceeds rtol^2 times the largest one (the same rule as
    a singular-value ratio of rtol; CCA below uses the SVD, and the tests check that both agree).
    """
    xc = x - x.mean(axis=0)
    evals, evecs = np.linalg.eigh(xc.T @ xc)
    if evals.size == 0 or evals[-1] <= 0.0:
        return xc[:, :0]
    keep = evals > max(rtol, 1e-7) ** 2 * evals[-1]  # eigh resolves eigenvalues to ~1e-16 of the largest
    return xc @ evecs[:, keep]  # (N, rank)


def _orthonormal_basis(x: np.ndarray, rtol: float) -> np.ndarray:
    xc = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(xc, full_matrices=False)
    if s.size == 0 or s[0] == 0.0:
        return xc[:, :0]
    return u[:, s > rtol * s[0]]  # (N, rank)


def gaussian_mi_bias(dx: int, dy: int, n: int, kind: str) -> float:
    """Expected excess of the plug-in Gaussian MI over the truth, nats (see the module docstring)."""
    if kind == "none" or dx == 0 or dy == 0:
        return 0.0
    if kind == "first_order":
        return dx * dy / (2.0 * n)
    if kind == "exact":
        half = (n - np.arange(1, dx + dy + 1)) / 2.0  # (N - i) / 2, i = 1..dx+dy
        psi = digamma(half)
        return 0.5 * float(psi[:dx].sum() + psi[:dy].sum() - psi.sum())
    raise ValueError(f"bias_correction: expected one of {BIAS_CORRECTIONS} or a bool, got {kind!r}")


def _normalise_correction(bias_correction: bool | str) -> str:
    if bias_correction is True:
        return "exact"
    if bias_correction is False or bias_correction is None:
        return "none"
    if bias_correction not in BIAS_CORRECTIONS:
        raise ValueError(f"bias_correction: expected one of {BIAS_CORRECTIONS} or a bool, got {bias_correction!r}")
    return str(bias_correction)


def _check_enough(n: int, rx: int, ry: int) -> None:
    # with N <= rx + ry + 1 the sample joint covariance is singular whatever the truth: every canonical
    # correlation is 1 and the estimate is meaningless (and the exact correction undefined)
    if n <= rx + ry + 1:
        raise ValueError(f"x: the Gaussian estimators need N > rank(x) + rank(y) + 1 = {rx + ry + 1}, got N = {n}")


def _infinite(name: str, n: int, params: dict) -> Estimate:
    return flagged(Estimate(float("inf"), name, n, params),
                   "infinite: x and y are exactly linearly related (the Gaussian MI of a deterministic linear map)")


def normal_scores(a: np.ndarray) -> np.ndarray:
    """Each column of a (N, d) replaced by its normal scores ndtri(rank / (N + 1)): (N, d), marginally ~ N(0, 1).

    Ties get their average rank (discrete columns keep their repeated values). Invariant to any strictly
    increasing map of a column, so the MI of the scores equals the MI of the data.
    """
    ranks = rankdata(a, axis=0, method="average")
    return ndtri(ranks / (a.shape[0] + 1.0))


class GaussianMI:
    """I(X; Y) of the Gaussian with the sample's covariance, via log-determinants (Cholesky)."""

    name = "gaussian"

    def __init__(self, bias_correction: bool | str = "exact", rtol: float = 1e-7):
        self.bias_correction = _normalise_correction(bias_correction)
        self.rtol = float(rtol)

    def parameters(self) -> dict:
        return {"bias_correction": self.bias_correction, "rtol": self.rtol}

    def estimate(self, x: np.ndarray, y: np.ndarray) -> Estimate:
        x, y = check_pair(x, y, min_samples=3)
        n = x.shape[0]
        xs, ys = _principal_scores(x, self.rtol), _principal_scores(y, self.rtol)
        rx, ry = xs.shape[1], ys.shape[1]
        if rx == 0 or ry == 0:  # a constant variable carries no information
            return Estimate(0.0, self.name, n, self.parameters())
        _check_enough(n, rx, ry)
        joint = np.hstack([xs, ys])
        # the principal scores are already decorrelated within x and within y, so log det Sx = sum log var
        ld_x = float(np.log(xs.var(axis=0)).sum())
        ld_y = float(np.log(ys.var(axis=0)).sum())
        try:
            chol = np.linalg.cholesky(np.cov(joint, rowvar=False, ddof=0))
        except np.linalg.LinAlgError:  # exact linear relation between x and y
            return _infinite(self.name, n, self.parameters())
        diag = np.diag(chol)
        # the y-block of the Cholesky diagonal holds conditional std's of y given x (and earlier y's): a ratio to
        # the marginal variance at working precision means y is (near) linearly determined by x: infinite MI
        if not np.all(diag > 0) or np.any(diag[rx:] ** 2 <= 1e-12 * ys.var(axis=0)):
            return _infinite(self.name, n, self.parameters())
        raw = 0.5 * (ld_x + ld_y - 2.0 * float(np.log(diag).sum()))
        value = raw - gaussian_mi_bias(rx, ry, n, self.bias_correction)
        return Estimate(float(value), self.name, n, self.parameters())


class CCAMI:
    """I(X; Y) = -1/2 sum_i log(1 - rho_i^2) over the sample canonical correlations rho_i (SVD of Qx^T Qy)."""

    name = "cca"

    def __init__(self, bias_correction: bool | str = "exact", rtol: float = 1e-7):
        self.bias_correction = _normalise_correction(bias_correction)
        self.rtol = float(rtol)

    def parameters(self) -> dict:
        return {"bias_correction": self.bias_correction, "rtol": self.rtol}

    def canonical_correlations(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Sample canonical correlations, descending, in [0, 1]: (min(rank x, rank y),)."""
        x, y = check_pair(x, y, min_samples=3)
        qx, qy = _orthonormal_basis(x, self.rtol), _orthonormal_basis(y, self.rtol)
        if qx.shape[1] == 0 or qy.shape[1] == 0:
            return np.zeros(0)
        return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)

    def estimate(self, x: np.ndarray, y: np.ndarray) -> Estimate:
        x, y = check_pair(x, y, min_samples=3)
        n = x.shape[0]
        qx, qy = _orthonormal_basis(x, self.rtol), _orthonormal_basis(y, self.rtol)
        rx, ry = qx.shape[1], qy.shape[1]
        if rx == 0 or ry == 0:
            return Estimate(0.0, self.name, n, self.parameters())
        _check_enough(n, rx, ry)
        rho = np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)
        one_minus = 1.0 - rho**2
        if np.any(one_minus <= 1e-12):  # exact linear relation: infinite MI
            return _infinite(self.name, n, self.parameters())
        raw = -0.5 * float(np.log(one_minus).sum())
        value = raw - gaussian_mi_bias(rx, ry, n, self.bias_correction)
        return Estimate(float(value), self.name, n, self.parameters())


class GaussianCopulaMI:
    """Gaussian-copula MI: the ``gaussian`` closed form on the normal scores of every coordinate.

    Exact (up to sampling error and the exact bias correction) whenever some invertible map of each coordinate makes
    the data jointly Gaussian: Gaussian data, and any elementwise monotone transform of it (exp, cubic, asinh, the
    normal CDF, ...), with heavy marginal tails or not. Cheap at any dimension (N log N ranks per column, then the
    closed form). Blind to dependence a Gaussian copula cannot express: a Student-t's shared scale (its tail
    dependence), rotations that depend on the radius (spiral), non-monotone relations; there it reports the part a
    Gaussian copula carries. For scalar x and y the population value is a lower bound on the true MI (the
    scores are exactly Gaussian marginally, and a Gaussian has the largest entropy for its covariance).
    """

    name = "copula"

    def __init__(self, bias_correction: bool | str = "exact", rtol: float = 1e-7):
        self._gaussian = GaussianMI(bias_correction=bias_correction, rtol=rtol)

    def parameters(self) -> dict:
        return self._gaussian.parameters()

    def estimate(self, x: np.ndarray, y: np.ndarray) -> Estimate:
        x, y = check_pair(x, y, min_samples=3)
        e = self._gaussian.estimate(normal_scores(x), normal_scores(y))
        return Estimate(e.value, self.name, e.n_samples, self.parameters(), flags=e.flags, raw_value=e.raw_value)
