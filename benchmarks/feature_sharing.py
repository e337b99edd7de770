"""Resident memory of trials that read one data setting's features through Ray's object store, with 1 and with 2
concurrent trials, with Ray's zero-copy torch tensors on (what study/run.py sets) and off (a pickled copy each).

    BMA_CACHE_DIR=/tmp/bma-cache .venv/bin/python benchmarks/feature_sharing.py

Each "trial" is a Ray task with the study's resources ({cpu: 1}) that does what a trial does before training:
fetch the TrialData (ray.get, as trainables.bma_trainable does) and build its regime (bma.trainer.make_regime,
the trial's own tensors), then read every page of the features. It reports its RSS and its USS (pages no other process shares, from /proc/self/smaps_rollup) after that,
less the same worker's figures before the fetch. A copy of the features shows in USS; shared object-store pages
do not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def memory_mib() -> tuple[float, float]:
    """(RSS, USS) of this process in MiB, from /proc/self/smaps_rollup (USS: private clean + dirty pages)."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0]) / 1024
    return fields["Rss"], fields["Private_Clean"] + fields["Private_Dirty"]


def child(zero_copy: bool) -> None:
    os.environ["RAY_ENABLE_ZERO_COPY_TORCH_TENSORS"] = "1" if zero_copy else "0"
    import ray

    from bma.config import TrialConfig
    from bma.trainer import load_trial_data

    cfg = TrialConfig().with_updates(train_size=1000, pairing_ratio=0.1)
    data = load_trial_data(cfg)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": os.environ["RAY_ENABLE_ZERO_COPY_TORCH_TENSORS"]}})
    ref = ray.put(data)

    @ray.remote(num_cpus=1)
    def trial(refs, seed: int, hold: float):
        import bma.trainer  # noqa: F401  (the trial's imports, before the baseline)
        from bma.trainer import make_regime

        rss0, uss0 = memory_mib()
        d = ray.get(refs[0])
        regime = make_regime(cfg.with_updates(seed=seed), d)
        # read every page of the features (as evaluation on the test splits and pool sampling do over a trial)
        total = sum(float(fs.x.sum()) for fs in (d.image_train, d.image_test, d.sound_train, d.sound_test))
        assert total == total
        rss1, uss1 = memory_mib()
        time.sleep(hold)  # stay alive so that concurrent trials overlap
        del regime
        return rss1 - rss0, uss1 - uss0

    for n in (1, 2):
        out = ray.get([trial.remote([ref], s, 2.0) for s in range(n)])
        rss = sum(r for r, _ in out)
        uss = sum(u for _, u in out)
        print(f"| {'on' if zero_copy else 'off'} | {n} | {rss:.0f} | {uss:.0f} | {uss / n:.0f} |", flush=True)
    ray.shutdown()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in ("--child-on", "--child-off"):
        child(sys.argv[1] == "--child-on")
        return 0
    from bma.config import TrialConfig
    from bma.trainer import load_trial_data

    data = load_trial_data(TrialConfig())  # warm the cache; and the size of what is shared
    import torch

    tensors = [data.image_train.x, data.image_test.x, data.sound_train.x, data.sound_test.x]
    size = sum(t.numel() * t.element_size() for t in tensors) / 2**20
    print(f"features of one data setting (MNIST + FSDD): {size:.0f} MiB in {len(tensors)} tensors; torch {torch.__version__}")
    print("| zero-copy tensors | concurrent trials | RSS added, all trials MiB | USS added, all trials MiB | USS per trial MiB |")
    print("|---|---|---|---|---|")
    for flag in ("--child-off", "--child-on"):
        proc = subprocess.run([sys.executable, __file__, flag], capture_output=True, text=True, timeout=600)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-3000:])
            return proc.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
