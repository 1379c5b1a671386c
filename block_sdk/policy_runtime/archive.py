"""Safe reading, extraction and packaging of policy archives (.zip, .tar.gz, .tar.xz).

A policy archive is untrusted input. Nothing here uses ``extractall``: every member is checked
(no absolute paths, no ``..``, no links, no device files or fifos), sizes are bounded both by
what the headers declare and by the bytes actually decompressed, and files are written one by
one with ``O_EXCL | O_NOFOLLOW`` into a directory the caller owns.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import lzma
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from block_sdk.policy_runtime.errors import PolicyArchiveError

log = logging.getLogger("aios.policy_runtime.archive")

FUNCTION_PATH = "code/function.py"
REQUIREMENTS_PATH = "code/requirements.txt"

_CHUNK = 64 * 1024
_MiB = 1024 * 1024
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# What a decompressor raises on corrupt or truncated input.
_DECOMPRESS_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
)
_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"
# What package_folder leaves out: build litter that has no business in a policy archive.
_PACKAGE_SKIP_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".venv"})
_PACKAGE_SKIP_SUFFIXES = (".pyc", ".pyo")
_PACKAGE_SKIP_NAMES = frozenset({".DS_Store"})


@dataclass(frozen=True)
class ArchiveLimits:
    """Bounds applied to every archive. Defaults fit policy code with a few data files."""

    max_archive_bytes: int = 64 * _MiB  # compressed size of the archive itself
    max_total_bytes: int = 128 * _MiB  # sum of uncompressed member sizes
    max_file_bytes: int = 32 * _MiB  # one uncompressed member
    max_files: int = 1000  # members, directories included
    # Zip-bomb guard: uncompressed/compressed above this is refused, but only once the data is
    # large enough to matter (small text files legitimately compress very well).
    max_compression_ratio: float = 200.0
    ratio_check_min_bytes: int = 1 * _MiB

    @classmethod
    def from_env(cls) -> ArchiveLimits:
        """Defaults, overridden by ``AIOS_POLICY_ARCHIVE_MAX_*`` environment variables."""
        overrides: dict[str, float | int] = {}
        for name, env, kind in (
            ("max_archive_bytes", "AIOS_POLICY_ARCHIVE_MAX_BYTES", int),
            ("max_total_bytes", "AIOS_POLICY_ARCHIVE_MAX_TOTAL_BYTES", int),
            ("max_file_bytes", "AIOS_POLICY_ARCHIVE_MAX_FILE_BYTES", int),
            ("max_files", "AIOS_POLICY_ARCHIVE_MAX_FILES", int),
            ("max_compression_ratio", "AIOS_POLICY_ARCHIVE_MAX_RATIO", float),
        ):
            raw = os.environ.get(env)
            if raw:
                overrides[name] = kind(raw)
        return replace(cls(), **overrides)


DEFAULT_LIMITS = ArchiveLimits()


@dataclass(frozen=True)
class ArchiveMember:
    """One regular file of a validated archive."""

    path: str  # normalised relative POSIX path, e.g. "code/function.py"
    size: int
    sha256: str


@dataclass(frozen=True)
class ArchiveInfo:
    """What a validated archive holds."""

    format: str  # "zip" | "tar.gz" | "tar.xz"
    sha256: str  # of the archive bytes
    size: int  # of the archive bytes
    total_bytes: int  # uncompressed
    files: tuple[ArchiveMember, ...] = field(default_factory=tuple)
    directories: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_requirements(self) -> bool:
        return any(m.path == REQUIREMENTS_PATH for m in self.files)

    def manifest(self) -> dict[str, str]:
        """``{relative path: sha256}`` of every regular file."""
        return {m.path: m.sha256 for m in self.files}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def detect_format(data: bytes) -> str:
    """Tell the archive format from its magic bytes (file names are not trusted)."""
    if data.startswith(_ZIP_MAGIC):
        return "zip"
    if data.startswith(_GZIP_MAGIC):
        return "tar.gz"
    if data.startswith(_XZ_MAGIC):
        return "tar.xz"
    raise PolicyArchiveError("unsupported archive format: expected .zip, .tar.gz or .tar.xz")


def safe_member_path(name: str) -> PurePosixPath | None:
    """Normalise a member name, or refuse it. ``None`` means the archive root itself (``./``)."""
    if not name or "\x00" in name:
        raise PolicyArchiveError(f"archive member has an invalid name: {name!r}")
    if "\\" in name:
        # A backslash is a separator on Windows: "..\\x" would escape there. Refuse outright.
        raise PolicyArchiveError(f"archive member name contains a backslash: {name!r}")
    if name.startswith("/") or _WINDOWS_DRIVE.match(name):
        raise PolicyArchiveError(f"archive member has an absolute path: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PolicyArchiveError(f"archive member escapes the archive with '..': {name!r}")
    if not parts:
        return None
    if len(name) > 1024 or any(len(p) > 255 for p in parts):
        raise PolicyArchiveError(f"archive member name is too long: {name[:80]!r}...")
    return PurePosixPath(*parts)


class _Budget:
    """Counts members and bytes across the whole archive, refusing as soon as a bound is hit."""

    def __init__(self, limits: ArchiveLimits, archive_size: int) -> None:
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.files = 0
        self.total = 0

    def add_member(self, name: str) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise PolicyArchiveError(
                f"archive has more than {self.limits.max_files} members (at {name!r})"
            )

    def check_declared(self, name: str, declared: int) -> None:
        if declared > self.limits.max_file_bytes:
            raise PolicyArchiveError(
                f"archive member {name!r} declares {declared} bytes, "
                f"over the per-file limit of {self.limits.max_file_bytes}"
            )
        if self.total + declared > self.limits.max_total_bytes:
            raise PolicyArchiveError(
                f"archive declares more than {self.limits.max_total_bytes} uncompressed bytes"
            )

    def add_bytes(self, name: str, n: int, file_so_far: int) -> None:
        self.total += n
        if file_so_far > self.limits.max_file_bytes:
            raise PolicyArchiveError(
                f"archive member {name!r} decompresses past the per-file limit of "
                f"{self.limits.max_file_bytes} bytes"
            )
        if self.total > self.limits.max_total_bytes:
            raise PolicyArchiveError(
                f"archive decompresses past {self.limits.max_total_bytes} bytes (zip bomb?)"
            )
        self._check_ratio()

    def _check_ratio(self) -> None:
        if self.total < self.limits.ratio_check_min_bytes:
            return
        ratio = self.total / self.archive_size
        if ratio > self.limits.max_compression_ratio:
            raise PolicyArchiveError(
                f"archive compression ratio exceeds {self.limits.max_compression_ratio:g} "
                f"({self.total} bytes from {self.archive_size}): refusing a likely zip bomb"
            )


def _read_counted(
    stream: io.BufferedIOBase | zipfile.ZipExtFile,
    name: str,
    declared: int,
    budget: _Budget,
) -> Iterator[bytes]:
    """Yield a member's bytes, counting what is really decompressed (headers can lie)."""
    seen = 0
    while True:
        try:
            chunk = stream.read(_CHUNK)
        except _DECOMPRESS_ERRORS as exc:
            raise PolicyArchiveError(f"corrupt archive member {name!r}: {exc}") from exc
        if not chunk:
            break
        seen += len(chunk)
        if seen > declared:
            raise PolicyArchiveError(
                f"archive member {name!r} holds more bytes than its header declares ({declared})"
            )
        budget.add_bytes(name, len(chunk), seen)
        yield chunk
    if seen != declared:
        raise PolicyArchiveError(
            f"archive member {name!r} is truncated ({seen} of {declared} bytes)"
        )


def _iter_zip(
    data: bytes, budget: _Budget
) -> Iterator[tuple[PurePosixPath, bool, Iterator[bytes] | None]]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise PolicyArchiveError(f"not a valid zip archive: {exc}") from exc
    with zf:
        infos = zf.infolist()
        if len(infos) > budget.limits.max_files:
            raise PolicyArchiveError(
                f"archive has {len(infos)} members, over the limit of {budget.limits.max_files}"
            )
        declared_total = sum(i.file_size for i in infos)
        if declared_total > budget.limits.max_total_bytes:
            raise PolicyArchiveError(
                f"archive declares {declared_total} uncompressed bytes, "
                f"over the limit of {budget.limits.max_total_bytes}"
            )
        for info in infos:
            budget.add_member(info.filename)
            path = safe_member_path(info.filename)
            mode = (info.external_attr >> 16) & 0xFFFF
            kind = stat.S_IFMT(mode)
            if kind == stat.S_IFLNK:
                raise PolicyArchiveError(f"archive member {info.filename!r} is a symbolic link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise PolicyArchiveError(
                    f"archive member {info.filename!r} is not a regular file or directory"
                )
            if info.flag_bits & 0x1:
                raise PolicyArchiveError(f"archive member {info.filename!r} is encrypted")
            if info.is_dir() or kind == stat.S_IFDIR:
                if path is not None:
                    yield path, True, None
                continue
            if path is None:
                raise PolicyArchiveError(f"archive member has no file name: {info.filename!r}")
            budget.check_declared(info.filename, info.file_size)
            ratio = info.file_size / max(info.compress_size, 1)
            if (
                info.file_size >= budget.limits.ratio_check_min_bytes
                and ratio > budget.limits.max_compression_ratio
            ):
                raise PolicyArchiveError(
                    f"archive member {info.filename!r} has a compression ratio of {ratio:.0f}, "
                    f"over {budget.limits.max_compression_ratio:g}: refusing a likely zip bomb"
                )
            try:
                with zf.open(info) as stream:
                    yield path, False, _read_counted(stream, info.filename, info.file_size, budget)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
                raise PolicyArchiveError(f"corrupt zip member {info.filename!r}: {exc}") from exc
            except (NotImplementedError, RuntimeError) as exc:
                raise PolicyArchiveError(
                    f"unsupported zip member {info.filename!r}: {exc}"
                ) from exc


def _iter_tar(
    data: bytes, fmt: str, budget: _Budget
) -> Iterator[tuple[PurePosixPath, bool, Iterator[bytes] | None]]:
    # Stream mode ("r|"): one sequential pass over the decompressed data, never a seek.
    mode = "r|gz" if fmt == "tar.gz" else "r|xz"
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode=mode)  # noqa: SIM115 - closed below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PolicyArchiveError(f"not a valid {fmt} archive: {exc}") from exc
    try:
        while True:
            try:
                member = tf.next()
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise PolicyArchiveError(f"corrupt {fmt} archive: {exc}") from exc
            if member is None:
                break
            budget.add_member(member.name)
            path = safe_member_path(member.name)
            if member.issym() or member.islnk():
                raise PolicyArchiveError(
                    f"archive member {member.name!r} is a link (to {member.linkname!r})"
                )
            if member.isdir():
                if path is not None:
                    yield path, True, None
                continue
            if not member.isreg() or member.issparse():
                raise PolicyArchiveError(
                    f"archive member {member.name!r} is not a regular file or directory "
                    "(device, fifo or sparse file)"
                )
            if path is None:
                raise PolicyArchiveError(f"archive member has no file name: {member.name!r}")
            budget.check_declared(member.name, member.size)
            stream = tf.extractfile(member)
            if stream is None:  # pragma: no cover - isreg() members always have a stream
                raise PolicyArchiveError(f"archive member {member.name!r} cannot be read")
            try:
                yield path, False, _read_counted(stream, member.name, member.size, budget)
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise PolicyArchiveError(f"corrupt {fmt} member {member.name!r}: {exc}") from exc
    finally:
        tf.close()


def _iter_members(
    data: bytes, limits: ArchiveLimits
) -> tuple[str, Iterator[tuple[PurePosixPath, bool, Iterator[bytes] | None]]]:
    if len(data) > limits.max_archive_bytes:
        raise PolicyArchiveError(
            f"archive is {len(data)} bytes, over the limit of {limits.max_archive_bytes}"
        )
    fmt = detect_format(data)
    budget = _Budget(limits, len(data))
    if fmt == "zip":
        return fmt, _iter_zip(data, budget)
    return fmt, _iter_tar(data, fmt, budget)


def _walk(data: bytes, limits: ArchiveLimits, sink: _Sink) -> ArchiveInfo:
    fmt, members = _iter_members(data, limits)
    files: list[ArchiveMember] = []
    dirs: list[str] = []
    seen: set[str] = set()
    total = 0
    for path, is_dir, chunks in members:
        key = path.as_posix()
        if is_dir:
            dirs.append(key)
            sink.directory(path)
            continue
        if key in seen:
            raise PolicyArchiveError(f"archive has a duplicate member {key!r}")
        seen.add(key)
        digest = hashlib.sha256()
        size = 0
        assert chunks is not None
        with sink.file(path) as out:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        total += size
        files.append(ArchiveMember(key, size, digest.hexdigest()))
    if FUNCTION_PATH not in seen:
        raise PolicyArchiveError(
            f"archive has no {FUNCTION_PATH} (a policy archive holds code/function.py "
            "and optionally code/requirements.txt)"
        )
    return ArchiveInfo(
        format=fmt,
        sha256=sha256_hex(data),
        size=len(data),
        total_bytes=total,
        files=tuple(files),
        directories=tuple(dirs),
    )


class _NullWriter:
    def write(self, _chunk: bytes) -> None:
        return None

    def __enter__(self) -> _NullWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None


class _BufferWriter(_NullWriter):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)


class _Sink:
    """Where validated members go: nowhere (validation) or a destination directory."""

    def directory(self, path: PurePosixPath) -> None:
        return None

    def file(self, path: PurePosixPath) -> _NullWriter | io.BufferedWriter:
        return _NullWriter()


class _DirectorySink(_Sink):
    def __init__(self, dest: Path) -> None:
        self.dest = dest

    def _target(self, path: PurePosixPath) -> Path:
        target = self.dest.joinpath(*path.parts)
        # Defence in depth: the name checks above already rule this out.
        if not target.resolve().is_relative_to(self.dest.resolve()):
            raise PolicyArchiveError(f"archive member {path.as_posix()!r} escapes the target")
        return target

    def directory(self, path: PurePosixPath) -> None:
        target = self._target(path)
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise PolicyArchiveError(f"archive member {path.as_posix()!r} clashes with a file")
        target.mkdir(mode=0o755, parents=True, exist_ok=True)

    def file(self, path: PurePosixPath) -> io.BufferedWriter:
        target = self._target(path)
        parent = target.parent
        if parent.exists() and not parent.is_dir():
            raise PolicyArchiveError(f"archive member {path.as_posix()!r} clashes with a file")
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(target, flags, 0o644)
        except FileExistsError as exc:
            raise PolicyArchiveError(f"archive has a duplicate member {path.as_posix()!r}") from exc
        except IsADirectoryError as exc:
            raise PolicyArchiveError(
                f"archive member {path.as_posix()!r} clashes with a directory"
            ) from exc
        return os.fdopen(fd, "wb")


def validate_archive(data: bytes, limits: ArchiveLimits | None = None) -> ArchiveInfo:
    """Check an archive fully (every member decompressed and counted) without writing anything.

    Raises ``PolicyArchiveError`` with a message that says what is wrong.
    """
    return _walk(data, limits or DEFAULT_LIMITS, _Sink())


def extract_archive(data: bytes, dest: Path, limits: ArchiveLimits | None = None) -> ArchiveInfo:
    """Extract a validated archive into ``dest``, which must not exist or be empty.

    On error ``dest`` may hold a partial tree: callers extract into a staging directory and
    delete it on failure (see ``PolicyCache``).
    """
    dest = Path(dest)
    dest.mkdir(mode=0o755, parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise PolicyArchiveError(f"extraction target {dest} is not empty")
    info = _walk(data, limits or DEFAULT_LIMITS, _DirectorySink(dest))
    log.debug(
        "policy_archive_extracted sha256=%s files=%d bytes=%d dest=%s",
        info.sha256,
        len(info.files),
        info.total_bytes,
        dest,
    )
    return info


class _MemorySink(_Sink):
    """Keeps the bytes of the wanted members, discards the others."""

    def __init__(self, wanted: set[PurePosixPath]) -> None:
        self.wanted = wanted
        self.found: dict[PurePosixPath, _BufferWriter] = {}

    def file(self, path: PurePosixPath) -> _NullWriter:
        if path in self.wanted:
            self.found[path] = _BufferWriter()
            return self.found[path]
        return _NullWriter()


def read_member(data: bytes, member: str, limits: ArchiveLimits | None = None) -> bytes | None:
    """The bytes of one member (e.g. for a code preview), or ``None`` when absent.

    The whole archive is validated on the way, so an unsafe archive raises even here.
    """
    wanted = safe_member_path(member)
    if wanted is None:
        return None
    sink = _MemorySink({wanted})
    _walk(data, limits or DEFAULT_LIMITS, sink)
    buf = sink.found.get(wanted)
    return b"".join(buf.chunks) if buf is not None else None


def package_folder(folder: str | os.PathLike[str], limits: ArchiveLimits | None = None) -> bytes:
    """Build a reproducible .tar.gz policy archive from a folder.

    ``folder`` is either the ``code/`` folder itself (holding ``function.py``) or a folder that
    contains ``code/``. Byte-identical input gives byte-identical output (sorted members,
    zeroed times and owners), so the sha256 is stable. Symbolic links are refused; caches
    (``__pycache__``, ``*.pyc``, VCS folders) are left out.
    """
    root = Path(folder)
    if (root / "code" / "function.py").is_file():
        code_dir = root / "code"
    elif (root / "function.py").is_file():
        code_dir = root
    else:
        raise PolicyArchiveError(f"{root} holds neither code/function.py nor function.py")

    entries: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(code_dir, followlinks=False):
        current = Path(dirpath)
        for name in list(dirnames):
            if name in _PACKAGE_SKIP_DIRS:
                dirnames.remove(name)
            elif (current / name).is_symlink():
                raise PolicyArchiveError(f"refusing to package a symbolic link: {current / name}")
        dirnames.sort()
        rel_dir = current.relative_to(code_dir)
        entries.append(((PurePosixPath("code") / rel_dir.as_posix()).as_posix(), current))
        for name in sorted(filenames):
            path = current / name
            if name in _PACKAGE_SKIP_NAMES or name.endswith(_PACKAGE_SKIP_SUFFIXES):
                continue
            if path.is_symlink():
                raise PolicyArchiveError(f"refusing to package a symbolic link: {path}")
            if not path.is_file():
                raise PolicyArchiveError(f"refusing to package a non-regular file: {path}")
            entries.append(((PurePosixPath("code") / rel_dir.as_posix() / name).as_posix(), path))
    entries.sort(key=lambda e: e[0])

    buf = io.BytesIO()
    # mtime=0 and no file name in the gzip header keep the output reproducible.
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tf,
    ):
        for arcname, path in entries:
            info = tarfile.TarInfo(arcname)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
                continue
            content = path.read_bytes()
            info.size = len(content)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(content))
    data = buf.getvalue()
    validate_archive(data, limits)
    return data
