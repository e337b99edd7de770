"""bma-trial (python -m bma.cli): a tiny trial end to end, resume, and the exit code 2 of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bma.cli import main
from tests.conftest import single_thread

REPO = Path(__file__).resolve().parents[1]

# A trial that runs in seconds on CPU (the test split is MNIST's full 10,000 images: evaluation dominates).
TINY = {
    "regime.train_size": 100,
    "regime.pairing_ratio": 0.2,
    "regime.val_per_class": 5,
    "optim.batch_size": 50,
    "model.memory_slots": 16,
    "model.encoder_width": 4,
    "model.feature_dim": 32,
    "model.projection_dim": 16,
    "eval.info_every": 0,
    "eval.probe_max_iter": 30,
    "device": "cpu",
}


def sets(flat: dict) -> list[str]:
    out = []
    for k, v in flat.items():
        out += ["--set", f"{k}={v}"]
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture
def env(feature_cache, monkeypatch) -> dict:
    monkeypatch.setenv("BMA_CACHE_DIR", str(feature_cache))
    monkeypatch.setenv("BMA_OFFLINE", "1")
    return {**os.environ, "BMA_CACHE_DIR": str(feature_cache), "BMA_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def run_cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bma.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.mark.slow
def test_tiny_trial_runs_to_completion(env, tmp_path):
    config = tmp_path / "trial.yaml"
    # nested sections and dotted keys both work in the YAML file; --set overrides it
    config.write_text(yaml.safe_dump({"model": {"variant": "bma", "memory_slots": 99}, "optim.epochs": 1}))
    out = tmp_path / "out"
    proc = run_cli(["--config", str(config), *sets(TINY), "--out", str(out)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch   1" in proc.stdout
    record = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1]
    assert record["config"]["model.memory_slots"] == 16 and record["config"]["model.variant"] == "bma"
    assert record["config"]["regime.train_size"] == 100 and record["config"]["optim.epochs"] == 1
    assert record["regime"]["pairs"] == 20 and record["regime"]["val_pairs"] == 50
    assert 0.0 <= record["final"]["acc/image_probe_f"] <= 1.0 and "assoc/i2s_acc" in record["final"]
    assert (out / "trial_state.pt").is_file() and not (out / "metrics.json.tmp").exists()
    # the last stdout line is the JSON summary of the final evaluation metrics
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary) == {k for k in record["final"] if k.startswith(("acc/", "assoc/", "retrieval/"))}


def _interrupted_checkpoint(flat: dict, out: Path):
    """Train epoch 1 of a 2-epoch trial in process and leave its checkpoint in ``out``, as a killed run would."""
    from bma.config import TrialConfig
    from bma.trainer import fit

    def interrupted(epoch, metrics, state):
        state.save(out)
        return False

    result = fit(TrialConfig.from_flat(flat), interrupted)
    assert result.stopped_early and (out / "trial_state.pt").is_file()
    return result


@pytest.mark.slow
def test_resume_continues_an_interrupted_trial(env, tmp_path, capsys):
    """--resume runs epoch 2 only, from the checkpoint left after epoch 1, and completes the record."""
    flat = {**TINY, "optim.epochs": 2, "eval.eval_every": 2}
    out = tmp_path / "out"
    first = _interrupted_checkpoint(flat, out)
    capsys.readouterr()
    assert main([*sets(flat), "--out", str(out), "--resume"]) == 0
    stdout = capsys.readouterr().out
    assert "epoch   2" in stdout and "epoch   1" not in stdout
    record = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert record["history"][0]["loss/total"] == first.history[0]["loss/total"]
    assert "acc/image_probe_f" in record["final"]


def test_resume_with_another_config_exits_2(env, tmp_path, capsys):
    flat = {**TINY, "optim.epochs": 2, "eval.eval_every": 2}
    out = tmp_path / "out"
    _interrupted_checkpoint(flat, out)
    capsys.readouterr()
    assert main([*sets(flat), "--set", "optim.lr=0.01", "--out", str(out), "--resume"]) == 2
    assert "another trial configuration" in capsys.readouterr().err


def test_bad_pairing_ratio_exits_2(capsys):
    assert main(["--set", "pairing_ratio=2"]) == 2
    err = capsys.readouterr().err
    assert "regime.pairing_ratio" in err and "(0, 1]" in err


def test_bad_pairing_ratio_exits_2_as_a_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bma.cli", "--set", "pairing_ratio=2", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2 and "regime.pairing_ratio" in proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_bad_configuration_files_and_keys_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert main(["--config", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["--config", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    assert main(["--config", str(listed)]) == 2
    assert "expected a mapping" in capsys.readouterr().err
    assert main(["--set", "no_such_knob=1"]) == 2
    assert "no_such_knob: unknown setting" in capsys.readouterr().err
    assert main(["--set", "train_size"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["--set", "train_size=0", "--set", "model.variant=huge"]) == 2
    err = capsys.readouterr().err
    assert "regime.train_size" in err and "model.variant" in err


def test_resume_without_checkpoint_exits_2(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_bad_data_exits_2(env, tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert main(["--set", "data.sound.source=fsdd", "--set", f"data.sound.root={missing}",
                 "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main([*sets(TINY), "--set", "train_size=5000", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "regime.train_size" in err and "2650" in err  # 2,700 clips, 5 per class for validation


def test_data_root_alone_exits_2(env, tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert main(["--set", f"data.sound.root={missing}", "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err


# Issue 22: the inputs that ended bma-trial in a traceback (or took 40-50 s and 4-5 GB) are refused with exit 2, a
# message naming the option and what was expected, and nothing written. (id, write the input into tmp, arguments,
# expected fragments); "TMP" in an argument is the case's folder.
BOMB = 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)) + "model: {tau_m: *l9}\n"
BAD_INPUT = [
    ("alias bomb", lambda d: (d / "c.yaml").write_text(BOMB), ["--config", "TMP/c.yaml"],
     ["--config", "c.yaml", "aliases", "50,000"]),
    ("latin-1 config", lambda d: (d / "c.yaml").write_bytes("model: {variant: bma}  # caf\xe9\n".encode("latin-1")),
     ["--config", "TMP/c.yaml"], ["--config", "c.yaml", "not UTF-8", "saved as UTF-8"]),
    ("folder as config", lambda d: (d / "c.yaml").mkdir(), ["--config", "TMP/c.yaml"],
     ["--config", "c.yaml", "is a folder", "expected a YAML file"]),
    ("missing config", lambda d: None, ["--config", "TMP/c.yaml"], ["--config", "c.yaml", "no such file"]),
    ("malformed --set value", lambda d: None, ["--set", "tau_m=[0.1"],
     ["--set tau_m=[0.1", "expected KEY=VALUE", "YAML", "not valid YAML"]),
    ("--out is a file", lambda d: (d / "o").write_text("x"), ["--set", "tau_m=0.1", "--out", "TMP/o"],
     ["--out", "is a file", "expected a folder"]),
    ("--out below a file", lambda d: (d / "o").write_text("x"), ["--set", "tau_m=0.1", "--out", "TMP/o/trial"],
     ["--out", "o/trial", "a file", "expected a folder"]),
]


@pytest.mark.parametrize(("make", "args", "parts"), [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_exit_2_naming_the_option_with_nothing_written(tmp_path, capsys, make, args, parts):
    import tracemalloc

    make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    tracemalloc.start()
    try:
        code = main([a.replace("TMP", str(tmp_path)) for a in args])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert all(p in err for p in parts), f"{parts} not all in: {err}"
    assert peak < 64 << 20, f"{peak / 2 ** 20:.0f} MiB to refuse it: not bounded"  # the bomb took 4-5 GB
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "nothing written"
