"""Collect one study's trials from MLflow into flat tables (one record per trial, one row per logged value).

Reads only what the study engine writes to MLflow, through the record contract (bma/record.py; docs/analysis.md,
"The MLflow schema"): the experiment named after the study, its parent runs (the study's axes), runs tagged
``bma.role=trial``, their params (the flat trial config with dotted names, values as strings) and their per-round
metrics. Nothing here imports the science library; from ``bma`` only the config's field types (``bma.config``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import typing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from bma.config import FLAT_TYPES, SHORT_NAMES
from bma import record as R
from analysis.aggregate import VALUE_PREFIXES
from bma.record import DEFAULT_TRACKING_URI, SEED_KEY, VARIANT_KEY

log = logging.getLogger("analysis")


class AnalysisError(Exception):
    """A problem the user must fix (unknown study, empty experiment, unreachable store): exit code 2."""

    exit_code = 2


class OutOfTime(Exception):
    """A reader's own ``check`` stopped it (a live refresh of the study's page whose time is up: analysis/report.py's
    PageBudget, study/live_report.py): nothing is wrong with the store."""


@dataclass
class StudyData:
    """Everything ``analysis`` knows about one study, as collected from MLflow."""

    study: str
    tracking_uri: str
    experiment_id: str
    runs: pd.DataFrame  # one row per trial run (see RUN_COLUMNS_DOC in docs/analysis.md)
    histories: pd.DataFrame  # run_id, metric, step, value
    metrics: list[str]  # metric names collected (sorted)
    keys: list[str]  # cell keys: the study's recorded axes (bma/record.py AXES), classic axes first
    notes: list[str] = field(default_factory=list)

    @property
    def used(self) -> pd.DataFrame:
        """The finished trials that represent their (cell, seed): what tables and plots aggregate."""
        return self.runs[self.runs["used"]]


# -- tracking URI and client -------------------------------------------------------------------------------------


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The explicit URI, else $MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db`` in the current directory."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def open_client(uri: str):
    """A read-only MlflowClient for the existing store ``uri`` (analysis/store.py: a missing, empty or non-SQLite
    file is refused, never created or migrated); AnalysisError when there is no store or it cannot be reached."""
    from analysis.store import StoreError, open_read_only

    try:
        return open_read_only(uri)
    except StoreError as exc:
        raise AnalysisError(str(exc)) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:400]


def list_studies(client) -> list[str]:
    """Names of the experiments that look like studies (tag bma.study), else every non-default experiment."""
    experiments = _all_experiments(client)
    tagged = sorted(e.name for e in experiments if R.STUDY in (e.tags or {}))
    return tagged or sorted(e.name for e in experiments if e.name != "Default")


def _all_experiments(client) -> list:
    out, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def find_experiment(client, study: str, uri: str):
    """The experiment of a study: the one named ``study``, else the one tagged ``bma.study=<study>``."""
    exp = client.get_experiment_by_name(study)
    if exp is None:
        matches = [e for e in _all_experiments(client) if (e.tags or {}).get(R.STUDY) == study]
        exp = matches[0] if matches else None
    if exp is None:
        known = list_studies(client)
        hint = f"; studies in this store: {', '.join(known)}" if known else "; this store holds no study"
        raise AnalysisError(f"unknown study {study!r} in tracking store {uri!r}{hint}")
    if exp.lifecycle_stage == "deleted":
        raise AnalysisError(f"study {study!r} in {uri!r} is a deleted experiment; restore it in MLflow first")
    return exp


# -- typing params -----------------------------------------------------------------------------------------------


def _scalar_type(name: str) -> type | None:
    hint = FLAT_TYPES.get(name)
    if hint is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if args else hint
    return base if base in (bool, int, float, str) else str


def type_param(name: str, values: pd.Series) -> pd.Series:
    """MLflow's string params as typed values: float (None -> NaN), int, bool or str; by config type or content."""
    kind = _scalar_type(name)
    raw = values.astype(object).where(values.notna(), None)
    missing = raw.isna() | (raw.astype(str) == "None")
    if kind is None:  # not a config field: infer from the values
        for candidate in (int, float):
            try:
                converted = [candidate(v) for v in raw[~missing]]
            except (TypeError, ValueError):
                continue
            if candidate is int and missing.any():
                candidate = float
            kind = candidate
            break
        else:
            kind = str
    if kind is float:
        return pd.to_numeric(raw.where(~missing, np.nan), errors="coerce").astype("float64")
    if kind is int:
        if missing.any():
            return pd.to_numeric(raw.where(~missing, np.nan), errors="coerce").astype("float64")
        return pd.to_numeric(raw, errors="coerce").astype("int64")
    if kind is bool:
        return raw.map(lambda v: None if v is None or v == "None" else str(v).lower() in ("true", "1", "yes"))
    return raw.where(~missing, None).astype(object)


def short_name(key: str) -> str:
    """The short name of a dotted config key (``regime.pairing_ratio`` -> ``pairing_ratio``) for display."""
    inverse = {v: k for k, v in SHORT_NAMES.items()}
    return inverse.get(key, key)


def select_metrics(names, globs: list[str] | None) -> list[str]:
    """The metric names matching any of ``globs`` (fnmatch; all when None); the sample size and the flagged-estimate
    counts ride with any info/ metric, so a table of estimates always says how many there were and how many failed."""
    names = sorted(set(names))
    if not globs:
        return names
    chosen = {n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)}
    if any(n.startswith("info/") for n in chosen):
        chosen |= {n for n in INFO_COMPANIONS if n in names}
    return sorted(chosen)


INFO_COMPANIONS = ("info/n_samples", "info/n_flagged", "info/n_estimates")


# -- collection --------------------------------------------------------------------------------------------------


def _state(mlflow_status: str, bma_status: str | None) -> str:
    """finished | failed | interrupted | running, from MLflow's run status and the bma.status tag (failure wins;
    an interrupted trial, cut off by a Ctrl-C of its study and resumable, is never a result)."""
    s, b = (mlflow_status or "").upper(), (bma_status or "").lower()
    if s == "FAILED" or b == R.STATUS_FAILED:
        return "failed"
    if b == R.STATUS_INTERRUPTED:
        return R.STATUS_INTERRUPTED
    if s == "KILLED":
        return "failed"
    if s == "FINISHED" or b == R.STATUS_FINISHED:
        return "finished"  # includes trials a Tune scheduler stopped early: MLflow status FINISHED
    return "running"  # RUNNING/SCHEDULED: still running, or crashed without ending its run


def _search_trials(client, experiment_id: str, parent_run: str | None) -> list:
    filt = f"tags.`{R.ROLE}` = '{R.ROLE_TRIAL}'"
    if parent_run:
        filt += f" and tags.`{R.PARENT}` = '{parent_run}'"
    out, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filt, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _histories(client, uri: str, wanted: list[tuple[str, str]], workers: int | None, check=None) -> pd.DataFrame:
    def fetch(item):
        run_id, key = item
        if check is not None:
            check()  # one read at a time: a refresh whose time is up stops within one read
        history = client.get_metric_history(run_id, key)
        return [(run_id, key, int(m.step), float(m.value), int(m.timestamp)) for m in history]

    remote = urlparse(uri).scheme in ("http", "https", "databricks")
    n_workers = workers if workers is not None else (8 if remote else 1)
    if n_workers > 1 and len(wanted) > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            rows = [r for chunk in pool.map(fetch, wanted) for r in chunk]
    else:
        rows = [r for item in wanted for r in fetch(item)]
    hist = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value", "timestamp"])
    hist = hist.astype({"run_id": object, "metric": object, "step": "int64", "value": "float64", "timestamp": "int64"})
    # one value per (run, metric, step): the last one logged
    hist = hist.sort_values(["run_id", "metric", "step", "timestamp"], kind="stable")
    hist = hist.drop_duplicates(["run_id", "metric", "step"], keep="last")
    return hist.drop(columns="timestamp").reset_index(drop=True)


def _final_and_selected(hist: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Wide frame indexed by run_id: ``final/<m>`` (the value at the last step) and ``selected/<m>`` (the value at
    the step model selection picks on the validation split: the lowest R.SELECTION_METRIC; NaN when the run has
    no validation loss or did not log ``m`` at that step). Selection never reads the test split."""
    if hist.empty:
        return pd.DataFrame()
    final = hist.groupby(["run_id", "metric"], sort=False)["value"].last(skipna=False).unstack("metric")
    val = hist[hist["metric"] == R.SELECTION_METRIC].dropna(subset=["value"])
    # the first step that reaches the lowest validation loss (a tie keeps the earlier, cheaper model)
    chosen = val.sort_values(["run_id", "value", "step"], kind="stable").drop_duplicates("run_id")
    chosen = chosen.set_index("run_id")["step"].rename("selected_step")
    at = hist.merge(chosen, left_on="run_id", right_index=True)
    at = at[at["step"] == at["selected_step"]].set_index(["run_id", "metric"])["value"].unstack("metric")
    cols = {}
    for m in metrics:
        if m in final.columns:
            cols[f"final/{m}"] = final[m]
    for m in metrics:
        if m in final.columns:
            cols[f"selected/{m}"] = at[m] if m in at.columns else pd.Series(np.nan, index=final.index)
    epochs = hist.groupby("run_id")["step"].max().rename("n_epochs")
    return pd.concat([epochs, chosen.astype("float64"), pd.DataFrame(cols)], axis=1)


def _cell_rows(runs) -> tuple[list[tuple], int]:
    """(run, params, cell overrides) per cell a run counts in: one row for a plain run; for a shared run (tags
    bma.shared / bma.cells, a trial several grid points make), one row per grid point, its params overlaid with the
    settings that place it in that point's cell. Also how many runs are shared."""
    rows, shared = [], 0
    for r in runs:
        try:
            cells = R.read_cells(r.data.tags)
        except ValueError:
            log.warning("run %s: unreadable %s tag; counted once", r.info.run_id, R.CELLS)
            cells = None
        if not cells:
            rows.append((r, r.data.params, {}))
            continue
        shared += len(cells) > 1
        for cell in cells:
            params = {**r.data.params, **{k: R.param_text(v) for k, v in cell.items() if k != R.ARM}}
            rows.append((r, params, cell))
    return rows, shared


def _cell_keys(raw: pd.DataFrame, params: list[str], axes: list[str] | None, notes: list[str]):
    """(cell keys, classic axes no trial records): the recorded axes (the arm as column ``arm``), the classic axes
    first so tables read alike across studies; constant ones group nothing and show the setting. A config field
    that still varies within a (cell, seed) would be pooled as if it were a seed: it becomes a key, with a note.
    A study recorded before parent runs carried its axes gets the classic axes plus whatever varies."""
    missing = [k for k in R.CLASSIC_AXES if k not in raw.columns]
    if axes is None:
        if missing:
            notes.append(f"params missing from every trial, treated as empty: {', '.join(missing)}")
        varying = [k for k in params if raw[k].astype(str).nunique(dropna=False) > 1]
        extras = [k for k in varying if k in FLAT_TYPES and k not in R.CLASSIC_AXES and k != SEED_KEY]
        ignored = [k for k in varying if k not in FLAT_TYPES]
        notes.append("the study's parent run records no axes (written before they were): cell keys are the classic "
                     "axes plus every config field that varies")
        if extras:
            notes.append("config fields besides the classic axes vary across trials and are used as cell keys: "
                         + ", ".join(extras))
        if ignored:
            notes.append(f"params outside the trial config vary across trials and are ignored: {', '.join(ignored)}")
        return list(R.CLASSIC_AXES) + extras, missing
    recorded = ["arm" if a == R.ARM else a for a in axes]
    keys = [k for k in R.CLASSIC_AXES if k in raw.columns or k in recorded] + \
        [k for k in recorded if k not in R.CLASSIC_AXES]
    missing = [k for k in keys if k not in raw.columns and k != "arm"]
    if missing:
        notes.append(f"axes no trial records, treated as empty: {', '.join(missing)}")
    present = [k for k in keys if k in raw.columns]
    group = present + ([SEED_KEY] if SEED_KEY in raw.columns else [])
    text = raw[[k for k in params if k in FLAT_TYPES and k not in group] + group].astype(str)
    spread = text.groupby(group, dropna=False).nunique(dropna=False).max() if group else pd.Series(dtype=int)
    within = [k for k, n in spread.items() if n > 1]
    if within:
        notes.append("config fields that are not axes of the study vary within a cell and seed (a spec edited "
                     "between versions?); kept apart as cell keys: " + ", ".join(within))
    return keys + within, missing


def _recorded_axes(client, experiment_id: str, parent_run: str | None) -> list[str] | None:
    """The union of the axes the study's parent runs record (one parent per version of its spec), in order; None
    when one does not record them (a study written before parent runs carried R.AXES)."""
    filt = f"tags.`{R.ROLE}` = '{R.ROLE_STUDY}'"
    parents = client.search_runs([experiment_id], filter_string=filt, max_results=1000)
    if parent_run:
        parents = [p for p in parents if p.info.run_id == parent_run]
    found = [R.read_axes(p.data.tags) for p in parents]
    if not found or any(a is None for a in found):
        return None
    return list(dict.fromkeys(a for axes in found for a in axes))


def collect_study(
    study: str,
    tracking_uri: str | None = None,
    metrics: list[str] | None = None,
    parent_run: str | None = None,
    workers: int | None = None,
    client=None,
    check=None,
) -> StudyData:
    """Read every trial run of ``study`` (see the module doc); raise AnalysisError when there is nothing to read.
    ``check``: called before each metric history read; what it raises (OutOfTime) stops the reading."""
    uri = resolve_tracking_uri(tracking_uri)
    client = client or open_client(uri)
    try:
        exp = find_experiment(client, study, uri)
        runs = _search_trials(client, exp.experiment_id, parent_run)
    except AnalysisError:
        raise
    except Exception as exc:
        raise AnalysisError(f"cannot read study {study!r} from {uri!r}: {_one_line(exc)}") from exc
    if not runs:
        where = f" under parent run {parent_run}" if parent_run else ""
        raise AnalysisError(
            f"study {study!r} (experiment {exp.experiment_id} in {uri!r}) has no trial runs{where} "
            "(runs tagged bma.role=trial)"
        )
    notes: list[str] = []
    rows, n_shared = _cell_rows(runs)
    if n_shared:
        notes.append(f"{n_shared} trial(s) are shared by several grid points (their variant ignores the settings "
                     "that differ): each is counted in every cell that contains it (shared > 1)")

    all_params = sorted({k for _, params, _ in rows for k in params})
    raw = pd.DataFrame([{k: params.get(k) for k in all_params} for _, params, _ in rows])
    raw["arm"] = [cell.get(R.ARM, r.data.tags.get(R.ARM)) for r, _, cell in rows]
    axes = _recorded_axes(client, exp.experiment_id, parent_run)
    keys, missing_keys = _cell_keys(raw, all_params, axes, notes)
    for k in missing_keys:
        raw[k] = None
    # settings that differ between cells but are not axes (an arm's switches): shown beside the keys, never keys
    described = [k for k in all_params if k in FLAT_TYPES and k not in keys and k != SEED_KEY
                 and raw[k].astype(str).nunique(dropna=False) > 1]

    records = []
    for r, params, cell in rows:
        tags, info = r.data.tags, r.info
        seed_raw = params.get(SEED_KEY, tags.get(R.SEED)) if cell else tags.get(R.SEED, params.get(SEED_KEY))
        records.append(
            {
                "run_id": info.run_id,
                "run_name": info.run_name or tags.get("mlflow.runName"),
                "trial_id": tags.get(R.TRIAL_ID),
                "regime": tags.get(R.REGIME),
                "variant": tags.get(R.VARIANT) or params.get(VARIANT_KEY),
                "seed": seed_raw,
                "state": _state(info.status, tags.get(R.STATUS)),
                "mlflow_status": info.status,
                "bma_status": tags.get(R.STATUS),
                "error": tags.get(R.ERROR),
                "parent_run_id": tags.get(R.PARENT),
                "git_commit": tags.get(R.GIT_COMMIT),
                "start_time": pd.to_datetime(info.start_time, unit="ms", utc=True) if info.start_time else pd.NaT,
                "end_time": pd.to_datetime(info.end_time, unit="ms", utc=True) if info.end_time else pd.NaT,
                "shared": int(tags.get(R.SHARED, "1") or 1),
                "stopped_early": str(tags.get(R.STOPPED_EARLY, "")).lower() == "true",
                "_metric_keys": list(r.data.metrics),
            }
        )
    df = pd.DataFrame(records)
    df["arm"] = raw["arm"].values
    for k in keys + described:
        if k != "arm":
            df[k] = type_param(k, raw[k]).values
    seeds = pd.to_numeric(df["seed"], errors="coerce")
    if seeds.isna().any():
        notes.append(f"{int(seeds.isna().sum())} trial(s) carry no seed (tag bma.seed / param regime.seed)")
    df["seed"] = seeds.astype("Int64")
    df["variant"] = df["variant"].astype(object)

    # metrics
    available = {k for keys_ in df["_metric_keys"] for k in keys_}
    chosen = select_metrics(available, metrics)
    if metrics and not chosen:
        raise AnalysisError(f"no metric of study {study!r} matches {' '.join(metrics)}; "
                            f"metrics: {', '.join(sorted(available))}")
    read = set(chosen) | {R.SELECTION_METRIC}  # the validation loss picks each run's selected/ step
    wanted = sorted({(rid, k) for rid, ks in zip(df["run_id"], df["_metric_keys"]) for k in ks if k in read})
    try:
        hist = _histories(client, uri, wanted, workers, check)
    except OutOfTime:
        raise
    except Exception as exc:
        raise AnalysisError(f"cannot read metric histories of study {study!r} from {uri!r}: {_one_line(exc)}") from exc
    df = df.drop(columns="_metric_keys")
    wide = _final_and_selected(hist, chosen)
    hist = hist[hist["metric"].isin(chosen)].reset_index(drop=True)
    df = df.join(wide, on="run_id") if not wide.empty else df.assign(n_epochs=np.nan)
    df["n_epochs"] = pd.to_numeric(df["n_epochs"]).astype("Int64")

    # one trial per (cell, seed) feeds the tables: the latest finished run; older duplicates (a study invoked
    # twice, a failed trial retried) are kept in runs.parquet with used=False, superseded=True
    df = df.sort_values("start_time", kind="stable", na_position="first").reset_index(drop=True)
    df["used"] = False
    df["superseded"] = False
    for _, grp in df.groupby(keys + ["seed"], dropna=False, sort=False):
        done = grp[grp["state"] == "finished"]
        if len(done):
            keep = done.index[-1]
            df.loc[keep, "used"] = True
            df.loc[grp.index.drop(keep), "superseded"] = True
        elif len(grp) > 1:  # nothing finished: count the latest attempt, the earlier ones are superseded
            df.loc[grp.index[:-1], "superseded"] = True
    n_sup = int(df["superseded"].sum())
    if n_sup:
        notes.append(f"{n_sup} run(s) superseded by a later run of the same cell and seed (used=False)")

    lead = ["run_id", "run_name", "trial_id", "regime", "variant", "seed"] + [k for k in keys if k != "variant"] + \
        described
    if df["stopped_early"].any():
        notes.append(f"{int(df['stopped_early'].sum())} trial(s) stopped early by the search's scheduler: counted "
                     "with their last values (stopped_early=True)")
    rest = ["state", "used", "superseded", "shared", "stopped_early", "arm", "mlflow_status", "bma_status", "error",
            "n_epochs", "selected_step", "parent_run_id", "git_commit", "start_time", "end_time"]
    if "selected_step" not in df:
        df["selected_step"] = np.nan
    rest = [c for c in rest if c not in keys]
    value_cols = [c for c in df.columns if c.startswith(VALUE_PREFIXES)]
    df = df[lead + rest + value_cols]
    df = df.sort_values(keys + ["seed", "start_time"], kind="stable", na_position="last").reset_index(drop=True)
    for n in notes:
        log.info(n)
    return StudyData(
        study=study,
        tracking_uri=uri,
        experiment_id=exp.experiment_id,
        runs=df,
        histories=hist,
        metrics=sorted(m for m in chosen if f"final/{m}" in df.columns),
        keys=keys,
        notes=notes,
    )


def study_sesoi(study: str, tracking_uri: str | None = None, parent_run: str | None = None,
                client=None) -> tuple[dict[str, float], list[str]]:
    """The smallest effects of interest the study declared (spec ``analysis.sesoi``), as the driver records them on
    the parent run (tag bma.record.SESOI, JSON {metric glob: delta}); ({}, notes) when none is recorded.

    A study invoked with several versions of its spec has several parent runs: they should agree; if they do not,
    the latest parent's mapping is used and a note says so. ``parent_run``: only that invocation's."""
    import json

    uri = resolve_tracking_uri(tracking_uri)
    client = client or open_client(uri)
    exp = find_experiment(client, study, uri)
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`{R.ROLE}` = '{R.ROLE_STUDY}'",
                                 max_results=1000, order_by=["attributes.start_time ASC"])
    if parent_run:
        parents = [p for p in parents if p.info.run_id == parent_run]
    found, notes = [], []
    for p in parents:
        text = p.data.tags.get(R.SESOI)
        if not text:
            continue
        try:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError("not a mapping")
            found.append({str(k): float(v) for k, v in value.items()})
        except (TypeError, ValueError) as exc:
            notes.append(f"parent run {p.info.run_id}: unreadable {R.SESOI} tag ({exc}); ignored")
    if not found:
        return {}, notes
    if any(f != found[-1] for f in found):
        notes.append(f"the study's parent runs record different SESOI ({R.SESOI}); the latest one's is used: "
                     f"{found[-1]}")
    return found[-1], notes


def load_exported(out_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """runs and histories back from an export directory (for notebooks: no MLflow needed)."""
    return (pd.read_parquet(os.path.join(out_dir, "runs.parquet")),
            pd.read_parquet(os.path.join(out_dir, "histories.parquet")))
