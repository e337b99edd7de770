"""Natively paired data at scale (the plan's AudioSet / VGGSound subsets): a folder of 2,000 clips, each an
extracted frame and an audio file, becomes a manifest (study/tools/build_manifest.py); the manifest source reads it,
the feature store computes both modalities, and the native regime builds the 10/20/50/100 % conditions: pairs are
rows, the unpaired images and sounds are the other rows with the link between them withheld."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bma.config import FeatureConfig, RegimeConfig, SourceConfig, TrialConfig
from bma.data.features import FeatureStore
from bma.data.regimes import RegimeError, build_regime, load_classmap
from bma.data.sources import load_images, load_sounds
from study.tools.build_manifest import main as build_manifest_main

CLASSES = ("bark", "engine", "rain", "siren")
N_CLIPS = 2000


def _write_clips(root: Path, n: int = N_CLIPS) -> None:
    """frames/<class>/<id>.png (6x6 RGB) + audio/<class>/<id>.wav (0.05 s, 8 kHz), one class-coloured frame and one
    class-pitched tone per clip; a stray frame without audio and a stray clip without a frame."""
    import soundfile as sf
    from PIL import Image

    rng = np.random.default_rng(0)
    rate = 8000
    t = np.arange(int(0.05 * rate)) / rate
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        c = CLASSES.index(label)
        clip_id = f"{label}/yt{i:05d}_{10 * (i % 7):06d}"
        frame = root / "frames" / f"{clip_id}.png"
        frame.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(rng.normal(60 * c + 30, 20, (6, 6, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(frame)
        wav = root / "audio" / f"{clip_id}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        tone = 0.4 * np.sin(2 * np.pi * (300 + 400 * c) * t) + 0.01 * rng.standard_normal(len(t))
        sf.write(str(wav), tone.astype(np.float32), rate, subtype="PCM_16")
    Image.fromarray(np.zeros((6, 6, 3), np.uint8), "RGB").save(root / "frames" / "bark" / "orphan.png")
    sf.write(str(root / "audio" / "rain" / "lonely.wav"), np.zeros(100, np.float32), rate)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    _write_clips(root)
    labels = root / "labels.csv"  # VGGSound-style: id, label, split (here: every 5th clip is a test clip)
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label", "split"])
        for i in range(N_CLIPS):
            w.writerow([f"yt{i:05d}_{10 * (i % 7):06d}", CLASSES[i % len(CLASSES)], "test" if i % 5 == 4 else "train"])
    out = root / "pairs.csv"
    assert build_manifest_main([str(root), "--out", str(out), "--labels", str(labels), "--id-column", "id",
                                "--label-column", "label", "--split-column", "split"]) == 0
    return out


def test_build_manifest_pairs_frames_with_audio_and_reports_strays(manifest, capsys, tmp_path):
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == N_CLIPS and list(rows[0]) == ["image_path", "sound_path", "label", "split"]
    assert all(Path(r["image_path"]).with_suffix("").as_posix().removeprefix("frames/")
               == Path(r["sound_path"]).with_suffix("").as_posix().removeprefix("audio/") for r in rows)
    assert sum(r["split"] == "test" for r in rows) == N_CLIPS // 5
    # labels from the class folders when no labels CSV is given; strays are named, not written
    root = manifest.parent
    assert build_manifest_main([str(root), "--out", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr().out
    assert f"{N_CLIPS} rows" in out and "hash" in out
    assert "1 clip(s) with no audio: bark/orphan" in out and "1 clip(s) with no frame: rain/lonely" in out
    assert build_manifest_main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x.csv")]) == 2


def test_manifest_source_reads_the_rows_with_keys(manifest):
    src = SourceConfig("manifest", root=str(manifest))
    images, sounds = load_images(src, "train"), load_sounds(src, "train")
    assert len(images) == len(sounds) == N_CLIPS - N_CLIPS // 5
    assert images.keys == sounds.keys and images.classes == tuple(sorted(CLASSES))
    assert images.images.shape[1:] == (6, 6, 3)
    # rows in the manifest's order (by clip id: class folder, then id); a test row (every 5th) is in the other split
    assert [f"{p.parent.name}/{p.stem}" for p in sounds.paths[:3]] == [
        "bark/yt00000_000000", "bark/yt00008_000010", "bark/yt00012_000050"]


@pytest.fixture(scope="module")
def features(manifest, tmp_path_factory):
    store = FeatureStore(str(tmp_path_factory.mktemp("cache")))
    src = SourceConfig("manifest", root=str(manifest))
    feats = FeatureConfig(clip_seconds=0.05, hop_length=32)
    return {split: (store.images(src, feats, split), store.sounds(src, feats, split)) for split in ("train", "test")}


def _regime(features, ratio: float, train_size: int = 1400, seed: int = 0):
    (img_tr, snd_tr), (img_te, snd_te) = features["train"], features["test"]
    cm = load_classmap(None, img_tr.classes, snd_tr.classes)
    cfg = RegimeConfig(pairing_ratio=ratio, train_size=train_size, seed=seed, val_per_class=10)
    return build_regime(cfg, cm.image_to_common[img_tr.y.numpy()], cm.sound_to_common[snd_tr.y.numpy()],
                        cm.image_to_common[img_te.y.numpy()], cm.sound_to_common[snd_te.y.numpy()], cm.num_classes,
                        image_keys=img_tr.keys, sound_keys=snd_tr.keys)


def test_native_regime_builds_the_pairing_conditions(features):
    img_keys = np.asarray(features["train"][0].keys)
    snd_keys = np.asarray(features["train"][1].keys)
    img_test_keys, snd_test_keys = np.asarray(features["test"][0].keys), np.asarray(features["test"][1].keys)
    regimes = {r: _regime(features, r) for r in (0.1, 0.2, 0.5, 1.0)}
    pair_rows = {}
    for ratio, reg in regimes.items():
        n_pairs = round(ratio * 1400)
        assert reg.counts()["pairs"] == n_pairs
        assert reg.counts()["unpaired_images"] == reg.counts()["unpaired_sounds"] == 1400 - n_pairs
        # a pair is one manifest row: the image and the sound of the same key
        assert (img_keys[reg.pair_image] == snd_keys[reg.pair_sound]).all()
        pair_rows[ratio] = set(img_keys[reg.pair_image])
        # unpaired: the other rows' images and sounds, the same rows on both sides, the link withheld (shuffled)
        unpaired_img, unpaired_snd = img_keys[reg.unpaired_image], snd_keys[reg.unpaired_sound]
        assert set(unpaired_img) == set(unpaired_snd) and not set(unpaired_img) & pair_rows[ratio]
        if len(unpaired_img):
            assert (unpaired_img == unpaired_snd).mean() < 0.01  # ~1/N rows meet their partner by chance
        # validation and test pairs are rows too
        assert (img_keys[reg.val_image] == snd_keys[reg.val_sound]).all() and len(reg.val_image) == 40
        assert (img_test_keys[reg.test_pair_image] == snd_test_keys[reg.test_pair_sound]).all()
        assert len(reg.test_pair_image) == N_CLIPS // 5
    # nested: the 10 % pairs are among the 20 % ones, and so on; the training rows are the same in every condition
    assert pair_rows[0.1] < pair_rows[0.2] < pair_rows[0.5] < pair_rows[1.0]
    rows = {r: set(img_keys[reg.train_image]) for r, reg in regimes.items()}
    assert rows[0.1] == rows[0.2] == rows[0.5] == rows[1.0]
    # the label-budget probes' order is the seed's, the same in every condition (common random numbers)
    orders = [(tuple(reg.label_order_image), tuple(reg.label_order_sound)) for reg in regimes.values()]
    assert all(o == orders[0] for o in orders)
    assert (img_keys[regimes[0.1].label_order_image] == snd_keys[regimes[0.1].label_order_sound]).all()


def test_native_regime_refuses_more_rows_than_the_manifest_has(features):
    with pytest.raises(RegimeError, match="regime.train_size: 1600 rows requested"):
        _regime(features, 0.1, train_size=1600)


def test_a_trial_config_for_the_manifest_is_valid(manifest):
    cfg = TrialConfig.from_flat({"data.image.source": "manifest", "data.image.root": str(manifest),
                                 "data.sound.source": "manifest", "data.sound.root": str(manifest),
                                 "pairing_ratio": 0.2, "train_size": 1400})
    assert cfg.data.image.root == cfg.data.sound.root
