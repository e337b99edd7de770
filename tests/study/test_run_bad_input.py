"""Issue 11 through the entry point a user runs, ``study/run.py``: each class of bad input is refused before anything
starts, with exit code 2, a message naming the field, file or option, no traceback, and nothing written in the
working folder (no mlflow.db, no mlartifacts/, no ray_results/). The driver never hangs: a tracking server that
does not answer is refused within a minute, and a failed trial gets one console line with its reason.

Every case runs ``study/run.py`` as a subprocess in its own empty folder. The spec cases take about a second each
(no torch, Ray or MLflow is imported); the tracking cases import MLflow (a few seconds; the silent server costs
its probe's 10 s timeout); the failed-trial case runs one real trial on the MNIST/FSDD mirror (~40 s).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from tests.conftest import MIRROR_SKIP, mirror_available, silent_server

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "study" / "run.py"
EXIT_BAD_INPUT, EXIT_TRIALS_FAILED = 2, 3

VALID = """
name: v
grid: {variant: [unimodal, bma], seed: [0]}
trial: {train_size: 200, epochs: 1, eval: {info_every: 0}}
resources: {cpu: 1}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")
           and not k.startswith("MLFLOW_HTTP_REQUEST")}
    env["BMA_CACHE_DIR"] = str(tmp_path_factory.mktemp("bma-cache"))
    return env


def run_driver(folder: Path, spec: str | bytes | None, *args: str, env: dict[str, str], timeout: float = 120):
    """Write spec.yaml (text or raw bytes) into an empty folder and run study/run.py on it there."""
    assert not any(folder.iterdir()), "the case must start in an empty folder"
    if isinstance(spec, str):
        (folder / "spec.yaml").write_text(textwrap.dedent(spec))
    elif isinstance(spec, bytes):
        (folder / "spec.yaml").write_bytes(spec)
    return subprocess.run([sys.executable, str(RUN), "spec.yaml", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_refused(proc, folder: Path, *parts: str) -> None:
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_BAD_INPUT, out
    assert proc.stderr.startswith("error: "), out
    for part in parts:
        assert part in proc.stderr, (part, proc.stderr)
    assert "Traceback" not in out
    assert sorted(p.name for p in folder.iterdir() if p.name not in ("spec.yaml", "map.csv")) == []


# -- one case per class of bad spec input --------------------------------------------------------------------------

BOMB = 'name: b\nl0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)) + "grid: {seed: *l9}\n"

BAD_SPECS = {
    "infinite tau_m": (VALID.replace("epochs: 1,", "epochs: 1, tau_m: .inf,"), ["trial.tau_m", "finite"]),
    "NaN lr in the grid": (VALID.replace("seed: [0]}", "seed: [0], lr: [.nan]}"), ["grid.lr", "finite"]),
    "NaN resources.cpu": (VALID.replace("{cpu: 1}", "{cpu: .nan}"), ["resources.cpu", "finite"]),
    "grid value spelled twice": (VALID.replace("seed: [0]}", "seed: [0], lr: [1e-3, 0.001]}"),
                                 ["grid.lr", "repeated values"]),
    "short name and dotted path": (VALID.replace("epochs: 1,", "epochs: 1, optim.epochs: 2,"),
                                   ["trial.optim.epochs", "trial.epochs and trial.optim.epochs"]),
    "nested section and dotted key": (VALID.replace("epochs: 1,", "epochs: 1, model: {tau_m: 0.1}, model.tau_m: 0.2,"),
                                      ["trial.model.tau_m", "name a setting once"]),
    "duplicate YAML key": (VALID + "resources: {cpu: 2}\n", ["resources:", "key given twice"]),
    "discrete estimator": (VALID.replace("info_every: 0}", "info_every: 0, info_estimators: [plugin_mi]}"),
                           ["trial.eval.info_estimators", "plugin_mi"]),
    "binary spec": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ["spec.yaml: not a text file"]),
    "alias bomb": (BOMB, ["expands to more than", "aliases"]),
}


@pytest.mark.parametrize(("spec", "parts"), list(BAD_SPECS.values()), ids=list(BAD_SPECS))
def test_bad_spec_exits_2_naming_the_field_and_writes_nothing(tmp_path, env, spec, parts):
    proc = run_driver(tmp_path, spec, env=env, timeout=60)  # a hang guard, not a speed claim
    assert_refused(proc, tmp_path, "spec.yaml", *parts)
    assert len(proc.stderr) < 4000


def test_a_folder_given_as_the_spec_says_so(tmp_path, env):
    (tmp_path / "spec.yaml").mkdir()
    proc = subprocess.run([sys.executable, str(RUN), "spec.yaml"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == EXIT_BAD_INPUT and "Traceback" not in proc.stderr
    assert "spec.yaml: is a folder (expected a study spec YAML" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"] and not any((tmp_path / "spec.yaml").iterdir())


def test_a_binary_class_map_names_the_file(tmp_path, env):
    (tmp_path / "map.csv").write_bytes(b"image_class,sound_class\n\x00\xff\xfe")
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(VALID) + "data: {classmap: map.csv}\n")
    proc = subprocess.run([sys.executable, str(RUN), "spec.yaml"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)
    assert_refused(proc, tmp_path, "data.classmap: map.csv: not a text file")


# -- options and where the results go ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_num_cpus_below_one_gets_a_message(tmp_path, env, value):
    proc = run_driver(tmp_path, VALID, "--num-cpus", value, env=env, timeout=60)
    assert proc.returncode == EXIT_BAD_INPUT and "Traceback" not in proc.stderr
    assert "argument --num-cpus: expected a whole number of CPUs >= 1" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["spec.yaml"]


@pytest.mark.parametrize(("uri", "parts"), [
    ("foo://bar", ["--tracking-uri foo://bar", "unknown kind of MLflow store foo://", "sqlite:///PATH"]),
    ("sqlite://", ["--tracking-uri sqlite://", "expected sqlite:///PATH"]),
])
def test_a_tracking_uri_mlflow_cannot_use_gets_a_message(tmp_path, env, uri, parts):
    proc = run_driver(tmp_path, VALID, "--tracking-uri", uri, env=env, timeout=60)
    assert_refused(proc, tmp_path, *parts)


def test_a_closed_port_is_refused_at_once(tmp_path, env):
    with socket.socket() as s:  # a port nobody listens on: bind, read its number, close
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_driver(tmp_path, VALID, "--tracking-uri", f"http://127.0.0.1:{port}", env=env, timeout=60)
    assert_refused(proc, tmp_path, f"--tracking-uri http://127.0.0.1:{port}", "connection refused")


@pytest.mark.slow
def test_a_server_that_accepts_and_never_answers_is_refused_within_a_minute(tmp_path, env):
    """MLflow's defaults (7 retries of up to 120 s, and the driver's own retries on top) kept this silent for more
    than 10 minutes. The driver's probe: attempts of 10 s, at most two; this test asks for one
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0, which the probe honours) to stay within the suite's time budget."""
    with silent_server() as (url, accepted):
        proc = run_driver(tmp_path, VALID, "--tracking-uri", url,
                          env={**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}, timeout=90)
    assert_refused(proc, tmp_path, f"--tracking-uri {url}", "no answer within 10 s")
    assert accepted, "the driver never connected: the test proves nothing"
    # Bounded by attempts, not by a clock: the probe's (at most two) connections, not MLflow's retries.
    assert len(accepted) <= 2, f"{len(accepted)} connections to a server that never answers: the client retried"


def _read_only_folder(tmp_path: Path) -> Path | None:
    """A folder where no file can be created: a chmod 555 folder for a normal user; /sys for root (permission bits
    do not stop root). None when neither refuses a new file."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        fd, name = tempfile.mkstemp(dir="/sys")
    except OSError:
        return Path("/sys")
    os.close(fd)
    os.unlink(name)
    return None


def test_a_read_only_working_folder_gets_one_line(tmp_path, env):
    folder = _read_only_folder(tmp_path)
    if folder is None:
        pytest.skip("no read-only folder here: running as root, and /sys accepts new files")
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(VALID))
    proc = subprocess.run([sys.executable, str(RUN), str(spec)], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "WARNING" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot write in {folder} (")
    assert "the MLflow store" in lines[0] and "the Tune results" in lines[0] and "--storage" in lines[0]
    assert not (folder / "mlflow.db").exists() and not (folder / "ray_results").exists()


# -- resources that do not fit: the message names the resource -----------------------------------------------------


def test_a_resource_refusal_names_the_resource_that_does_not_fit(monkeypatch):
    import ray

    from study.run import resources_problem

    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}}]
    monkeypatch.setattr(ray, "nodes", lambda: nodes)
    cpu = resources_problem({"cpu": 4.0, "gpu": 0.0})
    assert cpu.startswith("resources.cpu: 4 per trial, but the largest node has 2;")
    assert "resources.cpu to at most 2" in cpu and "--num-cpus" in cpu and "resources.gpu" not in cpu
    gpu = resources_problem({"cpu": 1.0, "gpu": 0.5})
    assert gpu.startswith("resources.gpu: 0.5 per trial, but the largest node has 0;") and "resources.gpu: 0" in gpu
    assert resources_problem({"cpu": 2.0, "gpu": 0.0}) is None
    assert resources_problem({"cpu": 4.0, "gpu": 0.0}, fix=False) == "resources.cpu: 4 per trial, but the largest node has 2"


# -- a failed trial: one console line with its reason --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not mirror_available(), reason=MIRROR_SKIP)
def test_a_failed_trial_prints_one_line_with_its_reason(tmp_path, env, feature_cache):
    """lr 1e30 makes the first loss NaN: the trainer raises FloatingPointError, the trial is FAILED in MLflow with
    that reason, and the console shows it on one line (Ray's traceback stays in error.txt and MLflow)."""
    spec = VALID.replace("[unimodal, bma]", "[bma]").replace(
        "trial: {train_size: 200, epochs: 1, eval: {info_every: 0}}",
        "trial: {train_size: 100, epochs: 1, batch_size: 32, lr: 1.0e+30, regime.val_per_class: 5,\n"
        "        eval: {info_every: 0, probe_max_iter: 10}}")
    proc = run_driver(tmp_path, spec, "--num-cpus", "1", env={**env, "BMA_CACHE_DIR": str(feature_cache)},
                      timeout=280)
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_TRIALS_FAILED, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    reason = "FloatingPointError: loss/total became nan"
    console = [line for line in proc.stdout.splitlines() if line.startswith("trial ") and " failed: " in line]
    assert len(console) == 1 and reason in console[0], proc.stdout
    assert "variant=bma" in console[0] and "error.txt" in console[0]
    assert "0 of 1 trials finished, 1 failed" in proc.stdout
    assert proc.stderr.strip() == "", proc.stderr[-2000:]
    # the full traceback is kept: in the trial's error.txt and in MLflow
    error_txt = console[0].split("traceback: ", 1)[1].split(" and MLflow")[0]
    kept = Path(error_txt).read_text()
    assert reason in kept and 'File "' in kept and "trainer.py" in kept
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("v").experiment_id], "tags.`bma.role` = 'trial'")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["bma.error"].startswith(reason)


# -- the trials' own retries do not multiply MLflow's ---------------------------------------------------------------


def test_retry_leaves_a_tracking_server_request_to_mlflows_own_retries(monkeypatch):
    """MLflow's REST client retries a request itself (7 times by default); retrying its final error again made an
    absent server cost 8 x that. A locked SQLite store is still retried."""
    from mlflow.exceptions import MlflowException

    import trainables.tracking as tracking

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def server_gone():
        calls.append(1)
        raise MlflowException("API request to http://127.0.0.1:9/api/2.0/mlflow/runs/create failed with exception "
                              "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded (Connection refused)")

    with pytest.raises(MlflowException, match="API request to"):
        tracking.retry(server_gone)
    assert len(calls) == 1
    attempts = iter([RuntimeError("(sqlite3.OperationalError) database is locked")] * 2)

    def locked_twice():
        for exc in attempts:
            raise exc
        return "ok"

    assert tracking.retry(locked_twice) == "ok"
