"""study/storage.py: the spec's fingerprint and --fresh's setting aside work whatever --storage names: a local
folder, a file:// URI, and an S3-compatible server (moto's, on 127.0.0.1). What the module wrote is checked with
other means than pyarrow (the filesystem itself, boto3), and the S3 spelling is checked against Ray Tune's own
reading of it (Tuner.can_restore).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path

import pytest

from study import storage as st

MOTO_SKIP = "needs moto[server] and boto3 (pip install 'moto[server]') for the S3-compatible test server"
BUCKET = "bma-test"


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a free port), one bucket, and fake AWS credentials in the environment;
    yields (endpoint 'HOST:PORT', boto3 client)."""
    try:
        import boto3
        from moto.server import ThreadedMotoServer
    except ImportError:
        pytest.skip(MOTO_SKIP)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE"):
            mp.delenv(key, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1")
            client.create_bucket(Bucket=BUCKET)
            yield f"{host}:{port}", client
        finally:
            server.stop()


class Location:
    """One --storage under test, and a way to see its files that does not go through study/storage.py."""

    def __init__(self, kind: str, tmp_path: Path, s3=None):
        self.kind = kind
        prefix = f"results-{uuid.uuid4().hex[:8]}"
        if kind == "local":
            self.root = tmp_path / prefix
            self.storage = str(self.root)
        elif kind == "file":
            self.root = tmp_path / prefix
            self.storage = f"file://{self.root}"
        else:
            endpoint, self.client = s3
            self.prefix = prefix
            self.storage = f"s3://{BUCKET}/{prefix}?endpoint_override={endpoint}&scheme=http"

    def files(self) -> dict[str, bytes]:
        """Every file under the storage: {path relative to it: content}."""
        if self.kind == "s3":
            out = {}
            listing = self.client.list_objects_v2(Bucket=BUCKET, Prefix=self.prefix + "/")
            for obj in listing.get("Contents", []):
                if obj["Key"].endswith("/"):  # a folder marker, not a file
                    continue
                body = self.client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
                out[obj["Key"][len(self.prefix) + 1:]] = body
            return out
        if not self.root.exists():
            return {}
        return {p.relative_to(self.root).as_posix(): p.read_bytes() for p in self.root.rglob("*") if p.is_file()}

    def put(self, relative: str, data: bytes) -> None:
        if self.kind == "s3":
            self.client.put_object(Bucket=BUCKET, Key=f"{self.prefix}/{relative}", Body=data)
        else:
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


@pytest.fixture(params=["local", "file", "s3"])
def where(request, tmp_path) -> Location:
    s3 = request.getfixturevalue("s3_server") if request.param == "s3" else None
    return Location(request.param, tmp_path, s3)


# -- the fingerprint ------------------------------------------------------------------------------------------------


def test_fingerprint_round_trip(where):
    assert st.saved_fingerprint(where.storage, "study") is None
    assert not st.exists(where.storage, "study")
    st.write_fingerprint(where.storage, "study", "0123456789ab")
    assert where.files() == {"study/bma_fingerprint.txt": b"0123456789ab"}  # no temporary file left behind
    assert st.exists(where.storage, "study")
    assert st.saved_fingerprint(where.storage, "study") == "0123456789ab"
    assert st.saved_fingerprint(where.storage, "other") is None
    st.write_fingerprint(where.storage, "study", "ba9876543210")  # written over, still one file
    assert where.files() == {"study/bma_fingerprint.txt": b"ba9876543210"}
    assert st.saved_fingerprint(where.storage, "study") == "ba9876543210"


def test_a_different_fingerprint_is_detected(where):
    """What run.py compares: a fingerprint saved by an earlier version of the spec differs from the new one (the
    file as the driver writes it, or with a trailing newline from an editor)."""
    where.put("v/bma_fingerprint.txt", b"000000000000\n")
    where.put("v/trial_0/result.json", b"{}")
    saved = st.saved_fingerprint(where.storage, "v")
    assert saved == "000000000000"
    assert saved != "dd14b3e0de92"
    st.write_fingerprint(where.storage, "v", "dd14b3e0de92")
    assert st.saved_fingerprint(where.storage, "v") == "dd14b3e0de92"
    assert where.files()["v/trial_0/result.json"] == b"{}"  # the rest of the folder untouched


def test_a_folder_without_fingerprint_has_none(where):
    where.put("old/trial_0/result.json", b"{}")
    assert st.exists(where.storage, "old")
    assert st.saved_fingerprint(where.storage, "old") is None


# -- --fresh: set aside ---------------------------------------------------------------------------------------------


def test_set_aside_moves_everything(where, monkeypatch):
    monkeypatch.setattr(st, "_stamp", lambda: "20260102-030405")
    study = {"s/bma_fingerprint.txt": b"0123456789ab", "s/tuner.pkl": b"\x80\x04state",
             "s/trial_0/result.json": b'{"acc": 1}', "s/trial_0/checkpoint_000001/model.pt": b"\x00" * 2048}
    for relative, data in {**study, "s2/keep.txt": b"another study"}.items():
        where.put(relative, data)
    said = []
    assert st.set_aside(where.storage, "s", say=said.append) is None
    moved = {relative.replace("s/", "s.old-20260102-030405/", 1): data for relative, data in study.items()}
    assert where.files() == {**moved, "s2/keep.txt": b"another study"}
    assert not st.exists(where.storage, "s")
    assert st.saved_fingerprint(where.storage, "s") is None
    aside = (str(Path(where.storage) / "s.old-20260102-030405") if where.kind == "local"
             else st.experiment_path(where.storage, "s.old-20260102-030405"))
    assert said == [f"--fresh: earlier results moved to {aside}"]


def test_set_aside_twice_in_one_second_keeps_both(where, monkeypatch):
    monkeypatch.setattr(st, "_stamp", lambda: "20260102-030405")
    where.put("s/a.txt", b"first")
    assert st.set_aside(where.storage, "s", say=lambda line: None) is None
    where.put("s/a.txt", b"second")
    said = []
    assert st.set_aside(where.storage, "s", say=said.append) is None
    assert where.files() == {"s.old-20260102-030405/a.txt": b"first", "s.old-20260102-030405-2/a.txt": b"second"}
    assert said[0].endswith("s.old-20260102-030405-2" + ("" if where.kind != "s3" else where.storage[where.storage.index("?"):]))


def test_set_aside_with_nothing_there_does_nothing(where):
    said = []
    assert st.set_aside(where.storage, "never-ran", say=said.append) is None
    assert said == [] and where.files() == {}


def test_local_set_aside_failure_is_a_problem_line(tmp_path, monkeypatch):
    where = Location("local", tmp_path)
    where.put("s/a.txt", b"x")

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(st.shutil, "move", refuse)
    problem = st.set_aside(where.storage, "s", say=lambda line: pytest.fail(line))
    assert problem == f"--fresh: cannot move {Path(where.storage) / 's'} aside (Permission denied)"
    assert where.files() == {"s/a.txt": b"x"}


# -- what cannot be opened ------------------------------------------------------------------------------------------


def test_an_unknown_scheme_gives_a_clear_error():
    with pytest.raises(st.StorageError) as info:
        st.study_location("foo://bucket/results", "s")
    message = str(info.value)
    assert message.startswith("--storage foo://bucket/results: cannot open it")
    assert "Unrecognized filesystem type" in message
    assert "expected a folder, file:///PATH, s3://BUCKET/PATH or gs://BUCKET/PATH" in message
    with pytest.raises(st.StorageError, match="^--storage foo://bucket/results: cannot open it"):
        st.saved_fingerprint("foo://bucket/results", "s")
    with pytest.raises(st.StorageError, match="^--storage foo://bucket/results: cannot open it"):
        st.write_fingerprint("foo://bucket/results", "s", "0123456789ab")
    assert st.set_aside("foo://bucket/results", "s", say=pytest.fail) == f"--fresh: {message}"
    assert st.storage_problem("foo://bucket/results") == message


def test_a_malformed_s3_uri_names_the_query():
    with pytest.raises(st.StorageError, match="Unexpected query parameter in S3 URI: 'endpoint'"):
        st.study_location("s3://bucket/x?endpoint=127.0.0.1:9000", "s")


def test_a_secret_in_the_uri_is_not_shown():
    assert st.shown("s3://KEY:SECRET@bucket/x?scheme=http") == "s3://KEY:***@bucket/x?scheme=http"
    with pytest.raises(st.StorageError) as info:
        st.study_location("s3://KEY:SECRET@bucket/x?bogus=1", "s")
    assert "SECRET" not in str(info.value) and "s3://KEY:***@bucket/x?bogus=1" in str(info.value)


def test_a_write_that_fails_names_storage_and_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    with pytest.raises(st.StorageError) as info:
        st.write_fingerprint(str(blocker), "s", "0123456789ab")
    assert str(info.value).startswith(f"--storage {blocker}: cannot write {blocker / 's' / 'bma_fingerprint.txt'} (")
    assert blocker.read_text() == "in the way"


def test_storage_problem_finds_a_missing_bucket_and_a_silent_server(s3_server):
    endpoint, _ = s3_server
    assert st.storage_problem(f"s3://{BUCKET}/r?endpoint_override={endpoint}&scheme=http") is None
    missing = f"s3://no-such-bucket/r?endpoint_override={endpoint}&scheme=http"
    assert st.storage_problem(missing) == (f"--storage {missing}: no bucket 'no-such-bucket' there; create it, "
                                           "or name another bucket")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    silent = f"s3://{BUCKET}/r?endpoint_override=127.0.0.1:{closed}&scheme=http"
    problem = st.storage_problem(silent)
    assert problem is not None and problem.startswith(f"--storage {silent}: cannot reach the store (")
    assert st.storage_problem(str(Path(os.sep) / "anything")) is None  # local folders: run.py's unwritable()


# -- the same spelling as Ray Tune ----------------------------------------------------------------------------------


def test_experiment_path_keeps_the_query():
    assert st.experiment_path("/r/results", "s") == "/r/results/s"
    assert st.experiment_path("file:///r/results/", "s") == "file:///r/results/s"
    assert st.experiment_path("s3://b", "s") == "s3://b/s"
    assert (st.experiment_path("s3://b/r?endpoint_override=127.0.0.1:9000&scheme=http", "s")
            == "s3://b/r/s?endpoint_override=127.0.0.1:9000&scheme=http")


def test_ray_tune_reads_the_same_location(where):
    """Tune's storage_path takes the same string as --storage, and Tuner.can_restore the study's experiment_path:
    a tuner.pkl written through study_location is the one Tune finds."""
    from ray.air._internal.uri_utils import URI
    from ray.tune import Tuner

    fs, path = st.study_location(where.storage, "s")
    assert not Tuner.can_restore(st.experiment_path(where.storage, "s"))
    if fs.type_name == "local":
        fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/tuner.pkl") as f:
        f.write(b"state")
    assert Tuner.can_restore(st.experiment_path(where.storage, "s"))
    assert not Tuner.can_restore(st.experiment_path(where.storage, "t"))
    if where.kind != "local":  # Ray's own URI joining (Tuner.restore's storage_path and name) agrees
        assert str(URI(where.storage) / "s") == st.experiment_path(where.storage, "s")
        assert str(URI(st.experiment_path(where.storage, "s")).parent) == where.storage
