"""The study's page, live: a Ray Tune callback in the driver that rewrites ``report.html`` (analysis/report.py) as an
artifact of the study's parent run while the study runs, so MLflow's artifact view shows the study's state.

- **Never in the trials' way.** The page is built and uploaded in a background thread of the driver; Tune's hooks only
  set a flag. The thread reads the store through the MLflow client, so the same works against a remote tracking
  server (``http://``) on a cluster.
- **Bounded cost, by construction.** A refresh follows trial results and completions, at most every ``every_s``
  seconds (spec ``report: {every_s: 30}``). This driver's refreshes may take ``BUDGET`` (2 %) of its wall time
  (RefreshBudget): a refresh that starts at ``s`` gets a deadline, ``s`` plus the longest it may take and still end
  within 2 % (``balance``). Before the deadline it reads the store one metric history at a time and stops when the
  time is up (a *cut* refresh: no page, its seconds counted); it draws each figure group only when that group's
  expected cost fits in what is left (else a *partial* page, which says so). A refresh starts only when the budget
  covers the page it expects (``next_start``): the first one, without figures, as soon as the budget covers loading
  the page's code and reading the store (guessed from the trials started); later ones, once the budget covers the
  whole page at its measured cost (scaled by the trials started since, and within a refresh by the store's reading
  time, which follows the machine's load). So finished refreshes take at most 2 % of the wall time at every moment,
  except by what one step that cannot be stopped midway ran past a deadline (loading the page's code, once; one
  metric history read; the tables; a figure group that cost more than expected; the upload and the metric
  logging): ``report/overrun_seconds`` counts it, and the next refresh waits until the budget has paid it back.
  The final page at the end is one more, outside that budget (the trials are over by then), with every part.
  Each refresh is timed; the parent run carries the running totals as metrics ``report/refreshes`` (pages
  written) and ``report/seconds`` (wall time; the budget's measure),
  ``report/cpu_seconds`` (the refreshing thread's own CPU time), ``report/partial``, ``report/cut``,
  ``report/overrun_seconds``, ``report/errors``, with ``report/last_seconds``, continued when the study is resumed.
- **Always a final page.** ``on_experiment_end`` (Tune calls it when the study ends, when it is interrupted and when
  its loop raises) stops a refresh in flight (at its next store read, or before its next figure group) and writes
  the final page synchronously.
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
import math
import os
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from ray.tune import Callback

from bma import record as R

log = logging.getLogger("study.live_report")

BUDGET = 0.02  # the share of the study's wall time refreshes may take
# Guesses, used until measured: a wrong one costs a later page, a cut refresh or a page without figures, or, for the
# code's loading and a figure group's first drawing, a run past the deadline, counted and paid back (module doc).
# Loading the page's code in the driver (analysis.report, matplotlib): 0.7-0.9 s on 2 shared cores (measured)
CODE_GUESS_S = 2.0
# The first page, without figures (store read + tables + upload): 0.6-1.1 s for README's quick study (8 trials),
# 2.1-3.7 s for the boost smoke study (36 runs), on 2 shared cores (measured): about 0.1 s a trial, more under load
FIRST_CORE_S, FIRST_CORE_PER_TRIAL_S = 0.5, 0.15
# A figure group not drawn yet is expected to cost this many times its refresh's store read + tables (measured on
# the same two studies: curves 1.7-3.2x, plane 0.25-0.45x, boost 0.9x)
FIRST_RATIO = {"curves": 4.0, "plane": 1.0, "boost": 2.0, "ablation": 2.0}
NOTE = "mlflow.note.content"  # MLflow's description of an experiment or a run (Markdown)
NOTE_MARK = "bma-study"  # a note that contains this was written by the engine and may be rewritten
_DRIVER_REPORT: "LiveReport | None" = None


@dataclass
class Cost:
    """A part's last measured cost (seconds), with what it met: its refresh's store read + tables (``ref``, seconds)
    and the trials started then."""

    seconds: float
    ref: float
    trials: int

    @property
    def load(self) -> float:
        """The store read + tables per trial: what tells the machine's load from one refresh to another."""
        return self.ref / max(self.trials, 1)


class RefreshBudget:
    """The accounts of the 2 % rule for one driver (one Tune experiment: ``restart``). ``clock``: seconds, monotonic
    (injected by tests). ``spent``: the seconds of this driver's refreshes (finished, cut or failed alike)."""

    def __init__(self, share: float = BUDGET, clock=time.monotonic):
        self.share, self.clock = share, clock
        self.costs: dict[str, Cost] = {}  # "core" (all but the figures) and each figure group, last measured
        self.parts: set[str] = set()  # the figure groups this study's page has (learned from its refreshes)
        self.code_loaded = False
        self.restart()

    def restart(self) -> None:
        self.t0 = self.clock()
        self.spent = 0.0
        self.overrun = 0.0  # seconds refreshes ran past their deadline

    def balance(self, now: float) -> float:
        """The longest refresh that may start at ``now`` and end within the share: spent + c <= share (now + c - t0)."""
        if self.share >= 1:
            return math.inf
        return (self.share * (now - self.t0) - self.spent) / (1 - self.share)

    def expected(self, trials: int) -> float:
        """What the next refresh is expected to cost with ``trials`` started: loading the page's code (the first
        time), the core (store read, tables, upload: it grows with the trials' runs in the store), and the figure
        groups once the core has been measured (the first refresh measures the core alone, cheaply, before figures
        are committed to; a figure group grows with the cells and rounds it draws, not with the trials: as last
        measured, scaled by the load the last store read met, as ``expect_part`` will within the refresh)."""
        out = 0.0 if self.code_loaded else CODE_GUESS_S
        core = self.costs.get("core")
        if core is None:
            return out + FIRST_CORE_S + FIRST_CORE_PER_TRIAL_S * trials
        out += core.seconds * max(1.0, trials / max(core.trials, 1))
        for part in sorted(self.parts):
            cost = self.costs.get(part)
            out += self.expect_part(part, core.ref, core.trials) if cost else FIRST_RATIO[part] * core.ref
        return out

    def start_time(self, trials: int) -> float:
        """When (clock) the balance first covers the expected refresh."""
        return self.t0 + (self.spent + self.expected(trials) * (1 - self.share)) / self.share

    def expect_part(self, part: str, ref: float, trials: int) -> float:
        """A figure group's expected cost in a refresh whose store read + tables took ``ref`` seconds with ``trials``
        started: as last measured, scaled by how much busier (the store read per trial) the machine is than then
        (at least half of it)."""
        cost = self.costs.get(part)
        if cost is None:
            return FIRST_RATIO[part] * ref
        busier = (ref / max(trials, 1)) / cost.load if cost.load > 0 else 1.0
        return cost.seconds * max(0.5, busier)

    def close(self, timer: "RefreshTime", cut: bool, failed: bool) -> float:
        """Account a refresh that ``timer`` timed; returns its seconds."""
        end = self.clock()
        seconds = end - timer.start
        self.spent += seconds
        self.overrun += max(0.0, end - timer.deadline)
        drawn = {p: s for p, s in timer.seconds.items() if p in FIRST_RATIO}
        core = seconds - timer.code_s - sum(drawn.values())
        if cut:  # the core costs more than it had: expect twice that (a few cuts at most, each within the budget)
            before = self.costs.get("core")
            self.costs["core"] = Cost(max(2 * core, before.seconds if before else 0.0),
                                      timer.ref or (before.ref if before else core), timer.trials)
        elif not failed:
            self.costs["core"] = Cost(core, timer.ref, timer.trials)
            self.costs.update({p: Cost(s, timer.ref, timer.trials) for p, s in drawn.items()})
        return seconds


class RefreshTime:
    """One refresh's time, as analysis.report.PageBudget (not imported here: the page's code is loaded within the
    first refresh, timed and budgeted): until ``deadline``, the start plus the budget's balance then
    (unlimited for the final page). ``stop``: set when the study ends; a refresh in flight then stops too."""

    def __init__(self, budget: RefreshBudget, trials: int, stop: threading.Event | None = None,
                 limited: bool = True):
        self.budget, self.trials, self.stop = budget, trials, stop
        self.start = budget.clock()
        self.deadline = self.start + budget.balance(self.start) if limited else math.inf
        self.seconds: dict[str, float] = {}
        self.ref = 0.0  # this refresh's store read + tables, so far
        self.code_s = 0.0  # loading the page's code (the first refresh)

    def now(self) -> float:
        return self.budget.clock()

    def check(self) -> None:
        from analysis.collect import OutOfTime

        if self.stop is not None and self.stop.is_set():
            raise OutOfTime("the study has ended")
        if self.now() > self.deadline:
            raise OutOfTime(f"the refresh's share of the study's time is used ({self.now() - self.start:.1f} s)")

    def fits(self, part: str) -> bool:
        """Whether ``part`` fits, with what follows the figures (the upload, the metrics: the core's measured cost
        beyond its store read + tables) after it."""
        self.budget.parts.add(part)
        if self.stop is not None and self.stop.is_set():  # the study has ended: its final page draws them
            return False
        core = self.budget.costs.get("core")
        tail = max(0.0, core.seconds - core.ref) if core else 0.0
        return self.now() + self.budget.expect_part(part, self.ref, self.trials) + tail <= self.deadline

    def took(self, part: str, seconds: float) -> None:
        self.seconds[part] = seconds
        if part in ("store", "tables"):
            self.ref += seconds


def _driver_report() -> "LiveReport":
    """What a pickled LiveReport becomes: the report this process built, else one that does nothing."""
    return _DRIVER_REPORT if _DRIVER_REPORT is not None else LiveReport({"live": False})


class LiveReport(Callback):
    def __init__(self, settings: dict | None, study: str | None = None, tracking_uri: str | None = None,
                 experiment_id: str | None = None, parent_run_id: str | None = None, planned: int | None = None,
                 description: str = "", command: list[str] | None = None, budget: float = BUDGET,
                 clock=time.monotonic):
        global _DRIVER_REPORT
        settings = settings or {}
        self.study, self.tracking_uri = study, tracking_uri
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.live = bool(settings.get("live", True)) and parent_run_id is not None
        self.every_s = float(settings.get("every_s", 30.0))
        self.planned, self.description, self.budget = planned, description, budget
        self.command = command if command is not None else [os.path.basename(sys.executable)] + sys.argv
        # running totals (a resumed study's included): pages written, refresh seconds, failed refreshes, pages
        # without some figure group, refreshes stopped before their page, seconds past deadlines
        self.refreshes, self.seconds, self.errors = 0, 0.0, 0
        self.partial, self.cut, self.overrun_seconds = 0, 0, 0.0
        self.cpu_seconds = 0.0  # the refreshing thread's own CPU time (what it took from the trials' cores)
        self.last_seconds = 0.0
        self.clock = clock
        self.accounts = RefreshBudget(budget, clock)  # this driver's: what the 2 % rule is judged on
        self._session_refreshes = 0
        self._started = 0  # trials Tune has started in this driver (the page's cost grows with them)
        self._last_end = self.accounts.t0
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
        # a study may be several Tune experiments (precision rounds): each starts the thread again, and its budget
        # (the costs measured so far are kept)
        self.accounts.restart()
        self._last_end = self.accounts.t0
        self._running = True
        self._stop.clear()
        self._session_refreshes = 0
        self._thread = threading.Thread(target=self._work, name="bma-live-report", daemon=True)
        self._thread.start()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._started += 1

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._dirty.set()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._dirty.set()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._dirty.set()

    def on_experiment_end(self, trials, **info):
        """Stop a refresh in flight, then write the final page (the study is over: nothing waits for it)."""
        if self._thread is None:
            return
        self._stop.set()
        self._dirty.set()
        self._thread.join(600)
        self._thread = None
        if not self.live:
            return
        self._running = False
        during, wall = self.accounts.spent, self.clock() - self.accounts.t0
        n_during, over = self._session_refreshes, self.accounts.overrun
        self._refresh(final=True)
        extra = [f"{self.partial} partial page(s) in all" if self.partial else "",
                 f"{self.cut} refresh(es) cut at their deadline in all" if self.cut else "",
                 f"{over:.1f} s past deadlines" if over else "",
                 f"{self.errors} refresh(es) failed" if self.errors else ""]
        print(f"report: report.html on the parent run refreshed {n_during} time(s) while the study ran "
              f"({during:.1f} s, {100 * during / max(wall, 1e-9):.1f} % of its {wall:.0f} s), final page "
              f"{self.last_seconds:.1f} s" + "".join(f"; {e}" for e in extra if e), flush=True)

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
            # wait until the budget covers the refresh expected then (trials that start meanwhile make it dearer)
            while (delay := self.next_start() - self.clock()) > 0:
                if self._stop.wait(delay):
                    return  # the study ended: on_experiment_end writes the final page
            self._dirty.clear()
            self._refresh()

    def next_start(self) -> float:
        """When (``clock``) the next refresh may start: ``every_s`` after the last one ended, and once the budget's
        balance covers the refresh expected with the trials started so far (RefreshBudget.start_time)."""
        return max(self._last_end + self.every_s, self.accounts.start_time(self._started))

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
        self.partial = int(earlier.get("report/partial", 0))
        self.cut = int(earlier.get("report/cut", 0))
        self.overrun_seconds = float(earlier.get("report/overrun_seconds", 0.0))
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
                 "(top left) chooses the view; your browser remembers it: on *Model training*, experiments open "
                 "on their runs.",
                 "- **The study's page** (spec, progress, contrasts, information quantities, information plane): "
                 "parent run, Artifacts, report.html; refreshed while the study runs.",
                 f"- Offline: `python -m analysis report --study {s} --out DIR` (the same page), "
                 f"`python -m analysis export --study {s}` (tables and figures).", "",
                 f"<sub>{NOTE_MARK}: written by the study driver; edit it and it is left alone.</sub>"]
        return "\n".join(lines)

    def _refresh(self, final: bool = False) -> None:
        """One refresh, timed by its RefreshTime: within the budget's balance while the study runs, every part for
        the ``final`` page."""
        from mlflow.entities import Metric

        from trainables.tracking import retry

        timer = RefreshTime(self.accounts, self._started, None if final else self._stop, limited=not final)
        client = self.client()
        cpu0 = time.thread_time()
        cut = failed = False
        counts, skipped = {}, []
        try:
            if not self.accounts.code_loaded:  # the page's code, loaded once, within the first refresh's time
                import analysis.report  # noqa: F401

                timer.code_s = timer.now() - timer.start
                self.accounts.code_loaded = True
            from analysis.report import REPORT_FILE, build_page

            live = {"running": self._running, "every_s": self.every_s, "refreshes": self.refreshes,
                    "seconds": self.seconds}
            page = build_page(self.study, self.tracking_uri, self.parent_run_id, client=client, live=live,
                              budget=timer)
            with tempfile.TemporaryDirectory(prefix="bma-live-report-") as tmp:
                path = os.path.join(tmp, REPORT_FILE)
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(page.html)
                retry(lambda: client.log_artifact(self.parent_run_id, path))
            counts, skipped = page.counts, page.skipped
        except Exception as exc:
            from analysis.collect import OutOfTime

            if isinstance(exc, OutOfTime):  # the page is left as it was; the next refresh expects more
                cut = True
            else:  # the study goes on; the next refresh tries again
                failed = True
                self.errors += 1
                self._say(f"report.html not refreshed ({_one_line(exc)})")
        if cut:
            self.cut += 1
        elif not failed:
            self.refreshes += 1
            self._session_refreshes += 1
            self.partial += bool(skipped)
        # the metrics are logged within the refresh's time: they carry its cost up to here (the logging itself is
        # in the budget's accounts and in the next refresh's total)
        so_far = timer.now() - timer.start
        values = {"report/refreshes": self.refreshes, "report/seconds": self.seconds + so_far,
                  "report/last_seconds": so_far, "report/cpu_seconds": self.cpu_seconds + time.thread_time() - cpu0,
                  "report/errors": self.errors, "report/partial": self.partial, "report/cut": self.cut,
                  "report/overrun_seconds": self.overrun_seconds + max(0.0, timer.now() - timer.deadline)}
        values.update({f"trials/{k}": v for k, v in counts.items() if k in ("finished", "running", "failed")})
        now, step = int(time.time() * 1000), self.refreshes + self.errors + self.cut
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
        over_before = self.accounts.overrun
        cost = self.accounts.close(timer, cut, failed)
        self.overrun_seconds += self.accounts.overrun - over_before
        self.cpu_seconds += time.thread_time() - cpu0
        self.seconds += cost
        self.last_seconds = cost
        self._last_end = self.clock()
        with self.refreshed:
            self.refreshed.notify_all()

    def _say(self, line: str) -> None:
        if line not in self._said:  # once per distinct problem
            self._said.add(line)
            print(f"warning: {line}", file=sys.stderr, flush=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
