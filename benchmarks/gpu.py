"""GPU check: a trial's training step on CUDA with AMP off and on, and study throughput with 1, 2 and 4 trials per
GPU (resources.gpu 1, 0.5, 0.25). Prints the ratios. One short run (under 5 minutes on one GPU):

    BMA_CACHE_DIR=/tmp/bma-cache .venv/bin/python benchmarks/gpu.py              # on a machine with a GPU
    .venv/bin/python benchmarks/gpu.py --dry-run --fractions 1                   # the same code path on the CPU

(1) step cost: bma.trainer.fit of one bma trial with a step budget (optim.steps), batch 256, evaluation at the end
    only; the trainer's time/epoch_s of the round (training only) over its steps gives seconds per step, once with
    amp false and once with amp true (bf16 autocast), after a warm-up trial that pays CUDA's start-up.
(2) throughput: study/run.py on a 4-trial spec (bma x 4 seeds) with resources.gpu 1, 0.5 and 0.25 (1, 2, 4 trials
    on the GPU at once), each in an empty folder; trials per minute by wall clock, and each fraction's ratio to
    gpu 1. The CPU share per trial is the machine's CPUs / 4 so the CPUs never decide the packing.
(3) where a step's time goes (--profile-steps, default 50): one round of training under torch.profiler; the
    device's kernel time per step against the unprofiled step of (1), kernel launches and host-device
    synchronisations per step, and the operators that cost the host most.
--dry-run runs all three on the CPU with tiny sizes (device cpu; in the study, resources.cpu takes the fraction's
place) so the script is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RUN = REPO / "study" / "run.py"

SPEC = """\
name: gpu-{tag}
data: {{image: {{source: mnist}}, sound: {{source: fsdd}}}}
grid:
  variant: [bma]
  seed: {seeds}
trial: {trial}
resources: {{cpu: {cpu}, gpu: {gpu}}}
"""


def step_cost(device: str, amp: bool, steps: int, batch: int, train_size: int) -> float:
    """Seconds per training step of one bma trial (the trainer's own time/epoch_s over its steps)."""
    from bma.config import TrialConfig
    from bma.trainer import fit, load_trial_data

    cfg = TrialConfig().with_updates(**{
        "variant": "bma", "train_size": train_size, "optim.steps": steps, "optim.round_steps": steps,
        "batch_size": batch, "eval.info_every": 0, "eval.probe_max_iter": 20, "amp": amp, "device": device})
    data = load_trial_data(cfg)
    result = fit(cfg, data=data, device=device)
    return result.history[0]["time/epoch_s"] / steps


def profile_steps(device: str, steps: int, batch: int, train_size: int) -> dict:
    """One round of ``steps`` training steps under torch.profiler. The trainer's round function is wrapped for the
    length of one fit, so the data load, the model's construction and the final evaluation stay outside the
    profile."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    import bma.trainer as trainer
    from bma.config import TrialConfig

    cfg = TrialConfig().with_updates(**{
        "variant": "bma", "train_size": train_size, "optim.steps": steps, "optim.round_steps": steps,
        "batch_size": batch, "eval.info_every": 0, "eval.probe_max_iter": 20, "amp": False, "device": device})
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    real_round, box = trainer._train_epoch, {}

    def profiled_round(*args, **kwargs):
        with profile(activities=activities) as prof:
            out = real_round(*args, **kwargs)
            if device == "cuda":
                torch.cuda.synchronize()
        box["events"] = prof.key_averages()
        return out

    trainer._train_epoch = profiled_round
    try:
        trainer.fit(cfg, data=trainer.load_trial_data(cfg), device=device)
    finally:
        trainer._train_epoch = real_round
    events = box["events"]
    # the device's own events (kernels, copies, fills): an operator's self device time repeats its kernels', and a
    # user annotation (the optimizer's step) spans others, so both are left out of the sum
    on_device = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_user_annotation]
    kernel_us = sum(e.self_device_time_total for e in on_device)
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel"))
    # a read of a device value on the host (.item(), float(tensor), a branch on a tensor) waits for the device
    # (on CUDA each read is one aten::_local_scalar_dense: a copy to the host and a stream synchronisation)
    syncs = sum(e.count for e in events if e.key == "aten::_local_scalar_dense")
    top = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: e.self_cpu_time_total,
                 reverse=True)[:8]
    kernels = sorted(on_device, key=lambda e: e.self_device_time_total, reverse=True)[:8]
    return {"kernel_ms": kernel_us / 1e3 / steps, "launches": launches / steps, "syncs": syncs / steps,
            "top": [(e.key, e.self_cpu_time_total / 1e3 / steps, e.count / steps) for e in top],
            "kernels": [(e.key[:70], e.self_device_time_total / 1e3 / steps, e.count / steps) for e in kernels]}


def study_throughput(fraction: float, dry_run: bool, n_trials: int, trial: dict, cpus: int) -> dict:
    """Wall clock of a n_trials study with resources.gpu = fraction (dry run: resources.cpu = fraction)."""
    with tempfile.TemporaryDirectory(prefix="bma-gpu-") as folder:
        tag = f"f{fraction:g}".replace(".", "p")
        if dry_run:
            cpu, gpu = fraction, 0
        else:
            cpu, gpu = max(cpus // 4, 1), fraction
        spec = Path(folder) / "spec.yaml"
        spec.write_text(SPEC.format(tag=tag, seeds=json.dumps(list(range(n_trials))), trial=json.dumps(trial),
                                    cpu=cpu, gpu=gpu))
        command = [sys.executable, str(RUN), str(spec)] + (["--num-cpus", "1"] if dry_run else [])
        t0 = time.perf_counter()
        proc = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"study at fraction {fraction} failed (exit {proc.returncode}):\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return {"fraction": fraction, "trials": n_trials, "wall_s": wall, "per_minute": 60 * n_trials / wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="on the CPU, tiny sizes (tests the script without a GPU)")
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25], help="resources.gpu values")
    p.add_argument("--trials", type=int, default=4, help="trials per throughput study")
    p.add_argument("--profile-steps", type=int, default=50, help="steps in the profiled round of (3); 0: no profile")
    p.add_argument("--no-throughput", action="store_true", help="skip (2), the study throughput")
    args = p.parse_args(argv)

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device; run on a machine with a GPU, or pass --dry-run", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else "cuda"
    steps, batch, size = (5, 32, 200) if args.dry_run else (300, 256, 2000)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; device {device}"
          + (f" ({torch.cuda.get_device_name(0)})" if device == "cuda" else "") + f"; {os.cpu_count()} CPUs")

    step_cost(device, False, steps, batch, size)  # warm-up: CUDA context, cuDNN autotuning, the feature cache
    off = step_cost(device, False, steps, batch, size)
    on = step_cost(device, True, steps, batch, size)
    print(f"\n(1) step cost, bma, batch {batch}, {steps} steps: amp off {off * 1e3:.2f} ms, amp on {on * 1e3:.2f} ms, "
          f"on / off = {on / off:.2f}" + ("  (CPU: autocast is CUDA-only, so ~1.00 expected)" if args.dry_run else ""))

    if args.profile_steps:
        n = min(args.profile_steps, steps)
        prof = profile_steps(device, n, batch, size)
        print(f"\n(3) one profiled round of {n} steps (amp off): device busy (kernels and copies) {prof['kernel_ms']:.2f} ms per step "
              f"against {off * 1e3:.2f} ms per step unprofiled (busy share {prof['kernel_ms'] / (off * 1e3):.2f}); "
              f"{prof['launches']:.0f} kernel launches and {prof['syncs']:.1f} host reads of device values per step")
        print("| operator | host ms / step | calls / step |")
        print("|---|---|---|")
        for name, ms, calls in prof["top"]:
            print(f"| {name} | {ms:.3f} | {calls:.1f} |")
        if prof["kernels"]:
            print("| device kernel | device ms / step | launches / step |")
            print("|---|---|---|")
            for name, ms, calls in prof["kernels"]:
                print(f"| {name} | {ms:.3f} | {calls:.1f} |")
    if args.no_throughput:
        return 0

    trial = ({"train_size": size, "steps": steps, "round_steps": steps, "batch_size": batch,
              "eval": {"info_every": 0, "probe_max_iter": 20}} | ({"device": "cpu"} if args.dry_run else {}))
    rows = [study_throughput(f, args.dry_run, args.trials, trial, os.cpu_count() or 1) for f in args.fractions]
    base = rows[0]["per_minute"]
    print(f"\n(2) study throughput, {args.trials} trials of {steps} steps each"
          + (" (dry run: resources.cpu in place of resources.gpu)" if args.dry_run else ""))
    print("| resources.gpu | trials at once | wall s | trials / min | ratio to the first |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fraction']:g} | {int(round(1 / r['fraction']))} | {r['wall_s']:.1f} | {r['per_minute']:.2f} | "
              f"{r['per_minute'] / base:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
