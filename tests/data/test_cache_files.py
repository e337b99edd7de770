"""Large feature pools: the .npy cache entries (round trip, atomic commit, validation), memory-mapped FeatureSets
travelling as references, parallel extraction's determinism, and per-batch gathering (LazyRows) giving a trial
bit-identical to the in-memory one."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bma.config import FeatureConfig, SourceConfig
from bma.data import cache_files as cf
from bma.data.features import FEATURE_VERSION, FeatureSet, FeatureStore, open_set

REPO = Path(__file__).resolve().parents[2]


def write(entry: Path, x: torch.Tensor, y=None, key="k" * 32) -> None:
    y = np.arange(len(x)) % 3 if y is None else y
    with cf.EntryWriter(entry, tuple(x.shape)) as w:
        w.x.copy_(x)
        w.commit(y, ("a", "b", "c"), None, {"mean": [0.0], "std": [1.0]}, key=key, version=FEATURE_VERSION)


def test_round_trip_in_memory_and_mapped(tmp_path):
    x = torch.randn(40, 1, 6, 7)
    entry = tmp_path / "sounds-s-train-kkk.json"
    write(entry, x)
    e = cf.read_entry(entry, key="k" * 32, version=FEATURE_VERSION)
    assert e.x_shape == (40, 1, 6, 7) and e.x_bytes == x.numel() * 4 and e.classes == ("a", "b", "c")
    small, big = open_set(e, mapped=False), open_set(e, mapped=True)
    assert small.mapped is None and big.mapped is not None
    assert torch.equal(small.x, x) and torch.equal(big.x, x) and torch.equal(big.y, small.y)
    # a mapped set pickles as a reference (a few hundred bytes), an in-memory one as its bytes
    ref_bytes, mem_bytes = pickle.dumps(big), pickle.dumps(small)
    assert len(ref_bytes) < 2000 < x.numel() * 4 < len(mem_bytes)
    again = pickle.loads(ref_bytes)
    assert isinstance(again, FeatureSet) and again.mapped == big.mapped and torch.equal(again.x, x)
    assert torch.equal(pickle.loads(mem_bytes).x, x)
    # the threshold decides when not told: 0 maps everything
    os.environ[cf.IN_MEMORY_MAX_MB_ENV] = "0"
    try:
        assert open_set(e).mapped is not None
    finally:
        del os.environ[cf.IN_MEMORY_MAX_MB_ENV]
    assert open_set(e).mapped is None  # default 1 GiB
    # a rebuild replaces the arrays and removes the old ones; one commit record, two arrays
    write(entry, x * 2)
    assert torch.equal(open_set(cf.read_entry(entry)).x, x * 2)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy", ".npy"]


def test_a_crash_mid_write_leaves_nothing_that_is_read(tmp_path):
    entry = tmp_path / "images-i-train-kkk.json"
    # an exception before the commit: temporary files removed, no entry
    with pytest.raises(RuntimeError):
        with cf.EntryWriter(entry, (10, 1, 4, 4)) as w:
            w.x.fill_(1.0)
            raise RuntimeError("killed")
    assert cf.read_entry(entry) is None and list(tmp_path.iterdir()) == []
    # a process killed (no cleanup at all) after writing half its array, and one killed after renaming its arrays
    # but before its commit record: neither leaves anything read_entry accepts
    for stage in ("fill", "renamed"):
        code = f"""
import os, numpy as np
from pathlib import Path
from bma.data import cache_files as cf
w = cf.EntryWriter(Path({str(entry)!r}), (10, 1, 4, 4))
w.x[:5] = 1.0
if {stage!r} == "renamed":
    cf.atomic_write_text = lambda *a: os._exit(3)   # dies at the commit
    w.commit(np.zeros(10), ("a",), None, {{}}, key="k", version=1)
os._exit(3)
"""
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 3
        assert not entry.exists() and cf.read_entry(entry) is None
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.startswith(".") and n.endswith(".tmp") for n in leftovers)
    assert any(n.endswith(".x.npy") and not n.startswith(".") for n in leftovers)  # orphans of the renamed stage
    # the next build (under the lock) clears the killed builds' files
    with cf.entry_lock(entry):
        cf.remove_leftovers(entry)
        write(entry, torch.ones(10, 1, 4, 4))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 4 and entry.name in names and entry.with_suffix(".lock").name in names  # + x, y


@pytest.mark.parametrize("damage", ["truncated", "padded", "foreign_npy", "not_npy", "foreign_json", "other_key",
                                    "other_version", "missing_array"])
def test_a_damaged_or_foreign_file_is_named_and_refused(tmp_path, damage):
    x = torch.randn(20, 1, 5, 5)
    entry = tmp_path / "sounds-s-train-kkk.json"
    write(entry, x)
    e = cf.read_entry(entry)
    mapped = open_set(e, mapped=True)
    ref = pickle.dumps(mapped)
    del mapped
    record = json.loads(entry.read_text())
    bad, key = e.x_file, "k" * 32
    if damage == "truncated":
        bad.write_bytes(bad.read_bytes()[:-7])
    elif damage == "padded":
        bad.write_bytes(bad.read_bytes() + b"\0" * 4)
    elif damage == "foreign_npy":
        np.save(bad, np.zeros((20, 1, 5, 6), np.float32))
    elif damage == "not_npy":
        bad.write_bytes(b"PK\x03\x04 a zip, not an array")
    elif damage == "foreign_json":
        bad = entry
        entry.write_text(json.dumps({"format": "something else", "x": 1}))
    elif damage == "other_key":
        bad, key = entry, "j" * 32
    elif damage == "other_version":
        bad = entry
        entry.write_text(json.dumps({**record, "version": FEATURE_VERSION + 100}))
    elif damage == "missing_array":
        bad.unlink()
    with pytest.raises(cf.CacheFileError, match=str(bad).replace(".", r"\.")):
        cf.read_entry(entry, key=key, version=FEATURE_VERSION)
    if damage != "other_key":  # a trial handed the mapped set refuses the file, naming it
        with pytest.raises(cf.CacheFileError, match=str(bad).replace(".", r"\.")):
            pickle.loads(ref)


def test_the_store_rebuilds_a_damaged_entry_and_says_which(tmp_path, soundfolder_dir, caplog):
    src = SourceConfig("soundfolder", root=str(soundfolder_dir))
    store = FeatureStore(str(tmp_path / "cache"))
    good = store.sounds(src, FeatureConfig(), "train")
    e = cf.read_entry(store.path("sounds", src, FeatureConfig(), "train"))
    e.x_file.write_bytes(e.x_file.read_bytes()[:1000])
    fresh = FeatureStore(str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING):
        again = fresh.sounds(src, FeatureConfig(), "train")
    assert fresh.computed == 1 and torch.equal(again.x, good.x)
    assert f"{e.x_file}: " in caplog.text and "truncated" in caplog.text and "rebuilding" in caplog.text


def test_an_entry_is_built_once_by_concurrent_stores(tmp_path, imagefolder_dir):
    """Three stores (as three processes would: each lock is its own open file) need the same entries at once: the
    entry lock lets one build each entry, the others wait and read it."""
    import threading

    src = SourceConfig("imagefolder", root=str(imagefolder_dir))
    stores = [FeatureStore(str(tmp_path / "cache")) for _ in range(3)]
    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(s.images(src, FeatureConfig(), "test")))
               for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(torch.equal(r.x, results[0].x) for r in results)
    assert sum(s.computed for s in stores) == 2  # train (its statistics) + test, once each


def test_mapped_store_entries_when_over_the_threshold(tmp_path, soundfolder_dir, monkeypatch):
    src = SourceConfig("soundfolder", root=str(soundfolder_dir))
    in_memory = FeatureStore(str(tmp_path / "cache")).sounds(src, FeatureConfig(), "test")
    monkeypatch.setenv(cf.IN_MEMORY_MAX_MB_ENV, "0")
    store = FeatureStore(str(tmp_path / "cache"))
    mapped = store.sounds(src, FeatureConfig(), "test")
    assert store.computed == 0 and in_memory.mapped is None and mapped.mapped is not None
    assert torch.equal(mapped.x, in_memory.x)
    monkeypatch.setenv(cf.IN_MEMORY_MAX_MB_ENV, "lots")
    with pytest.raises(cf.DataError, match="BMA_IN_MEMORY_MAX_MB"):
        cf.in_memory_max_bytes()


def test_parallel_extraction_is_deterministic(tmp_path, soundfolder_dir, monkeypatch):
    """1 and 2 worker processes give bit-identical features (chunks of 3 clips here, so both workers get some)."""
    import bma.data.features as features

    monkeypatch.setattr(features, "SOUND_BATCH", 3)
    src = SourceConfig("soundfolder", root=str(soundfolder_dir))
    feats = FeatureConfig(sound_snr_db=10.0)
    one = FeatureStore(str(tmp_path / "one"), workers=1).sounds(src, feats, "train")
    two = FeatureStore(str(tmp_path / "two"), workers=2).sounds(src, feats, "train")
    assert len(one) > 9 and torch.equal(one.x, two.x) and torch.equal(one.y, two.y)


# -- per-batch gathering --------------------------------------------------------------------------------------------


def test_lazy_rows_batches_equal_the_up_front_ones():
    from bma.batch_rows import LazyRows, training_rows
    from bma.trial_data import channels_last

    x = torch.randn(50, 1, 28, 28)
    rows = np.array([7, 3, 49, 0, 12, 12, 30])

    def gather(i):  # as TrialTensors' images(): rows, per-index noise, channels-last
        noise = torch.stack([torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(int(j))) for j in i])
        return channels_last(x[torch.as_tensor(i)] + 0.5 * noise)

    eager = training_rows(x, rows, gather, "cpu")
    assert isinstance(eager, torch.Tensor)
    lazy = LazyRows(gather, rows, tuple(x.shape[1:]), x.dtype, "cpu")
    assert len(lazy) == len(eager) and lazy.shape == eager.shape
    for index in (torch.tensor([4, 0, 6]), np.array([2]), slice(1, 5)):
        a, b = eager[index], lazy[index]
        assert torch.equal(a, b) and a.stride() == b.stride()
    os.environ[cf.IN_MEMORY_MAX_MB_ENV] = "0"
    try:
        assert isinstance(training_rows(x, rows, gather, "cpu"), LazyRows)
    finally:
        del os.environ[cf.IN_MEMORY_MAX_MB_ENV]


@pytest.mark.slow
def test_a_trial_from_a_mapped_pool_is_bit_identical(tmp_path, monkeypatch):
    from bma.batch_rows import LazyRows
    from bma.config import TrialConfig
    from bma.trainer import fit
    from bma.trial_data import TrialTensors, make_regime
    from tests.conftest import single_thread
    from tests.synthetic_data import mapped_trial_data, synthetic_trial_data

    data = synthetic_trial_data()
    cfg = TrialConfig(device="cpu").with_updates(**{
        "regime.train_size": 120, "regime.pairing_ratio": 0.2, "regime.val_per_class": 5,
        "regime.image_noise_std": 0.3, "optim.epochs": 2, "optim.batch_size": 32, "model.memory_slots": 16,
        "model.encoder_width": 4, "model.feature_dim": 32, "model.projection_dim": 16, "eval.eval_every": 1,
        "eval.info_every": 0, "eval.probe_max_iter": 30})
    with single_thread():
        in_memory = fit(cfg, data=data)
        monkeypatch.setenv(cf.IN_MEMORY_MAX_MB_ENV, "0")
        mapped = pickle.loads(pickle.dumps(mapped_trial_data(data, tmp_path)))  # as Ray ships it to a trial
        assert mapped.sound_train.mapped is not None
        t = TrialTensors(cfg, mapped, make_regime(cfg, mapped), torch.device("cpu"))
        assert isinstance(t.x_img, LazyRows) and isinstance(t.x_snd, LazyRows)
        from_map = fit(cfg, data=mapped)
    assert in_memory.final.keys() == from_map.final.keys() and len(in_memory.final) > 20
    different = {k for k, v in in_memory.final.items()
                 if not k.startswith("time/") and not (v == from_map.final[k] or (v != v and from_map.final[k] != from_map.final[k]))}
    assert not different, different
