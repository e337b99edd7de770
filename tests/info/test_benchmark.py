"""The accuracy benchmark runs end to end (its --smoke grid) and writes one flat record per run."""

from __future__ import annotations

import csv
import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_mi_accuracy_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("mi_accuracy", os.path.join(ROOT, "benchmarks", "mi_accuracy.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["mi_accuracy"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    out = tmp_path / "acc.csv"
    rows = module.main(["--smoke", "--out", str(out)])
    assert "| task | N | true | gaussian | ksg | kl |" in capsys.readouterr().out
    with open(out) as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == 5 and {r["estimator"] for r in records} == {"gaussian", "ksg", "kl"}
    gauss = next(r for r in rows if r["task"] == "gauss-d2-mi0.5" and r["estimator"] == "gaussian")
    assert gauss["true"] == pytest.approx(0.5) and abs(gauss["bias"]) < 0.3
