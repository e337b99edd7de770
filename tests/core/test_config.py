"""The trial config's flat form, as MLflow, Ray Tune and the CLI hand it over."""

from __future__ import annotations

import pytest

from bma.config import ConfigError, SourceConfig, TrialConfig


def test_flat_round_trip_and_strings():
    cfg = TrialConfig().with_updates(pairing_ratio=0.2, variant="paired_only", **{"model.tau_m_final": 0.01})
    flat = cfg.to_flat()
    assert TrialConfig.from_flat(flat) == cfg
    as_strings = {k: str(v) for k, v in flat.items()}  # MLflow stores every param as a string
    assert TrialConfig.from_flat(as_strings) == cfg
    assert TrialConfig.from_flat({"tau_m": "0.3"}).model.tau_m == 0.3
    with pytest.raises(ConfigError, match="nonsense: unknown setting"):
        TrialConfig.from_flat({"nonsense": 1})


def test_partial_source_keeps_default_source_via_with_updates():
    cfg = TrialConfig().with_updates(**{"data.sound.root": "/somewhere"})
    assert cfg.data.sound == SourceConfig("fsdd", root="/somewhere")


def test_partial_source_from_flat():
    cfg = TrialConfig.from_flat({"data.sound.root": "/somewhere"})
    assert cfg.data.sound == SourceConfig("fsdd", root="/somewhere")


def test_a_unimodal_trial_with_nothing_to_train_is_refused():
    from bma.config import ConfigError, TrialConfig

    with pytest.raises(ConfigError, match="loss.encoder_objective: none leaves the unimodal variant nothing to train"):
        TrialConfig().with_updates(variant="unimodal", encoder_objective="none")
    for variant in ("paired_only", "bma"):  # the pairs (and cycles) still train them
        assert TrialConfig().with_updates(variant=variant, encoder_objective="none").loss.encoder_objective == "none"
