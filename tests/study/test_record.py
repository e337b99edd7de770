"""The trial record's contract (bma/record.py), without data or models: one owner, unique run names, the metric
registry, the axes the analysis groups by, and the progress view that follows a metric's direction."""

from __future__ import annotations

import ast
import math
import pickle
import re
from pathlib import Path

import pytest

from bma.config import VARIANTS, TrialConfig
from bma import record as R
from study.spec import SpecError, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bma", "trainables", "study", "analysis")


def test_the_record_imports_nothing_of_the_package():
    tree = ast.parse((REPO / "bma" / "record.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & set(PACKAGES), imported


def _string_literals(path: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def test_each_tag_name_is_written_once():
    """No module of the package spells a tag of the record itself: they import it."""
    tags = {v for k, v in vars(R).items() if k.isupper() and isinstance(v, str) and v.startswith(("bma.", "mlflow."))}
    tags |= set(R.PLACEMENT)
    assert {"bma.role", "bma.axes", "bma.trial_key", "bma.cells", "mlflow.parentRunId"} <= tags
    spelled = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if path.name == "record.py" and path.parent.name == "bma":
                continue
            found = _string_literals(path) & tags
            if found:
                spelled[str(path.relative_to(REPO))] = sorted(found)
    assert not spelled, spelled


def test_defaults_are_defined_once():
    """The tracking URI and the bootstrap resamples appear as literals only where they are owned."""
    owners = {"sqlite:///mlflow.db": "bma/record.py"}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            rel = str(path.relative_to(REPO))
            for literal, owner in owners.items():
                if literal in _string_literals(path):
                    assert rel == owner, f"{rel} spells {literal!r} (owned by {owner})"
            if rel != "analysis/aggregate.py":
                assert not re.search(r"\b9999\b", path.read_text()), f"{rel}: bootstrap resamples re-typed"


def test_registry_variants_are_the_configs():
    assert set(R.ALL_VARIANTS) == set(VARIANTS)
    for family in R.METRICS:
        assert set(family.variants) <= set(VARIANTS), family
        assert family.direction in ("max", "min", None) and family.split in R.SPLITS, family


@pytest.mark.parametrize("name, direction, split, logged_by_unimodal", [
    ("loss/total", "min", "train", True),
    ("loss/val_pair", "min", "validation", True),
    ("loss/pair_contrastive", "min", "train", False),
    ("acc/sound_probe_h/k5", "max", "test", True),
    ("xdomain/snr0db/acc/sound_probe_h", "max", "test", True),
    ("retrieval/i2s_mem_r1", "max", "test", False),
    ("retrieval/i2s_r1", "max", "test", True),
    ("info/H_Wv/exact", None, "test", False),
    ("info/I_S_Y/probe_bound", "max", "test", False),
    ("info/I_hv_Y/probe_bound", "max", "test", True),
    ("info/I_fv_fsmem/ksg", "max", "test", False),
    ("info/n_samples", None, "test", True),
    ("train/lr", None, "train", True),
    ("time/epoch_s", "min", "train", True),
])
def test_metric_registry(name, direction, split, logged_by_unimodal):
    family = R.metric_family(name)
    assert family is not None
    assert (family.direction, family.split) == (direction, split)
    assert R.metric_direction(name) == direction
    assert ("unimodal" in family.variants) is logged_by_unimodal


def test_unknown_metrics_are_not_guessed():
    assert R.metric_family("acc") is None and R.metric_direction("nonsense/metric") is None
    assert R.metric_family(R.SELECTION_METRIC).split == "validation"


@pytest.mark.parametrize("spec_file", sorted((REPO / "study" / "specs").glob("*.yaml")), ids=lambda p: p.stem)
def test_run_names_are_unique_in_every_shipped_study(spec_file, xdomain_sets_here):
    spec = load_spec(spec_file)
    if spec.search is not None:
        flats = spec.trial_flats()
    else:
        flats = [t.effective for t in spec.distinct_trials()]
    names = [R.run_name(f, spec.axes, R.trial_key(spec.name, f)) for f in flats]
    assert len(set(names)) == len(names)
    # readable: the values of the axes that vary are in the name
    for axis in spec.axes:
        if axis in spec.grid and len(spec.grid[axis]) > 1 and axis != R.VARIANT_KEY:
            assert all(f"{axis.rsplit('.', 1)[-1]}=" in n for n in names), axis


def test_noise_study_names_show_its_own_axes():
    """noise.yaml grids settings outside the classic axes: its run names used to collide."""
    spec = load_spec(REPO / "study" / "specs" / "noise.yaml")
    assert "features.sound_snr_db" in spec.axes
    flat = spec.distinct_trials()[0].effective
    name = R.run_name(flat, spec.axes, "0123456789abcdef")
    assert name.startswith(flat["model.variant"] + " ") and "sound_snr_db=" in name and name.endswith("#012345")


def test_axes_of_a_spec():
    spec = parse_spec({"name": "a", "data": {"image": {"source": "mnist"}, "sound": {"source": "fsdd"}},
                       "grid": {"variant": ["bma", "unimodal"], "pairing_ratio": [0.1, 0.5], "seed": [0, 1]},
                       "arms": {"base": {}, "var": {"loss.w_variance": 1.0}}}, "a.yaml")
    assert spec.axes == ("model.variant", "regime.pairing_ratio", R.ARM)
    assert R.read_axes({R.AXES: R.axes_tag(spec.axes)}) == list(spec.axes)
    assert R.read_axes({}) is None and R.read_axes({R.AXES: "not json"}) is None


def test_cells_tags_round_trip_across_chunks():
    cells = [{"model.memory_slots": i, "model.tau_m": 0.1 * i, R.ARM: f"arm{i}"} for i in range(400)]
    tags = R.cells_tags(cells)
    assert len([k for k in tags if k.startswith(R.CELLS)]) > 1 and tags[R.SHARED] == "400"
    assert all(len(v) <= R.CELLS_CHUNK for v in tags.values())
    assert R.read_cells(tags) == cells
    assert R.cells_tags([{}]) == {} and R.read_cells({}) is None


def _search_spec(**search):
    return {"name": "s", "data": {"image": {"source": "mnist"}, "sound": {"source": "fsdd"}},
            "search": {"algorithm": "random", "num_samples": 2, "space": {"tau_m": {"loguniform": [0.05, 0.5]}},
                       **search},
            "trial": {"eval": {"eval_every": 1}}}


@pytest.mark.parametrize("search, phrase", [
    ({"metric": "acc/sound_probe_h", "mode": "max"}, "measured on the test split"),
    ({"metric": "info/I_S_Sprime/auto", "mode": "max"}, "measured on the test split"),
    ({"metric": "loss/val_pair", "mode": "max"}, "a better loss/val_pair is a smaller one"),
    ({"metric": "train/lr", "mode": "min"}, "has no better value"),
    ({"metric": "loss/nonsense", "mode": "min"}, "not a metric the trials report"),
])
def test_a_search_selects_on_train_or_validation_metrics_only(search, phrase):
    with pytest.raises(SpecError) as err:
        parse_spec(_search_spec(**search), "s.yaml")
    assert phrase in str(err.value)


def test_a_search_mode_defaults_to_the_registry():
    spec = parse_spec(_search_spec(metric="loss/val_pair"), "s.yaml")
    assert spec.search["mode"] == "min"


def test_the_validation_loss_needs_evaluation_every_round():
    spec = _search_spec(metric="loss/val_pair")
    spec["trial"] = {"eval": {"eval_every": 5}}
    with pytest.raises(SpecError) as err:
        parse_spec(spec, "s.yaml")
    assert "loss/val_pair is reported every 5 rounds" in str(err.value)


# -- the progress view --------------------------------------------------------------------------------------------


class _Trial:
    def __init__(self, trial_id, status="RUNNING", done=False):
        self.trial_id, self.status, self.last_result = trial_id, status, {"done": True} if done else {}


def test_a_study_whose_loop_dies_is_not_shown_as_done():
    """Tune's cleanup marks every trial TERMINATED when its loop raises (a worker killed for memory): the view
    counts as done only the trials whose training ended, in this driver or (restored) in an earlier one."""
    from study.progress import StudyProgress

    view = StudyProgress(total=4, metric="acc/sound_probe_h", live=False)
    view.on_trial_start(0, [], _Trial("a"))
    view.on_trial_complete(0, [], _Trial("a"))
    view.on_trial_start(0, [], _Trial("b"))
    # at the end: a finished here, r finished before a restore, b was running, c never started
    end = [_Trial("a", "TERMINATED", done=True), _Trial("r", "TERMINATED", done=True), _Trial("b", "TERMINATED"),
           _Trial("c", "TERMINATED")]
    assert view.counts(end) == {"done": 2, "running": 1, "failed": 0, "pending": 1}


def test_progress_follows_the_metric_direction():
    from study.progress import StudyProgress

    view = StudyProgress(total=2, metric="loss/total", live=False)
    assert view.mode == "min"
    for tid, value in (("a", 2.0), ("b", 0.5), ("a", 1.0)):
        view.on_trial_result(0, [], _Trial(tid), {"loss/total": value})
    assert (view.best, view.best_trial) == (0.5, "b")  # the smallest loss, not the largest
    with pytest.raises(ValueError, match="has no better value"):
        StudyProgress(total=1, metric="train/lr", live=False)


def test_a_resumed_study_drives_the_view_it_builds():
    """Tune pickles its callbacks with the study; a resumed driver's own view (its --metric) must be the one that
    runs, taking over the counts Tune saved through get_state/set_state."""
    from study.progress import StudyProgress

    old = StudyProgress(total=3, metric="acc/sound_probe_h", live=False)
    old.on_trial_start(0, [], _Trial("a"))
    old.on_trial_result(0, [], _Trial("a"), {"acc/sound_probe_h": 0.7})
    old.on_trial_complete(0, [], _Trial("a"))
    pickled, saved = pickle.dumps(old), old.get_state()

    new = StudyProgress(total=3, metric="loss/total", live=False)  # the resumed driver: --metric loss/total
    restored = pickle.loads(pickled)  # what Tune.restore gets back from its tuner.pkl
    assert restored is new
    restored.set_state(saved)
    assert new.status == {"a": "done"} and len(new.durations) == 1
    assert new.best is None  # the old best was of another metric
    assert new.counts()["done"] == 1 and new.counts()["pending"] == 2

    same = StudyProgress(total=3, metric="acc/sound_probe_h", live=False)
    same.set_state(saved)
    assert math.isclose(same.best, 0.7) and same.best_trial == "a"


@pytest.mark.parametrize("metric, phrase", [("info/n_samples", "has no better value"),
                                            ("accuracy/sound", "not a metric the trials report")])
def test_run_refuses_a_metric_it_cannot_follow(metric, phrase, capsys, tmp_path):
    from study.run import main

    rc = main([str(REPO / "study" / "specs" / "quick.yaml"), "--metric", metric, "--validate-only",
               "--tracking-uri", f"sqlite:///{tmp_path}/m.db", "--storage", str(tmp_path / "r")])
    assert rc == 2
    assert phrase in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_retired_settings_still_rebuild_recorded_trials():
    flat = {**TrialConfig().to_flat(), "model.sound_encoder": "cnn"}
    assert TrialConfig.from_flat(flat) == TrialConfig()
    with pytest.raises(ValueError, match="model.sound_encoder: unknown setting"):
        TrialConfig.from_flat({**flat, "model.sound_encoder": "resnet"})


@pytest.mark.parametrize("name, cadence", [
    ("loss/total", "round"), ("loss/slot_decorrelation", "round"), ("train/steps", "round"),
    ("time/epoch_s", "round"), ("time/eval_s", "eval"), ("time/info_s", "info"), ("loss/val_pair", "eval"),
    ("acc/image_probe_h", "eval"), ("xdomain/snr0db/assoc/s2i_acc", "eval"), ("info/I_S_Sprime/ksg", "info"),
])
def test_cadence_says_which_rounds_report_a_metric(name, cadence):
    from study.spec import reported_every_round

    assert R.metric_family(name).cadence == cadence
    every5 = TrialConfig()  # eval_every 5, info_every 5
    assert reported_every_round(name, every5) is (cadence == "round")
    each = TrialConfig().with_updates(**{"eval.eval_every": 1, "eval.info_every": 1})
    assert reported_every_round(name, each)


def test_param_text_is_what_the_config_reads_back():
    flat = TrialConfig().with_updates(**{"eval.label_budgets": (1, 5)}).to_flat()
    texts = {k: R.param_text(v) for k, v in flat.items()}
    assert texts["eval.label_budgets"] == "[1, 5]"
    assert TrialConfig.from_flat(texts) == TrialConfig.from_flat(flat)
