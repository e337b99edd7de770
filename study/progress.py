"""Live view of a study: trials done / running / pending / failed, ETA and the best value so far.

A Tune callback (Tune's own reporter is silenced unless -v). On a terminal it is a rich live table; elsewhere (CI,
log files) it prints one line whenever a trial ends, and at most every 30 s otherwise.

A resumed study is driven by the view the resumed driver builds (its --metric, its terminal), not by the copy Tune
pickled with the study: the pickle holds a reference to "the driver's view", and Tune hands the view its saved
counts through get_state/set_state.
"""

from __future__ import annotations

import os
import signal
import time

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table

from bma import record as R

_DRIVER_VIEW: "StudyProgress | None" = None  # the view this process's study drives (the latest built)


def _driver_view(total: int, metric: str, mode: str) -> "StudyProgress":
    """What a pickled StudyProgress becomes: the view this process built, else a quiet new one."""
    return _DRIVER_VIEW if _DRIVER_VIEW is not None else StudyProgress(total, metric, live=False, mode=mode)


class StudyProgress(Callback):
    def __init__(self, total: int, metric: str, live: bool = True, mode: str | None = None):
        """``mode``: max (the best value is the largest) or min; by default the metric registry's direction
        (bma/record.py). ValueError for a metric that has no better value."""
        global _DRIVER_VIEW
        if mode is None and (why := R.direction_problem(metric)):
            raise ValueError(why)
        mode = mode or R.metric_direction(metric)
        if mode not in ("max", "min"):
            raise ValueError(f"mode: expected max or min, got {mode!r}")
        self.total = total
        self.metric = metric
        self.mode = mode
        self.status: dict[str, str] = {}
        self.started: dict[str, float] = {}
        self.durations: list[float] = []
        self.best: float | None = None
        self.best_trial = ""
        self.t0 = time.time()
        self.console = Console()
        self._live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False) if live else None
        self._last_line = 0.0
        # Tune's status of each trial when the study was interrupted (Ctrl-C), None while it was not: Tune ends an
        # interrupted study by marking its running trials TERMINATED (after saving its state with them unfinished),
        # so only the moment of the signal tells an interruption from a completion (see on_step_begin).
        self.interrupted: dict[str, str] | None = None
        self._watching = False
        if self._live is not None:
            self._live.start()
        _DRIVER_VIEW = self

    # Tune pickles its run config (callbacks included) with the study's state: what it keeps is a reference to the
    # driver's view (see the module doc), never the terminal handles.
    def __reduce__(self):
        return (_driver_view, (self.total, self.metric, self.mode))

    def get_state(self) -> dict:
        """What a resumed driver's view takes over (Tune saves it with the study's state)."""
        return {"status": dict(self.status), "durations": list(self.durations),
                "best": {(self.metric, self.mode): (self.best, self.best_trial)}}

    def set_state(self, state: dict) -> None:
        self.status.update(state.get("status", {}))
        self.durations = list(state.get("durations", [])) + self.durations
        best = state.get("best", {}).get((self.metric, self.mode))  # only when it followed the same metric
        if best is not None and best[0] is not None:
            value, trial = best
            if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
                self.best, self.best_trial = value, trial

    # -- Tune hooks ------------------------------------------------------------------------------------------------
    def on_step_begin(self, iteration, trials, **info):
        """Once, in the study's loop (main thread, after Tune installed its SIGINT handler): wrap that handler so a
        Ctrl-C first records every trial's status (``interrupted``), then lets Tune stop gracefully as it does."""
        if self._watching:
            return
        self._watching = True
        try:
            tune_handler = signal.getsignal(signal.SIGINT)
        except ValueError:
            return

        def on_sigint(signum, frame):
            if self.interrupted is None:
                self.interrupted = {t.trial_id: t.status for t in trials}
            if callable(tune_handler):
                return tune_handler(signum, frame)
            raise KeyboardInterrupt

        try:
            signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread (Ray Client): Tune's own handling stands
            pass

    def on_trial_start(self, iteration, trials, trial, **info):
        self.status[trial.trial_id] = "running"
        self.started.setdefault(trial.trial_id, time.time())
        self._update(trials)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        if not isinstance(value, (int, float)):
            value = None
        minimise = self.mode == "min"
        if value is not None and (self.best is None or (value < self.best if minimise else value > self.best)):
            self.best, self.best_trial = float(value), trial.trial_id
        self._update(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.status[trial.trial_id] = "done"
        if trial.trial_id in self.started:
            self.durations.append(time.time() - self.started[trial.trial_id])
        self._update(trials, force_line=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.status[trial.trial_id] = "failed"
        self._say(f"trial {trial.trial_id} failed: {error_reason(trial)}  [{_settings(trial)}]; traceback: "
                  f"{trial.path}/error.txt and MLflow")
        self._update(trials, force_line=True)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(f"trial {trial.trial_id} crashed ({error_reason(trial)}); restarting it from its last checkpoint "
                  f"(failure {trial.run_metadata.num_failures})")

    def on_experiment_end(self, trials, **info):
        self._update(trials, force_line=True)
        self.close()

    # -- view -------------------------------------------------------------------------------------------------------
    def counts(self, trials=None) -> dict[str, int]:
        if trials is not None:  # Tune's own view is the truth after a restore
            for t in trials:
                # after a Ctrl-C, Tune marks the cut-off trials TERMINATED: their status at the signal is the truth
                status = t.status if self.interrupted is None else self.interrupted.get(t.trial_id, "PENDING")
                # When Tune's loop itself dies (a worker killed for memory, say), its cleanup marks every trial
                # TERMINATED too: a trial is done only if its training ended (Tune's last result says done)
                if status == "TERMINATED" and not (getattr(t, "last_result", None) or {}).get("done"):
                    status = "RUNNING" if self.status.get(t.trial_id) == "running" else "PENDING"
                s = {"TERMINATED": "done", "ERROR": "failed", "RUNNING": "running"}.get(status)
                # Tune calls on_trial_complete before it marks the trial TERMINATED: never step back from an end.
                if s and self.status.get(t.trial_id) not in ("done", "failed"):
                    self.status[t.trial_id] = s
        c = {"done": 0, "running": 0, "failed": 0}
        for s in self.status.values():
            c[s] = c.get(s, 0) + 1
        c["pending"] = max(self.total - c["done"] - c["running"] - c["failed"], 0)
        return c

    def eta_seconds(self, c: dict[str, int]) -> float | None:
        if not self.durations:
            return None
        per_trial = sum(self.durations) / len(self.durations)
        parallel = max(c["running"], 1)
        return per_trial * (c["pending"] + 0.5 * c["running"]) / parallel

    def _render(self, c: dict[str, int] | None = None) -> Table:
        c = c or self.counts()
        eta = self.eta_seconds(c)
        table = Table(title=f"study progress ({self.total} trials)", show_edge=False)
        for col in ("done", "running", "pending", "failed", "elapsed", "ETA", f"best {self.metric}"):
            table.add_column(col)
        table.add_row(
            str(c["done"]), str(c["running"]), str(c["pending"]), str(c["failed"]),
            _fmt(time.time() - self.t0), _fmt(eta) if eta is not None else "?",
            f"{self.best:.4f}" if self.best is not None else "-",
        )
        return table

    def _update(self, trials, force_line: bool = False) -> None:
        c = self.counts(trials)
        if self._live is not None:
            self._live.update(self._render(c))
        elif force_line or time.time() - self._last_line > 30:
            self._last_line = time.time()
            eta = self.eta_seconds(c)
            best = f"{self.best:.4f}" if self.best is not None else "-"
            print(f"[{_fmt(time.time() - self.t0)}] done {c['done']}/{self.total}  running {c['running']}  "
                  f"pending {c['pending']}  failed {c['failed']}  ETA {_fmt(eta) if eta is not None else '?'}  "
                  f"best {self.metric} {best}", flush=True)

    def _say(self, line: str) -> None:
        """One line on the console (above the live table when there is one)."""
        if self._live is not None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def error_reason(trial) -> str:
    """The failed trial's exception on one line, ``Type: first line of its message`` (the full traceback stays in
    the trial's error.txt and in MLflow's bma.error tag)."""
    error = None
    try:  # Tune has just written it beside the driver (the copy in storage is synced later)
        import cloudpickle

        if trial.pickled_error_file and os.path.isfile(trial.pickled_error_file):
            with open(trial.pickled_error_file, "rb") as fh:
                error = cloudpickle.load(fh)
    except Exception:  # unreadable or unpicklable: fall back to the text
        error = None
    if error is not None:
        cause = getattr(error, "cause", None) or error  # RayTaskError wraps the trainable's own exception
        lines = str(cause).strip().splitlines()
        return _cut(f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": "))
    text = ""
    try:
        if trial.error_file and os.path.isfile(trial.error_file):
            with open(trial.error_file, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
    except OSError:
        pass
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return _cut(lines[-1]) if lines else "unknown error (see the trial's log)"


def _settings(trial) -> str:
    """The trial's grid values (a distinct trial's point, its arm's name) or sampled values, on one line."""
    config = dict(getattr(trial, "config", None) or {})
    point = config.pop("point", None)
    if isinstance(point, dict):
        point = dict(point)
        point.pop("cells", None)
        config = {**point, **config}
    if isinstance(config.get("arm"), dict):
        config["arm"] = config["arm"].get("name")
    return _cut(", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in config.items()), 160)


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fmt(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
