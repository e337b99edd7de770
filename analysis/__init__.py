"""From MLflow to paper-ready results: per-trial records, per-cell aggregates with confidence intervals, paired
significance tests against a baseline variant, the paired/unpaired exchange rate, and figures.

Reads only the MLflow store (and its own exported Parquet), never a trial's internals. Entry point:
``python -m analysis export --study NAME`` (docs/analysis.md). Library use::

    from analysis import collect_study, summarize, compare_variants, run_export, ExportOptions
    data = collect_study("quick", "sqlite:///mlflow.db")
    table = summarize(data.runs, data.keys)
"""

from analysis.aggregate import MAIN_METRICS, bootstrap_interval, describe, summarize, t_interval
from analysis.collect import AnalysisError, StudyData, collect_study, list_studies, load_exported
from analysis.compare import compare_variants, holm, paired_test
from analysis.exchange import exchange_rates
from analysis.export import ExportOptions, ExportResult, run_export

__all__ = [
    "AnalysisError",
    "ExportOptions",
    "ExportResult",
    "MAIN_METRICS",
    "StudyData",
    "bootstrap_interval",
    "collect_study",
    "compare_variants",
    "describe",
    "exchange_rates",
    "holm",
    "list_studies",
    "load_exported",
    "paired_test",
    "run_export",
    "summarize",
    "t_interval",
]
