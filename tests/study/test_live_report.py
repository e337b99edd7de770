"""The live page (study/live_report.py): refreshed as the parent run's report.html in a background thread within its
budget, counted and timed on the parent run, written once more at the end, off by a setting; and through
study/run.py's run_study on a tiny synthetic-feature study (no data mirror)."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from bma import record as R
from study.live_report import LiveReport, _driver_report
from tests.analysis.tracker_store import write_study


def _trials():
    for variant in ("unimodal", "bma"):
        for seed in (0, 1, 2):
            yield ({"variant": variant, "seed": seed},
                   {"acc/sound_probe_h": 0.5 + 0.01 * seed + (0.05 if variant == "bma" else 0),
                    "acc/image_probe_h": 0.6, "loss/total": 1.0}, {})


@pytest.fixture
def study(tmp_path):
    from mlflow import MlflowClient

    uri = write_study(tmp_path, "live", _trials(), axes=("model.variant",))
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("live")
    parent = client.search_runs([exp.experiment_id], f"tags.`{R.ROLE}` = '{R.ROLE_STUDY}'")[0].info.run_id
    return uri, exp.experiment_id, parent, client


def _wait_refreshes(report: LiveReport, n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    with report.refreshed:
        while report.refreshes + report.errors < n:
            left = deadline - time.monotonic()
            assert left > 0, f"{report.refreshes} refresh(es) after {timeout_s} s, expected {n}"
            report.refreshed.wait(left)


def _artifacts(client, run_id) -> list[str]:
    return sorted(a.path for a in client.list_artifacts(run_id))


def test_refreshes_follow_trial_events_and_are_counted_on_the_parent_run(study):
    uri, exp, parent, client = study
    # budget 1: the test does not wait out the 2 % rule (test_the_budget_spaces_refreshes checks it)
    report = LiveReport({"live": True, "every_s": 1}, "live", uri, exp, parent, planned=6, description="a test",
                        command=["study/run.py", "spec.yaml"], budget=1.0)
    report.setup()
    assert report.refreshes == 0  # nothing happened yet: no refresh
    report.on_trial_result(0, [], None, {})
    _wait_refreshes(report, 1)
    report.on_trial_complete(0, [], None)
    _wait_refreshes(report, 2)
    report.on_experiment_end([])  # the final page
    assert report.refreshes == 3 and report.errors == 0
    assert "report.html" in _artifacts(client, parent)
    import tempfile

    with tempfile.TemporaryDirectory() as dst, open(client.download_artifacts(parent, "report.html", dst)) as fh:
        page = fh.read()
    assert "Study live" in page and "the study has ended" in page and "study/run.py spec.yaml" in page
    history = client.get_metric_history(parent, "report/refreshes")
    assert [m.value for m in history] == [1, 2, 3]
    seconds = client.get_metric_history(parent, "report/seconds")
    # logged within the refresh: its cost up to the logging (the logging is in the next total)
    assert 0 < seconds[-1].value <= report.seconds < seconds[-1].value + 1
    assert 0 < client.get_metric_history(parent, "report/cpu_seconds")[-1].value <= report.seconds * 1.5
    assert client.get_metric_history(parent, "trials/finished")[-1].value == 6
    run = client.get_run(parent)
    assert run.data.tags[R.COMMAND] == "study/run.py spec.yaml" and run.data.tags[R.PLANNED] == "6"
    assert "6 finished" in run.data.tags["mlflow.note.content"]
    # a resumed study (another driver, the same parent run) continues the totals
    again = LiveReport({"live": True, "every_s": 1}, "live", uri, exp, parent, description="a test", budget=1.0)
    again.setup()
    again.on_experiment_end([])
    assert [m.value for m in client.get_metric_history(parent, "report/refreshes")] == [1, 2, 3, 4]
    assert again.seconds > report.seconds
    note = client.get_experiment(exp).tags["mlflow.note.content"]
    assert "workflowType=machine_learning" in note and f"runs/{parent}/artifacts" in note and "a test" in note


def test_refreshes_run_in_a_thread_and_never_block_the_hooks(study, monkeypatch):
    """Tune's hooks return at once while a refresh is in flight (the page is built in the background)."""
    uri, exp, parent, client = study
    import analysis.report as page_module

    release = threading.Event()
    real = page_module.build_page

    def slow_build(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(page_module, "build_page", slow_build)
    report = LiveReport({"live": True, "every_s": 1}, "live", uri, exp, parent, budget=1.0)
    report.setup()
    report.on_trial_result(0, [], None, {})
    t0 = time.perf_counter()
    for _ in range(100):
        report.on_trial_result(0, [], None, {})
    assert time.perf_counter() - t0 < 0.5
    release.set()
    _wait_refreshes(report, 1)
    report.on_experiment_end([])
    assert report.refreshes >= 2


def test_off_by_the_spec_setting(study):
    uri, exp, parent, client = study
    report = LiveReport({"live": False, "every_s": 1}, "live", uri, exp, parent, planned=6, command=["run"])
    report.setup()
    report.on_trial_result(0, [], None, {})
    report.on_trial_complete(0, [], None)
    report.on_experiment_end([])
    assert report.refreshes == 0
    assert "report.html" not in _artifacts(client, parent)
    assert not [k for k in client.get_run(parent).data.metrics if k.startswith("report/")]
    assert client.get_run(parent).data.tags[R.COMMAND] == "run"  # the record is kept


def test_the_budget_spaces_refreshes():
    """RefreshBudget's arithmetic: the balance (the longest refresh that may start now and end within 2 %), the
    first refresh expected without figures, later ones with them at their measured cost, grown with the trials."""
    from study import live_report as L

    clock = FakeClock(1000.0)
    b = L.RefreshBudget(0.02, clock)
    assert b.balance(1100.0) == pytest.approx(0.02 * 100 / 0.98)
    first = L.CODE_GUESS_S + L.FIRST_CORE_S + 8 * L.FIRST_CORE_PER_TRIAL_S
    assert b.expected(8) == pytest.approx(first)
    assert b.start_time(8) == pytest.approx(1000 + first * 0.98 / 0.02)
    assert b.balance(b.start_time(8)) == pytest.approx(first)
    # a first refresh: code 1 s, store 2 s, tables 0.5 s, upload 0.5 s; the page has two figure groups, not drawn
    t = L.RefreshTime(b, 8)
    clock.advance(1.0)
    t.code_s = 1.0
    clock.advance(2.0)
    t.took("store", 2.0)
    clock.advance(0.5)
    t.took("tables", 0.5)
    assert t.fits("curves") is (clock() + 4.0 * 2.5 <= t.deadline) and "curves" in b.parts
    t.fits("plane")
    clock.advance(0.5)
    b.code_loaded = True
    assert b.close(t, cut=False, failed=False) == pytest.approx(4.0) and b.spent == pytest.approx(4.0)
    assert b.costs["core"] == L.Cost(3.0, 2.5, 8)
    # the next: the core as measured, the figures at FIRST_RATIO times its store read + tables
    assert b.expected(8) == pytest.approx(3.0 + (L.FIRST_RATIO["curves"] + L.FIRST_RATIO["plane"]) * 2.5)
    assert b.expected(16) == pytest.approx(2 * 3.0 + (L.FIRST_RATIO["curves"] + L.FIRST_RATIO["plane"]) * 2.5)
    assert b.start_time(8) == pytest.approx(1000 + (4.0 + b.expected(8) * 0.98) / 0.02)
    # a measured figure group: as measured, scaled by the load (the store read per trial) now against then, at
    # least halved; before a refresh, the last refresh's load
    b.costs["curves"] = L.Cost(6.0, 2.5, 8)
    assert b.expected(16) == pytest.approx(2 * 3.0 + 6.0 + L.FIRST_RATIO["plane"] * 2.5)
    assert b.expect_part("curves", 5.0, 8) == pytest.approx(12.0) and b.expect_part("curves", 5.0, 16) == 6.0
    assert b.expect_part("curves", 1.0, 8) == 3.0
    b.costs["curves"] = L.Cost(6.0, 1.25, 8)  # measured when the machine was half as busy as at the last refresh
    assert b.expected(8) == pytest.approx(3.0 + 12.0 + L.FIRST_RATIO["plane"] * 2.5)
    # a cut refresh: the core costs more than it had; expect twice that
    t = L.RefreshTime(b, 8)
    clock.advance(5.0)
    b.close(t, cut=True, failed=False)
    assert b.costs["core"].seconds == pytest.approx(10.0)
    # every_s spaces cheap refreshes
    report = LiveReport({"live": True, "every_s": 30}, "s", "sqlite:///x.db", "1", "p", budget=1.0, clock=clock)
    report._last_end = clock()
    assert report.next_start() == pytest.approx(clock() + 30)


def test_the_parts_match_the_page():
    from analysis.report import OPTIONAL
    from study.live_report import FIRST_RATIO

    assert set(FIRST_RATIO) == set(OPTIONAL)


class FakeClock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _fake_page(clock: FakeClock, cost, calls: list):
    """analysis.report.build_page as the live report sees it, on a fake clock: ``cost(step, n)`` seconds for each
    step with ``n`` trial runs in the store (40 metric history reads a run, the tables, each figure group, the
    upload), the same PageBudget calls (check before each read and before the tables, fits before each figure)."""
    from analysis.report import Page

    def build_page(study, tracking_uri=None, parent_run=None, client=None, live=None, budget=None, **kw):
        from analysis.collect import OutOfTime

        n = calls[-1]["trials"] if calls else 0
        call = {"start": clock(), "trials": n, "skipped": [], "seconds": {}, "cut": False}
        calls[-1] = call

        def check():  # where the real page checks its deadline: before each history read, before the tables
            try:
                budget.check()
            except OutOfTime:
                call["cut"] = True
                raise

        t0 = clock()
        for _ in range(40 * n):
            check()
            clock.advance(cost("read", n))
        call["seconds"]["store"] = clock() - t0
        budget.took("store", clock() - t0)
        check()
        clock.advance(cost("tables", n))
        call["seconds"]["tables"] = cost("tables", n)
        budget.took("tables", cost("tables", n))
        for part in ("curves", "plane"):
            if budget.fits(part):
                clock.advance(cost(part, n))
                budget.took(part, cost(part, n))
                call["seconds"][part] = cost(part, n)
            else:
                call["skipped"].append(part)
        clock.advance(cost("upload", n))  # the upload, as the live report's own step
        counts = {"finished": 0, "running": n, "failed": 0}
        return Page("<html></html>", ["asked"], counts, [], call["seconds"], call["skipped"])

    return build_page


def _simulate(report: LiveReport, clock: FakeClock, duration_s: float, starts: list[float], calls: list):
    """The driver's loop (LiveReport._work) on the fake clock: trials report all the time (the flag is always set),
    so a refresh starts at next_start; the trials started by then count. Returns each refresh's (start, end,
    deadline, seconds spent after it, overrun after it)."""
    t0, log = clock(), []
    end = t0 + duration_s
    while True:
        report._started = sum(s <= clock() - t0 for s in starts)
        delay = report.next_start() - clock()
        if delay > 0:
            if clock() + delay >= end:
                break
            clock.advance(delay)
            continue  # trials started meanwhile: the loop asks again (as _work does)
        calls.append({"trials": report._started})  # what the fake page reads
        start, deadline = clock(), clock() + report.accounts.balance(clock())
        report._refresh()
        log.append((start, clock(), deadline, report.accounts.spent, report.accounts.overrun))
        if clock() >= end:
            break
    clock.t = max(clock(), end)
    return log


@pytest.mark.parametrize("kind", ["short", "long", "surprise"])
def test_the_budget_holds_on_a_fake_clock(study, monkeypatch, kind):
    """A 5-minute study of 8 trials and a 3-hour one of 200, under a load that swings 1x-3x, on a fake clock (no
    wall-clock dependence). At every refresh's start the refreshes so far took at most 2 % of the time; at its end,
    at most 2 % plus what the refresh ran past its deadline, which is no more than its steps that cannot stop midway
    (one read, the tables, the upload) cost; between refreshes the share only falls. The first refresh has no curves;
    the final page has every part; the totals logged on the parent run are the refreshes'. "surprise" (a long study
    whose curves cost 12x what the first guess says, and grow): the overruns beyond those steps are the curves'
    drawings, counted in report/overrun_seconds and paid back before the next refresh starts."""
    import math

    import analysis.report as page_module

    uri, exp, parent, client = study
    t0 = 10_000.0
    clock = FakeClock(t0)

    def load(t):  # the trials' competition for the cores: 1x-3x, over a 10-minute cycle
        return 2 + math.sin(2 * math.pi * (t - t0) / 600)

    def cost(step, n):  # magnitudes as measured (the module's comments): 8 trials, 0.9 s to read + tables
        per = {"read": 0.002, "tables": 0.1 + 0.01 * n, "curves": (1.0 + 0.02 * n) * (12 if kind == "surprise" else 1),
               "plane": 0.2 + 0.005 * n, "upload": 0.1}[step]
        return per * load(clock())

    calls: list = []
    monkeypatch.setattr(page_module, "build_page", _fake_page(clock, cost, calls))
    report = LiveReport({"live": True, "every_s": 30}, "live", uri, exp, parent, clock=clock)
    report.accounts.code_loaded = True  # the real import costs no fake time
    duration, n_trials = (300.0, 8) if kind == "short" else (3 * 3600.0, 200)
    starts = [i * duration / n_trials * 0.9 for i in range(n_trials)]  # 4 at a time, the last near the end
    log = _simulate(report, clock, duration, starts, calls)
    pages = calls[:]
    print("\n".join(f"{s - t0:7.0f} s: {e - s:5.2f} s, deadline {d - s:5.2f} s, spent {sp:6.2f} s "
                    f"({100 * sp / (e - t0):.2f} %), skipped {c['skipped']}"
                    for (s, e, d, sp, _), c in zip(log, pages)))  # pytest -s shows the schedule
    assert log, "no refresh while the study ran"
    assert len(log) == len(pages)
    spent_before = 0.0
    over = []
    for (start, end, deadline, spent, _), page in zip(log, pages):
        assert spent_before <= 0.02 * (start - t0) + 1e-9  # the start rule: any overrun is paid back first
        over.append(max(0.0, end - deadline))
        assert spent <= 0.02 * (end - t0) + over[-1] + 1e-9
        uncut = cost("read", page["trials"]) + cost("tables", page["trials"]) + cost("upload", page["trials"])
        if over[-1] > 3 * uncut / load(clock()) + 1e-9:  # more than the steps that cannot stop (at 3x load) cost
            # only a figure group that cost more than expected (its first drawing, or grown since)
            assert kind == "surprise" and "curves" in page["seconds"]
        spent_before = spent
    assert report.accounts.overrun == pytest.approx(sum(over))
    if kind == "surprise":
        first_curves = next(i for i, p in enumerate(pages) if "curves" in p["seconds"])
        assert over[first_curves] > 5.0  # the first drawing, on FIRST_RATIO's guess
    else:
        assert sum(over) < 1.0
    during, n_during = report.accounts.spent, report._session_refreshes
    assert during <= 0.02 * (clock() - t0) + 1e-9  # at the study's end, paid back
    assert "curves" in pages[0]["skipped"]  # the first: started when the budget covered the page without figures
    if kind == "long":
        assert n_during >= 5 and any(not p["skipped"] for p in pages)  # full pages once the budget covers them
    # the final page: outside the budget, every part
    report._running = False
    calls.append({"trials": report._started})
    report._refresh(final=True)
    assert calls[-1]["skipped"] == [] and set(calls[-1]["seconds"]) >= {"curves", "plane"}
    cut = sum(p["cut"] for p in pages)  # the core met a busier machine than expected: stopped at its deadline
    assert report.refreshes == n_during + 1 == len(pages) - cut + 1 and report.cut == cut and report.errors == 0
    assert report.partial == sum(bool(p["skipped"]) and not p["cut"] for p in pages)
    history = {k: [m.value for m in sorted(client.get_metric_history(parent, k), key=lambda m: m.step)]
               for k in ("report/refreshes", "report/seconds", "report/partial", "report/overrun_seconds",
                         "report/cut")}
    assert history["report/refreshes"][-1] == report.refreshes and len(history["report/refreshes"]) == len(calls)
    assert history["report/cut"][-1] == cut
    assert history["report/seconds"][-1] == pytest.approx(report.seconds) == pytest.approx(during +
                                                                                           report.last_seconds)
    assert history["report/partial"][-1] == report.partial
    assert history["report/overrun_seconds"][-1] == pytest.approx(report.overrun_seconds) == pytest.approx(sum(over))


def test_a_refresh_whose_time_is_up_is_cut(study, monkeypatch):
    """The real page with a deadline already passed: the store's reading stops at its first check (a cut refresh,
    counted, no page); the study's end stops a refresh in flight the same way."""
    uri, exp, parent, client = study

    class Ticking(FakeClock):
        def __call__(self) -> float:  # 10 ms a reading
            self.t += 0.01
            return self.t

    clock = Ticking(0.0)
    report = LiveReport({"live": True, "every_s": 1}, "live", uri, exp, parent, clock=clock)
    report._refresh()  # at t0: the balance is 0, the deadline is the start
    assert report.cut == 1 and report.refreshes == 0 and report.errors == 0
    assert "report.html" not in _artifacts(client, parent)
    assert client.get_metric_history(parent, "report/cut")[-1].value == 1
    assert report.accounts.costs["core"].seconds >= 0
    # a refresh in flight when the study ends
    import analysis.report as page_module

    real = page_module.build_page

    def late(*args, **kwargs):
        report._stop.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(page_module, "build_page", late)
    report.accounts.share = 1.0
    report._refresh()
    assert report.cut == 2 and report.refreshes == 0


def test_a_page_without_its_figures(study):
    """A PageBudget that fits no figure group: the page's figure sections say they were not drawn, its parts are
    timed, and nothing is left out of the page otherwise."""
    from analysis.report import OPTIONAL, PageBudget, build_page

    uri, exp, parent, client = study

    class NoFigures(PageBudget):
        asked: list = []

        def fits(self, part):
            self.asked.append(part)
            return False

    budget = NoFigures()
    page = build_page("live", uri, budget=budget)
    full = build_page("live", uri)
    assert page.skipped == budget.asked == ["curves", "plane"] and set(page.skipped) <= set(OPTIONAL)
    assert page.sections == full.sections and full.skipped == []
    assert page.html.count("data-skipped") == 2 and "<img" not in page.html and "<img" in full.html
    assert set(page.seconds) == {"store", "tables"} and set(full.seconds) == {"store", "tables", "curves", "plane"}


def test_a_pickled_report_is_the_drivers_report():
    """Tune pickles its callbacks with the study's state: a resumed driver's copy is the report it built itself."""
    report = LiveReport({"live": True}, "s", "sqlite:///x.db", "1", "p")
    assert pickle.loads(pickle.dumps(report)) is report is _driver_report()


SPEC = """
name: synthetic-live
data: {image: {source: mnist}, sound: {source: fsdd}}
grid:
  variant: [unimodal, bma]
trial:
  train_size: 100
  pairing_ratio: 0.2
  batch_size: 50
  epochs: 1
  regime: {val_per_class: 5}
  model: {memory_slots: 16, encoder_width: 4, feature_dim: 32, projection_dim: 16}
  eval: {eval_every: 1, info_every: 0, probe_max_iter: 30}
resources: {cpu: 1}
report: {live: LIVE, every_s: 1}
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("live", [True, False])
def test_a_study_refreshes_its_page_or_not(tmp_path, monkeypatch, capsys, live):
    """run_study on synthetic features (tests/study/test_engine_synthetic.py): the parent run holds report.html and
    the refresh counts with ``report: {live: true}``, neither with ``live: false``."""
    from mlflow.tracking import MlflowClient

    from bma.config import TrialConfig
    from study.run import parse_args, run_study
    from study.spec import load_spec
    from tests.synthetic_data import synthetic_trial_data
    from trainables.bma_trainable import data_key

    (tmp_path / "empty-mirror").mkdir()
    monkeypatch.setenv("BMA_DATA_MIRROR", str(tmp_path / "empty-mirror"))
    monkeypatch.setenv("BMA_OFFLINE", "1")
    monkeypatch.setenv("BMA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC.replace("LIVE", str(live).lower()))
    spec = load_spec(tmp_path / "spec.yaml")
    assert spec.report == {"live": live, "every_s": 1.0}
    synthetic = synthetic_trial_data()
    datas = {data_key(TrialConfig.from_flat(flat)): synthetic for flat in spec.trial_flats()}
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "ray_results")
    args = parse_args([str(tmp_path / "spec.yaml"), "--num-cpus", "2"])
    rc = run_study(spec, spec.name, spec.fingerprint(), (datas, []), tracking_uri, storage,
                   tmp_path / "ray_results" / spec.name, args, spec.distinct_trials())
    assert rc == 0
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(spec.name)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.search_runs([exp.experiment_id], f"tags.`{R.ROLE}` = '{R.ROLE_STUDY}'")[0]
    assert R.COMMAND in parent.data.tags and parent.data.tags[R.PLANNED] == "2"
    artifacts = _artifacts(client, parent.info.run_id)
    refreshes = parent.data.metrics.get("report/refreshes")
    out = capsys.readouterr().out
    if live:
        assert "report.html" in artifacts and refreshes >= 1  # at least the final page
        history = client.get_metric_history(parent.info.run_id, "report/refreshes")
        assert [m.value for m in history] == list(range(1, len(history) + 1))
        assert "report: report.html on the parent run refreshed" in out
    else:
        assert "report.html" not in artifacts and refreshes is None and "report:" not in out


def test_the_report_setting_is_validated(tmp_path):
    from study.spec import REPORT_DEFAULTS, SpecError, load_spec

    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("report: {live: LIVE, every_s: 1}\n", ""))
    assert load_spec(path).report == REPORT_DEFAULTS == {"live": True, "every_s": 30.0}
    path.write_text(SPEC.replace("{live: LIVE, every_s: 1}", "false"))
    assert load_spec(path).report["live"] is False
    path.write_text(SPEC.replace("{live: LIVE, every_s: 1}", "{live: maybe, every_s: 0, colour: red}"))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert "report.live: expected true or false" in text and "report.every_s: expected seconds >= 1" in text
    assert "report.colour: unknown key" in text
    path.write_text(SPEC.replace("LIVE", "true"))
    spec = load_spec(path)
    assert load_spec(path, smoke=True).report == spec.report  # --smoke keeps it
    path.write_text(SPEC.replace("LIVE", "false"))
    assert load_spec(path).fingerprint() == spec.fingerprint()  # not part of the fingerprint


def test_a_study_of_several_tune_experiments_refreshes_in_each(study):
    """Precision rounds run one Tune experiment after another with the same callback: each ends with a page and the
    next starts refreshing again."""
    uri, exp, parent, client = study
    report = LiveReport({"live": True, "every_s": 1}, "live", uri, exp, parent, budget=1.0)
    for _ in range(2):
        report.setup()
        assert report._running and report._thread is not None
        report.on_experiment_end([])
    assert [m.value for m in client.get_metric_history(parent, "report/refreshes")] == [1, 2]
