"""One trial in one process: ``fit(config, on_epoch)``.

The loop, per epoch: every step draws a batch of single images and a batch of single sounds from the regime's
training samples (paired and unpaired alike: unimodal labels and unpaired samples are cheap), and a batch of pairs.
- encoder objective on the single batches (every variant);
- L_pair on the pair batch (paired_only, bma);
- L_unpair, the cycles S -> I_pseudo -> S' and V -> S_pseudo -> V', on the single batches (bma). Paired samples in
  those batches take part as single samples: their partner is not used there.
A step reads ``terms = loss(**model.forward_step(...), **targets)``: the model returns its named outputs, and the
trial's objective (bma.losses.VariantLoss, built once from the config) sums them into the terms logged as loss/<name>
and their total. Then evaluation, the information probes, and the ``on_epoch`` callback with a flat metrics dict and a handle that
writes a checkpoint. Data order, augmentations and initial weights come from generators of (seed, purpose[, epoch])
(bma.rng: common random numbers, one stream per purpose), and checkpoints
hold model, optimiser, RNG states and epoch, so a resumed trial continues exactly where it stopped.

This module is the loop; what it runs on lives beside it: the trial's data and tensors (bma.trial_data), the
checkpoint and RNG states (bma.checkpoint), the device and autocast policy (bma.device), the evaluation rounds'
wiring (bma.trial_evaluation), the model (bma.model) and the losses (bma.losses).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bma import losses, rng
from bma.losses import VariantLoss, build_loss
from bma.augment import augment_spectrograms, shift_images
from bma.checkpoint import CHECKPOINT_FILE, TrainState, load_checkpoint
from bma.config import TrialConfig, num_rounds  # noqa: F401  (num_rounds: owned by config, used here)
from bma.lr_control import CycleLRControl
from bma.data.regimes import Regime
from bma.device import autocast, resolve_device, seed_everything, use_deterministic_kernels
from bma.evaluation import evaluate
from bma.model import BMAMemory
from bma.trial_data import TrialData, TrialTensors, data_identity, load_trial_data, make_regime
from bma.trial_evaluation import information_probes, validation_losses

# Imported from here by the study engine, the trainables and the tests (the names predate the modules above).
__all__ = [
    "CHECKPOINT_FILE", "CycleLRControl", "EpochCallback", "FitResult", "TrainState", "TrialData", "data_identity",
    "fit", "information_probes", "load_checkpoint", "load_trial_data", "make_regime", "num_rounds",
    "resolve_device", "seed_everything", "steps_in_round", "tau_m_at",
]


def steps_in_round(cfg: TrialConfig, pool: int, round_index: int) -> int:
    """Optimiser steps of round ``round_index`` (1-based); ``pool`` = the larger single-sample pool (epoch mode)."""
    o = cfg.optim
    if o.steps is None:
        return math.ceil(pool / o.batch_size)
    return min(o.round_steps, o.steps - (round_index - 1) * o.round_steps)


def tau_m_at(cfg: TrialConfig, epoch: int) -> float:
    """Geometric anneal from tau_m (round 1) to tau_m_final (last round) when a final value is set."""
    m, epochs = cfg.model, num_rounds(cfg)
    if m.tau_m_final is None or epochs == 1:
        return m.tau_m
    return m.tau_m * (m.tau_m_final / m.tau_m) ** ((epoch - 1) / (epochs - 1))


@dataclass
class FitResult:
    history: list[dict[str, float]]
    final: dict[str, float]
    regime_counts: dict[str, int]
    stopped_early: bool = False


EpochCallback = Callable[[int, dict, TrainState], "bool | None"]


def fit(
    cfg: TrialConfig,
    on_epoch: EpochCallback | None = None,
    *,
    data: TrialData | None = None,
    resume_from: str | Path | None = None,
    device: str | None = None,
    regime: Regime | None = None,
) -> FitResult:
    """Train one trial. ``on_epoch(epoch, metrics, state)`` runs after each round (an epoch, or ``optim.round_steps``
    steps with a step budget); returning False stops early. ``device`` overrides cfg.device where the caller knows
    better (a Ray trial granted no GPU); ``regime`` replaces the one built from ``data`` (tests)."""
    device = resolve_device(device or cfg.device)
    seed_everything(cfg.regime.seed)
    use_deterministic_kernels(device)
    data = data or load_trial_data(cfg)
    regime = regime or make_regime(cfg, data)
    t = TrialTensors(cfg, data, regime, device)

    model = BMAMemory(cfg.model, image_channels=data.image_train.x.shape[1], num_classes=regime.num_classes,
                      seed=cfg.regime.seed).to(device)
    loss = build_loss(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    controller = CycleLRControl(cfg, optimizer) if cfg.optim.lr_control == "cycle_plateau" else None
    state = TrainState(cfg, 0, model, optimizer, lr_control=controller)
    if resume_from is not None:
        state.restore(resume_from, device)

    stopped = False
    rounds = num_rounds(cfg)
    pool = max(len(t.x_img), len(t.x_snd))
    done_steps = sum(steps_in_round(cfg, pool, r) for r in range(1, state.epoch + 1))
    for epoch in range(state.epoch + 1, rounds + 1):
        steps = steps_in_round(cfg, pool, epoch)
        metrics = _train_epoch(cfg, model, loss, optimizer, t, epoch, device, steps, done_steps, state.lr_control)
        done_steps += steps
        metrics["train/steps"] = done_steps
        last = epoch == rounds
        if last or epoch % cfg.eval.eval_every == 0:
            t0 = time.perf_counter()
            metrics.update(evaluate(model, t.eval_split, cfg.eval.probe_max_iter, device))
            metrics.update(validation_losses(loss, model, t))
            metrics["time/eval_s"] = time.perf_counter() - t0
        if cfg.eval.info_every and (last or epoch % cfg.eval.info_every == 0):
            t0 = time.perf_counter()
            metrics.update(information_probes(cfg, model, t, device))
            metrics["time/info_s"] = time.perf_counter() - t0
        metrics["epoch"] = epoch
        state.epoch = epoch
        state.history.append(metrics)
        if on_epoch is not None and on_epoch(epoch, metrics, state) is False:
            stopped = epoch < rounds
            break
    final = _final(state.history)
    return FitResult(state.history, final, regime.counts(), stopped)


def _final(history: list[dict[str, float]]) -> dict[str, float]:
    """Last value of every metric (evaluation metrics are absent from non-evaluated epochs)."""
    out: dict[str, float] = {}
    for h in history:
        out.update(h)
    return out


def _stream(gen: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Indices 0..n-1 in fresh permutations laid end to end, at least ``length`` long (one permutation if n >= length)."""
    return np.concatenate([gen.permutation(n) for _ in range(max(1, -(-length // n)))])


def _train_epoch(cfg: TrialConfig, model: BMAMemory, loss: VariantLoss, optimizer, t: TrialTensors, epoch: int,
                 device, steps: int, global_step: int = 0,
                 controller: "CycleLRControl | None" = None) -> dict[str, float]:
    """One round of ``steps`` steps. The image and sound pools may differ in size: each is drawn in its own
    permutations; in epoch mode a round covers the larger pool once (the smaller one is cycled), as it did before
    the pools were set apart."""
    model.train()
    model.tau_m = tau_m_at(cfg, epoch)
    # Common random numbers (bma.rng): each stream has its own generator of (seed, purpose, epoch), so one
    # modality's batches and views are the same whatever the other modality's pool size or the pairing ratio.
    seed = cfg.regime.seed
    aug_img, aug_snd = rng.torch_generator(seed, "augment/image", epoch), rng.torch_generator(seed, "augment/sound", epoch)
    aug_reseed = rng.torch_generator(seed, "memory/reseed", epoch)
    b = cfg.optim.batch_size
    n_img, n_snd = len(t.x_img), len(t.x_snd)
    # A pool smaller than a batch (50 pairs and no unpaired images) gives batches of the whole pool, never a
    # sample twice in one batch (a duplicate would be a false negative of the contrastive objectives).
    b_img, b_snd = min(b, n_img), min(b, n_snd)
    pool = max(n_img, n_snd)

    def length(n: int, batch: int) -> int:
        # epoch mode: the larger pool once, in one permutation (its last batch may be short); else enough for steps
        return n if cfg.optim.steps is None and n == pool else max(pool if cfg.optim.steps is None else 0, steps * batch)

    # Permutations of positions in the pool's canonical order (TrialTensors.img_canonical): the same samples in the
    # same order whenever the pool holds the same samples, whichever of them are pairs.
    img_perm = t.img_canonical[_stream(rng.numpy_rng(seed, "order/image", epoch), n_img, length(n_img, b_img))]
    snd_perm = t.snd_canonical[_stream(rng.numpy_rng(seed, "order/sound", epoch), n_snd, length(n_snd, b_snd))]
    pair_b = min(b, t.n_pairs)
    pair_rng = rng.numpy_rng(seed, "order/pairs", epoch)
    pair_perm = np.concatenate([pair_rng.permutation(t.n_pairs) for _ in range(-(-steps * pair_b // t.n_pairs))])
    sums: dict[str, float] = {}
    reseeded = 0
    t0 = time.perf_counter()
    for step in range(steps):
        ii = torch.as_tensor(img_perm[step * b_img : (step + 1) * b_img], device=device)
        si = torch.as_tensor(snd_perm[step * b_snd : (step + 1) * b_snd], device=device)
        xv, xs = t.x_img[ii], t.x_snd[si]
        targets = {"y_v": t.y_img[ii] if t.reads_labels else None, "y_s": t.y_snd[si] if t.reads_labels else None}
        if cfg.regime.expand_sounds:
            xs = augment_spectrograms(xs, aug_snd)
        # the second views: each modality's from its own generator (after the sound expansion on the sound side)
        views = {"x_v2": shift_images(xv, aug_img), "x_s2": augment_spectrograms(xs, aug_snd)} if loss.needs_views else {}
        k = 0
        if loss.uses_pairs:
            pi = torch.as_tensor(pair_perm[step * pair_b : (step + 1) * pair_b], device=device)
            xv, xs, k = torch.cat([t.x_img[pi], xv]), torch.cat([t.x_snd[pi], xs]), len(pi)
            targets["y_pair"] = t.y_img[pi] if t.reads_labels else None
        with autocast(cfg, device):
            outputs = model.forward_step(xv, xs, k, **views, reads=loss.reads)
            terms = loss(**outputs, **targets)
            if controller is not None and "s_prime" in outputs:
                estimate = losses.cycle_infonce(outputs["f_s"], outputs["s_prime"])
                controller.observe(float(estimate), global_step + step + 1)
        total = terms["total"]
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss/total became {total.item()} at epoch {epoch}, step {step}")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        pairs = outputs.get("pairs")
        if pairs is not None and model.has_memory:
            model.track_usage(pairs["w_v"].detach(), pairs["w_s"].detach())
            every = cfg.model.slot_reseed_every
            if every and (global_step + step + 1) % every == 0:
                if cfg.model.slot_reseed_source == "unpaired":
                    revived = model.reseed_dead_slots_unpaired(outputs["f_v"].detach(), outputs["f_s"].detach(),
                                                               cfg.model.slot_dead_usage, aug_reseed)
                else:
                    revived = model.reseed_dead_slots(pairs["f_v"].detach(), pairs["f_s"].detach(),
                                                      cfg.model.slot_dead_usage, aug_reseed)
                _reset_adam_rows(optimizer, (model.memory_image, model.memory_sound), revived)
                reseeded += len(revived)
        for name, v in terms.items():
            sums[name] = sums.get(name, 0.0) + float(v.detach())
    metrics = {f"loss/{name}": v / steps for name, v in sums.items()}
    metrics["time/epoch_s"] = time.perf_counter() - t0
    metrics["train/tau_m"] = model.tau_m
    metrics["train/lr"] = optimizer.param_groups[0]["lr"]
    if cfg.model.slot_reseed_every and model.has_memory:
        metrics["train/reseeded_slots"] = float(reseeded)  # slots re-seeded during this round
    if controller is not None:
        metrics["train/lr_control_I_S_Sprime"] = controller.last
    return metrics


def _reset_adam_rows(optimizer: torch.optim.Optimizer, params, rows: torch.Tensor) -> None:
    """A re-seeded slot starts afresh: its rows of Adam's moment estimates are zeroed."""
    if len(rows) == 0:
        return
    for param in params:
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][rows] = 0


def _improvement_terms(cfg: TrialConfig, model: BMAMemory, fv: torch.Tensor, fs: torch.Tensor, xv, xs, gen,
                       views: dict, pairs: dict | None) -> dict[str, torch.Tensor]:
    """The stage-3 loss terms alone on a step's single-batch features ``fv``/``fs`` (from inputs ``xv``/``xs``):
    {name: unweighted term}, as the loop's VariantLoss computes them. ``views`` may hold the second views' f_v2,
    f_s2 (else they are drawn from ``gen`` and encoded); ``pairs``: the pair batch's model output, or None.
    tests/core/test_improvements.py checks each term's gradient through this."""
    loss = build_loss(cfg)
    infomax = {}
    if loss.uses_infomax:
        f_v2 = views.get("f_v2")
        if f_v2 is None:
            f_v2 = model.encode_image(shift_images(xv, gen))
        f_s2 = views.get("f_s2")
        if f_s2 is None:
            f_s2 = model.encode_sound(augment_spectrograms(xs, gen))
        infomax = model.infomax_outputs(fv, fs, f_v2, f_s2, pairs)
    return loss.improvement_terms(fv, fs, pairs, **infomax)
