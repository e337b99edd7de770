"""KSG neighbour search: speed and agreement of our tree / brute-force searches against ``infomeasure``.

    nice -n 10 .venv/bin/python benchmarks/ksg_speed.py                 # d = 1..50 per side, N = 1000 and 5000
    .venv/bin/python benchmarks/ksg_speed.py --sizes 1000 --dims 1,5    # a quick look

For each per-side dimension d and sample size N: x, y each (N, d), coordinate-wise correlated Gaussians with
true I = 0.5 d nats (capped: rho^2 = 1 - exp(-1)). Timed, wall clock, best of ``--repeats``, one thread each:
  tree         our KSG, max-norm, cKDTree search (``algorithm="tree"``)
  brute        our KSG, max-norm, blocked brute force (``algorithm="brute"``)
  auto         our KSG, max-norm, the default choice (tree up to a joint dimension of TREE_MAX_JOINT_DIM)
  euclidean    our KSG, Euclidean metric (brute force: the only search for it)
  infomeasure  infomeasure.mutual_information(approach="ksg", minkowski_p=inf), the reference (scipy KDTree)
  im_p2        infomeasure with minkowski_p=2: the L2 norm of the *joint* vector (not max(d_x, d_y))
Agreement: |tree - infomeasure| and |brute - infomeasure| on the same data without standardisation or noise
(same algorithm: they must agree to rounding), and every estimate next to the truth.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bma.info.estimators.knn import KSG, TREE_MAX_JOINT_DIM  # noqa: E402


def sample(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    rho2 = 1.0 - math.exp(-1.0)  # 0.5 nats per coordinate pair
    x = rng.standard_normal((n, d))
    y = math.sqrt(rho2) * x + math.sqrt(1.0 - rho2) * rng.standard_normal((n, d))
    return x, y, -0.5 * d * math.log(1.0 - rho2)


def timed(fn, repeats: int) -> tuple[float, float]:
    best, value = math.inf, math.nan
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return float(value), best


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="1,2,3,5,10,25,50", help="per-side dimensions")
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--no-infomeasure", action="store_true", help="skip the reference (slow at high d)")
    args = parser.parse_args(argv)
    import infomeasure as im
    from threadpoolctl import threadpool_limits

    rows = []
    print(f"load average {os.getloadavg()[0]:.1f}; k = {args.k}; best of {args.repeats}; TREE_MAX_JOINT_DIM = "
          f"{TREE_MAX_JOINT_DIM}\n")
    print("| d per side | N | true | tree s | brute s | auto s | euclidean s | infomeasure s | tree / brute | "
          "infomeasure / auto | max abs diff vs infomeasure | tree | euclidean | infomeasure p=2 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with threadpool_limits(limits=1, user_api="blas"):
        for n in [int(s) for s in args.sizes.split(",")]:
            for d in [int(s) for s in args.dims.split(",")]:
                x, y, true = sample(n, d, seed=d)
                kw = {"k": args.k, "noise": 0.0, "standardize": False}
                tree, t_tree = timed(lambda: KSG(algorithm="tree", **kw).estimate(x, y).value, args.repeats)
                brute, t_brute = timed(lambda: KSG(algorithm="brute", **kw).estimate(x, y).value, args.repeats)
                auto, t_auto = timed(lambda: KSG(**kw).estimate(x, y).value, args.repeats)
                euc, t_euc = timed(lambda: KSG(metric="euclidean", **kw).estimate(x, y).value, args.repeats)
                if args.no_infomeasure:
                    ref = t_ref = p2 = math.nan
                else:
                    ref, t_ref = timed(lambda: im.mutual_information(x, y, approach="ksg", k=args.k, noise_level=0),
                                       1)
                    p2 = im.mutual_information(x, y, approach="ksg", k=args.k, noise_level=0, minkowski_p=2)
                diff = max(abs(tree - ref), abs(brute - ref), abs(auto - ref))
                row = dict(d=d, n=n, true=true, tree=tree, brute=brute, auto=auto, euclidean=euc, infomeasure=ref,
                           im_p2=p2, t_tree=t_tree, t_brute=t_brute, t_auto=t_auto, t_euclidean=t_euc, t_ref=t_ref,
                           diff=diff)
                rows.append(row)
                print(f"| {d} | {n} | {true:.2f} | {t_tree:.3f} | {t_brute:.3f} | {t_auto:.3f} | {t_euc:.3f} | "
                      f"{t_ref:.3f} | {t_tree / t_brute:.2f} | {t_ref / t_auto:.2f} | {diff:.1e} | {tree:.3f} | "
                      f"{euc:.3f} | {p2:.3f} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f}")
    return rows


if __name__ == "__main__":
    main()
