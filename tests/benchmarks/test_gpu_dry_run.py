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
    assert len(rows) == 2, out[-3000:]
    # | resources.gpu | trials at once | wall s | trials / min | ratio to the first |: each row's numbers agree with
    # one another (2 trials in `wall` seconds, 1 / fraction at once) and the ratio is the second row's throughput
    # over the first's, up to the printed rounding
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    assert [c[:2] for c in cells] == [["1", "1"], ["0.5", "2"]], rows
    per_minute = []
    for _, _, wall, per_min, _ in cells:
        wall, per_min = float(wall), float(per_min)
        assert wall > 0
        assert 120 / (wall + 0.05) - 0.005 <= per_min <= 120 / max(wall - 0.05, 1e-9) + 0.005, (wall, per_min)
        per_minute.append(per_min)
    assert float(cells[0][4]) == 1.0
    assert float(cells[1][4]) == pytest.approx(per_minute[1] / per_minute[0], abs=0.01), rows


def test_gpu_check_refuses_a_machine_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr
