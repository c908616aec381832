"""Reading a `.gbai` bot package from an uploaded zip or a folder on disk, safely (spec §1, §4.2).

This module owns the validation of a package's layout, names and sizes, and the classification of its
files (`bas`, `kb`, `config`, ...). It returns the files in memory; it never writes anything, so a caller
that writes to storage only after `package_read_zip` / `package_read_dir` returned cannot leave half a
malicious package behind. Pure functions, no Django.

Failure modes it prevents (OWASP ASVS 5.2.3 / 5.2.5 / 5.3.3, reliability test plan B6):

* Zip-slip: a name with `..`, an absolute path, a drive letter or a backslash would place a file outside
  the bot's area once the caller joins it to a storage prefix. Rejected by name, before any data is read.
* Zip bombs: the entry count and the central directory size are read from the end-of-central-directory
  record before the standard library parses the directory; declared sizes and compression ratios are
  checked before any entry is decompressed; each entry is then read with a bounded read and must match
  its declared size and CRC, so a header that lies cannot make us inflate more than the limits.
* Symbolic links and special files (in a zip's unix mode bits, or on disk) that would read or write
  through to somewhere else. Directories on disk are opened component by component with O_NOFOLLOW, so a
  link swapped in after the scan is refused as well.
* Two entries that collide once stored (`A.bas` / `a.bas`, NFC / NFD spellings) on case-insensitive or
  normalising storage, silently keeping whichever came last.
* An upload holding several bots, or stray files beside the package, being half-deployed.

Nested archives are never expanded: a `.zip` inside a package is just a file (nesting depth 0).
"""

from __future__ import annotations

import os
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from apps.drive.backends import DriveKeyError, drive_key_validate

# --- limits ------------------------------------------------------------------------------------------

# Spec §1.3 package limits (`user-file-count`, `package-max-size`, document size): one bot package holds at
# most 1000 files, 100 MB in total and 10 MB per file once decompressed.
DEFAULT_MAX_ENTRIES = 1000
DEFAULT_MAX_TOTAL_BYTES = 100 * 1024 * 1024
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024
# Real documents and scripts compress 2-20x; 100x leaves room for very repetitive text while a zeros
# bomb (~1000x with deflate) is refused before it is inflated.
DEFAULT_MAX_RATIO = 100.0
# Below this size an entry cannot hurt however well it compresses, and tiny files (a 2 KB run of spaces)
# legitimately exceed any ratio; the ratio check starts here.
RATIO_CHECK_MIN_BYTES = 64 * 1024
# A zip carries directory entries and, from macOS, an `__MACOSX/` twin per file: the raw entry count may
# exceed the file count. Raw entries are capped at this multiple of `max_entries` (before parsing), files
# at `max_entries` itself (after ignoring junk).
ARCHIVE_ENTRY_SLACK = 4
# S3 object keys are at most 1024 bytes; a longer path could not be stored under the bot's prefix anyway.
MAX_PATH_BYTES = 1024
# Central directory record: 46 fixed bytes + name (<= MAX_PATH_BYTES) + extra field and comment, for which
# 1 KiB is generous (ZIP64 and timestamp extras are < 100 bytes). Bounds what zipfile reads into memory.
MAX_CENTRAL_RECORD_BYTES = 46 + MAX_PATH_BYTES + 1024
# Local headers, data descriptors and central records cost at most this much per entry beyond the data
# itself; the archive file may not be larger than the permitted data plus this overhead per entry.
ARCHIVE_OVERHEAD_PER_ENTRY = 2 * MAX_CENTRAL_RECORD_BYTES

# Upstream bot names are path and URL segments; same rule as apps.bots.models.BOT_NAME_VALIDATOR.
BOT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
BOT_NAME_RULE = "lower-case letters, digits, '-' and '_', 1-63 characters, starting with a letter or digit"
PACKAGE_SUFFIX = ".gbai"
# Desktop-OS litter: never part of a bot, skipped without complaint.
IGNORED_TOP_FOLDERS = frozenset({"__macosx"})
IGNORED_FILE_NAMES = frozenset({".ds_store"})
# A deploy replaces the bot's package: one with no files would delete every file the bot has (scripts,
# settings, tables, documents), so an archive or folder with nothing but folders and litter is refused.
NO_FILES_MESSAGE = ("package holds no files (folder entries, __MACOSX/ and .DS_Store do not count); "
                    "a deploy would have removed every file of the bot")

# Extensions DriveMonitor indexes as KB documents (spec §5.1).
KB_EXTENSIONS = frozenset({
    ".txt", ".md", ".pdf", ".xlsx", ".xls", ".docx", ".doc", ".csv", ".pptx", ".ppt", ".html", ".htm", ".rtf",
    ".epub", ".xml", ".json", ".odt", ".ods", ".odp", ".yaml", ".yml", ".toml", ".jsonl", ".tsv", ".log",
    ".cfg", ".ini", ".conf", ".env", ".svg", ".py", ".rs", ".js", ".ts", ".sh", ".sql", ".css", ".ics",
    ".vcf", ".eml", ".rst", ".adoc", ".properties", ".graphql", ".proto",
})

_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
# zipfile decompresses these; anything else (e.g. PPMd, AES-encrypted method 99) is refused up front.
_SUPPORTED_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
_UNIX_FILE_TYPES_ALLOWED = frozenset({0, stat.S_IFREG, stat.S_IFDIR})  # 0 = no unix mode recorded

# End-of-central-directory records (APPNOTE 4.3.14-4.3.16).
_EOCD_SIG = b"PK\x05\x06"
_EOCD_SIZE = 22
_EOCD_MAX_COMMENT = 0xFFFF
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD_SIG = b"PK\x06\x06"


@dataclass(frozen=True)
class PackageLimits:
    max_entries: int
    max_total_bytes: int
    max_file_bytes: int
    max_ratio: float


DEFAULT_LIMITS = PackageLimits(
    max_entries=DEFAULT_MAX_ENTRIES,
    max_total_bytes=DEFAULT_MAX_TOTAL_BYTES,
    max_file_bytes=DEFAULT_MAX_FILE_BYTES,
    max_ratio=DEFAULT_MAX_RATIO,
)


class PackageError(ValueError):
    """The package is refused; the message says why in words a bot author can act on."""


@dataclass(frozen=True)
class PackageFile:
    """One file; `path` is a normalised POSIX path relative to the `.gbai` root (`mybot.gbot/config.csv`)."""

    path: str
    data: bytes


@dataclass(frozen=True)
class Package:
    bot_name: str
    files: list[PackageFile]


# --- names -------------------------------------------------------------------------------------------


def _show(name: str) -> str:
    """The name as it may be shown to a user: control characters escaped, never raw."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in name)


def _relative_parts(name: str, *, what: str = "entry") -> list[str]:
    """Split an archive/disk name into safe path segments, or raise naming the rule it breaks."""
    shown = _show(name)
    if any(not ch.isprintable() for ch in name):
        # Includes NUL, which zipfile would silently truncate the name at (hiding e.g. `a\0/../x`).
        raise PackageError(f"{what} '{shown}' has a control character in its name")
    if "\\" in name:
        raise PackageError(f"{what} '{shown}' contains a backslash; package paths use '/'")
    if name.startswith("/"):
        raise PackageError(f"{what} '{shown}' is an absolute path")
    if _DRIVE_LETTER.match(name):
        raise PackageError(f"{what} '{shown}' starts with a drive letter")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise PackageError(f"{what} '{shown[:80]}...' has a path longer than {MAX_PATH_BYTES} bytes")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PackageError(f"{what} '{shown}' escapes the package")
    if not parts:
        raise PackageError(f"{what} '{shown}' has an empty name")
    return parts


def _is_ignored(parts: list[str]) -> bool:
    return parts[0].lower() in IGNORED_TOP_FOLDERS or parts[-1].lower() in IGNORED_FILE_NAMES


def _bot_name(raw: str) -> str:
    name = raw.lower()
    if not BOT_NAME_RE.match(name):
        raise PackageError(f"bot name '{_show(raw)}' is not allowed: use {BOT_NAME_RULE}")
    return name


def _collision_key(path: str) -> str:
    # What case-insensitive or Unicode-normalising storage would see as "the same file".
    return unicodedata.normalize("NFC", path).casefold()


def _check_duplicates(paths: list[str]) -> None:
    seen: dict[str, str] = {}
    for path in paths:
        key = _collision_key(path)
        if key in seen:
            other = seen[key]
            if other == path:
                raise PackageError(f"entry '{_show(path)}' appears twice")
            raise PackageError(f"entries '{_show(other)}' and '{_show(path)}' differ only in case or accents")
        seen[key] = path


def _check_storable(bot_name: str, paths: list[str]) -> None:
    """Every file can be stored in the drive under the bot's package folder, and no path is both a file and a
    folder: a deploy found out half way, with part of the new package written over the old one."""
    root = f"{bot_name}.gbai/"
    folders: dict[str, str] = {}
    for path in paths:
        try:
            drive_key_validate(root + path)
        except DriveKeyError as exc:
            raise PackageError(f"entry '{_show(path[:200])}' cannot be stored in the drive: {exc}") from None
        parts = path.split("/")
        for end in range(1, len(parts)):
            folder = "/".join(parts[:end])
            folders.setdefault(_collision_key(folder), folder)
    for path in paths:
        folder = folders.get(_collision_key(path))
        if folder is not None:
            raise PackageError(f"'{_show(path)}' is both a file and a folder ('{_show(folder)}/...')")


def _split_layout(entries: list[list[str]], bot_name: str | None) -> tuple[str, int]:
    """Decide the bot name and how many leading segments to strip (1 for `<name>.gbai/...`, else 0)."""
    package_dirs = {parts[0] for parts in entries if len(parts) > 1 and parts[0].lower().endswith(PACKAGE_SUFFIX)}
    if len({folder.lower() for folder in package_dirs}) > 1:
        listed = ", ".join(sorted(package_dirs))
        raise PackageError(f"archive holds several .gbai folders ({listed}); upload one bot at a time")
    if package_dirs:
        folder = next(iter(package_dirs))
        outside = [parts for parts in entries if len(parts) < 2 or parts[0].lower() != folder.lower()]
        if outside:
            raise PackageError(f"archive has files outside {folder}/ (e.g. '{_show('/'.join(outside[0]))}'); "
                               f"put everything inside the one .gbai folder")
        name = _bot_name(folder[: -len(PACKAGE_SUFFIX)])
        if bot_name is not None and _bot_name(bot_name) != name:
            raise PackageError(f"archive holds {folder}/ but the bot is '{_bot_name(bot_name)}'")
        return name, 1
    if bot_name is None:
        raise PackageError("archive has no <name>.gbai folder at its top; put the package in one, "
                           "or give the bot name")
    return _bot_name(bot_name), 0


def _check_sizes(name: str, size: int, total: int, limits: PackageLimits) -> None:
    if size > limits.max_file_bytes:
        raise PackageError(f"entry '{_show(name)}' is {size} bytes; the limit is {limits.max_file_bytes}")
    if total > limits.max_total_bytes:
        raise PackageError(f"package expands to more than {limits.max_total_bytes} bytes "
                           f"(at least {total}); the limit is {limits.max_total_bytes}")


# --- zip ---------------------------------------------------------------------------------------------


def _end_of_central_directory(fileobj: BinaryIO, archive_size: int) -> tuple[int, int] | None:
    """(entry count, central directory size) from the EOCD record (ZIP64 if present), or None if absent.

    Read by hand so that limits apply before zipfile parses (and allocates for) every central record.
    """
    tail_size = min(archive_size, _EOCD_SIZE + _EOCD_MAX_COMMENT)
    fileobj.seek(archive_size - tail_size)
    tail = fileobj.read(tail_size)
    pos = tail.rfind(_EOCD_SIG)
    if pos < 0 or len(tail) - pos < _EOCD_SIZE:
        return None
    _, _, _, _, entries, cd_size, _, _ = struct.unpack("<4s4H2LH", tail[pos:pos + _EOCD_SIZE])
    locator_pos = pos - _ZIP64_LOCATOR_SIZE
    if locator_pos >= 0 and tail[locator_pos:locator_pos + 4] == _ZIP64_LOCATOR_SIG:
        (zip64_offset,) = struct.unpack("<Q", tail[locator_pos + 8:locator_pos + 16])
        if zip64_offset + 56 <= archive_size:
            fileobj.seek(zip64_offset)
            record = fileobj.read(56)
            if record[:4] == _ZIP64_EOCD_SIG:
                entries, cd_size = struct.unpack("<QQ", record[32:48])
    return entries, cd_size


def _check_zip_entry(info: zipfile.ZipInfo, limits: PackageLimits) -> None:
    name = _show(info.orig_filename)
    if info.flag_bits & 0x1:
        raise PackageError(f"entry '{name}' is encrypted; upload an unencrypted archive")
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == stat.S_IFLNK:
        raise PackageError(f"entry '{name}' is a symbolic link")
    if file_type not in _UNIX_FILE_TYPES_ALLOWED:
        raise PackageError(f"entry '{name}' is not a regular file")
    if info.compress_type not in _SUPPORTED_METHODS:
        raise PackageError(f"entry '{name}' uses an unsupported compression method ({info.compress_type})")
    if info.file_size > RATIO_CHECK_MIN_BYTES:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            raise PackageError(f"entry '{name}' expands {ratio:.0f} times its compressed size "
                               f"(limit {limits.max_ratio:g})")


def package_read_zip(fileobj: BinaryIO, *, bot_name: str | None = None,
                     limits: PackageLimits = DEFAULT_LIMITS) -> Package:
    """Validate and read a zipped package (seekable file object); raise PackageError on any violation.

    Layouts: every entry under one `<name>.gbai/` folder (bot name from the folder, lower-cased), or the
    folder's contents at the top (then `bot_name` is required). Order of checks: archive size, entry count
    and directory size (EOCD), names, types and declared sizes of every entry, layout, and only then the
    data, each entry with a bounded read that must match its declared size and checksum.
    """
    raw_entry_limit = limits.max_entries * ARCHIVE_ENTRY_SLACK
    archive_size = fileobj.seek(0, os.SEEK_END)
    archive_limit = limits.max_total_bytes + raw_entry_limit * ARCHIVE_OVERHEAD_PER_ENTRY
    if archive_size > archive_limit:
        raise PackageError(f"archive is {archive_size} bytes; the limit is {archive_limit}")
    eocd = _end_of_central_directory(fileobj, archive_size)
    if eocd is None:
        raise PackageError("not a zip archive")
    declared_entries, cd_size = eocd
    if declared_entries > raw_entry_limit:
        raise PackageError(f"archive has {declared_entries} entries; the limit is {raw_entry_limit}")
    if cd_size > raw_entry_limit * MAX_CENTRAL_RECORD_BYTES:
        raise PackageError(f"archive directory is {cd_size} bytes, too large for {raw_entry_limit} entries")
    fileobj.seek(0)
    try:
        archive = zipfile.ZipFile(fileobj)
    except UnicodeDecodeError as exc:  # a ValueError: caught before "not a zip archive" below
        raise PackageError(f"an entry name is not valid UTF-8 (byte {exc.object[exc.start:exc.start + 1]!r} at "
                           f"position {exc.start}), though the archive marks its names as UTF-8; "
                           f"re-create the archive with another tool") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, ValueError) as exc:
        raise PackageError("not a zip archive") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > raw_entry_limit:  # the EOCD count can lie; the parsed list cannot
            raise PackageError(f"archive has {len(infos)} entries; the limit is {raw_entry_limit}")
        selected: list[tuple[list[str], zipfile.ZipInfo]] = []
        for info in infos:
            parts = _relative_parts(_entry_name(info))
            if info.is_dir() or _is_ignored(parts):
                continue
            _check_zip_entry(info, limits)
            selected.append((parts, info))
        if not selected:
            raise PackageError(NO_FILES_MESSAGE)
        if len(selected) > limits.max_entries:
            raise PackageError(f"package has {len(selected)} files; the limit is {limits.max_entries}")
        total = 0
        for _, info in selected:
            total += info.file_size
            _check_sizes(info.orig_filename, info.file_size, total, limits)
        name, strip = _split_layout([parts for parts, _ in selected], bot_name)
        paths = ["/".join(parts[strip:]) for parts, _ in selected]
        _check_duplicates(paths)
        _check_storable(name, paths)
        _check_one_settings_file(paths)

        files: list[PackageFile] = []
        for path, (_, info) in zip(paths, selected, strict=True):
            files.append(PackageFile(path=path, data=_read_zip_entry(archive, info)))
    files.sort(key=lambda f: f.path)
    return Package(bot_name=name, files=files)


# The zip flag that says an entry's name is UTF-8; without it zipfile reads the name as IBM437 (the format's
# old default).
_ZIP_UTF8_FLAG = 0x800


def _entry_name(info: zipfile.ZipInfo) -> str:
    """The entry's name. Many tools write UTF-8 names without setting the flag (Windows' and older Linux
    zippers): read as IBM437, `açaí.md` became `a├ºa├¡.md`. A name without the flag whose bytes are valid UTF-8
    is taken as UTF-8 (IBM437 text with accents is almost never valid UTF-8)."""
    name = info.orig_filename
    if info.flag_bits & _ZIP_UTF8_FLAG or name.isascii():
        return name
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def _read_zip_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    name = _show(info.orig_filename)
    try:
        with archive.open(info) as stream:
            # zipfile stops at the declared size and checks the CRC there, so an entry that inflates past
            # its header ends in a checksum error; the +1 byte makes any overrun visible regardless.
            data = stream.read(info.file_size + 1)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, RuntimeError, NotImplementedError) as exc:
        raise PackageError(f"entry '{name}' does not match its declared size or checksum, "
                           f"or is damaged") from exc
    except Exception as exc:  # lzma/bz2 decoder errors have no common base class
        raise PackageError(f"entry '{name}' could not be decompressed") from exc
    if len(data) != info.file_size:
        raise PackageError(f"entry '{name}' does not match its declared size "
                           f"({info.file_size} bytes declared, {len(data)} read)")
    return data


# --- directory ---------------------------------------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block the open


def _open_root(folder: Path) -> int:
    try:
        return os.open(folder, _DIR_FLAGS)
    except OSError as exc:
        # O_NOFOLLOW makes a root swapped for a link after the is_symlink() check fail here (ELOOP).
        raise PackageError(f"package folder '{_show(folder.name)}' could not be opened "
                           f"({exc.strerror or 'error'})") from exc


def package_read_dir(path: Path, *, limits: PackageLimits = DEFAULT_LIMITS) -> Package:
    """Validate and read a `<name>.gbai` folder on disk; raise PackageError on any violation.

    Symbolic links anywhere (including the folder itself) are refused, never followed. The whole tree is
    listed and checked (names, file count, sizes) before any file content is read.
    """
    folder = Path(path)
    if not folder.name.lower().endswith(PACKAGE_SUFFIX) or len(folder.name) == len(PACKAGE_SUFFIX):
        raise PackageError(f"folder '{_show(folder.name)}' is not a package: its name must be <name>.gbai")
    name = _bot_name(folder.name[: -len(PACKAGE_SUFFIX)])
    if folder.is_symlink():
        raise PackageError(f"package folder '{_show(folder.name)}' is a symbolic link")
    root_fd = _open_root(folder)
    try:
        listed = _list_dir(root_fd, limits)
        if not listed:
            raise PackageError(NO_FILES_MESSAGE)
        total = 0
        for parts, size in listed:
            total += size
            _check_sizes("/".join(parts), size, total, limits)
        paths = ["/".join(parts) for parts, _ in listed]
        _check_duplicates(paths)
        _check_storable(name, paths)
        _check_one_settings_file(paths)
        files = [PackageFile(path=p, data=_read_disk_file(root_fd, parts, size, limits))
                 for p, (parts, size) in zip(paths, listed, strict=True)]
    finally:
        os.close(root_fd)
    files.sort(key=lambda f: f.path)
    return Package(bot_name=name, files=files)


def _list_dir(root_fd: int, limits: PackageLimits) -> list[tuple[list[str], int]]:
    """Every regular file below the root as (segments, size); no contents read."""
    files: list[tuple[list[str], int]] = []
    visited = 0
    stack: list[list[str]] = [[]]
    while stack:
        prefix = stack.pop()
        dir_fd = _open_path(root_fd, prefix, directory=True)
        try:
            with os.scandir(dir_fd) as entries:
                for entry in entries:
                    parts = _relative_parts("/".join([*prefix, entry.name]))
                    shown = _show("/".join(parts))
                    visited += 1
                    # Bounded walk: a tree of a million empty folders stops here, not after listing them all.
                    if visited > limits.max_entries * ARCHIVE_ENTRY_SLACK:
                        raise PackageError(f"folder has more than {limits.max_entries * ARCHIVE_ENTRY_SLACK} "
                                           f"entries; the limit is {limits.max_entries} files")
                    if entry.is_symlink():
                        raise PackageError(f"entry '{shown}' is a symbolic link")
                    if _is_ignored(parts):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(parts)
                        continue
                    info = entry.stat(follow_symlinks=False)
                    if not stat.S_ISREG(info.st_mode):
                        raise PackageError(f"entry '{shown}' is not a regular file")
                    files.append((parts, info.st_size))
                    if len(files) > limits.max_entries:
                        raise PackageError(f"package has more than {limits.max_entries} files; "
                                           f"the limit is {limits.max_entries}")
        finally:
            os.close(dir_fd)
    return files


def _open_path(root_fd: int, parts: list[str], *, directory: bool) -> int:
    """Open root/parts one component at a time with O_NOFOLLOW: a link swapped in after listing fails."""
    fd = os.dup(root_fd)
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        shown = _show("/".join(parts[: index + 1]))
        flags = _FILE_FLAGS if last and not directory else _DIR_FLAGS
        try:
            next_fd = os.open(part, flags, dir_fd=fd)
        except OSError as exc:
            raise PackageError(f"entry '{shown}' could not be opened (is it a symbolic link?)") from exc
        finally:
            os.close(fd)
        fd = next_fd
    return fd


def _read_disk_file(root_fd: int, parts: list[str], size: int, limits: PackageLimits) -> bytes:
    shown = _show("/".join(parts))
    fd = _open_path(root_fd, parts, directory=False)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PackageError(f"entry '{shown}' is not a regular file")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        remaining = size + 1  # one byte more than listed shows a file that grew since the listing
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) != size:
        raise PackageError(f"entry '{shown}' changed while the package was being read")
    if len(data) > limits.max_file_bytes:  # unreachable unless the listing lied; kept as the last word
        raise PackageError(f"entry '{shown}' is {len(data)} bytes; the limit is {limits.max_file_bytes}")
    return data


# --- classification (DriveMonitor, spec §4.2) ---------------------------------------------------------


def kb_name_of(path: str) -> str | None:
    """The KB a file belongs to: the first folder below a `*.gbkb/` segment (`x.gbkb/policies/a.pdf` ->
    `policies`), or None when the file is not at least one folder below `.gbkb/` (upstream cannot index
    those)."""
    parts = [part for part in path.split("/") if part]
    for index, part in enumerate(parts):
        if part.lower().endswith(".gbkb"):
            # Needs a folder AND a file after the .gbkb segment.
            return parts[index + 1] if len(parts) - index >= 3 else None
    return None


PROMPT_FILE_NAMES = ("prompt.md", "prompt.txt")


def package_holds_settings(path: str) -> bool:
    """True for a file that may hold a bot's settings, live or not: any `*config.csv` inside a `*.gbot/` folder at
    any depth (a backup or an old copy holds the same credentials, so viewers get it masked as well)."""
    parts = path.lower().split("/")
    return parts[-1].endswith("config.csv") and any(part.endswith(".gbot") for part in parts[:-1])


def _check_one_settings_file(paths: list[str]) -> None:
    """Two settings files (`demo.gbot/config.csv` and `backup.gbot/config.csv`) would be applied in turn, the
    last in key order winning: which one is the bot's is the author's call, not ours."""
    configs = [path for path in paths if package_classify(path) == "config"]
    if len(configs) > 1:
        raise PackageError(f"package holds {len(configs)} settings files ({', '.join(map(_show, configs[:5]))}); "
                           f"keep one <bot>.gbot/config.csv")


def package_classify(path: str) -> str:
    """`bas`, `kb`, `config`, `prompt`, `data` or `other` for a path inside a package (case-insensitive).

    The path is relative to the package (`demo.gbot/config.csv`), never a drive key with its `<bot>.gbai/`
    folder: a `*.gbai/` folder inside the package (`old.gbai/demo.gbot/config.csv`, a copied old package) is a
    plain folder, so its settings file is `other`."""
    lowered = path.lower()
    if lowered.endswith(".bas"):
        return "bas"
    if ".gbkb/" in lowered and os.path.splitext(lowered)[1] in KB_EXTENSIONS and kb_name_of(path) is not None:
        return "kb"
    # The bot's settings and prompt are files with exactly these names directly in its `.gbot/` folder, itself
    # directly in the package (as in every upstream package). Upstream takes any name ending so, anywhere: a
    # backup `old-config.csv`, or a copy of an old package (`old/demo.gbot/config.csv`), then replaced the live
    # settings, and removing it cleared them.
    parts = lowered.split("/")
    if len(parts) == 2 and parts[0].endswith(".gbot"):
        if parts[1] == "config.csv":
            return "config"
        if parts[1] in PROMPT_FILE_NAMES:
            return "prompt"
    if ".gbdata/" in lowered and lowered.endswith(".csv"):
        return "data"
    return "other"
