"""The one interface every information estimator implements. Imports nothing from the package.

An MI estimator maps two samples ``x`` (N, dx) and ``y`` (N, dy), rows paired, to an :class:`Estimate` in nats;
an entropy estimator maps one sample ``x`` (N, d) to one. 1-D inputs are read as (N, 1). Estimators are
configured once (their parameters are fixed at construction and returned by ``parameters()``), hold no state
between calls, and are deterministic given their parameters (those that draw random numbers take a ``seed``).

Shared input validation lives here too, so every estimator rejects bad input with the same messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """One estimate of an information quantity.

    value: nats; NaN when the estimate is flagged (see ``flags``). For the neural critics this is the value on the
        held-out half of the sample.
    estimator: the registry name (``"ksg"``, ``"gaussian"``, ...).
    n_samples: rows the estimator saw (before any train/held-out split).
    params: the estimator's parameters (``parameters()``), so the figure can be reproduced; ``auto`` adds what it
        picked and why.
    upper_bound: a ceiling the estimator cannot exceed whatever the truth (InfoNCE: log of the evaluation batch).
    train_value: neural critics only: the same bound on the half the critic was trained on (biased high).
    flags: why the number is not an estimate, one short sentence each (a critic that diverged, a bound above its
        ceiling or far below zero, an infinite closed form). Empty for a valid estimate. A flagged estimate never
        carries a number in ``value``: it is NaN, and what the estimator computed is kept in ``raw_value``.
    raw_value: what the estimator computed before flagging (equal to ``value`` when there is no flag).
    """

    value: float
    estimator: str
    n_samples: int
    params: dict = field(default_factory=dict)
    upper_bound: float | None = None
    train_value: float | None = None
    flags: tuple[str, ...] = ()
    raw_value: float | None = None

    def __post_init__(self) -> None:
        if self.raw_value is None:
            object.__setattr__(self, "raw_value", float(self.value))
        if self.flags and self.value == self.value:  # a flagged estimate carries no number
            object.__setattr__(self, "value", float("nan"))

    @property
    def ok(self) -> bool:
        """True for a valid estimate (no flag)."""
        return not self.flags

    def __float__(self) -> float:
        return float(self.value)


def flagged(estimate: Estimate, *reasons: str) -> Estimate:
    """``estimate`` with ``reasons`` added to its flags (value NaN, the computed number kept in ``raw_value``)."""
    reasons = tuple(r for r in reasons if r)
    if not reasons:
        return estimate
    return replace(estimate, value=float("nan"), flags=estimate.flags + reasons, raw_value=estimate.raw_value)


@runtime_checkable
class MIEstimator(Protocol):
    """Estimates I(X; Y) in nats from paired samples x (N, dx), y (N, dy)."""

    name: str

    def estimate(self, x: np.ndarray, y: np.ndarray) -> Estimate: ...

    def parameters(self) -> dict: ...


@runtime_checkable
class EntropyEstimator(Protocol):
    """Estimates H(X) in nats (differential for continuous estimators, Shannon for discrete ones) from x (N, d)."""

    name: str

    def estimate(self, x: np.ndarray) -> Estimate: ...

    def parameters(self) -> dict: ...


# -- input validation shared by all estimators -------------------------------------------------------------------


def as_2d(arr: np.ndarray, name: str, min_samples: int = 2, dtype: type = np.float64) -> np.ndarray:
    """``arr`` as a finite (N, d) array of ``dtype``; 1-D input becomes (N, 1).

    Raises ValueError naming ``name`` for: more than 2 dimensions, no columns, non-finite entries,
    fewer than ``min_samples`` rows.
    """
    a = np.asarray(arr)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 1-D or 2-D array, got shape {a.shape}")
    if a.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one column, got shape {a.shape}")
    if a.shape[0] < min_samples:
        raise ValueError(f"{name}: expected at least {min_samples} samples, got {a.shape[0]}")
    if np.issubdtype(a.dtype, np.number) or a.dtype == bool:
        a = a.astype(dtype, copy=False) if dtype is not None else a
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise ValueError(f"{name}: contains {bad} NaN or infinite values")
    elif dtype is not None:
        raise ValueError(f"{name}: expected a numeric array, got dtype {a.dtype}")
    return a


def check_pair(
    x: np.ndarray, y: np.ndarray, min_samples: int = 2, dtype: type = np.float64
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a paired sample: both as (N, d) finite arrays with the same N (see :func:`as_2d`)."""
    xa = as_2d(x, "x", min_samples=1, dtype=dtype)
    ya = as_2d(y, "y", min_samples=1, dtype=dtype)
    if xa.shape[0] != ya.shape[0]:
        raise ValueError(f"x, y: expected the same number of samples, got {xa.shape[0]} and {ya.shape[0]}")
    if xa.shape[0] < min_samples:
        raise ValueError(f"x: expected at least {min_samples} samples, got {xa.shape[0]}")
    return xa, ya
