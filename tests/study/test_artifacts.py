"""A trial's artifacts: curves.png only when the spec asks for it (trial_plots), the rest always."""

from __future__ import annotations

import json

import pytest

from bma.config import TrialConfig
from bma.trainer import FitResult
from study.spec import SpecError, parse_spec
from trainables.artifacts import write_trial_artifacts

HISTORY = [{"epoch": e, "loss/total": 2.0 / e, "acc/sound_probe_h": 0.2 * e} for e in (1, 2, 3)]


@pytest.mark.parametrize("curves", [False, True])
def test_curves_only_when_asked(tmp_path, curves):
    result = FitResult(history=HISTORY, final=HISTORY[-1], regime_counts={"pairs": 10})
    write_trial_artifacts(tmp_path, TrialConfig(), result, None, None, curves=curves)
    assert (tmp_path / "checkpoint").is_dir()
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["history"] == HISTORY and record["regime"] == {"pairs": 10}
    png = tmp_path / "curves.png"
    assert png.is_file() is curves
    if curves:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_trial_plots_is_a_spec_switch():
    raw = {"name": "p", "grid": {"variant": ["bma"]}}
    assert parse_spec(raw).trial_plots is False
    assert parse_spec({**raw, "trial_plots": True}).trial_plots is True
    assert parse_spec({**raw, "trial_plots": True}).fingerprint() == parse_spec(raw).fingerprint()  # results alike
    with pytest.raises(SpecError, match="trial_plots: expected true or false"):
        parse_spec({**raw, "trial_plots": "yes"})
