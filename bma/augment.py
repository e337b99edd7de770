"""Batch augmentations driven by an explicit torch.Generator, so a resumed trial replays them exactly."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift_images(x: torch.Tensor, gen: torch.Generator, max_shift: int = 3) -> torch.Tensor:
    """Random translation by up to max_shift pixels (pad with edge values, crop back). (B, C, H, W)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)  # (B, H)
    cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)  # (B, W)
    idx_b = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def augment_spectrograms(x: torch.Tensor, gen: torch.Generator, max_shift: int = 12, time_mask: int = 16, freq_mask: int = 6) -> torch.Tensor:
    """Circular time shift plus one SpecAugment time mask and one frequency mask. (B, 1, n_mels, T)."""
    b, _, n_mels, t = x.shape
    shifts = torch.randint(-max_shift, max_shift + 1, (b,), generator=gen)
    idx = (torch.arange(t)[None, :] - shifts[:, None]) % t  # (B, T)
    out = torch.gather(x, 3, idx.to(x.device)[:, None, None, :].expand(b, 1, n_mels, t))
    t0 = torch.randint(0, max(t - time_mask, 1), (b,), generator=gen)
    f0 = torch.randint(0, max(n_mels - freq_mask, 1), (b,), generator=gen)
    tw = torch.randint(0, time_mask + 1, (b,), generator=gen)
    fw = torch.randint(0, freq_mask + 1, (b,), generator=gen)
    ar_t, ar_f = torch.arange(t), torch.arange(n_mels)
    tmask = (ar_t[None] >= t0[:, None]) & (ar_t[None] < (t0 + tw)[:, None])  # (B, T)
    fmask = (ar_f[None] >= f0[:, None]) & (ar_f[None] < (f0 + fw)[:, None])  # (B, n_mels)
    mask = (tmask[:, None, :] | fmask[:, :, None])[:, None].to(x.device)  # (B, 1, n_mels, T)
    # Masked bins take the spectrogram's mean (0 after standardisation).
    return out.masked_fill(mask, 0.0)
