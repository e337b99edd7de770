"""Run a study: a Ray Tune grid over data regimes, every trial recorded in MLflow, resumable after any crash.

    python study/run.py study/specs/quick.yaml                       # embedded Ray, ./mlflow.db
    python study/run.py study/specs/quick.yaml --smoke               # seconds-long version of any spec
    python study/run.py study/specs/paper.yaml --address auto --tracking-uri http://HEAD:5000   # on a cluster

Rerunning the same command continues a study that was interrupted: finished trials are not trained again and
no trial gets a second MLflow run. Exit codes: 0 every trial finished; 2 the spec, the results' store or folders,
the data, the resume target or an option is wrong (nothing was started, nothing written); 3 the study ran but
some trials failed (one console line each, listed at the end, and marked FAILED in MLflow); 130 the study was
interrupted (Ctrl-C / SIGINT): the unfinished trials' runs are marked interrupted (MLflow status KILLED, never counted
as results) and rerunning the same command (without --fresh) resumes them from their checkpoints.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from bma import record as R  # noqa: E402
from study import storage as results_store  # noqa: E402
from study.spec import SpecError, StudySpec, load_spec  # noqa: E402
from study.storage import FINGERPRINT_FILE, StorageError  # noqa: E402,F401  (FINGERPRINT_FILE: kept importable)

EXIT_OK, EXIT_BAD_INPUT, EXIT_TRIALS_FAILED, EXIT_INTERRUPTED = 0, 2, 3, 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of CPUs >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of CPUs >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="study/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="study spec YAML (see study/specs/ and docs/spec.md)")
    p.add_argument("--smoke", action="store_true", help="shrink the spec to a seconds-long run (tiny sizes, one epoch)")
    p.add_argument("--address", default=None, help="Ray cluster: 'auto' (on a cluster node) or ray://HOST:10001; default: embedded Ray")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else "
                   f"{R.DEFAULT_TRACKING_URI} (in the current folder)")
    p.add_argument("--storage", default=None, help="Tune results folder or s3://, gs:// URI; default ./ray_results")
    p.add_argument("--num-cpus", type=_positive_int, default=None, help="CPUs of the embedded Ray (default: all)")
    p.add_argument("--metric", default=None, help="metric whose best value the progress view shows (default: a "
                   f"search's metric, else {R.PROGRESS_METRIC}); max or min as bma/record.py METRICS says")
    p.add_argument("--fresh", action="store_true", help="start over: set aside earlier Tune results of this study name")
    p.add_argument("--validate-only", action="store_true", help="check the spec, the results store and folders, and the data; start nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's and Tune's own logs")
    return p.parse_args(argv)


def resolve_tracking_uri(arg: str | None) -> str:
    uri = arg or os.environ.get("MLFLOW_TRACKING_URI") or R.DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # Trials run in other working folders: make the store's path absolute.
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def resolve_storage(arg: str | None) -> str:
    if arg and "://" in arg:
        return arg
    return str(Path(arg or "ray_results").resolve())


def tracking_problem(uri: str) -> str | None:
    """Why the driver cannot use the MLflow store ``uri``, or None: an unknown kind of URI, an in-memory SQLite
    store, or a server that does not answer within seconds. (A local store's folder: ``local_store_folder``.)"""
    from urllib.parse import urlsplit

    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri == "sqlite:///":
            return (f"--tracking-uri {uri}: expected sqlite:///PATH (an in-memory store cannot be shared with the "
                    "trials)")
        return None
    if scheme in ("http", "https"):
        from analysis.store import server_problem

        return server_problem(uri)
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        _tracking_store_registry.get_store_builder(uri)
    except (ImportError, AttributeError):  # MLflow's registry moved: let MLflow judge the URI when it is used
        return None
    except Exception:
        return (f"--tracking-uri {uri}: unknown kind of MLflow store {scheme + '://' if scheme else ''!s}; expected "
                "sqlite:///PATH, http(s)://HOST:PORT, or another MLflow store URI (postgresql://, mysql://, "
                "databricks)")
    return None


def local_store_folder(uri: str) -> Path | None:
    """The folder a local MLflow store (SQLite file, file store) writes into; None for a server or database."""
    from urllib.parse import urlsplit

    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite" and uri.startswith("sqlite:///") and uri != "sqlite:///":
        return Path(uri[len("sqlite:///"):].split("?", 1)[0]).parent
    if scheme == "file":
        return Path(urlsplit(uri).path)
    if scheme == "" and uri:
        return Path(uri)
    return None


def unwritable(folder: Path) -> tuple[Path, str] | None:
    """(the folder, why) when nothing can be created in ``folder`` (or, if it does not exist yet, in its nearest
    existing parent), else None. Creates and removes a file: permission bits say nothing for root or on a
    read-only mount."""
    import tempfile

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return probe, "not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".bma-write-check-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return probe, exc.strerror or type(exc).__name__
    return None


def output_problems(tracking_uri: str, storage: str, experiment_dir: Path | None) -> list[str]:
    """The MLflow store and the Tune results must be reachable and writable: one line per folder that is not."""
    problems = [p for p in [tracking_problem(tracking_uri), results_store.storage_problem(storage)] if p]
    targets = {}
    if (folder := local_store_folder(tracking_uri)) is not None:
        targets[f"the MLflow store ({tracking_uri})"] = folder
    if experiment_dir is not None:
        targets[f"the Tune results (--storage {storage})"] = experiment_dir
    blocked: dict[tuple[Path, str], list[str]] = {}
    for what, folder in targets.items():
        bad = unwritable(folder)
        if bad:
            blocked.setdefault(bad, []).append(what)
    for (folder, why), whats in blocked.items():
        problems.append(f"cannot write in {folder} ({why}), where {' and '.join(whats)} would go; run from a "
                        "writable folder, or pass --tracking-uri and --storage")
    return problems


def reachable_from_workers(tracking_uri: str, address: str | None) -> str:
    """On a cluster, a loopback tracking URI given to the driver means the head's server: trials on other nodes
    must reach it through the head's address."""
    if address is None:
        return tracking_uri
    from urllib.parse import urlsplit, urlunsplit

    import ray

    parts = urlsplit(tracking_uri)
    if parts.scheme in ("http", "https") and parts.hostname in ("127.0.0.1", "localhost"):
        head = ray.util.get_node_ip_address()
        netloc = head + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return tracking_uri


def resources_problem(resources: dict[str, float], fix: bool = True) -> str | None:
    """Why no node of the running Ray cluster can ever hold one trial (naming the resource, and with ``fix`` what
    to change), or None."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU")):
        need = resources[key]
        best = max((n.get(ray_key, 0.0) for n in nodes), default=0.0)
        if need > best:
            if key == "gpu":
                hint = "set resources.gpu: 0 (train on the CPU) or run on a cluster with GPUs (--address)"
            else:
                hint = (f"set resources.cpu to at most {best:g}, give the embedded Ray more CPUs (--num-cpus), "
                       "or run on a cluster (--address)")
            problem = f"resources.{key}: {need:g} per trial, but the largest node has {best:g}"
            return f"{problem}; {hint}" if fix else problem
    return None


def prepare_data(spec: StudySpec, verbose: bool):
    """Features for every distinct data setting (computed once, cached on disk), and every trial's regime checked.

    Returns ({data_key: TrialData}, problems)."""
    from bma.config import ConfigError, TrialConfig
    from bma.data.errors import DataError
    from bma.data.regimes import RegimeError
    from bma.trainer import load_trial_data, make_regime
    from trainables.bma_trainable import data_key

    from study.spec import search_flats

    datas, problems, checked = {}, [], set()
    for flat in spec.trial_flats() + (search_flats(spec) if spec.search is not None else []):
        cfg = TrialConfig.from_flat(flat)
        key = data_key(cfg)
        if key not in datas:
            try:
                t0 = time.perf_counter()
                datas[key] = load_trial_data(cfg)
                if verbose:
                    print(f"features ready in {time.perf_counter() - t0:.1f}s: {cfg.data.image.source} + {cfg.data.sound.source}")
            except (DataError, ConfigError) as exc:
                datas[key] = None
                problems.append(f"data: {exc}")
            except OSError as exc:  # the feature cache cannot be written (a read-only or full disk)
                datas[key] = None
                problems.append(f"data: {exc.filename or 'the feature cache'}: {exc.strerror or exc} (the feature "
                                "cache is data.cache_dir, else $BMA_CACHE_DIR, else ~/.cache/bma-study)")
        if datas[key] is None:
            continue
        # make_regime also checks the label budgets, which read the variant and eval.label_*: a unimodal trial's
        # pass says nothing of a bma trial on the same regime
        regime_id = (key, cfg.regime, cfg.model.variant, cfg.eval.label_pool, cfg.eval.label_budgets)
        if regime_id in checked:
            continue
        checked.add(regime_id)
        try:
            make_regime(cfg, datas[key])
        except (RegimeError, DataError) as exc:
            problems.append(str(exc))
    return datas, sorted(set(problems))


# Trials on a node read one copy of a data setting's features: Ray's zero-copy torch tensors map the object store's
# pages into each trial instead of unpickling a copy per trial (benchmarks/feature_sharing.py: 270 MiB of private
# memory per trial without, 1 MiB with). Read before `import ray` in the driver; the workers get it in runtime_env.
ZERO_COPY = "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS"


def threshold_env() -> dict[str, str]:
    """The driver's in-memory threshold (bma.data.cache_files), when set, for every trial: the driver decides which
    feature entries are mapped, and a trial on any node decides with the same value whether it gathers up front."""
    from bma.data.cache_files import IN_MEMORY_MAX_MB_ENV

    value = os.environ.get(IN_MEMORY_MAX_MB_ENV)
    return {} if value is None else {IN_MEMORY_MAX_MB_ENV: value}


# How long a reused trial actor waits for the previous trial's training thread to end (Ray's default: 2 s). A trial
# that ASHA stopped, or that is still writing its last MLflow records, can take longer on a loaded machine; the
# next trial on that actor then failed ("Trainable runner reuse requires reset_config()"), by chance. Waiting is
# for an event (the thread's end), so a generous bound costs nothing when the thread ends at once.
ACTOR_REUSE_WAIT_S = "300"


def reuse_actors(spec: StudySpec) -> bool:
    """Whether Tune hands a finished trial's actor to the next trial (saves the actor's start, ~1-2 s a trial).
    Not with a scheduler: an actor whose trial ASHA stopped could not be reset for the next trial in a resumed
    study (its training thread never ended; the next trial failed "Trainable runner reuse requires reset_config()",
    tests/study/test_search.py, about one run in two on a loaded machine), so each trial gets a fresh actor there."""
    return not (spec.search is not None and spec.search.get("scheduler"))


def actor_reuse_env() -> dict[str, str]:
    return {"TUNE_FUNCTION_THREAD_TIMEOUT_S": os.environ.get("TUNE_FUNCTION_THREAD_TIMEOUT_S", ACTOR_REUSE_WAIT_S)}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault(ZERO_COPY, "1")
    args = parse_args(argv)
    try:
        spec = load_spec(args.spec, smoke=args.smoke)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    if args.metric is not None and (problem := R.direction_problem(args.metric)):
        print(f"error: --metric {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    storage = resolve_storage(args.storage)
    name = spec.name + ("-smoke" if args.smoke else "")
    experiment_dir = None if "://" in storage else Path(storage) / name
    fingerprint = spec.fingerprint()
    try:
        results_store.study_location(storage, name)  # an unknown scheme is refused now, with --fresh too
        saved = None if args.fresh else results_store.saved_fingerprint(storage, name)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if saved is not None and saved != fingerprint:
        print(f"error: {results_store.shown(results_store.experiment_path(storage, name))} holds results of a "
              f"different version of study {name!r} (spec changed since). Rename the study, or pass --fresh to set "
              "the old results aside.", file=sys.stderr)
        return EXIT_BAD_INPUT

    # Where results will go, checked before the data (which may take minutes) and before Ray: an unreachable server
    # or a read-only folder is refused in seconds, with nothing written.
    where = output_problems(tracking_uri, storage, experiment_dir)
    if where:
        print("error: " + "\n  ".join(where), file=sys.stderr)
        return EXIT_BAD_INPUT

    distinct = spec.distinct_trials() if spec.search is None else None
    print(study_line(spec, name, distinct))
    if args.validate_only:
        datas, problems = prepare_data(spec, args.verbose)
        if problems:
            return data_refused(args.spec, problems)
        print("spec and data are valid; nothing started (--validate-only)")
        return EXIT_OK
    # The data check (loading features, checking every trial's regime) and the MLflow store run in a thread while
    # Ray starts; a study the data cannot satisfy still stops before anything is written (Ray is shut down again).
    # Everything either thread imports is imported here first, in this one: two threads importing the same
    # package at once (torch, mlflow; Ray imports torch in ray.init for its zero-copy tensors) can see it half
    # initialised ("cannot import name ... partially initialized module").
    import_engine()
    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="bma-data") as pool:
            data = pool.submit(prepare_then_store, spec, args, name, fingerprint, tracking_uri)
            return run_study(spec, name, fingerprint, data, tracking_uri, storage, experiment_dir, args, distinct)
    except KeyboardInterrupt:  # before Tune ran (it handles its own Ctrl-C): no trial started, nothing to mark
        print(f"\nstudy {name}: interrupted before its trials started; rerun the same command to start it",
              file=sys.stderr)
        return EXIT_INTERRUPTED


def import_engine() -> None:
    """Import the modules the driver's two threads use (see main)."""
    import mlflow.tracking  # noqa: F401
    import ray  # noqa: F401
    import torch  # noqa: F401
    from ray import tune  # noqa: F401

    import bma.trainer  # noqa: F401
    import study.progress  # noqa: F401
    import trainables.bma_trainable  # noqa: F401
    import trainables.tracking  # noqa: F401


def progress_metric(spec: StudySpec, args) -> tuple[str, str | None]:
    """(metric, mode) the progress view follows: --metric, else a search's metric and mode, else the default; the
    mode None means the metric registry's direction."""
    if spec.search is not None and args.metric in (None, spec.search["metric"]):
        return spec.search["metric"], spec.search["mode"]
    return args.metric or R.PROGRESS_METRIC, None


def fits_this_machine(resources: dict[str, float], args) -> bool:
    """Whether the embedded Ray will have the CPUs and GPUs one trial needs (what resources_problem checks once
    Ray runs), judged without Ray; always True on a cluster, where resources only warn."""
    if args.address is not None:
        return True
    if resources["cpu"] > (args.num_cpus or os.cpu_count() or 1):
        return False
    if resources["gpu"] > 0:
        import torch

        return resources["gpu"] <= torch.cuda.device_count()
    return True


def prepare_then_store(spec: StudySpec, args, name: str, fingerprint: str, tracking_uri: str):
    """(datas, problems, (experiment id, parent run id) or None): the data check, then, when the data and the
    resources are fine, the MLflow experiment and parent run, while Ray starts in the main thread (a new SQLite
    store takes seconds: MLflow creates and migrates its schema)."""
    datas, problems = prepare_data(spec, args.verbose)
    if problems or not fits_this_machine(spec.resources, args):
        return datas, problems, None
    try:
        return datas, problems, open_store(spec, name, fingerprint, tracking_uri, args)
    except Exception as exc:  # reported by run_study, which retries in the main thread
        return datas, problems, exc


def open_store(spec: StudySpec, name: str, fingerprint: str, tracking_uri: str, args) -> tuple[str, str]:
    from mlflow.tracking import MlflowClient

    from trainables.tracking import ensure_experiment, ensure_parent_run

    if not args.verbose:  # MLflow's and alembic's INFO lines about creating the store are noise here
        for logger in ("mlflow", "alembic"):
            logging.getLogger(logger).setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, name, tracking_uri)
    spec_text = Path(spec.source_path).read_text() if Path(spec.source_path).is_file() else ""
    parent = ensure_parent_run(client, experiment_id, name, fingerprint, spec_text, spec.axes)
    if spec.sesoi:  # declared before the study runs: the reports' verdicts read it (analysis.collect.study_sesoi)
        import json

        client.set_tag(parent, R.SESOI, json.dumps(spec.sesoi, sort_keys=True))
    return experiment_id, parent


def data_refused(spec_path: str, problems: list[str]) -> int:
    print(f"error: {spec_path}: the data cannot satisfy this study:\n  " + "\n  ".join(problems), file=sys.stderr)
    return EXIT_BAD_INPUT


def last_by_trial_key(results: list, spec: StudySpec, name: str) -> dict:
    """{KEY_PREFIX + trial key: last metrics} of the trials Tune ended without an error (see mark_stopped_early)."""
    from trainables.bma_trainable import trial_config
    from trainables.tracking import KEY_PREFIX, trial_key

    out = {}
    for r in results:
        if r.error is None and r.metrics and r.config:
            try:
                out[KEY_PREFIX + trial_key(name, trial_config(r.config, spec.base)[0])] = r.metrics
            except Exception:  # a config that no longer builds: the trial id lookup is all there is
                continue
    return out


def precision_experiment(name: str, round_index: int) -> str:
    """The Tune experiment of a study's precision round (study.precision): beside the study's own."""
    return f"{name}.precision-{round_index}"


def set_aside(storage: str, name: str, fresh: bool) -> str | None:
    """--fresh: move the earlier Tune results aside (a folder or any --storage URI), the precision rounds' too;
    the problem, or None."""
    if not fresh:
        return None
    problem = results_store.set_aside(storage, name)
    round_index = 1
    while problem is None and results_store.saved_state_exists(storage, precision_experiment(name, round_index)):
        problem = results_store.set_aside(storage, precision_experiment(name, round_index))
        round_index += 1
    return problem


def study_line(spec: StudySpec, name: str, distinct) -> str:
    """The first line of a run (and of --validate-only): how many trials, and what each reserves."""
    each = f"{spec.resources['cpu']:g} CPU / {spec.resources['gpu']:g} GPU each"
    if spec.search is None:
        return f"study {name}: {spec.n_points} grid points, {len(distinct)} distinct trials, {each}"
    s = spec.search
    arms = f" x {len(spec.arms)} arms" if spec.arms else ""
    scheduler = f", {s['scheduler']} early stopping" if s["scheduler"] else ""
    return (f"study {name}: {s['algorithm']} search, {spec.n_trials} trials ({s['num_samples']} samples{arms}) "
            f"on {s['metric']} ({s['mode']}){scheduler}, {each}")


def grid_space(spec: StudySpec, distinct) -> dict:
    """One Tune grid value per distinct trial: its first grid point's values, its arm, and (when it stands for
    more than one grid point, or for a point whose ignored settings it resets) the cells it counts in."""
    from ray import tune

    from study.spec import ARM_CELL
    from trainables.bma_trainable import ARM_KEY, CELLS_KEY, POINT_KEY

    points = []
    for trial in distinct:
        point = dict(trial.point)
        if trial.arm is not None:
            point[ARM_KEY] = {"name": trial.arm, "settings": spec.arms[trial.arm]}
        if len(trial.members) > 1 or any(k != ARM_CELL for k in trial.members[0]):
            point[CELLS_KEY] = trial.members
        points.append(point)
    return {POINT_KEY: tune.grid_search(points)}


def search_config(spec: StudySpec):
    """(param space, TuneConfig keywords) of a search: Ray Tune's samplers, its searcher and scheduler."""
    from ray import tune

    from bma.config import TrialConfig
    from bma.trainer import num_rounds
    from trainables.bma_trainable import ARM_KEY

    s = spec.search
    samplers = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint,
                "lograndint": tune.lograndint}
    space = {path: tune.choice(args) if kind == "choice" else samplers[kind](*args)
             for path, (kind, args) in s["space"].items()}
    if spec.arms:  # a random search crosses its samples with the arms (Tune's grid_search beside samplers)
        space[ARM_KEY] = tune.grid_search([{"name": n, "settings": a} for n, a in spec.arms.items()])
    keywords = {"metric": s["metric"], "mode": s["mode"], "num_samples": s["num_samples"]}
    if s["algorithm"] == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        keywords["search_alg"] = OptunaSearch(seed=s["seed"])  # TPE, Optuna's default sampler
    else:
        from ray.tune.search import BasicVariantGenerator

        keywords["search_alg"] = BasicVariantGenerator(random_state=s["seed"])
    if s["scheduler"] == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # max_t one past the last round: a trial that completes returns on its own (artifacts written, run
        # finished), rather than being stopped by ASHA at max_t
        max_t = max(num_rounds(TrialConfig.from_flat(f)) for f in spec.trial_flats()) + 1
        keywords["scheduler"] = ASHAScheduler(time_attr="training_iteration", max_t=max_t,
                                              grace_period=s["grace_period"], reduction_factor=s["reduction_factor"])
    return space, keywords


def run_study(spec, name, fingerprint, data, tracking_uri, storage, experiment_dir, args, distinct=None) -> int:
    """``data``: a future of prepare_data's (datas, problems), or that pair itself."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # save the study's state often: a killed driver resumes
    if not args.verbose:
        # A failed trial's traceback goes to its error.txt and to MLflow; the console gets one line (StudyProgress).
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    if not args.verbose:  # MLflow's and alembic's INFO lines about creating the store are noise here
        for logger in ("mlflow", "alembic", "optuna"):
            logging.getLogger(logger).setLevel(logging.WARNING)
        # "Trials did not complete: [...]": the failed trials are listed at the end, with their reasons
        logging.getLogger("ray.tune.tune").setLevel(logging.CRITICAL)
    try:
        # Ray's processes start while the data thread loads the features and opens the MLflow store.
        ray.init(
            address=args.address,
            num_cpus=args.num_cpus if args.address is None else None,
            include_dashboard=False if args.address is None else None,
            log_to_driver=args.verbose,
            logging_level=logging.INFO if args.verbose else logging.ERROR,
            configure_logging=True,
            ignore_reinit_error=True,
            runtime_env={"env_vars": {ZERO_COPY: os.environ.get(ZERO_COPY, "1"), **threshold_env(),
                                      **actor_reuse_env()}},
        )
    except Exception as exc:  # a wrong --address, no cluster there, a Ray that cannot start
        lines = str(exc).strip().splitlines()
        what = f"--address {args.address}" if args.address else "the embedded Ray"
        print(f"error: {what}: Ray could not start ({type(exc).__name__}: {lines[0] if lines else ''})",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    from mlflow.tracking import MlflowClient
    from ray import tune

    from study.live_report import LiveReport
    from study.progress import StudyProgress
    from trainables.bma_trainable import StudyContext, train_bma
    from trainables.tracking import git_commit, mark_stopped_early, retry

    try:
        datas, problems, store = data.result() if hasattr(data, "result") else (*data, None)
    except BaseException:
        ray.shutdown()
        raise
    if problems:
        ray.shutdown()
        return data_refused(args.spec, problems)
    problem = set_aside(storage, name, args.fresh)
    if problem:
        ray.shutdown()
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    remote_uri = reachable_from_workers(tracking_uri, args.address)
    opened: list[str] = []  # the parent run, once the store is open: any failure of the driver ends it FAILED
    if isinstance(store, tuple):
        opened.append(store[1])
    try:
        # Checked before anything is written: a refused study leaves no MLflow store or run behind.
        resources = {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]}
        unfit = resources_problem(resources, fix=args.address is None)
        if unfit and args.address is None:
            print(f"error: {spec.source_path}: {unfit}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if unfit:
            print(f"warning: {unfit}; trials wait until the autoscaler adds such a node", file=sys.stderr)
        client = MlflowClient(tracking_uri)
        if not isinstance(store, tuple):  # not opened beside ray.init (resources unsure), or that failed
            try:
                store = open_store(spec, name, fingerprint, tracking_uri, args)
            except Exception as exc:  # unreachable server, bad URI
                print(f"error: --tracking-uri {tracking_uri}: cannot reach the MLflow store ({exc})", file=sys.stderr)
                return EXIT_BAD_INPUT
        experiment_id, parent_run_id = store
        if parent_run_id not in opened:
            opened.append(parent_run_id)
        context = StudyContext(name, tracking_uri, experiment_id, parent_run_id, dict(spec.base),
                               driver_ip=ray.util.get_node_ip_address(),
                               remote_tracking_uri=remote_uri if remote_uri != tracking_uri else None,
                               git_commit=git_commit(), axes=spec.axes, trial_plots=spec.trial_plots)
        # One object-store entry per data setting: a trial fetches only its own features, never the study's all.
        # The features are never written after they are computed (the trials index them into their own tensors),
        # which is what Ray's warning about zero-copy tensors asks for. A memory-mapped entry (above
        # bma.data.cache_files.in_memory_max_bytes()) goes in as a reference to its file: a trial maps the file.
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Zero-copy tensor serialization is enabled")
            data_refs = {key: ray.put(value) for key, value in datas.items()}
        trainable = tune.with_resources(tune.with_parameters(train_bma, study=context, data=data_refs), resources)
        if spec.search is None:  # each distinct trial once (an arm's settings travel inside its grid value)
            param_space, search_keywords = grid_space(spec, distinct), {}
        else:
            param_space, search_keywords = search_config(spec)
        total = len(distinct) if distinct is not None else spec.n_trials
        metric, mode = progress_metric(spec, args)
        progress = StudyProgress(total=total, metric=metric, live=sys.stdout.isatty(), mode=mode)
        live = LiveReport(spec.report, name, tracking_uri, experiment_id, parent_run_id, total, spec.description)

        def fit_experiment(experiment: str, space: dict, keywords: dict, callback) -> list:
            """One Ray Tune experiment of this study (restored when its state exists): its results."""
            run_config = tune.RunConfig(
                name=experiment,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures, fail_fast=False),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[callback, live],
                verbose=2 if args.verbose else 0,
            )
            path = results_store.experiment_path(storage, experiment)  # a URI keeps its query last
            if tune.Tuner.can_restore(path):
                print(f"resuming study {experiment} from {results_store.shown(path)}")
                tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                           param_space=space)
            else:
                tuner = tune.Tuner(
                    trainable,
                    param_space=space,
                    tune_config=tune.TuneConfig(reuse_actors=reuse_actors(spec),
                                                max_concurrent_trials=spec.max_concurrent_trials,
                                                **keywords),
                    run_config=run_config,
                )
            results = list(tuner.fit())
            if getattr(callback, "interrupted", None) is not None:  # Ctrl-C (StudyProgress saw the signal)
                raise StudyInterrupted(callback.interrupted, results)
            return results

        try:
            results_store.write_fingerprint(storage, name, fingerprint)
        except StorageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        cut = None
        try:
            results = fit_experiment(name, param_space, search_keywords, progress)
            if spec.precision is not None:
                results = precision_rounds(spec, name, results, fit_experiment, client, parent_run_id, grid_space,
                                           StudyProgress, metric, mode)
        except StudyInterrupted as stop:  # Ctrl-C: Tune saved its state and stopped (study/progress.py)
            cut = stop
        except KeyboardInterrupt:  # a second Ctrl-C: Tune stops without its last save (it saves every few s)
            cut = StudyInterrupted({}, None)
    except BaseException as exc:
        ray.shutdown()
        end = R.MLFLOW_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else "FAILED"
        for run_id in opened:  # the study's parent run never stays RUNNING after its driver is gone
            try:
                retry(lambda: MlflowClient(tracking_uri).set_terminated(run_id, status=end))
            except Exception:  # the store itself is what failed: the original error says more
                pass
        raise
    finally:
        ray.shutdown()  # the trials' processes are gone: nothing writes to their runs after this

    if cut is not None:
        # Tune saved its state with these trials unfinished, then marked them TERMINATED: the statuses at the
        # signal are the true ones
        states = cut.states
        if spec.search is not None and spec.search["scheduler"] and cut.results:
            stopped = {r.metrics.get("trial_id"): r.metrics for r in cut.results
                       if r.error is None and r.metrics and states.get(r.metrics.get("trial_id")) == "TERMINATED"}
            mark_stopped_early(tracking_uri, experiment_id, parent_run_id, stopped)  # before the signal
        return interrupted(name, total, states, tracking_uri, experiment_id, parent_run_id, client, progress)
    failed = [r for r in results if r.error is not None]
    if spec.search is not None and spec.search["scheduler"]:
        last = {r.metrics.get("trial_id"): r.metrics for r in results if r.error is None and r.metrics}
        last.update(last_by_trial_key(results, spec, name))
        mark_stopped_early(tracking_uri, experiment_id, parent_run_id, last)
    stopped = retry(lambda: client.search_runs(
        [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`bma.stopped_early` = 'true'",
        max_results=10_000)) if spec.search is not None and spec.search["scheduler"] else []
    status = "FAILED" if failed else "FINISHED"
    retry(lambda: client.set_terminated(parent_run_id, status=status))
    progress.close()
    early = f" ({len(stopped)} stopped early by {spec.search['scheduler']})" if stopped else ""
    print(f"\nstudy {name}: {len(results) - len(failed)} of {len(results)} trials finished{early}, {len(failed)} failed")
    for r in failed:
        first_line = str(r.error).strip().splitlines()[-1] if str(r.error).strip() else type(r.error).__name__
        print(f"  failed: {results_store.shown(r.path)}: {first_line[:300]}")
    print(f"\nMLflow store: {tracking_uri}   experiment: {name}")
    if tracking_uri.startswith("sqlite:"):
        print(f"  browse:  mlflow ui --backend-store-uri {tracking_uri}")
        # MLflow 3.17 opens an experiment on its GenAI side unless the URL says otherwise (test_mlflow_ui.py)
        print(f"           then http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    print(f"  tables:  python -m analysis export --study {name} --tracking-uri {tracking_uri}")
    return EXIT_TRIALS_FAILED if failed else EXIT_OK


class StudyInterrupted(Exception):
    """Ctrl-C during a Tune experiment of the study: Tune's status of each trial at the signal, and its results."""

    def __init__(self, states: dict[str, str], results: list | None):
        super().__init__("interrupted")
        self.states, self.results = states, results


def resume_command() -> str:
    """The command that resumes this study: this one, without --fresh (which would set the results aside)."""
    import shlex

    argv = [a for a in sys.argv[1:] if a != "--fresh"]
    return shlex.join(["python", sys.argv[0] if sys.argv[0].endswith("run.py") else "study/run.py", *argv])


def interrupted(name, total, states, tracking_uri, experiment_id, parent_run_id, client, progress) -> int:
    """The study was interrupted (Ctrl-C): its cut-off trials' runs are marked interrupted, its parent run KILLED,
    and the console says how to resume. Tune's experiment state and each trial's checkpoint are kept."""
    from trainables.tracking import mark_interrupted, retry

    marked = mark_interrupted(tracking_uri, experiment_id, parent_run_id)
    retry(lambda: client.set_terminated(parent_run_id, status=R.MLFLOW_INTERRUPTED))
    progress.close()
    done = sum(s == "TERMINATED" for s in states.values())
    failed = sum(s == "ERROR" for s in states.values())
    print(f"\nstudy {name}: interrupted: {done} of {total} trials finished, {failed} failed, {marked} cut off "
          f"(marked {R.STATUS_INTERRUPTED} in MLflow, not counted as results)"
          + ("; the others had not started" if isinstance(total, int) and done + failed + marked < total else ""))
    print(f"  resume:  {resume_command()}   (the same command, without --fresh: trials resume from their "
          "checkpoints)")
    print(f"\nMLflow store: {tracking_uri}   experiment: {name}")
    return EXIT_INTERRUPTED


def precision_rounds(spec: StudySpec, name: str, results: list, fit_experiment, client, parent_run_id: str,
                     space_of, progress_class, metric: str, mode: str | None) -> list:
    """The precision rounds (study.precision): after the grid's seeds, add seeds to the cells of the contrasts
    still open, one Tune experiment per round (``<study>.precision-<k>``), until every contrast is settled or at
    its cap. Each round's decision is recorded on the parent run (tags R.PRECISION + contrast, metrics
    precision/<contrast>/half_width by round) and printed. Returns the results of every round."""
    from mlflow.entities import RunTag

    from study import precision as P
    from study.spec import _canonical_value
    from trainables.bma_trainable import trial_config
    from trainables.tracking import retry

    axes = [p for p in spec.grid if p != P.SEED_PATH] + ([R.ARM] if spec.arms else [])
    contrasts = P.expand(spec.precision, spec.grid, spec.arms, _canonical_value)
    metrics = sorted({c.metric for c in contrasts})
    initial = len(spec.grid[P.SEED_PATH])
    seeds_done = sorted(int(s) for s in spec.grid[P.SEED_PATH])
    everything = list(results)
    round_index = 0
    while True:
        table = precision_table(everything, spec, axes, metrics, trial_config)
        statuses = P.decide(contrasts, table, spec.precision, spec.sesoi, initial)
        retry(lambda: client.log_batch(parent_run_id, tags=[
            RunTag(k, v) for k, v in P.records(statuses, round_index).items()]))
        for status in statuses:
            width = P.half_width(status.result)
            if width != float("inf"):
                retry(lambda: client.log_metric(parent_run_id, f"precision/{P.tag_name(status.contrast.name)}"
                                                f"/half_width", width, step=round_index))
        print(f"\nprecision, round {round_index} ({len(seeds_done)} seeds):")
        for status in statuses:
            print(f"  {status.line()}")
        cells, seeds = P.next_round(statuses, seeds_done, spec.precision)
        if not seeds:
            return everything
        round_index += 1
        distinct = spec.distinct_trials_of(P.round_points(cells, seeds, spec.grid))
        print(f"precision round {round_index}: seeds {seeds[0]}..{seeds[-1]} for {len(cells)} cells "
              f"({len(distinct)} distinct trials)")
        progress = progress_class(total=len(distinct), metric=metric, live=sys.stdout.isatty(), mode=mode)
        everything += fit_experiment(precision_experiment(name, round_index), space_of(spec, distinct), {}, progress)
        progress.close()
        seeds_done += seeds


def precision_table(results: list, spec: StudySpec, axes: list[str], metrics: list[str], trial_config) -> dict:
    """{(metric, cell key, seed): value} from Tune's results: each finished trial in every cell it stands for."""
    from study import precision as P
    from study.spec import ARM_CELL

    table = {}
    for r in results:
        if r.error is not None or not r.metrics or not r.config:
            continue
        cfg, arm, cells = trial_config(r.config, spec.base)
        flat = cfg.to_flat()
        arm_name = arm.get("name") if arm else None
        for member in cells or [{}]:
            cell = {**flat, **{k: v for k, v in member.items() if k != ARM_CELL}}
            if spec.arms:
                cell[R.ARM] = member.get(ARM_CELL, arm_name)
            key = P.cell_key(cell, axes)
            for m in metrics:
                value = r.metrics.get(m)
                if isinstance(value, (int, float)) and value == value:
                    table[(m, key, int(cell[P.SEED_PATH]))] = float(value)
    return table


def exit_now(code: int) -> None:
    """End the driver without the interpreter's native teardown of torch's and Ray's libraries (~1.8 s with no
    Python frame, measured in benchmarks/README.md): by now everything is written (the MLflow calls are synchronous,
    Tune has saved its state, Ray is shut down), so only the console buffers need flushing."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
