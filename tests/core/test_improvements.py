"""Stage 3 of the plan: each improvement switch acts (a term that is non-zero and has a gradient, a controller
that changes the LR and resumes exactly, an update rule that revives a dead slot)."""

from __future__ import annotations

import pytest
import torch

from bma import losses
from bma.config import ConfigError, ModelConfig, TrialConfig
from bma.model import BMAMemory
from bma.trainer import CycleLRControl, fit

LABEL_FREE = {"encoder_objective": "contrastive", "pair_negatives": "all", "variant": "bma"}


def test_variance_covariance_acts_on_collapse_and_is_zero_on_spread_features():
    torch.manual_seed(0)
    collapsed = (0.01 * torch.randn(256, 8)).requires_grad_()
    term = losses.variance_covariance(collapsed)
    term.backward()
    assert term.item() > 0.9 and collapsed.grad.abs().sum() > 0
    spread = torch.linalg.qr(torch.randn(256, 256))[0][:, :8] * 16.0  # orthogonal columns, std ~ 1
    assert losses.variance_covariance(spread).item() < 0.05


def test_address_cycle_is_zero_for_a_perfect_cycle_and_has_a_gradient():
    w = torch.softmax(torch.randn(16, 8), dim=-1)
    assert losses.address_cycle_loss(w, w).item() == pytest.approx(0.0, abs=1e-6)
    end = torch.randn(16, 8, requires_grad=True)
    term = losses.address_cycle_loss(w, torch.softmax(end, dim=-1))
    term.backward()
    assert term.item() > 0 and end.grad.abs().sum() > 0


def test_cycle_infonce_is_bounded_by_log_batch():
    s = torch.randn(64, 16)
    assert losses.cycle_infonce(s, s, tau=0.05).item() == pytest.approx(torch.log(torch.tensor(64.0)).item(), abs=0.05)
    # independent: a lower bound with a fixed critic, so it is not large and positive (it may go negative)
    assert losses.cycle_infonce(s, torch.randn(64, 16)).item() < 0.5


@pytest.mark.slow
@pytest.mark.parametrize("switch,term", [({"loss.w_variance": 1.0}, "loss/variance"),
                                         ({"loss.w_infomax": 1.0}, "loss/infomax"),
                                         ({"loss.cycle_space": "address"}, "loss/unpair")])
def test_each_loss_switch_trains_and_is_logged(tiny_cfg, small_data, switch, term):
    cfg = tiny_cfg.with_updates(**LABEL_FREE, **switch)
    plain = fit(tiny_cfg.with_updates(**LABEL_FREE), data=small_data).final
    final = fit(cfg, data=small_data).final
    assert final[term] > 0
    assert final["loss/total"] != plain["loss/total"]  # the switch changed the training


def _gradient_of(cfg: TrialConfig, small_data, term: str) -> float:
    """Gradient norm of one unweighted improvement term at initialisation on a real batch."""
    from bma.trainer import _improvement_terms

    torch.manual_seed(0)
    model = BMAMemory(cfg.model, image_channels=1, num_classes=10)
    xv, xs = small_data.image_train.x[:32], small_data.sound_train.x[:32]
    f_v, f_s = model.encode_image(xv), model.encode_sound(xs)
    pairs = {**model.represent_image(f_v[:8]), **model.represent_sound(f_s[:8])}
    terms = _improvement_terms(cfg, model, f_v, f_s, xv, xs, torch.Generator().manual_seed(0), {}, pairs)
    terms[term].backward()
    return sum(float(p.grad.norm()) for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("weight,term", [("loss.w_variance", "variance"), ("loss.w_infomax", "infomax")])
def test_loss_switch_terms_have_a_gradient(tiny_cfg, small_data, weight, term):
    assert _gradient_of(tiny_cfg.with_updates(**{weight: 1.0}, **LABEL_FREE), small_data, term) > 0


def test_lr_controller_reacts_to_a_scripted_signal_and_resumes_exactly():
    cfg = TrialConfig.from_flat({"optim.lr_control": "cycle_plateau", "optim.lr_control_every": 2,
                                 "optim.lr_control_patience": 1, "optim.lr_control_factor": 0.5, "lr": 1e-2})
    param = torch.nn.Parameter(torch.zeros(1))

    def run(signal, controller=None, optimizer=None, start=0):
        optimizer = optimizer or torch.optim.AdamW([param], lr=cfg.optim.lr)
        controller = controller or CycleLRControl(cfg, optimizer)
        lrs = []
        for i, value in enumerate(signal, start=start + 1):
            controller.observe(value, i)
            lrs.append(optimizer.param_groups[0]["lr"])
        return lrs, controller, optimizer

    rising = [float(i) for i in range(12)]
    flat = [1.0] * 12
    assert run(rising)[0][-1] == pytest.approx(1e-2)  # self-consistency still rising: LR kept
    lrs, _, _ = run(flat)
    assert lrs[-1] < 1e-2 and min(lrs) == pytest.approx(1e-2 * 0.5 ** 2)  # a plateau halves the LR, repeatedly
    # resume: the controller's and the optimiser's states restored midway take the same decisions
    full, _, _ = run(flat)
    first, controller, optimizer = run(flat[:5])
    state, opt_state = controller.state_dict(), optimizer.state_dict()
    optimizer2 = torch.optim.AdamW([param], lr=cfg.optim.lr)
    optimizer2.load_state_dict(opt_state)
    controller2 = CycleLRControl(cfg, optimizer2)
    controller2.load_state_dict(state)
    rest, _, _ = run(flat[5:], controller2, optimizer2, start=5)
    assert first + rest == full
    with pytest.raises(ConfigError, match="optim.lr_control"):
        TrialConfig.from_flat({"optim.lr_control": "sometimes"})


@pytest.mark.slow
def test_lr_control_state_survives_a_checkpoint(tiny_cfg, small_data, tmp_path):
    cfg = tiny_cfg.with_updates(epochs=3, **LABEL_FREE, **{"optim.lr_control": "cycle_plateau",
                                                          "optim.lr_control_every": 1, "optim.lr_control_patience": 0})
    full = fit(cfg, data=small_data)
    fit(cfg, lambda e, m, s: (s.save(tmp_path), e < 2)[1], data=small_data)
    resumed = fit(cfg, data=small_data, resume_from=tmp_path)
    strip = lambda h: {k: v for k, v in h.items() if not k.startswith("time/")}  # noqa: E731
    assert [strip(h) for h in resumed.history] == [strip(h) for h in full.history]
    assert {h["train/lr"] for h in full.history} != {cfg.optim.lr}  # the controller did act


def test_reseed_revives_a_dead_slot():
    torch.manual_seed(0)
    model = BMAMemory(ModelConfig(memory_slots=4, feature_dim=8, projection_dim=4, encoder_width=2, tau_m=0.05),
                      image_channels=1, num_classes=10)
    f_v, f_s = torch.randn(32, 8) + 3, torch.randn(32, 8) + 3  # every feature in one orthant
    with torch.no_grad():
        model.memory_image[3] = -f_v.mean(0)  # points away from every feature: never addressed
    for _ in range(400):
        w_v, _ = model.recall(f_v, "image")
        w_s, _ = model.recall(f_s, "sound")
        model.track_usage(w_v, w_s)
    assert model.usage_image[3] < 0.1 / 4
    revived = model.reseed_dead_slots(f_v, f_s, dead_usage=0.1, generator=torch.Generator().manual_seed(0))
    assert 3 in revived.tolist()
    # the revived slot now holds a pair: slot 3 of M_v is an image feature, slot 3 of M_s that pair's sound
    i = int(torch.nonzero((f_v == model.memory_image[3]).all(dim=1))[0])
    assert torch.equal(model.memory_sound[3], f_s[i])
    w_v, _ = model.recall(f_v, "image")
    assert w_v[:, 3].max() > 0.2  # addressed again


def test_reseed_from_unpaired_features_links_each_revived_slot_through_the_memory():
    torch.manual_seed(0)
    model = BMAMemory(ModelConfig(memory_slots=6, feature_dim=8, projection_dim=4, encoder_width=2, tau_m=0.05),
                      image_channels=1, num_classes=10)
    f_v, f_s = torch.randn(32, 8), torch.randn(32, 8)
    with torch.no_grad():
        model.usage_image.fill_(1 / 6)
        model.usage_sound.fill_(1 / 6)
        model.usage_image[[1, 4]] = 0.0  # dead: 1 (even position in the dead list) from an image, 4 from a sound
    before_v, before_s = model.memory_image.detach().clone(), model.memory_sound.detach().clone()

    def recalled(f, key):  # what the memory before re-seeding recalls for f
        with torch.no_grad():
            mem = (before_v, before_s) if key == "image" else (before_s, before_v)
            w = torch.softmax(torch.nn.functional.normalize(f, dim=-1) @ torch.nn.functional.normalize(mem[0], dim=-1).T
                              / 0.05, dim=-1)
            return w @ mem[1]

    revived = model.reseed_dead_slots_unpaired(f_v, f_s, dead_usage=0.1, generator=torch.Generator().manual_seed(0))
    assert revived.tolist() == [1, 4]
    i = int(torch.nonzero((f_v == model.memory_image[1]).all(dim=1))[0])  # slot 1 of M_v: an unpaired image
    assert torch.allclose(model.memory_sound[1], recalled(f_v[i : i + 1], "image")[0], atol=1e-5)
    j = int(torch.nonzero((f_s == model.memory_sound[4]).all(dim=1))[0])  # slot 4 of M_s: an unpaired sound
    assert torch.allclose(model.memory_image[4], recalled(f_s[j : j + 1], "sound")[0], atol=1e-5)
    untouched = [0, 2, 3, 5]
    assert torch.equal(model.memory_image[untouched], before_v[untouched])
    assert torch.equal(model.memory_sound[untouched], before_s[untouched])
    assert torch.equal(model.usage_image[[1, 4]], torch.full((2,), 1 / 6))


def test_reseed_source_is_validated():
    with pytest.raises(ConfigError, match="model.slot_reseed_source: expected one of"):
        TrialConfig().with_updates(**{"model.slot_reseed_source": "labels"})


@pytest.mark.slow
def test_reseed_runs_in_training_and_is_counted(tiny_cfg, small_data):
    # sharp addressing leaves most slots unaddressed in a step: their usage drops below 0.999 / n at once
    cfg = tiny_cfg.with_updates(**LABEL_FREE, tau_m=0.01, **{"model.slot_reseed_every": 1,
                                                            "model.slot_dead_usage": 0.999})
    final = fit(cfg, data=small_data).final
    assert final["train/reseeded_slots"] > 0
    unpaired = fit(cfg.with_updates(**{"model.slot_reseed_source": "unpaired"}), data=small_data).final
    assert unpaired["train/reseeded_slots"] > 0
    assert unpaired["loss/total"] != final["loss/total"]  # another source, other slots: another trajectory
