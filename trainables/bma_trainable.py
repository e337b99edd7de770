"""The Ray Tune function trainable around bma.trainer.fit: thin by design.

First line: one frozen TrialConfig from the Tune dict (the raw dict is not read again). Then find or create the
trial's MLflow run, train with a callback that checkpoints and reports every epoch, and record the end.
Features arrive through ``tune.with_parameters`` (Ray's object store): computed once per study by the driver.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from bma.config import TrialConfig
from bma.trainer import TrialData, data_identity, fit
from trainables.tracking import TrialTracker, finished_run

RUN_ID_FILE = "mlflow_run.json"
ARM_KEY = "arm"  # the Tune dict key of a spec's named arm: {"name": ..., "settings": {dotted path: value}}


@dataclass(frozen=True)
class StudyContext:
    """What every trial of a study shares: where to log, and the fixed part of the trial config."""

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    base: dict  # dotted path -> value
    driver_ip: str | None = None
    remote_tracking_uri: str | None = None  # the loopback tracking URI as reachable from other machines

    def tracking_uri_here(self) -> str:
        """A loopback URI works on the driver's machine (and may be the only address its server listens on);
        trials on other machines use the driver's address instead."""
        if self.remote_tracking_uri is None:
            return self.tracking_uri
        import ray

        return self.tracking_uri if ray.util.get_node_ip_address() == self.driver_ip else self.remote_tracking_uri


def data_key(cfg: TrialConfig) -> str:
    """Trials that share data and feature settings share one precomputed TrialData."""
    return json.dumps(data_identity(cfg), sort_keys=True, default=str)


def scalar_metrics(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def _fetch(item) -> TrialData:
    import ray

    return ray.get(item) if isinstance(item, ray.ObjectRef) else item


def granted_device(cfg: TrialConfig) -> str:
    """Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone for a task granted no GPU, so on a GPU node ``auto`` would take a
    GPU Ray never gave the trial: ``auto`` means CUDA only when Ray granted one."""
    import ray

    if cfg.device == "auto" and not ray.get_gpu_ids():
        return "cpu"
    return cfg.device


def placement(cfg: TrialConfig) -> dict[str, str]:
    """Where this attempt runs: Ray node, host, the GPUs Ray granted (CUDA_VISIBLE_DEVICES is set to them) and the
    torch device the trainer will use."""
    import socket

    import ray

    from bma.trainer import resolve_device

    return {
        "bma.node_id": ray.get_runtime_context().get_node_id(),
        "bma.hostname": socket.gethostname(),
        "bma.gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
        "bma.device": str(resolve_device(granted_device(cfg))),
    }


def train_bma(tune_config: dict, study: StudyContext, data: dict[str, "TrialData | ray.ObjectRef"]) -> None:
    arm = tune_config.get(ARM_KEY) or {}
    cfg = TrialConfig.from_flat({**study.base, **arm.get("settings", {}),
                                 **{k: v for k, v in tune_config.items() if k != ARM_KEY}})
    done = finished_run(study.tracking_uri_here(), study.experiment_id, study.name, cfg)
    if done is not None:
        # Finished before the driver died, but after Tune last saved the study's state: never train it again.
        tune.report({**done.data.metrics, "already_finished": 1.0})
        return
    checkpoint = tune.get_checkpoint()
    resume_dir = run_id = None
    if checkpoint is not None:
        resume_dir = Path(checkpoint.to_directory())
        run_file = resume_dir / RUN_ID_FILE
        run_id = json.loads(run_file.read_text())["run_id"] if run_file.is_file() else None

    tracking_uri = study.tracking_uri_here()
    tracker = TrialTracker(tracking_uri, study.experiment_id, study.parent_run_id, study.name, cfg,
                           tune_trial_id=tune.get_context().get_trial_id() or "", run_id=run_id)
    tracker.set_tags({**placement(cfg), **({"bma.arm": arm["name"]} if arm else {})})
    if resume_dir is not None:
        from bma.trainer import load_checkpoint

        tracker.backfill(load_checkpoint(resume_dir)["history"])

    last = {}

    def on_epoch(epoch: int, metrics: dict, state) -> None:
        last["state"] = state
        with tempfile.TemporaryDirectory(prefix="bma-ckpt-") as folder:
            state.save(folder)
            (Path(folder) / RUN_ID_FILE).write_text(json.dumps({"run_id": tracker.run_id}))
            # Checkpoint first, then MLflow: a kill in between leaves metrics that backfill() logs on resume,
            # never a metric logged twice for one epoch.
            tune.report(scalar_metrics(metrics), checkpoint=tune.Checkpoint.from_directory(folder))
        tracker.log_epoch(epoch, metrics)
        from trainables.artifacts import log_live_info_plane  # the live plane (info_plane/*.png); never raises

        log_live_info_plane(tracker, cfg, metrics, state.history)

    try:
        result = fit(cfg, on_epoch, data=_fetch(data[data_key(cfg)]), resume_from=resume_dir, device=granted_device(cfg))
        with tempfile.TemporaryDirectory(prefix="bma-artifacts-") as folder:
            from trainables.artifacts import write_trial_artifacts

            write_trial_artifacts(Path(folder), cfg, result, last.get("state"), resume_dir)
            tracker.log_artifacts(folder)
        tracker.finish(result.regime_counts)
    except BaseException as exc:
        tracker.fail(exc)
        raise
