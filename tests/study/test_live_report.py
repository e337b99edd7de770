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
    assert seconds[-1].value == pytest.approx(report.seconds) and report.seconds > 0
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
    report = LiveReport({"live": True, "every_s": 30}, "s", "sqlite:///x.db", "1", "p")
    report._t0 = report._last_end = 1000.0
    assert report.next_start() == pytest.approx(1000 + 10.0 / 0.02)  # first: the expected 10 s fits in 2 % of 500 s
    report._session_seconds, report.last_seconds, report._last_end = 4.0, 4.0, 1210.0
    assert report.next_start() == pytest.approx(1000 + 8.0 / 0.02)  # 4 s done + 4 s more <= 2 % of 400 s
    report._session_seconds, report.last_seconds = 0.1, 0.1
    assert report.next_start() == pytest.approx(1210 + 30)  # cheap refreshes: every_s apart


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
