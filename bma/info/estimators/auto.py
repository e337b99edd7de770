"""``auto``: the MI estimator that picks for itself. The rule lives here and only here (docs/information.md quotes it).

The rule (``choose``), for x (N, dx), y (N, dy):

  1. Every coordinate is replaced by its normal scores ndtri(rank / (N + 1)). The MI is unchanged (an invertible
     map of each coordinate), heavy marginal tails and monotone distortions (exp, cubic, asinh, ...) are gone. The
     raw data's tail weight (largest excess kurtosis over the coordinates) is recorded to say why this matters:
     on heavy tails (Student-t) the plain ``gaussian`` estimate is off by up to +3 nats, and KSG on the raw data
     loses 0.18 of the 0.43 nats of the 2 x 2, 1-dof task (N = 5000) that it finds on the scores.
  2. Candidates on the scores:
       copula   the Gaussian closed form with its exact bias correction; needs N > dx + dy + 1. Unbiased whenever
                the scores are jointly Gaussian, at any dimension; misses dependence a Gaussian copula cannot
                express (a Student-t's shared scale, a spiral).
       ksg      KSG (k = 3, Euclidean within x and y, joint max-norm) when dx + dy <= ``max_ksg_dim`` (10) and N >=
                ``min_ksg_samples`` (50): catches any dependence at low dimension, biased low as the dimension or
                the MI grows (-0.2 at 5 x 5 for I = 1, N = 5000).
  3. The estimate is the larger candidate. Both are biased low on the dependence they miss (for scalar x and y
     the population copula value is a lower bound on the truth; KSG's bias at moderate MI is negative), so the
     larger one is the better estimate; the cost is a small positive bias at independence (the suite's five
     controls: mean +0.003 at N = 1000, +0.001 at N = 5000, against -0.000 for the copula alone).
  4. If no candidate applies (N <= dx + dy + 1 with dx + dy > ``max_ksg_dim``), the call raises ValueError like the
     Gaussian estimators. A copula that finds an exact relation between the scores (a deterministic monotone map)
     flags the estimate as infinite.

``Estimate.params`` holds the parameters plus ``picked`` (``"copula"`` or ``"ksg"``), ``candidates`` (each
candidate's value), ``tail_kurtosis`` and ``reason``. Measured on the 40-task suite (benchmarks/mi_suite.py): see
docs/information.md, section 5.
"""

from __future__ import annotations

import numpy as np

from bma.info.estimators.gaussian import GaussianCopulaMI, normal_scores
from bma.info.estimators.knn import KSG
from bma.info.interface import Estimate, check_pair

RULE = "normal scores; max(copula, ksg if dx + dy <= max_ksg_dim)"


def tail_kurtosis(a: np.ndarray) -> float:
    """Largest excess kurtosis over the columns of a (N, d): 0 for Gaussian columns, >~ 5 for heavy tails."""
    c = a - a.mean(axis=0)
    var = (c * c).mean(axis=0)
    ok = var > 0
    if not ok.any():
        return 0.0
    kurt = (c[:, ok] ** 4).mean(axis=0) / var[ok] ** 2 - 3.0
    return float(kurt.max())


def choose(n: int, dx: int, dy: int, max_ksg_dim: int, min_ksg_samples: int) -> tuple[str, ...]:
    """The candidates the rule computes for a sample of N rows, dimensions dx and dy."""
    out = []
    if n > dx + dy + 1:
        out.append("copula")
    if dx + dy <= max_ksg_dim and n >= min_ksg_samples:
        out.append("ksg")
    return tuple(out)


class AutoMI:
    """The larger of the Gaussian-copula MI and (at low dimension) KSG, both on normal scores (module docstring).

    k: KSG neighbours. max_ksg_dim: largest dx + dy at which KSG is a candidate. min_ksg_samples: smallest N at
    which it is. bias_correction: the copula's (see ``gaussian``). seed: KSG's tie-breaking noise.
    """

    name = "auto"

    def __init__(
        self, k: int = 3, max_ksg_dim: int = 10, min_ksg_samples: int = 50, bias_correction: str = "exact",
        seed: int = 0,
    ):
        if max_ksg_dim < 0 or min_ksg_samples < int(k) + 2:
            raise ValueError(f"max_ksg_dim >= 0 and min_ksg_samples >= k + 2 expected, got {max_ksg_dim}, "
                             f"{min_ksg_samples}")
        self.k, self.max_ksg_dim, self.min_ksg_samples = int(k), int(max_ksg_dim), int(min_ksg_samples)
        self.bias_correction, self.seed = bias_correction, int(seed)
        self._copula = GaussianCopulaMI(bias_correction=bias_correction)
        self._ksg = KSG(k=self.k, metric="euclidean", seed=self.seed)

    def parameters(self) -> dict:
        return {"rule": RULE, "k": self.k, "max_ksg_dim": self.max_ksg_dim, "min_ksg_samples": self.min_ksg_samples,
                "bias_correction": self.bias_correction, "seed": self.seed}

    def estimate(self, x: np.ndarray, y: np.ndarray) -> Estimate:
        x, y = check_pair(x, y, min_samples=3)
        n, dx, dy = x.shape[0], x.shape[1], y.shape[1]
        names = choose(n, dx, dy, self.max_ksg_dim, self.min_ksg_samples)
        if not names:
            raise ValueError(f"x: auto needs N > dx + dy + 1 = {dx + dy + 1} at dx + dy = {dx + dy} > max_ksg_dim = "
                             f"{self.max_ksg_dim}, got N = {n}")
        sx, sy = normal_scores(x), normal_scores(y)
        found: dict[str, Estimate] = {}
        for name in names:
            try:
                # the scores are already normal: the copula's own ranking leaves them as they are
                found[name] = (self._copula if name == "copula" else self._ksg).estimate(sx, sy)
            except ValueError:  # rank-deficient scores (many ties): the other candidate decides
                continue
        if not found:
            raise ValueError(f"x: no candidate of auto ({', '.join(names)}) applies to this sample (N = {n})")
        params = {**self.parameters(), "tail_kurtosis": max(tail_kurtosis(x), tail_kurtosis(y)),
                  "candidates": {k: v.raw_value for k, v in found.items()}}
        copula = found.get("copula")
        if copula is not None and copula.flags:  # an exact monotone relation: the MI is infinite
            return Estimate(copula.value, self.name, n, {**params, "picked": "copula", "reason": copula.flags[0]},
                            flags=copula.flags, raw_value=copula.raw_value)
        picked = max(found, key=lambda k: found[k].value)
        reason = (f"{picked} is the larger of {', '.join(f'{k} {v.value:.3f}' for k, v in found.items())}"
                  if len(found) > 1 else f"only {picked} applies (N = {n}, dx + dy = {dx + dy})")
        return Estimate(found[picked].value, self.name, n, {**params, "picked": picked, "reason": reason})
