"""A trial's data: the cached features it trains on (``TrialData``), its regime, and its tensors on the device.

- ``TrialData``: both modalities' official splits as FeatureSets, labels mapped into the common class space; a study
  loads one per distinct ``data_identity`` and shares it between trials.
- ``make_regime``: which samples are pairs, unpaired, validation and test (bma.data.regimes) in the common labels.
- ``TrialTensors``: the regime's samples gathered once onto the device, the evaluation split beside them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from bma.config import ConfigError, TrialConfig
from bma.data.features import FeatureSet, FeatureStore
from bma.data.regimes import ClassMap, Regime, build_regime, load_classmap


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
    regime = build_regime(
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
    check_label_budgets(cfg, regime, {"img": common_labels(data.image_train, cm.image_to_common),
                                      "snd": common_labels(data.sound_train, cm.sound_to_common)},
                        {"img": cfg.data.image.source, "snd": cfg.data.sound.source})
    return regime


def canonical_rows(rows: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Positions 0..len(rows)-1 of ``rows`` (sample indices) sorted by each sample's rank in ``order`` (stable, so
    a clip repeated by sound expansion keeps its occurrences in row order); the identity without an order."""
    if order is None:
        return np.arange(len(rows))
    rank = np.full(int(max(order.max(initial=-1), rows.max(initial=-1))) + 1, len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return np.argsort(rank[rows], kind="stable")


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) with channels-last strides (H*W*C, 1, W*C, C), whatever strides it came with.

    One layout for every trial's images, because the layout decides which convolution and pooling kernels run: with
    one channel both layouts count as contiguous, and torch's `.contiguous(memory_format=...)` leaves either as it
    is, yet a trial whose MNIST features had standard strides (as Ray's zero-copy tensors deliver them) took 1.6x as
    long on CPU as the same trial with channels-last strides (in-process: features.py's permute), and 26 of its 39
    final metrics differed in the last digits (benchmarks/image_layout.py --unpinned). Channels-last is the in-process layout of greyscale images, so trials run
    in-process (the loop, study/reproduce.py) keep their numbers, and it is the fast layout on CPU and CUDA."""
    n, c, h, w = x.shape
    if x.stride() == (h * w * c, 1, w * c, c):
        return x
    out = torch.empty_strided(x.shape, (h * w * c, 1, w * c, c), dtype=x.dtype, device=x.device)
    return out.copy_(x)


class TrialTensors:
    """The regime's tensors, gathered once onto the device: the training pools (pairs first), the validation pairs,
    and the evaluation split (test samples, label-budget sets, other test domains) that bma.evaluation reads."""

    def __init__(self, cfg: TrialConfig, data: TrialData, regime: Regime, device: torch.device):
        cm = data.classmap
        y_img_tr = torch.as_tensor(common_labels(data.image_train, cm.image_to_common))
        y_snd_tr = torch.as_tensor(common_labels(data.sound_train, cm.sound_to_common))
        y_img_te = torch.as_tensor(common_labels(data.image_test, cm.image_to_common))
        y_snd_te = torch.as_tensor(common_labels(data.sound_test, cm.sound_to_common))

        def images(x: torch.Tensor, split: str, indices) -> torch.Tensor:
            """Gaussian noise tied to (seed, split, sample index): the same test image carries the same noise in
            every regime of a seed, and a training image keeps its noise when train_size grows."""
            x = channels_last(x[torch.as_tensor(indices, dtype=torch.long)])
            std = cfg.regime.image_noise_std
            if std <= 0:
                return x
            offset = 0 if split == "train" else 1 << 40
            noise = torch.stack([
                torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(cfg.regime.seed * (1 << 41) + offset + int(i)))
                for i in indices
            ])
            return channels_last(x + std * noise)

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
        # The rows in the pool's canonical order (the seed's order of the split): the single-sample batches are
        # drawn as positions in it, so two trials whose pool holds the same samples draw the same batches, whichever
        # of the samples are pairs (common random numbers across pairing ratios).
        self.img_canonical = canonical_rows(regime.train_image, regime.label_order_image)
        self.snd_canonical = canonical_rows(regime.train_sound, regime.label_order_sound)
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
            x = channels_last(fs.x[keep]) if target == "image_domains" else fs.x[keep]
            self.eval_split[target][name] = (x, torch.as_tensor(y)[keep])


def label_pools(cfg: TrialConfig, regime: Regime) -> dict[str, np.ndarray]:
    """Where each modality's labelled draws come from (eval.label_pool): the seed's order of the train split outside
    validation, less this regime's pairs with "outside_pairs" in a variant that trains on pairs (unimodal has none:
    to it a pair is one more single sample, and its draws then do not depend on the pairing ratio).
    {"img": indices, "snd": indices}."""
    out = {}
    for side, order, pairs in (("img", regime.label_order_image, regime.pair_image),
                               ("snd", regime.label_order_sound, regime.pair_sound)):
        if order is None:  # natively paired data: no separate order; the draws use the training rows
            order = regime.train_image if side == "img" else regime.train_sound
        order = np.unique(order)  # expanded sound pools repeat clips: a clip is one candidate
        if cfg.eval.label_pool == "outside_pairs" and cfg.model.variant != "unimodal":
            order = order[~np.isin(order, pairs)]
        out[side] = order
    return out


def check_label_budgets(cfg: TrialConfig, regime: Regime, labels: dict[str, np.ndarray],
                        sources: dict[str, str]) -> None:
    """A budget larger than a class holds would be capped without a word (k250 = k300 = k1000): refuse it, naming
    the class and what it holds. ``labels``: common-space labels of each side's train split."""
    from bma.data.regimes import RegimeError

    k_max = max(cfg.eval.label_budgets)
    for side, pool in label_pools(cfg, regime).items():
        y = labels[side][pool]
        counts = np.bincount(y[y >= 0], minlength=regime.num_classes)
        smallest = int(counts.min())
        if k_max > smallest:
            where = ("outside validation and this regime's pairs"
                     if cfg.eval.label_pool == "outside_pairs" and cfg.model.variant != "unimodal"
                     else "outside validation")
            raise RegimeError(
                f"eval.label_budgets: {k_max} labelled samples per class requested, but class {int(counts.argmin())} "
                f"of {sources[side]}'s train {'images' if side == 'img' else 'sounds'} has {smallest} {where} "
                f"(expected budgets <= {smallest})")


def _budget_sets(cfg: TrialConfig, regime: Regime, data: TrialData, y_img, y_snd, images) -> dict:
    """The labelled sets of the label-budget probes: eval.label_draws class-balanced draws of the largest budget
    per class (bma.data.regimes.label_draws), nested in K within a draw and fixed per seed. Returns the union of
    the draws' samples (embedded once) and, per K, one mask per draw selecting that draw's K-budget rows."""
    from bma.data.regimes import label_draws

    k_max = max(cfg.eval.label_budgets)
    pools = label_pools(cfg, regime)
    out = {}
    for side, y, x in (("img", y_img, data.image_train.x), ("snd", y_snd, data.sound_train.x)):
        draws = label_draws(pools[side], y.numpy(), k_max, cfg.eval.label_draws, cfg.regime.seed,
                            "image" if side == "img" else "sound")
        chosen = np.unique(np.concatenate([d.indices for d in draws]))
        row = {int(i): n for n, i in enumerate(chosen)}
        masks: dict[int, list[np.ndarray]] = {}
        for k in cfg.eval.label_budgets:
            masks[k] = []
            for d in draws:
                mask = np.zeros(len(chosen), dtype=bool)
                mask[[row[int(i)] for i in d.indices[d.rank < k]]] = True
                masks[k].append(mask)
        index = torch.as_tensor(chosen, dtype=torch.long)
        out[f"x_{side}_budget"] = images(x, "train", chosen) if side == "img" else x[index]
        out[f"y_{side}_budget"] = y[index]
        out[f"{side}_budget_masks"] = masks
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
