"""Synthetic ProbeInputs with the structure of a BMA-Memory (class-clustered features, slot-per-class memories)."""

from __future__ import annotations

import numpy as np

from bma.info.probes import ProbeInputs


def _softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(axis=1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=1, keepdims=True)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def make_probe_inputs(
    n: int = 1000, d: int = 128, slots: int = 64, classes: int = 10, p: int = 64, tau: float = 0.1, seed: int = 0
) -> ProbeInputs:
    """Image/sound features around class means; slot r of both memories holds class r % classes; cosine addressing
    with temperature tau; f_mem, h, z and both cycles as the model computes them. Arrays are float32."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    mu_v, mu_s = rng.standard_normal((classes, d)), rng.standard_normal((classes, d))
    f_v = mu_v[y] + 1.0 * rng.standard_normal((n, d))
    f_s = mu_s[y] + 1.0 * rng.standard_normal((n, d))
    slot_class = np.arange(slots) % classes
    m_v = mu_v[slot_class] + 0.3 * rng.standard_normal((slots, d))
    m_s = mu_s[slot_class] + 0.3 * rng.standard_normal((slots, d))

    def address(f: np.ndarray, m: np.ndarray) -> np.ndarray:
        return _softmax(_unit(f) @ _unit(m).T / tau)  # (N, slots)

    w_v, w_s = address(f_v, m_v), address(f_s, m_s)
    f_s_mem, f_v_mem = w_v @ m_s, w_s @ m_v
    proj_v, proj_s = rng.standard_normal((2 * d, p)) / np.sqrt(2 * d), rng.standard_normal((2 * d, p)) / np.sqrt(2 * d)
    h_v, h_s = np.hstack([f_v, f_s_mem]), np.hstack([f_s, f_v_mem])
    i_pseudo = address(f_s, m_s) @ m_v
    s_prime = address(i_pseudo, m_v) @ m_s
    s_pseudo = address(f_v, m_v) @ m_s
    v_prime = address(s_pseudo, m_s) @ m_v
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    return ProbeInputs(
        f_v=f32(f_v), f_s=f32(f_s), f_s_mem=f32(f_s_mem), f_v_mem=f32(f_v_mem), w_v=f32(w_v), w_s=f32(w_s),
        h_v=f32(h_v), h_s=f32(h_s), z_v=f32(h_v @ proj_v), z_s=f32(h_s @ proj_s), y=y,
        s_cycle=(f32(f_s), f32(i_pseudo), f32(s_prime)), v_cycle=(f32(f_v), f32(s_pseudo), f32(v_prime)),
    )
