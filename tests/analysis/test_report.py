"""The study's page (analysis/report.py) on stores written by the real writer (trainables.tracking): its sections,
its numbers against the analysis functions' own values, its --out rule, and the page in a real browser."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import pytest

from analysis.__main__ import main as analysis_main
from analysis.aggregate import summarize
from analysis.collect import AnalysisError, collect_study
from analysis.compare import compare_variants
from analysis.report import PAGE_METRICS, SECTIONS, _cell_label, build_page, write_report
from bma import record as R
from tests.analysis.tracker_store import write_study
from tests.browser import Browser, find_chromium

CHROMIUM_SKIP = ("chromium is not installed (apt-get install -y chromium, or set $CHROMIUM): the page is not loaded "
                 "in a browser")


class PageParser(HTMLParser):
    """Section ids, the info cells' data attributes, data-value spans per section, data-count spans, images."""

    def __init__(self):
        super().__init__()
        self.sections: list[str] = []
        self.info: list[dict] = []
        self.values: dict[str, list[float]] = {}
        self.counts: dict[str, int] = {}
        self.images: dict[str, int] = {}
        self.verdicts: list[str] = []
        self._count = None
        self.text: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a["id"])
            self.text[a["id"]] = ""
        elif tag == "td" and "data-metric" in a:
            self.info.append(a)
        elif tag == "span" and "data-value" in a:  # empty: NaN (no value)
            self.values.setdefault(self.sections[-1], []).append(float(a["data-value"] or "nan"))
        elif tag == "span" and "data-verdict" in a:
            self.verdicts.append(a["data-verdict"])
        elif tag == "span" and "data-count" in a:
            self._count = a["data-count"]
        elif tag == "img":
            assert a["src"].startswith("data:image/png;base64,"), a["src"][:40]  # embedded, nothing external
            self.images[self.sections[-1]] = self.images.get(self.sections[-1], 0) + 1
        assert not (tag in ("script", "link") or (tag == "img" and not a.get("src", "").startswith("data:"))), tag

    def handle_data(self, data):
        if self._count is not None:
            self.counts[self._count] = int(data)
            self._count = None
        if self.sections:
            self.text[self.sections[-1]] += data


def parse(html_text: str) -> PageParser:
    p = PageParser()
    p.feed(html_text)
    return p


@pytest.fixture(scope="module")
def page(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "quick"
    path, page = write_report(store.study, store.uri, str(out))
    with open(path, encoding="utf-8") as fh:
        return page, fh.read(), out


def test_the_page_holds_every_section_and_the_failure_reasons(page, store):
    page, text, out = page
    p = parse(text)
    assert p.sections[: len(SECTIONS)] == list(SECTIONS) and p.sections[-1] == "notes"
    assert "name: quick" in p.text["asked"]  # the parent run's spec.yaml artifact
    assert "code commit" in p.text["asked"] and "launched by" in p.text["asked"]
    # progress: the counts the collected runs give (a running trial, a failed one with its bma.error)
    data = collect_study(store.study, store.uri, PAGE_METRICS)
    current = data.runs[~data.runs["superseded"]].drop_duplicates("run_id")
    for state in ("finished", "running", "failed"):
        assert p.counts[state] == int((current["state"] == state).sum()) == page.counts[state]
    assert p.counts["failed"] == 1 and p.counts["running"] == 1
    assert "CUDA out of memory" in p.text["progress"]
    assert p.images.get("curves", 0) >= 1 and p.images.get("plane", 0) >= 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == "bma-study analysis report" and manifest["files"] == ["report.html"]


def test_the_pages_numbers_are_the_analysis_functions_values(page, store):
    page, text, _ = page
    p = parse(text)
    data = collect_study(store.study, store.uri, PAGE_METRICS)
    summary = summarize(data.runs, data.keys)
    rows = summary[summary["n_seeds"] > 0]
    varying = [k for k in data.keys if rows[k].astype(str).nunique() > 1]
    by_label = {_cell_label({k: r[k] for k in varying}): r for _, r in rows.iterrows()}  # the page's cell labels
    assert len(by_label) == len(rows)
    checked = 0
    for cell in p.info:
        col = cell["data-metric"]
        row = by_label[cell["data-cell"]]
        for attr, stat in (("data-mean", "mean"), ("data-low", "ci95_low"), ("data-high", "ci95_high")):
            expected = row[f"{col}_{stat}"]
            if cell[attr] == "":
                assert math.isnan(expected)
            else:
                assert float(cell[attr]) == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert int(cell["data-n"]) == row[f"{col}_n"]
        checked += 1
    assert checked >= 4 * 3  # I_zv_zs, I_S_Sprime, I_fv_fsmem, H_Wv in every bma cell
    # the contrasts: compare_variants' mean differences, in its order, for the main metrics it tested
    compare, _, _ = compare_variants(data.runs, data.keys)
    main = compare[compare["metric"].isin({"final/acc/image_probe_h", "final/acc/sound_probe_h",
                                           "final/retrieval/i2s_r1", "final/assoc/i2s_acc"})]
    assert p.values["contrasts"] == pytest.approx(main["mean_diff"].tolist(), nan_ok=True)
    assert p.verdicts == compare.loc[main.index, "verdict"].tolist()  # analysis.verdicts, through compare_variants


def test_the_verdicts_are_compare_variants_verdicts_with_the_recorded_sesoi(tmp_path):
    """The contrasts show each contrast's verdict as compare_variants computes it (analysis.verdicts), with the delta
    the spec declared (the parent run's bma.sesoi tag)."""
    from mlflow import MlflowClient

    def trials():
        for variant in ("unimodal", "bma"):
            for seed in range(4):
                gain = 0.05 + 0.002 * seed if variant == "bma" else 0.0
                yield ({"variant": variant, "seed": seed},
                       {"acc/sound_probe_h": 0.5 + 0.01 * seed + gain, "acc/image_probe_h": 0.6 + 0.01 * seed
                        + (0.0005 * (-1) ** seed if variant == "bma" else 0)}, {})

    uri = write_study(tmp_path, "verdicts", trials(), axes=("model.variant",))
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("verdicts")
    parent = client.search_runs([exp.experiment_id], f"tags.`{R.ROLE}` = '{R.ROLE_STUDY}'")[0].info.run_id
    client.set_tag(parent, R.SESOI, json.dumps({"acc/*": 0.02}))
    p = parse(build_page("verdicts", uri).html)
    data = collect_study("verdicts", uri, PAGE_METRICS)
    compare, _, _ = compare_variants(data.runs, data.keys, sesoi={"acc/*": 0.02})
    assert p.verdicts == compare["verdict"].tolist() == ["equivalent", "gain"]  # image: within ±0.02; sound: +0.05
    assert "acc/* = 0.02" in p.text["contrasts"]


def test_out_follows_the_export_rule(store, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    with pytest.raises(AnalysisError, match="not written by `python -m analysis report`"):
        write_report(store.study, store.uri, str(mine))
    assert (mine / "thesis.tex").read_text() == "mine" and len(list(mine.iterdir())) == 1
    out = tmp_path / "page"
    assert analysis_main(["report", "--study", store.study, "--tracking-uri", store.uri, "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    # an earlier report is replaced; one with a file added is not
    assert analysis_main(["report", "--study", store.study, "--tracking-uri", store.uri, "--out", str(out), "-q"]) == 0
    (out / "notes.txt").write_text("added")
    assert analysis_main(["report", "--study", store.study, "--tracking-uri", store.uri, "--out", str(out)]) == 2
    assert "notes.txt" in capsys.readouterr().err
    missing = ["report", "--study", "nosuch", "--tracking-uri", store.uri, "--out", str(tmp_path / "x")]
    assert analysis_main(missing) == 2
    assert not (tmp_path / "x").exists()


def test_the_page_reads_the_store_without_writing(store):
    from mlflow import MlflowClient

    client = MlflowClient(store.uri)
    exp = client.get_experiment_by_name(store.study)
    before = [(r.info.run_id, r.info.status, dict(r.data.tags), dict(r.data.metrics))
              for r in client.search_runs([exp.experiment_id], max_results=1000)]
    build_page(store.study, store.uri)
    after = [(r.info.run_id, r.info.status, dict(r.data.tags), dict(r.data.metrics))
             for r in client.search_runs([exp.experiment_id], max_results=1000)]
    assert before == after


def test_a_boost_and_an_ablation_study_get_their_sections(tmp_path):
    def boost_trials():
        for variant in ("unimodal", "bma"):
            for pool in (0, 1000):
                for seed in (0, 1, 2):
                    acc = 0.5 + 0.01 * seed + (0.02 * pool / 1000 if variant == "bma" else 0)
                    yield ({"variant": variant, "pairs": 50, "unpaired_images": pool, "unpaired_sounds": 500,
                            "seed": seed, "steps": 10},
                           {"acc/sound_probe_h/k5": acc, "acc/sound_probe_h": acc + 0.1, "loss/total": 1.0}, {})

    uri = write_study(tmp_path / "b", "boostlike", boost_trials(), axes=("model.variant", "regime.unpaired_images"))
    p = parse(build_page("boostlike", uri).html)
    assert "boost" in p.sections and p.images.get("boost", 0) >= 1 and "pool 1000 - pool 0" in p.text["boost"]

    def arm_trials():
        for arm, settings in {"bma": {}, "variance": {"loss.w_variance": 1.0}}.items():
            for seed in (0, 1, 2):
                yield ({"variant": "bma", "seed": seed, **settings},
                       {"acc/sound_probe_h/k5": 0.5 + 0.01 * seed + (0.05 if arm == "variance" else 0),
                        "info/I_hv_Y/probe_bound": 1.0 + 0.1 * seed}, {R.ARM: arm})

    (tmp_path / "a").mkdir()
    uri = write_study(tmp_path / "a", "abl", arm_trials(), axes=("model.variant", R.ARM))
    p = parse(build_page("abl", uri).html)
    assert "ablation" in p.sections and "loss.w_variance" in p.text["ablation"]


def test_a_study_without_trials_yet_gets_a_page(tmp_path):
    from mlflow import MlflowClient

    from trainables.tracking import ensure_experiment, ensure_parent_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = ensure_experiment(client, "fresh", uri)
    ensure_parent_run(client, exp, "fresh", "fp", "name: fresh\n", ("model.variant",))
    page = build_page("fresh", uri)
    p = parse(page.html)
    assert p.sections[: len(SECTIONS)] == list(SECTIONS) and "No trial has reported yet" in p.text["contrasts"]


@pytest.mark.skipif(find_chromium() is None, reason=CHROMIUM_SKIP)
@pytest.mark.timeout(180)
def test_the_page_in_headless_chromium(page, tmp_path):
    """The page opens from disk in a real browser: no console error, every section drawn, every figure decoded;
    the screenshot and the console log stay in the test's folder."""
    _, _, out = page
    with Browser(width=1300, height=900) as b:
        b.open((out / "report.html").as_uri())
        ids = b.evaluate("[...document.querySelectorAll('section')].map(s => s.id)")
        broken = b.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        n_images = b.evaluate("document.images.length")
        heights = b.evaluate("[...document.querySelectorAll('section')].map(s => s.getBoundingClientRect().height)")
        b.screenshot(str(tmp_path / "report.png"))
        b.write_console(str(tmp_path / "console.txt"))
        errors = b.errors()
    assert ids[: len(SECTIONS)] == list(SECTIONS)
    assert n_images >= 2 and broken == 0
    assert all(h > 40 for h in heights)
    assert not errors, [e.line() for e in errors]
    assert (tmp_path / "report.png").stat().st_size > 50_000


def test_a_page_while_trials_run_and_none_has_finished(tmp_path):
    """The live page's first refreshes: trials have reported rounds, none has finished (a refresh once failed here)."""
    from mlflow import MlflowClient

    from bma.config import TrialConfig
    from trainables.tracking import TrialTracker, ensure_experiment, ensure_parent_run

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = ensure_experiment(client, "early", uri)
    axes = ("model.variant",)
    parent = ensure_parent_run(client, exp, "early", "fp", "name: early\n", axes)
    for variant in ("unimodal", "bma"):
        tracker = TrialTracker(uri, exp, parent, "early", TrialConfig().with_updates(variant=variant), axes=axes)
        tracker.log_epoch(1, {"acc/sound_probe_h": 0.5, "info/I_zv_zs/infonce_cos": 0.1, "loss/total": 2.0})
    page = build_page("early", uri)
    p = parse(page.html)
    assert page.counts["running"] == 2 and p.counts["running"] == 2 and p.counts["finished"] == 0
    assert p.sections[: len(SECTIONS)] == list(SECTIONS)
