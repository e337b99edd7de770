"""Issue 22 (red team), the spec side: inputs that passed the check and went wrong later (a NaN after training, an
OverflowError, Tune's assertion, two trials in one MLflow run), and messages that blamed the wrong thing. Each
class is refused up front naming the field at fault and what was expected, and the message never names another.
No data, Ray or MLflow here except where a case says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from study.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[2]

BASE = """
name: t
grid: {variant: [unimodal, bma]}
trial: {train_size: 200, epochs: 2, eval: {info_every: 0, eval_every: 1}}
"""
SEARCH = """
name: t
trial: {train_size: 200, epochs: 2, eval: {info_every: 0, eval_every: 1}}
search: {algorithm: random, num_samples: 4, metric: loss/val_pair, SEARCH}
"""


def search(extra: str) -> str:
    return SEARCH.replace("SEARCH", extra)


# (id, spec, fragments the problem holds, fragments no problem may hold: the wrong blame the red team saw)
CASES = [
    # silent caps and NaNs: an SNR outside a sane range, a huge one that overflowed under --validate-only
    ("test snr -1000 dB", BASE.replace("info_every: 0", "info_every: 0, test_sound_snr_db: -1000"),
     ["trial.eval.test_sound_snr_db", "-30 to 100", "got -1000"], []),
    ("feature snr 1e300", BASE.replace("epochs: 2", "epochs: 2, features: {sound_snr_db: 1.0e300}"),
     ["trial.features.sound_snr_db", "-30 to 100", "got 1e+300"], []),
    ("test snr -1e300 in grid", BASE.replace("variant: [unimodal, bma]", "test_sound_snr_db: [10, -1.0e300]"),
     ["grid.test_sound_snr_db", "-30 to 100"], []),
    ("grace period beyond the rounds",
     search("scheduler: asha, grace_period: 50, space: {tau_m: {uniform: [0.05, 0.5]}}"),
     ["search.grace_period", "50 rounds", "2 round(s)", "from 1 to 2"], []),
    ("grace period beyond a step budget",
     search("scheduler: asha, grace_period: 4, space: {tau_m: {uniform: [0.05, 0.5]}}").replace(
         "epochs: 2", "steps: 30, round_steps: 10"), ["search.grace_period", "3 round(s)"], []),
    # two sampled trials of one configuration: a sampled seed, a choice listing one value twice
    ("sampled seed", search("space: {seed: {randint: [0, 3]}}"),
     ["search.space.seed", "cannot sample the seed", "grid: {seed:"], ["at least one setting"]),
    ("sampled regime.seed", search("space: {regime.seed: {choice: [0, 1]}}"),
     ["search.space.regime.seed", "cannot sample the seed"], []),
    ("choice repeats a value", search("space: {tau_m: {choice: [0.1, 0.2, 1.0e-1]}}"),
     ["search.space.tau_m.choice", "repeated values (0.1 are the same model.tau_m)"], []),
    # messages that blamed the wrong thing
    ("xdomain root missing", BASE.replace("info_every: 0", "info_every: 0, xdomain_image_source: imagefolder, "
                                          "xdomain_image_root: /no/such/folder"),
     ["trial.eval.xdomain_image_root", "/no/such/folder does not exist"], ["data.image.root"]),
    ("xdomain root is a file", BASE.replace("info_every: 0", "info_every: 0, xdomain_sound_source: soundfolder, "
                                            "xdomain_sound_root: FILE"),
     ["trial.eval.xdomain_sound_root", "is a file, not a folder"], ["does not exist", "data.sound.root"]),
    ("data root is a file", BASE + "data: {image: {source: imagefolder, root: FILE}}\n",
     ["data.image.root", "is a file, not a folder"], ["does not exist"]),
    ("NaN in the second arm", BASE + "arms: {a: {tau_m: 0.1}, b: {tau_m: .nan}}\n",
     ["arms.b.tau_m", "finite"], ["arms.a"]),
    ("unknown search metric", search("metric: acc/bogus, mode: max, space: {tau_m: {uniform: [0.05, 0.5]}}").replace(
        "metric: loss/val_pair, ", ""), ["search.metric", "acc/bogus is not a metric the trials report"],
     ["test split"]),
    ("test metric still named as one", search("metric: acc/sound_probe_h, mode: max, "
                                              "space: {tau_m: {uniform: [0.05, 0.5]}}").replace(
        "metric: loss/val_pair, ", ""), ["search.metric", "measured on the test split"], []),
    ("data setting in an arm", BASE + "arms: {a: {data: {image: {source: cifar10}}}, b: {tau_m: 0.2}}\n",
     ["arms.a.data.image.source", "study-wide", "data: section"], ["unknown setting"]),
]


@pytest.mark.parametrize(("text", "parts", "never"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_the_field_at_fault(tmp_path, text, parts, never):
    (tmp_path / "a-file.txt").write_text("not a folder\n")
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text).replace("FILE", str(tmp_path / "a-file.txt")))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    problems = info.value.problems
    assert any(all(s in p for s in parts) for p in problems), f"no problem contains {parts}: {problems}"
    wrong = [p for p in problems for s in never if s in p]
    assert not wrong, f"blames {never}: {wrong}"


def test_what_the_checks_refuse_is_only_the_bad_value(tmp_path):
    """The bounds leave sane values alone: an SNR at the ends of its range, a grace period of the last round, a
    searched non-seed setting, data settings in data:."""
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(search("scheduler: asha, grace_period: 2, space: {tau_m: {choice: [0.1, 0.2]}}"))
                    .replace("info_every: 0", "info_every: 0, test_sound_snr_db: -30")
                    .replace("epochs: 2", "epochs: 2, features: {sound_snr_db: 100}"))
    spec = load_spec(path)
    assert spec.search["grace_period"] == 2


def test_smoke_shrinks_the_grace_period_with_the_rounds(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(search("scheduler: asha, grace_period: 2, space: {tau_m: {uniform: [0.1, 0.2]}}")))
    assert load_spec(path).search["grace_period"] == 2
    assert load_spec(path, smoke=True).search["grace_period"] == 1  # --smoke trains one round


def test_huge_snr_through_the_driver_is_exit_2_not_a_traceback(tmp_path):
    """It raised OverflowError under --validate-only (the feature computation divided by 10 ** 1e299)."""
    (tmp_path / "spec.yaml").write_text(textwrap.dedent(BASE.replace(
        "info_every: 0", "info_every: 0, test_sound_snr_db: -1.0e300")).replace("epochs: 2", "epochs: 2, features: "
                                                                                 "{sound_snr_db: 1.0e300}"))
    env = {**os.environ, "BMA_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, str(REPO / "study" / "run.py"), "spec.yaml", "--validate-only"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert "features.sound_snr_db" in proc.stderr and "eval.test_sound_snr_db" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"], "nothing written"


def test_pairs_larger_than_the_data_blame_the_pairs_not_an_unpaired_size_of_0():
    from bma.config import TrialConfig
    from bma.data.regimes import RegimeError
    from bma.trainer import make_regime
    from tests.synthetic_data import synthetic_trial_data

    data = synthetic_trial_data()  # 400 train sounds (350 after 5 per class for validation), 600 train images
    cfg = TrialConfig.from_flat({"regime.pairs": 380, "regime.unpaired_sounds": 0, "regime.unpaired_images": 0,
                                 "regime.val_per_class": 5})
    with pytest.raises(RegimeError) as info:
        make_regime(cfg, data)
    assert str(info.value).startswith("regime.pairs: 380 sounds requested"), str(info.value)
    # an unpaired size that does overflow is still named
    cfg = TrialConfig.from_flat({"regime.pairs": 50, "regime.unpaired_sounds": 500, "regime.unpaired_images": 0,
                                 "regime.val_per_class": 5})
    with pytest.raises(RegimeError) as info:
        make_regime(cfg, data)
    assert str(info.value).startswith("regime.unpaired_sounds: 550 sounds"), str(info.value)


def test_a_missing_xdomain_folder_found_with_the_data_is_named_as_the_xdomain_setting(tmp_path):
    """The loaders name data.<side>.root; on another domain's data that is eval.xdomain_<side>_root."""
    from bma.config import FeatureConfig
    from bma.data.domains import dataset_domain
    from bma.data.errors import DataError
    from bma.data.features import FeatureStore

    store = FeatureStore(str(tmp_path / "cache"))
    (tmp_path / "a-file").write_text("x")
    for root, what in ((tmp_path / "missing", "folder does not exist"), (tmp_path / "a-file", "is a file")):
        with pytest.raises(DataError) as info:
            dataset_domain(store, "images", "imagefolder", str(root), FeatureConfig(), ("0", "1"), None)
        assert str(info.value).startswith(f"eval.xdomain_image_root={root}: {what}"), str(info.value)


def test_two_trials_of_one_configuration_never_share_a_run(tmp_path):
    """A search that samples one configuration twice (or a study started again with --fresh, or a trial Tune
    re-created after a killed driver) gives each Tune trial its own run: never two metric histories in one. The
    same trial (a restart, a resume) finds its own run again."""
    from mlflow.tracking import MlflowClient

    from bma.config import TrialConfig
    from bma import record as R
    from trainables.tracking import TrialTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("s")
    cfg = TrialConfig.from_flat({"model.tau_m": 0.1})
    first = TrialTracker(uri, experiment, "parent", "s", cfg, tune_trial_id="abc_00000", commit="x")
    restarted = TrialTracker(uri, experiment, "parent", "s", cfg, tune_trial_id="abc_00000", commit="x")
    assert restarted.run_id == first.run_id  # the same trial again, nothing logged yet: its own run
    twin = TrialTracker(uri, experiment, "parent", "s", cfg, tune_trial_id="abc_00001", commit="x")
    assert twin.run_id != first.run_id
    first.log_epoch(1, {"loss/total": 1.0})
    twin.log_epoch(1, {"loss/total": 2.0})
    for tracker in (first, twin):
        assert len(client.get_metric_history(tracker.run_id, "loss/total")) == 1
    runs = client.search_runs([experiment], f"tags.`{R.ROLE}` = '{R.ROLE_TRIAL}'")
    assert sorted(r.data.tags[R.TRIAL_ID] for r in runs) == ["abc_00000", "abc_00001"]


def test_an_attempt_from_round_1_never_appends_to_a_run_that_logged_rounds(tmp_path):
    """Without a checkpoint (e.g. --fresh after an interrupted run) a trial trains from round 1: it gets a new run
    rather than logging each round twice into the old one; a run that logged nothing is still reused."""
    from mlflow.tracking import MlflowClient

    from bma.config import TrialConfig
    from trainables.tracking import TrialTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = MlflowClient(uri).create_experiment("s")
    cfg = TrialConfig.from_flat({"model.tau_m": 0.1})
    empty = TrialTracker(uri, experiment, "parent", "s", cfg, tune_trial_id="a_0", commit="x")
    again = TrialTracker(uri, experiment, "parent", "s", cfg, tune_trial_id="a_0", commit="x")
    assert again.run_id == empty.run_id  # crashed before its first round: nothing to double
    again.log_epoch(1, {"loss/total": 1.0})
    again.fail(KeyboardInterrupt())
    fresh = TrialTracker(uri, experiment, "parent", "s", cfg, tune_trial_id="a_0", commit="x")
    assert fresh.run_id != again.run_id
    fresh.log_epoch(1, {"loss/total": 0.9})
    steps = [m.step for m in MlflowClient(uri).get_metric_history(fresh.run_id, "loss/total")]
    assert steps == [1]
