"""k-nearest-neighbour estimators: KSG mutual information (``ksg``) and Kozachenko-Leonenko entropy (``kl``).

Both use scipy's cKDTree. Their bias grows with dimension: at the model's 128-d features they are not usable as
they are (DESIGN.md: KSG 0.22 for a true 1.02 on sparse 25 x 25; KL +44 nats at d = 128), so the probes project
to a few principal components before calling them. See docs/information.md for the measured envelope.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma, gammaln

from bma.info.interface import Estimate, as_2d, check_pair


def _jitter(a: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    # tiny noise breaks ties (repeated values make k-NN distances 0 and the counts ill-defined); Kraskov et al.
    # suggest ~1e-10 of the data's scale, negligible against any real neighbour distance
    if noise <= 0:
        return a
    scale = a.std(axis=0, keepdims=True)
    scale[scale == 0] = 1.0
    return a + noise * scale * rng.standard_normal(a.shape)


class KSG:
    """Kraskov, Stoegbauer & Grassberger (2004), algorithm 1, max-norm.

    I = psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >, with eps_i the max-norm distance to the k-th
    neighbour of point i in the joint space and n_x (n_y) the number of other points strictly closer than eps_i
    in the x (y) space.

    k: neighbours; 3 is a good bias/variance compromise at N ~ 1e3 (bias falls, variance grows, as k shrinks).
    standardize: scale every column to unit variance first. The MI is invariant to it, the estimator is not: the
        max-norm mixes the coordinates, and a column with a large scale would decide all neighbourhoods alone.
    noise: tie-breaking noise, as a fraction of each column's standard deviation (0 disables).
    seed: for the noise. workers: cKDTree query threads (1 keeps trials from oversubscribing cores).
    """

    name = "ksg"

    def __init__(self, k: int = 3, standardize: bool = True, noise: float = 1e-10, seed: int = 0, workers: int = 1):
        if int(k) < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        if noise < 0:
            raise ValueError(f"noise: expected >= 0, got {noise}")
        self.k, self.standardize, self.noise = int(k), bool(standardize), float(noise)
        self.seed, self.workers = int(seed), int(workers)

    def parameters(self) -> dict:
        return {"k": self.k, "standardize": self.standardize, "noise": self.noise, "seed": self.seed}

    def _prepare(self, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.standardize:
            sd = a.std(axis=0, keepdims=True)
            sd[sd == 0] = 1.0
            a = (a - a.mean(axis=0, keepdims=True)) / sd
        return _jitter(a, self.noise, rng)

    def local_values(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Pointwise terms whose mean is the estimate: (N,) nats."""
        x, y = check_pair(x, y, min_samples=self.k + 2)
        rng = np.random.default_rng(self.seed)
        x, y = self._prepare(x, rng), self._prepare(y, rng)
        n = x.shape[0]
        joint = np.hstack([x, y])
        dist, _ = cKDTree(joint).query(joint, k=self.k + 1, p=np.inf, workers=self.workers)
        eps = dist[:, -1]  # (N,) distance to the k-th neighbour (column 0 is the point itself)
        # strictly closer than eps: shrink the radius by one ulp; the point itself is inside whenever eps > 0
        r = np.nextafter(eps, -np.inf)
        self_in = (eps > 0).astype(np.int64)
        nx = cKDTree(x).query_ball_point(x, r, p=np.inf, return_length=True, workers=self.workers) - self_in
        ny = cKDTree(y).query_ball_point(y, r, p=np.inf, return_length=True, workers=self.workers) - self_in
        return digamma(self.k) + digamma(n) - digamma(nx + 1) - digamma(ny + 1)

    def estimate(self, x: np.ndarray, y: np.ndarray) -> Estimate:
        local = self.local_values(x, y)
        return Estimate(float(local.mean()), self.name, int(local.shape[0]), self.parameters())


def log_unit_ball_volume(d: int, p: float) -> float:
    """log volume of the unit ball of the p-norm in R^d (p = 2 or inf)."""
    if p == np.inf:
        return d * np.log(2.0)
    if p == 2:
        return 0.5 * d * np.log(np.pi) - gammaln(0.5 * d + 1.0)
    raise ValueError(f"p: expected 2 or inf, got {p}")


class KozachenkoLeonenko:
    """Kozachenko-Leonenko differential entropy: H = psi(N) - psi(k) + log V_d + d < log eps_i >.

    eps_i: distance from point i to its k-th neighbour in the p-norm; V_d: volume of the unit p-ball.
    Not scale-invariant (differential entropy is not): H(aX) = H(X) + d log|a|. Reliable to d ~ 5 at N ~ 1e3;
    overestimates past d ~ 8 (see docs/information.md).
    k: neighbours. p: 2 (Euclidean, default) or inf (max-norm). noise, seed: tie-breaking as for KSG.
    """

    name = "kl"

    def __init__(self, k: int = 3, p: float = 2, noise: float = 1e-10, seed: int = 0, workers: int = 1):
        if int(k) < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        if p not in (2, np.inf, float("inf")):
            raise ValueError(f"p: expected 2 or inf, got {p}")
        if noise < 0:
            raise ValueError(f"noise: expected >= 0, got {noise}")
        self.k, self.p, self.noise, self.seed, self.workers = int(k), float(p), float(noise), int(seed), int(workers)

    def parameters(self) -> dict:
        return {"k": self.k, "p": self.p, "noise": self.noise, "seed": self.seed}

    def estimate(self, x: np.ndarray) -> Estimate:
        x = as_2d(x, "x", min_samples=self.k + 2)
        x = _jitter(x, self.noise, np.random.default_rng(self.seed))
        n, d = x.shape
        dist, _ = cKDTree(x).query(x, k=self.k + 1, p=self.p, workers=self.workers)
        eps = dist[:, -1]
        if np.any(eps <= 0):
            n_zero = int(np.sum(eps <= 0))
            raise ValueError(f"x: {n_zero} points have {self.k} exact duplicates (zero k-NN distance); set noise > 0")
        value = digamma(n) - digamma(self.k) + log_unit_ball_volume(d, self.p) + d * float(np.log(eps).mean())
        return Estimate(float(value), self.name, n, self.parameters())
