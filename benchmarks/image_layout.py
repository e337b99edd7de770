"""What an image tensor's strides cost a trial: the same bma trial, in-process, one torch thread, with its MNIST
features laid out as loaded (channels-last strides) and as Ray's zero-copy tensors deliver them (standard strides).

    BMA_CACHE_DIR=/tmp/bma-cache .venv/bin/python benchmarks/image_layout.py [--repeats 3] [--unpinned]

``--unpinned`` times the trial without bma.trial_data's own layout (channels_last replaced by the identity): the
difference the fix removed. Prints seconds per fit (best of the repeats), their ratio, and whether the final
metrics are equal.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--unpinned", action="store_true", help="without bma.trial_data.channels_last (the old layout)")
    args = p.parse_args(argv)

    import torch

    import bma.trial_data
    from bma.config import TrialConfig
    from bma.trainer import fit, load_trial_data

    torch.set_num_threads(1)
    if args.unpinned:
        bma.trial_data.channels_last = lambda x: x
    cfg = TrialConfig().with_updates(train_size=200, epochs=2, variant="bma", **{"eval.info_every": 0})
    loaded = load_trial_data(cfg)
    standard = dataclasses.replace(loaded, **{
        name: dataclasses.replace(getattr(loaded, name), x=getattr(loaded, name).x.clone(
            memory_format=torch.contiguous_format)) for name in ("image_train", "image_test")})
    fit(cfg.with_updates(seed=9), data=loaded, device="cpu")  # warm-up
    rows = {}
    for label, data in (("as loaded", loaded), ("standard strides", standard)):
        times, final = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            final = fit(cfg, data=data, device="cpu").final
            times.append(time.perf_counter() - t0)
        rows[label] = (min(times), {k: v for k, v in final.items() if not k.startswith("time/")})
        print(f"{label:18s} strides {data.image_train.x.stride()}  fit {min(times):.2f} s (best of {args.repeats})")
    (a, fa), (b, fb) = rows.values()
    same = sum(fa[k] != fb.get(k) for k in fa)
    print(f"standard / as loaded: {b / a:.2f}; final metrics that differ: {same} of {len(fa)}"
          f"{' (channels_last disabled)' if args.unpinned else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
