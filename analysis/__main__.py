"""``python -m analysis``: export a study's tables and figures from MLflow; list the studies of a store.

    python -m analysis export --study quick [--tracking-uri URI] [--out DIR] [--baseline unimodal]
                              [--ci t|bootstrap] [--metrics 'acc/*' 'info/*' ...]
    python -m analysis studies [--tracking-uri URI]
    python -m analysis report --study quick [--tracking-uri URI] [--parent-run ID] --out DIR   # one HTML page

Exit codes: 0 done, 2 a problem to fix (unknown study, empty experiment, unreachable store, bad option).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from analysis.aggregate import BOOTSTRAP_RESAMPLES, CI_METHODS
from analysis.collect import AnalysisError, list_studies, open_client, resolve_tracking_uri
from analysis.export import DEFAULT_OUT_ROOT, ExportOptions, run_export


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    uri_help = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the cwd)"

    ex = sub.add_parser("export", help="tables (CSV, Parquet, Markdown, LaTeX) and figures of one study")
    ex.add_argument("--study", required=True, help="study name (= the MLflow experiment name)")
    ex.add_argument("--tracking-uri", help=uri_help)
    ex.add_argument("--out", help=f"output directory (default: {DEFAULT_OUT_ROOT}/<study>); replaced atomically")
    ex.add_argument("--baseline", help="variant the others are compared with (default: unimodal, if it ran)")
    ex.add_argument("--ci", choices=CI_METHODS, default=CI_METHODS[0], help="95 %% interval: Student t or "
                    f"percentile bootstrap (default {CI_METHODS[0]})")
    ex.add_argument("--bootstrap-resamples", type=int, default=BOOTSTRAP_RESAMPLES,
                    help=f"resamples of --ci bootstrap (default {BOOTSTRAP_RESAMPLES})")
    ex.add_argument("--metrics", nargs="+", metavar="GLOB", help="metric names to collect (fnmatch globs, e.g. "
                    "'acc/*' 'info/*'); default: every metric")
    ex.add_argument("--parent-run", help="only the trials of this study invocation (parent run id)")
    ex.add_argument("--no-plots", action="store_true", help="tables only")
    ex.add_argument("--plot-metrics", nargs="+", metavar="METRIC", help="metrics of the accuracy-vs-pairing figures")
    ex.add_argument("--heatmap-metric", help="metric of the (memory_slots x tau_m) heatmap")
    ex.add_argument("--heatmap-variant", default="bma", help="variant of the heatmap (default bma)")
    ex.add_argument("--exchange-metric", help="metric whose exchange rate is plotted (default acc/image_probe_h)")
    ex.add_argument("--info-plane", nargs=2, action="append", metavar=("X", "Y"),
                    help="information-plane axes, quantity[/estimator], e.g. I_zv_zs I_S_Sprime/infonce "
                         "(repeatable)")
    ex.add_argument("--sesoi", nargs="+", metavar="DELTA", help="smallest effect of interest for the verdicts: "
                    "'0.02' (for acc/*) or 'GLOB=0.02', repeatable; replaces the spec's analysis.sesoi")
    ex.add_argument("-q", "--quiet", action="store_true", help="print only errors")

    st = sub.add_parser("studies", help="list the studies (experiments) of a tracking store")
    st.add_argument("--tracking-uri", help=uri_help)

    rp = sub.add_parser("report", help="one self-contained HTML page of a study (spec, progress, contrasts, "
                        "information quantities, figures); opens from disk")
    rp.add_argument("--study", required=True, help="study name (= the MLflow experiment name)")
    rp.add_argument("--tracking-uri", help=uri_help)
    rp.add_argument("--out", required=True, help="folder for report.html (+ manifest.json); replaced only if empty "
                    "or written by an earlier report")
    rp.add_argument("--parent-run", help="the study invocation (parent run id) whose spec is shown (default: latest)")
    rp.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    return ap


def _quiet_http_retries() -> None:
    """Fail fast on an unreachable server (MLflow's default retries take minutes) unless the user chose otherwise."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(message)s", stream=sys.stderr)
    for noisy in ("mlflow", "alembic", "sqlalchemy", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retry chatter: the error below says it once
    _quiet_http_retries()
    try:
        uri = resolve_tracking_uri(args.tracking_uri)
        if uri.lower().startswith(("http://", "https://")):
            # A server that is not there, or accepts and never answers: said in seconds, not after the retries
            from analysis.store import server_problem

            problem = server_problem(uri)
            if problem:
                raise AnalysisError(problem)
        if args.command == "studies":
            for name in list_studies(open_client(uri)):
                print(name)
            return 0
        if args.command == "report":
            from analysis.report import write_report

            path, page = write_report(args.study, uri, args.out, args.parent_run)
            if not args.quiet:
                c = page.counts
                print(f"study {args.study}: {c['finished']} finished, {c['running']} running, {c['failed']} failed "
                      f"-> {path}")
            return 0
        opts = ExportOptions(
            study=args.study, tracking_uri=args.tracking_uri, out=args.out, baseline=args.baseline, ci=args.ci,
            metrics=args.metrics, n_resamples=args.bootstrap_resamples, plots=not args.no_plots,
            plot_metrics=args.plot_metrics, heatmap_metric=args.heatmap_metric, heatmap_variant=args.heatmap_variant,
            exchange_metric=args.exchange_metric, info_plane=[tuple(p) for p in args.info_plane] if args.info_plane
            else None, parent_run=args.parent_run, sesoi=args.sesoi,
        )
        result = run_export(opts)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    runs = result.data.runs
    if not args.quiet:
        print(f"study {result.data.study}: {len(runs)} trials ({int((runs['state'] == 'finished').sum())} finished, "
              f"{int((runs['state'] == 'failed').sum())} failed, {int((runs['state'] == 'running').sum())} running"
              f"{', %d interrupted' % n_cut if (n_cut := int((runs['state'] == 'interrupted').sum())) else ''}), "
              f"{len(result.summary)} cells -> {result.out_dir}")
        print(f"  {len(result.files)} files; see {os.path.join(result.out_dir, 'summary.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
