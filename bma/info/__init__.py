"""Information-theoretic estimators and the probes of the plan's Table 1 (see docs/information.md).

    from bma.info import get_mi_estimator, compute_probes
    get_mi_estimator("auto").estimate(x, y).value        # nats; picks for itself (estimators/auto.py)
    get_mi_estimator("ksg", k=3).estimate(x, y).flags    # () for a valid estimate; a reason per flag otherwise

Imports neither torch (until a neural estimator is asked for), Ray nor MLflow.
"""

from bma.info.estimators import (
    CONTINUOUS_MI_ESTIMATORS,
    ENTROPY_ESTIMATORS,
    MI_ESTIMATORS,
    NEURAL_MI_ESTIMATORS,
    get_entropy_estimator,
    get_mi_estimator,
)
from bma.info.interface import EntropyEstimator, Estimate, MIEstimator
from bma.info.probes import ProbeInputs, compute_probes

__all__ = [
    "CONTINUOUS_MI_ESTIMATORS",
    "ENTROPY_ESTIMATORS",
    "MI_ESTIMATORS",
    "NEURAL_MI_ESTIMATORS",
    "EntropyEstimator",
    "Estimate",
    "MIEstimator",
    "ProbeInputs",
    "compute_probes",
    "get_entropy_estimator",
    "get_mi_estimator",
]
