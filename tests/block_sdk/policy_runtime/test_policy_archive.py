"""Archive safety: every hostile archive is refused with a clear reason; good ones extract."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from block_sdk.policy_runtime.archive import (
    ArchiveLimits,
    detect_format,
    extract_archive,
    package_folder,
    read_member,
    sha256_hex,
    validate_archive,
)
from block_sdk.policy_runtime.errors import PolicyArchiveError, PolicyErrorCode
from tests.block_sdk.policy_runtime.policy_helpers import GOOD_FUNCTION, build_tar, build_zip

GOOD_MEMBERS = [
    ("code/function.py", GOOD_FUNCTION),
    ("code/requirements.txt", b"# nothing\n"),
    ("code/data/table.json", b'{"a": 1}'),
]


@pytest.mark.parametrize("fmt", ["zip", "tar.gz", "tar.xz"])
def test_each_supported_format_extracts_code_function_py(tmp_path: Path, fmt: str) -> None:
    if fmt == "zip":
        data = build_zip(GOOD_MEMBERS)
    else:
        data = build_tar(list(GOOD_MEMBERS), "gz" if fmt == "tar.gz" else "xz")
    info = extract_archive(data, tmp_path / "out")
    assert info.format == fmt
    assert info.sha256 == sha256_hex(data)
    assert (tmp_path / "out" / "code" / "function.py").read_bytes() == GOOD_FUNCTION
    assert (tmp_path / "out" / "code" / "data" / "table.json").read_bytes() == b'{"a": 1}'
    assert info.has_requirements
    assert set(info.manifest()) == {m for m, _ in GOOD_MEMBERS}


def _assert_refused(data: bytes, fragment: str, limits: ArchiveLimits | None = None) -> str:
    with pytest.raises(PolicyArchiveError) as excinfo:
        validate_archive(data, limits)
    assert excinfo.value.code == PolicyErrorCode.LOAD_ERROR
    assert fragment in excinfo.value.message, excinfo.value.message
    return excinfo.value.message


@pytest.mark.parametrize("name", ["../evil.py", "code/../../evil.py", "code/sub/../../../x"])
def test_zip_with_dotdot_is_refused(name: str) -> None:
    _assert_refused(build_zip([("code/function.py", GOOD_FUNCTION), (name, b"x")]), "'..'")


def test_tar_with_dotdot_is_refused() -> None:
    data = build_tar([("code/function.py", GOOD_FUNCTION), ("../../etc/cron.d/x", b"x")])
    _assert_refused(data, "'..'")


def test_zip_with_absolute_path_is_refused() -> None:
    data = build_zip([("code/function.py", GOOD_FUNCTION), ("/etc/passwd", b"x")])
    _assert_refused(data, "absolute path")


def test_tar_with_absolute_path_is_refused() -> None:
    data = build_tar([("code/function.py", GOOD_FUNCTION), ("/tmp/aios-evil", b"x")], "xz")
    _assert_refused(data, "absolute path")


def test_windows_style_paths_are_refused() -> None:
    _assert_refused(
        build_zip([("code/function.py", GOOD_FUNCTION), ("..\\evil.py", b"x")]), "backslash"
    )
    _assert_refused(build_zip([("code/function.py", GOOD_FUNCTION), ("C:x", b"x")]), "absolute")


def test_tar_symlink_pointing_out_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("code/escape")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc"
    data = build_tar([("code/function.py", GOOD_FUNCTION), link])
    _assert_refused(data, "is a link")
    with pytest.raises(PolicyArchiveError):
        extract_archive(data, tmp_path / "out")
    assert not (tmp_path / "out" / "code" / "escape").exists()


def test_tar_hardlink_is_refused() -> None:
    link = tarfile.TarInfo("code/passwd")
    link.type = tarfile.LNKTYPE
    link.linkname = "../../../etc/passwd"
    _assert_refused(build_tar([("code/function.py", GOOD_FUNCTION), link]), "is a link")


def test_zip_symlink_is_refused() -> None:
    data = build_zip([("code/function.py", GOOD_FUNCTION)], symlinks={"code/up": "../../.."})
    _assert_refused(data, "symbolic link")


@pytest.mark.parametrize(
    "kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE], ids=["fifo", "chr", "blk"]
)
def test_tar_device_files_and_fifos_are_refused(kind: bytes) -> None:
    special = tarfile.TarInfo("code/special")
    special.type = kind
    _assert_refused(build_tar([("code/function.py", GOOD_FUNCTION), special]), "not a regular")


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_archive_without_function_py_is_refused(fmt: str) -> None:
    members = [("code/other.py", b"x = 1\n"), ("function.py", GOOD_FUNCTION)]
    data = build_zip(members) if fmt == "zip" else build_tar(list(members))
    _assert_refused(data, "no code/function.py")


def test_zip_bomb_refused_by_compression_ratio() -> None:
    # 24 MiB of zeros deflate to ~24 KiB: a ratio near 1000, far beyond what code produces.
    data = build_zip([("code/function.py", GOOD_FUNCTION), ("code/zeros.bin", bytes(24 << 20))])
    assert len(data) < 200_000
    _assert_refused(data, "compression ratio")


def test_tar_gz_bomb_refused_while_decompressing() -> None:
    data = build_tar([("code/function.py", GOOD_FUNCTION), ("code/zeros.bin", bytes(24 << 20))])
    _assert_refused(data, "compression ratio")


def test_declared_sizes_over_the_limits_are_refused_before_decompressing() -> None:
    data = build_zip([("code/function.py", GOOD_FUNCTION), ("code/big.bin", os.urandom(4096))])
    _assert_refused(data, "per-file limit", ArchiveLimits(max_file_bytes=1024))
    _assert_refused(data, "uncompressed bytes", ArchiveLimits(max_total_bytes=2048))


def test_too_many_members_are_refused() -> None:
    members = [("code/function.py", GOOD_FUNCTION)] + [(f"code/f{i}.txt", b"x") for i in range(30)]
    _assert_refused(build_zip(members), "members", ArchiveLimits(max_files=10))
    _assert_refused(build_tar(list(members)), "more than 10 members", ArchiveLimits(max_files=10))


def test_zip_whose_header_lies_about_the_size_is_refused() -> None:
    # Shrink the declared uncompressed size of the data member in the central directory:
    # the real bytes no longer fit the declaration, which a bomb would exploit.
    payload = os.urandom(2000)
    data = bytearray(build_zip([("code/function.py", GOOD_FUNCTION), ("code/blob", payload)]))
    cd_offset = data.rfind(b"PK\x01\x02")  # the last central directory entry is code/blob
    struct.pack_into("<I", data, cd_offset + 24, 10)  # uncompressed size field
    with pytest.raises(PolicyArchiveError) as excinfo:
        validate_archive(bytes(data))
    assert "code/blob" in excinfo.value.message


def test_archive_over_the_compressed_size_limit_is_refused() -> None:
    data = build_zip(GOOD_MEMBERS)
    _assert_refused(data, "over the limit", ArchiveLimits(max_archive_bytes=len(data) - 1))


def test_duplicate_members_are_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("code/function.py", GOOD_FUNCTION)
        with pytest.warns(UserWarning):
            zf.writestr("code/function.py", b"import os; os.system('evil')")
    _assert_refused(buf.getvalue(), "duplicate")


def test_unknown_formats_and_garbage_are_refused() -> None:
    _assert_refused(b"\x00" * 100, "unsupported archive format")
    plain_tar = io.BytesIO()
    with tarfile.open(fileobj=plain_tar, mode="w") as tf:
        info = tarfile.TarInfo("code/function.py")
        info.size = len(GOOD_FUNCTION)
        tf.addfile(info, io.BytesIO(GOOD_FUNCTION))
    _assert_refused(plain_tar.getvalue(), "unsupported archive format")
    _assert_refused(b"\x1f\x8b" + b"garbage" * 10, "tar.gz")
    _assert_refused(b"PK\x03\x04" + b"garbage" * 10, "zip")
    assert detect_format(build_zip(GOOD_MEMBERS)) == "zip"


def test_extraction_refuses_a_non_empty_target(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "existing").write_text("x")
    with pytest.raises(PolicyArchiveError, match="not empty"):
        extract_archive(build_zip(GOOD_MEMBERS), tmp_path / "out")


def test_package_folder_is_reproducible_and_skips_caches(tmp_path: Path) -> None:
    code = tmp_path / "pol" / "code"
    (code / "__pycache__").mkdir(parents=True)
    (code / "function.py").write_bytes(GOOD_FUNCTION)
    (code / "helpers.py").write_text("X = 1\n")
    (code / "__pycache__" / "function.cpython-311.pyc").write_bytes(b"junk")
    first = package_folder(tmp_path / "pol")
    os.utime(code / "function.py", (1, 1))  # times must not change the bytes
    second = package_folder(code)  # the code/ folder itself works too
    assert first == second
    info = validate_archive(first)
    assert info.format == "tar.gz"
    assert sorted(m.path for m in info.files) == ["code/function.py", "code/helpers.py"]
    assert read_member(first, "code/helpers.py") == b"X = 1\n"
    assert read_member(first, "code/absent.py") is None


def test_package_folder_refuses_symlinks_and_missing_function(tmp_path: Path) -> None:
    code = tmp_path / "pol" / "code"
    code.mkdir(parents=True)
    with pytest.raises(PolicyArchiveError, match=r"function\.py"):
        package_folder(tmp_path / "pol")
    (code / "function.py").write_bytes(GOOD_FUNCTION)
    (code / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(PolicyArchiveError, match="symbolic link"):
        package_folder(tmp_path / "pol")
