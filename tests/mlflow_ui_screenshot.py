"""Screenshot ``mlflow ui`` on a study's store in headless Chromium: how the UI opens the study's experiment.

    python -m tests.mlflow_ui_screenshot --tracking-uri sqlite:////tmp/s/mlflow.db --study quick-smoke --out DIR

Starts ``mlflow ui`` on 127.0.0.1 on a free port (stopped afterwards), opens the experiment's page as a user would
(the URL MLflow's experiment list links to), waits for the page to render (a condition in the page, with a
timeout), and writes ``experiment.png`` (what the experiment's plain link opens), ``runs.png`` and ``charts.png``
(the runs in MLflow's model-training view, the link the experiment's description gives), the parent run's artifact
view ``parent_artifacts.png`` (report.html when the study wrote one), and ``console.txt``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.browser import Browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            proc_wait = 0.2  # the server is starting: poll its socket again
            try:
                proc.wait(proc_wait)
            except subprocess.TimeoutExpired:
                pass
    raise RuntimeError(f"mlflow ui did not answer at {url} within {timeout_s:g} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--prefix", default="")
    args = ap.parse_args(argv)
    from mlflow import MlflowClient

    client = MlflowClient(args.tracking_uri)
    exp = client.get_experiment_by_name(args.study)
    parents = client.search_runs([exp.experiment_id], "tags.`bma.role` = 'study'", max_results=1)
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    proc = subprocess.Popen([mlflow_bin, "ui", "--backend-store-uri", args.tracking_uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=open(args.out / f"{args.prefix}mlflow-ui.log", "w"), start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/health", proc)
        with Browser(width=1440, height=1000) as b:
            b.open(f"{base}/#/experiments/{exp.experiment_id}")
            # rendered: the experiment's name is on the page and no loading spinner is left
            b.wait_for(f"document.body.innerText.includes({args.study!r}) && "
                       "!document.querySelector('[role=progressbar], .du-bois-light-spin, [data-testid=spinner]')",
                       60, "the experiment page")
            b.wait_for("document.body.innerText.length > 200", 30, "the experiment page's content")
            _settle(b)
            b.screenshot(str(args.out / f"{args.prefix}experiment.png"), full_page=False)
            (args.out / f"{args.prefix}experiment.txt").write_text(b.evaluate("document.body.innerText"))
            # the description's first link (MLflow opens a description's links in a new tab): followed here
            href = b.evaluate("(document.querySelector('a[href*=\"runs?workflowType=machine_learning\"]') || {})"
                              ".href || ''")
            if href:
                b.open(href)
                b.wait_for("document.body.innerText.includes('Run Name')", 60, "the runs table, from the link")
                _settle(b)
                b.screenshot(str(args.out / f"{args.prefix}link_followed.png"), full_page=False)
            else:
                print("no link to the model-training view in the experiment's description")
            ml = "workflowType=machine_learning"
            trials = ml
            b.open(f"{base}/#/experiments/{exp.experiment_id}/runs?{trials}")
            b.wait_for("document.body.innerText.includes('Run Name') || document.body.innerText.includes('Run name')",
                       60, "the runs table")
            # expand the study's parent run (its trials are its children), as a user would
            expand = ("(() => { const el = document.querySelector('button[data-component-id*=runnamecellrenderer]'); "
                      "if (el) el.click(); return !!el; })()")
            b.evaluate(expand)
            _settle(b)
            b.screenshot(str(args.out / f"{args.prefix}runs.png"), full_page=False)
            b.open(f"{base}/#/experiments/{exp.experiment_id}/runs?{trials}&compareRunsMode=CHART")
            _settle(b)
            if b.evaluate("document.querySelectorAll('[role=row][row-id]').length <= 1"):
                b.evaluate(expand)  # the trials' charts appear once their parent is expanded
                _settle(b)
            b.screenshot(str(args.out / f"{args.prefix}charts.png"), full_page=False)
            if parents:
                run = parents[0].info.run_id
                b.open(f"{base}/#/experiments/{exp.experiment_id}/runs/{run}/artifacts/report.html?{ml}")
                b.wait_for("document.body.innerText.includes('spec.yaml')", 60, "the parent run's artifacts")
                _settle(b, 3000)
                b.screenshot(str(args.out / f"{args.prefix}parent_artifacts.png"), full_page=False)
            b.write_console(str(args.out / f"{args.prefix}console.txt"))
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
    print(f"screenshots in {args.out}")
    return 0


def _settle(b: Browser, quiet_ms: int = 1500, timeout_s: float = 30) -> None:
    """Wait until the page's DOM has not changed for ``quiet_ms`` (its requests answered and drawn)."""
    b.evaluate("window.__bmaLast = Date.now(); new MutationObserver(() => { window.__bmaLast = Date.now(); })"
               ".observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true}); 1")
    b.wait_for(f"Date.now() - window.__bmaLast > {quiet_ms}", timeout_s, "the page to settle")


if __name__ == "__main__":
    raise SystemExit(main())
