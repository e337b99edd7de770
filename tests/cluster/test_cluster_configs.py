"""cluster/: the `ray up` configs, the KubeRay manifest, start_mlflow.sh and the commands in docs/cluster.md.

Nothing here reaches a cloud. The launcher configs go through Ray's own config preparation and validation (the
steps `ray up` runs before it calls a provider); the shell script starts a real MLflow server on loopback; the
documented `ray ...` and `mlflow server ...` command lines are parsed by the installed CLIs.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import click
import jsonschema
import pytest
import ray
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
DOCS = ROOT / "docs" / "cluster.md"
SCRIPT = CLUSTER / "start_mlflow.sh"
LAUNCHERS = ("aws", "gcp", "onprem")
# Where each launcher keeps MLflow artifacts (start_mlflow.sh's MLFLOW_ARTIFACTS): the shared store of that site.
ARTIFACT_SCHEME = {"aws": "s3://", "gcp": "gs://", "onprem": "/mnt/"}
REMOTE_REPO = "~/bma-study"  # where file_mounts puts the project on every node

PLACEHOLDER = re.compile(r"<YOUR(?:-[A-Z0-9]+)+>")
ANGLE = re.compile(r"<[^<>\n]*>")
OTHER_PLACEHOLDER_STYLES = re.compile(r"CHANGE_?ME|REPLACE_?ME|\bTODO\b|\bFIXME\b|\bXXX+\b|your[-_]", re.IGNORECASE)

SCHEMA_PATH = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / f"{name}.yaml").read_text())


def ray_validate(config: dict) -> dict:
    """What `ray up` does to a config before it contacts the provider: fill in the provider's defaults, merge the
    setup commands, then check the result against Ray's schema (ray/autoscaler/ray-schema.json) and its rules."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def node_types(config: dict) -> tuple[dict, dict]:
    """(head node type, {name: worker node type}) of a multi-node-type config."""
    types = config["available_node_types"]
    head = config["head_node_type"]
    return types[head], {k: v for k, v in types.items() if k != head}


def segments(command: str) -> list[list[str]]:
    """The simple commands of a shell line, split on ; && ||, as argument lists. A $(...) becomes 1."""
    command = re.sub(r"\$\([^)]*\)", "1", command)
    return [shlex.split(part) for part in re.split(r";|&&|\|\|", command) if part.strip()]


def ray_start_args(commands: list[str]) -> list[list[str]]:
    return [seg[2:] for cmd in commands for seg in segments(cmd) if seg[:2] == ["ray", "start"]]


def parse_cli(group: click.Group, argv: list[str]) -> click.Context:
    """Parse argv with a click CLI as its shell would, without running it: unknown options raise UsageError."""
    ctx = click.Context(group, info_name=group.name)
    cmd: click.Command = group
    while isinstance(cmd, click.Group):
        name, argv = argv[0], argv[1:]
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"no such command: {name}"
        cmd = sub
    return cmd.make_context(name, list(argv), parent=ctx)


def ray_cli() -> click.Group:
    from ray.scripts.scripts import cli

    return cli


def mlflow_cli() -> click.Group:
    from mlflow.cli import cli

    return cli


# ------------------------------------------------------------------------------------------ launcher configs


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_passes_rays_validation(name):
    config = load(name)
    # The raw file against Ray's schema file itself, then the prepared config through Ray's validate_config.
    jsonschema.validate(config, json.loads(SCHEMA_PATH.read_text()))
    prepared = ray_validate(config)
    assert prepared["head_node_type"] in prepared["available_node_types"]


BREAKAGES = {
    "unknown top-level key": lambda c: c.update(worker_nodes_gpu=1),
    "misspelt top-level key": lambda c: c.update(setup_command=c.pop("setup_commands")),
    "no provider": lambda c: c.pop("provider"),
    "commands not a list": lambda c: c.update(head_start_ray_commands="ray start --head"),
}
NODE_TYPE_BREAKAGES = {
    "unknown key in a node type": lambda t: t.update(gpus=1),
    "fractional resource": lambda t: t["resources"].update(GPU=0.5),
    "node type without node_config": lambda t: t.pop("node_config"),
}


@pytest.mark.parametrize("name", LAUNCHERS)
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_copy_fails_validation(name, breakage):
    """The validation above can fail: each deliberately broken copy is rejected by Ray and by the schema file."""
    broken = load(name)
    BREAKAGES[breakage](broken)
    with pytest.raises((jsonschema.ValidationError, KeyError)):  # KeyError: Ray looks up the missing provider
        ray_validate(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads(SCHEMA_PATH.read_text()))


@pytest.mark.parametrize("name", ["aws", "gcp"])
@pytest.mark.parametrize("breakage", sorted(NODE_TYPE_BREAKAGES))
def test_broken_node_type_fails_validation(name, breakage):
    broken = load(name)
    _, workers = node_types(broken)
    NODE_TYPE_BREAKAGES[breakage](next(iter(workers.values())))
    with pytest.raises(jsonschema.ValidationError):
        ray_validate(broken)


def test_onprem_rejects_node_types():
    """Why onprem.yaml declares GPUs at `ray start`: Ray's local provider refuses available_node_types."""
    broken = load("onprem")
    broken["available_node_types"] = {"gpu": {"resources": {"GPU": 1}, "node_config": {}}}
    with pytest.raises(click.ClickException):
        ray_validate(broken)


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_cloud_has_cpu_head_and_gpu_workers(name):
    config = load(name)
    head, workers = node_types(config)
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU") == 0, "the head advertises no CPUs, so no trial lands on it"
    gpu_types = {k: t for k, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, f"{name}: no worker node type declares GPU resources"
    for worker in gpu_types.values():
        assert worker["resources"].get("CPU", 0) >= 1
        assert worker.get("min_workers", 0) <= worker["max_workers"] <= config["max_workers"]
        node = worker["node_config"]
        if name == "aws":
            assert re.match(r"(g4dn|g5|g6|g6e|p3|p4d|p5)\.", node["InstanceType"]), node["InstanceType"]
        else:
            accelerators = node["guestAccelerators"]
            assert sum(a["acceleratorCount"] for a in accelerators) == worker["resources"]["GPU"]
            assert all(a["acceleratorType"].startswith("nvidia-") for a in accelerators)
            # The Compute API wants an object here; the list form of some Ray examples is rejected.
            assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"


def test_onprem_declares_gpus_at_ray_start():
    config = load("onprem")
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]
    head_args = ray_start_args(config["head_start_ray_commands"])
    worker_args = ray_start_args(config["worker_start_ray_commands"])
    assert any("--head" in a and "--num-gpus=0" in a and "--num-cpus=0" in a for a in head_args)
    assert worker_args and all(any(x.startswith("--num-gpus=") for x in a) for a in worker_args)
    assert "nvidia-smi" in " ".join(config["worker_start_ray_commands"])


@pytest.mark.parametrize("name", LAUNCHERS)
def test_ray_start_commands_use_real_flags_and_one_port(name):
    config = load(name)
    head_args = ray_start_args(config["head_start_ray_commands"])
    worker_args = ray_start_args(config["worker_start_ray_commands"])
    assert len(head_args) == 1 and len(worker_args) == 1
    for args in head_args + worker_args:
        parse_cli(ray_cli(), ["start", *args])  # raises on a flag ray 2.60 does not have
    head = parse_cli(ray_cli(), ["start", *head_args[0]]).params
    worker = parse_cli(ray_cli(), ["start", *worker_args[0]]).params
    assert head["head"] and head["autoscaling_config"] == "~/ray_bootstrap_config.yaml"
    assert worker["address"] == f"$RAY_HEAD_IP:{head['port']}"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_head_starts_mlflow_and_workers_know_where(name):
    config = load(name)
    head_cmds = config["head_start_ray_commands"]
    mlflow_cmds = [c for c in head_cmds if "start_mlflow.sh" in c]
    assert len(mlflow_cmds) == 1, "the head start commands start the MLflow server once"
    (cmd,) = mlflow_cmds
    assert head_cmds.index(cmd) > min(i for i, c in enumerate(head_cmds) if "ray stop" in c)
    env = dict(tok.split("=", 1) for tok in shlex.split(cmd) if re.match(r"MLFLOW_[A-Z_]+=", tok))
    assert shlex.split(cmd)[-2:] == ["bash", f"{REMOTE_REPO}/cluster/start_mlflow.sh"]
    assert env["MLFLOW_HOST"] == "0.0.0.0", "workers must reach it"
    assert env["MLFLOW_ARTIFACTS"].startswith(ARTIFACT_SCHEME[name])
    assert env["MLFLOW_BACKEND_URI"].startswith(("sqlite:///", "postgresql://"))
    # The script the command runs is the one file_mounts copies there.
    assert config["file_mounts"][f"{REMOTE_REPO}/cluster"] == "./cluster"
    # The workers' fallback MLFLOW_TRACKING_URI points at that server.
    worker_cmds = " ".join(config["worker_start_ray_commands"])
    assert f"MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:{env['MLFLOW_PORT']}" in worker_cmds


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_node_installs_the_project(name):
    config = load(name)
    prepared = ray_validate(config)
    for role in ("head_setup_commands", "worker_setup_commands"):
        cmds = prepared[role]  # setup_commands merged in, as `ray up` runs them
        assert any(re.search(rf"pip install .*-e {re.escape(REMOTE_REPO)}\b", c) for c in cmds), role
    mounts = config["file_mounts"]
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    needed = ["pyproject.toml", "README.md", *(p.rstrip("*") for p in packages["include"])]
    for item in needed:
        assert mounts.get(f"{REMOTE_REPO}/{item}") == f"./{item}", f"{name}: file_mounts misses {item}"
    for remote, local in mounts.items():
        assert remote.startswith(f"{REMOTE_REPO}/")
        assert (ROOT / local).exists(), f"`ray up` would fail: file_mounts copies {local}, which does not exist"


@pytest.mark.parametrize("path", sorted(CLUSTER.glob("*.yaml")), ids=lambda p: p.name)
def test_placeholders_have_the_documented_form(path):
    text = path.read_text()
    for match in ANGLE.findall(text):
        assert PLACEHOLDER.fullmatch(match) or match == "<YOUR-...>", f"{path.name}: {match!r} is not <YOUR-...>"
    rest = PLACEHOLDER.sub("", text.replace("<YOUR-...>", ""))
    assert not OTHER_PLACEHOLDER_STYLES.findall(rest), f"{path.name}: a placeholder not of the <YOUR-...> form"


def test_placeholders_are_documented():
    used = {m for p in CLUSTER.iterdir() if p.is_file() for m in PLACEHOLDER.findall(p.read_text())}
    assert used
    missing = sorted(p for p in used if p not in DOCS.read_text())
    assert not missing, f"docs/cluster.md does not explain {missing}"


# ------------------------------------------------------------------------------------------ KubeRay


def kuberay_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / "kuberay.yaml").read_text()) if d]


def by_kind(kind: str) -> list[dict]:
    return [d for d in kuberay_docs() if d["kind"] == kind]


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_kuberay_raycluster_structure():
    (rc,) = by_kind("RayCluster")
    assert rc["apiVersion"] == "ray.io/v1"
    spec = rc["spec"]
    assert spec["rayVersion"] == ray.__version__, "the image's Ray must match the pinned one"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    # KubeRay passes rayStartParams as `ray start --KEY=VALUE`: values must be strings.
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    assert head["rayStartParams"].get("num-gpus") == "0"
    (head_container,) = containers(head["template"])
    assert head_container["image"]
    assert {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265, 10001}
    workers = spec["workerGroupSpecs"]
    assert workers
    for group in workers:
        assert group["groupName"]
        assert isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (container,) = containers(group["template"])
        assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    claims = {d["metadata"]["name"] for d in by_kind("PersistentVolumeClaim")}
    templates = [head["template"], *(g["template"] for g in workers)]
    templates += [d["spec"]["template"] for d in by_kind("Deployment")]
    for template in templates:
        for volume in template["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_kuberay_has_an_mlflow_server_the_pods_point_at():
    (rc,) = by_kind("RayCluster")
    def runs_mlflow_server(c: dict) -> bool:
        return (c.get("command", []) + c.get("args", []))[:2] == ["mlflow", "server"]

    deployments = [d for d in by_kind("Deployment") if any(map(runs_mlflow_server, containers(d["spec"]["template"])))]
    assert len(deployments) == 1, "one Deployment runs `mlflow server`"
    (deployment,) = deployments
    (container,) = containers(deployment["spec"]["template"])
    argv = container.get("command", []) + container.get("args", [])
    params = parse_cli(mlflow_cli(), argv[1:]).params  # the flags exist in the installed mlflow
    assert params["host"] == "0.0.0.0"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [s for s in by_kind("Service") if s["spec"]["selector"].items() <= pod_labels.items()]
    assert len(services) == 1, "a Service selects the MLflow pod"
    (service,) = services
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == int(params["port"])]
    uri = f"http://{service['metadata']['name']}:{port['port']}"
    pod_containers = containers(rc["spec"]["headGroupSpec"]["template"]) + [
        c for g in rc["spec"]["workerGroupSpecs"] for c in containers(g["template"])
    ]
    for c in pod_containers:
        assert env_of(c).get("MLFLOW_TRACKING_URI") == uri, c["name"]
    # MLflow 3 checks the Host header: the Service name must pass its own check.
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = [h.strip() for h in params["allowed_hosts"].split(",")]
    assert is_allowed_host_header(allowed, f"{service['metadata']['name']}:{port['port']}")
    assert not is_allowed_host_header(allowed, "attacker.example:5000")


# ------------------------------------------------------------------------------------------ start_mlflow.sh


def test_start_mlflow_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert os.access(SCRIPT, os.X_OK)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, host_header: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host_header} if host_header else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def mlflow_env(tmp_path):
    """Settings for start_mlflow.sh on loopback, and a cleanup that kills the server's process group whatever
    happened in the test."""
    port = free_port()
    (deployment,) = by_kind("Deployment")  # its allowed-hosts list, to check it in a real server
    argv = containers(deployment["spec"]["template"])[0]["command"]
    allowed = next(a.split("=", 1)[1] for a in argv if a.startswith("--allowed-hosts="))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_STATE_DIR": str(tmp_path / "state"),
        "MLFLOW_BACKEND_URI": f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}",
        "MLFLOW_ARTIFACTS": str(tmp_path / "artifacts"),
        "MLFLOW_WORKERS": "1",
        "MLFLOW_START_TIMEOUT": "90",
        "MLFLOW_SERVER_ALLOWED_HOSTS": allowed,
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    pid_file = tmp_path / "state" / "mlflow-server.pid"
    yield env, port, pid_file
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if alive(pid):
            os.killpg(pid, signal.SIGKILL)


def run_script(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_start_mlflow_script_starts_answers_and_stops(mlflow_env, tmp_path):
    env, port, pid_file = mlflow_env
    started = run_script(env)
    assert started.returncode == 0, started.stderr
    pid = int(pid_file.read_text())
    assert alive(pid)

    # It returned only once the server answers.
    assert http_get(port, "/health")[0] == 200
    status, body = http_get(port, "/api/2.0/mlflow/experiments/search?max_results=5")
    assert status == 200, body
    assert "experiments" in json.loads(body)
    assert (tmp_path / "db" / "mlflow.db").exists(), "sqlite backend where MLFLOW_BACKEND_URI says"
    assert (tmp_path / "state" / "tracking_uri").read_text().strip() == f"http://127.0.0.1:{port}"

    # The KubeRay allowed-hosts list, in a real server: the Service name passes, others do not.
    assert http_get(port, "/api/2.0/mlflow/experiments/search?max_results=1", "bma-mlflow:5000")[0] == 200
    assert http_get(port, "/api/2.0/mlflow/experiments/search?max_results=1", "attacker.example:5000")[0] == 403

    # Idempotent: a second start finds it and leaves it alone.
    again = run_script(env)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert int(pid_file.read_text()) == pid  # the running server was found, not replaced
    assert run_script(env, "status").returncode == 0

    # stop ends the whole process group (the server and its uvicorn workers).
    stopped = run_script(env, "stop", timeout=30)
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.monotonic() + 15
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid)
    assert run_script(env, "status").returncode == 1
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)


def test_start_mlflow_script_fails_loudly(mlflow_env):
    """A server that cannot start (here: no such executable) makes the script fail, not hang."""
    env, _, _ = mlflow_env
    env = {**env, "MLFLOW_BIN": "/nonexistent/mlflow", "MLFLOW_START_TIMEOUT": "20"}
    result = run_script(env, timeout=60)
    assert result.returncode != 0
    assert "exited before answering" in result.stderr


# ------------------------------------------------------------------------------------------ docs/cluster.md


def documented_commands(prefix: str) -> list[list[str]]:
    """Commands in docs/cluster.md that start with `prefix`, as argument lists: from the lines of fenced code
    blocks (backslash continuations joined) and from inline code spans, split at ; && || | ( ) outside quotes,
    with <YOUR-...> placeholders replaced by a plain word."""
    code: list[str] = []
    prose: list[str] = []
    in_block = False
    for line in PLACEHOLDER.sub("PLACEHOLDER", DOCS.read_text()).splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
        else:
            (code if in_block else prose).append(line)
    lines = "\n".join(code).replace("\\\n", " ").splitlines()
    lines += re.findall(r"`([^`\n]+)`", "\n".join(prose))
    words = prefix.split()
    commands = []
    for line in lines:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|()<>"):
                if current[: len(words)] == words and len(current) > len(words) + 1:
                    commands.append(current)
                current = []
            else:
                current.append(token)
    return commands


def test_documented_ray_commands_exist_in_ray_2_60():
    commands = documented_commands("ray")
    subcommands = {c[1] for c in commands}
    assert {"up", "attach", "submit", "dashboard", "down", "exec", "rsync-down", "monitor"} <= subcommands
    for argv in commands:
        parse_cli(ray_cli(), argv[1:])  # raises on an unknown command or option


def test_documented_mlflow_server_command_is_valid():
    commands = documented_commands("mlflow server")
    assert commands
    for argv in commands:
        parse_cli(mlflow_cli(), argv[1:])


def test_docs_walk_from_ray_up_to_exported_tables():
    text = DOCS.read_text()
    for needle in (
        "ray up cluster/aws.yaml",
        "ray submit",
        "--address auto --tracking-uri",
        "ray dashboard cluster/aws.yaml",
        "ssh -N",
        "-L 5000:127.0.0.1:5000",
        "kubectl apply -f cluster/kuberay.yaml",
        "kubectl port-forward svc/bma-mlflow 5000:5000",
        "python -m analysis export --study",
        "ray down cluster/aws.yaml",
        "resources: {cpu: 2, gpu: 0.5}",
        "--storage s3://",
    ):
        assert needle in text, needle
    assert (CLUSTER / "README.md").exists() and "docs/cluster.md" in (CLUSTER / "README.md").read_text()
