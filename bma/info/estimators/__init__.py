"""Registry of the information estimators: ``get_mi_estimator(name, **params)``, ``get_entropy_estimator(...)``.

MI (x (N, dx), y (N, dy) -> Estimate, nats):
  auto             picks for itself: normal scores, then the larger of copula and (dx + dy <= 10) KSG   (auto.py)
  gaussian         closed form via log-determinants, exact small-sample bias correction        (gaussian.py)
  cca              -1/2 sum log(1 - rho_i^2) over canonical correlations, same correction       (gaussian.py)
  copula           the gaussian closed form on each coordinate's normal scores (Gaussian copula) (gaussian.py)
  ksg              Kraskov-Stoegbauer-Grassberger algorithm 1, max-norm or Euclidean, k = 3     (knn.py)
  infonce, nwj, mine, smile   trained critics, value on a held-out half                         (neural.py, torch)
  plugin_mi, miller_madow_mi  discrete MI from counts                                           (discrete.py)
Entropy (x (N, d) -> Estimate, nats):
  kl               Kozachenko-Leonenko k-NN differential entropy                                (knn.py)
  plugin, miller_madow        discrete Shannon entropy from counts                              (discrete.py)

A flagged estimate (``Estimate.flags``: a diverged critic, a bound above its ceiling or far below zero, an infinite
closed form) has value NaN and says why. The neural module (and so torch) is imported only when a neural estimator
is asked for.
"""

from __future__ import annotations

import importlib
from typing import Any

from bma.info.interface import EntropyEstimator, MIEstimator

# name -> "module:Class" resolved on demand, so that importing the registry does not import torch
MI_ESTIMATORS: dict[str, str] = {
    "auto": "auto:AutoMI",
    "gaussian": "gaussian:GaussianMI",
    "cca": "gaussian:CCAMI",
    "copula": "gaussian:GaussianCopulaMI",
    "ksg": "knn:KSG",
    "infonce": "neural:InfoNCE",
    "nwj": "neural:NWJ",
    "mine": "neural:MINE",
    "smile": "neural:SMILE",
    "plugin_mi": "discrete:PluginMI",
    "miller_madow_mi": "discrete:MillerMadowMI",
}
ENTROPY_ESTIMATORS: dict[str, str] = {
    "kl": "knn:KozachenkoLeonenko",
    "plugin": "discrete:PluginEntropy",
    "miller_madow": "discrete:MillerMadowEntropy",
}
NEURAL_MI_ESTIMATORS = ("infonce", "nwj", "mine", "smile")
CONTINUOUS_MI_ESTIMATORS = ("auto", "gaussian", "cca", "copula", "ksg", *NEURAL_MI_ESTIMATORS)


def _resolve(target: str) -> type:
    module, cls = target.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


def get_mi_estimator(name: str, **params: Any) -> MIEstimator:
    """A configured MI estimator; unknown names or parameters raise ValueError / TypeError."""
    if name not in MI_ESTIMATORS:
        raise ValueError(f"name: unknown MI estimator {name!r}; expected one of {sorted(MI_ESTIMATORS)}")
    return _resolve(MI_ESTIMATORS[name])(**params)


def get_entropy_estimator(name: str, **params: Any) -> EntropyEstimator:
    """A configured entropy estimator; unknown names or parameters raise ValueError / TypeError."""
    if name not in ENTROPY_ESTIMATORS:
        raise ValueError(f"name: unknown entropy estimator {name!r}; expected one of {sorted(ENTROPY_ESTIMATORS)}")
    return _resolve(ENTROPY_ESTIMATORS[name])(**params)


__all__ = [
    "CONTINUOUS_MI_ESTIMATORS",
    "ENTROPY_ESTIMATORS",
    "MI_ESTIMATORS",
    "NEURAL_MI_ESTIMATORS",
    "get_entropy_estimator",
    "get_mi_estimator",
]
