"""The export pipeline: collect -> aggregate -> compare -> exchange rate -> tables and plots, written atomically.

Everything is written into a temporary directory beside the target and moved into place at the end, so a failed
export leaves no partial output directory (and an earlier export of the same study stays until the new one is
complete). An existing ``--out`` folder is replaced only when an earlier export wrote it (its ``manifest.json``
says so and lists every file in it) or when it is empty: anything else (a study's folder with its mlflow.db, a
thesis folder, an export a user added notes to) is refused, never deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import pandas as pd

from analysis import plots as P
from analysis import tables as T
from analysis.aggregate import BOOTSTRAP_RESAMPLES, CI_METHODS, MAIN_METRICS, present_main, summarize
from analysis.collect import AnalysisError, StudyData, collect_study, study_sesoi
from analysis.compare import compare_variants, resolve_sesoi
from analysis.exchange import exchange_rates

log = logging.getLogger("analysis")

DEFAULT_OUT_ROOT = "reports"  # default output: reports/<study> under the current directory
DEFAULT_PLOT_METRICS = ("acc/image_probe_h", "acc/sound_probe_h", "retrieval/i2s_r1", "assoc/i2s_acc")
DEFAULT_HEATMAP_METRICS = ("acc/image_probe_h", "assoc/i2s_acc")
DEFAULT_EXCHANGE_METRICS = ("acc/image_probe_h", "acc/sound_probe_h", "assoc/i2s_acc")
MANIFEST = "manifest.json"
GENERATOR = "bma-study analysis export"  # manifest["generator"]: the mark of a folder this module wrote
# every report command writes its folder through ``write_folder`` and marks it "bma-study <module>"; a folder any of
# them wrote (its manifest lists every file in it) may be replaced by any of them: nothing in it is a user's
GENERATOR_PREFIX = "bma-study analysis"


@dataclass
class ExportOptions:
    study: str
    tracking_uri: str | None = None
    out: str | None = None  # default reports/<study>
    baseline: str | None = None  # default unimodal when it ran
    ci: str = CI_METHODS[0]  # one of CI_METHODS
    metrics: list[str] | None = None  # globs over metric names; None = every metric
    n_resamples: int = BOOTSTRAP_RESAMPLES
    plots: bool = True
    plot_metrics: list[str] | None = None  # accuracy-vs-pairing figures (metric names without final/)
    heatmap_metric: str | None = None
    heatmap_variant: str = "bma"
    exchange_metric: str | None = None  # the one plotted; the table covers DEFAULT_EXCHANGE_METRICS + this
    info_plane: list[tuple[str, str]] | None = None
    parent_run: str | None = None
    sesoi: list[str] | None = None  # --sesoi values (``0.02`` for acc/*, or ``GLOB=0.02``); replace the spec's
    recorded_sesoi: dict[str, float] | None = None  # the spec's analysis.sesoi, read by run_export from the parent run


@dataclass
class ExportResult:
    out_dir: str
    files: list[str]
    notes: list[str]
    data: StudyData = field(repr=False)
    summary: pd.DataFrame = field(repr=False)
    compare: pd.DataFrame = field(repr=False)
    exchange: pd.DataFrame = field(repr=False)


def _write_table(df: pd.DataFrame, base: str, formats=("csv", "parquet")) -> list[str]:
    out = []
    for fmt in formats:
        path = f"{base}.{fmt}"
        if fmt == "csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path, index=False)
        out.append(path)
    return out


def _write_text(path: str, text: str) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def _first_present(candidates, metrics: list[str]) -> str | None:
    for m in candidates:
        if m in metrics:
            return m
    return None


def build_outputs(data: StudyData, opts: ExportOptions, out_dir: str) -> tuple[list[str], list[str], dict]:
    """Write every table and figure of ``data`` into ``out_dir`` (which exists); returns (files, notes, frames)."""
    if opts.ci not in CI_METHODS:
        raise AnalysisError(f"--ci: expected one of {', '.join(CI_METHODS)}, got {opts.ci!r}")
    notes = list(data.notes)
    files: list[str] = []
    runs, keys = data.runs, data.keys
    if opts.baseline and opts.baseline not in set(runs["variant"].dropna()):
        raise AnalysisError(f"--baseline {opts.baseline!r}: no trial of study {data.study!r} has that variant "
                            f"(variants: {', '.join(sorted(set(runs['variant'].dropna())))})")
    header = {"study": data.study, "tracking_uri": data.tracking_uri, "experiment_id": data.experiment_id}
    j = lambda name: os.path.join(out_dir, name)  # noqa: E731

    # trials and histories
    files += _write_table(runs, j("runs"), ("parquet", "csv"))
    data.histories.to_parquet(j("histories.parquet"), index=False)
    files.append(j("histories.parquet"))

    # summary
    summary = summarize(runs, keys, ci=opts.ci, n_resamples=opts.n_resamples)
    main_cols = present_main(data.metrics) or [f"final/{m}" for m in data.metrics[:6]]
    n_single = int((summary["n_seeds"] == 1).sum())
    if n_single:
        notes.append(f"{n_single} cell(s) with a single finished seed: no CI (NaN)")
    empty = summary[summary["n_seeds"] == 0]
    if len(empty):
        notes.append(f"{len(empty)} cell(s) without any finished trial (stats NaN, listed with their failures)")
    files += _write_table(summary, j("summary"))

    # comparisons
    sesoi, sesoi_source = resolve_sesoi(opts.sesoi, opts.recorded_sesoi)
    compare, baseline, cnotes = compare_variants(runs, keys, opts.baseline, sesoi=sesoi)
    notes += cnotes
    files += _write_table(compare, j("compare"))
    files.append(_write_text(j("compare.md"), T.compare_markdown(compare, keys, baseline, header, cnotes, main_cols,
                                                                 sesoi_source)))
    files.append(_write_text(j("compare.tex"), T.compare_latex(compare, keys, baseline, data.study, main_cols)))

    # exchange rate
    ex_metrics = [f"final/{m}" for m in DEFAULT_EXCHANGE_METRICS if m in data.metrics]
    if opts.exchange_metric:
        wanted = opts.exchange_metric.removeprefix("final/")
        if wanted not in data.metrics:
            notes.append(f"--exchange-metric {wanted}: not logged by this study")
        elif f"final/{wanted}" not in ex_metrics:
            ex_metrics.insert(0, f"final/{wanted}")
    if not ex_metrics and data.metrics:
        ex_metrics = main_cols[:1]
    exchange, xnotes = exchange_rates(runs, keys, ex_metrics)
    notes += xnotes
    files += _write_table(exchange, j("exchange_rate"))
    files.append(_write_text(j("exchange_rate.md"), T.exchange_markdown(exchange, keys, header, xnotes)))

    # figures
    if opts.plots:
        pdir = j("plots")
        os.makedirs(pdir, exist_ok=True)
        plot_metrics = opts.plot_metrics or [m for m in DEFAULT_PLOT_METRICS if m in data.metrics] or data.metrics[:1]
        used_runs = runs[runs["used"]]
        for m in plot_metrics:
            f, n = P.accuracy_vs_pairing(summary, keys, f"final/{m.removeprefix('final/')}", pdir, opts.ci)
            files, notes = files + f, notes + n
        hm = opts.heatmap_metric or _first_present(DEFAULT_HEATMAP_METRICS, data.metrics) or \
            (data.metrics[0] if data.metrics else None)
        if hm:
            f, n = P.heatmap_slots_tau(summary, keys, f"final/{hm.removeprefix('final/')}", opts.heatmap_variant, pdir)
            files, notes = files + f, notes + n
        f, n = P.info_over_epochs(runs, data.histories, keys, pdir)
        files, notes = files + f, notes + n
        f, n = P.info_plane(runs, data.histories, keys, pdir, opts.info_plane)
        files, notes = files + f, notes + n
        xm = ("final/" + opts.exchange_metric.removeprefix("final/")) if opts.exchange_metric else \
            (ex_metrics[0] if ex_metrics else None)
        if xm:
            f, n = P.exchange_rate_plot(exchange, keys, xm, pdir)
            files, notes = files + f, notes + n
        if used_runs.empty:
            notes.append("no finished trial: figures have nothing to show")

    # the human-readable summary last: it lists every note gathered above
    files.append(_write_text(j("summary.md"), T.summary_markdown(summary, runs, keys, main_cols, opts.ci,
                                                                 opts.n_resamples, header, notes)))
    files.append(_write_text(j("summary.tex"), T.summary_latex(summary, keys, main_cols, opts.ci, opts.n_resamples,
                                                               data.study)))
    manifest = {
        "generator": GENERATOR,
        "study": data.study,
        "tracking_uri": data.tracking_uri,
        "experiment_id": data.experiment_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "options": {k: v for k, v in asdict(opts).items()},
        "keys": keys,
        "baseline": baseline,
        "trials": {s: int(c) for s, c in runs["state"].value_counts().items()},
        "cells": len(summary),
        "git_commits": sorted(str(c) for c in runs["git_commit"].dropna().unique()),
        "metrics": data.metrics,
        "files": sorted(os.path.relpath(f, out_dir) for f in files),
        "notes": notes,
    }
    files.append(_write_text(j(MANIFEST), json.dumps(manifest, indent=2, default=str) + "\n"))
    return files, notes, {"summary": summary, "compare": compare, "exchange": exchange}


def replace_problem(out_dir: str, command: str = "python -m analysis export") -> str | None:
    """Why the existing ``out_dir`` must not be replaced by a report ``command`` (an export, analysis.boost,
    analysis.ablation), or None: it does not exist, is empty, or is exactly what an earlier report wrote (its
    manifest, marked by a GENERATOR_PREFIX generator, lists every file in it). The one rule of every report
    command's --out (``write_folder``)."""
    if os.path.islink(out_dir):
        return f"--out {out_dir} is a symbolic link; give the folder itself (or a new one)"
    if not os.path.exists(out_dir):
        return None
    if not os.path.isdir(out_dir):
        return f"--out {out_dir} exists and is not a directory; choose a new folder"
    cwd = os.path.realpath(os.getcwd())
    real = os.path.realpath(out_dir)
    if cwd == real or cwd.startswith(real.rstrip(os.sep) + os.sep):
        return (f"--out {out_dir} is the current folder or one above it; `{command}` replaces its --out folder "
                "wholesale: choose a new folder")
    try:
        present = []
        for root, dirs, names in os.walk(out_dir):
            present += [os.path.relpath(os.path.join(root, n), out_dir) for n in names]
            present += [os.path.relpath(os.path.join(root, d), out_dir) + os.sep for d in dirs
                        if os.path.islink(os.path.join(root, d))]
    except OSError as exc:
        return f"--out {out_dir}: cannot be read ({exc.strerror or exc})"
    if not present:
        return None  # an empty folder: nothing to lose
    refuse = (f"--out {out_dir} exists and was not written by `{command}` (no report manifest.json in it); "
              "refusing to replace it: choose a new or empty folder")
    try:
        with open(os.path.join(out_dir, MANIFEST), encoding="utf-8") as fh:
            manifest = json.load(fh)
    except (OSError, ValueError):
        return refuse
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    legacy = isinstance(manifest, dict) and {"study", "created", "options", "files"} <= set(manifest)
    ours = str(manifest.get("generator", "")).startswith(GENERATOR_PREFIX) if isinstance(manifest, dict) else False
    if not isinstance(listed, list) or not (ours or legacy):
        return refuse
    extra = sorted(set(present) - {str(f) for f in listed} - {MANIFEST})
    if extra:
        shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
        return (f"--out {out_dir} holds an earlier report plus files it did not write ({shown}); refusing to "
                "replace it: move them out, or choose another --out")
    return None


def write_folder(out_dir: str, build, command: str):
    """Write a report folder atomically, the one way every report command writes its --out: refuse an existing
    folder ``replace_problem`` names (AnalysisError, nothing written), else call ``build(tmp)`` on a temporary
    folder beside ``out_dir`` and move it into place; a failure leaves the earlier folder as it was. ``build``
    writes every file, its manifest included, and returns what the caller wants back (with the file paths it
    wrote under ``tmp``, as its first item, when it is a tuple: they are returned rebased onto ``out_dir``)."""
    out_dir = os.path.abspath(out_dir)
    problem = replace_problem(out_dir, command)
    if problem:
        raise AnalysisError(problem)
    parent = os.path.dirname(out_dir)
    made = []
    probe = parent
    while not os.path.exists(probe):
        made.append(probe)
        probe = os.path.dirname(probe)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.partial-", dir=parent)
    except OSError as exc:
        _remove_made(made)
        raise AnalysisError(f"--out {out_dir}: cannot write in {parent} ({exc.strerror or exc}); choose a "
                            "writable folder") from None
    old = None
    try:
        result = build(tmp)
        if os.path.exists(out_dir):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.old-", dir=parent)
            os.rmdir(old)
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old and os.path.exists(old) and not os.path.exists(out_dir):
            os.rename(old, out_dir)  # the earlier folder stays until a new one is complete
        _remove_made(made)
        if isinstance(exc, OSError):  # a full disk, a folder that turned read-only: a problem to fix, no traceback
            raise AnalysisError(f"--out {out_dir}: writing the report failed ({exc.strerror or exc}); nothing was "
                                "replaced") from exc
        raise
    if isinstance(result, tuple) and result and isinstance(result[0], list):
        result = ([os.path.join(out_dir, os.path.relpath(f, tmp)) for f in result[0]],) + result[1:]
    return result


def write_manifest(folder: str, generator: str, files: list[str], **fields) -> str:
    """The folder's manifest.json: ``generator`` (GENERATOR_PREFIX ...), the files it holds (relative), ``fields``."""
    manifest = {"generator": generator, **fields,
                "files": sorted(os.path.relpath(f, folder) for f in files)}
    return _write_text(os.path.join(folder, MANIFEST), json.dumps(manifest, indent=2, default=str) + "\n")


def run_export(opts: ExportOptions) -> ExportResult:
    """Collect the study, then write every output into ``opts.out`` (default reports/<study>) atomically. An existing
    folder is replaced only if an earlier report wrote it (``replace_problem``)."""
    data = collect_study(opts.study, opts.tracking_uri, opts.metrics, opts.parent_run)  # errors before any output
    if opts.recorded_sesoi is None:
        opts.recorded_sesoi, snotes = study_sesoi(opts.study, opts.tracking_uri, opts.parent_run)
        data.notes.extend(snotes)
    try:
        resolve_sesoi(opts.sesoi, opts.recorded_sesoi)
    except ValueError as exc:
        raise AnalysisError(f"SESOI ({'--sesoi' if opts.sesoi else 'the spec'}): {exc}") from None
    out_dir = os.path.abspath(opts.out or os.path.join(DEFAULT_OUT_ROOT, data.study))
    files, notes, frames = write_folder(out_dir, lambda tmp: build_outputs(data, opts, tmp),
                                        "python -m analysis export")
    for n in notes:
        log.info("note: %s", n)
    return ExportResult(out_dir, files, notes, data, frames["summary"], frames["compare"], frames["exchange"])


def _remove_made(made: list[str]) -> None:
    for d in made:  # directories this call created, deepest first
        try:
            os.rmdir(d)
        except OSError:
            break


__all__ = ["ExportOptions", "ExportResult", "MAIN_METRICS", "build_outputs", "replace_problem", "run_export",
           "write_folder", "write_manifest"]
