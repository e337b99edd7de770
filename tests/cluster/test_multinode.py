"""A real multi-node Ray cluster on one machine: a head with 0 CPUs and two 1-CPU worker nodes, each its own
`ray start` (own raylet, object store, agents), a real MLflow server started by cluster/start_mlflow.sh, and
study/run.py driving a smoke study against them as a subprocess, exactly as on a cluster (`--address HOST:PORT
--tracking-uri http://127.0.0.1:PORT --storage DIR`).

What a user of a cluster relies on, asserted from the MLflow records alone:
- the study finishes (exit 0) with exactly one FINISHED run per trial;
- trials ran on the worker nodes, more than one of them, never on the 0-CPU head;
- when a worker node dies mid-study, its trial is retried elsewhere (spec max_failures) and still recorded once,
  on the same MLflow run, with bma.attempts counting the retry.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.waiting import wait_for

from .conftest import (REPO, LocalCluster, RayNode, base_env, kill_tree, run_study, run_study_to_end, trial_runs,
                       wait_driver)

pytestmark = pytest.mark.slow

GRID = {"variant": ["paired_only", "bma"], "seed": [0, 1], "pairing_ratio": [0.1, 0.5]}  # 8 distinct trials (unimodal's ratios would be one)


def write_spec(folder: Path, name: str, smoke: str, grid: dict = GRID) -> Path:
    spec = folder / f"{name}.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: {name}
        data: {{image: {{source: mnist}}, sound: {{source: fsdd}}}}
        grid: {grid}
        trial: {{batch_size: 64, eval: {{info_every: 0, info_samples: 100}}}}
        resources: {{cpu: 1}}
        max_failures: 2
        smoke: {smoke}
        """))
    return spec


def n_trials(grid: dict) -> int:
    n = 1
    for values in grid.values():
        n *= len(values)
    return n


@dataclass
class TwoWorkers:
    cluster: LocalCluster
    head: RayNode
    a: RayNode
    b: RayNode


@pytest.fixture(scope="module")
def two_workers(ray_head):
    """The head (0 CPUs) + worker nodes a and b (1 CPU each, marked with a custom resource), shared by the
    module's tests (test_worker_node_lost_mid_study, which kills b, comes last)."""
    a, b = [ray_head.add_worker(name, num_cpus=1, resources={f"worker_{name}": 1}, wait=False) for name in "ab"]
    try:
        for node in (a, b):
            ray_head.wait_registered(node)
        yield TwoWorkers(ray_head, ray_head.nodes[0], a, b)
    finally:
        for node in (a, b):
            ray_head.remove(node)


@pytest.fixture(scope="module")
def cluster_nodes(two_workers):
    return two_workers


@pytest.mark.timeout(400)
def test_trials_spread_over_worker_nodes(two_workers, mlflow_server, tmp_path, feature_cache):
    cluster, head, a, b = two_workers.cluster, two_workers.head, two_workers.a, two_workers.b
    spec = write_spec(tmp_path, "multinode", "{epochs: 1, train_size: 100}")
    run_study_to_end(spec, cluster, mlflow_server, tmp_path, feature_cache, timeout=300)

    runs = trial_runs(mlflow_server, "multinode-smoke")
    keys = [r.data.tags["bma.trial_key"] for r in runs]
    assert len(runs) == n_trials(GRID) and len(set(keys)) == n_trials(GRID), \
        f"expected one run per trial ({n_trials(GRID)}), got {len(runs)} runs for {len(set(keys))} trial keys"
    assert all(r.info.status == "FINISHED" and r.data.tags["bma.status"] == "finished" for r in runs)

    # Where they ran, as Ray's own node table (what ray.nodes() returns) names the nodes.
    alive = cluster.alive_node_ids()
    assert {head.node_id, a.node_id, b.node_id} <= alive
    used = {r.data.tags["bma.node_id"] for r in runs}
    assert used <= {a.node_id, b.node_id}, f"trials ran on {used}; workers are {a.node_id}, {b.node_id}"
    assert head.node_id not in used, "the head advertises 0 CPUs: no trial may run there"
    assert used == {a.node_id, b.node_id}, "both worker nodes should have run trials"
    for r in runs:
        assert r.data.tags["bma.gpu_ids"] == "" and r.data.tags["bma.device"] == "cpu"
        assert r.data.tags["bma.attempts"] == "1"
        assert r.data.tags["bma.hostname"]
    per_node = {n: sum(r.data.tags["bma.node_id"] == n for r in runs) for n in used}
    print(f"\ntrials per node: { {n[:8]: c for n, c in per_node.items()} }")


PROBE = """
import json, sys, urllib.request
import ray
from study.run import reachable_from_workers
from trainables.bma_trainable import StudyContext

address, uri = sys.argv[1], sys.argv[2]
ray.init(address=address, log_to_driver=False, logging_level="ERROR")
remote = reachable_from_workers(uri, address)  # as run_study builds the StudyContext
context = StudyContext("probe", uri, "0", "0", {}, driver_ip=ray.util.get_node_ip_address(),
                       remote_tracking_uri=remote if remote != uri else None)


@ray.remote(num_cpus=0, resources={"worker_a": 0.01})
def health(u, ctx):
    handed = ctx.tracking_uri_here() if ctx is not None else u  # what a trial on this node would use
    try:
        urllib.request.urlopen(handed + "/health", timeout=5).read()
        return handed, "ok"
    except Exception as exc:
        return handed, repr(exc)


handed, answer = ray.get(health.remote(uri, context))
print(json.dumps({"handed": handed, "loopback": ray.get(health.remote(uri, None))[1], "handed_answer": answer}))
"""


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


@pytest.mark.timeout(400)
def test_loopback_tracking_uri_reaches_a_loopback_server_from_a_worker_on_the_same_host(two_workers):
    """The URI the driver hands to trials must answer where the URI the user gave answers.

    A stand-in for `start_mlflow.sh` with MLFLOW_HOST=127.0.0.1 (an HTTP server on loopback only); the probe runs
    the engine's own rewrite in a driver on the cluster and asks from worker a."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        probe = subprocess.run([sys.executable, "-c", PROBE, two_workers.cluster.address, uri], cwd=REPO,
                               env=base_env(), capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    if seen["loopback"] != "ok":
        pytest.skip(f"a worker on this machine cannot reach 127.0.0.1 at all: {seen}")
    assert seen["handed_answer"] == "ok", (
        f"the user's {uri} answers on worker a, but trials get {seen['handed']}: {seen['handed_answer']}")


@pytest.mark.timeout(400)
def test_worker_node_lost_mid_study(two_workers, mlflow_server, tmp_path, feature_cache):
    cluster, head, a, b = two_workers.cluster, two_workers.head, two_workers.a, two_workers.b
    grid = {"variant": ["paired_only", "bma"], "pairing_ratio": [0.1, 0.5], "seed": [0]}
    # Long enough trials (several epochs) that one is caught between its first checkpoint and its end.
    spec = write_spec(tmp_path, "nodeloss", "{epochs: 4, train_size: 300}", grid)
    log = tmp_path / "driver.log"
    driver = run_study(spec, cluster, mlflow_server, tmp_path / "ray_results", feature_cache, log)
    victim_run = None
    try:
        deadline = time.monotonic() + 240
        while victim_run is None and time.monotonic() < deadline:
            assert driver.poll() is None, f"driver exited before a trial ran on worker b:\n{log.read_text()[-4000:]}"
            for run in trial_runs(mlflow_server, "nodeloss-smoke"):
                # On worker b, running, and past its first epoch (so a checkpoint exists to resume from).
                if (run.data.tags.get("bma.node_id") == b.node_id and run.info.status == "RUNNING"
                        and "loss/total" in run.data.metrics):
                    victim_run = run
                    break
            else:
                time.sleep(0.3)
        assert victim_run is not None, "no trial reached its first epoch on worker b within 240 s"
        b.kill()  # the whole node: raylet, agents and the trial's worker process, as when a machine goes away
        killed_at = time.time()
        rc = wait_driver(driver, log, timeout=300)
    finally:
        kill_tree(driver)
    assert rc == 0, log.read_text()[-4000:]
    # Ray declares a node dead only after its health checks have failed for a while (about 15-30 s by default): the
    # study may finish sooner, so wait for that verdict instead of reading the node table before it settles.
    wait_for(lambda: b.node_id not in cluster.alive_node_ids(), timeout=180,
             what=f"Ray's node table to mark the killed worker b ({b.node_id[:8]}) dead")

    runs = trial_runs(mlflow_server, "nodeloss-smoke")
    keys = [r.data.tags["bma.trial_key"] for r in runs]
    assert len(runs) == n_trials(grid) and len(set(keys)) == n_trials(grid), \
        f"expected one run per trial ({n_trials(grid)}), got {len(runs)} runs for {len(set(keys))} trial keys"
    assert all(r.info.status == "FINISHED" and r.data.tags["bma.status"] == "finished" for r in runs)
    assert {r.data.tags["bma.node_id"] for r in runs} <= {a.node_id, b.node_id}

    (victim,) = [r for r in runs if r.info.run_id == victim_run.info.run_id]
    print(f"\ninterrupted trial {victim.info.run_name}: attempts={victim.data.tags['bma.attempts']}, "
          f"node {victim_run.data.tags['bma.node_id'][:8]} -> {victim.data.tags['bma.node_id'][:8]}")
    assert int(victim.data.tags["bma.attempts"]) >= 2, "the retry of the interrupted trial reused its run"
    others = {r.info.run_name: r.data.tags["bma.attempts"] for r in runs if r.info.run_id != victim.info.run_id}
    assert set(others.values()) == {"1"}, f"only the interrupted trial ran twice: {others}"
    assert victim.data.tags["bma.node_id"] == a.node_id, "the retry ran on the surviving worker"
    assert victim.info.end_time / 1000 > killed_at
    client = mlflow_server.client()
    steps = sorted(m.step for m in client.get_metric_history(victim.info.run_id, "loss/total"))
    assert steps == [1, 2, 3, 4], f"every epoch logged once across the two attempts, got {steps}"
