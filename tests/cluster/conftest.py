"""A real multi-node Ray cluster and a real MLflow server, both on this one machine, for the engine's cluster tests.

Every Ray node is its own `ray start --block` process (its own raylet, object store and agents), started in a new
session so that its process group, plus the descendants found under /proc (Ray puts each worker process in a
process group of its own), is exactly what this file kills. Nothing here runs `ray stop`: that would end every Ray
on the machine, other people's included.

Isolation from other Ray users of the machine:
- each node has its own short --temp-dir under /tmp (unix socket paths must stay under ~107 characters, so not
  pytest's long tmp_path), and `ray start --head` writes its address file (`ray_current_cluster`) there, not in
  /tmp/ray, where a plain `ray.init()` elsewhere would find it and join this cluster;
- every port a node would otherwise take at a fixed default (client server 10001, dashboard 8265, agents 52365,
  metrics 44227, ...) is a free one;
- token authentication is off (RAY_AUTH_MODE=disabled): Ray 2.60's `ray start --head` turns it on whenever
  ~/.ray/auth_token exists (any earlier `ray.init()` on the machine writes one), while `ray start --address` does
  not send the token, so workers could not join (a test cluster on random ports, for the session's length).

Fixtures: `ray_head` (session: the 0-CPU head), `cluster_nodes` (module: the worker nodes a module adds, which it
overrides), `mlflow_server` (cluster/start_mlflow.sh on MLFLOW_HOST=0.0.0.0, the script's default: see
start_mlflow_server for why not 127.0.0.1). Ray gives every node this machine's address (192.0.2.x here), never
127.0.0.1, even when told --node-ip-address=127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "study" / "run.py"
START_MLFLOW = REPO / "cluster" / "start_mlflow.sh"
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    """The address Ray gives every node of this machine (`ray start` turns 127.0.0.1 into it)."""
    from ray._private.services import get_node_ip_address

    return get_node_ip_address()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        "BMA_OFFLINE": "1",
    })
    return env


# ------------------------------------------------------------------------------------------- processes


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    children, out, todo = _children_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> list[int]:
    """Kill a process started with start_new_session=True while it runs: its process group and every descendant
    (Ray moves its worker processes to process groups of their own). Returns the pids signalled.

    Once the process has exited (and was reaped) its pid may belong to someone else's new process: then only its
    process group is signalled, and only if members of it are still alive (a pgid is not reused while it has
    members), which covers daemons it left behind."""
    if proc.poll() is not None:
        members = [pid for pid in _all_pids() if _pgid(pid) == proc.pid]
        if members:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        return members
    tree = snapshot(descendants(proc.pid))
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    kill_snapshot(tree, sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid, _ in tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [proc.pid] + [pid for pid, _ in tree]


def _all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _stat_field(pid: int, index: int) -> int | None:
    """A numeric field of /proc/PID/stat, counted after the command name (0: state, 1: ppid, 2: pgrp, 19: start)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[index])
    except (OSError, ValueError, IndexError):
        return None


def _pgid(pid: int) -> int | None:
    return _stat_field(pid, 2)


def snapshot(pids: list[int]) -> list[tuple[int, int | None]]:
    """(pid, start time): identifies a process even after its pid could have been reused."""
    return [(pid, _stat_field(pid, 19)) for pid in pids]


def kill_snapshot(procs: list[tuple[int, int | None]], sig: int = signal.SIGKILL) -> None:
    for pid, start in procs:
        if start is not None and _stat_field(pid, 19) == start and alive(pid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


# ------------------------------------------------------------------------------------------- Ray nodes


@dataclass
class RayNode:
    name: str
    proc: subprocess.Popen
    temp_dir: str
    log: Path
    node_id: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    starts: int = 1

    def kill(self) -> None:
        """SIGKILL the whole node, as when its machine goes away."""
        kill_tree(self.proc)

    def log_tail(self, n: int = 3000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        raylet = sorted(Path(self.temp_dir).glob("session_*/logs/raylet.out"))
        if raylet:
            text += "\n--- raylet.out\n" + raylet[-1].read_text(errors="replace")[-n:]
        return text[-2 * n:]


class LocalCluster:
    """A head and worker nodes, each a separate `ray start --block` on this machine."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self.nodes: list[RayNode] = []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = base_env()

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> RayNode:
        temp_dir = tempfile.mkdtemp(prefix=f"bmaray-{name}-", dir="/tmp")
        log = self.logs / f"{name}.log"
        argv = [RAY, "start", *args, f"--temp-dir={temp_dir}", "--block", "--disable-usage-stats",
                "--object-store-memory=150000000", "--min-worker-port=0", "--max-worker-port=0",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        with open(log, "w") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=temp_dir)
        node = RayNode(name, proc, temp_dir, log, argv=argv, env=env)
        self.nodes.append(node)
        return node

    def _restart(self, node: RayNode) -> None:
        """Start an exited node again, same arguments, fresh temp dir and log."""
        kill_snapshot(snapshot(descendants(node.proc.pid)))
        shutil.rmtree(node.temp_dir, ignore_errors=True)
        node.temp_dir = tempfile.mkdtemp(prefix=f"bmaray-{node.name}-", dir="/tmp")
        node.argv = [a if not a.startswith("--temp-dir=") else f"--temp-dir={node.temp_dir}" for a in node.argv]
        node.starts += 1
        node.log = self.logs / f"{node.name}.{node.starts}.log"
        with open(node.log, "w") as out:
            node.proc = subprocess.Popen(node.argv, env=node.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=node.temp_dir)

    def start_head(self) -> RayNode:
        env = {**self.env, "DASHBOARD_METRIC_PORT": str(free_port())}
        head = self._start("head", ["--head", f"--port={self.port}", "--num-cpus=0", "--num-gpus=0",
                                    "--include-dashboard=false", f"--dashboard-port={free_port()}",
                                    f"--ray-client-server-port={free_port()}"], env)
        self.wait_registered(head)
        return head

    def add_worker(self, name: str, num_cpus: int, num_gpus: int = 0, resources: dict | None = None,
                   wait: bool = True) -> RayNode:
        """A worker node; with wait=False the caller calls wait_registered (to start several at once)."""
        args = [f"--address={self.address}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}",
                f"--resources={json.dumps(resources or {})}"]
        node = self._start(name, args, self.env)
        if wait:
            self.wait_registered(node)
        return node

    def _state(self, what: str):
        from ray._private.state import GlobalState
        from ray._raylet import GcsClientOptions

        state = GlobalState()
        state._initialize_global_state(GcsClientOptions.create(
            self.address, None, allow_cluster_id_nil=True, fetch_cluster_id_if_nil=False))
        try:
            return getattr(state, what)()
        finally:
            state.disconnect()

    def node_infos(self) -> list[dict]:
        """What `ray.nodes()` reports, read straight from the GCS (no driver joins the cluster)."""
        return self._state("node_table")

    def placement_groups(self) -> list[dict]:
        """What `ray.util.placement_group_table()` reports (Tune asks for one placement group per trial)."""
        return list(self._state("placement_group_table").values())

    # What `ray start` prints when its raylet did not register within Ray's fixed 30 s (ray/_private/node.py: not
    # configurable in 2.60). On a loaded 2-core machine a worker's dashboard agent can take longer than that to
    # start; the node is started again (a bounded number of times), since registration is the event awaited.
    STARTUP_TIMEOUT = "timed out during startup"
    MAX_STARTS = 3

    def wait_registered(self, node: RayNode, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        last_error = None
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                if self.STARTUP_TIMEOUT in node.log_tail() and node.starts < self.MAX_STARTS and node.argv:
                    print(f"ray node {node.name}: start {node.starts} timed out registering; starting it again")
                    self._restart(node)
                    continue
                raise RuntimeError(f"ray node {node.name} exited with {node.proc.returncode} "
                                   f"(start {node.starts}):\n{node.log_tail()}")
            try:
                for info in self.node_infos():
                    if info["Alive"] and info.get("RayletSocketName", "").startswith(node.temp_dir + "/"):
                        node.node_id = info["NodeID"]
                        return
            except Exception as exc:  # GCS not up yet
                last_error = exc
            time.sleep(0.5)
        raise RuntimeError(f"ray node {node.name} did not register within {timeout:.0f}s ({last_error}):\n{node.log_tail()}")

    def remove(self, node: RayNode, timeout: float = 20) -> None:
        """Stop a node the way `ray stop` would, but only this one: SIGTERM to its `ray start --block`, which drains
        the raylet (the GCS marks the node dead at once) and ends the node's processes; stragglers are killed."""
        if node.proc.poll() is None:
            before = snapshot(descendants(node.proc.pid))
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                node.kill()
            kill_snapshot(before)  # whatever of the node outlived the drain
        try:  # a drained node is marked dead at once; a killed one after Ray's health checks fail
            wait_for(lambda: node.node_id not in self.alive_node_ids(), timeout=max(timeout, 60),
                     what=f"Ray's node table to mark the removed node {node.name} ({node.node_id[:8]}) dead")
        finally:
            shutil.rmtree(node.temp_dir, ignore_errors=True)

    def alive_node_ids(self) -> set[str]:
        return {info["NodeID"] for info in self.node_infos() if info["Alive"]}

    def shutdown(self) -> None:
        for node in reversed(self.nodes):  # workers first, the head (GCS) last
            node.kill()
        for node in self.nodes:
            shutil.rmtree(node.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory, _mlflow_starting):
    """The head node (0 CPUs, like the cluster configs' heads) for all cluster tests; each test module adds the
    worker nodes it needs and removes them when it is done (LocalCluster.remove). Every Ray process is ended at
    the end of the session, whatever happened."""
    cluster = LocalCluster(tmp_path_factory.mktemp("ray-logs"))
    try:
        cluster.start_head()  # while the MLflow server comes up
        yield cluster
    finally:
        cluster.shutdown()


# ------------------------------------------------------------------------------------------- MLflow server


@dataclass
class MlflowServer:
    port: int
    env: dict[str, str]
    state_dir: Path

    @property
    def local_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.local_uri)

    starter: subprocess.Popen | None = None

    def wait_ready(self, timeout: float = 180) -> "MlflowServer":
        if self.starter is not None:
            out, _ = self.starter.communicate(timeout=timeout)
            if self.starter.returncode != 0:
                raise RuntimeError(f"cluster/start_mlflow.sh failed:\n{out[-3000:]}")
            self.starter = None
        return self

    def stop(self) -> None:
        if self.starter is not None and self.starter.poll() is None:
            self.starter.kill()
        subprocess.run(["bash", str(START_MLFLOW), "stop"], env=self.env, capture_output=True, timeout=60)
        pid_file = self.state_dir / "mlflow-server.pid"
        if pid_file.exists():  # `stop` failed: kill the group ourselves
            pid = int(pid_file.read_text())
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def start_mlflow_server(root: Path, host: str = "0.0.0.0") -> MlflowServer:
    """cluster/start_mlflow.sh as the cluster configs run it on the head; returns at once (the script runs in the
    background while Ray nodes start): call wait_ready() before using it.

    host 0.0.0.0 is the script's default: the driver reaches it on loopback, and the trials on the address the
    driver rewrites a loopback URI to (the node's IP, see study/run.py reachable_from_workers). That IP (here
    192.0.2.x, not one of the private ranges MLflow 3 allows by default) must be an allowed Host header.
    A server on 127.0.0.1 only would be unreachable for every trial because of that rewrite (the xfail test
    test_multinode.py::test_loopback_tracking_uri_reaches_a_loopback_server_from_a_worker_on_the_same_host)."""
    port = free_port()
    ip = node_ip()
    allowed = ",".join(f"{h}{p}" for h in ("localhost", "127.0.0.1", ip) for p in ("", f":{port}"))
    env = {
        **base_env(),
        "MLFLOW_HOST": host,
        "MLFLOW_PORT": str(port),
        "MLFLOW_STATE_DIR": str(root / "state"),
        "MLFLOW_BACKEND_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS": str(root / "artifacts"),
        "MLFLOW_WORKERS": "2",
        "MLFLOW_START_TIMEOUT": "150",
        "MLFLOW_SERVER_ALLOWED_HOSTS": allowed,
    }
    server = MlflowServer(port, env, root / "state")
    server.starter = subprocess.Popen(["bash", str(START_MLFLOW)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
    return server


@pytest.fixture(scope="session")
def _mlflow_starting(tmp_path_factory):
    server = None
    try:
        server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
        yield server
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(scope="module")
def cluster_nodes(ray_head):
    """The worker nodes a test module adds to the head: modules override this fixture (it orders their start
    before the wait for the MLflow server, so that both come up at the same time)."""
    return None


@pytest.fixture(scope="module")
def mlflow_server(_mlflow_starting, cluster_nodes) -> MlflowServer:
    """The tracking server of the cluster tests, answering (each test uses its own study name, so experiment)."""
    return _mlflow_starting.wait_ready()


# ------------------------------------------------------------------------------------------- the engine


def run_study(spec: Path, cluster: LocalCluster, server: MlflowServer, storage: Path, cache: Path,
              log: Path, timeout: float = 300, extra: list[str] | None = None) -> subprocess.Popen:
    """study/run.py --smoke against the cluster, as a background process (its own session); the caller waits."""
    env = {**base_env(), "BMA_CACHE_DIR": str(cache)}
    argv = [sys.executable, str(RUN), str(spec), "--smoke", "--address", cluster.address,
            "--tracking-uri", server.local_uri, "--storage", str(storage), *(extra or [])]
    with open(log, "w") as out:
        return subprocess.Popen(argv, cwd=spec.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def wait_driver(driver: subprocess.Popen, log: Path, timeout: float) -> int:
    """The driver's exit code; past the timeout, the driver is killed and the test fails with its output."""
    try:
        return driver.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(driver)
        pytest.fail(f"study/run.py still running after {timeout:.0f}s:\n{log.read_text()[-4000:]}")


def run_study_to_end(spec: Path, cluster: LocalCluster, server: MlflowServer, tmp_path: Path, cache: Path,
                     timeout: float) -> None:
    """Run a smoke study on the cluster to its end; fails the test with the driver's log unless it exits 0."""
    log = tmp_path / "driver.log"
    driver = run_study(spec, cluster, server, tmp_path / "ray_results", cache, log)
    try:
        rc = wait_driver(driver, log, timeout=timeout)
    finally:
        kill_tree(driver)
    assert rc == 0, log.read_text()[-4000:]


def trial_runs(server: MlflowServer, experiment: str) -> list:
    client = server.client()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], "tags.`bma.role` = 'trial'", max_results=1000)


def peak_overlap(intervals: list[tuple[int, int]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])  # an end sorts before a start
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak
