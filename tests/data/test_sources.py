"""Sources: official layouts on the real mirror and on tiny generated fixtures; every bad input is a DataError."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bma.config import SourceConfig
from bma.data import mirror as mirror_mod
from bma.data.errors import DataError
from bma.data.sources import hash_split, load_images, load_sounds, read_audio

from .conftest import ESC50_HEADER, write_png, write_wav

DIGITS = tuple(str(d) for d in range(10))


# -- the real mirror ---------------------------------------------------------------------------------------------


def test_mnist_mirror_counts_and_classes(mirror):
    train = load_images(SourceConfig("mnist"), "train")
    test = load_images(SourceConfig("mnist"), "test")
    assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 28, 28, 1)
    assert train.labels.dtype == np.int64 and train.classes == DIGITS and train.keys is None
    assert np.array_equal(np.unique(train.labels), np.arange(10))
    assert np.array_equal(np.unique(test.labels), np.arange(10))
    assert train.identity != test.identity and "mnist" in train.identity and train.identity.endswith("|train")
    assert str(mirror) in train.identity
    # stable: the same files give the same identity
    assert load_images(SourceConfig("mnist"), "test").identity == test.identity


def test_fsdd_mirror_official_split(mirror):
    train = load_sounds(SourceConfig("fsdd"), "train")
    test = load_sounds(SourceConfig("fsdd"), "test")
    assert (len(train), len(test)) == (2700, 300)
    assert train.classes == DIGITS and test.classes == DIGITS and train.keys is None
    assert np.array_equal(np.bincount(train.labels), [270] * 10)
    assert np.array_equal(np.bincount(test.labels), [30] * 10)
    assert all(int(p.stem.split("_")[2]) < 5 for p in test.paths)
    assert all(int(p.stem.split("_")[2]) >= 5 for p in train.paths)
    assert all(int(p.name[0]) == y for p, y in zip(train.paths, train.labels))
    wave, rate = read_audio(test.paths[0])
    assert rate == 8000 and wave.dtype == np.float32 and wave.ndim == 1 and np.abs(wave).max() <= 1.0


def test_mirror_root_env(tmp_path, monkeypatch, mirror):
    monkeypatch.setenv("BMA_DATA_MIRROR", str(tmp_path))
    assert mirror_mod.mirror_root() == tmp_path.resolve()
    monkeypatch.setenv("BMA_DATA_MIRROR", str(tmp_path / "nope"))
    with pytest.raises(DataError, match="BMA_DATA_MIRROR.*nope"):
        mirror_mod.mirror_root()
    monkeypatch.delenv("BMA_DATA_MIRROR")
    assert mirror_mod.mirror_root() == mirror


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("BMA_CACHE_DIR", str(tmp_path / "env"))
    assert mirror_mod.cache_root(str(tmp_path / "arg")) == (tmp_path / "arg").resolve()
    assert (tmp_path / "arg").is_dir()
    assert mirror_mod.cache_root(None) == (tmp_path / "env").resolve()
    assert mirror_mod.data_root(None) == (tmp_path / "env" / "datasets").resolve()


# -- nothing local, downloads ------------------------------------------------------------------------------------


def test_nothing_local_offline_names_places(tmp_path, monkeypatch):
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    monkeypatch.setenv("BMA_DATA_MIRROR", str(empty))
    cache = tmp_path / "c"
    with pytest.raises(DataError) as err:
        load_images(SourceConfig("mnist"), "train", str(cache))
    msg = str(err.value)
    for place in (empty / "MNIST" / "raw", empty / "raw", cache / "datasets" / "MNIST" / "raw"):
        assert str(place.resolve()) in msg
    assert "train-images-idx3-ubyte" in msg and "BMA_OFFLINE" in msg
    with pytest.raises(DataError) as err:
        load_sounds(SourceConfig("fsdd", download=False), "test", str(cache))
    msg = str(err.value)
    assert str(empty.resolve() / "fsdd" / "recordings") in msg and "download is off" in msg
    assert "{digit}_{speaker}_{index}.wav" in msg
    with pytest.raises(DataError, match=r"(?s)ESC-50-master.*meta/esc50.csv"):
        load_sounds(SourceConfig("esc50"), "train", str(cache))
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_images(SourceConfig("cifar10", download=False), "train", str(cache))
    assert not (cache / "datasets" / "MNIST").exists()  # looking creates nothing


def test_root_given_but_missing(tmp_path):
    with pytest.raises(DataError) as err:
        load_images(SourceConfig("mnist", root=str(tmp_path / "nowhere")), "test")
    assert "nowhere" in str(err.value) and "only that folder is searched" in str(err.value)


def test_download_failure_names_urls(tmp_path, monkeypatch):
    monkeypatch.delenv("BMA_OFFLINE")
    monkeypatch.setenv("BMA_DATA_MIRROR", str(tmp_path))

    def offline_fetch(url, dest, md5=None, timeout=60.0, **kw):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(mirror_mod, "fetch", offline_fetch)
    with pytest.raises(DataError) as err:
        load_images(SourceConfig("mnist"), "test", str(tmp_path / "c"))
    msg = str(err.value)
    assert "download failed" in msg and "ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz" in msg
    assert "Looked in" in msg
    with pytest.raises(DataError, match="(?s)download failed.*free-spoken-digit-dataset"):
        load_sounds(SourceConfig("fsdd"), "test", str(tmp_path / "c"))
    assert not any(p.name.endswith(".part") for p in (tmp_path / "c").rglob("*"))


def test_mnist_download_goes_to_data_root(tmp_path, monkeypatch, mirror):
    """Simulated network: 'downloads' copy the mirror's files; they land in <cache>/datasets/MNIST/raw."""
    monkeypatch.delenv("BMA_OFFLINE")
    monkeypatch.setenv("BMA_DATA_MIRROR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    fetched = []

    def fake_fetch(url, dest, md5=None, timeout=60.0, **kw):
        fetched.append(url)
        shutil.copyfile(mirror / "MNIST" / "raw" / url.rsplit("/", 1)[1], dest)
        return dest

    monkeypatch.setattr(mirror_mod, "fetch", fake_fetch)
    cache = tmp_path / "c"
    test = load_images(SourceConfig("mnist"), "test", str(cache))
    assert test.images.shape == (10000, 28, 28, 1)
    assert (cache / "datasets" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert len(fetched) == 2 and all(u.startswith("https://ossci-datasets") for u in fetched)
    load_images(SourceConfig("mnist"), "test", str(cache))  # found locally now: no new fetch
    assert len(fetched) == 2


def test_fsdd_download_archive(tmp_path, monkeypatch):
    """Simulated GitHub archive: only recordings/ is installed, atomically, into <cache>/datasets/fsdd."""
    monkeypatch.delenv("BMA_OFFLINE")
    monkeypatch.setenv("BMA_DATA_MIRROR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    src_dir = tmp_path / "arch"
    archive = tmp_path / "fsdd.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("free-spoken-digit-dataset-master/README.md", "readme")
        for name in ("3_theo_0.wav", "3_theo_7.wav", "4_lucas_12.wav"):
            zf.write(write_wav(src_dir / name), f"free-spoken-digit-dataset-master/recordings/{name}")
    monkeypatch.setattr(mirror_mod, "fetch",
                        lambda url, dest, md5=None, timeout=60.0, **kw: shutil.copyfile(archive, dest))
    cache = tmp_path / "c"
    train = load_sounds(SourceConfig("fsdd"), "train", str(cache))
    assert [p.name for p in train.paths] == ["3_theo_7.wav", "4_lucas_12.wav"] and list(train.labels) == [3, 4]
    assert train.paths[0].parent == (cache / "datasets" / "fsdd" / "recordings").resolve()
    assert sorted(p.name for p in (cache / "datasets" / "fsdd").iterdir()) == ["recordings"]


# -- MNIST IDX validation ----------------------------------------------------------------------------------------


def _idx(path: Path, magic: int, dims: list[int], payload: bytes) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as fh:
        fh.write(header + payload)


def test_mnist_local_root_and_bad_idx(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _idx(raw / "t10k-images-idx3-ubyte.gz", 0x803, [2, 28, 28], bytes(2 * 784))
    _idx(raw / "t10k-labels-idx1-ubyte.gz", 0x801, [2], bytes([3, 7]))
    split = load_images(SourceConfig("mnist", root=str(tmp_path)), "test")
    assert split.images.shape == (2, 28, 28, 1) and list(split.labels) == [3, 7]
    # the extracted (non-gz) file in <root>/ is also accepted
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (flat / name).write_bytes(gzip.decompress((raw / f"{name}.gz").read_bytes()))
    assert len(load_images(SourceConfig("mnist", root=str(flat)), "test")) == 2

    _idx(raw / "t10k-images-idx3-ubyte.gz", 0x801, [2, 28, 28], bytes(2 * 784))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: IDX magic number 0x00000801, expected 0x00000803"):
        load_images(SourceConfig("mnist", root=str(tmp_path)), "test")
    _idx(raw / "t10k-images-idx3-ubyte.gz", 0x803, [2, 28, 28], bytes(784))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: IDX header says \[2, 28, 28\]"):
        load_images(SourceConfig("mnist", root=str(tmp_path)), "test")
    (raw / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: cannot read IDX file"):
        load_images(SourceConfig("mnist", root=str(tmp_path)), "test")
    _idx(raw / "t10k-images-idx3-ubyte.gz", 0x803, [3, 28, 28], bytes(3 * 784))
    with pytest.raises(DataError, match="3 images but .*t10k-labels-idx1-ubyte.gz has 2 labels"):
        load_images(SourceConfig("mnist", root=str(tmp_path)), "test")


# -- CIFAR-10 ----------------------------------------------------------------------------------------------------


def test_cifar10_pickle_layout(cifar_dir):
    train = load_images(SourceConfig("cifar10", root=str(cifar_dir), download=False), "train")
    test = load_images(SourceConfig("cifar10", root=str(cifar_dir), download=False), "test")
    assert train.images.shape == (15, 32, 32, 3) and test.images.shape == (4, 32, 32, 3)
    assert train.classes[0] == "airplane" and len(train.classes) == 10
    import pickle

    first = pickle.load(open(cifar_dir / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="latin1")
    assert np.array_equal(train.images[0], first["data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    assert list(train.labels[:3]) == first["labels"]
    (cifar_dir / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR-10 pickle"):
        load_images(SourceConfig("cifar10", root=str(cifar_dir)), "test")


# -- folders -----------------------------------------------------------------------------------------------------


def test_imagefolder_hash_split(imagefolder_dir):
    src = SourceConfig("imagefolder", root=str(imagefolder_dir))
    train, test = load_images(src, "train"), load_images(src, "test")
    assert train.classes == ("2", "10", "cat")  # integer names numerically first
    assert len(train) + len(test) == 36 and len(test) > 0
    assert train.images.shape[1:] == (8, 8, 3) and train.images.dtype == np.uint8
    # deterministic: the split follows a hash of the relative path
    for cls in train.classes:
        for f in sorted((imagefolder_dir / cls).iterdir()):
            expected = hash_split(f"{cls}/{f.name}")
            assert (expected == "train") == (f.name in _names(imagefolder_dir, train, cls))
    assert load_images(src, "train").identity == train.identity


def _names(root, split, cls):
    # images are unique per file (seeded by value), so match arrays back to files
    from PIL import Image

    arrays = {f.name: np.asarray(Image.open(f)) for f in (root / cls).iterdir()}
    idx = split.classes.index(cls)
    mine = split.images[split.labels == idx]
    return {name for name, a in arrays.items() if any(np.array_equal(a, im) for im in mine)}


def test_imagefolder_train_test_folders(imagefolder_split_dir):
    src = SourceConfig("imagefolder", root=str(imagefolder_split_dir))
    train, test = load_images(src, "train"), load_images(src, "test")
    assert (len(train), len(test)) == (10, 4)
    assert train.images.shape[1:] == (6, 6, 1) and train.classes == ("a", "b")
    assert list(np.bincount(test.labels)) == [2, 2]


def test_imagefolder_bad_inputs(tmp_path, imagefolder_dir):
    odd = write_png(imagefolder_dir / "cat" / "999.png", 50, (9, 8))
    src = SourceConfig("imagefolder", root=str(imagefolder_dir))
    which = hash_split("cat/999.png")
    with pytest.raises(DataError, match=r"999.png: image is 9x8, expected 8x8"):
        load_images(src, which)
    resized = load_images(src, which, image_size=8)
    assert resized.images.shape[1:3] == (8, 8) and resized.identity.endswith("resized=8")
    odd.write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="999.png: not a readable image"):
        load_images(src, which)
    with pytest.raises(DataError, match="imagefolder needs a root folder"):
        load_images(SourceConfig("imagefolder"), "train")
    with pytest.raises(DataError, match="nothere: folder does not exist"):
        load_images(SourceConfig("imagefolder", root=str(tmp_path / "nothere")), "train")
    (tmp_path / "only" / "train" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match=r"only/test: folder missing"):
        load_images(SourceConfig("imagefolder", root=str(tmp_path / "only")), "train")


def test_soundfolder(soundfolder_dir):
    src = SourceConfig("soundfolder", root=str(soundfolder_dir))
    train, test = load_sounds(src, "train"), load_sounds(src, "test")
    assert train.classes == ("high", "low")
    assert len(train) + len(test) == 21 and len(test) > 0
    assert not set(train.paths) & set(test.paths)
    assert any(p.suffix == ".flac" for p in train.paths + test.paths)
    for p, y in zip(train.paths, train.labels):
        assert p.parent.name == train.classes[y]


# -- ESC-50 ------------------------------------------------------------------------------------------------------


def test_esc50_fold_split(esc50_dir):
    for fold in (5, 2):
        src = SourceConfig("esc50", root=str(esc50_dir), test_fold=fold)
        train, test = load_sounds(src, "train"), load_sounds(src, "test")
        assert (len(train), len(test)) == (24, 6)
        assert train.classes == ("dog", "rooster", "rain")  # ordered by target, not by appearance
        assert all(p.name.startswith(f"{fold}-") for p in test.paths)
        assert not any(p.name.startswith(f"{fold}-") for p in train.paths)
        assert all(train.classes[y] == {"0": "dog", "1": "rooster", "2": "rain"}[p.stem[-1]]
                   for p, y in zip(train.paths, train.labels))
    # the parent of the published folder is accepted too
    assert len(load_sounds(SourceConfig("esc50", root=str(esc50_dir.parent)), "test")) == 6


def test_esc50_bad_inputs(esc50_dir):
    csv_path = esc50_dir / "meta" / "esc50.csv"
    lines = csv_path.read_text().splitlines()
    src = SourceConfig("esc50", root=str(esc50_dir))
    # a fold that has no rows
    csv_path.write_text("\n".join(line for line in lines if not line.split(",")[1] == "5") + "\n")
    with pytest.raises(DataError, match="data.sound.test_fold=5: no rows of that fold"):
        load_sounds(src, "test")
    # missing columns
    csv_path.write_text("filename,target,category\n1-100-A-0.wav,0,dog\n")
    with pytest.raises(DataError, match=r"esc50.csv: missing columns \['fold'\]"):
        load_sounds(src, "train")
    # a listed file that is missing
    csv_path.write_text(",".join(ESC50_HEADER) + "\nmissing.wav,1,0,dog,False,1,A\n5-1-A-0.wav,5,0,dog,False,1,A\n")
    with pytest.raises(DataError, match="missing.wav: listed in .*esc50.csv but the audio file does not exist"):
        load_sounds(src, "train")
    csv_path.write_text(",".join(ESC50_HEADER) + "\nx.wav,one,0,dog,False,1,A\n")
    with pytest.raises(DataError, match=r"esc50.csv:2: fold and target must be integers"):
        load_sounds(src, "train")


# -- manifest ----------------------------------------------------------------------------------------------------


def test_manifest_pairs_by_key(manifest_csv):
    src = SourceConfig("manifest", root=str(manifest_csv))
    img_train, img_test = load_images(src, "train"), load_images(src, "test")
    snd_train, snd_test = load_sounds(src, "train"), load_sounds(src, "test")
    assert (len(img_train), len(img_test), len(snd_train), len(snd_test)) == (6, 2, 6, 2)
    assert img_train.classes == ("cat", "dog") == snd_train.classes
    assert img_train.keys == snd_train.keys == tuple(str(i) for i in range(6))
    assert img_test.keys == snd_test.keys == ("6", "7")
    assert np.array_equal(img_train.labels, snd_train.labels)
    assert snd_train.paths[3] == manifest_csv.parent / "snd" / "3.wav"
    assert img_train.images.shape == (6, 5, 5, 3)
    assert img_train.identity != snd_train.identity


def test_manifest_hash_split_consistent(manifest_csv):
    text = manifest_csv.read_text().splitlines()
    manifest_csv.write_text("\n".join(line.rsplit(",", 1)[0] for line in text) + "\n")  # drop the split column
    src = SourceConfig("manifest", root=str(manifest_csv))
    # the documented 80/20 split, derived here: train when the first 8 bytes of sha256("<image>|<sound>") read as a
    # fraction of 2^64 are below 0.8 (for these 8 rows: 7 train, 1 test; a side with no row must be a DataError)
    fraction = {k: int.from_bytes(hashlib.sha256(f"img/{k}.png|snd/{k}.wav".encode()).digest()[:8], "big") / 2.0**64
                for k in map(str, range(8))}
    expected = {"train": tuple(k for k, f in fraction.items() if f < 0.8),
                "test": tuple(k for k, f in fraction.items() if f >= 0.8)}
    for split in ("train", "test"):
        if not expected[split]:
            with pytest.raises(DataError, match="no rows in the"):
                load_images(src, split)
            continue
        images, sounds = load_images(src, split), load_sounds(src, split)
        assert images.keys == sounds.keys
        assert sorted(images.keys, key=int) == list(expected[split]), (split, images.keys)
        assert all(hash_split(f"img/{k}.png|snd/{k}.wav") == split for k in images.keys)


def test_manifest_bad_inputs(manifest_csv, tmp_path):
    src = SourceConfig("manifest", root=str(manifest_csv))
    original = manifest_csv.read_text()
    manifest_csv.write_text("image_path,label\nimg/0.png,cat\n")
    with pytest.raises(DataError, match=r"pairs.csv: missing columns \['sound_path'\]"):
        load_sounds(src, "train")
    manifest_csv.write_text(original.replace("snd/2.wav,cat,train", "snd/2.wav,cat,validation"))
    with pytest.raises(DataError, match=r"pairs.csv:4: split 'validation', expected 'train' or 'test'"):
        load_images(src, "train")
    manifest_csv.write_text(original.replace("snd/2.wav", "snd/missing.wav"))
    with pytest.raises(DataError, match=r"pairs.csv: row 2 \(sound_path=.*missing.wav\): file does not exist"):
        load_sounds(src, "train")
    manifest_csv.write_text(original.replace("img/1.png", ""))
    with pytest.raises(DataError, match="pairs.csv:3: column image_path is empty"):
        load_images(src, "train")
    with pytest.raises(DataError, match="manifest source needs the path of a CSV"):
        load_images(SourceConfig("manifest"), "train")
    with pytest.raises(DataError, match="nope.csv: CSV file does not exist"):
        load_sounds(SourceConfig("manifest", root=str(tmp_path / "nope.csv")), "train")


# -- common errors -----------------------------------------------------------------------------------------------


def test_unknown_split_and_source(soundfolder_dir):
    src = SourceConfig("soundfolder", root=str(soundfolder_dir))
    with pytest.raises(DataError, match="split: expected 'train' or 'test'.*'validation'"):
        load_sounds(src, "validation")
    with pytest.raises(DataError, match="split: expected 'train' or 'test'"):
        load_images(SourceConfig("mnist"), "val")
    with pytest.raises(DataError, match="data.image.source: expected one of .*'fsdd'"):
        load_images(SourceConfig("fsdd"), "train")
    with pytest.raises(DataError, match="data.sound.source: expected one of"):
        load_sounds(SourceConfig("mnist"), "train")


def test_read_audio_bad_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.wav: audio file is empty \(0 bytes\)"):
        read_audio(empty)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(DataError, match="garbage.wav: not a readable audio file"):
        read_audio(garbage)
    with pytest.raises(DataError, match="missing.wav: audio file does not exist"):
        read_audio(tmp_path / "missing.wav")
    import soundfile as sf

    sf.write(str(tmp_path / "zero.wav"), np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(DataError, match=r"zero.wav: audio file has no samples \(zero length\)"):
        read_audio(tmp_path / "zero.wav")
    stereo = tmp_path / "stereo.wav"
    sf.write(str(stereo), np.stack([np.full(100, 0.5), np.full(100, -0.1)], 1), 16000)
    wave, rate = read_audio(stereo)
    assert rate == 16000 and wave.shape == (100,) and np.allclose(wave, 0.2, atol=1e-3)


def test_fsdd_bad_name(tmp_path):
    rec = tmp_path / "recordings"
    write_wav(rec / "1_theo_3.wav")
    write_wav(rec / "recording-one.wav")
    expected = r"recording-one.wav: file name does not match FSDD's \{digit\}_\{speaker\}_\{index\}.wav"
    with pytest.raises(DataError, match=expected):
        load_sounds(SourceConfig("fsdd", root=str(tmp_path)), "test")


def test_read_audio_refuses_a_wav_cut_short(tmp_path):
    """A WAV whose file ends before its data chunk does (an interrupted copy): libsndfile would read the first part
    silently; it is refused naming the file and both sizes."""
    import soundfile as sf

    full = tmp_path / "full.wav"
    sf.write(str(full), (0.5 * np.sin(np.arange(1600) / 5)).astype(np.float32), 8000, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    assert sf.info(str(cut)).frames < 1600  # what libsndfile alone makes of it: fewer frames, no error
    with pytest.raises(DataError, match=r"cut.wav: WAV file is cut short: its header declares 3,200 bytes of audio, "
                                        r"the file holds 1,578 \(49 %\)"):
        read_audio(cut)
    wave, rate = read_audio(full)  # the complete file reads as before
    assert rate == 8000 and wave.shape == (1600,)
    # a streaming writer's unset size (0xFFFFFFFF) is not judged: libsndfile reads to the end of the file
    streamed = tmp_path / "streamed.wav"
    i = data.index(b"data")
    streamed.write_bytes(data[: i + 4] + b"\xff\xff\xff\xff" + data[i + 8:])
    assert read_audio(streamed)[0].shape == (1600,)
