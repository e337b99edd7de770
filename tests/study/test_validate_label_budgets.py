"""study/run.py's data check builds every trial's regime once per distinct setting it reads: the label-budget check
reads the variant and eval.label_*, so a unimodal trial that passes must not vouch for a bma trial on the same
regime (a spec whose bma trials at 100 % pairs have no sounds left for the budgets used to validate, then crash)."""

from __future__ import annotations

import pytest

from tests.conftest import MIRROR_SKIP, mirror_available


@pytest.mark.skipif(not mirror_available(), reason=MIRROR_SKIP)
def test_validation_checks_label_budgets_per_variant(tmp_path, monkeypatch):
    from study.run import prepare_data
    from study.spec import load_spec

    monkeypatch.setenv("BMA_CACHE_DIR", str(tmp_path / "cache"))
    spec = tmp_path / "s.yaml"
    # FSDD: 250 train clips per digit after validation; 2,450 pairs leave 5 per digit outside the pairs
    spec.write_text("name: s\ngrid: {variant: [unimodal, bma]}\n"
                    "trial: {pairing_ratio: 1.0, train_size: 2450, label_budgets: [1, 20]}\n")
    _, problems = prepare_data(load_spec(spec), verbose=False)
    assert problems == ["eval.label_budgets: 20 labelled samples per class requested, but class 0 of fsdd's train "
                        "sounds has 5 outside validation and this regime's pairs (expected budgets <= 5)"]
