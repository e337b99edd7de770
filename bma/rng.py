"""Common random numbers: one generator per source of randomness in a trial, derived from (seed, purpose, ...).

Two trials of a contrast (bma at 59,000 unpaired images against bma at none, or bma against unimodal in one cell)
should share every random draw their difference does not require, so that the paired difference measures the
regime and not a re-drawn data stream. One generator shared by every purpose breaks that: drawing the image
permutation first shifts the sound batches whenever the image pool changes size. Here each purpose gets its own
stream, so a draw of one modality never depends on how much the other consumed:

- ``order/image``, ``order/sound``: the single-sample batches of each modality (per round);
- ``order/pairs``: the pair batches (per round);
- ``augment/image``, ``augment/sound``: each modality's augmentations and second views (per round);
- ``memory/reseed``: which recent pair re-seeds a dead slot (per round);
- ``init/<module>``: each module's initial weights (bma.model.BMAMemory), so that the sound encoder starts from the
  same weights in every variant, whatever else the model holds;
- ``regime/<what>``: the seed's fixed orders of the train and test splits (bma.data.regimes);
- ``probe/<side>``: the label-budget probes' labelled draws (per draw).

The streams are numpy's SeedSequence children of the entropy ``(seed, purpose code, *more)``: independent for
different purposes, reproducible from the record alone, and unchanged when a new purpose is added (codes are fixed
below, never renumbered).
"""

from __future__ import annotations

import numpy as np
import torch

# Fixed codes, one per purpose (a code is part of the entropy: renumbering one changes every trial that uses it).
PURPOSES: dict[str, int] = {
    "order/image": 1,
    "order/sound": 2,
    "order/pairs": 3,
    "augment/image": 4,
    "augment/sound": 5,
    "memory/reseed": 6,
    "regime/image_order": 10,
    "regime/sound_order": 11,
    "regime/test_image_order": 12,
    "regime/test_sound_order": 13,
    "regime/native_unpaired": 14,
    "probe/image": 20,
    "probe/sound": 21,
}
INIT_BASE = 1000  # init/<module>: INIT_BASE + a stable hash of the module's name (see init_code)


def init_code(module: str) -> int:
    """The purpose code of ``init/<module>``: a stable function of the name (not Python's salted hash)."""
    return INIT_BASE + int.from_bytes(module.encode(), "little") % 1_000_003


def _entropy(seed: int, purpose: str, more: tuple[int, ...]) -> list[int]:
    if purpose.startswith("init/"):
        code = init_code(purpose[len("init/"):])
    else:
        try:
            code = PURPOSES[purpose]
        except KeyError:
            raise KeyError(f"unknown random purpose {purpose!r}; known: {sorted(PURPOSES)} and init/<module>") from None
    return [int(seed), code, *(int(m) for m in more)]


def numpy_rng(seed: int, purpose: str, *more: int) -> np.random.Generator:
    """numpy Generator of (seed, purpose, *more), e.g. numpy_rng(0, "order/sound", epoch)."""
    return np.random.default_rng(_entropy(seed, purpose, more))


def torch_seed(seed: int, purpose: str, *more: int) -> int:
    """A 63-bit torch seed of (seed, purpose, *more), from the same SeedSequence as numpy_rng."""
    state = np.random.SeedSequence(_entropy(seed, purpose, more)).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def torch_generator(seed: int, purpose: str, *more: int) -> torch.Generator:
    """CPU torch Generator of (seed, purpose, *more): what the augmentations draw from."""
    return torch.Generator().manual_seed(torch_seed(seed, purpose, *more))
