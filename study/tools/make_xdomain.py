"""Write two cross-domain test sets from the MNIST + FSDD mirror, in the folder layouts the loaders read
(``root/{train,test}/<class>/``), for a dataset -> dataset run through ``eval.xdomain_*``:

    python study/tools/make_xdomain.py out/xdomain
    python study/run.py study/specs/xdomain.yaml

- ``mnist_inverted/``: MNIST's *test* digits (never in a training pool: the pools draw from MNIST's train split),
  inverted (dark strokes on white) and rotated by an angle drawn uniformly in +-30 degrees, as PNG. A shift of
  contrast polarity and pose that the training augmentation (translation) never shows.
- ``fsdd_telephone/``: FSDD's official *test* clips (index 0-4 of every speaker and digit, never in a training
  pool), band-limited to the telephone band (300-3,400 Hz, two biquad sections each way: torchaudio) and
  companded through 8-bit mu-law, as 16-bit WAV at FSDD's 8 kHz.

Each set is split by the sample's position: the first ``--train-share`` of each class go to ``train/`` (only its
statistics standardise the domain: docs/model.md, "Cross-domain validation"), the rest to ``test/``, where the
probes fitted in the training domain are scored. The classes are the digits' names ("0".."9"), as the training
sources name them. Deterministic: the same mirror and seed give the same files. An existing, non-empty output set is
refused (exit 2) rather than mixed with new files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bma.data.mirror import mirror_root  # noqa: E402
from bma.data.sources import _idx_file, read_idx  # noqa: E402

IMAGE_SET, SOUND_SET = "mnist_inverted", "fsdd_telephone"
FSDD_RATE = 8000


def _split_of(position: int, count: int, train_share: float) -> str:
    return "train" if position < round(train_share * count) else "test"


def write_images(mnist_raw: Path, out: Path, per_class: int, train_share: float, seed: int) -> int:
    from PIL import Image

    images = read_idx(_idx_file(mnist_raw, "t10k-images-idx3-ubyte"), 3)
    labels = read_idx(_idx_file(mnist_raw, "t10k-labels-idx1-ubyte"), 1)
    rng = np.random.default_rng(seed)
    written = 0
    for digit in range(10):
        rows = np.flatnonzero(labels == digit)[:per_class]
        angles = rng.uniform(-30.0, 30.0, len(rows))
        for position, (row, angle) in enumerate(zip(rows, angles, strict=True)):
            folder = out / _split_of(position, len(rows), train_share) / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            inverted = Image.fromarray(255 - images[row])
            # rotate about the centre, the corners filled with the (now white) background
            inverted.rotate(float(angle), resample=Image.BILINEAR, fillcolor=255).save(folder / f"{row:05d}.png")
            written += 1
    return written


def write_sounds(fsdd_recordings: Path, out: Path, train_share: float, per_class: int | None = None) -> int:
    import soundfile
    import torch
    import torchaudio.functional as AF

    written = 0
    for digit in range(10):
        # FSDD's official test split: take index 0-4 ({digit}_{speaker}_{index}.wav)
        clips = sorted(p for p in fsdd_recordings.glob(f"{digit}_*_*.wav") if int(p.stem.rsplit("_", 1)[1]) < 5)
        clips = clips[:per_class] if per_class else clips
        if not clips:
            raise SystemExit(f"error: {fsdd_recordings}: no test clips of digit {digit} ({digit}_<speaker>_<0-4>.wav)")
        for position, clip in enumerate(clips):
            audio, rate = soundfile.read(clip, dtype="float32")
            if rate != FSDD_RATE:
                raise SystemExit(f"error: {clip}: expected FSDD's {FSDD_RATE} Hz, got {rate}")
            x = torch.from_numpy(np.atleast_2d(audio.T if audio.ndim > 1 else audio).mean(0, keepdims=True))
            for _ in range(2):
                x = AF.lowpass_biquad(AF.highpass_biquad(x, rate, 300.0), rate, 3400.0)
            x = x / x.abs().max().clamp_min(1e-6) * 0.9
            x = AF.mu_law_decoding(AF.mu_law_encoding(x, 256), 256)
            folder = out / _split_of(position, len(clips), train_share) / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            soundfile.write(folder / clip.name, x[0].numpy(), rate, subtype="PCM_16")
            written += 1
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="folder to write mnist_inverted/ and fsdd_telephone/ into")
    p.add_argument("--mirror", type=Path, default=None, help="data mirror (default: $BMA_DATA_MIRROR or ../shared/data)")
    p.add_argument("--per-class", type=int, default=300, help="MNIST test digits per class (default 300)")
    p.add_argument("--sounds-per-class", type=int, default=None,
                   help="FSDD test clips per digit (default: all 30, 6 speakers x 5)")
    p.add_argument("--train-share", type=float, default=0.4, help="share of each class in train/ (default 0.4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the rotation angles")
    args = p.parse_args(argv)
    if not 0 < args.train_share < 1 or args.per_class < 2 or (args.sounds_per_class or 2) < 2:
        print("error: --train-share: expected a fraction in (0, 1); --per-class, --sounds-per-class: expected >= 2",
              file=sys.stderr)
        return 2
    mirror = args.mirror or mirror_root()
    mnist_raw, fsdd = (mirror / "MNIST" / "raw", mirror / "fsdd" / "recordings") if mirror else (None, None)
    if mirror is None or _idx_file(mnist_raw, "t10k-images-idx3-ubyte") is None or not fsdd.is_dir():
        print(f"error: {mirror}: expected a data mirror with MNIST/raw/t10k-*-idx*-ubyte[.gz] and fsdd/recordings/ "
              "(docs/data.md); pass --mirror", file=sys.stderr)
        return 2
    for name in (IMAGE_SET, SOUND_SET):
        target = args.out / name
        if target.exists() and any(target.iterdir()):
            print(f"error: {target}: already holds files; remove it or choose another folder", file=sys.stderr)
            return 2
    n_img = write_images(mnist_raw, args.out / IMAGE_SET, args.per_class, args.train_share, args.seed)
    n_snd = write_sounds(fsdd, args.out / SOUND_SET, args.train_share, args.sounds_per_class)
    print(f"{args.out / IMAGE_SET}: {n_img} images; {args.out / SOUND_SET}: {n_snd} clips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
