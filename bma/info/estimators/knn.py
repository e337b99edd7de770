"""k-nearest-neighbour estimators: KSG mutual information (``ksg``) and Kozachenko-Leonenko entropy (``kl``).

KSG searches neighbours with scipy's cKDTree at low dimension and by blocked brute force above (faster there,
and the only search for the Euclidean metric); KL uses the tree. Their bias grows with dimension: at the model's 128-d features they are not usable as
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


METRICS = ("max", "euclidean")
ALGORITHMS = ("auto", "tree", "brute")
# auto: cKDTree up to this joint dimension (dx + dy), brute force above. Measured by benchmarks/ksg_speed.py: the
# tree wins at low dimension and loses several-fold from the crossover on (see benchmarks/README.md).
TREE_MAX_JOINT_DIM = 6
_CHUNK_ELEMENTS = 1 << 21  # rows x N distances per brute-force block: 2M float64 = 16 MB per array


def _sq_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (m, d), (n, d) -> (m, n).

    Coordinate by coordinate (exact differences) at low d, where neighbours are close and the Gram identity
    |a|^2 + |b|^2 - 2 a.b would lose digits to cancellation; the Gram identity (one matrix product) above.
    """
    if a.shape[1] <= 3:
        out = np.zeros((a.shape[0], b.shape[0]))
        for j in range(a.shape[1]):
            diff = a[:, j, None] - b[None, :, j]
            out += diff * diff
        return out
    out = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(out, 0.0, out=out)


def _max_norm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Max-norm (Chebyshev) distances (m, d), (n, d) -> (m, n); exact, column by column."""
    out = np.abs(a[:, 0, None] - b[None, :, 0])
    for j in range(1, a.shape[1]):
        np.maximum(out, np.abs(a[:, j, None] - b[None, :, j]), out=out)
    return out


def ksg_counts_brute(x: np.ndarray, y: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """KSG neighbour counts by brute force, in row blocks: (n_x, n_y), each (N,) int.

    eps_i = distance to the k-th neighbour of point i under the joint norm max(d_x, d_y); n_x (n_y) = number of
    other points strictly closer than eps_i in x (y). One distance matrix per block serves both the k-th neighbour
    and the counts, so the strict inequality is consistent by construction. Euclidean distances are compared
    squared (the order is the same). O(N^2 (dx + dy)) time, O(block x N) memory.
    """
    n = x.shape[0]
    dist = _sq_euclidean if metric == "euclidean" else _max_norm
    nx, ny = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        dx, dy = dist(x[start:stop], x), dist(y[start:stop], y)  # (b, N) each
        joint = np.maximum(dx, dy)
        local = np.arange(stop - start)
        joint[local, start + local] = np.inf  # a point is not its own neighbour
        eps = np.partition(joint, k - 1, axis=1)[:, k - 1]  # (b,)
        self_in = (eps > 0).astype(np.int64)  # the point itself (distance 0) is strictly inside when eps > 0
        nx[start:stop] = (dx < eps[:, None]).sum(axis=1) - self_in
        ny[start:stop] = (dy < eps[:, None]).sum(axis=1) - self_in
    return nx, ny


def ksg_counts_tree(x: np.ndarray, y: np.ndarray, k: int, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The same counts as :func:`ksg_counts_brute` with metric "max", through scipy's cKDTree (fast at low d)."""
    joint = np.hstack([x, y])
    dist, _ = cKDTree(joint).query(joint, k=k + 1, p=np.inf, workers=workers)
    eps = dist[:, -1]  # (N,) distance to the k-th neighbour (column 0 is the point itself)
    # strictly closer than eps: shrink the radius by one ulp; the point itself is inside whenever eps > 0
    r = np.nextafter(eps, -np.inf)
    self_in = (eps > 0).astype(np.int64)
    nx = cKDTree(x).query_ball_point(x, r, p=np.inf, return_length=True, workers=workers) - self_in
    ny = cKDTree(y).query_ball_point(y, r, p=np.inf, return_length=True, workers=workers) - self_in
    return nx, ny


class KSG:
    """Kraskov, Stoegbauer & Grassberger (2004), algorithm 1.

    I = psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >, with eps_i the distance to the k-th neighbour of point i
    in the joint space, under the joint norm max(d_x, d_y), and n_x (n_y) the number of other points strictly closer
    than eps_i in the x (y) space.

    k: neighbours; 3 is a good bias/variance compromise at N ~ 1e3 (bias falls, variance grows, as k shrinks).
    metric: the distance within each space. "max" (max-norm over coordinates, Kraskov's choice; the joint norm is
        then the max-norm of the joint vector, as in ``infomeasure`` with ``minkowski_p=inf``) or "euclidean"
        (Euclidean within x and within y, joint max of the two: bmi's default; the same as "max" at d = 1).
    standardize: scale every column to unit variance first. The MI is invariant to it, the estimator is not: the
        norms mix the coordinates, and a column with a large scale would decide all neighbourhoods alone.
    noise: tie-breaking noise, as a fraction of each column's standard deviation (0 disables).
    copula: replace every coordinate by its normal scores ndtri(rank / (N + 1)) first. The MI is unchanged (an
        invertible map of each coordinate); heavy tails no longer stretch the neighbourhoods (Student-t, exp(x)).
    algorithm: neighbour search. "tree" (cKDTree; max-norm only), "brute" (blocked distance matrices, O(N^2 d):
        faster than the tree from a joint dimension of ~6 on, and the only search for "euclidean"), or "auto"
        (tree for "max" up to ``TREE_MAX_JOINT_DIM``, and for "euclidean" at dx = dy = 1 where it is the same norm;
        brute otherwise). All give the same counts.
    seed: for the noise. workers: cKDTree query threads (1 keeps trials from oversubscribing cores).
    """

    name = "ksg"

    def __init__(
        self,
        k: int = 3,
        standardize: bool = True,
        noise: float = 1e-10,
        seed: int = 0,
        workers: int = 1,
        metric: str = "max",
        algorithm: str = "auto",
        copula: bool = False,
    ):
        if int(k) < 1:
            raise ValueError(f"k: expected >= 1, got {k}")
        if noise < 0:
            raise ValueError(f"noise: expected >= 0, got {noise}")
        if metric not in METRICS:
            raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: expected one of {ALGORITHMS}, got {algorithm!r}")
        if algorithm == "tree" and metric != "max":
            raise ValueError("algorithm: 'tree' supports metric 'max' only (the joint norm max(d_x, d_y) of "
                             "Euclidean spaces is not a Minkowski norm); use 'brute' or 'auto'")
        self.k, self.standardize, self.noise = int(k), bool(standardize), float(noise)
        self.seed, self.workers = int(seed), int(workers)
        self.metric, self.algorithm, self.copula = metric, algorithm, bool(copula)

    def parameters(self) -> dict:
        return {"k": self.k, "standardize": self.standardize, "noise": self.noise, "seed": self.seed,
                "metric": self.metric, "algorithm": self.algorithm, "copula": self.copula}

    def _prepare(self, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.copula:
            from bma.info.estimators.gaussian import normal_scores

            a = normal_scores(a)
        if self.standardize:
            sd = a.std(axis=0, keepdims=True)
            sd[sd == 0] = 1.0
            a = (a - a.mean(axis=0, keepdims=True)) / sd
        return _jitter(a, self.noise, rng)

    def _use_tree(self, dx: int, dy: int) -> bool:
        # in a 1-D space every norm is |a - b|: "euclidean" with dx = dy = 1 is the max-norm estimator exactly
        max_norm = self.metric == "max" or dx == dy == 1
        if self.algorithm == "auto":
            return max_norm and dx + dy <= TREE_MAX_JOINT_DIM
        return self.algorithm == "tree"

    def local_values(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Pointwise terms whose mean is the estimate: (N,) nats."""
        x, y = check_pair(x, y, min_samples=self.k + 2)
        rng = np.random.default_rng(self.seed)
        x, y = self._prepare(x, rng), self._prepare(y, rng)
        n = x.shape[0]
        if self._use_tree(x.shape[1], y.shape[1]):
            nx, ny = ksg_counts_tree(x, y, self.k, self.workers)
        else:
            nx, ny = ksg_counts_brute(x, y, self.k, self.metric)
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
