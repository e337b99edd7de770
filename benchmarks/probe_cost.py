"""CPU cost of ``compute_probes`` at the model's scale, per estimator set, and of drawing the live information plane.

    .venv/bin/python benchmarks/probe_cost.py                  # ~1 min on 2 busy cores

Synthetic memory of tests/info/synthetic.py (N = 1000, d = 128, n = 64 slots, p = 64, both cycles); median CPU
seconds (time.process_time) over ``--repeats`` calls, one BLAS thread (compute_probes limits it itself). The live
plane: ``trainables.artifacts.render_info_plane`` on a 3-probe-epoch history (wall seconds, PNG at 100 dpi).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

SETS = [("auto",), ("gaussian", "ksg"), ("auto", "gaussian", "ksg")]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    from bma.info.probes import compute_probes
    from tests.info.synthetic import make_probe_inputs

    inp = make_probe_inputs(n=1000, d=128, slots=64, classes=10, seed=0)
    compute_probes(inp, estimators=("auto",))  # imports and first-call caches out of the timings
    out = {}
    print(f"load average {os.getloadavg()[0]:.1f}\n\n| estimators | metrics | CPU s (median) | min | max |\n"
          "|---|---:|---:|---:|---:|")
    for ests in SETS:
        times, n_metrics = [], 0
        for seed in range(args.repeats):
            t0 = time.process_time()
            n_metrics = len(compute_probes(inp, estimators=ests, seed=seed))
            times.append(time.process_time() - t0)
        out["+".join(ests)] = statistics.median(times)
        print(f"| {' + '.join(ests)} | {n_metrics} | {statistics.median(times):.2f} | {min(times):.2f} | "
              f"{max(times):.2f} |")
    from tests.info.test_live_plane import history
    from trainables.artifacts import render_info_plane

    walls = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as folder:
            t0 = time.perf_counter()
            render_info_plane(history(), Path(folder), "bma", 0.1, 2000)
            walls.append(time.perf_counter() - t0)
    out["live_plane"] = statistics.median(walls)
    print(f"\nlive plane (render_info_plane, 3 probe epochs): median {statistics.median(walls):.2f} s wall "
          f"(min {min(walls):.2f}); load average {os.getloadavg()[0]:.1f}")
    return out


if __name__ == "__main__":
    main()
