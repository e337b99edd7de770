"""Retrain one recorded trial from its MLflow params with the code of this checkout, and compare final metrics.

    python study/reproduce.py --study boost --tracking-uri sqlite:///mlflow.db \\
        --where model.variant=bma regime.pairs=50 regime.unpaired_images=2000 regime.seed=0

A trial is rebuilt from its record alone (``TrialConfig.from_flat(run.params)``: every setting is logged), trained
in this process with the torch thread count the trial ran with (its ``bma.torch_threads`` tag; a float sum's order
depends on it), and its final metrics are printed next to the recorded ones. The store is only read: it must exist
(analysis/store.py opens it read-only; nothing is created or migrated). Exit 0 when every compared metric is equal
within --tolerance, 1 when one differs, 2 on bad input.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout
from bma import record as R  # noqa: E402

DEFAULT_METRICS = ("acc/sound_probe_h/k5", "acc/sound_probe_h/k20", "acc/image_probe_h/k5", "loss/total")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python study/reproduce.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True)
    p.add_argument("--tracking-uri", default=None, help=f"default $MLFLOW_TRACKING_URI, else {R.DEFAULT_TRACKING_URI}")
    p.add_argument("--where", nargs="+", default=[], metavar="PARAM=VALUE", help="params that pick one trial run")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    p.add_argument("--tolerance", type=float, default=0.0, help="largest accepted |now - recorded|")
    args = p.parse_args(argv)
    args.tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or R.DEFAULT_TRACKING_URI

    from bma.config import ConfigError, TrialConfig
    from analysis.store import StoreError, open_read_only

    try:
        client = open_read_only(args.tracking_uri)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    exp = client.get_experiment_by_name(args.study)
    if exp is None:
        print(f"error: --study {args.study}: no such experiment in {args.tracking_uri}", file=sys.stderr)
        return 2
    try:
        wanted = dict(item.split("=", 1) for item in args.where)
    except ValueError:
        print("error: --where: expected PARAM=VALUE items", file=sys.stderr)
        return 2
    runs = [r for r in client.search_runs([exp.experiment_id], f"tags.`{R.ROLE}` = '{R.ROLE_TRIAL}' and attributes.status = 'FINISHED'",
                                          max_results=50_000)
            if all(r.data.params.get(k) == v for k, v in wanted.items())]
    if len(runs) != 1:
        print(f"error: --where {args.where}: matches {len(runs)} finished trial runs, expected exactly one", file=sys.stderr)
        return 2
    run = runs[0]
    try:
        cfg = TrialConfig.from_flat(run.data.params)
    except ConfigError as exc:
        print(f"error: run {run.info.run_id}: its params no longer make a trial configuration:\n  {exc}", file=sys.stderr)
        return 2
    import torch

    from bma.trainer import fit

    threads = run.data.tags.get(R.THREADS)
    if threads is not None and threads.isdigit() and int(threads) >= 1:
        torch.set_num_threads(int(threads))
        print(f"training with {threads} torch thread(s), as the trial did")
    else:
        print(f"note: run {run.info.run_id} does not record its torch thread count ({R.THREADS}); training with "
              f"this process's {torch.get_num_threads()}: the last digits may differ", file=sys.stderr)
    final = fit(cfg).final
    differ = 0
    for name in args.metrics:
        now, recorded = final.get(name, math.nan), run.data.metrics.get(name, math.nan)
        same = abs(now - recorded) <= args.tolerance
        differ += not same
        print(f"{name:32s} now {now:.6g}  recorded {recorded:.6g}  {'same' if same else 'DIFFERS'}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
