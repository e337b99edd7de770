"""One frozen trial configuration: every knob of a trial, each default in exactly one place.

A trial is rebuilt from its flat record (``TrialConfig.from_flat(run.params)``), so every field here is
logged to MLflow by the study engine. Flat names are dotted paths (``model.memory_slots``); a study spec's
grid may use the short names in ``SHORT_NAMES``.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any

IMAGE_SOURCES = ("mnist", "cifar10", "imagefolder", "manifest")
SOUND_SOURCES = ("fsdd", "esc50", "soundfolder", "manifest")
VARIANTS = ("unimodal", "paired_only", "bma")
ADDRESSINGS = ("softmax", "sparsemax", "entmax15", "topk")
ENCODER_OBJECTIVES = ("supervised", "contrastive", "none")
CYCLE_SPACES = ("feature", "address")
LR_CONTROLS = ("none", "cycle_plateau")
RESEED_SOURCES = ("pairs", "unpaired")  # where a dead slot's new contents come from (model.slot_reseed_source)


@dataclass(frozen=True)
class SourceConfig:
    """Where one modality's data comes from."""

    source: str
    root: str | None = None  # None: the mirror ($BMA_DATA_MIRROR or ../shared/data), else download
    test_fold: int = 5  # ESC-50 only: the official fold held out as the test split (1..5)
    download: bool = True  # allowed to fetch from the official source when nothing local is found


@dataclass(frozen=True)
class DataConfig:
    image: SourceConfig = SourceConfig("mnist")
    sound: SourceConfig = SourceConfig("fsdd")
    classmap: str | None = None  # CSV image_class,sound_class; None = classes with the same name
    cache_dir: str | None = None  # None: $BMA_CACHE_DIR, else ~/.cache/bma-study


@dataclass(frozen=True)
class FeatureConfig:
    """Input features, computed once per data identity and cached (see bma.data.features).

    The sound defaults are FSDD's; other sound sources select a named set with ``features: <preset>``
    (FEATURE_PRESETS below, e.g. ``esc50``: 5-s clips at 22.05 kHz)."""

    sample_rate: int = 8000  # FSDD is 8 kHz; other sound sources are resampled to this
    clip_seconds: float = 1.0  # pad/crop; FSDD clips are 0.14-2.28 s, mean 0.44 s
    n_mels: int = 40
    n_fft: int = 256  # 32 ms at 8 kHz
    hop_length: int = 64  # 8 ms at 8 kHz -> 126 frames per second
    image_size: int | None = None  # None: native size (28 for MNIST, 32 for CIFAR-10); else resized square
    sound_snr_db: float | None = None  # noise scenario: white noise added at this SNR to train and test clips
    # (SNR_DB_RANGE bounds it)


SOUND_FEATURES = ("sample_rate", "clip_seconds", "n_mels", "n_fft", "hop_length")  # what a preset sets
# Named sound-feature settings, selected in a trial block (a study spec's `trial:`, bma-trial's --config or --set)
# with `features: <name>`; a `features.<field>` named beside it overrides that field. Each value lives here.
FEATURE_PRESETS: dict[str, dict[str, Any]] = {
    "fsdd": {name: getattr(FeatureConfig, name) for name in SOUND_FEATURES},  # the FeatureConfig defaults
    # ESC-50: 5-s clips recorded at 44.1 kHz. The whole clip is kept (events sit anywhere in it: docs/data.md,
    # "ESC-50 features"), resampled to 22.05 kHz (mel bands up to 11 kHz); a 1,024-sample window (46 ms) with a
    # 512-sample hop (23 ms) and 64 mel bands (Piczak 2015's ESC-50 baseline: 22.05 kHz, 1,024 / 512, 60 bands):
    # 64 x 216 frames per clip, 2.7x the pixels of an FSDD spectrogram.
    "esc50": {"sample_rate": 22050, "clip_seconds": 5.0, "n_mels": 64, "n_fft": 1024, "hop_length": 512},
}


def expand_feature_preset(section: dict[str, Any]) -> dict[str, Any]:
    """A trial block (nested sections or dotted keys) whose ``features`` is a preset name, with the name replaced
    by the preset's settings as dotted keys; settings named beside it (``features.n_mels``) win. Other blocks come
    back unchanged. ConfigError naming the preset when it is unknown."""
    name = section.get("features")
    if not isinstance(name, str):
        return section
    if name not in FEATURE_PRESETS:
        known = sorted(FEATURE_PRESETS)
        raise ConfigError([f"features: unknown preset {name!r}; expected feature settings or one of {known}"])
    out = {k: v for k, v in section.items() if k != "features"}
    for field_name, value in FEATURE_PRESETS[name].items():
        out.setdefault(f"features.{field_name}", value)
    return out


@dataclass(frozen=True)
class RegimeConfig:
    """The data regime: how many samples, how many of them paired, which draw."""

    pairing_ratio: float = 0.1  # fraction of the train_size samples per modality that come as pairs, (0, 1]
    train_size: int = 2000  # samples per modality used for training (paired + unpaired)
    # The three pools set apart (the paper's question: a fixed sound pool, a swept unpaired image pool). Each null
    # keeps the symmetric meaning: pairs = round(pairing_ratio * train_size), unpaired = train_size - pairs.
    pairs: int | None = None  # class-matched pairs (the first `pairs` of the seed's image order; 5-20 per class)
    unpaired_images: int | None = None  # images after the pairs in that order (MNIST: up to ~59,800 - pairs)
    unpaired_sounds: int | None = None  # sounds after the pairs' sounds (FSDD: up to 2,500 - pairs)
    heldout_speaker: str | None = None  # cross-domain: this FSDD speaker's clips leave training, become a test domain
    val_per_class: int = 20  # per modality and class, carved from train before anything else, fixed per seed
    seed: int = 0
    expand_sounds: bool = False  # allow train_size above the sound pool by reusing clips with augmentation
    image_noise_std: float = 0.0  # noise scenario: Gaussian noise (in normalised units) on train and test images


@dataclass(frozen=True)
class ModelConfig:
    variant: str = "bma"  # unimodal (no memory) | paired_only (no L_unpair) | bma
    image_encoder: str = "cnn"  # cnn | resnet18
    encoder_width: int = 16  # channels of the CNNs' first layer (x2, x4 deeper); 16 keeps a CPU trial in minutes
    feature_dim: int = 128  # dimension of f_v, f_s and of each memory slot
    projection_dim: int = 64  # dimension of Z_v, Z_s for the paired contrastive loss
    memory_slots: int = 64  # n
    tau_m: float = 0.1  # addressing temperature; cosine similarities lie in [-1, 1]
    tau_m_final: float | None = None  # if set, tau_m is annealed geometrically to this over training
    addressing: str = "softmax"  # softmax | sparsemax | entmax15 | topk
    top_k: int = 8  # used by addressing=topk only
    # Improvement switch (a changed memory update rule, for a concentrated H(W)): every slot_reseed_every steps,
    # slots whose running usage is below slot_dead_usage / n are re-seeded (from slot_reseed_source).
    slot_reseed_every: int = 0  # steps; 0 = off (the paper's rule: slots move by gradient only)
    slot_dead_usage: float = 0.1  # fraction of the uniform usage 1/n under which a slot counts as dead
    # pairs: slot r of M_v <- a pair's f_v, of M_s <- its f_s. unpaired: from the single batches, which are far more
    # varied than 50 pairs (re-seeding from pairs halved the effective slots in the ablation): half the dead slots
    # from an unpaired image (M_s <- what the memory recalls for it), half from an unpaired sound (the mirror)
    slot_reseed_source: str = "pairs"


@dataclass(frozen=True)
class LossConfig:
    tau_l: float = 0.07  # InfoNCE temperature of L_pair (CLIP's initial value)
    w_pair: float = 1.0
    pair_negatives: str = "other_class"  # other_class: same-class rows are no negatives in L_pair's InfoNCE; all
    w_address: float = 1.0  # symmetric KL between w_v and w_s on pairs
    w_recall: float = 1.0  # recalled partner feature close to the partner's own feature (cosine)
    w_unpair: float = 1.0  # cycle S -> I_pseudo -> S' and its image mirror
    w_encoder: float = 1.0
    encoder_objective: str = "supervised"  # supervised | contrastive (label-free, augmentations) | none
    tau_encoder: float = 0.2  # temperature of the label-free contrastive encoder objective
    w_slot_decorrelation: float = 0.0  # improvement switch: penalise off-diagonal slot cosine similarity
    # Improvement switches of the plan's stage 3, each off by default (docs/model.md, "Improvements"):
    w_variance: float = 0.0  # VICReg variance + covariance terms on the single-batch f_v, f_s (against collapse)
    w_infomax: float = 0.0  # InfoNCE bounds of I(h_v; X_v) (another view) + I(h_v; X_true_s) (pairs), and mirror
    cycle_space: str = "feature"  # feature: pull S' to S (the paper) | address: S' must address M_s as S does


@dataclass(frozen=True)
class OptimConfig:
    epochs: int = 20  # a 2,000-sample regime needs ~600 steps before the memory associates (assoc/* rises late)
    # Equal compute across pool sizes: a fixed number of optimiser steps, whatever the pools hold (null: epochs).
    # The loop then runs in rounds of round_steps steps; eval_every / info_every count rounds, as they count epochs.
    steps: int | None = None
    round_steps: int = 100  # a round = one report, one checkpoint, one MLflow step
    batch_size: int = 64  # small regimes: more steps per epoch; the pair batch is min(batch_size, pairs)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    # Improvement switch: learning rate driven by the monitored I(S; S'). Every lr_control_every steps the mean
    # in-batch InfoNCE estimate of I(S; S') (cheap: the cycle's own features) feeds torch's ReduceLROnPlateau
    # (mode max): when it has not risen for lr_control_patience checks, the LR is multiplied by lr_control_factor.
    lr_control: str = "none"  # none | cycle_plateau
    lr_control_every: int = 50
    lr_control_factor: float = 0.5
    lr_control_patience: int = 2


@dataclass(frozen=True)
class EvalConfig:
    eval_every: int = 5  # epochs between probe/retrieval evaluations (the last epoch is always evaluated)
    info_every: int = 5  # epochs between information-theoretic probes; 0 disables them
    info_samples: int = 1000  # held-out samples per modality the information probes see
    info_estimators: tuple[str, ...] = ("auto",)  # picks per quantity (docs/information.md, section 2); add gaussian/ksg/infonce/nwj/mine/smile by name
    probe_max_iter: int = 100  # L-BFGS iterations of the linear probes (accuracy settles well before 100)
    # Labelled samples per class the label-budget probes see (acc/<probe>/k<K>), next to the full-label probes.
    # Few labels is where a better representation shows; 1/5/20 span one-shot to what ~10 min of labelling gives.
    label_budgets: tuple[int, ...] = (1, 5, 20)
    # Independent class-balanced labelled draws each label-budget probe is fitted on; acc/<probe>/k<K> is their mean
    # and acc_sd/<probe>/k<K> their spread. One draw made the labelled set a large part of a probe's variance
    # across seeds; 8 is where the spread of the mean stopped shrinking on the boost cell (docs/results.md).
    label_draws: int = 8
    # Where the draws come from: "outside_pairs" (the train split outside validation and this regime's pairs:
    # a probe whose labelled samples were the pairs measured the samples L_pair aligned, not the representation)
    # or "anywhere" (the train split outside validation).
    label_pool: str = "outside_pairs"
    test_sound_snr_db: float | None = None  # cross-domain: also evaluate on test clips with white noise at this SNR
    # cross-domain: another dataset's test split (classes matched by name to the training classes), probes scored
    # there as xdomain/image_<source>/... and xdomain/sound_<source>/...; e.g. imagefolder + a root
    xdomain_image_source: str | None = None
    xdomain_image_root: str | None = None
    xdomain_sound_source: str | None = None
    xdomain_sound_root: str | None = None


LABEL_POOLS = ("outside_pairs", "anywhere")  # eval.label_pool


@dataclass(frozen=True)
class TrialConfig:
    data: DataConfig = DataConfig()
    features: FeatureConfig = FeatureConfig()
    regime: RegimeConfig = RegimeConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    eval: EvalConfig = EvalConfig()
    device: str = "auto"  # auto: CUDA when available, else CPU
    amp: bool = False  # bf16 autocast on CUDA

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise ConfigError(problems)

    @property
    def reads_labels(self) -> bool:
        """Whether any learner of the trial reads a class label: the supervised encoder objective, or L_pair's
        same-class negative mask. A label-free trial (contrastive/none encoders, pair_negatives: all) trains on
        tensors that hold no labels; only the evaluation (probes, association read-out) reads them. The class-matched
        pairs themselves are the weak supervision the setting gives (the AV-MNIST construction)."""
        masks_pairs = self.model.variant != "unimodal" and self.loss.pair_negatives == "other_class"
        return self.loss.encoder_objective == "supervised" or masks_pairs

    # -- flat form: what MLflow and Ray Tune see -------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        return _flatten(self)

    @classmethod
    def from_flat(cls, flat: dict[str, Any]) -> "TrialConfig":
        """Build from dotted keys (or SHORT_NAMES); values may be strings as MLflow stores them."""
        nested: dict[str, Any] = {}
        unknown = []
        for key, value in flat.items():
            path = SHORT_NAMES.get(key, key)
            if path in RETIRED_SETTINGS and str(value) == RETIRED_SETTINGS[path]:
                continue
            if path not in FLAT_TYPES:
                unknown.append(key)
                continue
            node = nested
            parts = path.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = _coerce(value, FLAT_TYPES[path], path)
        if unknown:
            raise ConfigError([f"{k}: unknown setting" for k in sorted(unknown)])
        return _build(cls, nested)

    def with_updates(self, **flat: Any) -> "TrialConfig":
        merged = self.to_flat()
        merged.update({SHORT_NAMES.get(k, k): v for k, v in flat.items()})
        return TrialConfig.from_flat(merged)


class ConfigError(ValueError):
    """A trial configuration that cannot run; ``problems`` lists each as 'path: what was expected'."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid trial configuration:\n  " + "\n  ".join(self.problems))


# Settings each variant does not read (bma reads every one): a trial's effective configuration resets them to their
# defaults, so trials that differ only in them are one computation, trained once (study/spec.py, distinct_trials).
# unimodal has no memory, no L_pair and no L_unpair; it still reads the pool sizes of both modalities and
# regime.pairs / pairing_ratio (its single-sample pools are the pairs plus the unpaired samples). The LR control is
# driven by the cycle's I(S; S'), which only bma computes.
_MEMORY = ("model.memory_slots", "model.tau_m", "model.tau_m_final", "model.addressing", "model.top_k",
           "model.slot_reseed_every", "model.slot_dead_usage", "model.slot_reseed_source", "loss.w_slot_decorrelation",
           "loss.w_infomax")
_PAIR = ("loss.tau_l", "loss.w_pair", "loss.pair_negatives", "loss.w_address", "loss.w_recall")
_UNPAIR = ("loss.w_unpair", "loss.cycle_space")
_LR_CONTROL = ("optim.lr_control", "optim.lr_control_every", "optim.lr_control_factor", "optim.lr_control_patience")
VARIANT_IGNORES: dict[str, tuple[str, ...]] = {
    "unimodal": _MEMORY + _PAIR + _UNPAIR + _LR_CONTROL,
    "paired_only": _UNPAIR + _LR_CONTROL,
    "bma": (),
}


def pool_sizes(cfg: "RegimeConfig") -> tuple[int, int, int]:
    """(pairs, unpaired images, unpaired sounds) of a regime; null counts take the symmetric train_size meaning."""
    pairs = cfg.pairs if cfg.pairs is not None else max(1, int(round(cfg.pairing_ratio * cfg.train_size)))
    images = cfg.unpaired_images if cfg.unpaired_images is not None else cfg.train_size - pairs
    sounds = cfg.unpaired_sounds if cfg.unpaired_sounds is not None else cfg.train_size - pairs
    return pairs, max(images, 0), max(sounds, 0)


def effective_config(cfg: "TrialConfig") -> "TrialConfig":
    """``cfg`` with the settings its variant does not read (VARIANT_IGNORES) reset to their defaults: two trials
    with equal effective configurations compute the same thing.

    unimodal reads only the size of each modality's single-sample pool (pairs + unpaired): its pools are prefixes
    of the seed's orders whatever the split into pairs, its batches are drawn in the pools' canonical order
    (bma.trial_data.canonical_rows) and its labelled draws ignore pairs (bma.trial_data.label_pools), so its regime
    is written canonically as one pair and the rest unpaired. Unimodal trials across pairing ratios at one training
    size are then one trial, trained once. (Natively paired manifest data keeps its pairing_ratio x train_size.)"""
    ignored = VARIANT_IGNORES.get(cfg.model.variant, ())
    if not ignored:
        return cfg
    defaults = _DEFAULT_FLAT
    flat = cfg.to_flat()
    updates = {k: defaults[k] for k in ignored}
    if cfg.model.variant == "unimodal" and "manifest" not in (cfg.data.image.source, cfg.data.sound.source):
        pairs, images, sounds = pool_sizes(cfg.regime)
        updates.update({"regime.pairs": 1, "regime.unpaired_images": pairs + images - 1,
                        "regime.unpaired_sounds": pairs + sounds - 1,
                        "regime.pairing_ratio": defaults["regime.pairing_ratio"],
                        "regime.train_size": defaults["regime.train_size"]})
    if all(flat[k] == v for k, v in updates.items()):
        return cfg
    return TrialConfig.from_flat({**flat, **updates})


# Short names a study grid uses; the dotted path is what MLflow records.
SHORT_NAMES: dict[str, str] = {
    "pairing_ratio": "regime.pairing_ratio",
    "train_size": "regime.train_size",
    "seed": "regime.seed",
    "memory_slots": "model.memory_slots",
    "tau_m": "model.tau_m",
    "tau_l": "loss.tau_l",
    "variant": "model.variant",
    "addressing": "model.addressing",
    "sound_snr_db": "features.sound_snr_db",
    "image_noise_std": "regime.image_noise_std",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "lr": "optim.lr",
    "encoder_objective": "loss.encoder_objective",
    "pair_negatives": "loss.pair_negatives",
    "pairs": "regime.pairs",
    "unpaired_images": "regime.unpaired_images",
    "unpaired_sounds": "regime.unpaired_sounds",
    "heldout_speaker": "regime.heldout_speaker",
    "steps": "optim.steps",
    "round_steps": "optim.round_steps",
    "label_budgets": "eval.label_budgets",
    "label_draws": "eval.label_draws",
    "test_sound_snr_db": "eval.test_sound_snr_db",
}

# Settings that were recorded once and are read no more, with the only value they ever took: a recorded trial that
# carries one is still rebuilt (TrialConfig.from_flat of its MLflow params) when it holds that value.
RETIRED_SETTINGS: dict[str, str] = {
    "model.sound_encoder": "cnn",  # never read: the sound encoder is the CNN
}


def num_rounds(cfg: "TrialConfig") -> int:
    """Rounds of the training loop: epochs, or ceil(optim.steps / optim.round_steps) with a fixed step budget (what
    a trial reports once each: Tune's training_iteration, the budget a scheduler's grace_period counts in)."""
    o = cfg.optim
    return o.epochs if o.steps is None else -(-o.steps // o.round_steps)


# The SNRs (dB) of the noise scenarios (features.sound_snr_db, eval.test_sound_snr_db): at -30 dB the noise has 1000x
# the clip's power (nothing of the clip is left to hear), at 100 dB 1e-10 of it (float32 features cannot tell it from
# clean). Beyond them the noise's scale overflows float32 (NaN features after training) or the power ratio overflows.
SNR_DB_RANGE = (-30.0, 100.0)


def validate(cfg: TrialConfig) -> list[str]:
    """Every problem of a config as 'dotted.path: expected ...'; empty when it can run."""
    p: list[str] = []
    d, r, m, lo, o, f, e = cfg.data, cfg.regime, cfg.model, cfg.loss, cfg.optim, cfg.features, cfg.eval
    if d.image.source not in IMAGE_SOURCES:
        p.append(f"data.image.source: expected one of {IMAGE_SOURCES}, got {d.image.source!r}")
    if d.sound.source not in SOUND_SOURCES:
        p.append(f"data.sound.source: expected one of {SOUND_SOURCES}, got {d.sound.source!r}")
    for side in ("image", "sound"):
        if not 1 <= getattr(d, side).test_fold <= 5:
            p.append(f"data.{side}.test_fold: expected 1..5, got {getattr(d, side).test_fold}")
    if not 0.0 < r.pairing_ratio <= 1.0:
        p.append(f"regime.pairing_ratio: expected a value in (0, 1], got {r.pairing_ratio}")
    if r.train_size < 1:
        p.append(f"regime.train_size: expected a positive number of samples per modality, got {r.train_size}")
    if r.seed < 0:
        p.append(f"regime.seed: expected an integer >= 0, got {r.seed}")
    if r.val_per_class < 1:
        p.append(f"regime.val_per_class: expected >= 1, got {r.val_per_class}")
    for name in ("pairs", "unpaired_images", "unpaired_sounds"):
        value = getattr(r, name)
        if value is not None and value < (1 if name == "pairs" else 0):
            p.append(f"regime.{name}: expected null or an integer >= {1 if name == 'pairs' else 0}, got {value}")
    if r.heldout_speaker is not None and (not r.heldout_speaker or d.sound.source != "fsdd"):
        p.append(f"regime.heldout_speaker: expected an FSDD speaker name with data.sound.source fsdd, "
                 f"got {r.heldout_speaker!r} with {d.sound.source!r}")
    if r.image_noise_std < 0:
        p.append(f"regime.image_noise_std: expected >= 0, got {r.image_noise_std}")
    if m.variant not in VARIANTS:
        p.append(f"model.variant: expected one of {VARIANTS}, got {m.variant!r}")
    if m.image_encoder not in ("cnn", "resnet18"):
        p.append(f"model.image_encoder: expected cnn or resnet18, got {m.image_encoder!r}")
    if m.memory_slots < 1:
        p.append(f"model.memory_slots: expected >= 1, got {m.memory_slots}")
    if m.encoder_width < 1:
        p.append(f"model.encoder_width: expected >= 1, got {m.encoder_width}")
    if m.feature_dim < 2 or m.projection_dim < 2:
        p.append("model.feature_dim/projection_dim: expected >= 2")
    if m.tau_m <= 0:
        p.append(f"model.tau_m: expected > 0, got {m.tau_m}")
    if m.tau_m_final is not None and m.tau_m_final <= 0:
        p.append(f"model.tau_m_final: expected > 0 or null, got {m.tau_m_final}")
    if m.addressing not in ADDRESSINGS:
        p.append(f"model.addressing: expected one of {ADDRESSINGS}, got {m.addressing!r}")
    if m.addressing == "topk" and not 1 <= m.top_k <= m.memory_slots:
        p.append(f"model.top_k: expected 1..memory_slots ({m.memory_slots}), got {m.top_k}")
    if lo.tau_l <= 0:
        p.append(f"loss.tau_l: expected > 0, got {lo.tau_l}")
    if lo.pair_negatives not in ("other_class", "all"):
        p.append(f"loss.pair_negatives: expected other_class or all, got {lo.pair_negatives!r}")
    if lo.cycle_space not in CYCLE_SPACES:
        p.append(f"loss.cycle_space: expected one of {CYCLE_SPACES}, got {lo.cycle_space!r}")
    if o.lr_control not in LR_CONTROLS:
        p.append(f"optim.lr_control: expected one of {LR_CONTROLS}, got {o.lr_control!r}")
    if o.lr_control_every < 1 or o.lr_control_patience < 0 or not 0 < o.lr_control_factor < 1:
        p.append("optim.lr_control_*: expected every >= 1, patience >= 0, 0 < factor < 1")
    if m.slot_reseed_every < 0 or not 0 <= m.slot_dead_usage < 1:
        p.append("model.slot_reseed_every / slot_dead_usage: expected >= 0 steps and a fraction in [0, 1)")
    if m.slot_reseed_source not in RESEED_SOURCES:
        p.append(f"model.slot_reseed_source: expected one of {RESEED_SOURCES}, got {m.slot_reseed_source!r}")
    if lo.tau_encoder <= 0:
        p.append(f"loss.tau_encoder: expected > 0, got {lo.tau_encoder}")
    if lo.encoder_objective not in ENCODER_OBJECTIVES:
        p.append(f"loss.encoder_objective: expected one of {ENCODER_OBJECTIVES}, got {lo.encoder_objective!r}")
    elif lo.encoder_objective == "none" and m.variant == "unimodal":
        p.append("loss.encoder_objective: none leaves the unimodal variant nothing to train (it has no memory and "
                 "no pairs); expected supervised or contrastive")
    for name in ("w_pair", "w_address", "w_recall", "w_unpair", "w_encoder", "w_slot_decorrelation", "w_variance",
                 "w_infomax"):
        if getattr(lo, name) < 0:
            p.append(f"loss.{name}: expected >= 0, got {getattr(lo, name)}")
    if o.epochs < 1:
        p.append(f"optim.epochs: expected >= 1, got {o.epochs}")
    if o.batch_size < 2:
        p.append(f"optim.batch_size: expected >= 2 (contrastive losses need negatives), got {o.batch_size}")
    if o.steps is not None and o.steps < 1:
        p.append(f"optim.steps: expected null (train by epochs) or >= 1, got {o.steps}")
    if o.round_steps < 1:
        p.append(f"optim.round_steps: expected >= 1, got {o.round_steps}")
    if o.weight_decay < 0:
        p.append(f"optim.weight_decay: expected >= 0, got {o.weight_decay}")
    if o.lr <= 0:
        p.append(f"optim.lr: expected > 0, got {o.lr}")
    if f.sample_rate < 1000 or f.n_mels < 4 or f.n_fft < 16 or f.hop_length < 1 or f.clip_seconds <= 0:
        p.append("features: expected sample_rate >= 1000, n_mels >= 4, n_fft >= 16, hop_length >= 1, clip_seconds > 0")
    from bma.info.estimators import CONTINUOUS_MI_ESTIMATORS  # the registry imports no torch

    # The probes estimate MI between continuous features: discrete estimators (plugin_mi) would fail every trial
    # after training, so they are refused here.
    unknown = [name for name in e.info_estimators if name not in CONTINUOUS_MI_ESTIMATORS]
    if unknown:
        p.append(f"eval.info_estimators: {unknown} cannot estimate MI of continuous features; expected names from "
                 f"{sorted(CONTINUOUS_MI_ESTIMATORS)}")
    if e.xdomain_image_source is not None and e.xdomain_image_source not in IMAGE_SOURCES:
        p.append(f"eval.xdomain_image_source: expected null or one of {IMAGE_SOURCES}, got {e.xdomain_image_source!r}")
    if e.xdomain_sound_source is not None and e.xdomain_sound_source not in SOUND_SOURCES:
        p.append(f"eval.xdomain_sound_source: expected null or one of {SOUND_SOURCES}, got {e.xdomain_sound_source!r}")
    for side in ("image", "sound"):
        if getattr(e, f"xdomain_{side}_root") is not None and getattr(e, f"xdomain_{side}_source") is None:
            p.append(f"eval.xdomain_{side}_root: set, but eval.xdomain_{side}_source is null")
    if not e.label_budgets or any(k < 1 for k in e.label_budgets) or len(set(e.label_budgets)) != len(e.label_budgets):
        p.append(f"eval.label_budgets: expected distinct labelled samples per class >= 1, got {list(e.label_budgets)}")
    if not 1 <= e.label_draws <= 1000:
        p.append(f"eval.label_draws: expected a number of labelled draws in 1..1000, got {e.label_draws}")
    if e.label_pool not in LABEL_POOLS:
        p.append(f"eval.label_pool: expected one of {LABEL_POOLS}, got {e.label_pool!r}")
    if f.image_size is not None and f.image_size < 8:
        p.append(f"features.image_size: expected null or >= 8 pixels, got {f.image_size}")
    low, high = SNR_DB_RANGE
    for path, snr in (("features.sound_snr_db", f.sound_snr_db), ("eval.test_sound_snr_db", e.test_sound_snr_db)):
        if snr is not None and math.isfinite(snr) and not low <= snr <= high:  # NaN/inf: _non_finite says it
            p.append(f"{path}: expected null or an SNR in dB from {low:g} to {high:g} (noise 1000x the signal's power "
                     f"to none measurable), got {snr:g}")
    if e.eval_every < 1 or e.info_every < 0 or e.info_samples < 50:
        p.append("eval: expected eval_every >= 1, info_every >= 0, info_samples >= 50")
    p.extend(_non_finite(cfg))
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        p.append(f"device: expected auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    return p


def _non_finite(cfg: TrialConfig) -> list[str]:
    """NaN or infinity in any float setting: `tau_m: .inf` would train 'successfully' with uniform addressing."""
    out = []
    for path, value in _flatten(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            out.append(f"{path}: expected a finite number, got {value}")
    return out


# -- flat <-> nested ---------------------------------------------------------------------------------------------


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fl in fields(obj):
        value = getattr(obj, fl.name)
        key = f"{prefix}{fl.name}"
        if is_dataclass(value):
            out.update(_flatten(value, key + "."))
        else:
            out[key] = list(value) if isinstance(value, tuple) else value
    return out


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # slow (evaluates string annotations): once per class


def _field_types(cls: type, prefix: str = "") -> dict[str, Any]:
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for fl in fields(cls):
        hint = hints[fl.name]
        if isinstance(hint, type) and is_dataclass(hint):
            out.update(_field_types(hint, f"{prefix}{fl.name}."))
        else:
            out[f"{prefix}{fl.name}"] = hint
    return out


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Accept native values and MLflow's string renderings ('None', 'True', '[a, b]')."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None or value == "None":
        if type(None) in args:
            return None
        raise ConfigError([f"{path}: expected a value, got null"])
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, path)
    if origin is tuple:
        if isinstance(value, str):
            import ast

            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                value = [v.strip() for v in value.strip("[]()").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError([f"{path}: expected a list, got {value!r}"])
        item = args[0] if args else str
        return tuple(_coerce(v, item, path) for v in value)
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes"):
                    return True
                if value.lower() in ("false", "0", "no"):
                    return False
                raise ValueError
            if not isinstance(value, (bool, int)):
                raise ValueError
            return bool(value)
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError([f"{path}: expected {name}, got {value!r}"]) from None
    return value


def _build(cls: type, nested: dict[str, Any], base: Any = None) -> Any:
    """Nested dataclasses are built on top of the field's default, so a partial section (``data.sound.root``
    alone) keeps the defaults of its other fields."""
    hints = _hints(cls)
    kwargs = {}
    for fl in fields(cls):
        if fl.name not in nested:
            continue
        hint = hints[fl.name]
        if isinstance(hint, type) and is_dataclass(hint):
            default = getattr(base, fl.name) if base is not None else fl.default
            kwargs[fl.name] = _build(hint, nested[fl.name], default if is_dataclass(default) else None)
        else:
            kwargs[fl.name] = nested[fl.name]
    return replace(base, **kwargs) if base is not None else cls(**kwargs)


FLAT_TYPES: dict[str, Any] = _field_types(TrialConfig)
_DEFAULT_FLAT: dict[str, Any] = TrialConfig().to_flat()
assert set(VARIANT_IGNORES) == set(VARIANTS) and all(k in FLAT_TYPES for v in VARIANT_IGNORES.values() for k in v)

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "FEATURE_PRESETS",
    "FeatureConfig",
    "FLAT_TYPES",
    "LossConfig",
    "ModelConfig",
    "RETIRED_SETTINGS",
    "OptimConfig",
    "RegimeConfig",
    "SHORT_NAMES",
    "SourceConfig",
    "TrialConfig",
    "validate",
    "VARIANT_IGNORES",
    "effective_config",
    "expand_feature_preset",
]
