"""Per-trial artifacts: final checkpoint, metrics history (JSON), training curves (PNG, when the spec asks for them:
``trial_plots: true``), and the live information plane (PNG, refreshed at every probe epoch while the trial
trains)."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

from bma.config import TrialConfig
from bma.trainer import CHECKPOINT_FILE, FitResult


def write_trial_artifacts(folder: Path, cfg: TrialConfig, result: FitResult, state, resume_dir: Path | None,
                          curves: bool = False) -> None:
    """checkpoint/ and metrics.json, and curves.png when ``curves`` (matplotlib: ~0.5 s, the largest per-trial cost
    of the engine on tiny trials; MLflow's UI draws the same curves from the logged metrics)."""
    (folder / "checkpoint").mkdir(parents=True, exist_ok=True)
    if state is not None:
        state.save(folder / "checkpoint")
    elif resume_dir is not None and (resume_dir / CHECKPOINT_FILE).is_file():
        shutil.copy2(resume_dir / CHECKPOINT_FILE, folder / "checkpoint" / CHECKPOINT_FILE)
    (folder / "metrics.json").write_text(json.dumps(
        {"config": cfg.to_flat(), "regime": result.regime_counts, "final": result.final, "history": result.history},
        indent=1, default=float))
    if not curves:
        return
    plot_curves(result.history, folder / "curves.png", title=f"{cfg.model.variant}  p={cfg.regime.pairing_ratio:g} "
                f"N={cfg.regime.train_size} n={cfg.model.memory_slots} seed={cfg.regime.seed}")


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    import matplotlib  # here, not at import: a trial that draws nothing never pays for matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


LIVE_PLANE_DIR = "info_plane"  # artifact folder of the live plane: info_plane/info_plane__<variant>.png
log = logging.getLogger("bma.trainables")


def render_info_plane(history: list[dict], folder: Path, variant: str, pairing_ratio: float,
                      train_size: int) -> list[str]:
    """The information plane of one trial's history so far, drawn by the study's own figure code
    (analysis.plots.info_plane: quantities finite by definition only) into ``folder``; returns the PNG paths
    (empty when no probe epoch logged a plane quantity yet)."""
    import pandas as pd

    from analysis.plots import N_KEY, P_KEY, info_plane

    rows = [{"run_id": "trial", "metric": k, "step": int(h["epoch"]), "value": float(v)}
            for h in history for k, v in h.items()
            if k.startswith("info/") and isinstance(v, (int, float)) and math.isfinite(float(v))]
    if not rows:
        return []
    runs = pd.DataFrame([{"run_id": "trial", "used": True, "variant": variant, P_KEY: pairing_ratio,
                          N_KEY: train_size}])
    files, _ = info_plane(runs, pd.DataFrame(rows), [], str(folder), formats=("png",), dpi=100,
                          title=f"Information plane of this trial so far ({variant}; one seed: no CI)")
    return files


def log_live_info_plane(tracker, cfg: TrialConfig, metrics: dict, history: list[dict]) -> bool:
    """At a probe epoch (``metrics`` holds info/ values): render the plane from ``history`` and log it to the
    trial's MLflow run under info_plane/, replacing the previous one. Never raises into training: a failure is
    logged as a warning and the trial goes on. Returns whether an image was logged."""
    if not any(k.startswith("info/") for k in metrics):
        return False
    try:
        with tempfile.TemporaryDirectory(prefix="bma-plane-") as folder:
            files = render_info_plane(history, Path(folder), cfg.model.variant, cfg.regime.pairing_ratio,
                                      cfg.regime.train_size)
            if files:
                tracker.log_artifacts(folder, LIVE_PLANE_DIR)
            return bool(files)
    except Exception as exc:  # a plot must never stop a trial
        log.warning("live information plane not logged at epoch %s: %s: %s", metrics.get("epoch"),
                    type(exc).__name__, exc)
        return False
