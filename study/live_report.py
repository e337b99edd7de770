"""The study's page, live: a Ray Tune callback in the driver that rewrites ``report.html`` (analysis/report.py) as an
artifact of the study's parent run while the study runs, so MLflow's artifact view shows the study's state.

- **Never in the trials' way.** The page is built and uploaded in a background thread of the driver; Tune's hooks only
  set a flag. The thread reads the store through the MLflow client, so the same works against a remote tracking
  server (``http://``) on a cluster.
- **Bounded cost, measured.** A refresh follows trial results and completions, at most every ``every_s`` seconds
  (spec ``report: {every_s: 30}``), and only when this driver's refreshes so far plus one more (expected to cost what
  the last one did; the first, FIRST_GUESS_S) fit in ``BUDGET`` (2 %) of its wall time (``next_start``). The final
  page at the end is one more, outside that budget (the trials are over by then). Each refresh is timed; the parent
  run carries the running totals as metrics ``report/refreshes`` and ``report/seconds`` (wall time; the budget's
  measure) and ``report/cpu_seconds`` (the refreshing thread's own CPU time), with ``report/last_seconds`` and
  ``report/errors``, continued when the study is resumed.
- **Always a final page.** ``on_experiment_end`` (Tune calls it when the study ends, when it is interrupted and when
  its loop raises) waits for a refresh in flight and writes the final page synchronously.
- **Off by a setting.** ``report: {live: false}`` in the spec: no page, no refresh (``python -m analysis report``
  still draws it on demand).

On setup it also records on the parent run the command that launched the study (``bma.command``) and how many
trials it plans (``bma.trials_planned``), and gives the experiment a description (``mlflow.note.content``, unless
someone wrote their own) that links the runs in MLflow's model-training view and the page.

A resumed study is driven by the report the resumed driver builds (its spec's settings): as study/progress.py's
view, the copy Tune pickled with the study's state resolves to "the driver's report" (``__reduce__``). The running
totals continue from the parent run's own metrics (Tune's saved state predates the final page).
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import tempfile
import threading
import time

from ray.tune import Callback

from bma import record as R

log = logging.getLogger("study.live_report")

BUDGET = 0.02  # the share of the study's wall time refreshes may take
# What the first refresh is expected to cost: a small study's page takes 4-7 s on 2 shared cores, 9-12 s when the
# trials compete for them (study/specs/quick.yaml, measured): the first refresh comes after 500 s of study
FIRST_GUESS_S = 10.0
NOTE = "mlflow.note.content"  # MLflow's description of an experiment or a run (Markdown)
NOTE_MARK = "bma-study"  # a note that contains this was written by the engine and may be rewritten
_DRIVER_REPORT: "LiveReport | None" = None


def _driver_report() -> "LiveReport":
    """What a pickled LiveReport becomes: the report this process built, else one that does nothing."""
    return _DRIVER_REPORT if _DRIVER_REPORT is not None else LiveReport({"live": False})


class LiveReport(Callback):
    def __init__(self, settings: dict | None, study: str | None = None, tracking_uri: str | None = None,
                 experiment_id: str | None = None, parent_run_id: str | None = None, planned: int | None = None,
                 description: str = "", command: list[str] | None = None, budget: float = BUDGET):
        global _DRIVER_REPORT
        settings = settings or {}
        self.study, self.tracking_uri = study, tracking_uri
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.live = bool(settings.get("live", True)) and parent_run_id is not None
        self.every_s = float(settings.get("every_s", 30.0))
        self.planned, self.description, self.budget = planned, description, budget
        self.command = command if command is not None else [os.path.basename(sys.executable)] + sys.argv
        self.refreshes, self.seconds, self.errors = 0, 0.0, 0  # running totals (a resumed study's included)
        self._session_seconds = 0.0  # this driver's refreshes (what the budget is judged on)
        self._session_refreshes = 0
        self.cpu_seconds = 0.0  # the refreshing thread's own CPU time (what it took from the trials' cores)
        self.last_seconds = 0.0
        self._t0 = time.monotonic()
        self._last_end = self._t0
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = None
        self._running = True
        self._said: set[str] = set()
        self.refreshed = threading.Condition()  # notified after each refresh (tests wait on it)
        if parent_run_id is not None:
            _DRIVER_REPORT = self

    def __reduce__(self):
        return (_driver_report, ())

    # -- Tune hooks (the driver's loop: set a flag, nothing more) ---------------------------------------------------
    def setup(self, **info):
        if self.parent_run_id is None or self._thread is not None:
            return
        # a study may be several Tune experiments (precision rounds): each starts the thread again
        self._t0 = self._last_end = time.monotonic()
        self._running = True
        self._stop.clear()
        self._session_seconds, self._session_refreshes = 0.0, 0
        self._thread = threading.Thread(target=self._work, name="bma-live-report", daemon=True)
        self._thread.start()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._dirty.set()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._dirty.set()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._dirty.set()

    def on_experiment_end(self, trials, **info):
        """Wait for a refresh in flight, then write the final page (the study is over: nothing waits for it)."""
        if self._thread is None:
            return
        self._stop.set()
        self._dirty.set()
        self._thread.join(600)
        self._thread = None
        if not self.live:
            return
        self._running = False
        during, wall = self._session_seconds, time.monotonic() - self._t0
        n_during = self._session_refreshes
        self._refresh()
        print(f"report: report.html on the parent run refreshed {n_during} time(s) while the study ran "
              f"({during:.1f} s, {100 * during / max(wall, 1e-9):.1f} % of its {wall:.0f} s), final page "
              f"{self.last_seconds:.1f} s" + (f"; {self.errors} refresh(es) failed" if self.errors else ""), flush=True)

    # -- the background thread ----------------------------------------------------------------------------------------
    def _work(self) -> None:
        try:
            self._record()
        except Exception as exc:  # the study goes on without its description
            self._say(f"could not record the command and description on the parent run ({_one_line(exc)})")
        if not self.live:
            return
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            if self._stop.wait(max(0.0, self.next_start() - time.monotonic())):
                return  # the study ended: on_experiment_end writes the final page
            self._dirty.clear()
            self._refresh()

    def next_start(self) -> float:
        """When (time.monotonic) the next refresh may start: ``every_s`` after the last one ended, and not before
        this driver's refreshes so far plus one more (costing what the last did) fit in ``budget`` of its time."""
        expected = self.last_seconds or FIRST_GUESS_S
        return max(self._last_end + self.every_s, self._t0 + (self._session_seconds + expected) / self.budget)

    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def _record(self) -> None:
        from trainables.tracking import retry

        client = self.client()
        # the running totals continue those of an earlier invocation of the same study (a resumed one)
        earlier = retry(lambda: client.get_run(self.parent_run_id)).data.metrics
        self.refreshes = int(earlier.get("report/refreshes", 0))
        self.seconds = float(earlier.get("report/seconds", 0.0))
        self.errors = int(earlier.get("report/errors", 0))
        self.cpu_seconds = float(earlier.get("report/cpu_seconds", 0.0))
        tags = {R.COMMAND: shlex.join(self.command)[:5000]}
        if self.planned is not None:
            tags[R.PLANNED] = str(self.planned)
        for key, value in tags.items():
            retry(lambda: client.set_tag(self.parent_run_id, key, value))
        exp = retry(lambda: client.get_experiment(self.experiment_id))
        note = (exp.tags or {}).get(NOTE)
        if note is None or NOTE_MARK in note:
            retry(lambda: client.set_experiment_tag(self.experiment_id, NOTE, self.experiment_note()))

    def experiment_note(self) -> str:
        """The experiment's description; its first line (all the UI shows until it is unfolded) holds the links."""
        e, p, s = self.experiment_id, self.parent_run_id, self.study
        runs = f"#/experiments/{e}/runs?workflowType=machine_learning"
        lines = [f"**Study `{s}`**: [its trials, in the model-training view]({runs}) · [the study's page, live]"
                 f"(#/experiments/{e}/runs/{p}/artifacts/report.html?workflowType=machine_learning)", "",
                 self.description or "", "",
                 f"- **Trials**: children of the parent run `{s}`: expand it (the + beside its name), then *Group by* "
                 "`params: model.variant`, or select runs and *Compare*. MLflow's *GenAI / Model training* switch "
                 "(top left) chooses the view.",
                 "- **The study's page** (spec, progress, contrasts, information quantities, information plane): "
                 "parent run, Artifacts, report.html; refreshed while the study runs.",
                 f"- Offline: `python -m analysis report --study {s} --out DIR` (the same page), "
                 f"`python -m analysis export --study {s}` (tables and figures).", "",
                 f"<sub>{NOTE_MARK}: written by the study driver; edit it and it is left alone.</sub>"]
        return "\n".join(lines)

    def _refresh(self) -> None:
        from mlflow.entities import Metric

        from analysis.report import REPORT_FILE, build_page
        from trainables.tracking import retry

        client = self.client()
        t0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            live = {"running": self._running, "every_s": self.every_s, "refreshes": self.refreshes,
                    "seconds": self.seconds}
            page = build_page(self.study, self.tracking_uri, self.parent_run_id, client=client, live=live)
            with tempfile.TemporaryDirectory(prefix="bma-live-report-") as tmp:
                path = os.path.join(tmp, REPORT_FILE)
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(page.html)
                retry(lambda: client.log_artifact(self.parent_run_id, path))
            counts = page.counts
            failed = False
        except Exception as exc:  # the study goes on; the next refresh tries again
            self.errors += 1
            self._say(f"report.html not refreshed ({_one_line(exc)})")
            counts, failed = {}, True
        cost, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
        self.cpu_seconds += cpu
        self._last_end = time.monotonic()
        self.last_seconds = cost
        if not failed:
            self.refreshes += 1
            self._session_refreshes += 1
        self.seconds += cost
        self._session_seconds += cost
        now = int(time.time() * 1000)
        step = self.refreshes + self.errors
        values = {"report/refreshes": self.refreshes, "report/seconds": self.seconds, "report/last_seconds": cost,
                  "report/cpu_seconds": self.cpu_seconds, "report/errors": self.errors}
        values.update({f"trials/{k}": v for k, v in counts.items() if k in ("finished", "running", "failed")})
        try:
            retry(lambda: client.log_batch(self.parent_run_id, [Metric(k, float(v), now, step)
                                                                 for k, v in values.items()]))
            if counts:
                planned = f" of {counts['planned']} planned" if "planned" in counts else ""
                retry(lambda: client.set_tag(self.parent_run_id, NOTE, (
                    f"**{counts['finished']} finished, {counts['running']} running, {counts['failed']} failed"
                    f"**{planned} (at {time.strftime('%H:%M:%S', time.gmtime())} UTC). The study's page: "
                    f"Artifacts &rarr; report.html.\n\n<sub>{NOTE_MARK}</sub>")))
        except Exception as exc:
            self._say(f"report metrics not logged ({_one_line(exc)})")
        with self.refreshed:
            self.refreshed.notify_all()

    def _say(self, line: str) -> None:
        if line not in self._said:  # once per distinct problem
            self._said.add(line)
            print(f"warning: {line}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
