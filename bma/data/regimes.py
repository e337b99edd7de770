"""Weakly paired data regimes: which samples a trial trains on, which of them come as pairs.

A regime is (pairing_ratio, train_size, seed) -- or, set apart, (pairs, unpaired_images, unpaired_sounds, seed) -- over the train splits of an image source and a sound source whose
classes are linked by a class map. It is *nested*: for one seed, every modality's samples are put in one fixed,
class-interleaved order (class c0, c1, ..., c0, c1, ...), and a regime takes prefixes of it, so

- the pairs at 10 % are the first pairs of those at 20 % (same train_size), and
- the training set at train_size 1,000 is a subset of the one at 2,000,

so differences between cells come from the regime, not from another draw. A validation split is carved per class
before anything else and is the same for every regime of a seed.

Pairs are *class-matched* (the AV-MNIST construction): the k-th paired image is paired with the next unused
sound of the same (common) class. Natively paired sources (a manifest on both sides) pair by their row key.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bma.config import RegimeConfig, pool_sizes  # noqa: F401 (pool_sizes: importers read it from here too)
from bma.data.errors import DataError
from bma.rng import numpy_rng


class RegimeError(ValueError):
    """A regime the data cannot satisfy; the message names the setting and the limit."""


@dataclass(frozen=True)
class ClassMap:
    """Links image classes and sound classes through a common label space of ``len(names)`` classes."""

    names: tuple[str, ...]  # common class names ("image_class" of each mapped pair)
    image_to_common: np.ndarray  # (n_image_classes,) int64, -1 where unmapped
    sound_to_common: np.ndarray  # (n_sound_classes,) int64, -1 where unmapped

    @property
    def num_classes(self) -> int:
        return len(self.names)


def load_classmap(path: str | None, image_classes: tuple[str, ...], sound_classes: tuple[str, ...]) -> ClassMap:
    """Read a class-map CSV (columns ``image_class,sound_class``) or, with no path, match classes by name."""
    if path is None:
        shared = [c for c in image_classes if c in set(sound_classes)]
        if not shared:
            raise DataError(
                f"data.classmap: none given, and the image classes {list(image_classes)[:5]}... share no name "
                f"with the sound classes {list(sound_classes)[:5]}...; give a CSV with columns image_class,sound_class"
            )
        pairs = [(c, c) for c in shared]
    else:
        file = Path(path)
        if not file.is_file():
            raise DataError(f"data.classmap: file {file} does not exist (expected a CSV image_class,sound_class)")
        with file.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"image_class", "sound_class"} <= set(reader.fieldnames):
                raise DataError(f"{file}: expected a header with columns image_class,sound_class, got {reader.fieldnames}")
            pairs = [(row["image_class"].strip(), row["sound_class"].strip()) for row in reader]
        if not pairs:
            raise DataError(f"{file}: the class map has no rows")
        problems = []
        for i, (img, snd) in enumerate(pairs, start=2):
            if img not in image_classes:
                problems.append(f"{file}:{i}: image class {img!r} is not in the image data (has {list(image_classes)})")
            if snd not in sound_classes:
                problems.append(f"{file}:{i}: sound class {snd!r} is not in the sound data (has {list(sound_classes)})")
        for side, column in (("image", [p[0] for p in pairs]), ("sound", [p[1] for p in pairs])):
            dupes = sorted({c for c in column if column.count(c) > 1})
            if dupes:
                problems.append(f"{file}: {side} classes {dupes} appear more than once (the map must be one-to-one)")
        if problems:
            raise DataError("\n".join(problems))
    image_to_common = np.full(len(image_classes), -1, dtype=np.int64)
    sound_to_common = np.full(len(sound_classes), -1, dtype=np.int64)
    for k, (img, snd) in enumerate(pairs):
        image_to_common[image_classes.index(img)] = k
        sound_to_common[sound_classes.index(snd)] = k
    return ClassMap(tuple(p[0] for p in pairs), image_to_common, sound_to_common)


@dataclass(frozen=True)
class Regime:
    """Index arrays into the image/sound train and test FeatureSets. ``*_pair_*`` arrays are row-aligned pairs."""

    pair_image: np.ndarray  # (P,) train image indices of the pairs
    pair_sound: np.ndarray  # (P,) train sound indices; same common class (or key) as pair_image row-wise
    unpaired_image: np.ndarray  # (N - P,)
    unpaired_sound: np.ndarray  # (N - P,) may repeat clips when regime.expand_sounds is on
    val_image: np.ndarray  # (V,) row-aligned class-matched validation pairs
    val_sound: np.ndarray  # (V,)
    test_image: np.ndarray  # every test image of a mapped class
    test_sound: np.ndarray  # every test sound of a mapped class
    test_pair_image: np.ndarray  # class-matched test pairs for retrieval and information probes
    test_pair_sound: np.ndarray
    num_classes: int
    # The seed's fixed order of each modality's train split outside validation: the label-budget probes take the
    # first K of each class from it, so a budget's labelled set is nested in larger budgets and the same in every
    # regime of the seed (it does not depend on the pool sizes, which is what a comparison across pools needs).
    label_order_image: np.ndarray | None = None
    label_order_sound: np.ndarray | None = None

    @property
    def train_image(self) -> np.ndarray:
        return np.concatenate([self.pair_image, self.unpaired_image])

    @property
    def train_sound(self) -> np.ndarray:
        return np.concatenate([self.pair_sound, self.unpaired_sound])

    def counts(self) -> dict[str, int]:
        return {
            "pairs": len(self.pair_image),
            "unpaired_images": len(self.unpaired_image),
            "unpaired_sounds": len(self.unpaired_sound),
            "val_pairs": len(self.val_image),
            "test_images": len(self.test_image),
            "test_sounds": len(self.test_sound),
            "test_pairs": len(self.test_pair_image),
        }


def interleaved_order(labels: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of mapped samples (label >= 0), shuffled within class, then dealt class by class in rounds.

    Any prefix is class-balanced to within one sample while every class still has samples left.
    """
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    longest = max((len(p) for p in per_class), default=0)
    grid = np.full((longest, num_classes), -1, dtype=np.int64)
    for c, idx in enumerate(per_class):
        grid[: len(idx), c] = idx
    flat = grid.reshape(-1)
    return flat[flat >= 0]


def match_by_class(first: np.ndarray, first_labels: np.ndarray, pool: np.ndarray, pool_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair each index of ``first`` (in order) with the next unused index of ``pool`` of the same class.

    Returns (paired_first, paired_pool); items of ``first`` whose class has run out in ``pool`` are dropped.
    """
    queues: dict[int, list[int]] = {}
    for i in pool[::-1]:
        queues.setdefault(int(pool_labels[i]), []).append(int(i))
    a, b = [], []
    for i in first:
        q = queues.get(int(first_labels[i]))
        if q:
            a.append(int(i))
            b.append(q.pop())
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def build_regime(
    cfg: RegimeConfig,
    image_train_labels: np.ndarray,
    sound_train_labels: np.ndarray,
    image_test_labels: np.ndarray,
    sound_test_labels: np.ndarray,
    num_classes: int,
    *,
    image_keys: tuple[str, ...] | None = None,
    sound_keys: tuple[str, ...] | None = None,
    image_source: str = "image",
    sound_source: str = "sound",
) -> Regime:
    """Labels are in the common label space (-1 = class not in the class map, never used)."""
    # One generator per order (bma.rng): the image order does not depend on the sound data, nor the reverse.
    gen = lambda what: numpy_rng(cfg.seed, f"regime/{what}")  # noqa: E731
    native = image_keys is not None and sound_keys is not None
    if native:
        return _build_native(cfg, image_train_labels, sound_train_labels, image_test_labels, sound_test_labels,
                             num_classes, image_keys, sound_keys, gen("image_order"), gen("native_unpaired"))

    img_order = interleaved_order(image_train_labels, num_classes, gen("image_order"))
    snd_order = interleaved_order(sound_train_labels, num_classes, gen("sound_order"))
    _check_validation(cfg, image_train_labels, num_classes, image_source, "images")
    _check_validation(cfg, sound_train_labels, num_classes, sound_source, "sounds")
    # Validation: the first val_per_class of each class in the fixed order, removed before any regime is cut.
    img_val_mask = _first_per_class(img_order, image_train_labels, cfg.val_per_class)
    snd_val_mask = _first_per_class(snd_order, sound_train_labels, cfg.val_per_class)
    val_image, val_sound = match_by_class(img_order[img_val_mask], image_train_labels,
                                          snd_order[snd_val_mask], sound_train_labels)
    img_pool, snd_pool = img_order[~img_val_mask], snd_order[~snd_val_mask]

    n_pairs, n_img, n_snd = pool_sizes(cfg)
    for what, count in (("images", n_pairs + n_img), ("sounds", n_pairs + n_snd)):
        if count < 2 * num_classes:
            raise RegimeError(f"{_size_setting(cfg, what)}: {count} training {what} is too small: the linear probes need "
                              f"at least two samples of each of the {num_classes} classes (>= {2 * num_classes})")
    _check_size(n_pairs + n_img, len(img_pool), image_source, "images", cfg, expandable=False)
    if n_pairs + n_snd > len(snd_pool) and not cfg.expand_sounds:
        _check_size(n_pairs + n_snd, len(snd_pool), sound_source, "sounds", cfg, expandable=True)

    # Pairs: the first n_pairs images of the order, each with the next unused sound of its class. With the pairs
    # fixed, a larger unpaired pool only appends to the smaller one (nesting on every axis).
    train_images = img_pool[: n_pairs + n_img]
    # Expansion reuses the sound order cyclically; the trainer augments every sound batch in that case.
    reps = -(-(n_pairs + n_snd) // len(snd_pool))
    snd_stream = np.tile(snd_pool, reps)
    pair_image, pair_sound = match_by_class(train_images[:n_pairs], image_train_labels, snd_stream, sound_train_labels)
    if len(pair_image) < n_pairs:
        raise RegimeError(
            f"{'regime.pairs' if cfg.pairs is not None else 'regime.pairing_ratio'}: {n_pairs} class-matched pairs "
            f"needed but only {len(pair_image)} could be formed from {sound_source}'s sounds; ask for fewer pairs"
        )
    used = np.zeros(len(snd_stream), dtype=bool)
    position = {}
    for pos, idx in enumerate(snd_stream):
        position.setdefault(int(idx), []).append(pos)
    for idx in pair_sound:
        used[position[int(idx)].pop(0)] = True
    unpaired_sound = snd_stream[~used][:n_snd]

    test_img_order = interleaved_order(image_test_labels, num_classes, gen("test_image_order"))
    test_snd_order = interleaved_order(sound_test_labels, num_classes, gen("test_sound_order"))
    test_pair_image, test_pair_sound = match_by_class(test_img_order, image_test_labels, test_snd_order, sound_test_labels)
    return Regime(
        pair_image=pair_image,
        pair_sound=pair_sound,
        unpaired_image=train_images[n_pairs:],
        label_order_image=img_pool,
        label_order_sound=snd_pool,
        unpaired_sound=unpaired_sound,
        val_image=val_image,
        val_sound=val_sound,
        test_image=np.sort(test_img_order),
        test_sound=np.sort(test_snd_order),
        test_pair_image=test_pair_image,
        test_pair_sound=test_pair_sound,
        num_classes=num_classes,
    )


def _build_native(cfg, img_train_y, snd_train_y, img_test_y, snd_test_y, num_classes, image_keys, sound_keys, rng,
                  unpaired_rng):
    """Natively paired data (manifest rows): a pair is a row; unpaired samples are rows whose partner is hidden."""
    if cfg.pairs is not None or cfg.unpaired_images is not None or cfg.unpaired_sounds is not None:
        raise RegimeError("regime.pairs/unpaired_images/unpaired_sounds: natively paired (manifest) data takes "
                          "pairing_ratio x train_size only; leave the three counts null")
    sound_of_key = {k: i for i, k in enumerate(sound_keys)}
    missing = [k for k in image_keys if k not in sound_of_key]
    if missing:
        raise DataError(f"manifest: image rows {missing[:5]} have no sound row with the same key")
    order = interleaved_order(img_train_y, num_classes, rng)
    val_mask = _first_per_class(order, img_train_y, cfg.val_per_class)
    pool = order[~val_mask]
    _check_size(cfg.train_size, len(pool), "manifest", "rows", cfg, expandable=False)
    n = cfg.train_size
    n_pairs = max(1, int(round(cfg.pairing_ratio * n)))
    rows = pool[:n]
    as_sound = lambda idx: np.asarray([sound_of_key[image_keys[i]] for i in idx], dtype=np.int64)  # noqa: E731
    # Unpaired: the remaining rows' images and sounds, with the link between them withheld from the model
    # (shuffled apart), as in the paper's weakly paired protocol on natively paired data.
    rest = rows[n_pairs:]
    return Regime(
        pair_image=rows[:n_pairs],
        pair_sound=as_sound(rows[:n_pairs]),
        unpaired_image=rest,
        unpaired_sound=as_sound(unpaired_rng.permutation(rest)),
        val_image=order[val_mask],
        val_sound=as_sound(order[val_mask]),
        test_image=np.flatnonzero(img_test_y >= 0),
        test_sound=np.flatnonzero(snd_test_y >= 0),
        test_pair_image=np.flatnonzero(img_test_y >= 0),
        test_pair_sound=np.flatnonzero(snd_test_y >= 0),
        num_classes=num_classes,
        # the seed's row order, as for the other sources: the label-budget sets are the same in every condition
        label_order_image=pool,
        label_order_sound=as_sound(pool),
    )


@dataclass(frozen=True)
class LabelDraw:
    """One labelled draw of the label-budget probes: ``indices`` into the train split, and each one's ``rank``
    within its class (0-based), so the K-budget set of this draw is ``indices[rank < K]`` (nested in K)."""

    indices: np.ndarray  # (classes x per_class,)
    rank: np.ndarray  # (classes x per_class,)


def label_draws(eligible: np.ndarray, labels: np.ndarray, per_class: int, draws: int, seed: int,
                side: str) -> list[LabelDraw]:
    """``draws`` class-balanced draws of ``per_class`` labelled samples per class from ``eligible`` (indices into
    a train split whose labels are ``labels``), fixed per (seed, side, draw).

    Each draw gives every sample of the split a uniform key from its own generator (bma.rng, "probe/<side>", draw)
    and takes, per class, the eligible samples with the smallest keys. Keys belong to samples, not to positions
    among the eligible ones, so two regimes whose eligible sets differ by a few samples (other pairs) share every
    labelled sample but those: the draws are common random numbers across regimes too."""
    from bma.rng import numpy_rng

    out = []
    eligible = np.asarray(eligible, dtype=np.int64)
    classes = labels[eligible]
    for r in range(draws):
        keys = numpy_rng(seed, f"probe/{side}", r).random(len(labels))
        chosen, ranks = [], []
        for c in np.unique(classes[classes >= 0]):
            members = eligible[classes == c]
            picked = members[np.argsort(keys[members], kind="stable")[:per_class]]
            chosen.append(picked)
            ranks.append(np.arange(len(picked)))
        out.append(LabelDraw(np.concatenate(chosen), np.concatenate(ranks)))
    return out


def budget_subset(order: np.ndarray, labels: np.ndarray, per_class: int) -> np.ndarray:
    """The first ``per_class`` indices of each class in ``order``: nested in K, class-balanced, fixed per seed."""
    return order[_first_per_class(order, labels, per_class)]


def _first_per_class(order: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    seen: dict[int, int] = {}
    mask = np.zeros(len(order), dtype=bool)
    for pos, idx in enumerate(order):
        c = int(labels[idx])
        if seen.get(c, 0) < k:
            seen[c] = seen.get(c, 0) + 1
            mask[pos] = True
    return mask


def _size_setting(cfg: RegimeConfig, what: str) -> str:
    """The setting a user edits when a pool of ``what`` does not fit."""
    explicit = cfg.unpaired_images if what == "images" else cfg.unpaired_sounds
    if explicit is not None:
        return f"regime.unpaired_{what}"
    return "regime.pairs" if cfg.pairs is not None else "regime.train_size"


def _check_size(n: int, available: int, source: str, what: str, cfg: RegimeConfig, expandable: bool) -> None:
    if n <= available:
        return
    hint = "; set regime.expand_sounds: true to reuse clips with augmentation" if expandable else ""
    # the pairs alone overflow the pool: no unpaired size (an explicit 0 included) is to blame
    setting = "regime.pairs" if cfg.pairs is not None and cfg.pairs > available else _size_setting(cfg, what)
    pairs = "" if setting == "regime.train_size" else f" ({n} = pairs + unpaired {what})"
    raise RegimeError(
        f"{setting}: {n} {what} requested{pairs}, but {source}'s train split has {available} "
        f"after carving regime.val_per_class={cfg.val_per_class} per class for validation{hint}"
    )


def _check_validation(cfg: RegimeConfig, labels: np.ndarray, num_classes: int, source: str, what: str) -> None:
    """A validation split that would take a whole class leaves nothing to train on: blame val_per_class."""
    counts = np.bincount(labels[labels >= 0], minlength=num_classes)
    smallest = int(counts.min()) if len(counts) else 0
    if cfg.val_per_class >= smallest:
        raise RegimeError(
            f"regime.val_per_class: {cfg.val_per_class} per class would leave nothing to train on: the smallest class "
            f"of {source}'s train {what} has {smallest} samples (expected val_per_class < {smallest})"
        )
