"""Where a trial computes, and how reproducibly: the device, deterministic kernels, seeding, bf16 autocast."""

from __future__ import annotations

import random

import numpy as np
import torch

from bma.config import ConfigError, TrialConfig


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


def use_deterministic_kernels(device: torch.device) -> None:
    """Deterministic kernels on the CPU, so that a CPU trial repeats bit for bit (an op without a deterministic
    version warns instead of failing the trial); CUDA trials keep torch's default kernels."""
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)


def autocast(cfg: TrialConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast with ``amp: true`` on CUDA; a disabled context everywhere else (CPU trials run in float32)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")
