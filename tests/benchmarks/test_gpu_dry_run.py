"""benchmarks/gpu.py runs as-is on a GPU machine; its CPU dry run (the same code path, device cpu, resources.cpu in
place of resources.gpu) is what can be tested here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_gpu_check_dry_run_prints_the_ratios(feature_cache):
    env = {**os.environ, "BMA_CACHE_DIR": str(feature_cache)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--dry-run", "--fractions", "1",
                           "0.5", "--trials", "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "device cpu" in out and "(1) step cost, bma" in out and "on / off = " in out
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 0.5 |")]
    assert len(rows) == 2 and rows[0].rstrip().endswith("| 1.00 |")


def test_gpu_check_refuses_a_machine_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
