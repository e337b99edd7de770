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

from bma.config import TrialConfig, effective_config
from bma.trainer import TrialData, data_identity, fit
from bma import record as R
from trainables.tracking import TrialTracker, finished_run

RUN_ID_FILE = "mlflow_run.json"
ARM_KEY = "arm"  # the Tune dict key of a spec's named arm: {"name": ..., "settings": {dotted path: value}}
# A grid study's Tune dict: {POINT_KEY: {grid path: value, ARM_KEY: ..., CELLS_KEY: [...]}}, one per distinct trial;
# CELLS_KEY lists, per grid point the trial stands for, the settings that place it in that point's cell.
POINT_KEY, CELLS_KEY = "point", "cells"


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
    git_commit: str | None = None  # the driver's code version, computed once per study
    axes: tuple[str, ...] = ()  # the study's axes (bma/record.py): each trial's run name shows its values
    trial_plots: bool = False  # the spec's trial_plots: each trial draws curves.png

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

    import torch

    where = (ray.get_runtime_context().get_node_id(), socket.gethostname(),
             ",".join(str(g) for g in ray.get_gpu_ids()), str(resolve_device(granted_device(cfg))))
    return {**dict(zip(R.PLACEMENT, where)), R.THREADS: str(torch.get_num_threads())}


def trial_config(tune_config: dict, base: dict) -> tuple[TrialConfig, dict, list | None]:
    """(the effective TrialConfig, the arm, the cells) of a Tune dict: a grid study's distinct trial (POINT_KEY),
    or the flat dict of a search (and of studies started before trials were made distinct)."""
    point = tune_config.get(POINT_KEY, tune_config)
    arm = point.get(ARM_KEY) or {}
    settings = {k: v for k, v in point.items() if k not in (ARM_KEY, CELLS_KEY)}
    cfg = TrialConfig.from_flat({**base, **arm.get("settings", {}), **settings})
    eff, cells = effective_config(cfg), point.get(CELLS_KEY)
    if cells is None and eff != cfg:  # a search's trial: its own cell, in the settings the trained config rewrote
        flat, trained = cfg.to_flat(), eff.to_flat()
        cells = [{k: v for k, v in flat.items() if v != trained.get(k)}]
    return eff, arm, cells


def train_bma(tune_config: dict, study: StudyContext, data: dict[str, "TrialData | ray.ObjectRef"]) -> None:
    cfg, arm, cells = trial_config(tune_config, study.base)
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
                           tune_trial_id=tune.get_context().get_trial_id() or "", run_id=run_id,
                           commit=study.git_commit, tags={**placement(cfg), **R.cells_tags(cells)},
                           axes=study.axes, arm=arm.get("name") if arm else None)
    if resume_dir is not None:
        from bma.trainer import load_checkpoint

        tracker.backfill(load_checkpoint(resume_dir)["history"])

    last = {}
    from bma.trainer import num_rounds

    rounds = num_rounds(cfg)

    def on_epoch(epoch: int, metrics: dict, state) -> None:
        last["state"] = state
        with tempfile.TemporaryDirectory(prefix="bma-ckpt-") as folder:
            state.save(folder)
            (Path(folder) / RUN_ID_FILE).write_text(json.dumps({"run_id": tracker.run_id}))
            # Checkpoint first, then MLflow: a kill in between leaves metrics that backfill() logs on resume,
            # never a metric logged twice for one epoch.
            try:
                tune.report(scalar_metrics(metrics), checkpoint=tune.Checkpoint.from_directory(folder))
            except SystemExit:
                # Ray stopped the trial: a scheduler (ASHA) ended it early, or the study was interrupted (Ctrl-C).
                # The trial cannot tell which; the driver can (Tune's trial status) and ends the run accordingly
                # (mark_stopped_early logs this epoch from Tune's last result; mark_interrupted leaves it to the
                # resume, which backfills what Tune checkpointed: an epoch logged here that Tune never registered
                # would be trained and logged again).
                if epoch < rounds:
                    raise
                # stopped at its last round: the trial is complete, and ends as one (artifacts, finish)
        tracker.log_epoch(epoch, metrics)
        from trainables.artifacts import log_live_info_plane  # the live plane (info_plane/*.png); never raises

        log_live_info_plane(tracker, cfg, metrics, state.history)

    try:
        result = fit(cfg, on_epoch, data=_fetch(data[data_key(cfg)]), resume_from=resume_dir, device=granted_device(cfg))
        with tempfile.TemporaryDirectory(prefix="bma-artifacts-") as folder:
            from trainables.artifacts import write_trial_artifacts

            write_trial_artifacts(Path(folder), cfg, result, last.get("state"), resume_dir, curves=study.trial_plots)
            tracker.log_artifacts(folder)
        tracker.finish(result.regime_counts)
    except (SystemExit, KeyboardInterrupt):  # stopped by Ray (a scheduler, or the study interrupted): the driver
        raise  # ends the run, as stopped early or as interrupted (study/run.py settle_runs)
    except BaseException as exc:
        tracker.fail(exc)
        raise
