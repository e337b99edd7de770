"""One trial in one process: ``fit(config, on_epoch)``.

The loop, per epoch: every step draws a batch of single images and a batch of single sounds from the regime's
training samples (paired and unpaired alike: unimodal labels and unpaired samples are cheap), and a batch of pairs.
- encoder objective on the single batches (every variant);
- L_pair on the pair batch (paired_only, bma);
- L_unpair, the cycles S -> I_pseudo -> S' and V -> S_pseudo -> V', on the single batches (bma). Paired samples in
  those batches take part as single samples: their partner is not used there.
Then evaluation, the information probes, and the ``on_epoch`` callback with a flat metrics dict and a handle that
writes a checkpoint. Data order and augmentations come from generators seeded by (seed, epoch), and checkpoints
hold model, optimiser, RNG states and epoch, so a resumed trial continues exactly where it stopped.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bma import losses
from bma.augment import augment_spectrograms, shift_images
from bma.config import ConfigError, TrialConfig
from bma.data.features import FeatureSet, FeatureStore
from bma.data.regimes import ClassMap, Regime, build_regime, load_classmap
from bma.evaluation import embed, evaluate
from bma.model import BMAMemory

CHECKPOINT_FILE = "trial_state.pt"


# -- data -------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialData:
    """Cached features of both modalities' official splits, with labels mapped into the common class space."""

    image_train: FeatureSet
    image_test: FeatureSet
    sound_train: FeatureSet
    sound_test: FeatureSet
    classmap: ClassMap
    # FSDD only: each clip's speaker (held-out-speaker regimes and domains); None for other sources
    sound_train_speakers: np.ndarray | None = None
    sound_test_speakers: np.ndarray | None = None
    # extra sound test domains (bma.data.domains), e.g. {"snr0db": noisy official test clips}
    sound_test_domains: dict[str, FeatureSet] = field(default_factory=dict)
    # another dataset's test split: {"image_imagefolder": (features, common-space labels)} (bma.data.domains)
    dataset_domains: dict[str, tuple[FeatureSet, np.ndarray]] = field(default_factory=dict)


def data_identity(cfg: TrialConfig) -> dict:
    """The settings that decide a trial's TrialData: trials that agree on them share one (a study loads it once)."""
    flat = cfg.to_flat()
    return {k: v for k, v in flat.items()
            if k.startswith(("data.", "features.", "eval.xdomain_")) or k == "eval.test_sound_snr_db"}


def load_trial_data(cfg: TrialConfig, store: FeatureStore | None = None) -> TrialData:
    """Features from the on-disk cache (computed on first use). A study calls this once and shares the result."""
    from bma.data.domains import dataset_domain, dataset_domain_name, fsdd_speakers, noisy_test_sounds, snr_domain

    store = store or FeatureStore(cfg.data.cache_dir)
    image_train = store.images(cfg.data.image, cfg.features, "train")
    image_test = store.images(cfg.data.image, cfg.features, "test")
    sound_train = store.sounds(cfg.data.sound, cfg.features, "train")
    sound_test = store.sounds(cfg.data.sound, cfg.features, "test")
    classmap = load_classmap(cfg.data.classmap, image_train.classes, sound_train.classes)
    speakers = (None, None)
    if cfg.data.sound.source == "fsdd":
        speakers = tuple(fsdd_speakers(cfg.data.sound, split, cfg.data.cache_dir) for split in ("train", "test"))
    domains = {}
    if cfg.eval.test_sound_snr_db is not None:
        domains[snr_domain(cfg.eval.test_sound_snr_db)] = noisy_test_sounds(
            store, cfg.data.sound, cfg.features, cfg.eval.test_sound_snr_db)
    datasets = {}
    e = cfg.eval
    for kind, source, root, train, to_common in (
        ("images", e.xdomain_image_source, e.xdomain_image_root, image_train, classmap.image_to_common),
        ("sounds", e.xdomain_sound_source, e.xdomain_sound_root, sound_train, classmap.sound_to_common),
    ):
        if source is not None:
            fs, y = dataset_domain(store, kind, source, root, cfg.features, train.classes, to_common)
            if fs.x.shape[1:2] != train.x.shape[1:2]:
                from bma.data.errors import DataError

                raise DataError(f"eval.xdomain_{kind[:-1]}_source: {source} has {fs.x.shape[1]} channels, the training "
                                f"data {train.x.shape[1]} (the encoder takes one channel count)")
            datasets[dataset_domain_name(kind, source)] = (fs, y)
    return TrialData(image_train, image_test, sound_train, sound_test, classmap, *speakers, domains, datasets)


def common_labels(fs: FeatureSet, mapping: np.ndarray) -> np.ndarray:
    return mapping[fs.y.numpy()]


def sound_labels(cfg: TrialConfig, data: TrialData, split: str) -> np.ndarray:
    """Common-space labels of a sound split; a held-out speaker's clips are -1 (in no regime, no in-domain test)."""
    fs = data.sound_train if split == "train" else data.sound_test
    y = common_labels(fs, data.classmap.sound_to_common)
    speaker = cfg.regime.heldout_speaker
    if speaker is not None:
        from bma.data.domains import check_speaker

        speakers = data.sound_train_speakers if split == "train" else data.sound_test_speakers
        if speakers is None:
            raise ConfigError([f"regime.heldout_speaker: {cfg.data.sound.source} data has no speakers"])
        check_speaker(speaker, speakers)
        y = np.where(speakers == speaker, -1, y)
    return y


def make_regime(cfg: TrialConfig, data: TrialData) -> Regime:
    cm = data.classmap
    return build_regime(
        cfg.regime,
        common_labels(data.image_train, cm.image_to_common),
        sound_labels(cfg, data, "train"),
        common_labels(data.image_test, cm.image_to_common),
        sound_labels(cfg, data, "test"),
        cm.num_classes,
        image_keys=data.image_train.keys if cfg.data.image.source == "manifest" else None,
        sound_keys=data.sound_train.keys if cfg.data.sound.source == "manifest" else None,
        image_source=cfg.data.image.source,
        sound_source=cfg.data.sound.source,
    )


# -- checkpoints ------------------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """What a checkpoint holds; ``save`` writes it atomically into a folder."""

    config: TrialConfig
    epoch: int
    model: BMAMemory
    optimizer: torch.optim.Optimizer
    history: list[dict[str, float]] = field(default_factory=list)
    lr_control: "CycleLRControl | None" = None

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": self.config.to_flat(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "lr_control": None if self.lr_control is None else self.lr_control.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }
        tmp = folder / (CHECKPOINT_FILE + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(folder / CHECKPOINT_FILE)
        return folder / CHECKPOINT_FILE


def load_checkpoint(folder: str | Path) -> dict:
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trial checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


# -- the loop ---------------------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError([f"device: {name!r} requested but CUDA is not available on this machine (use auto or cpu)"])
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def num_rounds(cfg: TrialConfig) -> int:
    """Rounds of the loop: epochs, or ceil(optim.steps / optim.round_steps) with a fixed step budget."""
    o = cfg.optim
    return o.epochs if o.steps is None else -(-o.steps // o.round_steps)


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


class _Tensors:
    """The regime's tensors, gathered once onto the device."""

    def __init__(self, cfg: TrialConfig, data: TrialData, regime: Regime, device: torch.device):
        cm = data.classmap
        y_img_tr = torch.as_tensor(common_labels(data.image_train, cm.image_to_common))
        y_snd_tr = torch.as_tensor(common_labels(data.sound_train, cm.sound_to_common))
        y_img_te = torch.as_tensor(common_labels(data.image_test, cm.image_to_common))
        y_snd_te = torch.as_tensor(common_labels(data.sound_test, cm.sound_to_common))
        def images(x: torch.Tensor, split: str, indices) -> torch.Tensor:
            """Gaussian noise tied to (seed, split, sample index): the same test image carries the same noise in
            every regime of a seed, and a training image keeps its noise when train_size grows."""
            x = x[torch.as_tensor(indices, dtype=torch.long)]
            std = cfg.regime.image_noise_std
            if std <= 0:
                return x
            offset = 0 if split == "train" else 1 << 40
            noise = torch.stack([
                torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(cfg.regime.seed * (1 << 41) + offset + int(i)))
                for i in indices
            ])
            return x + std * noise

        idx = lambda a: torch.as_tensor(a, dtype=torch.long)  # noqa: E731
        train_img, train_snd = idx(regime.train_image), idx(regime.train_sound)
        self.x_img = images(data.image_train.x, "train", regime.train_image).to(device)
        self.x_snd = data.sound_train.x[train_snd].to(device)
        # A label-free trial's training tensors hold no labels, so no learner can read one (evaluation still does).
        self.reads_labels = cfg.reads_labels
        self.y_img = y_img_tr[train_img].to(device) if self.reads_labels else None
        self.y_snd = y_snd_tr[train_snd].to(device) if self.reads_labels else None
        n_pairs = len(regime.pair_image)
        # Pairs are the first n_pairs rows of the training tensors (train_image/train_sound start with the pairs).
        self.n_pairs = n_pairs
        self.val = (
            images(data.image_train.x, "train", regime.val_image).to(device),
            data.sound_train.x[idx(regime.val_sound)].to(device),
            y_img_tr[idx(regime.val_image)].to(device) if self.reads_labels else None,
        )
        test_img, test_snd = idx(regime.test_image), idx(regime.test_sound)
        self.eval_split = {
            "x_img_train": self.x_img, "y_img_train": y_img_tr[train_img],
            "x_snd_train": self.x_snd, "y_snd_train": y_snd_tr[train_snd],
            "x_img_test": images(data.image_test.x, "test", regime.test_image), "y_img_test": y_img_te[test_img],
            "x_snd_test": data.sound_test.x[test_snd], "y_snd_test": y_snd_te[test_snd],
            "x_img_pair": images(data.image_test.x, "test", regime.test_pair_image),
            "x_snd_pair": data.sound_test.x[idx(regime.test_pair_sound)],
            "y_pair": y_img_te[idx(regime.test_pair_image)],
        }
        self.eval_split.update(_budget_sets(cfg, regime, data, y_img_tr, y_snd_tr, images))
        self.eval_split["sound_domains"] = _sound_domains(cfg, data, regime, y_snd_tr, y_snd_te)
        self.eval_split["image_domains"] = {}
        for name, (fs, y) in data.dataset_domains.items():
            keep = torch.as_tensor(np.flatnonzero(y >= 0))
            target = "image_domains" if name.startswith("image_") else "sound_domains"
            self.eval_split[target][name] = (fs.x[keep], torch.as_tensor(y)[keep])


def _budget_sets(cfg: TrialConfig, regime: Regime, data: TrialData, y_img, y_snd, images) -> dict:
    """The labelled sets of the label-budget probes: the first K per class of the seed's fixed order (nested in K).
    Returns the largest budget's samples and, per K, a mask selecting the K-budget rows among them."""
    from bma.data.regimes import budget_subset

    k_max = max(cfg.eval.label_budgets)
    out = {}
    for side, order, y, x in (("img", regime.label_order_image, y_img, data.image_train.x),
                              ("snd", regime.label_order_sound, y_snd, data.sound_train.x)):
        if order is None:  # natively paired data: no separate order; the budgets use the training rows
            order = regime.train_image if side == "img" else regime.train_sound
        chosen = budget_subset(order, y.numpy(), k_max)
        labels = y[torch.as_tensor(chosen, dtype=torch.long)]
        rank = np.zeros(len(chosen), dtype=np.int64)  # position of each sample within its class
        seen: dict[int, int] = {}
        for i, c in enumerate(labels.tolist()):
            rank[i] = seen.get(c, 0)
            seen[c] = rank[i] + 1
        out[f"x_{side}_budget"] = images(x, "train", chosen) if side == "img" else x[torch.as_tensor(chosen, dtype=torch.long)]
        out[f"y_{side}_budget"] = labels
        out[f"{side}_budget_masks"] = {k: rank < k for k in cfg.eval.label_budgets}
    return out


def _sound_domains(cfg: TrialConfig, data: TrialData, regime: Regime, y_snd_tr, y_snd_te) -> dict:
    """Sound test domains other than the training one: {name: (x, y)} (see bma.data.domains)."""
    from bma.data.domains import speaker_domain

    domains = {}
    speaker = cfg.regime.heldout_speaker
    if speaker is not None:
        tr = np.flatnonzero((data.sound_train_speakers == speaker) & (y_snd_tr.numpy() >= 0))
        te = np.flatnonzero((data.sound_test_speakers == speaker) & (y_snd_te.numpy() >= 0))
        x = torch.cat([data.sound_train.x[torch.as_tensor(tr)], data.sound_test.x[torch.as_tensor(te)]])
        domains[speaker_domain(speaker)] = (x, torch.cat([y_snd_tr[tr], y_snd_te[te]]))
    for name, fs in data.sound_test_domains.items():
        test = torch.as_tensor(regime.test_sound, dtype=torch.long)
        domains[name] = (fs.x[test], y_snd_te[test])
    return domains


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
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)
    data = data or load_trial_data(cfg)
    regime = regime or make_regime(cfg, data)
    t = _Tensors(cfg, data, regime, device)

    model = BMAMemory(cfg.model, image_channels=data.image_train.x.shape[1], num_classes=regime.num_classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    controller = CycleLRControl(cfg, optimizer) if cfg.optim.lr_control == "cycle_plateau" else None
    state = TrainState(cfg, 0, model, optimizer, lr_control=controller)
    if resume_from is not None:
        saved = load_checkpoint(resume_from)
        saved_flat, flat = TrialConfig.from_flat(saved["config"]).to_flat(), cfg.to_flat()
        differs = sorted(k for k in flat if flat[k] != saved_flat.get(k))
        if differs:
            raise ConfigError([f"{resume_from}: the checkpoint belongs to another trial configuration (differs in {differs})"])
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state.epoch, state.history = saved["epoch"], saved["history"]
        if controller is not None and saved.get("lr_control") is not None:
            controller.load_state_dict(saved["lr_control"])
        torch.set_rng_state(saved["rng"]["torch"])
        np.random.set_state(saved["rng"]["numpy"])
        random.setstate(saved["rng"]["python"])
        if saved["rng"].get("cuda") is not None and device.type == "cuda":
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])

    stopped = False
    rounds = num_rounds(cfg)
    pool = max(len(t.x_img), len(t.x_snd))
    done_steps = sum(steps_in_round(cfg, pool, r) for r in range(1, state.epoch + 1))
    for epoch in range(state.epoch + 1, rounds + 1):
        steps = steps_in_round(cfg, pool, epoch)
        metrics = _train_epoch(cfg, model, optimizer, t, epoch, device, steps, done_steps, state.lr_control)
        done_steps += steps
        metrics["train/steps"] = done_steps
        last = epoch == rounds
        if last or epoch % cfg.eval.eval_every == 0:
            t0 = time.perf_counter()
            metrics.update(evaluate(model, t.eval_split, cfg.eval.probe_max_iter, device))
            metrics.update(_val_losses(cfg, model, t))
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


def _stream(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Indices 0..n-1 in fresh permutations laid end to end, at least ``length`` long (one permutation if n >= length)."""
    return np.concatenate([rng.permutation(n) for _ in range(max(1, -(-length // n)))])


def _train_epoch(cfg: TrialConfig, model: BMAMemory, optimizer, t: _Tensors, epoch: int, device, steps: int,
                 global_step: int = 0, controller: "CycleLRControl | None" = None) -> dict[str, float]:
    """One round of ``steps`` steps. The image and sound pools may differ in size: each is drawn in its own
    permutations; in epoch mode a round covers the larger pool once (the smaller one is cycled), as it did before
    the pools were set apart."""
    model.train()
    model.tau_m = tau_m_at(cfg, epoch)
    lo, variant = cfg.loss, cfg.model.variant
    rng = np.random.default_rng([cfg.regime.seed, epoch])
    aug = torch.Generator().manual_seed(cfg.regime.seed * 1_000_003 + epoch)
    b = cfg.optim.batch_size
    n_img, n_snd = len(t.x_img), len(t.x_snd)
    # A pool smaller than a batch (50 pairs and no unpaired images) gives batches of the whole pool, never a
    # sample twice in one batch (a duplicate would be a false negative of the contrastive objectives).
    b_img, b_snd = min(b, n_img), min(b, n_snd)
    pool = max(n_img, n_snd)

    def length(n: int, batch: int) -> int:
        # epoch mode: the larger pool once, in one permutation (its last batch may be short); else enough for steps
        return n if cfg.optim.steps is None and n == pool else max(pool if cfg.optim.steps is None else 0, steps * batch)

    img_perm, snd_perm = _stream(rng, n_img, length(n_img, b_img)), _stream(rng, n_snd, length(n_snd, b_snd))
    pair_b = min(b, t.n_pairs)
    pair_perm = np.concatenate([rng.permutation(t.n_pairs) for _ in range(-(-steps * pair_b // t.n_pairs))])
    use_amp = cfg.amp and device.type == "cuda"
    sums: dict[str, float] = {}
    reseeded = 0
    t0 = time.perf_counter()
    for step in range(steps):
        ii = torch.as_tensor(img_perm[step * b_img : (step + 1) * b_img], device=device)
        si = torch.as_tensor(snd_perm[step * b_snd : (step + 1) * b_snd], device=device)
        xv, xs = t.x_img[ii], t.x_snd[si]
        yv = t.y_img[ii] if t.reads_labels else None
        ys = t.y_snd[si] if t.reads_labels else None
        if cfg.regime.expand_sounds:
            xs = augment_spectrograms(xs, aug)
        use_pairs = variant != "unimodal"
        if use_pairs:
            pi = torch.as_tensor(pair_perm[step * pair_b : (step + 1) * pair_b], device=device)
            xv = torch.cat([t.x_img[pi], xv])
            xs = torch.cat([t.x_snd[pi], xs])
        k = len(pi) if use_pairs else 0
        terms: dict[str, torch.Tensor] = {}
        views: dict[str, torch.Tensor] = {}
        out = None
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            f_v, f_s = model.encode_image(xv), model.encode_sound(xs)
            fv_single, fs_single = f_v[k:], f_s[k:]
            terms["encoder"] = _encoder_objective(cfg, model, fv_single, fs_single, yv, ys, xv[k:], xs[k:], aug, views)
            total = lo.w_encoder * terms["encoder"]
            if use_pairs:
                out = {**model.represent_image(f_v[:k]), **model.represent_sound(f_s[:k])}
                pair_labels = t.y_img[pi] if lo.pair_negatives == "other_class" else None  # only read with labels
                pair = losses.pair_loss(out, lo.tau_l, lo.w_address, lo.w_recall, pair_labels)
                terms["pair"] = pair["total"]
                terms.update({f"pair_{name}": v for name, v in pair.items() if name != "total"})
                total = total + lo.w_pair * pair["total"]
            if variant == "bma":
                _, s_prime = model.sound_cycle(fs_single)
                _, v_prime = model.image_cycle(fv_single)
                if lo.cycle_space == "address":
                    terms["unpair"] = 0.5 * (
                        losses.address_cycle_loss(model.recall(fs_single, "sound")[0], model.recall(s_prime, "sound")[0])
                        + losses.address_cycle_loss(model.recall(fv_single, "image")[0], model.recall(v_prime, "image")[0]))
                else:
                    terms["unpair"] = 0.5 * (losses.cycle_loss(fs_single, s_prime) + losses.cycle_loss(fv_single, v_prime))
                total = total + lo.w_unpair * terms["unpair"]
                if controller is not None:
                    controller.observe(float(losses.cycle_infonce(fs_single, s_prime)), global_step + step + 1)
            for name, term in _improvement_terms(cfg, model, fv_single, fs_single, xv[k:], xs[k:], aug, views, out).items():
                terms[name] = term
                total = total + getattr(lo, f"w_{name}") * term
            if model.has_memory and lo.w_slot_decorrelation > 0:
                terms["slot_decorrelation"] = 0.5 * (
                    losses.slot_decorrelation(model.memory_image) + losses.slot_decorrelation(model.memory_sound)
                )
                total = total + lo.w_slot_decorrelation * terms["slot_decorrelation"]
        terms["total"] = total
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss/total became {total.item()} at epoch {epoch}, step {step}")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if out is not None and model.has_memory:
            model.track_usage(out["w_v"].detach(), out["w_s"].detach())
            every = cfg.model.slot_reseed_every
            if every and (global_step + step + 1) % every == 0:
                revived = model.reseed_dead_slots(out["f_v"].detach(), out["f_s"].detach(), cfg.model.slot_dead_usage, aug)
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


def _encoder_objective(cfg, model, f_v, f_s, y_v, y_s, x_v, x_s, gen, views: dict) -> torch.Tensor:
    """The in-modality objective on the single batches; a second view's features go into ``views`` (the
    information-maximising loss reuses them rather than encoding a third time)."""
    objective = cfg.loss.encoder_objective
    if objective == "supervised":
        return 0.5 * (losses.supervised_loss(model.classify_image(f_v), y_v) + losses.supervised_loss(model.classify_sound(f_s), y_s))
    if objective == "contrastive":
        # Second view of each sample; the first view is the un-augmented batch already encoded.
        f_v2 = views["f_v2"] = model.encode_image(shift_images(x_v, gen))
        f_s2 = views["f_s2"] = model.encode_sound(augment_spectrograms(x_s, gen))
        tau = cfg.loss.tau_encoder
        return 0.5 * (
            losses.nt_xent(model.ssl_image(f_v), model.ssl_image(f_v2), tau)
            + losses.nt_xent(model.ssl_sound(f_s), model.ssl_sound(f_s2), tau)
        )
    return torch.zeros((), device=f_v.device)


def _improvement_terms(cfg: TrialConfig, model: BMAMemory, fv: torch.Tensor, fs: torch.Tensor, xv, xs, gen,
                       views: dict, pairs: dict | None) -> dict[str, torch.Tensor]:
    """The stage-3 loss switches that are on (weights > 0): {name: unweighted term}. ``fv``/``fs`` are the single
    batches' features, ``pairs`` the pair batch's model output (None for unimodal)."""
    lo, terms = cfg.loss, {}
    if lo.w_variance > 0:
        terms["variance"] = 0.5 * (losses.variance_covariance(fv) + losses.variance_covariance(fs))
    if lo.w_infomax > 0 and model.has_memory:
        # I(h_v; X_v): h_v of one view against the other view's f_v (InfoNCE); I(h_v; X_true_s): h_v of a pair
        # against its sound's z_s. The sound side mirrors both.
        f_v2 = views.get("f_v2")
        if f_v2 is None:
            f_v2 = model.encode_image(shift_images(xv, gen))
        f_s2 = views.get("f_s2")
        if f_s2 is None:
            f_s2 = model.encode_sound(augment_spectrograms(xs, gen))
        h_v = model.represent_image(fv)["h_v"]
        h_s = model.represent_sound(fs)["h_s"]
        tau = lo.tau_encoder
        view = 0.5 * (losses.info_nce_one_way(model.infomax_image(h_v), model.ssl_image(f_v2), tau)
                      + losses.info_nce_one_way(model.infomax_sound(h_s), model.ssl_sound(f_s2), tau))
        partner = torch.zeros((), device=fv.device)
        if pairs is not None and len(pairs["h_v"]) > 1:
            partner = 0.5 * (losses.info_nce_one_way(model.infomax_image(pairs["h_v"]), pairs["z_s"], lo.tau_l)
                             + losses.info_nce_one_way(model.infomax_sound(pairs["h_s"]), pairs["z_v"], lo.tau_l))
        terms["infomax"] = view + partner
    return terms


class CycleLRControl:
    """Learning rate driven by the monitored I(S; S') (optim.lr_control: cycle_plateau). Every ``every`` steps the
    mean of the in-batch InfoNCE estimates of I(S; S') since the last check feeds torch's ReduceLROnPlateau in max
    mode: ``patience`` checks without a rise multiply the LR by ``factor``. Its state (the scheduler's and the
    running sum) goes into the checkpoint, so a resumed trial takes the same decisions."""

    def __init__(self, cfg: TrialConfig, optimizer: torch.optim.Optimizer):
        o = cfg.optim
        self.every = o.lr_control_every
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=o.lr_control_factor, patience=o.lr_control_patience, threshold=1e-3)
        self.total, self.count, self.last = 0.0, 0, float("nan")

    def observe(self, estimate: float, step: int) -> None:
        self.total += estimate
        self.count += 1
        if step % self.every == 0 and self.count:
            self.last = self.total / self.count
            self.scheduler.step(self.last)
            self.total, self.count = 0.0, 0

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict(), "total": self.total, "count": self.count, "last": self.last}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])
        self.total, self.count, self.last = state["total"], state["count"], state["last"]


@torch.no_grad()
def _val_losses(cfg: TrialConfig, model: BMAMemory, t: _Tensors) -> dict[str, float]:
    """L_pair on the validation pairs (eval mode): tracks paired generalisation, also for the unimodal baseline."""
    was = model.training
    model.eval()
    xv, xs, yv = t.val
    out = model(x_v=xv, x_s=xs)
    labels = yv if cfg.loss.pair_negatives == "other_class" else None  # None in a label-free trial
    pair = losses.pair_loss(out, cfg.loss.tau_l, cfg.loss.w_address, cfg.loss.w_recall, labels)
    model.train(was)
    return {"loss/val_pair": float(pair["total"]), "loss/val_pair_contrastive": float(pair["contrastive"])}


def information_probes(cfg: TrialConfig, model: BMAMemory, t: _Tensors, device) -> dict[str, float]:
    """Table 1 quantities on held-out class-matched test pairs (at most eval.info_samples of them)."""
    from bma.info.probes import ProbeInputs, compute_probes

    n = min(cfg.eval.info_samples, len(t.eval_split["y_pair"]))
    img = embed(model, t.eval_split["x_img_pair"][:n], "image", device)
    snd = embed(model, t.eval_split["x_snd_pair"][:n], "sound", device)
    s_cycle = v_cycle = None
    if model.has_memory:
        was = model.training
        model.eval()
        with torch.no_grad():  # the cycles only: neural critics in compute_probes train with gradients
            f_s = torch.as_tensor(snd["f_s"], device=device)
            f_v = torch.as_tensor(img["f_v"], device=device)
            s_cycle = (snd["f_s"], *(a.float().cpu().numpy() for a in model.sound_cycle(f_s)))
            v_cycle = (img["f_v"], *(a.float().cpu().numpy() for a in model.image_cycle(f_v)))
        model.train(was)
    inputs = ProbeInputs(
        f_v=img["f_v"], f_s=snd["f_s"],
        f_s_mem=img.get("f_s_mem"), f_v_mem=snd.get("f_v_mem"),
        w_v=img.get("w_v"), w_s=snd.get("w_s"),
        h_v=img["h_v"], h_s=snd["h_s"], z_v=img["z_v"], z_s=snd["z_s"],
        y=t.eval_split["y_pair"][:n].numpy(),
        s_cycle=s_cycle, v_cycle=v_cycle, has_memory=model.has_memory,
    )
    return compute_probes(inputs, estimators=tuple(cfg.eval.info_estimators), seed=cfg.regime.seed,
                          max_samples=cfg.eval.info_samples, probe_max_iter=cfg.eval.probe_max_iter)
