"""Accuracy of the MI (and k-NN entropy) estimators on tasks with a known answer.

    .venv/bin/python benchmarks/mi_accuracy.py --quick                  # < 2 min on 2 cores
    .venv/bin/python benchmarks/mi_accuracy.py --out benchmarks/results/mi_accuracy.csv   # full grid

A study is estimators x tasks x sample sizes x seeds; every run is one flat record (CSV at --out), and the Markdown
table on stdout aggregates them per (task, N, estimator): mean estimate, bias = mean - truth, std over seeds, and
mean run time. Tasks:
  gauss     x, y each d-dim, coordinate i of y correlated with coordinate i of x (rho); true I = -d/2 log(1 - rho^2),
            rho chosen so that I hits the requested level
  cubic     the gauss task with y -> y^3 and x -> exp(x): same true MI (invertible elementwise maps), non-Gaussian
  entropy   H(x) of a standard d-dim Gaussian, d/2 log(2 pi e), for the ``kl`` entropy estimator
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bma.info.estimators import get_entropy_estimator, get_mi_estimator  # noqa: E402


@dataclass(frozen=True)
class Task:
    family: str  # gauss | cubic | entropy
    dim: int
    true_mi: float  # nats (for entropy: the true H)

    @property
    def name(self) -> str:
        if self.family == "entropy":
            return f"entropy-d{self.dim}"
        return f"{self.family}-d{self.dim}-mi{self.true_mi:g}"

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, self.dim))
        if self.family == "entropy":
            return x, x
        rho = math.sqrt(1.0 - math.exp(-2.0 * self.true_mi / self.dim))
        y = rho * x + math.sqrt(1.0 - rho**2) * rng.standard_normal((n, self.dim))
        if self.family == "cubic":
            x, y = np.exp(x), y**3
        return x, y


def entropy_task(dim: int) -> Task:
    return Task("entropy", dim, 0.5 * dim * math.log(2 * math.pi * math.e))


@dataclass
class Record:
    task: str
    family: str
    dim: int
    n: int
    true: float
    estimator: str
    seed: int
    value: float
    train_value: float | None
    upper_bound: float | None
    seconds: float
    flags: str = ""


def run_one(task: Task, n: int, estimator: str, seed: int) -> Record:
    x, y = task.sample(n, seed)
    t0 = time.perf_counter()
    if task.family == "entropy":
        est = get_entropy_estimator(estimator, seed=seed).estimate(x)
    else:
        kwargs = {} if estimator in ("gaussian", "cca", "copula") else {"seed": seed}
        est = get_mi_estimator(estimator, **kwargs).estimate(x, y)
    seconds = time.perf_counter() - t0
    return Record(
        task.name, task.family, task.dim, n, task.true_mi, estimator, seed, est.value, est.train_value,
        est.upper_bound, seconds, " | ".join(est.flags),
    )


def grid(args: argparse.Namespace) -> tuple[list[Task], list[int], list[str], list[int]]:
    if args.smoke:
        dims, sizes, levels, cubic_dims, seeds = [2], [200], [0.5], [2], [0]
        mi_estimators, entropy_dims = ["gaussian", "ksg"], [2]
    elif args.quick:
        dims, sizes, levels, cubic_dims, seeds = [1, 5, 25], [1000], [0.0, 1.0], [1, 5], [0, 1, 2]
        mi_estimators = ["auto", "copula", "gaussian", "cca", "ksg", "infonce", "nwj", "mine", "smile"]
        entropy_dims = [1, 5, 25]
    else:
        dims, sizes, levels, cubic_dims, seeds = [1, 5, 25], [500, 1000, 5000], [0.0, 0.5, 2.0], [1, 5], [0, 1, 2, 3, 4]
        mi_estimators = ["auto", "copula", "gaussian", "cca", "ksg", "infonce", "nwj", "mine", "smile"]
        entropy_dims = [1, 5, 10, 25]
    if args.estimators:
        mi_estimators = args.estimators.split(",")
    if args.seeds:
        seeds = list(range(args.seeds))
    tasks = [Task("gauss", d, lv) for d in dims for lv in levels]
    tasks += [Task("cubic", d, 1.0) for d in cubic_dims]
    tasks += [entropy_task(d) for d in entropy_dims]
    return tasks, sizes, mi_estimators, seeds


def summarise(records: list[Record]) -> list[dict]:
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        groups.setdefault((r.task, r.n, r.estimator), []).append(r)
    rows = []
    for (task, n, estimator), rs in groups.items():
        flagged = sum(1 for r in rs if r.flags)
        ok = [r for r in rs if not r.flags]  # a flagged estimate has no value (NaN): counted, not averaged
        v = np.array([r.value for r in ok], dtype=float)
        tr = [r.train_value for r in rs if r.train_value is not None]
        rows.append(
            {
                "task": task,
                "N": n,
                "estimator": estimator,
                "true": rs[0].true,
                "mean": float(v.mean()) if len(v) else float("nan"),
                "bias": float(v.mean() - rs[0].true) if len(v) else float("nan"),
                "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "train_bias": float(np.mean(tr) - rs[0].true) if tr else float("nan"),
                "seconds": float(np.mean([r.seconds for r in rs])),
                "seeds": len(ok),
                "flagged": flagged,
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """Two pivot tables: bias +- std per (task, N) x estimator, and mean seconds per run per (dim, N) x estimator."""
    estimators = list(dict.fromkeys(r["estimator"] for r in rows if r["estimator"] != "kl"))
    has_kl = any(r["estimator"] == "kl" for r in rows)
    cols = estimators + (["kl"] if has_kl else [])
    cells: dict[tuple, dict[str, str]] = {}
    truth: dict[tuple, float] = {}
    for r in rows:
        key = (r["task"], r["N"])
        truth[key] = r["true"]
        text = f"{_num(r['bias'])} ± {_num(r['std'], signed=False)}"
        if r.get("flagged"):
            text = f"flagged {r['flagged']}/{r['flagged'] + r['seeds']}" if math.isnan(r["bias"]) else \
                f"{text} (flagged {r['flagged']})"
        cells.setdefault(key, {})[r["estimator"]] = text
    lines = [
        "bias ± std (nats) over seeds; `true` is the exact MI (entropy for `entropy-*` rows)",
        "",
        "| task | N | true | " + " | ".join(cols) + " |",
        "|---|---:|---:|" + "---:|" * len(cols),
    ]
    for (task, n), c in cells.items():
        lines.append(f"| {task} | {n} | {truth[(task, n)]:.2f} | " + " | ".join(c.get(e, "") for e in cols) + " |")
    # run time: mean over tasks of the same dimension and N
    times: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        dim = int(r["task"].split("-d")[1].split("-")[0])
        times.setdefault((dim, r["N"]), {}).setdefault(r["estimator"], []).append(r["seconds"])
    lines += ["", "mean seconds per estimate (wall, shared 2-core machine)", ""]
    lines += ["| d | N | " + " | ".join(cols) + " |", "|---:|---:|" + "---:|" * len(cols)]
    for (dim, n), t in sorted(times.items()):
        lines.append(f"| {dim} | {n} | " + " | ".join(f"{np.mean(t[e]):.3f}" if e in t else "" for e in cols) + " |")
    return "\n".join(lines)


def _num(v: float, signed: bool = True) -> str:
    if not math.isfinite(v):
        return str(v)
    if abs(v) >= 100:
        return f"{v:+.1e}" if signed else f"{v:.1e}"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def read_records(path: str) -> list[Record]:
    """Records written by an earlier run (to re-render its tables)."""
    out = []
    with open(path) as fh:
        for row in csv.DictReader(fh):
            opt = lambda v: None if v in ("", "None") else float(v)  # noqa: E731
            out.append(
                Record(
                    row["task"], row["family"], int(row["dim"]), int(row["n"]), float(row["true"]), row["estimator"],
                    int(row["seed"]), float(row["value"]), opt(row["train_value"]), opt(row["upper_bound"]),
                    float(row["seconds"]), row.get("flags", "") or "",
                )
            )
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid, < 2 min on 2 cores")
    parser.add_argument("--smoke", action="store_true", help="a few seconds: the test suite's check that this runs")
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "mi_accuracy.csv")
    parser.add_argument("--out", default=default_out)
    parser.add_argument("--estimators", default="", help="comma-separated MI estimators (default: per grid)")
    parser.add_argument("--seeds", type=int, default=0, help="number of seeds (default: per grid)")
    parser.add_argument("--from-csv", default="", help="re-render the tables of an earlier run's records")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    if args.from_csv:
        rows = summarise(read_records(args.from_csv))
        print(markdown(rows))
        return rows
    tasks, sizes, mi_estimators, seeds = grid(args)
    records: list[Record] = []
    t0 = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):  # small matrices: threads only add overhead
        for task in tasks:
            names = ["kl"] if task.family == "entropy" else mi_estimators
            for n in sizes:
                for name in names:
                    for seed in seeds:
                        records.append(run_one(task, n, name, seed))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(records[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in records)
    rows = summarise(records)
    print(markdown(rows))
    print(f"\n{len(records)} runs in {time.perf_counter() - t0:.0f} s; records: {args.out}")
    return rows


if __name__ == "__main__":
    main()
