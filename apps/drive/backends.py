"""Drive storage backends: one small interface over a folder of local files and an S3 bucket prefix.

What this module owns: turning a drive key (`demo.gbai/demo.gbdialog/start.bas`, relative to one tenant's
root) into bytes on disk or an object in S3, and listing a tenant's objects with their ETags for the
DriveMonitor. Which root or prefix belongs to which tenant is decided elsewhere (apps.drive.storage); this
module only guarantees that a backend never reaches outside the root it was given.

Failure modes it prevents:
- Path traversal out of a tenant's root: every key goes through `drive_key_validate` (no absolute paths,
  no `..`, no backslashes or control characters, no empty segments, bounded length, no name starting with
  LOCAL_TEMP_PREFIX, which LocalDrive listings skip) in every method of
  both backends, and LocalDrive refuses any path that resolves outside its root or through a symbolic
  link (a link planted in one tenant's folder must not expose another tenant's files).
- Re-hashing unchanged files on every scan: the DriveMonitor lists each tenant every few seconds;
  LocalDrive reuses the ETag it is handed for a file whose (size, mtime_ns) did not change, so a scan of
  10,000 unchanged files costs one `stat` each and no reads. S3 returns ETags in the listing itself.
- An unreachable S3 hanging a worker: the boto3 client has short connect/read timeouts and a bounded
  number of attempts, so a dead endpoint fails a task in seconds instead of blocking a worker forever.
- Half-written files: LocalDrive writes to a temporary file and renames it over the target, so a reader
  (or a crash) never sees a truncated object.
- An outage blamed on files: every method raises the storage's outage-class errors (S3 unreachable, timing out,
  5xx, throttling, refused credentials; a local mount gone) as DriveUnavailable, told apart from one object's own
  failure in one place (drive_outage_reason), so a caller never counts an outage against the file it was reading.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from boto3.s3.transfer import TransferConfig
from botocore import exceptions as botocore_exceptions
from botocore.config import Config
from botocore.exceptions import ClientError
from django.core.files.base import ContentFile
from s3transfer.exceptions import RetriesExceededError
from storages.backends.s3 import S3Storage

logger = logging.getLogger(__name__)

# S3 caps a key at 1024 UTF-8 bytes, and that includes the tenant prefix the backend adds in front:
# leave room for it so a key valid here never fails only in S3.
DRIVE_KEY_MAX_BYTES = 896
# NAME_MAX of Linux filesystems: a longer segment cannot be a file name on a LocalDrive.
DRIVE_SEGMENT_MAX_BYTES = 255

# Read files in chunks when hashing so a large KB document never sits in memory whole.
HASH_CHUNK_BYTES = 1024 * 1024
# A file modified this recently may be rewritten again within the same mtime tick (coarse kernel clocks,
# 2 s on FAT) with the same size, and a hint would then hide the change ("racily clean", as git calls
# it): hash such files anyway. Only files touched in the last seconds pay for this.
HINT_RACY_WINDOW_NS = 2_000_000_000
# Temporary files of an atomic write live next to their target (os.replace needs the same filesystem);
# listing skips this prefix so a write in flight, or one left behind by a crash, is never an object.
LOCAL_TEMP_PREFIX = ".drive-tmp-"
# Permissions of written files, as Django's FileSystemStorage would leave them (mkstemp makes 0600).
LOCAL_FILE_MODE = 0o644

# Connecting to a reachable S3/MinIO/SeaweedFS takes milliseconds; seconds mean it is down.
S3_CONNECT_TIMEOUT_S = 3
# Longest silence between bytes of a response; a stuck server must not hold a worker longer than this.
S3_READ_TIMEOUT_S = 15
# Total attempts per call (botocore "standard" mode retries throttling and 5xx with backoff): rides
# out a blip without turning an outage into minutes of retries.
S3_MAX_ATTEMPTS = 3
# write() holds the whole object in memory already, so multipart buys nothing below this size, and a
# single PUT keeps the ETag equal to the MD5 of the content, as on a LocalDrive.
S3_MULTIPART_THRESHOLD_BYTES = 64 * 1024 * 1024
# DeleteObjects accepts at most 1000 keys per request.
S3_DELETE_BATCH = 1000


# Unicode category Cc exactly (C0, DEL, C1): NUL truncates C paths, newlines forge log lines and
# listings. A compiled class is ~10x faster than unicodedata per character, and listings validate every key.
_CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class DriveEntry:
    """One object of a drive: its key relative to the drive's root, its ETag, size and modification time."""

    key: str
    etag: str
    size: int
    mtime_ns: int | None
    # False when (size, mtime_ns) must not be kept as a hint for this etag: the file was hashed while modified
    # within HINT_RACY_WINDOW_NS, so it may be rewritten, same size, within the same mtime tick.
    hintable: bool = True


class DriveObjectTooLarge(ValueError):
    """`read(key, max_bytes=...)` of an object larger than that: refused from its size, before any content
    is read into memory."""

    def __init__(self, key: str, size: int, max_bytes: int) -> None:
        super().__init__(f"drive object {key!r} holds {size} bytes, more than the {max_bytes} allowed here")
        self.key, self.size, self.max_bytes = key, size, max_bytes


def _read_bounded(file, key: str, size: int, max_bytes: int | None) -> bytes:
    """`file`'s content, refused from its known `size` past `max_bytes`; at most max_bytes + 1 bytes are read,
    since the object may have grown or been replaced after its size was taken."""
    if max_bytes is None:
        return file.read()
    if size > max_bytes:
        raise DriveObjectTooLarge(key, size, max_bytes)
    # Sized by what the object held: read(n) reserves n bytes first, so read(max_bytes + 1) cost a 15 MB buffer
    # to read a 1 KB file under a 15 MB limit. More than `size` came back: it grew meanwhile; read on, bounded.
    want = size + 1
    data = file.read(want)
    if len(data) >= want:
        data += file.read(max_bytes + 1 - len(data))
    if len(data) > max_bytes:
        raise DriveObjectTooLarge(key, len(data), max_bytes)
    return data


_URL_RE = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"']+")


def drive_error_detail(exc: BaseException) -> str:
    """What a drive failure says, fit to show a tenant: an OSError's reason without its file names (a LocalDrive's
    absolute paths on the server: `[Errno 13] Permission denied: '/srv/media/tenants/...'`), other errors' text
    without URLs (the S3 endpoint botocore names), at most 300 characters."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:300]
    return _URL_RE.sub("<storage endpoint>", str(exc))[:300]


def drive_error_text(exc: BaseException) -> str:
    """`Type: reason` of a drive failure (drive_error_detail), as deploy errors show it; a DriveUnavailable says
    what failed itself ("the drive is unavailable: ...")."""
    if isinstance(exc, DriveUnavailable):
        return drive_error_detail(exc)
    return f"{type(exc).__name__}: {drive_error_detail(exc)}"


class DriveUnavailable(OSError):
    """The drive's storage as a whole cannot be used now: S3 unreachable, timing out, failing (5xx), throttling, or
    refusing the platform's credentials; a local mount gone (ENOTCONN, ESTALE, EIO on the root itself...). Nothing
    is wrong with any one file: the same call may succeed later, so a failure like this is never a file's fault.

    Raised by the backends in place of the underlying error (kept as `__cause__`); the one place that tells an
    outage from a file's own failure (a missing object, one key refused, a file too large: raised as before) is
    `drive_outage_reason`. An OSError, as a LocalDrive's errors always were. `reason` is fit to show a tenant (no
    server paths or storage URL)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the drive is unavailable: {reason}")
        self.reason = reason


# S3 error codes that concern the storage or the platform's credentials, not the object asked for. A key refused on
# its own (AccessDenied: an object's ACL, a KMS key, a policy on a prefix) is not here: it is that file's failure.
S3_OUTAGE_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "RequestThrottled", "TooManyRequests",
    "ServiceUnavailable", "InternalError", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "RequestTimeTooSkewed", "AllAccessDisabled", "AccountProblem",
})
# botocore's failures to get any answer at all: connection refused or reset, timeouts, a response cut off, no
# credentials. botocore's ParamValidationError and the like are bugs, not outages, and are not here.
_S3_OUTAGE_ERRORS = (
    botocore_exceptions.ConnectionError,  # EndpointConnectionError, ConnectTimeoutError, ProxyConnectionError...
    botocore_exceptions.HTTPClientError,  # ReadTimeoutError, ConnectionClosedError, ResponseStreamingError
    botocore_exceptions.IncompleteReadError,
    botocore_exceptions.NoCredentialsError,
    botocore_exceptions.PartialCredentialsError,
    botocore_exceptions.CredentialRetrievalError,
    ConnectionError,  # the socket errors s3transfer's download retries pass on
    TimeoutError,
)
# errno values of a local drive whose storage is gone or failing (a network or FUSE mount down, a disk remounted
# read-only or full): storage-wide, not the file's. EIO is only an outage when the drive's root fails too (below).
LOCAL_OUTAGE_ERRNOS = frozenset(
    code for code in (
        errno.ENOTCONN, errno.ESTALE, errno.ETIMEDOUT, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETDOWN,
        errno.ENETUNREACH, errno.ENETRESET, errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ENODEV,
        getattr(errno, "ENOMEDIUM", None), errno.EROFS, errno.ENOSPC, errno.EDQUOT,
    ) if code is not None
)


def drive_outage_reason(exc: BaseException, *, root: Path | None = None) -> str | None:
    """Why `exc` means the drive's storage is unavailable (DriveUnavailable's reason), or None when it is not an
    outage: a failure of the one object asked for (missing, refused, too large), or a bug.

    S3: no answer (connection refused or reset, timeouts, a response cut off; s3transfer's RetriesExceededError by
    its last error), an HTTP 5xx or 429, a throttling or credentials error code (S3_OUTAGE_CODES). Local files:
    LOCAL_OUTAGE_ERRNOS, and EIO when `root` (the LocalDrive's root) cannot be opened either: EIO on one file of a
    readable drive is that file's damage, and stopping every scan at it would hold up every other file for good.
    """
    if isinstance(exc, DriveUnavailable):
        return exc.reason
    if isinstance(exc, RetriesExceededError) and isinstance(exc.last_exception, BaseException):
        return drive_outage_reason(exc.last_exception, root=root)
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in S3_OUTAGE_CODES or (isinstance(status, int) and (status >= 500 or status == 429)):
            answer = [f"HTTP {status}"] if status else []
            if code and code != str(status):
                answer.append(code)
            return "the storage answered " + " ".join(answer)
        return None
    if isinstance(exc, _S3_OUTAGE_ERRORS):
        return drive_error_text(exc)
    if isinstance(exc, OSError) and exc.errno is not None and (
            exc.errno in LOCAL_OUTAGE_ERRNOS
            or (exc.errno == errno.EIO and root is not None and not _root_readable(root))):
        return drive_error_text(exc)
    return None


def _root_readable(root: Path) -> bool:
    """Whether a LocalDrive's root can still be opened and read (a root not created yet is fine: nothing in it)."""
    try:
        with os.scandir(root) as entries:
            next(entries, None)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _outages_raised(*, root: Path | None = None) -> Iterator[None]:
    """An outage-class error (drive_outage_reason) leaves the block as DriveUnavailable, anything else as it came."""
    try:
        yield
    except DriveUnavailable:
        raise
    except Exception as exc:
        reason = drive_outage_reason(exc, root=root)
        if reason is None:
            raise
        raise DriveUnavailable(reason) from exc


@contextlib.contextmanager
def _whole_drive_errors(what: str) -> Iterator[None]:
    """For a call about the whole drive, not one object (an S3 listing, the bucket check): whatever error the storage
    answers it with is the drive's (DriveUnavailable), AccessDenied for credentials that lost a right included."""
    try:
        yield
    except DriveUnavailable:
        raise
    except (ClientError, botocore_exceptions.BotoCoreError, RetriesExceededError, OSError) as exc:
        reason = drive_outage_reason(exc) or f"the storage refused {what} ({drive_error_text(exc)})"
        raise DriveUnavailable(reason) from exc


class DriveKeyError(ValueError):
    """A key that could name something outside the drive's root, or that no backend can store as given."""


def drive_key_validate(key: str) -> str:
    """Return `key` unchanged if it is a safe relative POSIX key, else raise DriveKeyError.

    The one check both backends run on every key and prefix they receive (callers validate too: this is
    defence in depth). Nothing is normalised: `a//b` or `a/./b` would mean the same object to S3
    (SeaweedFS collapses them) and to the filesystem, so two spellings of one key are refused, not merged.
    """
    if not isinstance(key, str):
        raise DriveKeyError(f"drive key must be a string, not {type(key).__name__}")
    if not key:
        raise DriveKeyError("drive key is empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise DriveKeyError(f"drive key {key!r} is not valid UTF-8") from None
    if size > DRIVE_KEY_MAX_BYTES:
        raise DriveKeyError(f"drive key is {size} bytes long; the limit is {DRIVE_KEY_MAX_BYTES}")
    if key.startswith("/"):
        raise DriveKeyError(f"drive key {key!r} is absolute; keys are relative to the drive root")
    if "\\" in key:
        raise DriveKeyError(f"drive key {key!r} contains a backslash; use '/' between folders")
    if _CONTROL_CHARS.search(key):
        raise DriveKeyError(f"drive key {key!r} contains a control character")
    for segment in key.split("/"):
        if not segment:
            raise DriveKeyError(f"drive key {key!r} has an empty segment (leading, trailing or double '/')")
        if segment in {".", ".."}:
            raise DriveKeyError(f"drive key {key!r} contains a {segment!r} segment")
        if len(segment.encode("utf-8")) > DRIVE_SEGMENT_MAX_BYTES:
            raise DriveKeyError(f"drive key {key!r} has a segment longer than {DRIVE_SEGMENT_MAX_BYTES} bytes")
        if segment.startswith(LOCAL_TEMP_PREFIX):
            # A LocalDrive's listing skips such names (its writes in flight): stored, the file was never listed,
            # so never processed, and on S3 it was. Refused on both, so a package behaves the same on either.
            raise DriveKeyError(f"drive key {key!r} has a name starting with {LOCAL_TEMP_PREFIX!r}, which the drive "
                                f"keeps for its temporary files; rename it")
    return key


def _prefix_validate(prefix: str) -> str:
    """A listing prefix names a folder: "" (everything) or a valid key, with or without a trailing '/'."""
    if prefix == "":
        return ""
    if isinstance(prefix, str) and prefix.endswith("/"):
        prefix = prefix[:-1]
    return drive_key_validate(prefix)


class DriveBackend(Protocol):
    """What the DriveMonitor and the services need from a tenant's drive. Keys are relative to its root."""

    def list(
        self, prefix: str = "", *, etag_hints: Mapping[str, tuple[int, int, str]] | None = None
    ) -> Iterator[DriveEntry]:
        """Every object under the folder `prefix`, recursively; folders themselves are not objects.

        `etag_hints` maps a key to the (size, mtime_ns, etag) seen last time; a backend may reuse the
        etag when size and mtime_ns are unchanged instead of reading the object again.
        """
        ...

    def read(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The content of `key`; FileNotFoundError when there is no such object, DriveObjectTooLarge (from its
        size, nothing read) when it holds more than `max_bytes`."""
        ...

    def write(self, key: str, data: bytes) -> str:
        """Create or replace `key` with `data`; returns the new ETag."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; removing a missing object is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under the folder `prefix` (which must not be empty); returns how many."""
        ...

    def exists(self, key: str) -> bool:
        """Whether `key` is an object (a folder is not)."""
        ...


# --- local files -----------------------------------------------------------------------------------------


def _file_md5(path: Path) -> str:
    """MD5 hex of a file's content (what S3 reports as the ETag of a single-part object).

    Opened with O_NOFOLLOW: a file swapped for a symbolic link after the listing saw it is not followed.
    """
    digest = hashlib.md5(usedforsecurity=False)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        while chunk := file.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _empty_folders_remove(folder: str) -> None:
    """Remove `folder` if it holds only empty folders (at any depth); whatever holds a file, a link or a temporary
    file stays. The depth is bounded by DRIVE_KEY_MAX_BYTES."""
    with contextlib.suppress(OSError):
        with os.scandir(folder) as entries:
            inner = [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
        for path in inner:
            _empty_folders_remove(path)
        os.rmdir(folder)


class LocalDrive:
    """A drive in a folder of local files (the default when no S3 is configured).

    Symbolic links inside the root are never followed: listing skips them and every other method
    refuses a key whose path goes through one (DriveKeyError), so a link cannot expose files outside.
    """

    def __init__(self, root: Path) -> None:
        # Resolved once, so a root that is itself reached through a link (/var -> /private/var) still
        # compares equal to the resolved paths of its files.
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalDrive({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        """The path of a validated key, refused if it resolves outside the root or through a link."""
        path = self.root / drive_key_validate(key)
        resolved = path.resolve()
        if not resolved.is_relative_to(self.root):
            raise DriveKeyError(f"drive key {key!r} resolves outside the drive root")
        if resolved != path:
            raise DriveKeyError(f"drive key {key!r} goes through a symbolic link; links are never followed")
        return path

    def list(
        self, prefix: str = "", *, etag_hints: Mapping[str, tuple[int, int, str]] | None = None
    ) -> Iterator[DriveEntry]:
        # Validated now, not on first iteration: a bad prefix fails where list() is called.
        prefix = _prefix_validate(prefix)
        with _outages_raised(root=self.root):
            start = self._path(prefix) if prefix else self.root
        return self._walk(start, prefix, etag_hints or {})

    def _walk(self, start: Path, prefix: str, hints: Mapping[str, tuple[int, int, str]]) -> Iterator[DriveEntry]:
        with _outages_raised(root=self.root):
            yield from self._walk_entries(start, prefix, hints)

    def _walk_entries(
        self, start: Path, prefix: str, hints: Mapping[str, tuple[int, int, str]]
    ) -> Iterator[DriveEntry]:
        racy_after_ns = time.time_ns() - HINT_RACY_WINDOW_NS
        # Depth-first with an explicit stack of (folder, key prefix): os.scandir returns the entry type
        # from readdir, so folders and links are told apart without a stat; files need one for size/mtime.
        stack: list[tuple[str, str]] = [(str(start), f"{prefix}/" if prefix else "")]
        while stack:
            folder, key_prefix = stack.pop()
            try:
                with os.scandir(folder) as entries:
                    found = list(entries)
            except (FileNotFoundError, NotADirectoryError):
                continue  # no such folder (yet): nothing under it
            for entry in found:
                if entry.is_symlink() or entry.name.startswith(LOCAL_TEMP_PREFIX):
                    continue
                key = key_prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, key + "/"))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue  # sockets, fifos, devices: not objects
                try:
                    drive_key_validate(key)
                except DriveKeyError as exc:
                    # A name written behind the drive's back that read() would refuse: not an object.
                    logger.warning("drive listing skips %r under %s: %s", key, self.root, exc)
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    hint = hints.get(key)
                    racy = st.st_mtime_ns >= racy_after_ns
                    reuse = hint is not None and (hint[0], hint[1]) == (st.st_size, st.st_mtime_ns) and not racy
                    etag = hint[2] if reuse else _file_md5(Path(entry.path))
                except FileNotFoundError:
                    continue  # deleted while we listed
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        continue  # replaced by a link while we listed
                    raise
                # A hint stored now would outlive the window: a same-size rewrite in this mtime tick, after the
                # hash, would match it in every later scan and be missed for good.
                yield DriveEntry(key=key, etag=etag, size=st.st_size, mtime_ns=st.st_mtime_ns, hintable=not racy)

    def read(self, key: str, *, max_bytes: int | None = None) -> bytes:
        with _outages_raised(root=self.root):
            return self._read(key, max_bytes)

    def _read(self, key: str, max_bytes: int | None) -> bytes:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DriveKeyError(f"drive key {key!r} is a symbolic link; links are never followed") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise FileNotFoundError(f"drive key {key!r} is a folder, not an object")
        with os.fdopen(fd, "rb") as file:
            return _read_bounded(file, key, st.st_size, max_bytes)

    def write(self, key: str, data: bytes) -> str:
        with _outages_raised(root=self.root):
            return self._write(key, data)

    def _write(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # The folders may have been created through a link planted meanwhile: check again before writing.
        path = self._path(key)
        if path.is_dir():
            # A folder is not an object: one left empty by deletes (files go, their folders stay), empty folders
            # inside it included (`theme/css/` after `theme/css/main.css` went), gives way to the file. A folder
            # that still holds anything fails the replace below (IsADirectoryError).
            _empty_folders_remove(str(path))
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=LOCAL_TEMP_PREFIX)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fchmod(file.fileno(), LOCAL_FILE_MODE)
                # Durable before it becomes visible: a crash must leave the old content or the new one.
                os.fsync(file.fileno())
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return hashlib.md5(data, usedforsecurity=False).hexdigest()

    def delete(self, key: str) -> None:
        with _outages_raised(root=self.root):
            path = self._path(key)
            # Missing is fine; a folder is not an object.
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                path.unlink()

    def delete_prefix(self, prefix: str) -> int:
        with _outages_raised(root=self.root):
            return self._delete_prefix(prefix)

    def _delete_prefix(self, prefix: str) -> int:
        prefix = _prefix_validate(prefix)
        if not prefix:
            # An empty variable must not wipe a tenant's whole drive.
            raise DriveKeyError("delete_prefix needs a non-empty prefix")
        start = self._path(prefix)
        if not start.is_dir():
            return 0
        deleted = 0
        folders: list[str] = []
        stack = [str(start)]
        while stack:
            folder = stack.pop()
            folders.append(folder)
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                        continue
                    # Unlinking a link removes the link only, never its target.
                    is_object = entry.is_file(follow_symlinks=False) and not entry.name.startswith(LOCAL_TEMP_PREFIX)
                    try:
                        os.unlink(entry.path)
                    except FileNotFoundError:
                        continue
                    deleted += is_object
        for folder in reversed(folders):  # children before parents
            # Not empty: something was written meanwhile, leave the folder.
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        return deleted

    def exists(self, key: str) -> bool:
        with _outages_raised(root=self.root):
            try:
                return stat.S_ISREG(os.lstat(self._path(key)).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                return False


# --- S3 --------------------------------------------------------------------------------------------------


def _s3_client_config() -> Config:
    return Config(
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        # total_max_attempts counts the first try ("max_attempts" would count retries only).
        retries={"total_max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
        # Path-style URLs (endpoint/bucket/key): SeaweedFS and MinIO serve them without wildcard DNS.
        s3={"addressing_style": "path"},
        signature_version="s3v4",
    )


# boto3 resources per thread (boto3 resources are not thread-safe), keyed by endpoint and credentials.
_shared_resources = threading.local()


class _SharedConnectionS3Storage(S3Storage):
    """S3Storage whose boto3 resource is shared by every storage with the same endpoint and credentials.

    apps.drive.storage builds a drive per tenant per scan; a fresh S3Storage would create a fresh boto3
    session on first use, which loads botocore's service models (~0.2 s measured here) for every tenant
    on every 10 s scan. Sharing it per thread makes a new S3Drive cost about a millisecond.
    """

    @property
    def connection(self):
        resources: dict = _shared_resources.__dict__.setdefault("by_key", {})
        key = (self.endpoint_url, self.region_name, self.access_key, self.secret_key)
        resource = resources.get(key)
        if resource is None:
            resource = resources[key] = S3Storage.connection.fget(self)
        return resource


def _s3_storage(
    *, bucket: str, prefix: str, endpoint_url: str | None, access_key: str, secret_key: str, region: str
) -> S3Storage:
    return _SharedConnectionS3Storage(
        bucket_name=bucket,
        location=prefix,
        endpoint_url=endpoint_url,
        access_key=access_key,
        secret_key=secret_key,
        # Explicitly none: an AWS_SESSION_TOKEN or profile in the environment must not mix in.
        security_token=None,
        session_profile=None,
        region_name=region,
        file_overwrite=True,
        addressing_style="path",
        client_config=_s3_client_config(),
        transfer_config=TransferConfig(multipart_threshold=S3_MULTIPART_THRESHOLD_BYTES),
    )


def _datetime_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch, in integers (a float timestamp times 1e9 can land a nanosecond off)."""
    return (int(moment.timestamp()) * 1_000_000 + moment.microsecond) * 1000


# (endpoint, bucket) pairs known to exist in this process, so ensure_bucket costs one HEAD per process.
_buckets_ready: set[tuple[str | None, str]] = set()


def _is_not_found(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or error.get("Code") in {"404", "NoSuchKey", "NoSuchBucket", "NotFound"}


class S3Drive:
    """A drive under `prefix` in an S3 bucket (AWS, MinIO, SeaweedFS), through django-storages.

    Reads, writes and deletes go through `storages.backends.s3.S3Storage` with `location=prefix`; listing
    uses its boto3 client directly because Storage.listdir drops the ETags the DriveMonitor needs.
    `prefix` "" means the whole bucket (a bucket per tenant); otherwise it is the tenant's folder.
    """

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        endpoint_url: str | None,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
    ) -> None:
        self.bucket_name = bucket
        self.prefix = _prefix_validate(prefix)
        self.endpoint_url = endpoint_url
        self.region = region
        self.storage = _s3_storage(
            bucket=bucket,
            prefix=self.prefix,
            endpoint_url=endpoint_url,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
        )

    def __repr__(self) -> str:
        return f"S3Drive(bucket={self.bucket_name!r}, prefix={self.prefix!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def _client(self):
        # The storage keeps one boto3 resource per thread; its client is safe to use from this thread.
        return self.storage.connection.meta.client

    def _object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (idempotent; one HEAD per bucket per process)."""
        marker = (self.endpoint_url, self.bucket_name)
        if marker in _buckets_ready:
            return
        with _whole_drive_errors("the bucket check"):
            self._bucket_ensure()
        _buckets_ready.add(marker)

    def _bucket_ensure(self) -> None:
        client = self._client
        try:
            client.head_bucket(Bucket=self.bucket_name)
        except ClientError as exc:
            if not _is_not_found(exc):
                raise
            params: dict = {"Bucket": self.bucket_name}
            if self.region != "us-east-1":  # us-east-1 is the one region S3 refuses as a LocationConstraint
                params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                client.create_bucket(**params)
                logger.info("created S3 bucket %r at %s", self.bucket_name, self.endpoint_url or "AWS")
            except ClientError as create_exc:
                code = create_exc.response.get("Error", {}).get("Code")
                if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise

    def list(
        self, prefix: str = "", *, etag_hints: Mapping[str, tuple[int, int, str]] | None = None
    ) -> Iterator[DriveEntry]:
        # etag_hints are not needed: S3 returns every object's ETag in the listing itself.
        # Validated now, not on first iteration: a bad prefix fails where list() is called.
        prefix = _prefix_validate(prefix)
        return self._walk(prefix)

    def _walk(self, prefix: str) -> Iterator[DriveEntry]:
        # A listing is one question about the whole drive: never a file's failure.
        with _whole_drive_errors("the listing"):
            yield from self._walk_pages(prefix)

    def _walk_pages(self, prefix: str) -> Iterator[DriveEntry]:
        self.ensure_bucket()
        root = f"{self.prefix}/" if self.prefix else ""
        # The trailing '/' keeps tenant "t1" from listing tenant "t10", and folder "a" from "ab".
        list_prefix = root + (f"{prefix}/" if prefix else "")
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_name, Prefix=list_prefix):
            for item in page.get("Contents", []):
                full_key: str = item["Key"]
                if full_key.endswith("/") or not full_key.startswith(list_prefix):
                    continue  # folder markers are not objects
                key = full_key[len(root) :]
                try:
                    drive_key_validate(key)
                except DriveKeyError as exc:
                    logger.warning("drive listing skips %r in bucket %r: %s", full_key, self.bucket_name, exc)
                    continue
                modified = item.get("LastModified")
                yield DriveEntry(
                    key=key,
                    etag=item["ETag"].strip('"'),
                    size=int(item["Size"]),
                    mtime_ns=_datetime_ns(modified) if modified else None,
                )

    def read(self, key: str, *, max_bytes: int | None = None) -> bytes:
        drive_key_validate(key)
        self.ensure_bucket()
        # S3Storage.open raises FileNotFoundError for a missing object (it HEADs before reading).
        with _outages_raised(), self.storage.open(key, "rb") as file:
            return _read_bounded(file, key, file.size if max_bytes is not None else 0, max_bytes)  # HEAD's size

    def write(self, key: str, data: bytes) -> str:
        drive_key_validate(key)
        self.ensure_bucket()
        with _outages_raised():
            # file_overwrite=True: the name is kept as given, never suffixed to make it unique.
            self.storage.save(key, ContentFile(data))
            # upload_fileobj does not return the PUT response, so ask for the ETag of what is stored now.
            head = self._client.head_object(Bucket=self.bucket_name, Key=self._object_key(key))
        return head["ETag"].strip('"')

    def delete(self, key: str) -> None:
        drive_key_validate(key)
        self.ensure_bucket()
        with _outages_raised():
            self.storage.delete(key)

    def delete_prefix(self, prefix: str) -> int:
        prefix = _prefix_validate(prefix)
        if not prefix:
            # An empty variable must not wipe a tenant's whole drive.
            raise DriveKeyError("delete_prefix needs a non-empty prefix")
        self.ensure_bucket()
        with _outages_raised():
            return self._delete_under(prefix)

    def _delete_under(self, prefix: str) -> int:
        client = self._client
        root = f"{self.prefix}/" if self.prefix else ""
        list_prefix = f"{root}{prefix}/"
        # Keys are collected from the listing first, then deleted in batches: deleting while paginating
        # would shift the pages under the continuation token on some servers.
        keys = [
            item["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket_name, Prefix=list_prefix)
            for item in page.get("Contents", [])
        ]
        for start in range(0, len(keys), S3_DELETE_BATCH):
            batch = keys[start : start + S3_DELETE_BATCH]
            response = client.delete_objects(
                Bucket=self.bucket_name, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            if errors := response.get("Errors"):
                first = errors[0]
                raise OSError(
                    f"S3 refused to delete {len(errors)} objects under {list_prefix!r}, first {first.get('Key')!r}: "
                    f"{first.get('Code')} {first.get('Message')}"
                )
        # Folder markers are removed too, but only objects are counted, as list() would have shown them.
        return sum(1 for k in keys if not k.endswith("/"))

    def exists(self, key: str) -> bool:
        drive_key_validate(key)
        self.ensure_bucket()
        with _outages_raised():
            return self.storage.exists(key)
