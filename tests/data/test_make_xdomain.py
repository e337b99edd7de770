"""study/tools/make_xdomain.py: the cross-domain sets of study/specs/xdomain.yaml, built from the mirror, in the layout
the imagefolder and soundfolder sources read, shifted as documented, and loaded by the engine's own loaders."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
from PIL import Image

from bma.data.mirror import mirror_root
from study.tools import make_xdomain as X
from tests.conftest import MIRROR_SKIP, mirror_available

pytestmark = pytest.mark.skipif(not mirror_available(), reason=MIRROR_SKIP)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    out = tmp_path_factory.mktemp("xdomain")
    assert X.main([str(out), "--per-class", "5", "--sounds-per-class", "5"]) == 0
    return out


def test_layout_split_and_classes(sets):
    images, sounds = sets / X.IMAGE_SET, sets / X.SOUND_SET
    for root in (images, sounds):
        assert sorted(p.name for p in (root / "train").iterdir()) == [str(d) for d in range(10)]
    # 5 images and 5 clips a class: round(0.4 * 5) = 2 in train/, 3 in test/
    assert {len(list((images / "train" / str(d)).iterdir())) for d in range(10)} == {2}
    assert {len(list((images / "test" / str(d)).iterdir())) for d in range(10)} == {3}
    assert {len(list((sounds / "train" / str(d)).iterdir())) for d in range(10)} == {2}
    assert {len(list((sounds / "test" / str(d)).iterdir())) for d in range(10)} == {3}
    # only FSDD's test clips (index 0-4), never a training one
    assert all(int(p.stem.rsplit("_", 1)[1]) < 5 for p in sounds.rglob("*.wav"))


def test_images_are_inverted_digits(sets):
    pixels = np.stack([np.asarray(Image.open(p)) for p in (sets / X.IMAGE_SET).rglob("*.png")])
    assert pixels.shape[1:] == (28, 28)
    # MNIST is mostly black background; inverted, mostly white
    assert np.median(pixels) == 255 and pixels.min() < 64


def test_sounds_lose_the_band_below_the_telephone_channel(sets):
    clip = next((sets / X.SOUND_SET / "test" / "0").glob("*.wav"))
    shifted, rate = soundfile.read(clip)
    original, _ = soundfile.read(mirror_root() / "fsdd" / "recordings" / clip.name)

    def low_share(x):  # the share of the spectrum's energy below 200 Hz
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / rate)
        return power[freqs < 200].sum() / power.sum()

    assert rate == X.FSDD_RATE and len(shifted) == len(original)
    assert low_share(shifted) < 0.2 * low_share(original)


def test_the_engine_loads_them_as_a_cross_domain_split(sets, tmp_path):
    from bma.config import SourceConfig
    from bma.data.sources import load_images, load_sounds

    img = load_images(SourceConfig(source="imagefolder", root=str(sets / X.IMAGE_SET)), "test", str(tmp_path))
    snd = load_sounds(SourceConfig(source="soundfolder", root=str(sets / X.SOUND_SET)), "test", str(tmp_path))
    assert img.classes == snd.classes == tuple(str(d) for d in range(10))
    assert len(img.labels) == len(snd.labels) == 30


def test_an_existing_set_is_refused(sets, capsys):
    assert X.main([str(sets), "--per-class", "5", "--sounds-per-class", "5"]) == 2
    assert "already holds files" in capsys.readouterr().err
