"""The images' memory layout is the trial's, not the transport's: a trial gives the same numbers whether its
features were loaded in-process or arrived with other strides (Ray's zero-copy tensors give standard strides)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bma.trainer import TrialData, fit
from bma.trial_data import channels_last


def _channels_last_by_hand(x: torch.Tensor) -> torch.Tensor:
    """The strides the in-process MNIST features have (features.py's permute), built without the code under test."""
    n, c, h, w = x.shape
    return torch.empty_strided(x.shape, (h * w * c, 1, w * c, c)).copy_(x)


def _with_layout(data: TrialData, layout) -> TrialData:
    sets = {name: dataclasses.replace(getattr(data, name), x=layout(getattr(data, name).x))
            for name in ("image_train", "image_test")}
    return dataclasses.replace(data, **sets)


@pytest.mark.parametrize("shape", [(4, 1, 5, 6), (4, 3, 5, 6)])
def test_channels_last_strides_whatever_came_in(shape):
    x = torch.randn(shape)
    n, c, h, w = shape
    for given in (x, x.clone(memory_format=torch.channels_last), x.permute(0, 1, 3, 2).contiguous().transpose(2, 3)):
        out = channels_last(given)
        assert out.stride() == (h * w * c, 1, w * c, c)
        assert torch.equal(out, x)
    ready = channels_last(x)
    assert channels_last(ready) is ready  # no copy when already laid out


def test_a_trial_is_the_same_whatever_strides_its_features_came_with(small_data, tiny_cfg):
    standard = _with_layout(small_data, lambda x: x.clone(memory_format=torch.contiguous_format))
    permuted = _with_layout(small_data, _channels_last_by_hand)
    assert standard.image_train.x.stride() != permuted.image_train.x.stride()  # the case that used to differ
    cfg = tiny_cfg.with_updates(variant="bma")
    a = fit(cfg, data=standard, device="cpu").final
    b = fit(cfg, data=permuted, device="cpu").final
    assert {k: v for k, v in a.items() if not k.startswith("time/")} == \
        {k: v for k, v in b.items() if not k.startswith("time/")}
