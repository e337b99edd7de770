"""A trial's training rows: gathered up front onto the device, or gathered per batch from a memory-mapped pool.

``TrialTensors`` (bma.trial_data) holds each modality's training pool as the regime's rows of the features. Up to
``in_memory_max_bytes()`` (bma.data.cache_files, the one owner of the threshold) they are gathered once, as
before: one private copy per trial, indexed on the device at every step. Above it, ``LazyRows`` keeps only the
regime's row indices and gathers a batch's rows from the features (a memory map shared by every trial on the
machine) when the loop indexes it, so neither a trial's private memory nor its step time grows with the pool.

A ``LazyRows`` batch is bit-identical to the up-front one: ``gather`` is the very function the up-front path
applies to all rows at once (row selection, per-sample image noise seeded by the sample's index, channels-last
layout), applied to the batch's rows only; indexing the up-front tensor keeps its layout (checked in
tests/data/test_cache_files.py and by a whole trial's metrics).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from bma.data.cache_files import in_memory_max_bytes


class LazyRows:
    """Rows ``indices`` of a feature pool, gathered on indexing: ``rows[i]`` == ``gather(indices)[i]``, moved to
    ``device``. Supports what the loop and the evaluation use: ``len``, ``shape``, ``dtype``, ``device``, indexing
    with an integer tensor/array (any device) or a slice."""

    def __init__(self, gather: Callable[[np.ndarray], torch.Tensor], indices, row_shape: tuple[int, ...],
                 dtype: torch.dtype, device: torch.device | str):
        self.gather = gather
        self.indices = np.asarray(indices, dtype=np.int64)
        self.row_shape = tuple(row_shape)
        self.dtype = dtype
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.indices), *self.row_shape))

    def __getitem__(self, item) -> torch.Tensor:
        if isinstance(item, torch.Tensor):
            item = item.detach().cpu().numpy()
        rows = self.indices[item]
        if rows.ndim != 1:
            raise IndexError(f"LazyRows takes a 1-d index or a slice, got shape {rows.shape}")
        return self.gather(rows).to(self.device, non_blocking=True)

    def to(self, device) -> "LazyRows":
        return LazyRows(self.gather, self.indices, self.row_shape, self.dtype, device)


def training_rows(x: torch.Tensor, indices, gather: Callable[[np.ndarray], torch.Tensor],
                  device: torch.device | str) -> "torch.Tensor | LazyRows":
    """``gather(indices)`` on ``device`` when the rows fit ``in_memory_max_bytes()``, else LazyRows over them.
    ``x`` is the pool the rows come from (its row shape and dtype)."""
    indices = np.asarray(indices, dtype=np.int64)
    row_bytes = int(np.prod(x.shape[1:])) * x.element_size()
    if len(indices) * row_bytes <= in_memory_max_bytes():
        return gather(indices).to(device)
    return LazyRows(gather, indices, tuple(x.shape[1:]), x.dtype, device)


__all__ = ["LazyRows", "training_rows"]
