"""Issue 11, at the level of the spec check: every class of bad input a new user hands over is refused by
``load_spec`` up front, each problem naming the field (or the file) and what was expected, instead of passing the
check and going wrong in a trial, hanging, or ending in a traceback. No data, Ray or MLflow here (about a second).

Classes: non-finite numbers (every float setting, resources); one grid value spelled twice; one setting named
twice in any spelling (short name and dotted path, nested section and dotted key, a duplicate YAML key); estimators
the probes cannot use; files that are not text (binary, not UTF-8, UTF-16, a folder, too large) for the spec and
the class map; YAML aliases that expand past a bound or refer to themselves, and nesting too deep to parse.
The same classes through ``study/run.py`` (exit 2, nothing written): tests/study/test_run_bad_input.py.
"""

from __future__ import annotations

import math
import textwrap
import typing
from pathlib import Path

import pytest

from bma.config import FLAT_TYPES, TrialConfig
from study.spec import MAX_SPEC_BYTES, MAX_YAML_NODES, SpecError, load_spec, parse_spec

VALID = """
name: t
grid: {pairing_ratio: [0.1, 0.5], seed: [0, 1]}
trial: {train_size: 300, epochs: 2}
resources: {cpu: 1, gpu: 0}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def refused(path: Path) -> list[str]:
    """The problems of a refused spec file; each one is in the message a user sees, after the file's name."""
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert all(p in message for p in info.value.problems)
    assert len(message) < 4000, "a message, not a dump"
    return info.value.problems


def one(problems: list[str], *parts: str) -> str:
    found = [p for p in problems if all(s in p for s in parts)]
    assert found, f"no problem contains {parts}: {problems}"
    return found[0]


# -- NaN and infinity ----------------------------------------------------------------------------------------------


def _float_settings() -> list[str]:
    """Every float setting a trial block may set (float or float | None), read from the config: a new one is
    covered without editing this test."""
    out = []
    for path, hint in FLAT_TYPES.items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if not path.startswith("data.") and (hint is float or args == [float]):
            out.append(path)
    return out


def test_there_are_float_settings_to_check():
    assert {"model.tau_m", "optim.lr", "optim.weight_decay", "loss.tau_l"} <= set(_float_settings())


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "inf"], ids=repr)
def test_every_float_setting_refuses_nan_and_infinity(value):
    for path in _float_settings():
        with pytest.raises(SpecError) as info:
            parse_spec({"name": "f", "grid": {"seed": [0]}, "trial": {path: value}}, "f.yaml")
        one(info.value.problems, f"trial.{path}:", "finite")


@pytest.mark.parametrize(("text", "field"), [
    ("trial: {train_size: 300, epochs: 2, tau_m: .inf}", "trial.tau_m"),  # trained "successfully", uniform addressing
    ("trial: {train_size: 300, epochs: 2, lr: .nan}", "trial.lr"),
    ("trial: {train_size: 300, epochs: 2, optim: {weight_decay: .nan}}", "trial.optim.weight_decay"),
    ("trial: {train_size: 300, epochs: 2, lr: [1e-3, .nan]}", "trial.lr"),  # a list where a number goes
])
def test_non_finite_settings_in_yaml_name_the_field(tmp_path, text, field):
    problems = refused(write(tmp_path, VALID.replace("trial: {train_size: 300, epochs: 2}", text)))
    one(problems, f"{field}:")


def test_non_finite_grid_values_name_the_axis(tmp_path):
    problems = refused(write(tmp_path, VALID.replace("seed: [0, 1]", "seed: [0], tau_m: [0.1, .inf], lr: [.nan]")))
    one(problems, "grid.tau_m:", "finite", "inf")
    one(problems, "grid.lr:", "finite", "nan")


@pytest.mark.parametrize(("resources", "field", "shown"), [
    ("{cpu: .nan}", "resources.cpu", "nan"),  # hung for ever after writing the store
    ("{cpu: .inf}", "resources.cpu", "inf"),
    ("{cpu: 1, gpu: .nan}", "resources.gpu", "nan"),
    ("{cpu: 1, gpu: -.inf}", "resources.gpu", "-inf"),
])
def test_non_finite_resources_are_refused(tmp_path, resources, field, shown):
    problems = refused(write(tmp_path, VALID.replace("{cpu: 1, gpu: 0}", resources)))
    one(problems, f"{field}:", "finite number", shown)


# -- one grid value spelled twice ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("axis", "values", "parts"), [
    ("lr", "[1e-3, 0.001]", ["'1e-3' and 0.001", "optim.lr"]),  # YAML reads 1e-3 as a string
    ("memory_slots", "[16, 16.0]", ["16 and 16.0", "model.memory_slots"]),
    ("train_size", "[300, '300']", ["300 and '300'"]),
    ("variant", "[bma, unimodal, bma]", ["'bma'"]),
    ("model.tau_m_final", "[null, None]", ["None and 'None'"]),
    ("eval.info_estimators", "[[gaussian, ksg], 'gaussian, ksg']", ["eval.info_estimators"]),
])
def test_a_grid_value_spelled_twice_is_refused(tmp_path, axis, values, parts):
    text = VALID.replace("seed: [0, 1]", f"seed: [0], {axis}: {values}").replace("train_size: 300, ", "")
    problems = refused(write(tmp_path, text))
    one(problems, f"grid.{axis}:", "repeated values", *parts)


def test_distinct_grid_values_are_still_accepted(tmp_path):
    spec = load_spec(write(tmp_path, VALID.replace("seed: [0, 1]", "seed: [0], lr: [1e-3, 0.002, 1.0e-2]")))
    cfgs = [TrialConfig.from_flat(f) for f in spec.trial_flats()]
    assert {c.optim.lr for c in cfgs} == {0.001, 0.002, 0.01}
    assert len(cfgs) == len(set(cfgs)) == 6  # 2 pairing ratios x 3 learning rates, each trial its own


# -- one setting named twice ---------------------------------------------------------------------------------------

NAMED_TWICE = [
    ("grid: short name and dotted path", VALID.replace("seed: [0, 1]", "seed: [0], tau_m: [0.1], model.tau_m: [0.2]"),
     ["grid.model.tau_m:", "grid.tau_m and grid.model.tau_m", "once"]),
    ("trial: short name and dotted path", VALID.replace("epochs: 2}", "epochs: 2, optim.epochs: 3}"),
     ["trial.optim.epochs:", "trial.epochs and trial.optim.epochs", "once"]),
    ("trial: nested section and dotted key", VALID.replace("epochs: 2}", "epochs: 2, model: {tau_m: 0.1}, "
                                                          "model.tau_m: 0.2}"),
     ["trial.model.tau_m:", "twice", "once"]),
    ("trial: nested section and short name", VALID.replace("epochs: 2}", "epochs: 2, tau_m: 0.2, "
                                                          "model: {tau_m: 0.1}}"),
     ["trial.model.tau_m:", "trial.tau_m and trial.model.tau_m"]),
    ("smoke: two spellings", VALID + "smoke: {epochs: 1, optim: {epochs: 2}}\n",
     ["smoke.optim.epochs:", "smoke.epochs and smoke.optim.epochs"]),
    ("duplicate YAML key at the top", VALID + "trial: {epochs: 4}\n",
     ["trial:", "key given twice", "lines 4 and 6"]),
    ("duplicate YAML key in a section", VALID.replace("epochs: 2}", "epochs: 2, epochs: 3}"),
     ["trial.epochs:", "key given twice", "silently"]),
    ("duplicate YAML key in data", VALID + "data: {image: mnist, image: cifar10}\n",
     ["data.image:", "key given twice"]),
]


@pytest.mark.parametrize(("text", "parts"), [c[1:] for c in NAMED_TWICE], ids=[c[0] for c in NAMED_TWICE])
def test_a_setting_named_twice_is_refused(tmp_path, text, parts):
    one(refused(write(tmp_path, text)), *parts)


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path):
    """``<<: *base`` merges a mapping and keys beside it override it: YAML's own rule, not a mistake."""
    text = VALID.replace("trial: {train_size: 300, epochs: 2}", "trial: &base {train_size: 300, epochs: 2}") + \
        "smoke: {<<: *base, epochs: 1}\n"
    spec = load_spec(write(tmp_path, text))
    assert spec.smoke == {"regime.train_size": 300, "optim.epochs": 1}


def test_duplicate_keys_are_reported_with_the_other_problems(tmp_path):
    text = VALID.replace("epochs: 2}", "epochs: 2, epochs: 3}").replace("cpu: 1", "cpu: -1")
    problems = refused(write(tmp_path, text))
    one(problems, "trial.epochs:", "key given twice")
    one(problems, "resources.cpu:", ">= 0")


# -- estimators the probes cannot use ------------------------------------------------------------------------------


@pytest.mark.parametrize("estimators", ["[plugin_mi]", "[gaussian, plugin_mi]", "[ksgg]"])
def test_estimators_the_probes_will_not_accept_are_refused(tmp_path, estimators):
    text = VALID.replace("epochs: 2}", f"epochs: 2, eval: {{info_estimators: {estimators}}}}}")
    name = estimators.strip("[]").split(", ")[-1]
    one(refused(write(tmp_path, text)), "trial.eval.info_estimators:", name, "gaussian")


# -- files that are not a text spec --------------------------------------------------------------------------------

NOT_TEXT = [
    ("binary", b"\x7fELF\x02\x01\x01\x00\x00\x00" + bytes(range(256)), ["not a text file", "NUL bytes"]),
    ("latin-1", "name: caf\u00e9\ngrid: {seed: [0]}\n".encode("latin-1"), ["not UTF-8 text", "0xe9", "offset 9"]),
    ("utf-16", "name: t\ngrid: {seed: [0]}\n".encode("utf-16"), ["UTF-16 text", "UTF-8"]),
    ("sqlite database", b"SQLite format 3\x00" + bytes(100), ["not a text file"]),
]


@pytest.mark.parametrize(("data", "parts"), [c[1:] for c in NOT_TEXT], ids=[c[0] for c in NOT_TEXT])
def test_a_spec_that_is_not_utf8_text_is_refused_naming_the_file(tmp_path, data, parts):
    path = tmp_path / "spec.yaml"
    path.write_bytes(data)
    problems = refused(path)
    assert len(problems) == 1
    one(problems, f"{path}:", "expected a study spec YAML", *parts)


def test_a_utf8_spec_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + textwrap.dedent(VALID).encode())
    assert load_spec(path).n_trials == 4


def test_a_folder_given_as_the_spec_is_named_a_folder(tmp_path):
    problems = refused(tmp_path)
    assert problems == [f"{tmp_path}: is a folder (expected a study spec YAML, e.g. study/specs/quick.yaml)"]


def test_a_spec_too_large_to_be_a_spec_is_refused_unread(tmp_path):
    path = write(tmp_path, VALID + "#" * MAX_SPEC_BYTES + "\n")
    one(refused(path), f"{path}:", "too large", f"{MAX_SPEC_BYTES:,}")


@pytest.mark.parametrize(("write_map", "parts"), [
    (lambda p: p.write_bytes(b"image_class,sound_class\n0,0\n\x00\x01\x02"), ["not a text file"]),
    (lambda p: p.write_bytes("image_class,sound_class\nz\u00e9ro,0\n".encode("latin-1")), ["not UTF-8 text"]),
    (lambda p: p.write_bytes("image_class,sound_class\n0,0\n".encode("utf-16")), ["UTF-16"]),
    (lambda p: p.mkdir(), ["is a folder"]),
], ids=["binary", "latin-1", "utf-16", "folder"])
def test_a_class_map_that_is_not_a_utf8_csv_is_refused(tmp_path, write_map, parts):
    path = tmp_path / "map.csv"
    write_map(path)
    text = VALID + f"data: {{classmap: {path}}}\n"
    one(refused(write(tmp_path, text)), "data.classmap:", str(path), "expected a CSV image_class,sound_class", *parts)


# -- YAML aliases and nesting --------------------------------------------------------------------------------------

BOMB = 'name: b\nl0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10)) + "grid: {seed: *l9}\n"


def test_an_alias_bomb_is_refused_without_expanding_it(tmp_path):
    """Bounded in memory, not in time (a clock bound fails by chance on a busy machine): refusing the bomb
    allocates a few MB, where expanding it takes gigabytes."""
    import tracemalloc

    path = write(tmp_path, BOMB)  # 9**10 ~ 3.5e9 strings once expanded
    tracemalloc.start()
    try:
        problems = refused(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"refusing the bomb allocated {peak / 2**20:.0f} MiB: it was expanded"
    assert problems == [one(problems, "top level:", "aliases", f"{MAX_YAML_NODES:,}")]


def test_aliases_within_the_bound_are_accepted(tmp_path):
    text = VALID.replace("epochs: 2}", "epochs: 2, memory_slots: &n 32}") + "smoke: {memory_slots: *n}\n"
    spec = load_spec(write(tmp_path, text))
    assert spec.base["model.memory_slots"] == spec.smoke["model.memory_slots"] == 32


def test_a_recursive_alias_is_refused(tmp_path):
    problems = refused(write(tmp_path, VALID.replace("seed: [0, 1]}", "seed: &s [0, *s]}")))
    assert problems == [one(problems, "grid.seed", "refers to the node that contains it")]


def test_yaml_nested_too_deeply_is_refused_not_a_traceback(tmp_path):
    problems = refused(write(tmp_path, VALID + "description: " + "[" * 1500 + "]" * 1500 + "\n"))
    assert problems == [one(problems, "nested too deeply")]


# -- what a message quotes, and keys of odd types ------------------------------------------------------------------


def test_a_huge_value_is_quoted_short(tmp_path):
    problems = refused(write(tmp_path, VALID.replace("seed: [0, 1]", "seed: " + "x" * 100_000)))
    problem = one(problems, "grid.seed:", "expected a list")
    assert len(problem) < 300 and problem.endswith("...")


def test_keys_that_are_not_strings_are_reported_not_a_traceback(tmp_path):
    problems = refused(write(tmp_path, VALID + "1: one\n2020-01-01: two\n" + "resources2: {3: 1}\n"))
    one(problems, "1:", "unknown top-level key")
    one(problems, "2020-01-01:", "unknown top-level key")
    problems = refused(write(tmp_path, VALID.replace("seed: [0, 1]", "seed: [0, 1], 7: [1]")))
    one(problems, "grid.7:", "unknown setting")
