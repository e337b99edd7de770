"""Every MI estimator on the ground-truth suite of bma/info/tasks.py (40 tasks with known MI): bias, spread, time.

    nice -n 10 .venv/bin/python benchmarks/mi_suite.py --out benchmarks/results/mi_suite.csv        # N = 5000
    .venv/bin/python benchmarks/mi_suite.py --estimators auto copula --seeds 2                     # a quick look
    .venv/bin/python benchmarks/mi_suite.py --from-csv benchmarks/results/mi_suite.csv             # re-render
    .venv/bin/python benchmarks/mi_suite.py --plane                     # the information plane's quantities

A study is estimators x tasks x sample sizes x seeds, each run one flat record (CSV at --out); the Markdown tables
on stdout aggregate them. An estimator is a registry name, optionally with parameters:
``ksg:metric=euclidean,k=5`` (values parsed as Python literals where they can be). Per (task, N, estimator): bias =
mean over seeds - truth, std over seeds (ddof 1), MAE = mean |estimate - truth| over seeds. A flagged estimate
(Estimate.flags: a diverged critic, a bound above its ceiling, ...) has no value: it is counted, never averaged.
Per estimator: MAE over every unflagged run, the share of tasks whose MAE is <= 0.1 nats (a task with a flagged
run does not count as within), the flagged count, mean seconds per estimate (wall, one thread).
"""

from __future__ import annotations

import argparse
import ast
import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bma.info.estimators import NEURAL_MI_ESTIMATORS, get_mi_estimator  # noqa: E402
from bma.info.tasks import SUITE, TASKS  # noqa: E402

DEFAULT_ESTIMATORS = ["auto", "copula", "gaussian", "ksg", "ksg:metric=euclidean", "infonce", "nwj", "mine", "smile"]
SEEDED = ("ksg", "auto", *NEURAL_MI_ESTIMATORS)


@dataclass
class Record:
    task: str
    dx: int
    dy: int
    n: int
    true: float
    estimator: str
    seed: int
    value: float
    raw_value: float
    flags: str
    picked: str
    seconds: float


def parse_spec(spec: str) -> tuple[str, dict]:
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, raw = item.partition("=")
        try:
            params[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[key] = {"true": True, "false": False}.get(raw.lower(), raw)
    return name, params


def run_one(task, n: int, spec: str, seed: int) -> Record:
    name, params = parse_spec(spec)
    x, y = task.sample(n, seed)
    if name in SEEDED:
        params = {"seed": seed, **params}
    t0 = time.perf_counter()
    est = get_mi_estimator(name, **params).estimate(x, y)
    seconds = time.perf_counter() - t0
    picked = str(est.params.get("picked", "")) if name == "auto" else ""
    return Record(task.name, task.dx, task.dy, n, task.mi, spec, seed, est.value, est.raw_value,
                  " | ".join(est.flags), picked, seconds)


# the rule the previous docs/information.md stated, in its two readings: KSG up to this dimension per side, else the
# Gaussian estimate (section 1 said d <= ~2, section 2 d = 1); derived from the gaussian and ksg records
OLD_RULES = {"old rule: ksg if d <= 1 per side, else gaussian": 1, "old rule: ksg if d <= 2 per side, else gaussian": 2}


def with_old_rules(records: list[Record]) -> list[Record]:
    """``records`` plus the old rules' picks, when both ``gaussian`` and ``ksg`` ran."""
    index = {(r.task, r.n, r.seed, r.estimator): r for r in records}
    extra = []
    for (task, n, seed, est), r in index.items():
        if est != "gaussian" or (task, n, seed, "ksg") not in index:
            continue
        for name, max_dim in OLD_RULES.items():
            src = index[(task, n, seed, "ksg")] if max(r.dx, r.dy) <= max_dim else r
            extra.append(Record(r.task, r.dx, r.dy, r.n, r.true, name, r.seed, src.value, src.raw_value, src.flags,
                                "", src.seconds))
    return records + extra


def summarise(records: list[Record]) -> tuple[list[dict], list[dict]]:
    """(per task x N x estimator rows, per N x estimator rows)."""
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        groups.setdefault((r.task, r.n, r.estimator), []).append(r)
    rows = []
    for (task, n, est), rs in groups.items():
        ok = [r for r in rs if not r.flags]
        v = np.array([r.value for r in ok], dtype=float)
        true = rs[0].true
        rows.append({
            "task": task, "N": n, "estimator": est, "true": true, "dim": rs[0].dx + rs[0].dy,
            "bias": float(v.mean() - true) if len(v) else math.nan,
            "std": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
            "mae": float(np.abs(v - true).mean()) if len(v) else math.nan,
            "flagged": len(rs) - len(ok), "runs": len(rs),
            "seconds": float(np.mean([r.seconds for r in rs])),
            "picked": ",".join(sorted({r.picked for r in rs if r.picked})),
        })
    per: dict[tuple, list[dict]] = {}
    for row in rows:
        per.setdefault((row["N"], row["estimator"]), []).append(row)
    totals = []
    for (n, est), rs in per.items():
        abs_err = [abs(r.value - r.true) for r in records if r.n == n and r.estimator == est and not r.flags]
        within = [r for r in rs if not r["flagged"] and r["mae"] <= 0.1]
        totals.append({
            "N": n, "estimator": est, "tasks": len(rs), "mae": float(np.mean(abs_err)) if abs_err else math.nan,
            "median_ae": float(np.median(abs_err)) if abs_err else math.nan,
            "within_0.1": len(within) / len(rs), "flagged": sum(r["flagged"] for r in rs),
            "runs": sum(r["runs"] for r in rs), "seconds": float(np.mean([r["seconds"] for r in rs])),
        })
    return rows, totals


def _cell(row: dict | None) -> str:
    if row is None:
        return ""
    if row["flagged"] == row["runs"]:
        return f"flagged {row['flagged']}/{row['runs']}"
    text = f"{row['bias']:+.2f} ± {row['std']:.2f}" if not math.isnan(row["std"]) else f"{row['bias']:+.2f}"
    if abs(row["bias"]) >= 100:
        text = f"{row['bias']:+.1e}"
    return text + (f" (flagged {row['flagged']})" if row["flagged"] else "")


def markdown(rows: list[dict], totals: list[dict]) -> str:
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    sizes = sorted({r["N"] for r in rows})
    index = {(r["task"], r["N"], r["estimator"]): r for r in rows}
    lines = ["Per estimator: MAE (nats) over every unflagged run; share of tasks with MAE <= 0.1; flagged runs; mean "
             "seconds per estimate", "",
             "| N | estimator | MAE | median abs error | tasks within 0.1 | flagged | s / estimate |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for t in sorted(totals, key=lambda t: (t["N"], estimators.index(t["estimator"]))):
        lines.append(f"| {t['N']} | `{t['estimator']}` | {t['mae']:.3f} | {t['median_ae']:.3f} | "
                     f"{100 * t['within_0.1']:.0f} % ({round(t['within_0.1'] * t['tasks'])}/{t['tasks']}) | "
                     f"{t['flagged']}/{t['runs']} | {t['seconds']:.3f} |")
    estimators = [e for e in estimators if e not in OLD_RULES]  # in the totals only
    for n in sizes:
        lines += ["", f"bias ± std over seeds (nats), N = {n}; `true` is the exact MI", "",
                  "| task | true | " + " | ".join(f"`{e}`" for e in estimators) + " |",
                  "|---|---:|" + "---:|" * len(estimators)]
        for task in dict.fromkeys(r["task"] for r in rows if r["N"] == n):
            true = next(r["true"] for r in rows if r["task"] == task)
            lines.append(f"| {task} | {true:.3f} | " + " | ".join(_cell(index.get((task, n, e))) for e in estimators)
                         + " |")
        picks = [(r["task"], r["picked"]) for r in rows if r["N"] == n and r["picked"]]
        if picks:
            lines += ["", f"`auto` picked (N = {n}): " + "; ".join(f"{t}: {p}" for t, p in picks)]
    return "\n".join(lines)


def read_records(path: str) -> list[Record]:
    out = []
    with open(path) as fh:
        for row in csv.DictReader(fh):
            out.append(Record(row["task"], int(row["dx"]), int(row["dy"]), int(row["n"]), float(row["true"]),
                              row["estimator"], int(row["seed"]), float(row["value"]), float(row["raw_value"]),
                              row["flags"], row["picked"], float(row["seconds"])))
    return out


# -- the information plane's quantities at the model's dimensions and the probes' sample sizes ---------------------


def _orthonormal(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((d, d)))[0][:, :k]  # (d, k)


def plane_tasks() -> list[dict]:
    """Closed-form truths for the plane's estimators (probes.noise_regularised_mi at sigma = 1, the cosine-critic
    InfoNCE): Gaussian stand-ins for a cycle or a recall through n slots (deterministic, rank n) and noisy ones."""
    tasks = []
    for d, rank, noise in ((128, 10, 0.0), (128, 64, 0.0), (128, 128, 0.5), (64, 64, 1.0), (128, 0, 1.0)):
        name = f"gauss_noise_1: b = a W{'' if rank else ' (W = 0)'}, rank {rank}, d {d}" + (
            f", + noise {noise:g}" if noise else ", deterministic")
        tasks.append({"kind": "noise_mi", "name": name, "d": d, "rank": rank, "noise": noise})
    for k, d, noise in ((16, 64, 1.5), (16, 64, 1.0)):
        tasks.append({"kind": "infonce_cos", "name": f"infonce_cos: z = c U + {noise:g} eps, code {k} in {d}-d",
                      "d": d, "k": k, "noise": noise})
    return tasks


def _plane_one(task: dict, n: int, seed: int) -> tuple[float, float]:
    """(estimate, truth) of one plane task."""
    from bma.info.probes import cosine_critic_infonce, noise_regularised_mi

    rng = np.random.default_rng([seed, task["d"], n])
    structure = np.random.default_rng(task["d"] + 7 * task.get("rank", task.get("k", 0)))  # fixed per task
    d = task["d"]
    if task["kind"] == "noise_mi":
        rank = task["rank"]
        u = _orthonormal(structure, d, max(rank, 1))
        w = (u[:, :rank] * np.linspace(2.0, 0.3, rank)) @ u[:, :rank].T if rank else np.zeros((d, d))
        cov_b = w.T @ w + task["noise"] ** 2 * np.eye(d)
        scale = math.sqrt(np.trace(cov_b) / d)
        ld = lambda m: float(np.linalg.slogdet(m)[1])  # noqa: E731
        eye = np.eye(d)
        truth = 0.5 * (ld(cov_b / scale**2 + eye) - ld(task["noise"] ** 2 / scale**2 * eye + eye))
        a = rng.standard_normal((n, d))
        b = a @ w + task["noise"] * rng.standard_normal((n, d))
        return noise_regularised_mi(a, b, scale, 1.0), truth
    k, noise = task["k"], task["noise"]
    u = _orthonormal(structure, d, k).T  # (k, d)
    rho = 1.0 / (1.0 + noise**2)
    truth = -0.5 * k * math.log(1.0 - rho**2)
    c = rng.standard_normal((n, k))
    za, zb = c @ u + noise * rng.standard_normal((n, d)), c @ u + noise * rng.standard_normal((n, d))
    perm = rng.permutation(n)
    value, _ = cosine_critic_infonce(za, zb, perm[: n // 2], perm[n // 2 :])
    return value, truth


def plane_markdown(sizes: list[int], seeds: int) -> str:
    lines = ["The information plane's estimators against closed-form truths (nats): bias ± std over seeds, "
             f"{seeds} seeds", "", "| task | N | true | bias ± std | log(N/2) |", "|---|---:|---:|---:|---:|"]
    for task in plane_tasks():
        for n in sizes:
            runs = [_plane_one(task, n, s) for s in range(seeds)]
            err = np.array([v - t for v, t in runs])
            lines.append(f"| {task['name']} | {n} | {runs[0][1]:.2f} | {err.mean():+.2f} ± {err.std(ddof=1):.2f} | "
                         f"{math.log(n // 2):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> tuple[list[dict], list[dict]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimators", nargs="+", default=DEFAULT_ESTIMATORS,
                        help=f"estimator specs, space-separated (default: {' '.join(DEFAULT_ESTIMATORS)})")
    parser.add_argument("--sizes", default="5000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", default="", help="comma-separated task names (default: all 40)")
    parser.add_argument("--out", default="")
    parser.add_argument("--from-csv", default="")
    parser.add_argument("--smoke", action="store_true", help="3 tasks, N = 300, 1 seed, auto + copula + ksg")
    parser.add_argument("--plane", action="store_true", help="the plane's quantities at d = 64-128, N = 300, 1000")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    if args.plane:
        with threadpool_limits(limits=1, user_api="blas"):
            print(plane_markdown([300, 1000], max(args.seeds, 2)))
        return [], []
    if args.from_csv:
        rows, totals = summarise(with_old_rules(read_records(args.from_csv)))
        print(markdown(rows, totals))
        return rows, totals
    tasks = [TASKS[t] for t in args.tasks.split(",")] if args.tasks else SUITE
    specs, sizes, seeds = list(args.estimators), [int(s) for s in args.sizes.split(",")], range(args.seeds)
    if args.smoke:
        tasks = [TASKS["gauss-dense-1x1-mi0.5"], TASKS["student-1x1-nu1"], TASKS["indep-gauss-5x5"]]
        specs, sizes, seeds = ["auto", "copula", "ksg"], [300], range(1)
    records: list[Record] = []
    t0 = time.perf_counter()
    print(f"{len(tasks)} tasks x {len(sizes)} sizes x {len(specs)} estimators x {len(seeds)} seeds; load average "
          f"{os.getloadavg()[0]:.1f}", file=sys.stderr)
    with threadpool_limits(limits=1, user_api="blas"):  # small matrices: threads only add overhead
        for task in tasks:
            for n in sizes:
                for spec in specs:
                    for seed in seeds:
                        records.append(run_one(task, n, spec, seed))
            print(f"  {task.name} done at {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(asdict(records[0])))
            writer.writeheader()
            writer.writerows(asdict(r) for r in records)
    rows, totals = summarise(with_old_rules(records))
    print(markdown(rows, totals))
    print(f"\n{len(records)} runs in {time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.1f}"
          + (f"; records: {args.out}" if args.out else ""))
    return rows, totals


if __name__ == "__main__":
    main()
