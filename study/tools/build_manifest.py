"""Build a manifest CSV (the `manifest` source: natively paired image + sound rows) from a folder of clips whose
frames and audio were extracted beside each other, e.g. an AudioSet or VGGSound subset.

    python study/tools/build_manifest.py CLIPS --out CLIPS/pairs.csv                      # labels from class folders
    python study/tools/build_manifest.py CLIPS --labels vggsound.csv --id-column 0 --label-column 2 \\
        --split-column 3 --out CLIPS/pairs.csv                                            # labels from a CSV

Layout read (docs/data.md, "Natively paired data"): ``CLIPS/frames/<id>.jpg|png`` and ``CLIPS/audio/<id>.wav|flac|
ogg``, where ``<id>`` is the path below frames/ and audio/ without its extension (``dog/abc_000030``; sub-folders
allowed). A clip is a row when both files exist. Its label is the ``--labels`` CSV's label for the id (its file
name, or its relative path, without extension), else the first folder of the id (``dog``). Its split is the CSV's
split column (``train``/``test``; VGGSound's ``train``/``test`` as they are) when given, else left to the manifest
source's deterministic 80/20 hash split. Paths in the manifest are relative to the manifest's folder.

Clips with a frame but no audio (or the reverse), and clips without a label, are counted and skipped, with the first
few named. Exit 2 (no traceback) when no row can be written.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SOUND_EXTENSIONS = (".wav", ".flac", ".ogg")
SPLITS = {"train": "train", "test": "test", "training": "train", "testing": "test", "eval": "test",
          "evaluation": "test"}


def _files(folder: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """{id: path}: every file under ``folder`` with one of ``extensions``; id = relative path without extension."""
    out: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() in extensions and not name.startswith("."):
                out[path.relative_to(folder).with_suffix("").as_posix()] = path
    return out


def _column(header: list[str] | None, spec: str) -> int:
    if spec.isdigit():
        return int(spec)
    if header is None or spec not in header:
        raise ValueError(f"--labels: no column {spec!r} (header: {header})")
    return header.index(spec)


def read_labels(path: Path, id_column: str, label_column: str, split_column: str | None,
                header: bool) -> dict[str, tuple[str, str | None]]:
    """{clip id: (label, split or None)} from a labels CSV (columns by name with a header, or by 0-based index)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    names = [h.strip() for h in rows[0]] if header and rows else None
    body = rows[1:] if header else rows
    ci, cl = _column(names, id_column), _column(names, label_column)
    cs = _column(names, split_column) if split_column is not None else None
    out: dict[str, tuple[str, str | None]] = {}
    for line, row in enumerate(body, start=2 if header else 1):
        if not row or not any(v.strip() for v in row):
            continue
        try:
            split = None if cs is None else SPLITS.get(row[cs].strip().lower())
            if cs is not None and split is None:
                raise ValueError(f"{path}:{line}: split {row[cs]!r}, expected train or test")
            out[row[ci].strip()] = (row[cl].strip(), split)
        except IndexError:
            raise ValueError(f"{path}:{line}: has {len(row)} columns") from None
    return out


def build_manifest(root: Path, out: Path, frames: str = "frames", audio: str = "audio",
                   labels: dict[str, tuple[str, str | None]] | None = None) -> dict[str, int | list[str]]:
    """Write the manifest; returns counts (rows, train, test, unsplit) and the skipped ids by reason."""
    image_files = _files(root / frames, IMAGE_EXTENSIONS)
    sound_files = _files(root / audio, SOUND_EXTENSIONS)
    if not image_files and not sound_files:
        raise ValueError(f"{root}: no frames under {root / frames}/ and no audio under {root / audio}/ "
                         f"(expected {frames}/<id>.jpg|png and {audio}/<id>.wav|flac|ogg)")
    rows, skipped = [], {"no audio": [], "no frame": [], "no label": []}
    for clip_id in sorted(image_files):
        if clip_id not in sound_files:
            skipped["no audio"].append(clip_id)
            continue
        label, split = None, None
        if labels is not None:
            found = labels.get(clip_id) or labels.get(Path(clip_id).name)
            if found is not None:
                label, split = found
        elif "/" in clip_id:
            label = clip_id.split("/", 1)[0]
        if not label:
            skipped["no label"].append(clip_id)
            continue
        base = out.parent.resolve()
        rows.append([os.path.relpath(image_files[clip_id].resolve(), base),
                     os.path.relpath(sound_files[clip_id].resolve(), base), label, split])
    skipped["no frame"] = sorted(set(sound_files) - set(image_files))
    if not rows:
        raise ValueError(f"{root}: no clip has a frame, an audio file and a label "
                         f"({', '.join(f'{len(v)} {k}' for k, v in skipped.items())})")
    with_split = all(r[3] is not None for r in rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image_path", "sound_path", "label"] + (["split"] if with_split else []))
        for r in rows:
            writer.writerow(r if with_split else r[:3])
    os.replace(tmp, out)
    splits = [r[3] for r in rows]
    return {"rows": len(rows), "train": splits.count("train"), "test": splits.count("test"),
            "unsplit": 0 if with_split else len(rows), **{k: v for k, v in skipped.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="folder holding frames/ and audio/")
    parser.add_argument("--out", required=True, help="manifest CSV to write (paths in it are relative to its folder)")
    parser.add_argument("--frames", default="frames", help="sub-folder of the frames (default: frames)")
    parser.add_argument("--audio", default="audio", help="sub-folder of the audio (default: audio)")
    parser.add_argument("--labels", help="CSV of clip id, label[, split] (default: labels from class folders)")
    parser.add_argument("--id-column", default="0", help="column of the clip id: a name, or a 0-based index")
    parser.add_argument("--label-column", default="1")
    parser.add_argument("--split-column", default=None, help="column of train/test (default: the hash split)")
    parser.add_argument("--no-header", action="store_true", help="the labels CSV has no header row (VGGSound's)")
    args = parser.parse_args(argv)
    root, out = Path(args.root), Path(args.out)
    try:
        labels = None
        if args.labels:
            labels = read_labels(Path(args.labels), args.id_column, args.label_column, args.split_column,
                                 header=not args.no_header)
        result = build_manifest(root, out, args.frames, args.audio, labels)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    split = (f"{result['train']} train, {result['test']} test" if not result["unsplit"]
             else "split by the manifest source's 80/20 hash")
    print(f"wrote {out}: {result['rows']} rows ({split})")
    for reason in ("no audio", "no frame", "no label"):
        ids = result[reason]
        if ids:
            print(f"skipped {len(ids)} clip(s) with {reason}: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
