"""A trial's checkpoint: what it holds, how it is written and read, and how a resumed trial takes it back.

One file per folder (``CHECKPOINT_FILE``): the flat config, the epoch, model and optimiser state, the metric
history, the LR controller's state and every RNG state (torch CPU, CUDA, numpy, python). A resumed trial restores all
of them, which is what makes it end with the same metrics as an uninterrupted one, bit for bit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from bma.config import ConfigError, TrialConfig
from bma.model import BMAMemory

if TYPE_CHECKING:
    from bma.lr_control import CycleLRControl

CHECKPOINT_FILE = "trial_state.pt"


def rng_state() -> dict[str, Any]:
    """The process's RNG states: torch CPU, every CUDA device's (None without CUDA), numpy's global, python's."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng_state(rng: dict[str, Any], device: torch.device) -> None:
    """Put back what ``rng_state`` saved. The CUDA states go back only to a trial running on CUDA: a checkpoint
    written on a GPU machine still resumes on a CPU one."""
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state_all(rng["cuda"])


@dataclass
class TrainState:
    """What a checkpoint holds; ``save`` writes it atomically into a folder."""

    config: TrialConfig
    epoch: int
    model: BMAMemory
    optimizer: torch.optim.Optimizer
    history: list[dict[str, float]] = field(default_factory=list)
    lr_control: CycleLRControl | None = None

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
            "rng": rng_state(),
        }
        tmp = folder / (CHECKPOINT_FILE + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(folder / CHECKPOINT_FILE)
        return folder / CHECKPOINT_FILE

    def restore(self, folder: str | Path, device: torch.device) -> None:
        """Continue from the checkpoint in ``folder``: model, optimiser, epoch, history, LR controller and RNG
        states. Refuses a checkpoint of another trial configuration (naming the settings that differ)."""
        saved = load_checkpoint(folder)
        saved_flat, flat = TrialConfig.from_flat(saved["config"]).to_flat(), self.config.to_flat()
        differs = sorted(k for k in flat if flat[k] != saved_flat.get(k))
        if differs:
            raise ConfigError([f"{folder}: the checkpoint belongs to another trial configuration "
                               f"(differs in {differs})"])
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.epoch, self.history = saved["epoch"], saved["history"]
        if self.lr_control is not None and saved.get("lr_control") is not None:
            self.lr_control.load_state_dict(saved["lr_control"])
        restore_rng_state(saved["rng"], device)


def load_checkpoint(folder: str | Path) -> dict:
    path = Path(folder) / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no trial checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)
