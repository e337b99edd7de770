"""GPU packing on a real (one-machine) Ray cluster with logical GPUs: a 0-CPU head and one worker node that
declares `--num-gpus=2 --num-cpus=4`. This machine has no GPU; Ray's GPUs are a scheduling resource, so it still
grants GPU ids (and sets CUDA_VISIBLE_DEVICES) exactly as on a GPU worker, and the engine must still train on CPU.

A smoke spec with `resources: {cpu: 1, gpu: 0.5}` (two trials per GPU, as docs/cluster.md describes) and 4 trials:
- every trial's MLflow run records the GPU Ray granted (`bma.gpu_ids`), an id of this node's GPUs {0, 1};
- Ray packed them: its placement-group table, sampled during the study, shows the 4 trials' half-GPU groups
  held on the worker at the same moment (with a whole GPU per trial at most 2 could be); and the runs' MLflow
  start/end times never show more than 4 at once (2 GPUs / 0.5) or more than 2 on one GPU;
- `bma.device` is "cpu": CUDA is absent here. On a machine with CUDA the same run records "cuda" (the trainer's
  device "auto" resolves to cuda when torch.cuda.is_available(), and Ray's CUDA_VISIBLE_DEVICES makes the granted
  GPU torch's cuda:0). Note: Ray 2.60 no longer sets CUDA_VISIBLE_DEVICES="" for a task granted 0 GPUs
  (ray/_private/accelerators/accelerator.py, RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO), so a `gpu: 0` trial placed on a
  GPU node would also see the GPUs and "auto" would pick cuda; that cannot be observed on this GPU-less machine.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from tests.waiting import wait_for

from .conftest import kill_tree, peak_overlap, run_study, trial_runs, wait_driver

pytestmark = pytest.mark.slow

GRID = {"variant": ["paired_only", "bma"], "pairing_ratio": [0.1, 0.5], "seed": [0]}  # 4 distinct trials (unimodal's two ratios would be one)
GPU_EACH = 0.5  # the packing spec's GPU per trial: 4 trials on the worker's 2 GPUs at once


def is_trial_group_on(pg: dict, node_id: str) -> bool:
    """A placement group of one trial of the packing spec: one bundle {CPU: 1, GPU: GPU_EACH}, placed on node_id."""
    bundles = list(pg["bundles"].values())
    return (len(bundles) == 1 and bundles[0].get("GPU") == GPU_EACH
            and set(pg["bundles_to_node_id"].values()) == {node_id})


def write_spec(folder: Path, name: str, resources: str, smoke: str) -> Path:
    spec = folder / f"{name}.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: {name}
        data: {{image: {{source: mnist}}, sound: {{source: fsdd}}}}
        grid: {GRID}
        trial: {{batch_size: 64, eval: {{info_every: 0, info_samples: 100}}}}
        resources: {resources}
        smoke: {smoke}
        """))
    return spec


@pytest.fixture(scope="module")
def gpu_worker(ray_head):
    """One worker node with 4 logical CPUs and 2 logical GPUs beside the 0-CPU head, for this module only."""
    node = ray_head.add_worker("gpu", num_cpus=4, num_gpus=2)
    try:
        yield node
    finally:
        ray_head.remove(node)


@pytest.fixture(scope="module")
def cluster_nodes(gpu_worker):
    return gpu_worker


@pytest.mark.timeout(400)
def test_fractional_gpus_are_granted_and_packed(ray_head, gpu_worker, mlflow_server, tmp_path, feature_cache):
    cluster, worker = ray_head, gpu_worker
    (gpus_total,) = [info["Resources"].get("GPU") for info in cluster.node_infos() if info["NodeID"] == worker.node_id]
    assert gpus_total == 2

    # Trials long enough (several epochs) that the 4 of them overlap although their actors start one by one.
    spec = write_spec(tmp_path, "gpupack", f"{{cpu: 1, gpu: {GPU_EACH}}}", "{epochs: 3, train_size: 300}")
    log = tmp_path / "driver.log"
    driver = run_study(spec, cluster, mlflow_server, tmp_path / "ray_results", feature_cache, log)
    try:
        # Ray's own account of the packing, sampled while the study runs: Tune asks for one placement group per
        # trial (one bundle {CPU: 1, GPU: 0.5}), and a CREATED group holds its half GPU on the worker until its
        # trial ends. Trials take 10 s or more and placement groups are created in well under one, so 4
        # half-GPU groups held at once on the 2-GPU worker is what packing means (with gpu: 1 at most 2 could be).
        peak_groups: set[str] = set()
        deadline = time.monotonic() + 330
        while driver.poll() is None and time.monotonic() < deadline:
            held = {pg["placement_group_id"] for pg in cluster.placement_groups()
                    if pg["state"] == "CREATED" and is_trial_group_on(pg, worker.node_id)}
            if len(held) > len(peak_groups):
                peak_groups = held
            time.sleep(0.25)
        rc = wait_driver(driver, log, timeout=max(1.0, deadline - time.monotonic()))
    finally:
        kill_tree(driver)
    assert rc == 0, log.read_text()[-4000:]

    runs = trial_runs(mlflow_server, "gpupack-smoke")
    assert len(runs) == 4 and len({r.data.tags["bma.trial_key"] for r in runs}) == 4
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["bma.node_id"] for r in runs} == {worker.node_id}

    gpu_ids = {r.info.run_id: r.data.tags["bma.gpu_ids"] for r in runs}
    assert all(gpu_ids.values()), f"every trial asked for half a GPU and must record the one it got: {gpu_ids}"
    assert set(gpu_ids.values()) <= {"0", "1"}, f"a 0.5-GPU trial gets exactly one of the node's GPUs: {gpu_ids}"
    # CUDA is absent: the granted (logical) GPU does not make the trainer pick cuda.
    assert {r.data.tags["bma.device"] for r in runs} == {"cpu"}

    # Packing, from the runs' own start and end times: 2 GPUs / 0.5 per trial = at most 4 at once, two per GPU.
    spans = {r.info.run_id: (r.info.start_time, r.info.end_time) for r in runs}
    peak = peak_overlap(list(spans.values()))
    print(f"\npeak concurrency {peak} (MLflow), {len(peak_groups)} placement groups held at once (Ray); "
          f"gpu ids {sorted(gpu_ids.values())}; "
          f"durations {sorted(round((e - s) / 1000, 1) for s, e in spans.values())} s")
    assert peak <= 4
    for gpu in ("0", "1"):
        on_gpu = [spans[r] for r, g in gpu_ids.items() if g == gpu]
        assert peak_overlap(on_gpu) <= 2, f"more than two 0.5-GPU trials shared GPU {gpu} at once"
    # Packing, strictly, from Ray: all 4 half-GPU placement groups were held on the worker at the same moment, so
    # its 2 GPUs carried 4 trials' reservations at once (2 per GPU: a 0.5 bundle is never split across GPUs).
    assert len(peak_groups) == 4, (
        f"gpu packing: at most {len(peak_groups)} half-GPU placement groups were held at once on the 2-GPU worker, "
        f"expected 4:\n{log.read_text()[-3000:]}")


@pytest.mark.timeout(400)
def test_more_gpu_than_any_node_has_waits_without_running_anything(ray_head, gpu_worker, mlflow_server, tmp_path,
                                                                   feature_cache):
    """A trial asking for 3 GPUs on a cluster whose nodes have 2: Ray cannot place it, and without an autoscaler
    nothing will ever add a node. The study must not run it anywhere (no oversubscribed GPU, no trial run in
    MLflow); it waits (pending), as it would for an autoscaling cluster to add a bigger node.

    Observed: it waits silently. Tune's "insufficient resources" warning is a WARNING log, and study/run.py runs
    Ray at logging level ERROR without -v, so the driver prints only its first line, however long it waits."""
    spec = write_spec(tmp_path, "gpubig", "{cpu: 1, gpu: 3}", "{epochs: 1, train_size: 100}")
    log = tmp_path / "driver.log"
    driver = run_study(spec, ray_head, mlflow_server, tmp_path / "ray_results", feature_cache, log)
    try:
        def big_groups() -> list[dict]:
            return [pg for pg in ray_head.placement_groups() if any(b.get("GPU") == 3 for b in pg["bundles"].values())]

        def driver_alive() -> str:
            assert driver.poll() is None, f"the study ended (rc {driver.returncode}):\n{log.read_text()[-3000:]}"
            return ""

        # Wait until Tune has asked Ray for the trials' placement groups (one bundle of 3 GPUs each), and Ray's
        # scheduler has tried them and reported them unplaceable: the event, not a fixed time, says Ray has decided.
        wait_for(lambda: driver_alive() or big_groups(), timeout=180, what="Tune to ask Ray for a 3-GPU trial",
                 detail=lambda: log.read_text()[-3000:])
        wait_for(lambda: driver_alive() or all(pg["stats"]["scheduling_state"] in ("INFEASIBLE", "NO_RESOURCES")
                                               for pg in big_groups()),
                 timeout=120, what="Ray's scheduler to report the 3-GPU placement groups infeasible",
                 detail=lambda: str([pg["stats"] for pg in big_groups()]))
        states = [pg["state"] for pg in big_groups()]
        assert states and set(states) == {"PENDING"}, states
        assert driver.poll() is None, f"the study ended (rc {driver.returncode}):\n{log.read_text()[-3000:]}"
        assert trial_runs(mlflow_server, "gpubig-smoke") == [], "a trial ran without the GPUs it asked for"
        print(f"\n{len(states)} placement group(s) pending; driver output while pending:\n{log.read_text()[-1500:]}")
    finally:
        kill_tree(driver)
