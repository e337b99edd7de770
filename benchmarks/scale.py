"""Feature pools of 1K, 10K and 100K samples per modality: a trial's private memory, set-up time and step time.

    nice -n 10 .venv/bin/python benchmarks/scale.py                        # 1K, 10K, 100K (~10 GB in --dir)
    .venv/bin/python benchmarks/scale.py --sizes 1000 10000 --steps 4     # a quicker look

Synthetic features of the real shapes: MNIST-like images float32 (N, 1, 28, 28) (3.1 KB a sample) and 5-s
spectrograms at the default FeatureConfig (8 kHz, hop 64, 40 mels): float32 (N, 1, 40, 626) (100 KB a sample), 10
classes, each sample its class's pattern plus noise. For every size:

1. **cache build**: the four cache entries (train N per modality, test 500) written through the feature store's
   writer (bma.data.cache_files.EntryWriter: temporary map, fsync, rename, commit record), as an extraction writes
   them. The real extraction's own cost (audio decode, mel) comes on top and is linear in N too.
2. one **trial** per storage mode in a fresh process: `mapped` (the entries memory-mapped, rows gathered per batch:
   what a pool above the in-memory threshold gets) and, where it fits this machine, `in-memory` (entries read into
   memory, the regime's rows gathered up front: today's path below the threshold). The trial opens the entries,
   builds its regime (train_size = N - 200 validation, pairing 0.1) and TrialTensors, the bma model and optimiser
   (**set-up**), runs 2 warm-up steps, then ``--rounds`` timed rounds of ``--steps`` steps of the training loop
   (bma.trainer._train_epoch, batch ``--batch``, one torch thread): **step** = the median round / steps.

Memory is read from /proc/self/smaps_rollup. **private** = ``Anonymous`` added by the trial's set-up and steps:
memory no other process can share and the kernel cannot drop (tensors, heap). ``USS`` (Private_Clean +
Private_Dirty) also counts the clean file pages of a map that only this process has touched: page cache, dropped
under pressure and shared with every other trial that maps the same file, so not a per-trial cost; ``PSS`` divides
shared pages between the processes that map them. In the in-memory mode the pool itself would sit in Ray's object
store, one shared copy per node: the columns exclude it (the figures are taken after the entries are read), and
the 'pool in memory' column gives its size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

IMAGE_SHAPE = (1, 28, 28)
SOUND_SHAPE = (1, 40, 626)  # 5 s at 8 kHz, hop 64: floor(40000 / 64) + 1 frames, 40 mels
TEST_N = 500
CLASSES = 10
IN_MEMORY_LIMIT_GB = 4.0  # the in-memory mode needs the pool + the regime's copy of it: skip it above this


def smaps() -> dict[str, float]:
    """This process's memory in MiB; freed heap is handed back to the system first (malloc_trim), so the figures
    are what the process holds, not what glibc kept after the last step's activations."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0]) / 1024  # MiB
    out["USS"] = out["Private_Clean"] + out["Private_Dirty"]
    return out


def build_pool(folder: Path, n: int, seed: int = 0) -> float:
    """The four entries of a synthetic pool of ``n`` train samples per modality; returns the seconds it took."""
    import numpy as np

    from bma.data.cache_files import EntryWriter
    from bma.data.features import FEATURE_VERSION

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for kind, shape in (("images", IMAGE_SHAPE), ("sounds", SOUND_SHAPE)):
        patterns = rng.standard_normal((CLASSES, *shape), dtype=np.float32)
        for split, count in (("train", n), ("test", TEST_N)):
            y = np.tile(np.arange(CLASSES), -(-count // CLASSES))[:count]
            with EntryWriter(folder / f"{kind}-{split}.json", (count, *shape)) as w:
                chunk = max(1, (256 << 20) // (4 * int(np.prod(shape))))  # ~256 MiB at a time
                for start in range(0, count, chunk):
                    stop = min(count, start + chunk)
                    block = rng.standard_normal((stop - start, *shape), dtype=np.float32)
                    block += patterns[y[start:stop]]
                    w.x.numpy()[start:stop] = block
                w.commit(y, tuple(str(c) for c in range(CLASSES)), None, {}, key=f"{kind}-{split}",
                         version=FEATURE_VERSION)
    return time.perf_counter() - t0


def child(folder: Path, n: int, mode: str, steps: int, batch: int, rounds: int) -> dict:
    import torch

    torch.set_num_threads(1)
    import bma.trainer as trainer
    from bma.config import TrialConfig
    from bma.data.cache_files import read_entry
    from bma.data.features import open_set
    from bma.data.regimes import load_classmap
    from bma.losses import build_loss
    from bma.model import BMAMemory
    from bma.trial_data import TrialData, TrialTensors, make_regime

    os.environ["BMA_IN_MEMORY_MAX_MB"] = "0" if mode == "mapped" else "1000000"
    mapped = mode == "mapped"
    cfg = TrialConfig(device="cpu").with_updates(**{
        "regime.train_size": n - 20 * CLASSES, "regime.pairing_ratio": 0.1, "optim.batch_size": batch,
        "optim.steps": steps, "optim.round_steps": steps, "features.clip_seconds": 5.0})
    before = smaps()
    t0 = time.perf_counter()
    sets = {f"{kind[:5]}_{split}": open_set(read_entry(folder / f"{kind}-{split}.json"), mapped=mapped)
            for kind in ("images", "sounds") for split in ("train", "test")}
    opened_s = time.perf_counter() - t0
    after_open = smaps()
    classmap = load_classmap(None, sets["image_train"].classes, sets["sound_train"].classes)
    data = TrialData(sets["image_train"], sets["image_test"], sets["sound_train"], sets["sound_test"], classmap)
    regime = make_regime(cfg, data)
    t = TrialTensors(cfg, data, regime, torch.device("cpu"))
    model = BMAMemory(cfg.model, image_channels=1, num_classes=regime.num_classes)
    loss = build_loss(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    setup_s = time.perf_counter() - t0
    trainer._train_epoch(cfg.with_updates(**{"optim.steps": 2}), model, loss, optimizer, t, 1, torch.device("cpu"), 2)
    times = [trainer._train_epoch(cfg, model, loss, optimizer, t, 2 + r, torch.device("cpu"), steps)["time/epoch_s"]
             for r in range(rounds)]
    end = smaps()
    pool_mib = sum(fs.x.numel() * 4 for fs in sets.values()) / 2**20
    return {
        "n": n, "mode": mode, "lazy": type(t.x_snd).__name__ == "LazyRows",
        "open_s": opened_s, "setup_s": setup_s, "step_s": sorted(times)[len(times) // 2] / steps,
        "private_mib": end["Anonymous"] - after_open["Anonymous"],
        "uss_mib": end["USS"] - after_open["USS"], "pss_mib": end["Pss"] - before["Pss"],
        "pool_in_memory_mib": 0.0 if mapped else pool_mib, "pool_mib": pool_mib,
        "open_private_mib": after_open["Anonymous"] - before["Anonymous"],
    }


def readahead(folder: Path, n: int = 20000, batch: int = 128) -> None:
    """One epoch of random batches over a cold mapped pool of ``n`` 5-s spectrograms, with the kernel's default
    readahead and with madvise(MADV_RANDOM). The file's pages are dropped from the page cache before each run with
    posix_fadvise(DONTNEED): this file's pages only, nobody else's."""
    import mmap

    import numpy as np
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "readahead.npy"
    a = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, *SOUND_SHAPE))
    a[:] = 1.0
    a.flush()
    del a

    def read_bytes() -> int:
        return int(next(line for line in open("/proc/self/io") if line.startswith("read_bytes")).split(":")[1])

    print(f"| madvise | epoch s | read GiB | batch median ms |  (cold {path.stat().st_size / 2**30:.2f} GiB pool, "
          f"{n} rows, batches of {batch})\n|---|---:|---:|---:|")
    try:
        for name, advice in (("default", None), ("MADV_RANDOM", mmap.MADV_RANDOM)) * 2:
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
            m = np.load(path, mmap_mode="c")
            if advice is not None:
                m._mmap.madvise(advice)
            x = torch.from_numpy(m)
            perm = torch.from_numpy(np.random.default_rng(0).permutation(n))
            before, t0, times = read_bytes(), time.perf_counter(), []
            for start in range(0, n, batch):
                t1 = time.perf_counter()
                x[perm[start:start + batch]]
                times.append(time.perf_counter() - t1)
            print(f"| {name} | {time.perf_counter() - t0:.1f} | {(read_bytes() - before) / 2**30:.2f} | "
                  f"{sorted(times)[len(times) // 2] * 1000:.0f} |")
            del x, m
    finally:
        path.unlink(missing_ok=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--steps", type=int, default=3, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds; step = the median round / steps")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dir", default="/tmp/bma-scale-bench")
    p.add_argument("--keep", action="store_true", help="keep the pools in --dir (default: delete each after use)")
    p.add_argument("--readahead", action="store_true",
                   help="only: one epoch of random batches over a cold 2 GB map, default readahead vs MADV_RANDOM")
    p.add_argument("--child", nargs=3, metavar=("FOLDER", "N", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        folder, n, mode = args.child
        print(json.dumps(child(Path(folder), int(n), mode, args.steps, args.batch, args.rounds)))
        return 0

    root = Path(args.dir)
    if args.readahead:
        readahead(root)
        return 0
    need = max(args.sizes) * 4 * (28 * 28 + 40 * 626) / 1e9
    free = shutil.disk_usage(root.parent if not root.exists() else root).free / 1e9
    if need > free - 5:
        print(f"error: the largest pool needs {need:.1f} GB in {root}, {free:.1f} GB free", file=sys.stderr)
        return 2
    rows = []
    for n in args.sizes:
        folder = root / f"pool-{n}"
        shutil.rmtree(folder, ignore_errors=True)
        build_s = build_pool(folder, n)
        pool_gb = (n + TEST_N) * 4 * (28 * 28 + 40 * 626) / 1e9
        modes = ["mapped"] + (["in-memory"] if 2 * pool_gb <= IN_MEMORY_LIMIT_GB else [])
        for mode in modes:
            out = subprocess.run([sys.executable, __file__, "--child", str(folder), str(n), mode, "--steps",
                                  str(args.steps), "--rounds", str(args.rounds), "--batch", str(args.batch)], capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                return 1
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["build_s"] = build_s
            rows.append(row)
            print(f"# {json.dumps(row)}", flush=True)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    first = {r["mode"]: r for r in rows if r["n"] == args.sizes[0]}
    print(f"\nbatch {args.batch}, step = median of {args.rounds} rounds of {args.steps} steps, one torch thread; images {IMAGE_SHAPE}, sounds "
          f"{SOUND_SHAPE} float32; ratios to the {args.sizes[0]:,} row of the same mode\n")
    print("| samples per modality | mode | pool GB | cache build s | build / 1st | trial set-up s | set-up / 1st "
          "| step s | step / 1st | private MiB | private / 1st | USS MiB | PSS MiB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        f = first[r["mode"]]
        ratio = lambda k: r[k] / f[k] if f[k] else float("nan")  # noqa: E731
        print(f"| {r['n']:,} | {r['mode']} | {r['pool_mib'] * 2**20 / 1e9:.2f} | {r['build_s']:.1f} | "
              f"{ratio('build_s'):.1f} | {r['setup_s']:.2f} | {ratio('setup_s'):.2f} | {r['step_s']:.3f} | "
              f"{ratio('step_s'):.2f} | {r['private_mib']:.0f} | {ratio('private_mib'):.2f} | {r['uss_mib']:.0f} | "
              f"{r['pss_mib']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
