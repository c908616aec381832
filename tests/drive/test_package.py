"""Reading .gbai packages from zips and folders: layouts, hostile archives, classification (spec §1, §4.2)."""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zipfile
from pathlib import Path

import pytest

from apps.drive.package import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_RATIO,
    DEFAULT_MAX_TOTAL_BYTES,
    Package,
    PackageError,
    PackageFile,
    PackageLimits,
    kb_name_of,
    package_classify,
    package_read_dir,
    package_read_zip,
)

SMALL = PackageLimits(max_entries=3, max_total_bytes=1000, max_file_bytes=600, max_ratio=DEFAULT_MAX_RATIO)


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = zipfile.ZIP_DEFLATED) -> io.BytesIO:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns on duplicate names, which some tests want
        with zipfile.ZipFile(buf, "w", method) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    buf.seek(0)
    return buf


def read_error(buf: io.BytesIO, **kwargs) -> str:
    with pytest.raises(PackageError) as caught:
        package_read_zip(buf, **kwargs)
    return str(caught.value)


def as_dict(package: Package) -> dict[str, bytes]:
    return {f.path: f.data for f in package.files}


def test_default_limits_follow_the_spec():
    assert (DEFAULT_LIMITS.max_entries, DEFAULT_LIMITS.max_total_bytes, DEFAULT_LIMITS.max_file_bytes,
            DEFAULT_LIMITS.max_ratio) == (DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TOTAL_BYTES, DEFAULT_MAX_FILE_BYTES, 100)
    assert (DEFAULT_MAX_ENTRIES, DEFAULT_MAX_TOTAL_BYTES, DEFAULT_MAX_FILE_BYTES) == (1000, 100 << 20, 10 << 20)


# --- good packages -----------------------------------------------------------------------------------


def test_zip_with_one_gbai_folder_gives_bot_name_and_relative_paths():
    buf = make_zip([
        ("Demo.gbai/", b""),
        ("Demo.gbai/demo.gbdialog/", b""),
        ("Demo.gbai/demo.gbdialog/start.bas", b'TALK "hi"\n'),
        ("Demo.gbai/demo.gbot/config.csv", b"name,value\nbot-name,Demo\n"),
        ("Demo.gbai/.DS_Store", b"junk"),
        ("__MACOSX/Demo.gbai/._start.bas", b"junk"),
    ])
    package = package_read_zip(buf)
    assert package.bot_name == "demo"
    assert package.files == [
        PackageFile("demo.gbdialog/start.bas", b'TALK "hi"\n'),
        PackageFile("demo.gbot/config.csv", b"name,value\nbot-name,Demo\n"),
    ]


def test_zip_of_the_folder_contents_needs_the_bot_name():
    entries = [("demo.gbdialog/start.bas", b"TALK 1"), ("./demo.gbkb/faq/a.md", b"# A")]
    package = package_read_zip(make_zip(entries), bot_name="Demo")
    assert package.bot_name == "demo"
    assert as_dict(package) == {"demo.gbdialog/start.bas": b"TALK 1", "demo.gbkb/faq/a.md": b"# A"}
    assert "give the bot name" in read_error(make_zip(entries))


def test_given_bot_name_must_match_the_gbai_folder():
    buf = make_zip([("demo.gbai/demo.gbdialog/start.bas", b"")])
    assert package_read_zip(buf, bot_name="demo").bot_name == "demo"
    assert read_error(buf, bot_name="other") == "archive holds demo.gbai/ but the bot is 'other'"


@pytest.mark.parametrize(
    "entries",
    [[], [("__MACOSX/._start.bas", b"junk"), (".DS_Store", b"junk"), ("demo.gbdialog/", b"")],
     [("demo.gbai/", b""), ("demo.gbai/demo.gbot/", b""), ("demo.gbai/.DS_Store", b"junk")]],
    ids=["empty", "only-litter", "only-folders"],
)
def test_a_zip_without_files_is_refused_even_with_the_bot_name(entries):
    """Read as a package with no files, the deploy removed every file the bot had as stale."""
    assert read_error(make_zip(entries), bot_name="demo").startswith("package holds no files")


def test_a_folder_without_files_is_refused(tmp_path):
    root = write_tree(tmp_path / "demo.gbai", {".DS_Store": b"junk"})
    (root / "demo.gbdialog").mkdir()
    with pytest.raises(PackageError, match="^package holds no files"):
        package_read_dir(root)


def test_stored_bzip2_and_lzma_entries_are_read():
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        package = package_read_zip(make_zip([("x.gbai/x.gbot/config.csv", b"a,1\n" * 100)], method))
        assert as_dict(package) == {"x.gbot/config.csv": b"a,1\n" * 100}


def test_small_highly_compressible_files_are_not_ratio_bombs():
    package = package_read_zip(make_zip([("x.gbai/x.gbkb/faq/blank.txt", b" " * 60_000)]))
    assert len(package.files[0].data) == 60_000


# --- layout and naming -------------------------------------------------------------------------------


def test_several_gbai_folders_are_rejected():
    buf = make_zip([("a.gbai/a.gbdialog/start.bas", b""), ("b.gbai/b.gbdialog/start.bas", b"")])
    assert read_error(buf) == "archive holds several .gbai folders (a.gbai, b.gbai); upload one bot at a time"


def test_files_outside_the_gbai_folder_are_rejected():
    buf = make_zip([("a.gbai/a.gbdialog/start.bas", b""), ("README.md", b"")])
    message = read_error(buf)
    assert message.startswith("archive has files outside a.gbai/ (e.g. 'README.md')")


@pytest.mark.parametrize("folder", ["My Bot.gbai", "-bot.gbai", "bot.name.gbai", f"{'b' * 64}.gbai"])
def test_bot_names_outside_the_rule_are_rejected(folder):
    message = read_error(make_zip([(f"{folder}/x.gbdialog/start.bas", b"")]))
    assert message.startswith(f"bot name '{folder[:-5]}' is not allowed: use lower-case letters, digits")


def test_given_bot_name_is_checked_too():
    assert "is not allowed" in read_error(make_zip([("x.gbdialog/start.bas", b"")]), bot_name="../etc")


# --- hostile names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [
    ("../../etc/passwd", "entry '../../etc/passwd' escapes the package"),
    ("demo.gbai/../../etc/passwd", "entry 'demo.gbai/../../etc/passwd' escapes the package"),
    ("demo.gbai/a/../../../x", "entry 'demo.gbai/a/../../../x' escapes the package"),
    ("/etc/passwd", "entry '/etc/passwd' is an absolute path"),
    ("C:/Windows/x.bas", "entry 'C:/Windows/x.bas' starts with a drive letter"),
    ("demo.gbai\\..\\..\\x", "entry 'demo.gbai\\..\\..\\x' contains a backslash; package paths use '/'"),
    ("demo.gbai/a\nb.bas", "entry 'demo.gbai/a\\nb.bas' has a control character in its name"),
])
def test_hostile_names_are_rejected(name, expected):
    assert read_error(make_zip([("demo.gbai/ok.bas", b""), (name, b"x")])) == expected


def test_hostile_directory_entry_is_rejected_even_though_directories_are_skipped():
    assert read_error(make_zip([("demo.gbai/ok.bas", b""), ("../", b"")])) == "entry '../' escapes the package"


def test_symlink_entry_is_rejected():
    link = zipfile.ZipInfo("demo.gbai/demo.gbdialog/start.bas")
    link.create_system = 3
    link.external_attr = 0o120777 << 16
    assert read_error(make_zip([(link, b"/etc/passwd")])) == (
        "entry 'demo.gbai/demo.gbdialog/start.bas' is a symbolic link")


def test_device_or_fifo_entry_is_rejected():
    fifo = zipfile.ZipInfo("demo.gbai/pipe")
    fifo.external_attr = 0o010644 << 16
    assert read_error(make_zip([(fifo, b"")])) == "entry 'demo.gbai/pipe' is not a regular file"


def test_duplicate_paths_are_rejected():
    buf = make_zip([("demo.gbai/a.bas", b"1"), ("demo.gbai/a.bas", b"2")])
    assert read_error(buf) == "entry 'a.bas' appears twice"


def test_case_insensitive_duplicates_are_rejected():
    buf = make_zip([("demo.gbai/demo.gbdialog/Start.bas", b"1"), ("demo.gbai/demo.gbdialog/start.bas", b"2")])
    assert read_error(buf) == (
        "entries 'demo.gbdialog/Start.bas' and 'demo.gbdialog/start.bas' differ only in case or accents")


def test_a_path_that_is_both_a_file_and_a_folder_is_rejected():
    buf = make_zip([("demo.gbai/demo.gbkb/docs", b"1"), ("demo.gbai/demo.gbkb/Docs/a.txt", b"2")])
    assert read_error(buf) == "'demo.gbkb/docs' is both a file and a folder ('demo.gbkb/Docs/...')"


def test_names_the_drive_cannot_store_are_rejected_before_anything_is_written():
    """A name segment over 255 bytes (86 CJK characters) or a key over the drive's limit failed the deploy half
    way, with the files sorted before it already written over the old package."""
    long_segment = "规" * 86 + ".md"
    assert "cannot be stored in the drive" in read_error(make_zip([(f"demo.gbai/demo.gbkb/faq/{long_segment}", b"x")]))
    deep = "/".join(["folder"] * 130) + "/a.md"  # under the archive's 1024 bytes, over the drive's 896
    assert "cannot be stored in the drive" in read_error(make_zip([(f"demo.gbai/demo.gbkb/{deep}", b"x")]))


def _patch_bytes(buf: io.BytesIO, old: bytes, new: bytes) -> io.BytesIO:
    return io.BytesIO(buf.getvalue().replace(old, new))


def test_utf8_names_without_the_utf8_flag_are_read_as_utf8():
    """Tools that write UTF-8 names without the flag (Windows', older Linux zippers): zipfile reads them as
    IBM437 and `açaí.md` became `a├ºa├¡.md` in the drive."""
    buf = make_zip([("demo.gbai/demo.gbkb/faq/XXXXXX.md", b"# Bowls")], method=zipfile.ZIP_STORED)
    unflagged = _patch_bytes(buf, b"XXXXXX", "açaí".encode())  # same length: every offset stays right
    assert as_dict(package_read_zip(unflagged)) == {"demo.gbkb/faq/açaí.md": b"# Bowls"}
    # Real IBM437 names (not valid UTF-8) keep their IBM437 reading.
    ibm = _patch_bytes(make_zip([("demo.gbai/demo.gbkb/faq/XX.md", b"x")], method=zipfile.ZIP_STORED), b"XX",
                       "é!".encode("cp437"))
    assert as_dict(package_read_zip(ibm)) == {"demo.gbkb/faq/é!.md": b"x"}


def test_nul_in_a_name_is_rejected_not_truncated():
    # zipfile truncates names at NUL when writing, so the NUL is put into both headers afterwards; reading
    # would otherwise see the harmless-looking prefix `demo.gbai/a`.
    buf = _patch_bytes(make_zip([("demo.gbai/a#/../../x", b"x")]), b"a#/", b"a\x00/")
    assert read_error(buf) == "entry 'demo.gbai/a\\x00/../../x' has a control character in its name"


def _set_flag_bits(buf: io.BytesIO, bits: int) -> io.BytesIO:
    data = bytearray(buf.getvalue())
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<H", data, local + 6, struct.unpack_from("<H", data, local + 6)[0] | bits)
    struct.pack_into("<H", data, central + 8, struct.unpack_from("<H", data, central + 8)[0] | bits)
    return io.BytesIO(bytes(data))


def test_encrypted_entry_is_rejected():
    buf = _set_flag_bits(make_zip([("demo.gbai/secret.bas", b"x")]), 0x1)
    assert read_error(buf) == "entry 'demo.gbai/secret.bas' is encrypted; upload an unencrypted archive"


def test_an_entry_name_flagged_utf8_that_is_not_utf8_is_named_as_such():
    """zipfile raised UnicodeDecodeError (a ValueError), reported as "not a zip archive"."""
    buf = _set_flag_bits(make_zip([("demo.gbai/caf\u00e9.md", b"x")]), 0x800)
    data = buf.getvalue().replace("caf\u00e9".encode(), b"caf\xff\xfe")
    error = read_error(io.BytesIO(data))
    assert error.startswith("an entry name is not valid UTF-8 (byte b'\\xff' at position 13)"), error


def test_not_a_zip():
    assert read_error(io.BytesIO(b"this is not a zip")) == "not a zip archive"
    assert read_error(io.BytesIO(b"")) == "not a zip archive"


# --- bombs and limits --------------------------------------------------------------------------------


def test_too_many_entries_rejected_before_parsing_the_directory():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for index in range(100_001):
            archive.writestr(str(index), b"")
    limit = DEFAULT_MAX_ENTRIES * 4
    assert read_error(buf) == f"archive has 100001 entries; the limit is {limit}"


def test_file_count_over_the_limit_is_rejected():
    buf = make_zip([(f"demo.gbai/f{i}.txt", b"x") for i in range(4)])
    assert read_error(buf, limits=SMALL) == "package has 4 files; the limit is 3"


def test_ratio_bomb_is_rejected_before_inflating():
    buf = make_zip([("bomb.gbai/bomb.gbkb/faq/zeros.txt", bytes(50 * 1024 * 1024))])
    message = read_error(buf)
    assert re.fullmatch(r"entry 'bomb.gbai/bomb.gbkb/faq/zeros.txt' expands \d+ times its compressed size "
                        r"\(limit 100\)", message), message


def test_declared_file_size_over_the_limit_is_rejected():
    buf = make_zip([("demo.gbai/big.txt", os.urandom(700))])
    assert read_error(buf, limits=SMALL) == "entry 'demo.gbai/big.txt' is 700 bytes; the limit is 600"


def test_declared_total_over_the_limit_is_rejected():
    buf = make_zip([("demo.gbai/a.txt", os.urandom(500)), ("demo.gbai/b.txt", os.urandom(501))])
    assert read_error(buf, limits=SMALL) == (
        "package expands to more than 1000 bytes (at least 1001); the limit is 1000")


def _patch_declared_size(buf: io.BytesIO, new_size: int) -> io.BytesIO:
    """Make the (single) entry's headers claim `new_size` uncompressed bytes while the data stays."""
    data = bytearray(buf.getvalue())
    local = data.index(b"PK\x03\x04")
    struct.pack_into("<L", data, local + 22, new_size)
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<L", data, central + 24, new_size)
    return io.BytesIO(bytes(data))


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_entry_larger_than_its_header_says_is_rejected(method):
    buf = _patch_declared_size(make_zip([("demo.gbai/liar.txt", b"A" * 5000)], method), 10)
    message = read_error(buf)
    assert message.startswith("entry 'demo.gbai/liar.txt' does not match its declared size"), message


def test_central_directory_claiming_huge_size_is_rejected():
    buf = make_zip([("demo.gbai/a.txt", b"x")])
    data = bytearray(buf.getvalue())
    eocd = data.rindex(b"PK\x05\x06")
    struct.pack_into("<L", data, eocd + 12, 0xFFFFFFF0)
    message = read_error(io.BytesIO(bytes(data)))
    assert message.startswith("archive directory is 4294967280 bytes"), message


def test_archive_file_larger_than_the_limits_allow_is_rejected():
    buf = make_zip([("demo.gbai/a.txt", os.urandom(20_000))], zipfile.ZIP_STORED)
    message = read_error(buf, limits=PackageLimits(max_entries=1, max_total_bytes=100, max_file_bytes=100,
                                                   max_ratio=100))
    assert re.fullmatch(r"archive is \d+ bytes; the limit is \d+", message), message


# --- directories -------------------------------------------------------------------------------------


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def test_directory_package_is_read(tmp_path):
    root = write_tree(tmp_path / "Shop.gbai", {
        "shop.gbdialog/start.bas": b'TALK "hi"',
        "shop.gbkb/faq/a.md": b"# A",
        "shop.gbot/config.csv": b"a,1\n",
        ".DS_Store": b"junk",
    })
    (root / "empty.gbtheme").mkdir()
    package = package_read_dir(root)
    assert package.bot_name == "shop"
    assert as_dict(package) == {"shop.gbdialog/start.bas": b'TALK "hi"', "shop.gbkb/faq/a.md": b"# A",
                                "shop.gbot/config.csv": b"a,1\n"}


def test_directory_symlinked_file_is_rejected(tmp_path):
    root = write_tree(tmp_path / "shop.gbai", {"shop.gbdialog/start.bas": b"x"})
    secret = write_tree(tmp_path / "outside", {"secret.txt": b"s"}) / "secret.txt"
    (root / "shop.gbdialog" / "tool.bas").symlink_to(secret)
    with pytest.raises(PackageError, match=r"^entry 'shop.gbdialog/tool.bas' is a symbolic link$"):
        package_read_dir(root)


def test_directory_symlinked_folder_is_rejected(tmp_path):
    root = write_tree(tmp_path / "shop.gbai", {"shop.gbdialog/start.bas": b"x"})
    (root / "shop.gbkb").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(PackageError, match=r"^entry 'shop.gbkb' is a symbolic link$"):
        package_read_dir(root)


def test_directory_that_is_itself_a_symlink_is_rejected(tmp_path):
    real = write_tree(tmp_path / "real.gbai", {"a.bas": b""})
    (tmp_path / "shop.gbai").symlink_to(real, target_is_directory=True)
    with pytest.raises(PackageError, match="is a symbolic link"):
        package_read_dir(tmp_path / "shop.gbai")


def test_directory_fifo_is_rejected(tmp_path):
    root = write_tree(tmp_path / "shop.gbai", {"a.bas": b""})
    os.mkfifo(root / "pipe")
    with pytest.raises(PackageError, match=r"^entry 'pipe' is not a regular file$"):
        package_read_dir(root)


def test_directory_must_be_named_gbai(tmp_path):
    root = write_tree(tmp_path / "shop", {"a.bas": b""})
    with pytest.raises(PackageError, match="its name must be <name>.gbai"):
        package_read_dir(root)


def test_directory_limits_checked_before_reading(tmp_path):
    root = write_tree(tmp_path / "shop.gbai", {f"f{i}.txt": b"x" for i in range(4)})
    with pytest.raises(PackageError, match=r"^package has more than 3 files; the limit is 3$"):
        package_read_dir(root, limits=SMALL)
    big = write_tree(tmp_path / "big.gbai", {"big.txt": b"x" * 700})
    with pytest.raises(PackageError, match=r"^entry 'big.txt' is 700 bytes; the limit is 600$"):
        package_read_dir(big, limits=SMALL)


def test_directory_with_case_duplicates_is_rejected(tmp_path):
    root = write_tree(tmp_path / "shop.gbai", {"A.bas": b"1", "a.bas": b"2"})
    with pytest.raises(PackageError, match="differ only in case"):
        package_read_dir(root)


def test_directory_with_backslash_in_a_file_name_is_rejected(tmp_path):
    root = write_tree(tmp_path / "shop.gbai", {"a\\..\\b.bas": b"1"})
    with pytest.raises(PackageError, match="contains a backslash"):
        package_read_dir(root)


# --- classification ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "kind"), [
    ("demo.gbdialog/start.bas", "bas"),
    ("START.BAS", "bas"),
    ("demo.gbai/demo.gbdialog/tools/book.bas", "bas"),
    ("demo.gbkb/faq/opening-hours.md", "kb"),
    ("demo.gbkb/Policies/Manual.PDF", "kb"),
    ("demo.gbkb/faq/sub/deep.txt", "kb"),
    ("demo.gbkb/loose.md", "other"),
    ("demo.gbkb/faq/image.png", "other"),
    ("demo.gbot/config.csv", "config"),
    ("demo.gbot/CONFIG.CSV", "config"),
    ("demo.gbot/PROMPT.md", "prompt"),
    ("demo.gbot/prompt.txt", "prompt"),
    # Paths are relative to the package: a `*.gbai/` folder inside it is a copy of an old package.
    ("demo.gbai/demo.gbot/config.csv", "other"),
    ("old.gbai/demo.gbot/config.csv", "other"),
    ("old.gbai/demo.gbot/PROMPT.md", "other"),
    # Only those exact names directly in .gbot/ (a backup must not become the bot's settings or prompt).
    ("demo.gbot/old-config.csv", "other"),
    ("demo.gbot/myconfig.csv", "other"),
    ("demo.gbot/backup/config.csv", "other"),
    ("demo.gbot/system-prompt.md", "other"),
    ("demo.gbot/old/PROMPT.md", "other"),
    ("demo.gbdialog/config.csv", "other"),
    # Only the .gbot/ folder directly in the package: a copy of an old package is not the bot's settings.
    ("old/demo.gbot/config.csv", "other"),
    ("demo.gbai/old/demo.gbot/config.csv", "other"),
    ("backup/demo.gbot/PROMPT.md", "other"),
    ("demo.gbdata/products.csv", "data"),
    ("demo.gbdata/readme.md", "other"),
    ("demo.gbtheme/style.css", "other"),
    ("README.md", "other"),
])
def test_classify(path, kind):
    assert package_classify(path) == kind


def test_kb_name_is_the_first_folder_below_gbkb():
    assert kb_name_of("demo.gbkb/faq/opening-hours.md") == "faq"
    assert kb_name_of("demo.gbai/demo.gbkb/Policies/sub/x.pdf") == "Policies"
    assert kb_name_of("demo.gbkb/loose.md") is None
    assert kb_name_of("demo.gbot/config.csv") is None


# --- the sample package ------------------------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "demo.gbai"


def test_sample_package_reads_and_classifies():
    package = package_read_dir(SAMPLE)
    assert package.bot_name == "demo"
    kinds = {f.path: package_classify(f.path) for f in package.files}
    assert kinds == {
        "demo.gbdialog/book-visit.bas": "bas",
        "demo.gbdialog/start.bas": "bas",
        "demo.gbkb/faq/opening-hours.md": "kb",
        "demo.gbkb/faq/visits.txt": "kb",
        "demo.gbot/config.csv": "config",
    }


def test_sample_package_zipped_reads_the_same(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(SAMPLE.rglob("*")):
            archive.write(file, file.relative_to(SAMPLE.parent).as_posix())
    buf.seek(0)
    assert package_read_zip(buf) == package_read_dir(SAMPLE)


def test_missing_directory_is_a_package_error(tmp_path):
    with pytest.raises(PackageError, match=r"^package folder 'gone.gbai' could not be opened"):
        package_read_dir(tmp_path / "gone.gbai")


def test_a_package_with_two_settings_files_is_refused():
    """Both were applied in key order: `zz-backup.gbot/config.csv` silently replaced the bot's settings."""
    buf = make_zip([("demo.gbai/demo.gbot/config.csv", b"bot-name,Demo\n"),
                    ("demo.gbai/zz-backup.gbot/config.csv", b"bot-name,Old\n")])
    assert read_error(buf) == ("package holds 2 settings files (demo.gbot/config.csv, zz-backup.gbot/config.csv); "
                               "keep one <bot>.gbot/config.csv")
    buf = make_zip([("demo.gbai/demo.gbot/config.csv", b"bot-name,Demo\n"),
                    ("demo.gbai/old/demo.gbot/config.csv", b"bot-name,Old\n")])
    assert as_dict(package_read_zip(buf))["old/demo.gbot/config.csv"] == b"bot-name,Old\n"  # a plain file
    # A copied old package (`old.gbai/`) inside the package is plain files too, not a second settings file.
    buf = make_zip([("demo.gbai/demo.gbot/config.csv", b"bot-name,Demo\n"),
                    ("demo.gbai/old.gbai/demo.gbot/config.csv", b"bot-name,Old\n")])
    assert as_dict(package_read_zip(buf))["old.gbai/demo.gbot/config.csv"] == b"bot-name,Old\n"
