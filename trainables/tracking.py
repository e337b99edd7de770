"""MLflow records of a study, written through the record contract in bma/record.py (its module doc has the
layout: experiment, parent run, trial runs, their tags, params and metrics).
"""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bma.config import TrialConfig
from bma import record as R

# The store helpers every reader and writer shares (retry, the server probe) live at the analysis layer, below this
# one (tests/test_layers.py); they are imported here under their old names.
from analysis.store import PROBE_LIMITS, retry, server_problem  # noqa: E402,F401


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() or "unknown"
        return commit + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def trial_key(study: str, cfg: TrialConfig) -> str:
    return R.trial_key(study, cfg.to_flat())


def default_artifact_location(tracking_uri: str) -> str | None:
    """For a local sqlite store, artifacts go beside the database (absolute, since trials run in other folders);
    a tracking server decides for itself (its --artifacts-destination)."""
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None


# MLflow 3's experiment kind: a study is model training (runs to compare), not a GenAI app (traces). The UI reads it
# where its workflow switcher is off; where it is on (3.17), the link with ?workflowType=machine_learning does it.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ensure_experiment(client: MlflowClient, study: str, tracking_uri: str) -> str:
    exp = retry(lambda: client.get_experiment_by_name(study))
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            retry(lambda: client.restore_experiment(exp.experiment_id))
        if EXPERIMENT_KIND[0] not in (exp.tags or {}):  # a study recorded before the kind was set
            retry(lambda: client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND))
        return exp.experiment_id
    try:
        return retry(lambda: client.create_experiment(study, artifact_location=default_artifact_location(tracking_uri),
                                                      tags={R.STUDY: study, EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1]}))
    except MlflowException:  # created concurrently by someone else
        return retry(lambda: client.get_experiment_by_name(study)).experiment_id


def ensure_parent_run(client: MlflowClient, experiment_id: str, study: str, fingerprint: str, spec_text: str,
                      axes: list[str] | tuple[str, ...]) -> str:
    """The study's parent run, recording the study's axes (the analysis groups cells by them); a resumed study
    (same fingerprint) reuses it."""
    found = retry(lambda: client.search_runs(
        [experiment_id],
        f"tags.`{R.ROLE}` = '{R.ROLE_STUDY}' and tags.`{R.FINGERPRINT}` = '{fingerprint}'",
        max_results=1,
    ))
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status != "RUNNING":
            retry(lambda: client.update_run(run_id, status="RUNNING"))
        return run_id
    tags = {R.ROLE: R.ROLE_STUDY, R.STUDY: study, R.FINGERPRINT: fingerprint, R.AXES: R.axes_tag(axes),
            R.GIT_COMMIT: git_commit()}
    run = retry(lambda: client.create_run(experiment_id, run_name=study, tags=tags))
    retry(lambda: client.log_text(run.info.run_id, spec_text, "spec.yaml"))
    return run.info.run_id


def finished_run(tracking_uri: str, experiment_id: str, study: str, cfg: TrialConfig):
    """The trial's run if MLflow already records it as finished (the study's state on disk may lag behind it)."""
    client = MlflowClient(tracking_uri)
    key = trial_key(study, cfg)
    found = retry(lambda: client.search_runs(
        [experiment_id], f"tags.`{R.TRIAL_KEY}` = '{key}' and attributes.status = 'FINISHED'", max_results=1))
    return found[0] if found else None


LOGGED_EVERY_ROUND = "loss/total"  # every variant logs it each round: its history says which rounds MLflow holds


class TrialTracker:
    """One trial's MLflow run: found again by its trial key when the trial resumes, so it is never duplicated."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, study: str, cfg: TrialConfig,
                 tune_trial_id: str = "", run_id: str | None = None, commit: str | None = None,
                 tags: dict[str, str] | None = None, axes: list[str] | tuple[str, ...] = (), arm: str | None = None):
        """``commit``: the code's git commit when the caller knows it (the driver's, once per study: two git
        subprocesses per trial otherwise); ``tags``: more tags, set with the run's own (one call fewer); ``axes``:
        the study's axes and ``arm`` the trial's named arm (its run name shows its value of each)."""
        self.client = MlflowClient(tracking_uri)
        self.cfg = cfg
        key = trial_key(study, cfg)
        if run_id is None:
            found = retry(lambda: self.client.search_runs([experiment_id], f"tags.`{R.TRIAL_KEY}` = '{key}'",
                                                          max_results=1))
            run_id = found[0].info.run_id if found else None
            owner = found[0].data.tags.get(R.TRIAL_ID) if found else None
            if run_id is not None and ((owner or tune_trial_id) != tune_trial_id or retry(
                    lambda: self.client.get_metric_history(run_id, LOGGED_EVERY_ROUND))):
                # Never two Tune trials in one run, never a round logged twice: the run belongs to another trial (a
                # search sampled one configuration twice; a study started again with --fresh; a driver killed
                # before Tune saved this trial), or this attempt starts from round 1 without a checkpoint but the
                # run holds rounds. A new run; the analysis keeps the latest finished run per cell and seed.
                run_id = None
        if run_id is None:
            flat = cfg.to_flat()
            tags = {
                R.ROLE: R.ROLE_TRIAL, R.STUDY: study, R.PARENT: parent_run_id,
                R.VARIANT: cfg.model.variant, R.REGIME: R.regime_name(flat, with_seed=False),
                R.SEED: str(cfg.regime.seed), R.TRIAL_KEY: key, R.TRIAL_ID: tune_trial_id,
                R.GIT_COMMIT: commit or git_commit(), R.STATUS: R.STATUS_RUNNING, R.ATTEMPTS: "1",
                **({R.ARM: arm} if arm else {}), **(tags or {}),
            }
            name = R.run_name(flat, axes, key, arm)
            run = retry(lambda: self.client.create_run(experiment_id, run_name=name, tags=tags))
            self.run_id = run.info.run_id
            params = [Param(k, R.param_text(v)) for k, v in sorted(cfg.to_flat().items())]
            for i in range(0, len(params), 90):  # MLflow takes at most 100 params per batch
                retry(lambda chunk=params[i:i + 90]: self.client.log_batch(self.run_id, params=chunk))
        else:
            self.run_id = run_id
            run = retry(lambda: self.client.get_run(run_id))
            attempts = int(run.data.tags.get(R.ATTEMPTS, "1")) + 1
            more = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
            retry(lambda: self.client.log_batch(run_id, tags=[RunTag(R.STATUS, R.STATUS_RUNNING),
                                                              RunTag(R.ATTEMPTS, str(attempts))] + more))
            if run.info.status != "RUNNING":
                retry(lambda: self.client.update_run(run_id, status="RUNNING"))

    def set_tags(self, tags: dict[str, str]) -> None:
        retry(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]))

    def logged_epochs(self) -> set[int]:
        history = retry(lambda: self.client.get_metric_history(self.run_id, LOGGED_EVERY_ROUND))
        return {m.step for m in history}

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and math.isfinite(float(v)) and k != "epoch"]
        for i in range(0, len(batch), 900):  # MLflow's limit is 1,000 metrics per batch
            retry(lambda chunk=batch[i:i + 900]: self.client.log_batch(self.run_id, metrics=chunk))

    def backfill(self, history: list[dict[str, float]]) -> None:
        """After a resume: log the checkpointed epochs whose metrics never reached MLflow (killed in between)."""
        done = self.logged_epochs()
        for metrics in history:
            if int(metrics["epoch"]) not in done:
                self.log_epoch(int(metrics["epoch"]), metrics)

    def log_artifacts(self, folder: str | Path, artifact_path: str | None = None) -> None:
        retry(lambda: self.client.log_artifacts(self.run_id, str(folder), artifact_path))

    def finish(self, summary: dict[str, Any], stopped_early: bool = False) -> None:
        """The run ends FINISHED; a trial a scheduler stopped early is tagged bma.stopped_early=true (the analysis
        counts it, and says so)."""
        tags = [RunTag(R.STATUS, R.STATUS_FINISHED)] + [RunTag(f"{R.REGIME_COUNT}{k}", str(v)) for k, v in summary.items()]
        if stopped_early:
            tags.append(RunTag(R.STOPPED_EARLY, "true"))
        retry(lambda: self.client.log_batch(self.run_id, tags=tags))
        retry(lambda: self.client.set_terminated(self.run_id, status="FINISHED"))

    def fail(self, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"[:4000]
        retry(lambda: self.client.log_batch(self.run_id, tags=[RunTag(R.STATUS, R.STATUS_FAILED), RunTag(R.ERROR, text)]))
        retry(lambda: self.client.set_terminated(self.run_id, status="FAILED"))


KEY_PREFIX = "key:"  # last_results entries keyed by a trial's key rather than its Tune trial id


def mark_stopped_early(tracking_uri: str, experiment_id: str, parent_run_id: str,
                       last_results: dict[str, dict[str, Any]]) -> int:
    """After a study: trial runs still RUNNING although Tune ended their trial without an error were stopped by the
    scheduler before their thread could say so (Ray ends a stopped trial's actor without waiting). Log each one's
    last reported epoch if MLflow lacks it and finish it, as stopped early unless that epoch was its last round. ``last_results``: Tune trial id -> its
    last reported metrics. Returns how many runs were marked."""
    client = MlflowClient(tracking_uri)
    running = retry(lambda: client.search_runs(
        [experiment_id], f"tags.`{R.PARENT}` = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=10_000))
    marked = 0
    for run in running:
        # by Tune's trial id, else by the trial's key (a resumed study's Tune state may name the attempt that left
        # the run RUNNING by another id than the tag the run carries)
        metrics = last_results.get(run.data.tags.get(R.TRIAL_ID, "")) or last_results.get(
            KEY_PREFIX + run.data.tags.get(R.TRIAL_KEY, "-"))
        if metrics is None:
            continue
        epoch = metrics.get("epoch")
        if isinstance(epoch, (int, float)):
            logged = {m.step for m in retry(lambda: client.get_metric_history(run.info.run_id, LOGGED_EVERY_ROUND))}
            if int(epoch) not in logged:
                now = int(time.time() * 1000)
                batch = [Metric(k, float(v), now, int(epoch)) for k, v in metrics.items()
                         if "/" in k and isinstance(v, (int, float)) and math.isfinite(float(v))]
                for i in range(0, len(batch), 900):
                    retry(lambda chunk=batch[i:i + 900]: client.log_batch(run.info.run_id, metrics=chunk))
        from bma.trainer import num_rounds

        try:
            complete = int(epoch) >= num_rounds(TrialConfig.from_flat(run.data.params))
        except (ValueError, TypeError):  # no epoch reported, or params that no longer make a config
            complete = False
        tags = [RunTag(R.STATUS, R.STATUS_FINISHED)] + ([] if complete else [RunTag(R.STOPPED_EARLY, "true")])
        retry(lambda: client.log_batch(run.info.run_id, tags=tags))
        retry(lambda: client.set_terminated(run.info.run_id, status="FINISHED"))
        marked += 1
    return marked


def mark_interrupted(tracking_uri: str, experiment_id: str, parent_run_id: str) -> int:
    """After an interrupted study (Ctrl-C): every trial run of the study still RUNNING was cut off mid-training.
    Tag it interrupted and end it KILLED (bma/record.py STATUSES): not finished, not stopped early, and not a
    result; the rerun of the study's command resumes the trial from its checkpoint into this same run. Call it after
    the trials' processes are gone (ray.shutdown), so no trial writes after it. Returns how many runs were marked."""
    client = MlflowClient(tracking_uri)
    running = retry(lambda: client.search_runs(
        [experiment_id], f"tags.`{R.PARENT}` = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=10_000))
    for run in running:
        retry(lambda: client.log_batch(run.info.run_id, tags=[RunTag(R.STATUS, R.STATUS_INTERRUPTED)]))
        retry(lambda: client.set_terminated(run.info.run_id, status=R.MLFLOW_INTERRUPTED))
    return len(running)
