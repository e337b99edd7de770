"""Discrete (Shannon) entropy and MI from counts: plug-in and Miller-Madow.

Symbols are the distinct rows of the input: x (N,) or (N, d) of any hashable numeric values (class labels, argmax
slots, binned codes). The plug-in estimate is biased low by about (m - 1) / (2N), m the number of symbols with
non-zero probability; Miller-Madow adds that term back with m the number of symbols observed. MI estimates are
H(X) + H(Y) - H(X, Y) with the same estimator for each term, so the MI correction is
(m_x - 1 + m_y - 1 - (m_xy - 1)) / (2N). Both remain biased when m is comparable to N (use N >> m).
"""

from __future__ import annotations

import numpy as np

from bma.info.interface import Estimate, as_2d, check_pair


def symbol_counts(x: np.ndarray) -> np.ndarray:
    """Counts of the distinct rows of x (N, d): (m,) positive integers."""
    _, counts = np.unique(x, axis=0, return_counts=True)
    return counts


def plugin_entropy_from_counts(counts: np.ndarray) -> float:
    """-sum p log p of the empirical distribution, nats."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    n = c.sum()
    return float(np.log(n) - (c * np.log(c)).sum() / n)


def entropy_of_distribution(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Exact -sum p log p along ``axis`` (0 log 0 = 0), nats. p need not be normalised exactly."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=axis)


def _joint(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # join rows as symbols; via unique inverse codes so mixed dtypes join safely
    _, cx = np.unique(x, axis=0, return_inverse=True)
    _, cy = np.unique(y, axis=0, return_inverse=True)
    return np.stack([cx.ravel(), cy.ravel()], axis=1)


class PluginEntropy:
    """Maximum-likelihood entropy of the empirical distribution."""

    name = "plugin"

    def parameters(self) -> dict:
        return {}

    def _correction(self, m: int, n: int) -> float:
        return 0.0

    def estimate(self, x: np.ndarray) -> Estimate:
        x = as_2d(x, "x", min_samples=1, dtype=None)
        counts = symbol_counts(x)
        n = int(counts.sum())
        value = plugin_entropy_from_counts(counts) + self._correction(len(counts), n)
        return Estimate(value, self.name, n, self.parameters())


class MillerMadowEntropy(PluginEntropy):
    """Plug-in + (m - 1) / (2N), m the number of observed symbols (Miller 1955)."""

    name = "miller_madow"

    def _correction(self, m: int, n: int) -> float:
        return (m - 1) / (2.0 * n)


class PluginMI:
    """I(X; Y) = H(X) + H(Y) - H(X, Y) with plug-in entropies; x, y discrete (N,) or (N, d)."""

    name = "plugin_mi"
    _entropy = PluginEntropy()

    def parameters(self) -> dict:
        return {}

    def estimate(self, x: np.ndarray, y: np.ndarray) -> Estimate:
        x, y = check_pair(x, y, min_samples=1, dtype=None)
        xy = _joint(x, y)
        h = self._entropy.estimate
        value = h(x).value + h(y).value - h(xy).value
        return Estimate(float(value), self.name, int(x.shape[0]), self.parameters())


class MillerMadowMI(PluginMI):
    """I(X; Y) from Miller-Madow entropies."""

    name = "miller_madow_mi"
    _entropy = MillerMadowEntropy()
