"""A small MLflow store written by the real writer (trainables.tracking), for the report tests."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from bma.config import TrialConfig
from trainables.tracking import TrialTracker, ensure_experiment, ensure_parent_run


def write_study(root: Path, study: str, trials: Iterable[tuple[dict, dict, dict]], axes: tuple[str, ...]) -> str:
    """One finished trial run per (flat config, final metrics, tags) under a parent run that records the study's
    ``axes`` (as the driver does from its spec); returns the store's URI."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, study, uri)
    parent = ensure_parent_run(client, experiment, study, "fp0", f"name: {study}\n", axes)
    for flat, metrics, tags in trials:
        tracker = TrialTracker(uri, experiment, parent, study, TrialConfig.from_flat(flat), axes=axes)
        if tags:
            tracker.set_tags(tags)
        tracker.log_epoch(1, metrics)
        tracker.finish({})
    return uri
