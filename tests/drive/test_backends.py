"""Conformance suite of the drive backends: each test in the first part runs against LocalDrive and S3Drive
(a real SeaweedFS), then each backend's own guarantees (hints and symlinks locally, prefixes in S3)."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest

from apps.drive import backends
from apps.drive.backends import (
    DRIVE_KEY_MAX_BYTES,
    DRIVE_SEGMENT_MAX_BYTES,
    HINT_RACY_WINDOW_NS,
    LOCAL_TEMP_PREFIX,
    S3_CONNECT_TIMEOUT_S,
    S3_MAX_ATTEMPTS,
    S3_READ_TIMEOUT_S,
    DriveBackend,
    DriveEntry,
    DriveKeyError,
    DriveObjectTooLarge,
    DriveUnavailable,
    LocalDrive,
    S3Drive,
    drive_key_validate,
    drive_outage_reason,
)
from tests.drive.conftest import s3_drive_new


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def listing(drive: DriveBackend, prefix: str = "") -> dict[str, tuple[str, int]]:
    return {entry.key: (entry.etag, entry.size) for entry in drive.list(prefix)}


# --- both backends ---------------------------------------------------------------------------------------


def test_write_returns_md5_etag_and_read_returns_the_bytes(drive_backend):
    data = b"TALK 'hello'\n"
    etag = drive_backend.write("demo.gbai/demo.gbdialog/start.bas", data)
    assert etag == md5(data)
    assert drive_backend.read("demo.gbai/demo.gbdialog/start.bas") == data
    assert drive_backend.exists("demo.gbai/demo.gbdialog/start.bas")


def test_list_returns_every_object_recursively_with_md5_etags_and_sizes(drive_backend):
    files = {
        "demo.gbai/demo.gbot/config.csv": b"name,value\n",
        "demo.gbai/demo.gbdialog/start.bas": b"TALK 'hi'\n",
        "demo.gbai/demo.gbkb/docs/deep/manual.txt": b"x" * 70_000,
        "demo.gbai/demo.gbkb/empty.txt": b"",
        "other.gbai/other.gbot/config.csv": "nome,valor\nsaudação,olá\n".encode(),
    }
    for key, data in files.items():
        drive_backend.write(key, data)
    entries = list(drive_backend.list())
    assert all(isinstance(entry, DriveEntry) for entry in entries)
    assert {entry.key: (entry.etag, entry.size) for entry in entries} == {
        key: (md5(data), len(data)) for key, data in files.items()
    }
    assert all(entry.mtime_ns is None or entry.mtime_ns > 0 for entry in entries)


def test_list_of_a_sub_prefix_returns_only_objects_in_that_folder(drive_backend):
    drive_backend.write("demo.gbai/demo.gbkb/a.txt", b"a")
    drive_backend.write("demo.gbai/demo.gbkb/sub/b.txt", b"b")
    drive_backend.write("demo.gbai/demo.gbdialog/start.bas", b"s")
    # A sibling whose name starts with the prefix is a different folder.
    drive_backend.write("demo.gbai/demo.gbkb2/c.txt", b"c")
    expected = {"demo.gbai/demo.gbkb/a.txt", "demo.gbai/demo.gbkb/sub/b.txt"}
    assert set(listing(drive_backend, "demo.gbai/demo.gbkb")) == expected
    assert set(listing(drive_backend, "demo.gbai/demo.gbkb/")) == expected
    assert set(listing(drive_backend, "demo.gbai/demo.gbkb/sub")) == {"demo.gbai/demo.gbkb/sub/b.txt"}


def test_list_of_an_empty_drive_or_missing_folder_is_empty(drive_backend):
    assert list(drive_backend.list()) == []
    drive_backend.write("demo.gbai/x.txt", b"x")
    assert list(drive_backend.list("nothing.gbai")) == []
    # A prefix naming an object, not a folder, has nothing under it.
    assert list(drive_backend.list("demo.gbai/x.txt")) == []


def test_write_replaces_the_object_and_its_etag(drive_backend):
    first = drive_backend.write("demo.gbai/demo.gbot/config.csv", b"name,value\na,1\n")
    second = drive_backend.write("demo.gbai/demo.gbot/config.csv", b"name,value\na,2\n")
    assert first != second == md5(b"name,value\na,2\n")
    assert drive_backend.read("demo.gbai/demo.gbot/config.csv") == b"name,value\na,2\n"
    assert listing(drive_backend) == {"demo.gbai/demo.gbot/config.csv": (second, 15)}


def test_read_of_a_missing_key_raises_file_not_found(drive_backend):
    with pytest.raises(FileNotFoundError):
        drive_backend.read("demo.gbai/missing.txt")
    drive_backend.write("demo.gbai/folder/x.txt", b"x")
    # A folder is not an object either.
    with pytest.raises(FileNotFoundError):
        drive_backend.read("demo.gbai/folder")
    assert not drive_backend.exists("demo.gbai/missing.txt")
    assert not drive_backend.exists("demo.gbai/folder")


def test_delete_removes_the_object_and_deleting_a_missing_one_is_fine(drive_backend):
    drive_backend.write("demo.gbai/a.txt", b"a")
    drive_backend.write("demo.gbai/b.txt", b"b")
    drive_backend.delete("demo.gbai/a.txt")
    drive_backend.delete("demo.gbai/a.txt")
    drive_backend.delete("never/was.txt")
    assert not drive_backend.exists("demo.gbai/a.txt")
    assert set(listing(drive_backend)) == {"demo.gbai/b.txt"}


def test_delete_prefix_removes_only_that_folder_and_counts_objects(drive_backend):
    for key in ("demo.gbai/kb/a.txt", "demo.gbai/kb/deep/b.txt", "demo.gbai/kb/deep/er/c.txt"):
        drive_backend.write(key, b"data")
    drive_backend.write("demo.gbai/kb2/keep.txt", b"keep")
    drive_backend.write("demo.gbai/keep.txt", b"keep")
    assert drive_backend.delete_prefix("demo.gbai/kb") == 3
    assert set(listing(drive_backend)) == {"demo.gbai/kb2/keep.txt", "demo.gbai/keep.txt"}
    assert drive_backend.delete_prefix("demo.gbai/kb/") == 0
    assert drive_backend.delete_prefix("missing.gbai") == 0


def test_delete_prefix_refuses_an_empty_prefix(drive_backend):
    drive_backend.write("demo.gbai/a.txt", b"a")
    with pytest.raises(DriveKeyError):
        drive_backend.delete_prefix("")
    assert set(listing(drive_backend)) == {"demo.gbai/a.txt"}


BAD_KEYS = {
    "empty": "",
    "absolute": "/etc/passwd",
    "parent": "../other-tenant/x.txt",
    "parent-inside": "demo.gbai/../../x.txt",
    "parent-last": "demo.gbai/..",
    "parent-only": "..",
    "dot": "demo.gbai/./x.txt",
    "backslash": "demo.gbai\\x.txt",
    "backslash-parent": "..\\x.txt",
    "nul": "demo.gbai/x\x00.txt",
    "newline": "demo.gbai/x\n.txt",
    "del": "demo.gbai/x\x7f.txt",
    "c1-control": "demo.gbai/x\x85.txt",
    "double-slash": "demo.gbai//x.txt",
    "trailing-slash": "demo.gbai/",
    "lone-surrogate": "demo.gbai/x\udcff.txt",
    "too-long": "k/" * (DRIVE_KEY_MAX_BYTES // 2) + "x",
    "segment-too-long": "demo.gbai/" + "s" * (DRIVE_SEGMENT_MAX_BYTES + 1),
}
# A trailing '/' is how a folder prefix is written, and "" lists everything: both fine for prefixes.
PREFIX_ALLOWED = {"empty", "trailing-slash"}


@pytest.mark.parametrize("name", BAD_KEYS)
def test_every_method_refuses_a_bad_key(drive_backend, name):
    key = BAD_KEYS[name]
    with pytest.raises(DriveKeyError):
        drive_key_validate(key)
    with pytest.raises(DriveKeyError):
        drive_backend.read(key)
    with pytest.raises(DriveKeyError):
        drive_backend.write(key, b"escaped")
    with pytest.raises(DriveKeyError):
        drive_backend.delete(key)
    with pytest.raises(DriveKeyError):
        drive_backend.exists(key)
    if name not in PREFIX_ALLOWED:
        with pytest.raises(DriveKeyError):
            drive_backend.list(key)
        with pytest.raises(DriveKeyError):
            drive_backend.delete_prefix(key)
    assert list(drive_backend.list()) == []


def test_drive_key_error_is_a_value_error():
    assert issubclass(DriveKeyError, ValueError)


@pytest.mark.parametrize(
    "key",
    ["a", "demo.gbai/demo.gbot/config.csv", "...", ".hidden", "a b/ç ã.txt", "k/" * 200 + "x", "s" * 255],
)
def test_drive_key_validate_returns_ordinary_keys_unchanged(key):
    assert drive_key_validate(key) == key


def test_two_drives_never_see_each_others_objects(drive_backend, drive_neighbour):
    # Same key in both, with a canary in each: reading the wrong tenant returns the other canary.
    drive_backend.write("demo.gbai/demo.gbot/config.csv", b"canary-alpha")
    drive_neighbour.write("demo.gbai/demo.gbot/config.csv", b"canary-bravo")
    drive_neighbour.write("demo.gbai/only-neighbour.txt", b"canary-bravo")
    assert drive_backend.read("demo.gbai/demo.gbot/config.csv") == b"canary-alpha"
    assert drive_neighbour.read("demo.gbai/demo.gbot/config.csv") == b"canary-bravo"
    assert set(listing(drive_backend)) == {"demo.gbai/demo.gbot/config.csv"}
    assert not drive_backend.exists("demo.gbai/only-neighbour.txt")
    with pytest.raises(FileNotFoundError):
        drive_backend.read("demo.gbai/only-neighbour.txt")
    assert drive_backend.delete_prefix("demo.gbai") == 1
    drive_backend.delete("demo.gbai/only-neighbour.txt")
    assert set(listing(drive_neighbour)) == {"demo.gbai/demo.gbot/config.csv", "demo.gbai/only-neighbour.txt"}


# --- LocalDrive ------------------------------------------------------------------------------------------


@pytest.fixture
def local_drive(tmp_path: Path) -> LocalDrive:
    return LocalDrive(tmp_path / "tenant")


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file LocalDrive hashes, in order (the module's hashing function, wrapped)."""
    calls: list[Path] = []
    real = backends._file_md5

    def counting(path: Path) -> str:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(backends, "_file_md5", counting)
    return calls


def _age(path: Path, seconds: int = 60) -> int:
    """Set a file's mtime `seconds` in the past (outside the racy window); returns the new mtime_ns."""
    mtime_ns = time.time_ns() - seconds * 1_000_000_000
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return mtime_ns


def test_local_root_is_created_on_first_write(tmp_path):
    drive = LocalDrive(tmp_path / "not" / "yet")
    assert list(drive.list()) == []
    drive.write("a.txt", b"a")
    assert (tmp_path / "not" / "yet" / "a.txt").read_bytes() == b"a"


def test_local_root_reached_through_a_link_works(tmp_path):
    # MEDIA_ROOT is often a link to a data disk: only links *inside* the root are refused.
    (tmp_path / "disk").mkdir()
    (tmp_path / "media").symlink_to(tmp_path / "disk", target_is_directory=True)
    drive = LocalDrive(tmp_path / "media")
    drive.write("demo.gbai/a.txt", b"a")
    assert drive.read("demo.gbai/a.txt") == b"a"
    assert set(listing(drive)) == {"demo.gbai/a.txt"}
    assert (tmp_path / "disk" / "demo.gbai" / "a.txt").exists()


def test_local_unchanged_file_listed_with_a_hint_is_not_read(local_drive, hash_calls):
    local_drive.write("demo.gbai/kb/doc.txt", b"document")
    mtime_ns = _age(local_drive.root / "demo.gbai/kb/doc.txt")
    [entry] = local_drive.list()
    assert entry == DriveEntry("demo.gbai/kb/doc.txt", md5(b"document"), 8, mtime_ns)
    assert len(hash_calls) == 1

    hash_calls.clear()
    # The hinted etag is deliberately not the real MD5: getting it back proves the file was not hashed.
    hints = {"demo.gbai/kb/doc.txt": (8, mtime_ns, "etag-from-last-scan")}
    [entry] = local_drive.list(etag_hints=hints)
    assert entry.etag == "etag-from-last-scan"
    assert hash_calls == []


def test_local_file_changed_with_same_size_and_new_mtime_is_hashed_again(local_drive, hash_calls):
    path = local_drive.root / "demo.gbai/kb/doc.txt"
    local_drive.write("demo.gbai/kb/doc.txt", b"version-1")
    old_mtime = _age(path, seconds=120)
    hints = {"demo.gbai/kb/doc.txt": (9, old_mtime, md5(b"version-1"))}
    path.write_bytes(b"version-2")  # same size
    new_mtime = _age(path, seconds=60)
    hash_calls.clear()
    [entry] = local_drive.list(etag_hints=hints)
    assert (entry.etag, entry.size, entry.mtime_ns) == (md5(b"version-2"), 9, new_mtime)
    assert hash_calls == [path]


def test_local_hint_is_not_trusted_for_a_file_modified_within_the_racy_window(local_drive, hash_calls):
    local_drive.write("demo.gbai/kb/doc.txt", b"fresh")
    st = (local_drive.root / "demo.gbai/kb/doc.txt").stat()
    assert time.time_ns() - st.st_mtime_ns < HINT_RACY_WINDOW_NS
    hash_calls.clear()
    [entry] = local_drive.list(etag_hints={"demo.gbai/kb/doc.txt": (5, st.st_mtime_ns, "stale")})
    assert entry.etag == md5(b"fresh")
    assert len(hash_calls) == 1


def test_local_file_hashed_within_the_racy_window_is_listed_as_not_hintable(local_drive):
    """Its (size, mtime) stored as a hint matched a same-size rewrite in the same mtime tick forever after."""
    path = local_drive.root / "demo.gbai/kb/doc.txt"
    local_drive.write("demo.gbai/kb/doc.txt", b"fresh")
    racy_mtime = time.time_ns() - HINT_RACY_WINDOW_NS // 2
    os.utime(path, ns=(racy_mtime, racy_mtime))
    [entry] = local_drive.list()
    assert (entry.mtime_ns, entry.hintable) == (racy_mtime, False)
    _age(path)
    [entry] = local_drive.list()
    assert entry.hintable


def test_local_hints_keep_a_scan_of_many_unchanged_files_free_of_reads(local_drive, hash_calls):
    for i in range(300):
        local_drive.write(f"demo.gbai/kb/{i % 7}/doc-{i}.txt", f"document {i}".encode())
    for path in (local_drive.root / "demo.gbai").rglob("*.txt"):
        _age(path)
    first = list(local_drive.list())
    hints = {entry.key: (entry.size, entry.mtime_ns, entry.etag) for entry in first}
    hash_calls.clear()
    second = list(local_drive.list(etag_hints=hints))
    assert hash_calls == []
    assert sorted(second, key=lambda e: e.key) == sorted(first, key=lambda e: e.key)


def test_local_symlinks_inside_the_root_are_not_listed_and_not_followed(local_drive, tmp_path):
    outside = tmp_path / "other-tenant"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"canary-bravo")
    local_drive.write("demo.gbai/own.txt", b"own")
    (local_drive.root / "demo.gbai/link.txt").symlink_to(outside / "secret.txt")
    (local_drive.root / "demo.gbai/linkdir").symlink_to(outside, target_is_directory=True)

    assert set(listing(local_drive)) == {"demo.gbai/own.txt"}
    for key in ("demo.gbai/link.txt", "demo.gbai/linkdir/secret.txt"):
        with pytest.raises(DriveKeyError):
            local_drive.read(key)
        with pytest.raises(DriveKeyError):
            local_drive.write(key, b"overwritten")
        with pytest.raises(DriveKeyError):
            local_drive.delete(key)
    with pytest.raises(DriveKeyError):
        local_drive.list("demo.gbai/linkdir")
    with pytest.raises(DriveKeyError):
        local_drive.delete_prefix("demo.gbai/linkdir")
    with pytest.raises(DriveKeyError):
        local_drive.write("demo.gbai/linkdir/new.txt", b"planted")
    assert (outside / "secret.txt").read_bytes() == b"canary-bravo"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_local_delete_prefix_removes_links_but_never_their_targets(local_drive, tmp_path):
    outside = tmp_path / "other-tenant"
    outside.mkdir()
    (outside / "secret.txt").write_bytes(b"canary-bravo")
    local_drive.write("demo.gbai/kb/doc.txt", b"doc")
    (local_drive.root / "demo.gbai/kb/linkdir").symlink_to(outside, target_is_directory=True)
    assert local_drive.delete_prefix("demo.gbai") == 1
    assert (outside / "secret.txt").read_bytes() == b"canary-bravo"
    assert not (local_drive.root / "demo.gbai").exists()


def test_local_write_is_atomic_and_leaves_no_temporary_file(local_drive, monkeypatch):
    local_drive.write("demo.gbai/doc.txt", b"old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(backends.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        local_drive.write("demo.gbai/doc.txt", b"new content")
    monkeypatch.undo()
    assert local_drive.read("demo.gbai/doc.txt") == b"old"
    assert sorted(p.name for p in (local_drive.root / "demo.gbai").iterdir()) == ["doc.txt"]


def test_local_write_replaces_a_tree_of_empty_folders_but_not_a_folder_holding_a_file(local_drive):
    """Deletes leave their folders: `theme/css/` stayed after `theme/css/main.css` went, and writing `theme` (a
    deploy putting its previous file back) failed with IsADirectoryError."""
    local_drive.write("s.gbot/theme/css/main.css", b"body {}")
    local_drive.delete("s.gbot/theme/css/main.css")
    local_drive.write("s.gbot/theme", b"old theme")
    assert local_drive.read("s.gbot/theme") == b"old theme"
    local_drive.delete("s.gbot/theme")
    local_drive.write("s.gbot/theme/css/main.css", b"body {}")
    local_drive.write("s.gbot/theme/js/keep.js", b"x")
    local_drive.delete("s.gbot/theme/css/main.css")
    with pytest.raises(IsADirectoryError):
        local_drive.write("s.gbot/theme", b"old theme")
    assert local_drive.read("s.gbot/theme/js/keep.js") == b"x"


def test_local_listing_skips_temporary_files_of_writes_in_flight(local_drive):
    local_drive.write("demo.gbai/doc.txt", b"doc")
    (local_drive.root / "demo.gbai" / f"{LOCAL_TEMP_PREFIX}abc").write_bytes(b"half")
    assert set(listing(local_drive)) == {"demo.gbai/doc.txt"}


def test_local_listing_skips_names_that_are_not_valid_keys(local_drive):
    local_drive.write("demo.gbai/doc.txt", b"doc")
    (local_drive.root / "demo.gbai" / "back\\slash.txt").write_bytes(b"x")
    assert set(listing(local_drive)) == {"demo.gbai/doc.txt"}


# --- S3Drive ---------------------------------------------------------------------------------------------


@pytest.fixture
def s3_drive(s3_server) -> S3Drive:
    return s3_drive_new(s3_server, prefix=f"tenants/t-{uuid.uuid4().hex[:12]}")


def test_s3_objects_outside_the_prefix_and_folder_markers_are_not_listed(s3_drive, s3_client):
    s3_drive.write("demo.gbai/own.txt", b"own")
    bucket, prefix = s3_drive.bucket_name, s3_drive.prefix
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}0/demo.gbai/neighbour.txt", Body=b"canary-bravo")
    s3_client.put_object(Bucket=bucket, Key="demo.gbai/bucket-root.txt", Body=b"canary-bravo")
    s3_client.put_object(Bucket=bucket, Key="tenants/other/demo.gbai/x.txt", Body=b"canary-bravo")
    s3_client.put_object(Bucket=bucket, Key=f"{prefix}/demo.gbai/folder/", Body=b"")
    assert listing(s3_drive) == {"demo.gbai/own.txt": (md5(b"own"), 3)}
    assert not s3_drive.exists("demo.gbai/neighbour.txt")


def test_s3_listing_reports_the_stored_etag_and_modification_time(s3_drive, s3_client):
    etag = s3_drive.write("demo.gbai/doc.txt", b"doc")
    head = s3_client.head_object(Bucket=s3_drive.bucket_name, Key=f"{s3_drive.prefix}/demo.gbai/doc.txt")
    assert etag == head["ETag"].strip('"') == md5(b"doc")
    [entry] = s3_drive.list()
    assert entry.etag == etag
    assert entry.mtime_ns == int(head["LastModified"].timestamp()) * 1_000_000_000


def test_s3_delete_prefix_works_in_batches(s3_drive, monkeypatch):
    monkeypatch.setattr(backends, "S3_DELETE_BATCH", 3)
    for i in range(8):
        s3_drive.write(f"demo.gbai/kb/{i}.txt", b"x")
    s3_drive.write("demo.gbai/keep.txt", b"k")
    assert s3_drive.delete_prefix("demo.gbai/kb") == 8
    assert set(listing(s3_drive)) == {"demo.gbai/keep.txt"}


def test_s3_drive_creates_a_missing_bucket_on_first_use(s3_server, s3_client):
    bucket = f"new-{uuid.uuid4().hex[:12]}"
    drive = s3_drive_new(s3_server, prefix="tenants/t1", bucket=bucket)
    assert list(drive.list()) == []
    drive.write("a.txt", b"a")
    assert s3_client.get_object(Bucket=bucket, Key="tenants/t1/a.txt")["Body"].read() == b"a"


def test_s3_drive_with_an_empty_prefix_is_the_whole_bucket(s3_server, s3_client):
    bucket = f"own-{uuid.uuid4().hex[:12]}"
    drive = s3_drive_new(s3_server, prefix="", bucket=bucket)
    drive.write("demo.gbai/a.txt", b"a")
    assert s3_client.get_object(Bucket=bucket, Key="demo.gbai/a.txt")["Body"].read() == b"a"
    assert set(listing(drive)) == {"demo.gbai/a.txt"}
    assert drive.delete_prefix("demo.gbai") == 1


def test_s3_client_has_short_timeouts_and_bounded_retries(s3_drive):
    config = s3_drive.storage.connection.meta.client.meta.config
    assert config.connect_timeout == S3_CONNECT_TIMEOUT_S
    assert config.read_timeout == S3_READ_TIMEOUT_S
    assert config.retries["total_max_attempts"] == S3_MAX_ATTEMPTS
    assert config.s3["addressing_style"] == "path"


def test_s3_unreachable_endpoint_fails_fast_instead_of_hanging(s3_server):
    from botocore.exceptions import EndpointConnectionError

    from tests.support.seaweedfs import _free_ports

    [port] = _free_ports(1)  # nothing listens there
    drive = S3Drive(
        bucket="unreachable",
        prefix="tenants/t1",
        endpoint_url=f"http://127.0.0.1:{port}",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    started = time.monotonic()
    with pytest.raises(DriveUnavailable) as unavailable:
        drive.read("a.txt")
    assert time.monotonic() - started < S3_CONNECT_TIMEOUT_S * S3_MAX_ATTEMPTS + 5
    assert isinstance(unavailable.value.__cause__, EndpointConnectionError)
    assert "EndpointConnectionError" in unavailable.value.reason and str(port) not in unavailable.value.reason


def test_s3_wrong_secret_is_refused(s3_server):
    """Credentials the storage refuses are the drive's failure (every file would fail alike), not a file's."""
    from botocore.exceptions import ClientError

    drive = S3Drive(
        bucket="drive-tests",
        prefix="tenants/t1",
        endpoint_url=s3_server.endpoint_url,
        access_key=s3_server.access_key,
        secret_key="not-the-secret",
    )
    with pytest.raises(DriveUnavailable) as unavailable:
        list(drive.list())
    assert isinstance(unavailable.value.__cause__, ClientError)
    # The listing's SignatureDoesNotMatch, or, when this process has not checked the bucket yet, the bucket check's
    # bare 403 (a HEAD has no body to name the error).
    reason = unavailable.value.reason
    assert "SignatureDoesNotMatch" in reason or ("the storage refused the bucket check" in reason and "403" in reason)


def test_s3_drives_of_different_tenants_share_one_boto3_connection_per_thread(s3_server):
    # A drive is built per tenant per scan: a boto3 session each time would cost ~0.2 s per tenant.
    first = s3_drive_new(s3_server, prefix="tenants/t-one")
    second = s3_drive_new(s3_server, prefix="tenants/t-two")
    assert first.storage is not second.storage
    assert first.storage.connection is second.storage.connection
    assert first.storage.location != second.storage.location


def test_a_bounded_read_asks_for_what_the_object_holds_not_for_the_limit():
    """read(n) reserves n bytes before reading: a 1 KB file read under a 15 MB limit cost a 15 MB buffer."""
    import io

    from apps.drive.backends import _read_bounded

    class Recorded(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.asked: list[int] = []

        def read(self, n=-1):
            self.asked.append(n)
            return super().read(n)

    small = Recorded(b"x" * 1000)
    assert _read_bounded(small, "a.txt", 1000, 15 * 1024 * 1024) == b"x" * 1000
    assert max(small.asked) <= 1001
    grown = Recorded(b"y" * 5000)  # written to since its size (1000) was taken: still read whole, bounded
    assert _read_bounded(grown, "b.txt", 1000, 6000) == b"y" * 5000
    over = Recorded(b"z" * 7000)
    with pytest.raises(DriveObjectTooLarge):
        _read_bounded(over, "c.txt", 1000, 6000)
    assert sum(over.asked) <= 6001


def test_read_with_a_limit_refuses_a_larger_object_from_its_size(drive_backend):
    drive_backend.write("demo.gbai/big.txt", b"x" * 100)
    assert drive_backend.read("demo.gbai/big.txt", max_bytes=100) == b"x" * 100
    with pytest.raises(DriveObjectTooLarge) as refused:
        drive_backend.read("demo.gbai/big.txt", max_bytes=99)
    assert (refused.value.size, refused.value.max_bytes) == (100, 99)
    assert "holds 100 bytes, more than the 99 allowed" in str(refused.value)
    with pytest.raises(FileNotFoundError):
        drive_backend.read("demo.gbai/missing.txt", max_bytes=10)


# --- outages: the drive's failures, never a file's -------------------------------------------------------


def _client_error(code: str, status: int, operation: str = "GetObject"):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)


def _outage_cases():
    import errno as errnos

    from botocore import exceptions as bc
    from s3transfer.exceptions import RetriesExceededError

    url = "http://seaweed.internal:8333/bucket/key"
    return [
        (bc.EndpointConnectionError(endpoint_url=url), True),
        (bc.ConnectTimeoutError(endpoint_url=url), True),
        (bc.ReadTimeoutError(endpoint_url=url), True),
        (bc.ConnectionClosedError(endpoint_url=url), True),
        (bc.ResponseStreamingError(error="reset"), True),
        (bc.NoCredentialsError(), True),
        (RetriesExceededError(ConnectionResetError(errnos.ECONNRESET, "Connection reset by peer")), True),
        (_client_error("SlowDown", 503), True),
        (_client_error("503", 503, "HeadObject"), True),  # a HEAD's error has no body: its status only
        (_client_error("InternalError", 500), True),
        (_client_error("TooManyRequests", 429), True),
        (_client_error("InvalidAccessKeyId", 403), True),
        (_client_error("RequestTimeTooSkewed", 403), True),
        (OSError(errnos.ENOTCONN, "Transport endpoint is not connected"), True),
        (OSError(errnos.ESTALE, "Stale file handle"), True),
        (TimeoutError(errnos.ETIMEDOUT, "Connection timed out"), True),
        # One object's own failures: not outages.
        (_client_error("AccessDenied", 403), False),
        (_client_error("403", 403, "HeadObject"), False),
        (_client_error("NoSuchKey", 404), False),
        (FileNotFoundError(errnos.ENOENT, "No such file or directory"), False),
        (PermissionError(errnos.EACCES, "Permission denied"), False),
        (IsADirectoryError(errnos.EISDIR, "Is a directory"), False),
        (OSError(errnos.EIO, "Input/output error"), False),  # without a root to check: the file's damage
        (DriveObjectTooLarge("a.txt", 10, 5), False),
        (DriveKeyError("bad key"), False),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), False),
        (ValueError("a bug"), False),
    ]


@pytest.mark.parametrize("case", range(len(_outage_cases())))
def test_outages_are_told_apart_from_a_files_own_failures(case):
    exc, outage = _outage_cases()[case]
    reason = drive_outage_reason(exc)
    assert (reason is not None) == outage, (exc, reason)
    if reason is not None:
        assert "seaweed.internal" not in reason  # shown to the tenant: no storage address


def test_local_eio_is_an_outage_only_when_the_drive_root_fails_too(local_drive, monkeypatch):
    """EIO on one file of a readable drive is that file's damage (stopping every scan at it would hold every other
    file up for good); EIO with the root unreadable too is the storage failing (a FUSE or network mount)."""
    import errno as errnos

    local_drive.write("demo.gbai/a.txt", b"a")
    real_open = os.open

    def eio_open(path, *args, **kwargs):
        if str(path).endswith("a.txt"):
            raise OSError(errnos.EIO, "Input/output error")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(backends.os, "open", eio_open)
    with pytest.raises(OSError) as damaged:
        local_drive.read("demo.gbai/a.txt")
    assert damaged.value.errno == errnos.EIO and not isinstance(damaged.value, DriveUnavailable)

    real_scandir = os.scandir

    def root_fails(path, *args, **kwargs):
        if Path(path) == local_drive.root:
            raise OSError(errnos.EIO, "Input/output error")
        return real_scandir(path, *args, **kwargs)

    monkeypatch.setattr(backends.os, "scandir", root_fails)
    with pytest.raises(DriveUnavailable) as unavailable:
        local_drive.read("demo.gbai/a.txt")
    assert "Input/output error" in unavailable.value.reason and str(local_drive.root) not in unavailable.value.reason


def test_local_mount_gone_fails_reads_and_listings_as_unavailable(local_drive, monkeypatch):
    import errno as errnos

    local_drive.write("demo.gbai/a.txt", b"a")

    def gone(*args, **kwargs):
        raise OSError(errnos.ENOTCONN, "Transport endpoint is not connected")

    monkeypatch.setattr(backends.os, "open", gone)
    monkeypatch.setattr(backends.os, "scandir", gone)
    with pytest.raises(DriveUnavailable):
        local_drive.read("demo.gbai/a.txt")
    with pytest.raises(DriveUnavailable):
        list(local_drive.list())


def test_drive_unavailable_is_an_oserror_and_says_what_failed():
    exc = DriveUnavailable("the storage answered HTTP 503 SlowDown")
    assert isinstance(exc, OSError)
    assert backends.drive_error_text(exc) == "the drive is unavailable: the storage answered HTTP 503 SlowDown"
