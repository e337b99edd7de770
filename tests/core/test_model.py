"""The model: output shapes per variant, addressing modes, key-value switching, cycles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bma.config import ModelConfig
from bma.model import BMAMemory, address

D, P, N, K = 32, 16, 8, 10


def make(variant: str = "bma", **kw) -> BMAMemory:
    torch.manual_seed(0)
    cfg = ModelConfig(variant=variant, encoder_width=4, feature_dim=D, projection_dim=P, memory_slots=N, **kw)
    return BMAMemory(cfg, image_channels=1, num_classes=K).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 1, 28, 28, generator=g), torch.randn(3, 1, 40, 126, generator=g)


@pytest.mark.parametrize("variant", ["bma", "paired_only"])
def test_memory_variants_shapes(variant, batch):
    out = make(variant)(*batch)
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {
        "f_v": (3, D), "z_v": (3, P), "logits_v": (3, K), "w_v": (3, N), "f_s_mem": (3, D), "h_v": (3, 2 * D),
        "f_s": (3, D), "z_s": (3, P), "logits_s": (3, K), "w_s": (3, N), "f_v_mem": (3, D), "h_s": (3, 2 * D),
    }
    assert torch.equal(out["h_v"], torch.cat([out["f_v"], out["f_s_mem"]], -1))
    assert torch.equal(out["h_s"], torch.cat([out["f_s"], out["f_v_mem"]], -1))


def test_unimodal_has_no_memory_outputs(batch):
    model = make("unimodal")
    out = model(*batch)
    assert not model.has_memory
    assert set(out) == {"f_v", "z_v", "logits_v", "h_v", "f_s", "z_s", "logits_s", "h_s"}
    assert out["h_v"].shape == (3, D) and torch.equal(out["h_v"], out["f_v"])
    assert torch.equal(out["h_s"], out["f_s"])


def test_one_modality_only_and_resnet(batch):
    model = make()
    assert set(model(x_v=batch[0])) == {"f_v", "z_v", "logits_v", "w_v", "f_s_mem", "h_v"}
    assert set(model(x_s=batch[1])) == {"f_s", "z_s", "logits_s", "w_s", "f_v_mem", "h_s"}
    assert model() == {}
    res = make(image_encoder="resnet18")
    assert res(x_v=batch[0][:2])["h_v"].shape == (2, 2 * D)


@pytest.mark.parametrize("mode", ["softmax", "sparsemax", "entmax15", "topk"])
@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_address_is_a_distribution(mode, tau):
    g = torch.Generator().manual_seed(1)
    f, mem = torch.randn(20, D, generator=g), torch.randn(12, D, generator=g)
    w = address(f, mem, tau, mode, top_k=3)
    assert w.shape == (20, 12) and (w >= 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(20), atol=1e-5)
    if mode == "topk":
        assert ((w > 0).sum(-1) == 3).all()
        # the three nonzero slots are the three most similar ones
        cos = F.normalize(f, dim=-1) @ F.normalize(mem, dim=-1).T
        assert torch.equal((w > 0), cos >= cos.topk(3, dim=-1).values[:, -1:])


def test_address_modes_known_answers():
    g = torch.Generator().manual_seed(2)
    f, mem = torch.randn(50, D, generator=g), torch.randn(12, D, generator=g)
    cos = F.normalize(f, dim=-1) @ F.normalize(mem, dim=-1).T
    assert torch.allclose(address(f, mem, 0.3, "softmax"), (cos / 0.3).softmax(-1), atol=1e-6)
    # sparse modes put exact zeros on slots at low temperature, softmax never does
    for mode in ("sparsemax", "entmax15"):
        w = address(f, mem, 0.05, mode)
        assert (w == 0).float().mean() > 0.5, mode
    assert (address(f, mem, 0.05, "softmax") > 0).all()
    # at a high temperature sparsemax spreads over every slot
    assert (address(f, mem, 100.0, "sparsemax") > 0).all()
    # address is cosine-based: the scale of f and of the slots does not matter
    assert torch.allclose(address(7 * f, 0.1 * mem, 0.2), address(f, mem, 0.2), atol=1e-6)
    with pytest.raises(ValueError, match="model.addressing"):
        address(f, mem, 0.1, "argmax")


def test_recall_is_key_value_switching():
    model = make()
    model.tau_m = 1e-3  # one-hot addressing
    keys_v = torch.eye(N, D)  # M_v: slot r is e_r
    keys_s = torch.eye(N, D).roll(3, dims=1)  # M_s: slot r is e_{r+3}
    with torch.no_grad():
        model.memory_image.copy_(keys_v)
        model.memory_sound.copy_(keys_s)
    # key = image: address M_v with f, read M_s
    f = 5 * torch.eye(N, D)[[2, 5, 0]] + 0.01 * torch.randn(3, D)
    w, read = model.recall(f, "image")
    assert torch.allclose(w, torch.eye(N)[[2, 5, 0]], atol=1e-6)
    assert torch.allclose(read, keys_s[[2, 5, 0]], atol=1e-5)
    # key = sound: address M_s with f, read M_v
    w, read = model.recall(keys_s[[4, 1]], "sound")
    assert torch.allclose(w, torch.eye(N)[[4, 1]], atol=1e-6)
    assert torch.allclose(read, keys_v[[4, 1]], atol=1e-5)
    # the representation carries the recalled partner
    out = model.represent_image(f)
    assert torch.allclose(out["f_s_mem"], keys_s[[2, 5, 0]], atol=1e-5)


def test_cycles_compose_recalls():
    model = make()
    g = torch.Generator().manual_seed(3)
    f_s, f_v = torch.randn(4, D, generator=g), torch.randn(4, D, generator=g)
    i_pseudo, s_prime = model.sound_cycle(f_s)
    assert torch.allclose(i_pseudo, model.recall(f_s, "sound")[1])
    assert torch.allclose(s_prime, model.recall(i_pseudo, "image")[1])
    s_pseudo, v_prime = model.image_cycle(f_v)
    assert torch.allclose(s_pseudo, model.recall(f_v, "image")[1])
    assert torch.allclose(v_prime, model.recall(s_pseudo, "sound")[1])
    # with one-hot addressing and M_v = M_s, a cycle returns the slot the start is closest to
    model.tau_m = 1e-3
    with torch.no_grad():
        model.memory_sound.copy_(model.memory_image)
    start = model.memory_sound[[1, 6]].detach() * 2
    _, back = model.sound_cycle(start)
    assert torch.allclose(back, model.memory_sound[[1, 6]], atol=1e-5)


def test_memory_gets_gradients_from_recall():
    model = make().train()
    f = torch.randn(5, D)
    _, read = model.recall(f, "image")
    read.sum().backward()
    assert model.memory_sound.grad is not None and model.memory_sound.grad.abs().sum() > 0
    assert model.memory_image.grad is not None  # through the addressing


STEP_GROUPS = frozenset({"logits", "ssl", "cycles", "cycle_addresses", "infomax"})


def test_forward_step_names_and_shapes(batch):
    """Two pairs and three singles through every group: the names bma.losses.VariantLoss takes, their shapes, and
    the pair rows keyed as forward() gives them."""
    from bma.losses import STEP_OUTPUTS

    assert set(STEP_OUTPUTS) == STEP_GROUPS
    model = make()
    g = torch.Generator().manual_seed(4)
    pair_v, pair_s = torch.randn(2, 1, 28, 28, generator=g), torch.randn(2, 1, 40, 126, generator=g)
    x_v, x_s = torch.cat([pair_v, batch[0]]), torch.cat([pair_s, batch[1]])
    views = {"x_v2": batch[0].flip(-1), "x_s2": batch[1].flip(-1)}
    out = model.forward_step(x_v, x_s, 2, **views, reads=STEP_GROUPS)
    pairs = out.pop("pairs")
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {
        "f_v": (3, D), "f_s": (3, D), "logits_v": (3, K), "logits_s": (3, K),
        "ssl_v": (3, P), "ssl_v2": (3, P), "ssl_s": (3, P), "ssl_s2": (3, P),
        "s_prime": (3, D), "v_prime": (3, D), "w_s": (3, N), "w_s_prime": (3, N), "w_v": (3, N), "w_v_prime": (3, N),
        "infomax_v": (3, P), "infomax_key_v": (3, P), "infomax_s": (3, P), "infomax_key_s": (3, P),
        "infomax_pair_v": (2, P), "infomax_pair_s": (2, P), "memory_image": (N, D), "memory_sound": (N, D),
    }
    expected = model(pair_v, pair_s)
    assert set(pairs) == set(expected)
    for name, value in expected.items():  # eval mode: the pairs' rows do not depend on the singles beside them
        assert torch.allclose(pairs[name], value, atol=1e-5), name
    assert torch.allclose(out["s_prime"], model.sound_cycle(out["f_s"])[1])
    assert torch.allclose(out["w_v_prime"], model.recall(out["v_prime"], "image")[0])
    # nothing asked, no pairs, no memory: the singles' features only
    bare = make("unimodal").forward_step(*batch)
    assert set(bare) == {"f_v", "f_s"}
