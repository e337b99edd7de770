"""Features and their cache: values, normalisation with train statistics, cache keys, reuse, noise, atomicity."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from bma.config import FeatureConfig, SourceConfig
from bma.data.features import FeatureStore, load_clip, load_clips, sound_params
from bma.data.sources import load_images, load_sounds, read_audio

DEFAULT = FeatureConfig()


# -- the real mirror ---------------------------------------------------------------------------------------------


def test_mnist_features_and_reuse(mnist_cache):
    train, test = mnist_cache["train"], mnist_cache["test"]
    assert mnist_cache["computed"] == 2
    assert train.x.shape == (60000, 1, 28, 28) and train.x.dtype == torch.float32
    assert test.x.shape == (10000, 1, 28, 28) and train.y.dtype == torch.int64
    assert abs(float(train.x.mean())) < 1e-4 and abs(float(train.x.std()) - 1) < 1e-3
    assert abs(float(test.x.mean())) < 0.05  # test normalised with the train statistics, not its own
    raw = load_images(SourceConfig("mnist"), "test")
    assert np.array_equal(test.y.numpy(), raw.labels) and test.classes == raw.classes and test.keys is None
    # the test split uses the TRAIN split's mean/std
    counts = np.bincount(load_images(SourceConfig("mnist"), "train").images.ravel(), minlength=256)
    values = np.arange(256) / 255
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    expected = (raw.images[:50, :, :, 0].astype(np.float64) / 255 - mean) / std
    assert np.allclose(test.x[:50, 0].numpy(), expected, atol=1e-4)

    again = FeatureStore(mnist_cache["cache"])
    train2 = again.images(SourceConfig("mnist"), DEFAULT, "train")
    test2 = again.images(SourceConfig("mnist"), DEFAULT, "test")
    assert again.computed == 0
    assert torch.equal(train2.x, train.x) and torch.equal(test2.x, test.x) and torch.equal(test2.y, test.y)
    # sound parameters are not part of an image key
    sound_changed = FeatureConfig(n_mels=64, sample_rate=16000, clip_seconds=2.0, sound_snr_db=5.0)
    assert again.path("images", SourceConfig("mnist"), sound_changed, "test") == \
        again.path("images", SourceConfig("mnist"), DEFAULT, "test")
    again.images(SourceConfig("mnist"), sound_changed, "test")
    assert again.computed == 0
    assert again.path("images", SourceConfig("mnist"), FeatureConfig(image_size=32), "train") != \
        again.path("images", SourceConfig("mnist"), DEFAULT, "train")


def test_fsdd_features_and_reuse(fsdd_cache):
    train, test = fsdd_cache["train"], fsdd_cache["test"]
    assert fsdd_cache["computed"] == 2
    assert train.x.shape == (2700, 1, 40, 126) and test.x.shape == (300, 1, 40, 126)
    assert abs(float(train.x.mean())) < 1e-4 and abs(float(train.x.std()) - 1) < 1e-3
    assert train.classes == tuple(str(d) for d in range(10))
    assert np.array_equal(np.bincount(test.y.numpy()), [30] * 10)
    assert torch.isfinite(train.x).all()
    again = FeatureStore(fsdd_cache["cache"])
    test2 = again.sounds(SourceConfig("fsdd"), DEFAULT, "test")
    assert again.computed == 0 and torch.equal(test2.x, test.x)
    # image parameters are not part of a sound key
    assert again.path("sounds", SourceConfig("fsdd"), FeatureConfig(image_size=64), "test") == \
        again.path("sounds", SourceConfig("fsdd"), DEFAULT, "test")


# -- tiny fixtures -----------------------------------------------------------------------------------------------


def test_sound_features_resample_pad_and_keys(tmp_path, esc50_dir):
    src = SourceConfig("esc50", root=str(esc50_dir), test_fold=3)
    store = FeatureStore(str(tmp_path / "cache"))
    train = store.sounds(src, DEFAULT, "train")
    assert store.computed == 1
    test = store.sounds(src, DEFAULT, "test")
    assert store.computed == 2
    assert train.x.shape == (24, 1, 40, 126) and test.x.shape == (6, 1, 40, 126)  # 16 kHz -> 8 kHz, 1 s
    assert train.classes == ("dog", "rooster", "rain")
    # a 0.6 s clip padded to 1 s: the last frames are padding (the same constant across clips)
    tail = train.x[:, 0, :, -10:]
    assert torch.allclose(tail, tail[0:1, :, :1].expand_as(tail))
    # a changed sound parameter gives new entries; the same one reuses
    store.sounds(src, DEFAULT, "test")
    assert store.computed == 2
    short = store.sounds(src, replace(DEFAULT, n_mels=20, clip_seconds=0.5), "test")
    assert short.x.shape == (6, 1, 20, 63)
    assert store.computed == 4  # new train entry (its statistics) + new test entry
    # test split standardised with the train split's statistics
    clean = FeatureStore(str(tmp_path / "other"))
    assert torch.equal(clean.sounds(src, DEFAULT, "test").x, test.x)


def test_noise_snr_changes_features_reproducibly(tmp_path, soundfolder_dir):
    src = SourceConfig("soundfolder", root=str(soundfolder_dir))
    noisy_cfg = FeatureConfig(sound_snr_db=10.0)
    a = FeatureStore(str(tmp_path / "a"))
    clean = a.sounds(src, DEFAULT, "test")
    noisy = a.sounds(src, noisy_cfg, "test")
    assert a.computed == 4 and not torch.allclose(clean.x, noisy.x, atol=1e-3)
    b = FeatureStore(str(tmp_path / "b"))
    assert torch.equal(b.sounds(src, noisy_cfg, "test").x, noisy.x)  # same noise on a fresh cache
    louder = b.sounds(src, FeatureConfig(sound_snr_db=0.0), "test")
    assert not torch.allclose(louder.x, noisy.x, atol=1e-3)
    # the noise is at the requested SNR relative to the clip's own power
    path = load_sounds(src, "test").paths[0]
    wave, _ = read_audio(path)
    n = len(wave)
    for snr in (0.0, 10.0, 20.0):
        noisy_wave = load_clip(path, FeatureConfig(sound_snr_db=snr)).numpy()
        noise = noisy_wave[:n] - wave[:n]
        ratio_db = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert abs(ratio_db - snr) < 0.5
        assert np.array_equal(noisy_wave, load_clip(path, FeatureConfig(sound_snr_db=snr)).numpy())
    assert sound_params(noisy_cfg) != sound_params(DEFAULT)


def test_load_clip_crop_pad_resample(tmp_path):
    from .conftest import write_wav

    long = write_wav(tmp_path / "a" / "long.wav", 300, seconds=1.7, rate=8000)
    clip = load_clip(long, DEFAULT)
    wave, _ = read_audio(long)
    assert clip.shape == (8000,) and np.array_equal(clip.numpy(), wave[:8000])  # first clip_seconds kept
    short = write_wav(tmp_path / "a" / "short.wav", 300, seconds=0.25, rate=8000)
    clip = load_clip(short, DEFAULT).numpy()
    assert clip.shape == (8000,) and np.all(clip[2000:] == 0) and np.abs(clip[:2000]).max() > 0.3
    hi = write_wav(tmp_path / "a" / "hi.wav", 300, seconds=0.5, rate=22050)
    clip = load_clip(hi, DEFAULT).numpy()
    assert clip.shape == (8000,) and np.all(clip[4010:] == 0) and 0.45 < np.abs(clip[:3900]).max() < 0.55
    # a batch of mixed rates and lengths (resampled together per rate) equals the clips one by one
    other = write_wav(tmp_path / "a" / "hi2.wav", 500, seconds=1.5, rate=22050)
    paths = [long, hi, short, other]
    for cfg in (DEFAULT, FeatureConfig(sound_snr_db=5.0, clip_seconds=0.8)):
        batch = load_clips(paths, cfg)
        single = torch.stack([load_clip(p, cfg) for p in paths])
        assert batch.shape == (4, int(8000 * cfg.clip_seconds)) and torch.allclose(batch, single, atol=1e-5)


def test_image_features_resize_normalise_and_keys(tmp_path, imagefolder_dir):
    src = SourceConfig("imagefolder", root=str(imagefolder_dir))
    store = FeatureStore(str(tmp_path / "cache"))
    train = store.images(src, DEFAULT, "train")
    test = store.images(src, DEFAULT, "test")
    assert train.x.shape[1:] == (3, 8, 8) and store.computed == 2
    per_channel = train.x.transpose(0, 1).reshape(3, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(3), atol=1e-4)
    raw_train = load_images(src, "train").images.astype(np.float64) / 255
    raw_test = load_images(src, "test").images.astype(np.float64) / 255
    mean, std = raw_train.mean(axis=(0, 1, 2)), raw_train.std(axis=(0, 1, 2))
    assert np.allclose(test.x.permute(0, 2, 3, 1).numpy(), (raw_test - mean) / std, atol=1e-4)
    # image_size changes the image key; sound parameters do not
    store.images(src, FeatureConfig(n_mels=13, n_fft=512, sound_snr_db=3.0), "test")
    assert store.computed == 2
    big = store.images(src, FeatureConfig(image_size=16), "test")
    assert big.x.shape[1:] == (3, 16, 16) and store.computed == 4
    assert len(list((tmp_path / "cache" / "features").glob("images-*.json"))) == 4


def test_manifest_and_cifar_features(tmp_path, manifest_csv, cifar_dir):
    store = FeatureStore(str(tmp_path / "cache"))
    src = SourceConfig("manifest", root=str(manifest_csv))
    images, sounds = store.images(src, DEFAULT, "test"), store.sounds(src, DEFAULT, "test")
    assert images.keys == sounds.keys == ("6", "7")
    assert images.x.shape == (2, 3, 5, 5) and sounds.x.shape == (2, 1, 40, 126)
    assert torch.equal(images.y, sounds.y)
    cifar = store.images(SourceConfig("cifar10", root=str(cifar_dir)), DEFAULT, "train")
    assert cifar.x.shape == (15, 3, 32, 32) and cifar.classes[9] == "truck"


# -- cache robustness --------------------------------------------------------------------------------------------


def test_changed_files_change_the_key(tmp_path, soundfolder_dir):
    from bma.data.sources import hash_split

    from .conftest import write_wav

    src = SourceConfig("soundfolder", root=str(soundfolder_dir))
    store = FeatureStore(str(tmp_path / "cache"))
    split = hash_split("low/00.wav")
    before = store.sounds(src, DEFAULT, split)
    key_before = store.path("sounds", src, DEFAULT, split)
    write_wav(soundfolder_dir / "low" / "00.wav", freq=999, seconds=0.9)  # new content, size and mtime
    assert store.path("sounds", src, DEFAULT, split) != key_before
    computed = store.computed
    after = store.sounds(src, DEFAULT, split)
    assert store.computed > computed and not torch.equal(after.x, before.x)


def test_corrupt_entry_is_recomputed_and_no_temp_files(tmp_path, soundfolder_dir):
    src = SourceConfig("soundfolder", root=str(soundfolder_dir))
    store = FeatureStore(str(tmp_path / "cache"))
    good = store.sounds(src, DEFAULT, "train")
    path = store.path("sounds", src, DEFAULT, "train")
    path.write_bytes(path.read_bytes()[:100])  # a truncated entry (e.g. disk trouble)
    fresh = FeatureStore(str(tmp_path / "cache"))
    again = fresh.sounds(src, DEFAULT, "train")
    assert fresh.computed == 1 and torch.equal(again.x, good.x)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_concurrent_computation_of_one_entry(tmp_path, imagefolder_dir):
    src = SourceConfig("imagefolder", root=str(imagefolder_dir))
    results, errors = [], []

    def work():
        try:
            results.append(FeatureStore(str(tmp_path / "cache")).images(src, DEFAULT, "test"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert all(torch.equal(r.x, results[0].x) for r in results)
    folder = tmp_path / "cache" / "features"
    assert len(list(folder.glob("images-*.json"))) == 2  # train (statistics) + test: their commit records
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert torch.equal(FeatureStore(str(tmp_path / "cache")).images(src, DEFAULT, "test").x, results[0].x)


def test_bad_audio_in_a_split_is_a_data_error(tmp_path, soundfolder_dir):
    from bma.data.errors import DataError
    from bma.data.sources import hash_split

    bad = soundfolder_dir / "low" / "broken.wav"
    bad.write_bytes(b"")
    src = SourceConfig("soundfolder", root=str(soundfolder_dir))
    with pytest.raises(DataError, match="broken.wav: audio file is empty"):
        FeatureStore(str(tmp_path / "cache")).sounds(src, DEFAULT, hash_split("low/broken.wav"))
