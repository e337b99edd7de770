"""Bad input reaching a trial: every case is a DataError, RegimeError or ConfigError that names the culprit."""

from __future__ import annotations

import numpy as np
import pytest

from bma.config import ConfigError, TrialConfig
from bma.data.errors import DataError
from bma.data.regimes import RegimeError
from bma.trainer import fit, load_trial_data, make_regime


def write_wav(path, freq: float, seconds: float = 0.2, rate: int = 8000):
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="PCM_16")


def _tiny_folder(root, side: str):
    """A small imagefolder/soundfolder layout of classes 3 and 7: the other modality of a test, off the mirror."""
    from PIL import Image

    for split in ("train", "test"):
        for digit in ("3", "7"):
            for i in range(3):
                if side == "sound":
                    write_wav(root / split / digit / f"{i}.wav", 300 + 100 * int(digit) + 10 * i)
                else:
                    path = root / split / digit / f"{i}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    pixels = np.random.default_rng(10 * int(digit) + i).integers(0, 255, (28, 28), dtype=np.uint8)
                    Image.fromarray(pixels, mode="L").save(path)
    return root


@pytest.mark.parametrize("side", ["image", "sound"])
def test_missing_data_root_names_the_path(side, tmp_path):
    missing = tmp_path / "nonexistent"
    other = "sound" if side == "image" else "image"
    source = "mnist" if side == "image" else "fsdd"
    cfg = TrialConfig().with_updates(**{
        f"data.{side}.source": source, f"data.{side}.root": str(missing),
        # the other modality loads from a tiny folder: the missing root is the only problem, mirror or not
        f"data.{other}.source": f"{other}folder", f"data.{other}.root": str(_tiny_folder(tmp_path / other, other)),
    })
    with pytest.raises(DataError) as err:
        load_trial_data(cfg)
    assert str(missing) in str(err.value) and f"data.{side}" in str(err.value)
    with pytest.raises(DataError, match="nonexistent"):
        fit(cfg.with_updates(device="cpu"))


def test_corrupt_wav_in_a_soundfolder_names_the_file(mirror, tmp_path):
    root = tmp_path / "spoken"
    for split in ("train", "test"):
        for digit in ("3", "7"):
            for i in range(3):
                write_wav(root / split / digit / f"{i}.wav", 300 + 100 * int(digit) + 10 * i)
    (root / "train" / "7" / "bad.wav").write_bytes(b"RIFF\x00\x00garbage")
    cfg = TrialConfig().with_updates(**{"data.sound.source": "soundfolder", "data.sound.root": str(root)})
    with pytest.raises(DataError) as err:
        load_trial_data(cfg)
    assert "bad.wav" in str(err.value) and "not a readable audio file" in str(err.value)
    # fixed: the folder loads, and only the digits both sides share are mapped
    (root / "train" / "7" / "bad.wav").unlink()
    (root / "train" / "7" / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match="empty.wav: audio file is empty"):
        load_trial_data(cfg)
    (root / "train" / "7" / "empty.wav").unlink()
    data = load_trial_data(cfg)
    assert data.classmap.names == ("3", "7") and len(data.sound_train) == 6


def test_class_in_the_map_that_the_data_lacks(mirror, tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("image_class,sound_class\n1,1\n2,twelve\n")
    with pytest.raises(DataError) as err:
        load_trial_data(TrialConfig().with_updates(**{"data.classmap": str(path)}))
    assert "'twelve'" in str(err.value) and "map.csv:3" in str(err.value)


def test_bad_regime_numbers(full_data):
    with pytest.raises(ConfigError, match="regime.pairing_ratio: expected a value in \\(0, 1\\], got 1.5"):
        TrialConfig.from_flat({"pairing_ratio": "1.5"})  # as MLflow stores it
    with pytest.raises(ConfigError, match="regime.train_size"):
        TrialConfig.from_flat({"regime.train_size": 0})
    with pytest.raises(ConfigError, match="regime.train_size: expected int"):
        TrialConfig.from_flat({"train_size": 10.5})
    # above what exists: the sound pool limits first, the image pool even with expansion
    with pytest.raises(RegimeError, match="regime.train_size: 5000 sounds.*fsdd.*2500"):
        make_regime(TrialConfig().with_updates(train_size=5000), full_data)
    with pytest.raises(RegimeError, match="regime.train_size: 60000 images.*mnist.*59800"):
        make_regime(TrialConfig().with_updates(train_size=60000, **{"regime.expand_sounds": True}), full_data)


def test_a_validation_split_larger_than_the_data_blames_val_per_class(full_data):
    """FSDD has 270 training clips per digit: 300 for validation leaves none to train on. The message names
    val_per_class and the limit, not train_size (which fits)."""
    with pytest.raises(RegimeError) as err:
        make_regime(TrialConfig().with_updates(train_size=200, **{"regime.val_per_class": 300}), full_data)
    text = str(err.value)
    assert text.startswith("regime.val_per_class: 300 per class would leave nothing to train on")
    assert "270" in text and "regime.train_size" not in text


def test_a_wav_cut_short_in_a_soundfolder_names_the_file(mirror, tmp_path):
    root = tmp_path / "spoken"
    for split in ("train", "test"):
        for digit in ("3", "7"):
            for i in range(3):
                write_wav(root / split / digit / f"{i}.wav", 300 + 100 * int(digit) + 10 * i)
    cut = root / "train" / "3" / "1.wav"
    cut.write_bytes(cut.read_bytes()[:-1000])  # an interrupted copy: the header still declares the whole clip
    cfg = TrialConfig().with_updates(**{"data.sound.source": "soundfolder", "data.sound.root": str(root)})
    with pytest.raises(DataError, match=r"1.wav: WAV file is cut short: its header declares 3,200 bytes"):
        load_trial_data(cfg)
