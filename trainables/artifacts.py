"""Per-trial artifacts: final checkpoint, metrics history (JSON) and training curves (PNG)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bma.config import TrialConfig  # noqa: E402
from bma.trainer import CHECKPOINT_FILE, FitResult  # noqa: E402


def write_trial_artifacts(folder: Path, cfg: TrialConfig, result: FitResult, state, resume_dir: Path | None) -> None:
    (folder / "checkpoint").mkdir(parents=True, exist_ok=True)
    if state is not None:
        state.save(folder / "checkpoint")
    elif resume_dir is not None and (resume_dir / CHECKPOINT_FILE).is_file():
        shutil.copy2(resume_dir / CHECKPOINT_FILE, folder / "checkpoint" / CHECKPOINT_FILE)
    (folder / "metrics.json").write_text(json.dumps(
        {"config": cfg.to_flat(), "regime": result.regime_counts, "final": result.final, "history": result.history},
        indent=1, default=float))
    plot_curves(result.history, folder / "curves.png", title=f"{cfg.model.variant}  p={cfg.regime.pairing_ratio:g} "
                f"N={cfg.regime.train_size} n={cfg.model.memory_slots} seed={cfg.regime.seed}")


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in sorted({k for h in history for k in h if k.startswith("loss/") and not k.startswith("loss/pair_")}):
        ax_loss.plot(epochs, [h.get(key, float("nan")) for h in history], marker="o", ms=3, label=key[5:])
    for key in sorted({k for h in history for k in h if k.startswith(("acc/", "assoc/"))}):
        pts = [(h["epoch"], h[key]) for h in history if key in h]
        ax_acc.plot(*zip(*pts), marker="o", ms=3, label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss (nats / cosine distance)", title="training losses")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (test split)", title="probes and association", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
