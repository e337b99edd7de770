"""A small MLflow store written by the real writer (trainables.tracking), for the report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from bma.config import TrialConfig
from trainables.tracking import TrialTracker, ensure_experiment, ensure_parent_run


def write_study(root: Path, study: str, trials: Iterable[tuple], axes: tuple[str, ...],
                sesoi: dict[str, float] | None = None) -> str:
    """One trial run per (flat config, final metrics, tags[, error]) under a parent run that records the study's
    ``axes`` (as the driver does from its spec): finished, or failed with ``error`` (its metrics logged first, if
    any); ``sesoi`` is recorded on the parent run as the driver records the spec's analysis.sesoi. Returns the
    store's URI."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, study, uri)
    parent = ensure_parent_run(client, experiment, study, "fp0", f"name: {study}\n", axes)
    if sesoi is not None:
        record_sesoi(client, parent, sesoi)
    for flat, metrics, tags, *error in trials:
        tracker = TrialTracker(uri, experiment, parent, study, TrialConfig.from_flat(flat), axes=axes)
        if tags:
            tracker.set_tags(tags)
        if metrics:
            tracker.log_epoch(1, metrics)
        if error and error[0]:
            tracker.fail(RuntimeError(error[0]))
        else:
            tracker.finish({})
    return uri


def record_sesoi(client, parent_run: str, sesoi: dict[str, float]) -> None:
    """The parent run's SESOI tag, as the contract in bma/record.py (R.SESOI) defines it: JSON {glob: delta}.
    (The driver's writer of this tag lands with the spec's ``analysis.sesoi``; use it here once it exists.)"""
    import json

    from bma import record as R

    client.set_tag(parent_run, R.SESOI, json.dumps(sesoi))
