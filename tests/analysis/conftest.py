"""An MLflow store written by the study engine's own writer (trainables.tracking) with known metric values (built
once per session).

Study ``quick``: variants unimodal and bma.
  cells with 3 seeds (0, 1, 2):      p=0.1 N=1000, p=0.5 N=1000 (memory_slots 64, tau_m 0.1), both variants
  cells with 1 seed (0):             p=0.1 N=2000, p=0.5 N=2000, both variants
  bma only, heatmap axis:            memory_slots 16 (seeds 0, 1), tau_m 0.5 (seed 0) at p=0.1 N=1000
  a failed trial:                    bma p=0.5 N=1000 seed 3 (1 epoch logged, bma.error set)
  a running trial:                   unimodal p=0.1 N=2000 seed 1 (1 epoch logged)
Study ``edge``: see the end of build_store. Experiment ``empty`` has no runs.
Every value of study ``quick`` is recorded in ``Store.values`` for the tests to recompute.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from bma.config import TrialConfig
from tests.waiting import wait_for

EPOCHS = 3
ACC_METRICS = ("acc/image_probe_h", "acc/sound_probe_h", "retrieval/i2s_r1")
BMA_ONLY = ("assoc/i2s_acc",)
INFO_METRICS = ("info/I_zv_zs/infonce", "info/I_S_Sprime/infonce", "info/I_fv_fsmem/gaussian", "info/H_Wv/exact")
N_SAMPLES = 500


@dataclasses.dataclass
class Store:
    uri: str
    root: str
    study: str
    values: dict  # (variant, p, N, slots, tau_m, seed) -> {metric: [per-epoch values]} (finished trials)
    run_ids: dict  # same key -> run_id, plus ("failed",) and ("running",)


def _trial_values(variant: str, p: float, n: int, slots: int, tau_m: float, seed: int, rng) -> dict:
    base = 0.2 + 0.3 * p + 0.0002 * n + (0.06 if variant == "bma" else 0.0)
    base += 0.01 * (slots == 64) - 0.02 * (tau_m > 0.2)
    out = {}
    for k, metric in enumerate(ACC_METRICS + (BMA_ONLY if variant == "bma" else ())):
        final = base - 0.05 * k + rng.normal(0, 0.01)
        out[metric] = [0.6 * final, 1.02 * final, final]  # best (epoch 2) differs from final (epoch 3)
    out["loss/total"] = [2.0 + rng.uniform(), 1.1 + rng.uniform(0, 0.1), 1.25 + rng.uniform(0, 0.1)]  # min at epoch 2
    # the validation loss is lowest at epoch 2: model selection picks it (selected/ differs from final/)
    out["loss/val_pair"] = [1.5 + rng.uniform(0, 0.1), 0.9 + rng.uniform(0, 0.1), 1.05 + rng.uniform(0, 0.1)]
    out["time/epoch_s"] = [3.0 + rng.uniform() for _ in range(EPOCHS)]
    if variant == "bma":
        for j, metric in enumerate(INFO_METRICS):
            start = 0.2 + 0.1 * j + p
            out[metric] = [start + 0.3 * e + rng.normal(0, 0.02) for e in range(EPOCHS)]
        out["info/n_samples"] = [float(N_SAMPLES)] * EPOCHS
    return out


QUICK_AXES = ("model.variant", "regime.pairing_ratio", "regime.train_size", "model.memory_slots", "model.tau_m")


def build_store(root) -> Store:
    from mlflow import MlflowClient

    from trainables.tracking import TrialTracker, ensure_experiment, ensure_parent_run

    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    study = "quick"
    exp = ensure_experiment(client, study, uri)
    ensure_experiment(client, "empty", uri)
    parent = ensure_parent_run(client, exp, study, "fp-quick", "name: quick\n", QUICK_AXES)
    rng = np.random.default_rng(1234)
    values, run_ids = {}, {}
    counter = iter(range(10_000))

    def trial(variant, p, n, slots, tau_m, seed, status="FINISHED", epochs=EPOCHS, error=None, exp=exp, study=study,
              parent=parent, addressing="softmax", axes=QUICK_AXES):
        cfg = TrialConfig().with_updates(variant=variant, pairing_ratio=p, train_size=n, memory_slots=slots,
                                         tau_m=tau_m, seed=seed, addressing=addressing)
        tracker = TrialTracker(uri, exp, parent, study, cfg, tune_trial_id=f"t{next(counter)}", commit="abc1234",
                               axes=axes)
        vals = _trial_values(variant, p, n, slots, tau_m, seed, rng)
        for e in range(epochs):
            tracker.log_epoch(e + 1, {k: v[e] for k, v in vals.items()})
        if status == "FINISHED":
            tracker.finish({})
        elif status == "FAILED":
            tracker.fail(RuntimeError(error) if error else RuntimeError("failed"))
        elif status == "KILLED":  # MLflow's own verdict (a user killed the run), not the engine's
            client.set_terminated(tracker.run_id, "KILLED")
        # distinct start times (the analysis orders reruns by them): wait for the millisecond clock MLflow stamps
        # start times with to pass this run's, instead of sleeping a guess
        started = client.get_run(tracker.run_id).info.start_time
        wait_for(lambda: time.time_ns() // 1_000_000 > started, timeout=5, interval=0.001,
                 what="the clock to pass the last run's start time")
        return tracker.run_id, vals

    for variant in ("unimodal", "bma"):
        for p in (0.1, 0.5):
            for seed in (0, 1, 2):
                key = (variant, p, 1000, 64, 0.1, seed)
                run_ids[key], values[key] = trial(*key)
            key = (variant, p, 2000, 64, 0.1, 0)
            run_ids[key], values[key] = trial(*key)
    for key in (("bma", 0.1, 1000, 16, 0.1, 0), ("bma", 0.1, 1000, 16, 0.1, 1), ("bma", 0.1, 1000, 64, 0.5, 0)):
        run_ids[key], values[key] = trial(*key)
    run_ids[("failed",)], _ = trial("bma", 0.5, 1000, 64, 0.1, 3, status="FAILED", epochs=1,
                                    error="CUDA out of memory")
    run_ids[("running",)], _ = trial("unimodal", 0.1, 2000, 64, 0.1, 1, status="RUNNING", epochs=1)
    client.set_terminated(parent, "FINISHED")

    # study "edge": one variant, one regime; its axis model.addressing is not a classic one; a trial run twice (the
    # older run predates trial keys, so the rerun could not find it: it is superseded); a cell whose trials all
    # failed, one before logging anything
    edge = ensure_experiment(client, "edge", uri)
    eparent = ensure_parent_run(client, edge, "edge", "fp-edge", "name: edge\n", ("model.variant", "model.addressing"))
    ekw = {"exp": edge, "study": "edge", "parent": eparent, "axes": ("model.variant", "model.addressing")}
    for addressing in ("softmax", "sparsemax"):
        for seed in (0, 1):
            run_ids[("edge", addressing, seed)], _ = trial("bma", 0.2, 500, 64, 0.1, seed, addressing=addressing, **ekw)
    client.delete_tag(run_ids[("edge", "softmax", 0)], "bma.trial_key")
    run_ids[("edge", "softmax", 0, "rerun")], _ = trial("bma", 0.2, 500, 64, 0.1, 0, addressing="softmax", **ekw)
    run_ids[("edge", "topk", 0)], _ = trial("bma", 0.2, 500, 64, 0.1, 0, addressing="topk", status="FAILED",
                                            epochs=0, error="ValueError: boom", **ekw)
    run_ids[("edge", "topk", 1)], _ = trial("bma", 0.2, 500, 64, 0.1, 1, addressing="topk", status="KILLED",
                                            epochs=1, **ekw)
    return Store(uri=uri, root=str(root), study=study, values=values, run_ids=run_ids)


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Store:
    return build_store(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="session")
def exported(store, tmp_path_factory):
    """One full export of the study (tables and plots), shared by the tests that read its files."""
    from analysis.export import ExportOptions, run_export

    out = tmp_path_factory.mktemp("export") / "quick"
    return run_export(ExportOptions(study=store.study, tracking_uri=store.uri, out=str(out)))
