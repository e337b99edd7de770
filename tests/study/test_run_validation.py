"""study/run.py refuses bad input before it starts anything: exit code 2, the problems on stderr, and not one file
in the working folder (no mlflow.db, no mlartifacts/, no ray_results/), so a typo never leaves a half-made study
behind. --validate-only checks spec and data, exits 0 and writes nothing either.

Each case runs the driver as a subprocess (sys.executable) in its own empty folder. The spec-only cases take
about a second (no torch, Ray or MLflow is imported); the data cases load the cached MNIST/FSDD features (one
BMA_CACHE_DIR for the module, so they are computed at most once).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import MIRROR_SKIP, mirror_available

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "study" / "run.py"
QUICK = REPO / "study" / "specs" / "quick.yaml"
EXIT_BAD_INPUT = 2

VALID = """
name: v
data: {image: {source: mnist}, sound: {source: fsdd}}
grid: {variant: [unimodal, bma], seed: [0]}
trial: {train_size: 200, epochs: 1, eval: {info_every: 0}}
resources: {cpu: 1}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The driver's environment: a module-wide feature cache, and no tracking URI inherited from the caller."""
    cache = tmp_path_factory.mktemp("bma-cache")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["BMA_CACHE_DIR"] = str(cache)
    return env


def run_driver(folder: Path, spec_text: str | None, *args: str, env: dict[str, str], empty: bool = True):
    """Write spec.yaml into a folder (empty unless told otherwise) and run study/run.py on it there."""
    assert not empty or not any(folder.iterdir()), "the case must start in an empty folder"
    if spec_text is not None:
        (folder / "spec.yaml").write_text(textwrap.dedent(spec_text))
    return subprocess.run([sys.executable, str(RUN), "spec.yaml", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=280)


def left_behind(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "spec.yaml")


# -- malformed specs: refused before anything is imported or written -----------------------------------------------

MALFORMED = {
    "unknown top-level key": (VALID + "gird: {seed: [0]}\n", ["gird: unknown top-level key"]),
    "pairing_ratio out of range": (VALID.replace("seed: [0]}", "seed: [0], pairing_ratio: [1.5]}"),
                                   ["grid.pairing_ratio", "(0, 1]"]),
    "wrong type": (VALID.replace("train_size: 200", "train_size: big"), ["trial.train_size", "expected int"]),
    "unknown variant": (VALID.replace("[unimodal, bma]", "[unimodal, fancy]"), ["grid.variant", "fancy"]),
    "bad resources": (VALID.replace("{cpu: 1}", "{cpu: 0, gpu: 1.5}"), ["resources.gpu", "below 1"]),
    "data root missing": (VALID.replace("{source: mnist}", "{source: mnist, root: /nonexistent/mnist}"),
                          ["data.image.root", "does not exist"]),
    "classmap missing": (VALID.replace("sound: {source: fsdd}}", "sound: {source: fsdd}, classmap: nope.csv}"),
                         ["data.classmap", "nope.csv"]),
    "invalid YAML": (VALID.replace("seed: [0]}", "seed: [0}"), ["not valid YAML"]),
    "not a mapping": ("- name: v\n- grid: {seed: [0]}\n", ["top level: expected a mapping"]),
    "several problems": (VALID.replace("name: v", "name: a b").replace("cpu: 1", "cpu: -1") + "max_failures: x\n",
                         ["3 problem(s)", "name:", "resources.cpu:", "max_failures:"]),
}


@pytest.mark.parametrize(("text", "expected"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_spec_exits_2_and_writes_nothing(tmp_path, env, text, expected):
    proc = run_driver(tmp_path, text, env=env)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: spec.yaml:"), proc.stderr
    for s in expected:
        assert s in proc.stderr, (s, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert left_behind(tmp_path) == []


def test_missing_spec_file_exits_2(tmp_path, env):
    proc = run_driver(tmp_path, None, env=env)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "spec.yaml: no such file" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_bad_smoke_block_exits_2_with_smoke(tmp_path, env):
    proc = run_driver(tmp_path, VALID + "smoke: {epochs: 0}\n", "--smoke", "--validate-only", env=env)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout + proc.stderr
    assert "smoke.epochs: expected >= 1, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert left_behind(tmp_path) == []


def test_changed_spec_is_refused_on_resume_without_fresh(tmp_path, env):
    """A study folder holding another version of the spec: refused before data, Ray or MLflow are touched."""
    saved = tmp_path / "ray_results" / "v" / "bma_fingerprint.txt"
    saved.parent.mkdir(parents=True)
    saved.write_text("000000000000")
    proc = run_driver(tmp_path, VALID, env=env, empty=False)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout + proc.stderr
    assert "different version of study 'v'" in proc.stderr and "--fresh" in proc.stderr
    assert left_behind(tmp_path) == ["ray_results"]
    assert [p.name for p in (tmp_path / "ray_results").iterdir()] == ["v"]
    assert [p.name for p in (tmp_path / "ray_results" / "v").iterdir()] == ["bma_fingerprint.txt"]
    assert saved.read_text() == "000000000000"


# -- the data check: a valid spec the data cannot satisfy ----------------------------------------------------------

needs_mirror = pytest.mark.skipif(not mirror_available(), reason=MIRROR_SKIP)


@needs_mirror
def test_spec_the_data_cannot_satisfy_exits_2_and_writes_nothing(tmp_path, env):
    # FSDD has 2,700 train clips; 20 per class are carved for validation: 2,500 remain for training.
    proc = run_driver(tmp_path, VALID.replace("train_size: 200", "train_size: 5000"), env=env)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout + proc.stderr
    assert "the data cannot satisfy this study" in proc.stderr
    assert "regime.train_size: 5000" in proc.stderr
    assert "2500" in proc.stderr  # the limit
    assert "expand_sounds" in proc.stderr  # and the way out
    assert "Traceback" not in proc.stderr
    assert left_behind(tmp_path) == []


@needs_mirror
def test_validate_only_on_quick_exits_0_and_writes_nothing(tmp_path, env):
    proc = run_driver(tmp_path, QUICK.read_text(), "--validate-only", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "study quick: 8 grid points, 6 distinct trials" in proc.stdout  # unimodal: one trial per seed
    assert "nothing started (--validate-only)" in proc.stdout
    assert left_behind(tmp_path) == []


@needs_mirror
def test_gpu_trials_on_a_machine_without_gpu_exit_2_and_write_nothing(tmp_path, env):
    """Embedded Ray on a GPU-less machine can never place a trial asking for a GPU: refused, not left waiting."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the request can be met")
    proc = run_driver(tmp_path, VALID.replace("resources: {cpu: 1}", "resources: {cpu: 1, gpu: 0.5}"), env=env)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout + proc.stderr
    assert "resources.gpu: 0.5 per trial, but the largest node has 0" in proc.stderr
    assert left_behind(tmp_path) == []
