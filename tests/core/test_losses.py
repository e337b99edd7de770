"""Losses against hand-written references (value and gradient) and their known answers."""

from __future__ import annotations

import math

import pytest
import torch

from bma import losses


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b) / (a.norm() * b.norm())


def info_nce_reference(z_a, z_b, tau, labels=None):
    """Row by row: -log of the positive's share among the row's candidates, in both directions."""
    b = len(z_a)
    total = 0.0
    for x, y in ((z_a, z_b), (z_b, z_a)):
        for i in range(b):
            candidates = [j for j in range(b) if j == i or labels is None or labels[j] != labels[i]]
            logits = torch.stack([_cos(x[i], y[j]) / tau for j in candidates])
            total = total - (logits[candidates.index(i)] - torch.logsumexp(logits, 0))
    return total / (2 * b)


def nt_xent_reference(z1, z2, tau):
    z = torch.cat([z1, z2])
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        partner = (i + b) % n
        others = [j for j in range(n) if j != i]
        logits = torch.stack([_cos(z[i], z[j]) / tau for j in others])
        total = total - (logits[others.index(partner)] - torch.logsumexp(logits, 0))
    return total / n


def _pair(seed: int, b: int = 6, p: int = 5):
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(b, p, generator=g, dtype=torch.float64, requires_grad=True)
    z_b = torch.randn(b, p, generator=g, dtype=torch.float64, requires_grad=True)
    return z_a, z_b


@pytest.mark.parametrize("labels", [None, torch.tensor([0, 1, 0, 2, 1, 3])])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_info_nce_matches_reference(labels, tau):
    z_a, z_b = _pair(0)
    got = losses.info_nce(z_a, z_b, tau, labels)
    ref = info_nce_reference(z_a, z_b, tau, labels)
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-10)
    g_got = torch.autograd.grad(got, (z_a, z_b))
    g_ref = torch.autograd.grad(ref, (z_a, z_b))
    for a, b in zip(g_got, g_ref):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)
    # the labels really change the loss (same-class negatives dropped)
    if labels is not None:
        assert not torch.allclose(got, losses.info_nce(z_a, z_b, tau))


def test_info_nce_known_answers():
    b = 16
    eye = torch.eye(b, 32)
    assert losses.info_nce(eye, 3 * eye, 0.01).item() < 1e-6  # perfect alignment, low temperature: ~0
    g = torch.Generator().manual_seed(1)
    noise = losses.info_nce(torch.randn(b, 2048, generator=g), torch.randn(b, 2048, generator=g), 1.0)
    assert abs(noise.item() - math.log(b)) < 0.02  # independent: ~log B
    # the same rows swapped out of order: the positives are now the worst candidates
    assert losses.info_nce(eye, eye.roll(1, 0), 0.1).item() > math.log(b)
    # labels: with every row of one class the other rows are no negatives, so the loss is exactly 0
    same = torch.zeros(b, dtype=torch.long)
    assert losses.info_nce(torch.randn(b, 8, generator=g), torch.randn(b, 8, generator=g), 0.1, same).item() == 0.0


def test_symmetric_kl():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, 7, generator=g), -1)
    q = torch.softmax(torch.randn(5, 7, generator=g), -1)
    assert losses.symmetric_kl(p, p).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.symmetric_kl(p, q).item() == pytest.approx(losses.symmetric_kl(q, p).item(), rel=1e-6)
    exact = 0.5 * ((p * (p / q).log()).sum(-1) + (q * (q / p).log()).sum(-1)).mean()
    assert losses.symmetric_kl(p, q).item() == pytest.approx(exact.item(), rel=1e-3)
    # sparse addresses (exact zeros, disjoint supports): finite value and gradient
    one_hot_a = torch.eye(7)[:5].requires_grad_(True)
    one_hot_b = torch.eye(7)[2:].requires_grad_(True)
    val = losses.symmetric_kl(one_hot_a, one_hot_b)
    val.backward()
    assert torch.isfinite(val) and val.item() > 5.0  # large: disjoint supports
    assert torch.isfinite(one_hot_a.grad).all() and torch.isfinite(one_hot_b.grad).all()
    assert losses.symmetric_kl(one_hot_a, one_hot_a).item() == pytest.approx(0.0, abs=1e-7)


def test_nt_xent_matches_reference():
    z1, z2 = _pair(3, b=5, p=4)
    got = losses.nt_xent(z1, z2, 0.2)
    ref = nt_xent_reference(z1, z2, 0.2)
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(torch.autograd.grad(got, (z1, z2)), torch.autograd.grad(ref, (z1, z2))):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)
    eye = torch.eye(8, 16)
    assert losses.nt_xent(eye, eye, 0.01).item() < 1e-6


def test_slot_decorrelation():
    assert losses.slot_decorrelation(3 * torch.eye(6, 10)).item() == pytest.approx(0.0, abs=1e-7)
    same = torch.ones(4, 10)
    assert losses.slot_decorrelation(same).item() == pytest.approx(1.0, rel=1e-6)  # all off-diagonal cos = 1
    # two slots with cos 0.6, the rest orthogonal: (2 * 0.36) / (n (n - 1))
    m = torch.eye(4, 4)
    m[1] = torch.tensor([0.6, 0.8, 0.0, 0.0])
    assert losses.slot_decorrelation(m).item() == pytest.approx(2 * 0.36 / 12, rel=1e-5)
    assert losses.slot_decorrelation(torch.randn(1, 5)).item() == 0.0  # one slot: nothing to decorrelate


def test_cycle_and_cosine_terms():
    g = torch.Generator().manual_seed(0)
    start = torch.randn(6, 8, generator=g, requires_grad=True)
    assert losses.cycle_loss(start, start.detach().clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.cycle_loss(start, 2.5 * start.detach()).item() == pytest.approx(0.0, abs=1e-6)  # cosine: scale-free
    assert losses.cycle_loss(start, -start.detach()).item() == pytest.approx(2.0, abs=1e-6)
    end = torch.randn(6, 8, generator=g, requires_grad=True)
    losses.cycle_loss(start, end).backward()
    assert start.grad is None  # the target (S) is detached: only S' is pulled
    assert end.grad is not None and end.grad.abs().sum() > 0


def test_pair_loss_terms():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    out = {"z_v": r(4, 6), "z_s": r(4, 6)}
    plain = losses.pair_loss(out, 0.1, 2.0, 3.0)
    assert set(plain) == {"contrastive", "total"} and plain["total"] == plain["contrastive"]
    out.update(w_v=torch.softmax(r(4, 5), -1), w_s=torch.softmax(r(4, 5), -1), f_v=r(4, 8), f_s=r(4, 8),
               f_s_mem=r(4, 8), f_v_mem=r(4, 8))
    terms = losses.pair_loss(out, 0.1, 2.0, 3.0)
    assert set(terms) == {"contrastive", "address", "recall", "total"}
    assert torch.allclose(terms["total"], terms["contrastive"] + 2.0 * terms["address"] + 3.0 * terms["recall"])
    assert torch.allclose(terms["address"], losses.symmetric_kl(out["w_v"], out["w_s"]))
    expected_recall = 0.5 * (losses.cosine_distance(out["f_s_mem"], out["f_s"])
                             + losses.cosine_distance(out["f_v_mem"], out["f_v"]))
    assert torch.allclose(terms["recall"], expected_recall)
    labels = torch.tensor([0, 0, 1, 1])
    assert torch.allclose(losses.pair_loss(out, 0.1, 2.0, 3.0, labels)["contrastive"],
                          losses.info_nce(out["z_v"], out["z_s"], 0.1, labels))
