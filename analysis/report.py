"""One page per study: a self-contained HTML report (figures embedded as base64 PNG, no script, no external file)
that opens from disk, read from the MLflow store only.

    python -m analysis report --study quick [--tracking-uri URI] [--parent-run ID] --out reports/quick-page

Sections (each an ``<section id=...>``): ``asked`` (the spec from the parent run's spec.yaml artifact, the command
that launched it, the code's commit), ``progress`` (trials done / running / failed per cell and seed, each failure
with its reason from the bma.error tag), ``contrasts`` (verdicts where analysis/verdicts.py is present, else the
paired tests of analysis/compare.py: ``contrast_verdicts`` is where the verdicts plug in), ``information``
(per cell, the Table-1 quantities, info/*, with 95 % CIs), ``curves`` (the same over training, mean and 95 % CI
over seeds), ``plane`` (the information plane), and, for a boost or an ablation study, ``boost`` / ``ablation``
(the figures and tables of analysis.boost / analysis.ablation). Every number is an analysis function's value:
``summarize`` (cells), ``compare_variants`` (tests), ``plots.*`` (figures).

The same page is refreshed while a study runs, as the artifact ``report.html`` of its parent run
(study/live_report.py): ``build_page`` is what both call. A live refresh passes a ``PageBudget`` with a deadline: the
store's reading stops when the time is up (OutOfTime), and each figure group (``OPTIONAL``) is drawn only when its
expected cost fits in what is left (else its section says it was not drawn); the page reports each part's seconds.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from analysis import plots as P
from analysis.aggregate import present_main, summarize
from analysis.collect import AnalysisError, OutOfTime, StudyData, collect_study, find_experiment, open_client, \
    resolve_tracking_uri, short_name
from analysis.compare import VARIANT_COLUMNS, compare_variants
from analysis.tables import fmt_ci, fmt_key, fmt_num, fmt_p
from bma import record as R

log = logging.getLogger("analysis")

REPORT_FILE = "report.html"
MANIFEST = "manifest.json"
GENERATOR = "bma-study analysis report"  # manifest["generator"]: the mark of a folder this module wrote
COMMAND = "python -m analysis report"
SECTIONS = ("asked", "progress", "contrasts", "information", "curves", "plane")
# What the page reads: the metrics it shows (a live refresh reads no more than it draws); loss/val_pair rides along
# (collect_study reads it for model selection)
PAGE_METRICS = ["acc/*", "retrieval/*", "assoc/*", "info/*", "loss/total", "xdomain/*"]
# The plan's Table 1 (DESIGN.md), as info/<quantity>/* metrics: shown first, and drawn over training
TABLE1 = ("H_Wv", "H_Ws", "H_Mv", "H_Ms", "I_fv_fsmem", "H_fsmem_given_fv", "I_hv_Xv_Xs", "I_zv_zs", "I_S_Sprime")
MAX_CELL_COLUMNS = 24  # cells side by side in the information table (the rest: a note)
PNG_DPI = 90
# The page's parts, as a PageBudget sees them: "store" (the parent run and the trials, read) and "tables" (counts,
# contrasts, information table) always; the figure groups only when they fit (a live refresh may leave them out)
OPTIONAL = ("curves", "plane", "boost", "ablation")


class PageBudget:
    """The time a page may take: here unlimited (``python -m analysis report``, the live page's final version).
    study/live_report.py's refreshes pass one with a deadline. ``check()`` is called before each store read and
    before the tables and raises OutOfTime when the time is up; ``fits(part)`` is asked before each optional part
    (OPTIONAL) and says whether its expected cost fits in what is left; ``took(part, seconds)`` reports what each
    part cost, by ``now()`` (seconds, any monotonic clock)."""

    def now(self) -> float:
        return time.perf_counter()

    def check(self) -> None:
        pass

    def fits(self, part: str) -> bool:
        return True

    def took(self, part: str, seconds: float) -> None:
        pass


@dataclass
class Page:
    html: str
    sections: list[str]  # the ids of the sections present, in order
    counts: dict[str, int]  # finished / running / failed trials (not superseded), planned when known
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # what each part cost (store, tables, curves, ...)
    skipped: list[str] = field(default_factory=list)  # the optional parts its budget left out
    data: StudyData | None = field(default=None, repr=False)
    summary: pd.DataFrame | None = field(default=None, repr=False)
    contrasts: pd.DataFrame | None = field(default=None, repr=False)


# -- reading the parent run ----------------------------------------------------------------------------------------


@dataclass
class StudyRecord:
    """What the parent run records about the study itself."""

    run_id: str | None = None
    status: str = ""
    start_time: float | None = None
    tags: dict = field(default_factory=dict)
    spec_text: str | None = None
    n_parents: int = 0

    @property
    def command(self) -> str | None:
        return self.tags.get(R.COMMAND)

    @property
    def planned(self) -> int | None:
        text = self.tags.get(R.PLANNED)
        return int(text) if text and str(text).isdigit() else None

    @property
    def sesoi(self) -> dict[str, float]:
        try:
            value = json.loads(self.tags.get(R.SESOI) or "{}")
        except ValueError:
            return {}
        return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}


def read_parent(client, experiment_id: str, parent_run: str | None = None) -> StudyRecord:
    """The study's parent run (``parent_run``, else the latest started): its tags and its spec.yaml artifact."""
    parents = client.search_runs([experiment_id], f"tags.`{R.ROLE}` = '{R.ROLE_STUDY}'", max_results=100,
                                 order_by=["attributes.start_time DESC"])
    if parent_run:
        parents = [p for p in parents if p.info.run_id == parent_run] or [client.get_run(parent_run)]
    if not parents:
        return StudyRecord()
    run = parents[0]
    record = StudyRecord(run.info.run_id, run.info.status, run.info.start_time, dict(run.data.tags),
                         n_parents=len(parents))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file: no progress bar
    with tempfile.TemporaryDirectory(prefix="bma-report-spec-") as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, "spec.yaml", tmp)
            with open(path, encoding="utf-8", errors="replace") as fh:
                record.spec_text = fh.read()
        except Exception as exc:  # no artifact (an old study), an artifact store out of reach
            log.info("spec.yaml of parent run %s not readable: %s", run.info.run_id, exc)
    return record


# -- the verdicts' plug ------------------------------------------------------------------------------------------


def contrast_verdicts(tests: pd.DataFrame):
    """THE place verdicts plug in: the verdict of each paired contrast (gain / loss / equivalent / inconclusive
    against the smallest effect of interest, DESIGN.md "How a study settles a question"), as compare_variants
    computes them with analysis.verdicts.contrast on each contrast's per-seed differences. None where the comparison
    carries no verdicts (an analysis.compare without them): the page then shows the paired tests alone, and says so."""
    return tests if "verdict" in tests.columns else None


# -- building the page ---------------------------------------------------------------------------------------------


def build_page(study: str, tracking_uri: str | None = None, parent_run: str | None = None, client=None,
               live: dict | None = None, metrics: list[str] | None = PAGE_METRICS,
               budget: PageBudget | None = None) -> Page:
    """The page of ``study`` (read-only: only searches, reads and artifact downloads). ``live``: the refreshing
    driver's state ({"running": n, "pending": n, "refreshes": n, "seconds": s, "every_s": s}), shown in a banner.
    ``budget``: the time the page may take (PageBudget; unlimited by default); OutOfTime when it ran out before
    the page's tables."""
    budget = budget or PageBudget()
    t0 = budget.now()
    uri = resolve_tracking_uri(tracking_uri)
    client = client or open_client(uri)
    exp = find_experiment(client, study, uri)
    record = read_parent(client, exp.experiment_id, parent_run)
    notes: list[str] = []
    try:
        budget.check()
        data = collect_study(study, uri, metrics, parent_run, client=client, check=budget.check)
    except AnalysisError as exc:
        if "has no trial runs" in str(exc):
            notes.append("no trial has reported yet")
        elif "no metric of study" in str(exc):  # trial runs, none with a metric: every trial failed before a round
            notes.append("no trial has reported a metric yet (a trial that failed before its first round has none;"
                         " its reason is its bma.error tag in MLflow)")
        else:
            raise
        data = None
    store_s = budget.now() - t0
    budget.took("store", store_s)
    budget.check()
    with tempfile.TemporaryDirectory(prefix="bma-report-") as tmp:
        return _page(study, uri, exp, record, data, notes, live, tmp, budget, store_s)


def _page(study, uri, exp, record: StudyRecord, data: StudyData | None, notes, live, tmp,
          budget: PageBudget, store_s: float = 0.0) -> Page:
    parts: list[str] = []
    sections: list[str] = []
    seconds: dict[str, float] = {"store": store_s}
    skipped: list[str] = []
    t_part = [budget.now()]

    def took(part: str) -> None:
        now = budget.now()
        seconds[part] = now - t_part[0]
        budget.took(part, seconds[part])
        t_part[0] = now

    def fits(part: str) -> bool:
        if budget.fits(part):
            t_part[0] = budget.now()
            return True
        skipped.append(part)
        return False

    def section(sid: str, title: str, body: str) -> None:
        sections.append(sid)
        parts.append(f'<section id="{sid}"><h2>{_e(title)}</h2>\n{body}\n</section>')

    counts = _counts(data, record)
    if live is not None and not live.get("running", True) and record.status == "RUNNING":
        record.status = "RUNNING: the study has ended, its driver marks the run FINISHED or FAILED next"
    summary = compare = verdicts = None
    section("asked", "What the study asked", _asked(record, exp))
    section("progress", "Progress", _progress(data, counts, live))
    if data is not None:
        notes += data.notes
        runs, keys = data.runs, data.keys
        summary = summarize(runs, keys)
        try:  # the spec's analysis.sesoi (parent-run tag bma.sesoi) sets each metric's delta
            compare, baseline, cnotes = compare_variants(runs, keys, sesoi=record.sesoi or None)
        except TypeError:  # an analysis.compare without verdicts
            compare, baseline, cnotes = compare_variants(runs, keys)
        notes += cnotes
        verdicts = contrast_verdicts(compare)
        section("contrasts", "Contrasts", _contrasts(data, summary, compare, baseline, verdicts, record.sesoi))
        section("information", "Information quantities per cell (Table 1), final round",
                _information(summary, keys, notes))
        took("tables")
        if fits("curves"):
            # the Table-1 quantities, and the sample size the figure's title names
            table1 = data.histories[data.histories["metric"].map(
                lambda m: m in P.COUNT_METRICS or (P.parse_info(m) or ("",))[0] in TABLE1)]
            files, n = P.info_over_epochs(runs, table1, keys, os.path.join(tmp, "curves"), ("png",), PNG_DPI)
            notes += n
            section("curves", "Information quantities over training",
                    _figures(files, "The Table-1 quantities: mean over the cell's seeds at each round, band = 95 % "
                                    "t-interval over seeds; one line per cell, one panel per quantity and estimator.")
                    + _training_curves(data, summary, os.path.join(tmp, "training"), notes))
            took("curves")
        else:
            section("curves", "Information quantities over training", _not_drawn("These figures"))
        if fits("plane"):
            files, n = P.info_plane(runs, data.histories, keys, os.path.join(tmp, "plane"), formats=("png",),
                                    dpi=PNG_DPI)
            notes += n
            section("plane", "Information plane", _figures(files, "Trajectories over training, mean over seeds "
                                                                  "per round, bars = 95 % t-interval over seeds."))
            took("plane")
        else:
            section("plane", "Information plane", _not_drawn("This figure"))
        kind = _study_kind(data)
        title = {"boost": "Boost: the unpaired pool's effect (analysis.boost)",
                 "ablation": "Ablation: did each improvement move its target (analysis.ablation)"}.get(kind)
        if title and fits(kind):
            body, n = (_boost if kind == "boost" else _ablation)(data, os.path.join(tmp, kind))
            notes += n
            section(kind, title, body)
            took(kind)
        elif title:
            section(kind, title, _not_drawn("This section"))
    else:
        for sid, title in (("contrasts", "Contrasts"), ("information", "Information quantities per cell"),
                           ("curves", "Information quantities over training"), ("plane", "Information plane")):
            section(sid, title, "<p class=muted>No trial has reported yet.</p>")
    section("notes", "Notes", "<ul>" + "".join(f"<li>{_e(n)}</li>" for n in dict.fromkeys(notes)) + "</ul>"
            if notes else "<p class=muted>none</p>")
    page = _document(study, uri, exp, record, counts, live, parts)
    if "tables" not in seconds:  # no trial data: the tables' part is the sections above
        took("tables")
    return Page(page, sections, counts, list(dict.fromkeys(notes)), seconds, skipped, data, summary,
                verdicts if verdicts is not None else compare)


def _not_drawn(what: str) -> str:
    return (f"<p class=muted data-skipped>{what}: not drawn in this refresh of the live page (its expected cost did "
            "not fit in the refresh's share of the study's time, study/live_report.py); a later refresh or the "
            "study's final page draws them.</p>")


def _counts(data: StudyData | None, record: StudyRecord) -> dict[str, int]:
    out = {"finished": 0, "running": 0, "failed": 0}
    if data is not None:
        live = data.runs[~data.runs["superseded"]].drop_duplicates("run_id")
        for state, n in live["state"].value_counts().items():
            out[state] = int(n)
    if record.planned is not None:
        out["planned"] = record.planned
    return out


# -- sections -----------------------------------------------------------------------------------------------------


def _asked(record: StudyRecord, exp) -> str:
    rows = [("experiment", f"{exp.name} (id {exp.experiment_id})"),
            ("parent run", f"{record.run_id or 'none'} ({record.status or 'no parent run'})"),
            ("launched by", record.command or "not recorded (a study started before the command was recorded)"),
            ("code commit", record.tags.get(R.GIT_COMMIT, "not recorded")),
            ("spec fingerprint", record.tags.get(R.FINGERPRINT, "not recorded")),
            ("axes", ", ".join(map(short_name, R.read_axes(record.tags) or [])) or "not recorded")]
    if record.start_time:
        rows.append(("started", _utc(record.start_time / 1000)))
    if record.sesoi:
        rows.append(("smallest effects of interest", ", ".join(f"{g}: {d:g}" for g, d in record.sesoi.items())))
    if record.n_parents > 1:
        rows.append(("versions", f"{record.n_parents} parent runs (spec versions); this page shows the latest"))
    out = _kv(rows)
    if record.spec_text is not None:
        out += f"<h3>spec.yaml</h3><pre class=spec>{_e(record.spec_text)}</pre>"
    else:
        out += "<p class=muted>The parent run has no spec.yaml artifact.</p>"
    return out


def _progress(data: StudyData | None, counts: dict[str, int], live: dict | None) -> str:
    planned = counts.get("planned")
    done, running, failed = counts["finished"], counts["running"], counts["failed"]
    head = (f'<p class=counts><span data-count="finished">{done}</span> finished, '
            f'<span data-count="running">{running}</span> running, <span data-count="failed">{failed}</span> failed'
            + (f' of <span data-count="planned">{planned}</span> planned trials' if planned is not None else "")
            + "</p>")
    if planned:
        share = min(1.0, (done + failed) / planned)
        head += f'<div class=bar><div style="width:{100 * share:.1f}%"></div></div>'
    if data is None:
        return head
    runs, keys = data.runs, data.keys
    cell = [k for k in keys if k in runs.columns]
    current = runs[~runs["superseded"]]
    rows = []
    for key, grp in current.groupby(cell, dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        seeds = {s: sorted(grp[grp["state"] == s]["seed"].dropna().astype(int).tolist())
                 for s in ("finished", "running", "failed")}
        rows.append([_cell_label(dict(zip(cell, key)))] +
                    [(f"{len(v)}" + (f" (seeds {', '.join(map(str, v))})" if v else "")) for v in seeds.values()])
    body = head + _table(["cell", "finished", "running", "failed"], rows, cls="progress")
    failures = current[current["state"] == "failed"]
    if len(failures):
        items = []
        for _, r in failures.drop_duplicates("run_id").iterrows():
            error = str(r["error"]) if isinstance(r["error"], str) and r["error"] else \
                f"no bma.error tag (MLflow says {r['mlflow_status']})"
            first = error.strip().splitlines()[0] if error.strip() else error
            items.append(f"<li><b>{_e(r['run_name'])}</b>: <span class=error>{_e(first[:300])}</span>"
                         + (f"<details><summary>full message</summary><pre>{_e(error)}</pre></details>"
                            if len(error) > len(first) or len(first) > 300 else "") + "</li>")
        body += f"<h3>Failures ({len(items)})</h3><ul class=failures>{''.join(items)}</ul>"
    return body


def _contrasts(data, summary, compare, baseline, verdicts, sesoi) -> str:
    keys = data.keys
    cell = [k for k in keys if k not in VARIANT_COLUMNS]
    shown = [k for k in cell if k in compare.columns and compare[k].astype(str).nunique() > 1]
    if compare.empty:
        return ("<p class=muted>No paired contrast between variants in this study" +
                (f" (baseline {_e(baseline)})" if baseline else "") + ": see the notes" +
                (", and the ablation section" if "arm" in data.runs and data.runs["arm"].notna().any() else "") +
                ".</p>")
    main = set(present_main(data.metrics))
    table = compare[compare["metric"].isin(main)] if main & set(compare["metric"]) else compare
    out = (f"<p>Each variant against <b>{_e(baseline)}</b> in the same cell, paired by seed; difference = variant "
           "&minus; baseline, final round.</p>")
    if verdicts is None:
        out += ("<p class=plug>No verdicts in this comparison (they plug in at "
                "<code>analysis.report.contrast_verdicts</code>): the paired tests of <code>analysis.compare</code> "
                "(t-test and Wilcoxon, Holm-adjusted per metric).</p>")
        rows = []
        for _, r in table.iterrows():
            rows.append([_e(r["variant"]), *[_e(fmt_key(r[k])) for k in shown], _e(str(r["metric"]).removeprefix(
                "final/")), _e(r["n_pairs"]), _num(r["mean_diff"]),
                _e(f"[{fmt_num(r['diff_ci95_low'])}, {fmt_num(r['diff_ci95_high'])}]"), _e(fmt_p(r["p_ttest"])),
                _p_cell(r["p_ttest_holm"]), _e(fmt_p(r["p_wilcoxon_holm"])), _e(r["note"])])
        return out + _table(["variant", *map(short_name, shown), "metric", "n", "mean diff", "95 % CI", "p (t)",
                             "p (t, Holm)", "p (Wilcoxon, Holm)", "note"], rows, raw=True, cls="contrasts")
    rows = []
    for _, r in table.iterrows():
        sesoi_text = "–" if pd.isna(r["sesoi"]) else f"{r['sesoi']:g}"
        rows.append([_e(r["variant"]), *[_e(fmt_key(r[k])) for k in shown],
                     _e(str(r["metric"]).removeprefix("final/")), _e(r["n_pairs"]), _num(r["mean_diff"]),
                     _e(f"[{fmt_num(r['diff_ci95_low'])}, {fmt_num(r['diff_ci95_high'])}]"), _e(sesoi_text),
                     f'<span class="verdict {_e(r["verdict"])}" data-verdict="{_e(r["verdict"])}">'
                     f'{_e(r["verdict"])}</span>',
                     _e(fmt_p(r["p_ttest"])), _p_cell(r["p_ttest_holm"]), _e(fmt_p(r["p_tost"])),
                     _e("" if pd.isna(r["seeds_needed"]) else f"{r['seeds_needed']:g}"), _e(r["note"])])
    sesoi_line = ("smallest effects of interest: " + ", ".join(f"{g} = {d:g}" for g, d in sesoi.items()) if sesoi
                  else "no smallest effect of interest declared (spec analysis.sesoi): equivalence is not tested")
    return (out + f"<p>Verdicts (analysis.verdicts): gain / loss when the 95 % CI excludes 0, equivalent when the "
            f"90 % CI lies within ±δ, else inconclusive (with the seeds that would settle it); {_e(sesoi_line)}.</p>"
            + _table(["variant", *map(short_name, shown), "metric", "n", "estimate", "95 % CI", "δ", "verdict",
                      "p (t)", "p (t, Holm)", "p (TOST)", "seeds needed", "note"], rows, raw=True, cls="contrasts"))


def info_columns(summary: pd.DataFrame) -> list[str]:
    """The Table-1 quantities of the summary (final/info/<quantity>/<estimator>), counts left out."""
    names = sorted({c[: -len("_mean")] for c in summary.columns if c.startswith("final/info/") and c.endswith("_mean")})
    return [c for c in names if P.parse_info(c.removeprefix("final/")) and summary[f"{c}_mean"].notna().any()]


def _information(summary: pd.DataFrame, keys: list[str], notes: list[str]) -> str:
    every = info_columns(summary)
    if not every:
        return "<p class=muted>No information quantity (info/*) logged yet.</p>"
    main = [c for c in every if P.parse_info(c.removeprefix("final/"))[0] in TABLE1]
    rest = [c for c in every if c not in main]
    out = ("<p>Final round, mean ± 95 % t half-width over the cell's seeds (nats; bounds and estimators as named; "
           "docs/information.md). The plan's Table 1 first; the other quantities below it.</p>")
    out += _info_table(summary, keys, main or rest, notes)
    if main and rest:
        out += (f"<details><summary>{len(rest)} more information quantities (probes, cycle steps, slots)</summary>"
                + _info_table(summary, keys, rest, []) + "</details>")
    return out


def _info_table(summary: pd.DataFrame, keys: list[str], cols: list[str], notes: list[str]) -> str:
    cells = summary[summary["n_seeds"] > 0]
    if len(cells) > MAX_CELL_COLUMNS:
        notes.append(f"information table: {len(cells)} cells; the first {MAX_CELL_COLUMNS} are shown")
        cells = cells.head(MAX_CELL_COLUMNS)
    varying = [k for k in keys if k in cells and cells[k].astype(str).nunique() > 1] or keys[:1]
    header = ["quantity [estimator]"] + [_cell_label({k: r[k] for k in varying}) for _, r in cells.iterrows()]
    rows = []
    for col in cols:
        quantity, estimator = P.parse_info(col.removeprefix("final/"))
        row = [_e(P.info_label(quantity, estimator))]
        for _, r in cells.iterrows():
            mean, low, high, n = r[f"{col}_mean"], r[f"{col}_ci95_low"], r[f"{col}_ci95_high"], r[f"{col}_n"]
            text = fmt_ci(mean, low, high, n, "t")
            row.append(f'<td data-metric="{_e(col)}" data-cell="{_e(_cell_label({k: r[k] for k in varying}))}" '
                       f'data-mean="{_attr(mean)}" data-low="{_attr(low)}" data-high="{_attr(high)}" '
                       f'data-n="{int(n)}">{_e(text)}<small> n={int(n)}</small></td>')
        rows.append(row)
    return _table(header, rows, raw=True, cls="info", cells_are_td=True)


def _training_curves(data: StudyData, summary, folder: str, notes: list[str]) -> str:
    """The main probe's curve over training per cell (mean and 95 % t band over seeds), drawn like the info ones."""
    from matplotlib.figure import Figure

    metric = next((m for m in (R.PROGRESS_METRIC, "acc/image_probe_h", "loss/total") if m in data.metrics), None)
    if metric is None:
        return ""
    used = data.runs[data.runs["used"]]
    hist = data.histories
    variants = sorted(used["variant"].dropna().unique())
    if not variants:  # trials are running, none has finished yet
        return ""
    fig = Figure(figsize=(4.2 * len(variants), 3.2), layout="constrained")
    axes = fig.subplots(1, len(variants), squeeze=False, sharey=True)[0]
    for ax, variant in zip(axes, variants):
        vu = used[used["variant"] == variant]
        for label, ids, style in P._regimes(vu, data.keys, notes, f"training curves ({variant})"):
            curve = P._mean_curve(hist, ids, metric)
            if curve.empty:
                continue
            ax.plot(curve["step"], curve["mean"], marker=".", label=label, **style)
            low, high = curve["low"], curve["high"]
            if metric.startswith("acc/"):  # a proportion: the band drawn within [0, 1], as plots.py does
                low, high = low.clip(0, 1), high.clip(0, 1)
            ax.fill_between(curve["step"], low, high, color=style["color"], alpha=0.12, linewidth=0)
        ax.set_title(variant, fontsize=9)
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(metric)
    fig.suptitle(f"{metric} over training: mean over seeds, band = 95 % t-CI", fontsize=10)
    files = P.save(fig, folder, f"training__{P.slug(metric)}", ("png",), PNG_DPI)
    return f"<h3>{_e(metric)} over training</h3>" + _figures(files, "")


def _study_kind(data: StudyData) -> str | None:
    from analysis import boost

    used = data.used
    if used.empty:
        return None
    if "arm" in used and used["arm"].fillna("").ne("").any():
        return "ablation"
    try:
        boost.swept_pool(used)
        return "boost"
    except AnalysisError:
        return None


def _boost(data: StudyData, folder: str) -> tuple[str, list[str]]:
    from pathlib import Path

    from analysis import boost

    try:
        tables = boost.report(data.study, data.tracking_uri, Path(folder), data=data)
    except AnalysisError as exc:
        return f"<p class=muted>{_e(exc)}</p>", [f"boost section: {exc}"]
    pngs = sorted(str(p) for p in Path(folder).glob("boost_*.png"))
    tests = tables["tests"]
    body = _figures(pngs, "analysis.boost's figures: accuracy against the pool size, mean and 95 % t-band over seeds.")
    if not tests.empty:
        cols = [c for c in tests.columns if c not in ("t_stat", "std_diff", "p_wilcoxon", "mean_baseline",
                                                      "mean_variant")]
        body += "<h3>Paired tests (analysis.boost.tests)</h3>" + _frame(tests[cols])
    return body, []


def _ablation(data: StudyData, folder: str) -> tuple[str, list[str]]:
    from pathlib import Path

    from analysis import ablation

    arms = sorted(set(data.used["arm"].dropna()) - {""})
    baseline = "bma" if "bma" in arms else None
    if baseline is None:
        return (f"<p class=muted>No arm named bma (the ablation report's baseline) among {', '.join(arms)}.</p>",
                ["ablation section skipped: no arm named bma"])
    try:
        tables = ablation.report(data.study, data.tracking_uri, Path(folder), baseline=baseline, data=data)
    except AnalysisError as exc:
        return f"<p class=muted>{_e(exc)}</p>", [f"ablation section: {exc}"]
    body = ""
    if not tables["table1"].empty:
        body += ("<h3>Table 1 with a &ldquo;did it move&rdquo; column (analysis.ablation)</h3>"
                 + _frame(tables["table1"]))
    body += "<h3>Arms: mean and 95 % t-interval over seeds</h3>" + _frame(tables["arms"])
    return body, []


# -- HTML helpers --------------------------------------------------------------------------------------------------


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _attr(x) -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(x) else repr(x)


def _num(x) -> str:
    return f'<span data-value="{_attr(x)}">{_e(fmt_num(x))}</span>'


def _p_cell(p) -> str:
    text = fmt_p(p)
    return f"<b>{_e(text)}</b>" if isinstance(p, float) and not math.isnan(p) and p < 0.05 else _e(text)


def _cell_label(values: dict) -> str:
    return ", ".join(f"{short_name(k) if k not in ('model.variant', 'variant') else 'variant'}={fmt_key(v)}"
                     for k, v in values.items()) or "all"


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _kv(rows) -> str:
    return "<table class=kv>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def _table(header, rows, raw: bool = False, cls: str = "", cells_are_td: bool = False) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        tds = []
        for i, v in enumerate(row):
            if cells_are_td and i > 0:
                tds.append(v)
            elif i == 0 and cells_are_td:
                tds.append(f"<th>{v}</th>")
            else:
                tds.append(f"<td>{v if raw else _e(v)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<div class=scroll><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _frame(df: pd.DataFrame) -> str:
    rows = [[fmt_num(v) if isinstance(v, (float, np.floating, int, np.integer)) else ("" if v is None else v)
             for v in r] for r in df.itertuples(index=False)]
    return _table([short_name(str(c)) for c in df.columns], rows)


def _figures(files, caption: str) -> str:
    pngs = [f for f in files if str(f).endswith(".png")]
    if not pngs:
        return "<p class=muted>No figure: the notes say why.</p>"
    out = [f"<p class=caption>{_e(caption)}</p>"] if caption else []
    for path in pngs:
        with open(path, "rb") as fh:
            data = base64.b64encode(fh.read()).decode("ascii")
        name = os.path.splitext(os.path.basename(path))[0]
        out.append(f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}"><figcaption>{_e(name)}'
                   "</figcaption></figure>")
    return "\n".join(out)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1f3b57;color:#fff;padding:14px 24px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85}nav{padding:6px 24px;background:#e7ecf2;font-size:13px}
nav a{margin-right:14px;color:#1f3b57}main{padding:8px 24px 40px;max-width:1500px}
section{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:10px 18px;margin:14px 0}
h2{font-size:18px;margin:6px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12.5px}th,td{border:1px solid #dde3ea;padding:3px 7px;text-align:left;
vertical-align:top}thead th{background:#eef2f6}table.kv th{background:#f3f5f8;width:190px}
.scroll{overflow-x:auto}pre{background:#f3f5f8;padding:8px;overflow-x:auto;font-size:12px;max-height:420px}
.muted{color:#6b7785}.error{color:#a4161a}.counts{font-size:16px}.counts span{font-weight:600}
.bar{height:10px;background:#e3e7ec;border-radius:5px;width:420px}.bar div{height:10px;background:#2e7d32;
border-radius:5px}.live{background:#fff4d6;border:1px solid #f0d58c;padding:6px 10px;border-radius:5px}
.plug{background:#eef5ff;border-left:4px solid #5b8def;padding:6px 10px}
.verdict{padding:1px 6px;border-radius:4px;font-weight:600}.gain{background:#d7f0db}.loss{background:#f8d7da}
.equivalent{background:#e2e3f7}.inconclusive,.undetermined{background:#eee}
figure{margin:10px 0}figure img{max-width:100%;border:1px solid #e3e7ec}figcaption{font-size:12px;color:#6b7785}
small{color:#6b7785}table.contrasts td:last-child{min-width:280px}
"""


def _document(study, uri, exp, record: StudyRecord, counts, live, parts) -> str:
    now = time.time()
    if live is not None:
        state = "the study is running" if live.get("running", True) else "the study has ended"
        banner = (f"<p class=live>Live page: written by the study's driver at {_e(_utc(now))} ({_e(state)}); "
                  f"refreshed after trials end, at most every {live.get('every_s', 0):g} s "
                  f"(refresh {int(live.get('refreshes', 0)) + 1}; earlier refreshes took "
                  f"{live.get('seconds', 0.0):.1f} s in all). Reload to see the latest.</p>")
    else:
        banner = ""
    nav = "".join(f'<a href="#{sid}">{sid}</a>' for sid in
                  [p.split('"', 2)[1] for p in parts])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="{GENERATOR}">
<title>study {_e(study)}: report</title><style>{CSS}</style></head>
<body><header><h1>Study {_e(study)}</h1><p>{_e(counts['finished'])} finished, {_e(counts['running'])} running,
{_e(counts['failed'])} failed &middot; store {_e(uri)} &middot; generated {_e(_utc(now))} by
<code>python -m analysis report</code></p></header><nav>{nav}</nav><main>{banner}
{''.join(parts)}
</main></body></html>
"""


# -- the command --------------------------------------------------------------------------------------------------


def write_report(study: str, tracking_uri: str | None, out: str, parent_run: str | None = None) -> tuple[str, Page]:
    """Write ``out``/report.html (+ manifest.json) the way every report command writes its --out
    (analysis.export.write_folder: atomically; a folder a report did not write is refused). Returns (path, page)."""
    from analysis.export import replace_problem, write_folder, write_manifest

    uri = resolve_tracking_uri(tracking_uri)
    out_dir = os.path.abspath(out)
    problem = replace_problem(out_dir, COMMAND)  # refused before the store is read
    if problem:
        raise AnalysisError(problem)
    page = build_page(study, uri, parent_run)  # errors (unknown study, store) before any output

    def build(tmp: str):
        path = os.path.join(tmp, REPORT_FILE)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(page.html)
        write_manifest(tmp, GENERATOR, [path], study=study, tracking_uri=uri, command=COMMAND,
                       created=datetime.now(timezone.utc).isoformat(timespec="seconds"), sections=page.sections,
                       trials=page.counts, notes=page.notes)
        return None

    write_folder(out_dir, build, COMMAND)
    return os.path.join(out_dir, REPORT_FILE), page


__all__ = ["GENERATOR", "OPTIONAL", "OutOfTime", "PAGE_METRICS", "Page", "PageBudget", "REPORT_FILE", "SECTIONS",
           "build_page", "contrast_verdicts", "read_parent", "write_report"]
