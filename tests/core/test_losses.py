"""Losses against hand-written references (value and gradient) and their known answers; the trial's objective
(VariantLoss) against the sum the trainer assembled inline."""

from __future__ import annotations

import math

import pytest
import torch

from bma import losses
from bma.config import VARIANTS, ConfigError, TrialConfig
from bma.losses import build_loss


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


# -- the trial's objective against the sum the trainer assembled inline -------------------------------------------

SWITCHES = {
    "supervised": {},
    "contrastive": {"encoder_objective": "contrastive", "pair_negatives": "all"},
    "no-encoder-objective": {"encoder_objective": "none"},
    "variance": {"loss.w_variance": 1.0},
    "infomax": {"loss.w_infomax": 1.0},
    "address-cycle": {"loss.cycle_space": "address"},
    "slot-decorrelation": {"loss.w_slot_decorrelation": 0.5},
    "all": {"encoder_objective": "contrastive", "pair_negatives": "all", "loss.w_variance": 1.0, "loss.w_infomax": 1.0,
            "loss.cycle_space": "address", "loss.w_slot_decorrelation": 0.5, "loss.w_unpair": 0.7},
}


def inline_sum(cfg, model, xv, xs, k, yv, ys, y_pair, xv2, xs2) -> dict:
    """The step's terms as bma/trainer.py assembled them inline before VariantLoss (commit bfeba2e), model calls and
    loss calls interleaved in its order; ``xv2``/``xs2`` stand for the views it drew at the point of use."""
    lo, variant = cfg.loss, cfg.model.variant
    terms = {}
    f_v, f_s = model.encode_image(xv), model.encode_sound(xs)
    fv, fs = f_v[k:], f_s[k:]
    f_v2 = f_s2 = None
    if lo.encoder_objective == "supervised":
        terms["encoder"] = 0.5 * (losses.supervised_loss(model.classify_image(fv), yv)
                                  + losses.supervised_loss(model.classify_sound(fs), ys))
    elif lo.encoder_objective == "contrastive":
        f_v2, f_s2 = model.encode_image(xv2), model.encode_sound(xs2)
        terms["encoder"] = 0.5 * (losses.nt_xent(model.ssl_image(fv), model.ssl_image(f_v2), lo.tau_encoder)
                                  + losses.nt_xent(model.ssl_sound(fs), model.ssl_sound(f_s2), lo.tau_encoder))
    else:
        terms["encoder"] = torch.zeros(())
    total = lo.w_encoder * terms["encoder"]
    out = None
    if variant != "unimodal":
        out = {**model.represent_image(f_v[:k]), **model.represent_sound(f_s[:k])}
        pair = losses.pair_loss(out, lo.tau_l, lo.w_address, lo.w_recall,
                                y_pair if lo.pair_negatives == "other_class" else None)
        terms["pair"] = pair["total"]
        terms.update({f"pair_{name}": v for name, v in pair.items() if name != "total"})
        total = total + lo.w_pair * pair["total"]
    if variant == "bma":
        _, s_prime = model.sound_cycle(fs)
        _, v_prime = model.image_cycle(fv)
        if lo.cycle_space == "address":
            terms["unpair"] = 0.5 * (
                losses.address_cycle_loss(model.recall(fs, "sound")[0], model.recall(s_prime, "sound")[0])
                + losses.address_cycle_loss(model.recall(fv, "image")[0], model.recall(v_prime, "image")[0]))
        else:
            terms["unpair"] = 0.5 * (losses.cycle_loss(fs, s_prime) + losses.cycle_loss(fv, v_prime))
        total = total + lo.w_unpair * terms["unpair"]
    if lo.w_variance > 0:
        terms["variance"] = 0.5 * (losses.variance_covariance(fv) + losses.variance_covariance(fs))
        total = total + lo.w_variance * terms["variance"]
    if lo.w_infomax > 0 and model.has_memory:
        if f_v2 is None:
            f_v2, f_s2 = model.encode_image(xv2), model.encode_sound(xs2)
        h_v, h_s = model.represent_image(fv)["h_v"], model.represent_sound(fs)["h_s"]
        tau = lo.tau_encoder
        view = 0.5 * (losses.info_nce_one_way(model.infomax_image(h_v), model.ssl_image(f_v2), tau)
                      + losses.info_nce_one_way(model.infomax_sound(h_s), model.ssl_sound(f_s2), tau))
        partner = 0.5 * (losses.info_nce_one_way(model.infomax_image(out["h_v"]), out["z_s"], lo.tau_l)
                         + losses.info_nce_one_way(model.infomax_sound(out["h_s"]), out["z_v"], lo.tau_l))
        terms["infomax"] = view + partner
        total = total + lo.w_infomax * terms["infomax"]
    if model.has_memory and lo.w_slot_decorrelation > 0:
        terms["slot_decorrelation"] = 0.5 * (losses.slot_decorrelation(model.memory_image)
                                             + losses.slot_decorrelation(model.memory_sound))
        total = total + lo.w_slot_decorrelation * terms["slot_decorrelation"]
    terms["total"] = total
    return terms


def _step_batch(k: int = 6, b: int = 10, classes: int = 4):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    y = lambda n: torch.randint(0, classes, (n,), generator=g)  # noqa: E731
    return {"pair_v": r(k, 1, 28, 28), "pair_s": r(k, 1, 40, 32), "v": r(b, 1, 28, 28), "s": r(b, 1, 40, 32),
            "v2": r(b, 1, 28, 28), "s2": r(b, 1, 40, 32), "y_v": y(b), "y_s": y(b), "y_pair": y(k)}


def _model(cfg):
    from bma.model import BMAMemory

    torch.manual_seed(0)
    return BMAMemory(cfg.model, image_channels=1, num_classes=4).train()


@pytest.mark.parametrize("switches", SWITCHES.values(), ids=SWITCHES.keys())
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_loss_is_the_sum_the_trainer_assembled_inline(variant, switches):
    """Terms and total bit for bit, the same names in the same order (the loss/ metrics), the same gradients and
    BatchNorm statistics: a trial trains exactly as it did before the loss object existed."""
    updates = dict(variant=variant, memory_slots=8, **{"model.encoder_width": 4, "model.feature_dim": 32,
                                                       "model.projection_dim": 16}, **switches)
    if variant == "unimodal" and switches.get("encoder_objective") == "none":  # nothing to train: refused
        with pytest.raises(ConfigError, match="nothing to train"):
            TrialConfig().with_updates(**updates)
        return
    cfg = TrialConfig().with_updates(**updates)
    loss, x = build_loss(cfg), _step_batch()
    k = len(x["pair_v"]) if loss.uses_pairs else 0
    xv = torch.cat([x["pair_v"], x["v"]]) if k else x["v"]
    xs = torch.cat([x["pair_s"], x["s"]]) if k else x["s"]
    views = {"x_v2": x["v2"], "x_s2": x["s2"]} if loss.needs_views else {}
    model, reference = _model(cfg), _model(cfg)
    got = loss(**model.forward_step(xv, xs, k, **views, reads=loss.reads),
               y_v=x["y_v"], y_s=x["y_s"], y_pair=x["y_pair"] if k else None)
    want = inline_sum(cfg, reference, xv, xs, k, x["y_v"], x["y_s"], x["y_pair"], x["v2"], x["s2"])
    assert list(got) == list(want)
    for name, value in want.items():
        assert torch.equal(got[name], value), name
    got["total"].backward()
    want["total"].backward()
    # With both the variance and the infomax term, their gradients reach f_v in another order (the model's outputs
    # now all exist before the first loss term): equal up to float rounding there, bit for bit everywhere else.
    exact = not (cfg.loss.w_variance > 0 and loss.uses_infomax)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            if exact:
                assert torch.equal(p.grad, q.grad), name
            else:  # summed in another order: float32 rounding, relative to the gradient's own scale (an element
                # near 0 in a tensor of magnitude ~1 carries an absolute rounding of ~1e-7, so a per-element rtol
                # alone failed on some CPUs' kernels)
                scale = float(q.grad.abs().max())
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6 * max(scale, 1e-12), msg=name)
    for (name, a), b in zip(model.named_buffers(), reference.buffers()):
        assert torch.equal(a, b), name  # the encoders ran in the same order on the same inputs


@pytest.mark.parametrize("variant,switches,reads,views", [
    ("unimodal", {}, {"logits"}, False),
    ("unimodal", {"loss.w_infomax": 1.0}, {"logits"}, False),  # infomax needs a memory
    ("paired_only", {"encoder_objective": "contrastive", "pair_negatives": "all"}, {"ssl"}, True),
    ("bma", {}, {"logits", "cycles"}, False),
    ("bma", {"loss.w_infomax": 1.0, "loss.cycle_space": "address"}, {"logits", "cycles", "cycle_addresses", "infomax"},
     True),
])
def test_variant_loss_asks_the_model_for_what_its_terms_read(variant, switches, reads, views):
    loss = build_loss(TrialConfig().with_updates(variant=variant, **switches))
    assert loss.reads == reads and loss.needs_views == views
    assert loss.uses_pairs == (variant != "unimodal") and loss.uses_cycles == (variant == "bma")


def test_variant_loss_refuses_an_output_it_does_not_know():
    loss = build_loss(TrialConfig())
    with pytest.raises(TypeError, match="f_q"):
        loss(f_v=torch.zeros(2, 3), f_s=torch.zeros(2, 3), f_q=torch.zeros(2, 3))
