"""Per-trial overhead of the study engine (Ray Tune + MLflow) against the same trials in a plain Python loop.

    python benchmarks/study_overhead.py            # 6 trials; loop, engine at 1 and 2 CPUs, 1-trial engine; 2 rounds
    python benchmarks/study_overhead.py --quick    # 4 trials; loop, engine at 1 CPU, 1-trial engine; 1 round (~3 min)

The trials: a small grid (variant x seed) at N=200 samples per modality, 2 epochs, information probes off
(eval.info_every 0), MNIST + FSDD from the mirror. Side by side, in one run:
  (a) loop:   load_trial_data once, then bma.trainer.fit for each trial config, sequentially in this process, with
              torch and BLAS limited to --threads threads (default 1, what a 1-CPU Ray trial gets: Ray sets
              OMP_NUM_THREADS in its workers);
  (b) engine: study/run.py on the equivalent spec as a subprocess in an empty folder (its own mlflow.db,
              mlartifacts/, ray_results/), with --num-cpus 1 (trials one at a time, like the loop) and --num-cpus 2;
              wall clock from launch to exit. A 1-trial study gives the fixed start-up cost.
Prints the comparison table, where the engine's time goes (from the MLflow store's timestamps and the driver's
output), and the start-up components timed alone in fresh interpreters (imports, MLflow's first use of a
sqlite store, ray.init, moving the features through Ray's object store as tune.with_parameters does).

Features come from $BMA_CACHE_DIR (a temporary folder when unset) and are computed before anything is timed.
The machine's load average is printed with the results: on a shared machine the numbers are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "study" / "run.py"

SPEC = """\
name: {name}
data: {{image: {{source: mnist}}, sound: {{source: fsdd}}}}
grid:
  variant: {variants}
  seed: {seeds}
trial: {{train_size: {train_size}, epochs: {epochs}, eval: {{info_every: 0}}}}
resources: {{cpu: 1, gpu: 0}}
"""


def write_spec(folder: Path, name: str, variants: list[str], seeds: list[int], train_size: int, epochs: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.format(name=name, variants=json.dumps(variants), seeds=json.dumps(seeds),
                                train_size=train_size, epochs=epochs))
    return path


def inner_seconds(history: list[dict]) -> float:
    """Training and evaluation time the trainer itself measures (time/epoch_s, time/eval_s, time/info_s)."""
    return sum(h.get(k, 0.0) for h in history for k in ("time/epoch_s", "time/eval_s", "time/info_s"))


# -- (a) the plain loop ----------------------------------------------------------------------------------------------


def run_loop(spec_path: Path, threads: int) -> dict:
    import torch
    from threadpoolctl import threadpool_limits

    from bma.config import TrialConfig
    from bma.trainer import fit, load_trial_data
    from study.spec import load_spec

    cfgs = [TrialConfig.from_flat(f) for f in load_spec(spec_path).trial_flats()]
    load_trial_data(cfgs[0])  # warm the feature cache: neither side pays for computing features
    # The thread budget of a Ray trial with resources {cpu: N}: Ray sets OMP_NUM_THREADS=N in the trial's worker,
    # which limits torch and the BLAS under numpy/scipy/sklearn (the probes). With unlimited BLAS threads on a busy
    # 2-core machine the loop's evaluation took about twice as long as the engine's.
    torch.set_num_threads(threads)
    with threadpool_limits(limits=threads):
        t0 = time.perf_counter()
        data = load_trial_data(cfgs[0])
        t_data = time.perf_counter() - t0
        fits, inner = [], []
        for cfg in cfgs:
            t = time.perf_counter()
            result = fit(cfg, data=data)
            fits.append(time.perf_counter() - t)
            inner.append(inner_seconds(result.history))
        wall = time.perf_counter() - t0
    return {"wall": wall, "data": t_data, "fits": fits, "inner": inner, "n": len(cfgs)}


# -- (b) the engine ----------------------------------------------------------------------------------------------------


def run_engine(spec_path: Path, num_cpus: int, env: dict[str, str], timeout: float) -> dict:
    """study/run.py in an empty folder; stdout lines are time-stamped as they arrive."""
    work = Path(tempfile.mkdtemp(prefix=f"bma-overhead-cpu{num_cpus}-"))
    spec = work / spec_path.name
    spec.write_text(spec_path.read_text())
    launched = time.time()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(RUN), spec.name, "--num-cpus", str(num_cpus)], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        lines.append((time.perf_counter() - t0, line.rstrip()))
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise RuntimeError(f"study/run.py exited {proc.returncode}:\n" + "\n".join(l for _, l in lines[-20:]) + err[-3000:])
    return {"wall": wall, "launched": launched, "lines": lines, "phases": phases_from_store(work / "mlflow.db", launched),
            "work": str(work)}


def phases_from_store(db: Path, launched: float) -> dict:
    """Where the engine's wall time went, from MLflow's own timestamps (ms since the epoch)."""
    con = sqlite3.connect(db)
    try:
        created = con.execute("SELECT MIN(creation_time) FROM experiments WHERE name != 'Default'").fetchone()[0]
        rows = con.execute(
            "SELECT r.run_uuid, r.start_time, r.end_time, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'bma.role' ORDER BY r.start_time").fetchall()
        inner = dict(con.execute(
            "SELECT run_uuid, SUM(value) FROM metrics WHERE key IN ('time/epoch_s', 'time/eval_s', 'time/info_s') "
            "GROUP BY run_uuid").fetchall())
    finally:
        con.close()
    study = [(s, e) for _, s, e, role in rows if role == "study"]
    trials = [(s / 1000 - launched, e / 1000 - launched) for _, s, e, role in rows if role == "trial"]
    return {
        "experiment_created": created / 1000 - launched if created else None,
        "parent_run": study[0][0] / 1000 - launched if study else None,
        "trials": trials,
        "inner": [inner.get(u, 0.0) for u, _, _, role in rows if role == "trial"],
    }


# -- start-up components, each timed in a fresh interpreter -------------------------------------------------------------

COMPONENTS = r"""
import json, sys, tempfile, time
out = {}
t = time.perf_counter(); import torch, bma.trainer; out["import torch + bma (science)"] = time.perf_counter() - t
t = time.perf_counter(); import yaml, study.spec; out["import study.spec"] = time.perf_counter() - t
t = time.perf_counter(); import ray; from ray import tune; out["import ray + ray.tune"] = time.perf_counter() - t
t = time.perf_counter(); import mlflow; from mlflow.tracking import MlflowClient; out["import mlflow"] = time.perf_counter() - t
t = time.perf_counter(); import trainables.bma_trainable, study.progress; out["import trainables + progress"] = time.perf_counter() - t
from bma.config import TrialConfig
from bma.trainer import load_trial_data
cfg = TrialConfig()
t = time.perf_counter(); data = load_trial_data(cfg); out["load cached features (driver, prepare_data)"] = time.perf_counter() - t
folder = tempfile.mkdtemp(prefix="bma-overhead-mlflow-")
t = time.perf_counter()
client = MlflowClient(f"sqlite:///{folder}/mlflow.db"); exp = client.create_experiment("x")
out["MLflow: new sqlite store (schema created and migrated) + one experiment"] = time.perf_counter() - t
t = time.perf_counter()
client = MlflowClient(f"sqlite:///{folder}/mlflow.db"); client.get_experiment(exp)
out["MLflow: open an existing sqlite store (what each trial's client does)"] = time.perf_counter() - t
t = time.perf_counter(); run = client.create_run(exp); client.log_batch(run.info.run_id, params=[]); out["MLflow: create one run"] = time.perf_counter() - t
t = time.perf_counter(); ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR"); out["ray.init (embedded, 1 CPU)"] = time.perf_counter() - t
@ray.remote(num_cpus=1)
def touch(d):
    return int(d.image_train.x.shape[0])
t = time.perf_counter(); ref = ray.put(data); out["ray.put(features) (tune.with_parameters, once per study)"] = time.perf_counter() - t
t = time.perf_counter(); ray.get(touch.remote(ref)); out["first remote task: worker start + features fetched"] = time.perf_counter() - t
t = time.perf_counter(); ray.get(touch.remote(ref)); out["features fetched by a warm worker (per trial)"] = time.perf_counter() - t
size = sum(fs.x.numel() * fs.x.element_size() for fs in (data.image_train, data.image_test, data.sound_train, data.sound_test))
out["_features_MB"] = size / 2**20
t = time.perf_counter(); ray.shutdown(); out["ray.shutdown"] = time.perf_counter() - t
print("COMPONENTS " + json.dumps(out))
"""


def time_components(env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", COMPONENTS], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("COMPONENTS "):
            return json.loads(line[len("COMPONENTS "):])
    raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-3000:])


# -- report ------------------------------------------------------------------------------------------------------------


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 trials, engine at 1 CPU only, one repeat (~2-3 minutes)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 3, --quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of every run, the minimum is reported "
                        "(default 2, --quick 1): the minimum is the least disturbed by other work on the machine")
    parser.add_argument("--train-size", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads of the loop (a 1-CPU Ray trial gets 1)")
    parser.add_argument("--no-components", action="store_true", help="skip the start-up component timings")
    args = parser.parse_args()

    seeds = list(range(args.seeds or (2 if args.quick else 3)))
    repeats = args.repeats or (1 if args.quick else 2)
    cpus = [1] if args.quick else [1, 2]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.setdefault("BMA_CACHE_DIR", tempfile.mkdtemp(prefix="bma-overhead-cache-"))
    os.environ["BMA_CACHE_DIR"] = env["BMA_CACHE_DIR"]
    sys.path.insert(0, str(REPO))
    specs = Path(tempfile.mkdtemp(prefix="bma-overhead-specs-"))
    spec_n = write_spec(specs, "overhead", ["unimodal", "bma"], seeds, args.train_size, args.epochs)
    spec_1 = write_spec(specs, "overhead1", ["unimodal"], [0], args.train_size, args.epochs)  # = the loop's first trial
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M %Z")

    # Rounds interleave the runs, so a burst of load elsewhere hits one round of each rather than all of one.
    loops, engines, ones = [], {c: [] for c in cpus}, []
    for r in range(repeats):
        print(f"round {r + 1}/{repeats}: loop, {2 * len(seeds)} trials in process ...", flush=True)
        loops.append(run_loop(spec_n, args.threads))
        for c in cpus:
            print(f"round {r + 1}/{repeats}: engine, {loops[-1]['n']} trials, --num-cpus {c} ...", flush=True)
            engines[c].append(run_engine(spec_n, c, env, timeout=1800))
        print(f"round {r + 1}/{repeats}: engine, 1 trial, --num-cpus 1 ...", flush=True)
        ones.append(run_engine(spec_1, 1, env, timeout=900))
    components = {} if args.no_components else time_components(env)
    load_after = os.getloadavg()

    def best(runs):
        return min(runs, key=lambda x: x["wall"])

    def walls(runs):
        return "/".join(f"{x['wall']:.0f}" for x in runs)

    loop, one = best(loops), best(ones)
    engine = {c: best(runs) for c, runs in engines.items()}
    n = loop["n"]
    L = loop["wall"]
    L1 = loop["data"] + loop["fits"][0]  # the loop's cost of the 1-trial study: data + its first fit (unimodal, seed 0)
    print(f"\n{started}; {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before / {load_after[0]:.1f} after "
          f"(shared machine: expect noise); best of {repeats} round(s), every round's wall time in the last column")
    print(f"trials: variant [unimodal, bma] x seed {seeds}, train_size {args.train_size}, {args.epochs} epochs, "
          f"info probes off; loop with {args.threads} torch thread(s)\n")
    print("| run | trials | wall s | per trial s | overhead per trial s | engine / loop | rounds s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| loop: load_trial_data + fit x {n}, in process | {n} | {L:.1f} | {L / n:.1f} | - | 1.00 | {walls(loops)} |")
    for c, e in engine.items():
        E = e["wall"]
        print(f"| engine: study/run.py --num-cpus {c} | {n} | {E:.1f} | {E / n:.1f} | {(E - L) / n:.1f} | {E / L:.2f} "
              f"| {walls(engines[c])} |")
    E1 = one["wall"]
    print(f"| loop: data + the first fit | 1 | {L1:.1f} | {L1:.1f} | - | 1.00 | - |")
    print(f"| engine: 1-trial study, --num-cpus 1 | 1 | {E1:.1f} | {E1:.1f} | {E1 - L1:.1f} | {E1 / L1:.2f} | {walls(ones)} |")
    E = engine[1]["wall"]
    marginal = ((E - E1) - (L - L1)) / (n - 1) if n > 1 else float("nan")
    print(f"\nfixed cost of a study (1-trial study - the loop's 1 trial): {E1 - L1:.1f} s")
    print(f"marginal cost of each further trial at --num-cpus 1: ((engine {n} - engine 1) - (loop {n} - loop 1)) / {n - 1}"
          f" = {marginal:.1f} s")

    # -- where the engine's time goes ------------------------------------------------------------------------------
    loop_inner = sum(loop["inner"])
    loop_fit = sum(loop["fits"])
    print(f"\ninside the trials ({n} trials): the trainer's own training + evaluation time (time/epoch_s + time/eval_s)"
          f" vs the time around it")
    print("| run | trial time s | of which training + evaluation s | rest s | rest per trial s |")
    print("|---|---|---|---|---|")
    print(f"| loop: fit() calls | {loop_fit:.1f} | {loop_inner:.1f} | {loop_fit - loop_inner:.1f} | "
          f"{(loop_fit - loop_inner) / n:.2f} |")
    for c, e in engine.items():
        p = e["phases"]
        in_runs = sum(b - a for a, b in p["trials"])
        inner = sum(p["inner"])
        print(f"| engine --num-cpus {c}: MLflow trial runs, start to end | {in_runs:.1f} | {inner:.1f} | "
              f"{in_runs - inner:.1f} | {(in_runs - inner) / n:.2f} |")

    for label, run in [(f"{n} trials, --num-cpus 1", engine[1]), ("1 trial, --num-cpus 1", one)]:
        p = run["phases"]
        trials = p["trials"]
        first_line = run["lines"][0][0] if run["lines"] else None
        gaps = sum(trials[i + 1][0] - trials[i][1] for i in range(len(trials) - 1))
        end = max(b for _, b in trials)
        print(f"\nengine, {label}: the wall time by phase, seconds (from the MLflow store's timestamps)")
        print("| phase | s | since launch |")
        print("|---|---|---|")
        marks = [
            ("interpreter start, spec parsed (first output line)", first_line),
            ("imports (torch, sklearn, ray.tune, mlflow), features loaded, regimes checked, MLflow store opened, "
             "experiment created", p["experiment_created"]),
            ("ray.init, Tune start, trial actor started, features fetched, trial's MLflow run created", trials[0][0]),
        ]
        prev = 0.0
        for what, at in marks:
            print(f"| {what} | {fmt(at - prev if at is not None else None)} | {fmt(at)} |")
            prev = at if at is not None else prev
        print(f"| trial runs ({len(trials)}), summed | {sum(b - a for a, b in trials):.1f} | - |")
        if len(trials) > 1:
            print(f"| between consecutive trial runs ({len(trials) - 1} gaps, the actor is reused), summed | {gaps:.1f} | - |")
        print(f"| last trial run ended -> exit (Tune wrap-up, ray.shutdown, summary) | {run['wall'] - end:.1f} | "
              f"{run['wall']:.1f} |")

    if components:
        print("\nstart-up components, each timed alone, in this order, in one fresh interpreter")
        print("| component | s |")
        print("|---|---|")
        for k, v in components.items():
            if not k.startswith("_"):
                print(f"| {k} | {v:.2f} |")
        print(f"(features through the object store: {components['_features_MB']:.0f} MB)")
    kept = [r["work"] for r in [*(x for runs in engines.values() for x in runs), *ones]]
    print("\nengine folders (mlflow.db, mlartifacts/, ray_results/) kept for inspection: " + " ".join(kept))


if __name__ == "__main__":
    main()
