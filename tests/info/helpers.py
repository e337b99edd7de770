"""Known-answer samplers shared by the estimator tests."""

from __future__ import annotations

import math

import numpy as np


def correlated_gaussians(n: int, d: int, mi: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x, y each (n, d); y_i = rho x_i + noise coordinate-wise, rho set so that I(X; Y) = mi nats exactly."""
    rng = np.random.default_rng(seed)
    rho = math.sqrt(1.0 - math.exp(-2.0 * mi / d))
    x = rng.standard_normal((n, d))
    return x, rho * x + math.sqrt(1.0 - rho**2) * rng.standard_normal((n, d))


def general_gaussian(n: int, dx: int, dy: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """x (n, dx), y (n, dy) jointly Gaussian with a random dense covariance; the true MI in nats."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((dx + dy, dx + dy))
    cov = a @ a.T / (dx + dy) + 0.3 * np.eye(dx + dy)
    ld = lambda m: np.linalg.slogdet(m)[1]  # noqa: E731
    true = 0.5 * (ld(cov[:dx, :dx]) + ld(cov[dx:, dx:]) - ld(cov))
    z = rng.multivariate_normal(np.zeros(dx + dy), cov, size=n)
    return z[:, :dx], z[:, dx:], float(true)
