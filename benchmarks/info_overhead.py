"""Cost of live information monitoring: the same trial with the probes off, at the default cadence, and every epoch.

    python benchmarks/info_overhead.py            # N=2000, 10 epochs, bma, 3 settings side by side (~4 min, 2 CPUs)
    python benchmarks/info_overhead.py --quick    # N=500, 4 epochs

Prints, for each setting, training time (sum of time/epoch_s), probe time (sum of time/info_s) and the ratio
probe/training, plus whole-fit wall time and its ratio to the probes-off fit. The target (issue 4) is <= ~15 % of
training time at the default settings (eval.info_every, eval.info_samples, eval.info_estimators).
"""

from __future__ import annotations

import argparse
import time

from bma.config import TrialConfig
from bma.trainer import fit, load_trial_data


def run(cfg: TrialConfig, data) -> dict:
    t0 = time.perf_counter()
    result = fit(cfg, data=data)
    wall = time.perf_counter() - t0
    train = sum(h["time/epoch_s"] for h in result.history)
    info = sum(h.get("time/info_s", 0.0) for h in result.history)
    calls = sum(1 for h in result.history if "time/info_s" in h)
    return {"wall": wall, "train": train, "info": info, "calls": calls, "n_info": result.final.get("info/n_samples", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    base = TrialConfig().with_updates(
        variant="bma", pairing_ratio=0.1, train_size=500 if args.quick else 2000, epochs=4 if args.quick else 10,
    )
    data = load_trial_data(base)
    default = TrialConfig().eval
    settings = {
        "off (info_every=0)": base.with_updates(**{"eval.info_every": 0}),
        f"default (every {default.info_every}, {'+'.join(default.info_estimators)})": base,
        "every epoch": base.with_updates(**{"eval.info_every": 1}),
        "every epoch + infonce critic": base.with_updates(**{"eval.info_every": 1, "eval.info_estimators": ["gaussian", "ksg", "infonce"]}),
    }
    rows = {name: run(cfg, data) for name, cfg in settings.items()}
    off = rows["off (info_every=0)"]["wall"]
    print(f"\nN={base.regime.train_size}, epochs={base.optim.epochs}, info samples <= {base.eval.info_samples} "
          f"(test pairs available: {int(max(r['n_info'] for r in rows.values()))})\n")
    print("| setting | probe calls | training s | probe s | probe / training | fit wall s | wall / off |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        ratio = r["info"] / r["train"] if r["train"] else float("nan")
        print(f"| {name} | {r['calls']} | {r['train']:.1f} | {r['info']:.1f} | {100 * ratio:.1f} % | {r['wall']:.1f} | {r['wall'] / off:.2f} |")


if __name__ == "__main__":
    main()
