"""Student t with 2 degrees of freedom in closed form: the reports' intervals and TOST p-values for 3 seeds are
checked against these, not against the scipy calls the reports themselves make."""

from __future__ import annotations

import math


def t2_quantile(p: float) -> float:
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def t2_cdf(t: float) -> float:
    return 0.5 + t / (2 * math.sqrt(2 + t * t))
