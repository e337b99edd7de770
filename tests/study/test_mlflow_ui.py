"""A study's experiment in the real MLflow UI (``mlflow ui`` + headless Chromium): where MLflow 3.17 lands, and that
the description the driver writes (study/live_report.py) links the runs table.

What 3.17's UI reads to choose an experiment's tab (its built JS, mlflow/server/js/build/static/js): the experiment
kind comes from the *GenAI / Model training* switch whenever its feature flag is on, and it is always on in the
open-source build (``Z0 = () => !0``; the hook reads the ``mlflow.experimentKind`` tag only when it is off). The
switch's value is the URL's ``workflowType`` parameter, else the browser's localStorage ``mlflow.workflowType_v1``
(written when the user flips the switch), else ``genai``. The bare experiment route then redirects to Runs unless
the kind is genai_development (then Overview or Traces). So no tag or description the engine writes can change
where a fresh browser lands; the description's link (``runs?workflowType=machine_learning``) and the browser's
remembered switch do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bma import record as R
from tests.browser import Browser, find_chromium
from tests.mlflow_ui_screenshot import free_port, wait_http

ROWS = "document.querySelectorAll('[role=row][row-id]').length > 0"  # the runs table, drawn with its runs
CHROMIUM_SKIP = ("chromium is not installed (apt-get install -y chromium, or set $CHROMIUM): the MLflow UI is not "
                 "loaded in a browser")


def _trials():
    for variant in ("unimodal", "bma"):
        for seed in (0, 1):
            yield ({"variant": variant, "seed": seed}, {"acc/sound_probe_h": 0.5 + 0.01 * seed, "loss/total": 1.0}, {})


@pytest.fixture
def ui(tmp_path):
    """A study's store with the driver's description, served by ``mlflow ui`` on a free port of 127.0.0.1."""
    from mlflow import MlflowClient

    from study.live_report import LiveReport
    from tests.analysis.tracker_store import write_study

    uri = write_study(tmp_path, "ui-study", _trials(), axes=("model.variant",))
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ui-study").experiment_id
    parent = client.search_runs([exp], f"tags.`{R.ROLE}` = '{R.ROLE_STUDY}'")[0].info.run_id
    LiveReport({"live": False}, "ui-study", uri, exp, parent, description="a test study")._record()
    port = free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    with open(tmp_path / "mlflow-ui.log", "w") as log:
        proc = subprocess.Popen([mlflow_bin, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port",
                                 str(port), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/health", proc, timeout_s=120)  # bounded; says what it waited for
        yield base, exp, parent
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


def _tab(b: Browser, what: str) -> str:
    """The tab the experiment page settles on (its route after MLflow's redirect), once it is drawn."""
    tab = b.wait_for("(() => { const m = location.hash.match(/#\\/experiments\\/[^/?]+\\/([a-z-]+)/); "
                     "return m && document.body.innerText.includes('ui-study') ? m[1] : ''; })()", 90, what)
    return tab


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason=CHROMIUM_SKIP)
@pytest.mark.timeout(420)
def test_the_experiment_in_the_mlflow_ui(ui, tmp_path):
    """A fresh browser lands on the GenAI side (3.17: nothing on the server chooses the tab); the description's
    first link opens the runs table; ``?workflowType=machine_learning`` or the browser's remembered switch land
    on the runs. The screenshots stay in the test's folder."""
    base, exp, parent = ui
    with Browser(width=1400, height=900) as b:
        b.open(f"{base}/#/experiments/{exp}")
        landed = _tab(b, "the experiment page, first visit")
        b.wait_for("!!document.querySelector('a[href*=\"runs?workflowType=machine_learning\"]')", 30,
                   "the description's link to the runs")
        b.screenshot(str(tmp_path / "first_visit.png"), full_page=False)
        href = b.evaluate("document.querySelector('a[href*=\"runs?workflowType=machine_learning\"]').href")
        assert href == f"{base}/#/experiments/{exp}/runs?workflowType=machine_learning"
        b.open(href)
        assert _tab(b, "the runs, from the description's link") == "runs"
        b.wait_for(ROWS, 60, "the runs table's rows")
        b.screenshot(str(tmp_path / "link_followed.png"), full_page=False)
        b.open("about:blank")
        b.open(f"{base}/#/experiments/{exp}?workflowType=machine_learning")
        assert _tab(b, "the experiment page with ?workflowType=machine_learning") == "runs"
        # the switch, as the browser remembers it (the UI writes this when the user flips it)
        b.evaluate("localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('machine_learning')); 1")
        b.open("about:blank")
        b.open(f"{base}/#/experiments/{exp}")
        assert _tab(b, "the experiment page, the switch remembered") == "runs"
        b.wait_for(ROWS, 60, "the runs table's rows, the switch remembered")
        b.screenshot(str(tmp_path / "switch_remembered.png"), full_page=False)
        b.write_console(str(tmp_path / "console.txt"))
    # MLflow 3.17.2 lands a fresh browser on the GenAI side: if this changes, docs/analysis.md's paragraph does too
    assert landed in ("overview", "traces"), f"a fresh browser landed on {landed!r}"
