"""Run a study: a Ray Tune grid over data regimes, every trial recorded in MLflow, resumable after any crash.

    python study/run.py study/specs/quick.yaml                       # embedded Ray, ./mlflow.db
    python study/run.py study/specs/quick.yaml --smoke               # seconds-long version of any spec
    python study/run.py study/specs/paper.yaml --address auto --tracking-uri http://HEAD:5000   # on a cluster

Rerunning the same command continues a study that was interrupted: finished trials are not trained again and
no trial gets a second MLflow run. Exit codes: 0 every trial finished; 2 the spec, the data or the resume target
is wrong (nothing was started); 3 the study ran but some trials failed (listed, and marked FAILED in MLflow).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from study.spec import SpecError, StudySpec, load_spec  # noqa: E402

EXIT_OK, EXIT_BAD_INPUT, EXIT_TRIALS_FAILED = 0, 2, 3
FINGERPRINT_FILE = "bma_fingerprint.txt"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="study/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", help="study spec YAML (see study/specs/ and docs/spec.md)")
    p.add_argument("--smoke", action="store_true", help="shrink the spec to a seconds-long run (tiny sizes, one epoch)")
    p.add_argument("--address", default=None, help="Ray cluster: 'auto' (on a cluster node) or ray://HOST:10001; default: embedded Ray")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db")
    p.add_argument("--storage", default=None, help="Tune results folder or s3://, gs:// URI; default ./ray_results")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded Ray (default: all)")
    p.add_argument("--metric", default="acc/sound_probe_h", help="metric whose best value the progress view shows")
    p.add_argument("--fresh", action="store_true", help="start over: set aside earlier Tune results of this study name")
    p.add_argument("--validate-only", action="store_true", help="check the spec and the data, start nothing")
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's and Tune's own logs")
    return p.parse_args(argv)


def resolve_tracking_uri(arg: str | None) -> str:
    uri = arg or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # Trials run in other working folders: make the store's path absolute.
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def resolve_storage(arg: str | None) -> str:
    if arg and "://" in arg:
        return arg
    return str(Path(arg or "ray_results").resolve())


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


def resources_problem(resources: dict[str, float]) -> str | None:
    """Why no node of the running Ray cluster can ever hold one trial, or None."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU")):
        need = resources[key]
        best = max((n.get(ray_key, 0.0) for n in nodes), default=0.0)
        if need > best:
            return f"resources.{key}: {need:g} per trial, but the largest node has {best:g}"
    return None


def prepare_data(spec: StudySpec, verbose: bool):
    """Features for every distinct data setting (computed once, cached on disk), and every trial's regime checked.

    Returns ({data_key: TrialData}, problems)."""
    from bma.config import ConfigError, TrialConfig
    from bma.data.errors import DataError
    from bma.data.regimes import RegimeError
    from bma.trainer import load_trial_data, make_regime
    from trainables.bma_trainable import data_key

    datas, problems, checked = {}, [], set()
    for flat in spec.trial_flats():
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
        if datas[key] is None:
            continue
        regime_id = (key, cfg.regime)
        if regime_id in checked:
            continue
        checked.add(regime_id)
        try:
            make_regime(cfg, datas[key])
        except (RegimeError, DataError) as exc:
            problems.append(str(exc))
    return datas, sorted(set(problems))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = load_spec(args.spec, smoke=args.smoke)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    storage = resolve_storage(args.storage)
    name = spec.name + ("-smoke" if args.smoke else "")
    experiment_dir = None if "://" in storage else Path(storage) / name
    fingerprint = spec.fingerprint()
    if experiment_dir is not None and experiment_dir.exists() and not args.fresh:
        saved = experiment_dir / FINGERPRINT_FILE
        if saved.is_file() and saved.read_text().strip() != fingerprint:
            print(f"error: {experiment_dir} holds results of a different version of study {name!r} "
                  f"(spec changed since). Rename the study, or pass --fresh to set the old results aside.", file=sys.stderr)
            return EXIT_BAD_INPUT

    print(f"study {name}: {spec.n_trials} trials, {spec.resources['cpu']:g} CPU / {spec.resources['gpu']:g} GPU each")
    datas, problems = prepare_data(spec, args.verbose)
    if problems:
        print(f"error: {args.spec}: the data cannot satisfy this study:\n  " + "\n  ".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.validate_only:
        print("spec and data are valid; nothing started (--validate-only)")
        return EXIT_OK

    if args.fresh and experiment_dir is not None and experiment_dir.exists():
        aside = experiment_dir.with_name(f"{experiment_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(experiment_dir), aside)
        print(f"--fresh: earlier results moved to {aside}")

    return run_study(spec, name, fingerprint, datas, tracking_uri, storage, experiment_dir, args)


def run_study(spec, name, fingerprint, datas, tracking_uri, storage, experiment_dir, args) -> int:
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # save the study's state often: a killed driver resumes
    if not args.verbose:
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray
    from mlflow.tracking import MlflowClient

    if not args.verbose:  # MLflow's and alembic's INFO lines about creating the store are noise here
        for logger in ("mlflow", "alembic"):
            logging.getLogger(logger).setLevel(logging.WARNING)
    from ray import tune

    from study.progress import StudyProgress
    from trainables.bma_trainable import StudyContext, train_bma
    from trainables.tracking import ensure_experiment, ensure_parent_run, retry

    ray.init(
        address=args.address,
        num_cpus=args.num_cpus if args.address is None else None,
        include_dashboard=False if args.address is None else None,
        log_to_driver=args.verbose,
        logging_level=logging.INFO if args.verbose else logging.ERROR,
        configure_logging=True,
        ignore_reinit_error=True,
    )
    remote_uri = reachable_from_workers(tracking_uri, args.address)
    try:
        # Checked before anything is written: a refused study leaves no MLflow store or run behind.
        resources = {"cpu": spec.resources["cpu"], "gpu": spec.resources["gpu"]}
        unfit = resources_problem(resources)
        if unfit and args.address is None:
            print(f"error: {spec.source_path}: {unfit}; set resources.gpu: 0 or run on a cluster (--address)", file=sys.stderr)
            return EXIT_BAD_INPUT
        if unfit:
            print(f"warning: {unfit}; trials wait until the autoscaler adds such a node", file=sys.stderr)
        client = MlflowClient(tracking_uri)
        try:
            experiment_id = ensure_experiment(client, name, tracking_uri)
        except Exception as exc:  # unreachable server, bad URI
            print(f"error: --tracking-uri {tracking_uri}: cannot reach the MLflow store ({exc})", file=sys.stderr)
            return EXIT_BAD_INPUT
        spec_text = Path(spec.source_path).read_text() if Path(spec.source_path).is_file() else ""
        parent_run_id = ensure_parent_run(client, experiment_id, name, fingerprint, spec_text)
        context = StudyContext(name, tracking_uri, experiment_id, parent_run_id, dict(spec.base),
                               driver_ip=ray.util.get_node_ip_address(),
                               remote_tracking_uri=remote_uri if remote_uri != tracking_uri else None)
        # One object-store entry per data setting: a trial fetches only its own features, never the study's all.
        data_refs = {key: ray.put(value) for key, value in datas.items()}
        trainable = tune.with_resources(tune.with_parameters(train_bma, study=context, data=data_refs), resources)
        param_space = {key: tune.grid_search(values) for key, values in spec.grid.items()}
        progress = StudyProgress(total=spec.n_trials, metric=args.metric, live=sys.stdout.isatty())
        run_config = tune.RunConfig(
            name=name,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures, fail_fast=False),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[progress],
            verbose=2 if args.verbose else 0,
        )
        path = str(experiment_dir) if experiment_dir is not None else f"{storage.rstrip('/')}/{name}"
        if tune.Tuner.can_restore(path):
            print(f"resuming study {name} from {path}")
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True, param_space=param_space)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=spec.max_concurrent_trials),
                run_config=run_config,
            )
        if experiment_dir is not None:
            experiment_dir.mkdir(parents=True, exist_ok=True)
            (experiment_dir / FINGERPRINT_FILE).write_text(fingerprint)
        results = tuner.fit()
    finally:
        ray.shutdown()

    failed = [r for r in results if r.error is not None]
    status = "FAILED" if failed else "FINISHED"
    retry(lambda: client.set_terminated(parent_run_id, status=status))
    progress.close()
    print(f"\nstudy {name}: {len(results) - len(failed)} of {len(results)} trials finished, {len(failed)} failed")
    for r in failed:
        first_line = str(r.error).strip().splitlines()[-1] if str(r.error).strip() else type(r.error).__name__
        print(f"  failed: {r.path}: {first_line[:300]}")
    print(f"\nMLflow store: {tracking_uri}   experiment: {name}")
    if tracking_uri.startswith("sqlite:"):
        print(f"  browse:  mlflow ui --backend-store-uri {tracking_uri}")
    print(f"  tables:  python -m analysis export --study {name} --tracking-uri {tracking_uri}")
    return EXIT_TRIALS_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
