"""Learning-rate control driven by the monitored I(S; S') (optim.lr_control: cycle_plateau).

Its own module because both the loop (bma.trainer) and the checkpoint (bma.checkpoint, which saves its state)
need it, and the checkpoint must not import the loop that imports it."""

from __future__ import annotations

import torch

from bma.config import TrialConfig


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
