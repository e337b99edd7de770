"""The shared download helper (bma.data.mirror.fetch / download_archive) against a local HTTP server.

The server (http.server in a thread, on 127.0.0.1 only) serves fixture bytes, honours ``Range`` (206 + Content-Range)
unless told not to, can cut a transfer short, and records every request's Range header and the bytes it sent, so a
test can check that a resumed download asked only for the rest. No other network is touched.
"""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bma.config import SourceConfig
from bma.data import mirror, sources
from bma.data.errors import DataError
from bma.data.sources import load_images, load_sounds

from .conftest import ESC50_HEADER, cifar_batches, write_wav

REPO = Path(__file__).resolve().parents[2]


class FileServer:
    """Serves ``files`` (path -> bytes) on 127.0.0.1; ``log`` holds (path, Range header or None, bytes sent)."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.log: list[tuple[str, str | None, int]] = []
        self.honour_range = True
        self.cut_after: int | None = None  # send only this many body bytes, then close (Content-Length stays full)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # http.server's name
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    server.log.append((self.path, self.headers.get("Range"), 0))
                    return
                start, status = 0, 200
                wanted = self.headers.get("Range")
                if wanted and server.honour_range:
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        server.log.append((self.path, wanted, 0))
                        return
                    status = 206
                payload = body[start:]
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                sent = payload if server.cut_after is None else payload[: server.cut_after]
                self.wfile.write(sent)
                server.log.append((self.path, wanted, len(sent)))

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


PAYLOAD = bytes(range(256)) * 4000  # 1,024,000 bytes: more than one 1 MiB read chunk would be a single block


def _digests(data: bytes) -> tuple[str, str]:
    return hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def test_fetch_verifies_and_renames(tmp_path):
    md5, sha = _digests(PAYLOAD)
    with FileServer({"/f.bin": PAYLOAD}) as srv:
        dest = mirror.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5, sha256=sha)
    assert dest.read_bytes() == PAYLOAD
    assert srv.log == [("/f.bin", None, len(PAYLOAD))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]  # no .part left


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path):
    with FileServer({"/f.bin": PAYLOAD}) as srv, pytest.raises(DataError) as err:
        mirror.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", sha256="0" * 64)
    msg = str(err.value)
    assert f"{srv.url}/f.bin" in msg and "expected " + "0" * 64 in msg and hashlib.sha256(PAYLOAD).hexdigest() in msg
    assert list(tmp_path.iterdir()) == []  # neither the file nor a part: the next attempt starts afresh
    with FileServer({"/f.bin": PAYLOAD}) as srv, pytest.raises(DataError, match="has md5"):
        mirror.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", "f" * 32)
    assert list(tmp_path.iterdir()) == []


def test_fetch_resumes_from_part_asking_only_for_the_rest(tmp_path):
    md5, sha = _digests(PAYLOAD)
    have = 400_000
    (tmp_path / "f.bin.part").write_bytes(PAYLOAD[:have])
    with FileServer({"/f.bin": PAYLOAD}) as srv:
        mirror.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", md5, sha256=sha)
    assert srv.log == [("/f.bin", f"bytes={have}-", len(PAYLOAD) - have)]  # only the rest travelled
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD and not (tmp_path / "f.bin.part").exists()


def test_interrupted_transfer_keeps_part_and_the_next_call_resumes(tmp_path):
    _, sha = _digests(PAYLOAD)
    with FileServer({"/f.bin": PAYLOAD}) as srv:
        srv.cut_after = 300_000
        with pytest.raises(OSError, match="resume"):
            mirror.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", sha256=sha)
        assert (tmp_path / "f.bin.part").stat().st_size == 300_000 and not (tmp_path / "f.bin").exists()
        srv.cut_after = None
        mirror.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", sha256=sha)
    assert [entry[1:] for entry in srv.log] == [(None, 300_000), ("bytes=300000-", len(PAYLOAD) - 300_000)]
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_fetch_restarts_when_the_server_ignores_range(tmp_path):
    _, sha = _digests(PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes of something else")
    with FileServer({"/f.bin": PAYLOAD}) as srv:
        srv.honour_range = False  # answers 200 with the whole file
        mirror.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", sha256=sha)
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_complete_but_corrupt_part_is_downloaded_again(tmp_path):
    """A part as long as the file (416 on resume) that fails the checksum is dropped and fetched afresh once."""
    _, sha = _digests(PAYLOAD)
    (tmp_path / "f.bin.part").write_bytes(b"x" * len(PAYLOAD))
    with FileServer({"/f.bin": PAYLOAD}) as srv:
        mirror.fetch(f"{srv.url}/f.bin", tmp_path / "f.bin", sha256=sha)
    assert [entry[1] for entry in srv.log] == [f"bytes={len(PAYLOAD)}-", None]
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD


def test_unreachable_server_leaves_no_empty_part(tmp_path):
    with FileServer({}) as srv:
        url = f"{srv.url}/missing.bin"
        with pytest.raises(OSError):
            mirror.fetch(url, tmp_path / "missing.bin")
    assert list(tmp_path.iterdir()) == []


# -- the sources' downloads, end to end ----------------------------------------------------------------------------


def _cifar_tarball(tmp_path: Path) -> bytes:
    """The official archive's layout: cifar-10-batches-py/{batches.meta, data_batch_1..5, test_batch, readme.html}."""
    folder = cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    (folder / "readme.html").write_text("<html></html>")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(folder, arcname="cifar-10-batches-py")
    return buf.getvalue()


def _esc50_zip(tmp_path: Path, top: str) -> bytes:
    rows = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{top}/README.md", "ESC-50")
        for target, category in ((0, "dog"), (5, "cat")):
            for fold in range(1, 6):
                name = f"{fold}-10{target}-A-{target}.wav"
                zf.write(write_wav(tmp_path / "src" / name, seconds=0.2), f"{top}/audio/{name}")
                rows.append([name, fold, target, category, "True", f"10{target}", "A"])
        text = io.StringIO()
        w = csv.writer(text)
        w.writerow(ESC50_HEADER)
        w.writerows(rows)
        zf.writestr(f"{top}/meta/esc50.csv", text.getvalue())
    return buf.getvalue()


@pytest.fixture
def online(tmp_path, monkeypatch):
    """Downloads allowed, an empty mirror (so nothing is found locally), a fresh cache."""
    monkeypatch.delenv("BMA_OFFLINE")
    (tmp_path / "empty-mirror").mkdir()
    monkeypatch.setenv("BMA_DATA_MIRROR", str(tmp_path / "empty-mirror"))
    return tmp_path / "cache"


def test_cifar10_downloads_the_tarball_checks_md5_and_installs(tmp_path, monkeypatch, online):
    tarball = _cifar_tarball(tmp_path)
    with FileServer({"/cifar-10-python.tar.gz": tarball}) as srv:
        monkeypatch.setattr(sources, "CIFAR10_URL", f"{srv.url}/cifar-10-python.tar.gz")
        monkeypatch.setattr(sources, "CIFAR10_MD5", hashlib.md5(tarball).hexdigest())
        train = load_images(SourceConfig("cifar10"), "train", str(online))
        test = load_images(SourceConfig("cifar10"), "test", str(online))  # found locally now: no second request
    assert len(srv.log) == 1
    assert train.images.shape == (15, 32, 32, 3) and test.images.shape == (4, 32, 32, 3)
    datasets = online / "datasets"
    assert (datasets / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert sorted(p.name for p in datasets.iterdir()) == ["cifar-10-batches-py"]  # the archive went once installed


def test_cifar10_checksum_mismatch_is_a_data_error_naming_the_url(tmp_path, monkeypatch, online):
    tarball = _cifar_tarball(tmp_path)
    with FileServer({"/c.tar.gz": tarball}) as srv:
        monkeypatch.setattr(sources, "CIFAR10_URL", f"{srv.url}/c.tar.gz")  # the real published md5 stays
        with pytest.raises(DataError) as err:
            load_images(SourceConfig("cifar10"), "train", str(online))
    msg = str(err.value)
    assert "download failed" in msg and f"{srv.url}/c.tar.gz" in msg and "c58f30108f718f92721af3b95e74349a" in msg
    assert not (online / "datasets" / "cifar-10-batches-py").exists()


def test_esc50_downloads_the_pinned_archive_checks_sha256_and_installs(tmp_path, monkeypatch, online):
    top = f"ESC-50-{sources.ESC50_COMMIT}"  # GitHub names a commit archive's folder <repo>-<sha>
    archive = _esc50_zip(tmp_path, top)
    with FileServer({"/esc50.zip": archive}) as srv:
        monkeypatch.setattr(sources, "ESC50_URL", f"{srv.url}/esc50.zip")
        monkeypatch.setattr(sources, "ESC50_SHA256", hashlib.sha256(archive).hexdigest())
        train = load_sounds(SourceConfig("esc50"), "train", str(online))
    assert train.classes == ("dog", "cat") and len(train) == 8
    assert train.paths[0].parent == (online / "datasets" / "ESC-50-master" / "audio").resolve()


def test_pinned_sources_are_the_official_ones():
    assert sources.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert sources.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"
    assert sources.ESC50_URL == f"https://github.com/karolpiczak/ESC-50/archive/{sources.ESC50_COMMIT}.zip"
    assert len(sources.ESC50_SHA256) == 64


def test_offline_message_names_the_folder_and_layout_and_the_cli_exits_2(tmp_path, monkeypatch):
    """Offline with nothing local: a DataError naming every folder looked in, the layout and where to put a copy;
    the trial CLI turns it into exit code 2 without a traceback."""
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("BMA_DATA_MIRROR", str(tmp_path / "empty"))
    cache = tmp_path / "c"
    with pytest.raises(DataError) as err:
        load_sounds(SourceConfig("esc50"), "train", str(cache))
    msg = str(err.value)
    assert "BMA_OFFLINE" in msg and "audio/*.wav and meta/esc50.csv" in msg
    assert f"To fill by hand: put that layout in {cache.resolve() / 'datasets' / 'ESC-50-master'}/" in msg
    env = {"BMA_OFFLINE": "1", "BMA_DATA_MIRROR": str(tmp_path / "empty"), "BMA_CACHE_DIR": str(cache),
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "bma.cli", "--set", "data.image.source=cifar10",
                           "--set", "data.sound.source=esc50", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "cifar-10-batches-py" in proc.stderr
    assert "To fill by hand" in proc.stderr
