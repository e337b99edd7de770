"""How many labelled draws a label-budget probe needs (eval.label_draws), and what they cost next to training.

    .venv/bin/python benchmarks/label_draws.py            # ~3 min on 2 cores (one boost cell trained once)

Trains one cell of study/specs/boost.yaml (bma, 50 pairs, 10,000 unpaired images, 1,000 unpaired sounds, 300 steps,
seed 0) on the real MNIST + FSDD features, then fits the 5-label sound probe on h_s for 32 independent labelled
draws (bma.data.regimes.label_draws, outside the pairs) and prints, side by side:
- the sd of one draw's accuracy (the labelled-set noise a single-draw probe carried), and the sd of the mean of R
  draws, sd / sqrt(R), for R = 1, 2, 4, 8, 16, next to the across-seed sd of the boost study's cells;
- CPU seconds of training and of the evaluation round with R draws (all probes: f and h, both modalities, budgets
  1, 5, 20), and their ratio.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=32)
    args = parser.parse_args(argv)
    import torch

    from bma.config import TrialConfig
    from bma.evaluation import embed, evaluate, fit_probe
    from bma.trainer import fit, load_trial_data, make_regime
    from bma.trial_data import TrialTensors
    from study.spec import load_spec

    torch.set_num_threads(1)
    spec = load_spec(os.path.join(os.path.dirname(__file__), "..", "study", "specs", "boost.yaml"))
    cfg = TrialConfig.from_flat({**spec.base, "model.variant": "bma", "regime.unpaired_images": 10000,
                                 "regime.seed": 0, "eval.info_every": 0, "device": "cpu"})
    data = load_trial_data(cfg)
    kept = {}
    t0 = time.process_time()
    fit(cfg, lambda e, m, s: kept.update(model=s.model), data=data)
    train_s = time.process_time() - t0
    model = kept["model"]
    regime = make_regime(cfg, data)
    device = torch.device("cpu")

    many = cfg.with_updates(**{"eval.label_draws": args.draws})
    t = TrialTensors(many, data, regime, device)
    emb = embed(model, t.eval_split["x_snd_budget"], "sound", device)
    y = t.eval_split["y_snd_budget"].numpy()
    test = embed(model, t.eval_split["x_snd_test"], "sound", device)
    y_test = t.eval_split["y_snd_test"].numpy()
    per_draw = np.array([float((fit_probe(emb["h_s"][m], y[m], cfg.eval.probe_max_iter).predict(test["h_s"])
                                == y_test).mean()) for m in t.eval_split["snd_budget_masks"][5]])
    sd1 = per_draw.std(ddof=1)
    print(f"load average {os.getloadavg()[0]:.1f}; acc/sound_probe_h/k5 over {args.draws} draws: mean "
          f"{per_draw.mean():.4f}, sd of one draw {sd1:.4f} (test set {len(y_test)} clips)\n")
    print("| R draws | sd of the probe's mean over draws | eval round CPU s | eval / training |")
    print("|---:|---:|---:|---:|")
    out = {"sd_one_draw": sd1, "train_s": train_s}
    for r in (1, 2, 4, 8, 16):
        tr = TrialTensors(cfg.with_updates(**{"eval.label_draws": r}), data, regime, device)
        t0 = time.process_time()
        evaluate(model, tr.eval_split, cfg.eval.probe_max_iter, device)
        eval_s = time.process_time() - t0
        out[r] = (sd1 / np.sqrt(r), eval_s)
        print(f"| {r} | {sd1 / np.sqrt(r):.4f} | {eval_s:.1f} | {eval_s / train_s:.3f} |")
    print(f"\ntraining (300 steps): {train_s:.1f} CPU s")
    return out


if __name__ == "__main__":
    main()
