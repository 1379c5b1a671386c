"""Content-addressed, on-disk cache of policy archives, their extracted code and dependencies.

Layout under the root (``AIOS_POLICY_CACHE_DIR``, default ``.aios/policy-cache``)::

    archives/<sha256>        the archive bytes, named by their hash
    code/<sha256>/code/...   the extracted tree (extracted once, then only verified)
    deps/<hash>/             ``pip install --target`` of one requirements.txt, shared by hash
    tmp/  locks/             staging directories and lock files

Every load checks the archive bytes against the expected sha256 and the extracted tree against
the archive's manifest, so a file altered on disk is detected (``PolicyIntegrityError``) or, when
trusted bytes are at hand, repaired. Several processes may share one root: extraction and
installs happen in private staging directories that are renamed into place atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from block_sdk.policy_runtime.archive import (
    DEFAULT_LIMITS,
    REQUIREMENTS_PATH,
    ArchiveInfo,
    ArchiveLimits,
    extract_archive,
    sha256_hex,
    validate_archive,
)
from block_sdk.policy_runtime.errors import (
    PolicyArchiveError,
    PolicyError,
    PolicyErrorCode,
    PolicyIntegrityError,
)

log = logging.getLogger("aios.policy_runtime.cache")

CACHE_DIR_ENV = "AIOS_POLICY_CACHE_DIR"
DEFAULT_CACHE_DIR = ".aios/policy-cache"
PIP_ARGS_ENV = "AIOS_POLICY_PIP_ARGS"
PIP_TIMEOUT_ENV = "AIOS_POLICY_PIP_TIMEOUT"
# Wheels only by default: installing a wheel runs no code, building an sdist runs setup.py.
DEFAULT_PIP_ARGS: tuple[str, ...] = ("--only-binary=:all:",)
DEFAULT_PIP_TIMEOUT = 300.0
_COMPLETE_MARKER = ".aios-complete"


@dataclass(frozen=True)
class PreparedPolicy:
    """A verified, extracted policy, ready to import. Plain paths: it crosses process bounds."""

    sha256: str
    archive_path: Path
    root_dir: Path  # the extracted archive root
    code_dir: Path  # root_dir / "code", the folder holding function.py
    deps_dir: Path | None  # pip --target folder for code/requirements.txt, if any


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _requirements_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


class PolicyCache:
    """The cache under one root directory. Thread-safe; safe across processes sharing a root."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        limits: ArchiveLimits | None = None,
        pip_args: tuple[str, ...] | None = None,
        pip_timeout: float | None = None,
    ) -> None:
        raw_root = root if root is not None else os.environ.get(CACHE_DIR_ENV, DEFAULT_CACHE_DIR)
        self.root = Path(raw_root).expanduser().resolve()
        self.limits = limits or DEFAULT_LIMITS
        if pip_args is None:
            env_args = os.environ.get(PIP_ARGS_ENV)
            pip_args = tuple(shlex.split(env_args)) if env_args is not None else DEFAULT_PIP_ARGS
        self.pip_args = pip_args
        self.pip_timeout = float(
            pip_timeout
            if pip_timeout is not None
            else os.environ.get(PIP_TIMEOUT_ENV, DEFAULT_PIP_TIMEOUT)
        )
        self._lock = threading.Lock()
        # sha -> (archive file identity, prepared): a repeat load in this process costs a stat().
        self._memo: dict[str, tuple[tuple[int, int, int], PreparedPolicy]] = {}

    # -- paths -----------------------------------------------------------------------------

    def archive_path(self, sha256: str) -> Path:
        return self.root / "archives" / self._checked_sha(sha256)

    def code_root(self, sha256: str) -> Path:
        return self.root / "code" / self._checked_sha(sha256)

    def has_archive(self, sha256: str) -> bool:
        return self.archive_path(sha256).is_file()

    @staticmethod
    def _checked_sha(sha256: str) -> str:
        # The hash becomes a path component: refuse anything that is not 64 lowercase hex digits.
        if not isinstance(sha256, str) or not _is_sha256(sha256):
            raise PolicyIntegrityError(f"not a sha256 hex digest: {sha256!r}")
        return sha256

    def _staging(self, prefix: str) -> Path:
        tmp = self.root / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{prefix}.{os.getpid()}.{uuid.uuid4().hex[:12]}"

    # -- archives ----------------------------------------------------------------------------

    def store(self, data: bytes, expected_sha256: str | None = None) -> ArchiveInfo:
        """Validate an archive and keep it under its sha256. Returns what it holds.

        This is the upload path: a bad archive raises ``PolicyArchiveError`` here, before any
        record points at it.
        """
        actual = sha256_hex(data)
        if expected_sha256 is not None and actual != expected_sha256:
            raise PolicyIntegrityError(
                f"archive bytes hash to {actual}, expected {expected_sha256}"
            )
        info = validate_archive(data, self.limits)
        self._write_archive(actual, data)
        return info

    def _write_archive(self, sha256: str, data: bytes) -> Path:
        target = self.archive_path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = self._staging(f"archive-{sha256[:16]}")
        with open(staging, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(staging, 0o444)
        os.replace(staging, target)
        return target

    def read_archive(self, sha256: str) -> bytes:
        """The stored bytes for ``sha256``, verified. Raises if missing or altered."""
        path = self.archive_path(sha256)
        try:
            data = self._read_bounded(path)
        except FileNotFoundError as exc:
            raise PolicyError(
                PolicyErrorCode.LOAD_ERROR, f"policy archive {sha256} is not in the cache"
            ) from exc
        actual = sha256_hex(data)
        if actual != sha256:
            raise PolicyIntegrityError(
                f"stored policy archive {path} was modified: it hashes to {actual}, "
                f"expected {sha256}"
            )
        return data

    def _read_bounded(self, path: Path) -> bytes:
        with open(path, "rb") as fh:
            data = fh.read(self.limits.max_archive_bytes + 1)
        if len(data) > self.limits.max_archive_bytes:
            raise PolicyArchiveError(
                f"archive {path} is over the limit of {self.limits.max_archive_bytes} bytes"
            )
        return data

    # -- prepare: verify, extract, install -----------------------------------------------------

    def prepare(
        self,
        sha256: str,
        archive: bytes | str | os.PathLike[str] | None = None,
        *,
        install_requirements: bool = True,
    ) -> PreparedPolicy:
        """Make the policy ``sha256`` importable and return its paths.

        ``archive`` is the trusted source when given (bytes, or a path to read); it must hash to
        ``sha256`` or ``PolicyIntegrityError`` is raised. Without it the stored copy is used and
        verified the same way.
        """
        self._checked_sha(sha256)
        data: bytes | None = None
        if archive is not None:
            data = archive if isinstance(archive, bytes) else self._read_bounded(Path(archive))
            actual = sha256_hex(data)
            if actual != sha256:
                raise PolicyIntegrityError(
                    f"policy archive hashes to {actual}, expected {sha256} "
                    "(the stored file was altered or the record is stale)"
                )
        memo = self._memo.get(sha256)
        if memo is not None and self._archive_identity(sha256) == memo[0]:
            return memo[1]
        with self._lock:
            return self._prepare_locked(sha256, data, install_requirements)

    def _archive_identity(self, sha256: str) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.archive_path(sha256))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _prepare_locked(
        self, sha256: str, data: bytes | None, install_requirements: bool
    ) -> PreparedPolicy:
        if data is None:
            data = self.read_archive(sha256)
        else:
            self._ensure_stored_copy(sha256, data)
        root_dir = self.code_root(sha256)
        info = self._ensure_tree(sha256, data, root_dir)
        deps_dir: Path | None = None
        if info.has_requirements:
            requirements = (root_dir / REQUIREMENTS_PATH).read_text(encoding="utf-8")
            if install_requirements:
                deps_dir = self.ensure_requirements(requirements, cwd=root_dir / "code")
            else:
                deps_dir = self.installed_requirements(requirements)
        prepared = PreparedPolicy(
            sha256=sha256,
            archive_path=self.archive_path(sha256),
            root_dir=root_dir,
            code_dir=root_dir / "code",
            deps_dir=deps_dir,
        )
        identity = self._archive_identity(sha256)
        if identity is not None:
            self._memo[sha256] = (identity, prepared)
        return prepared

    def _ensure_stored_copy(self, sha256: str, data: bytes) -> None:
        path = self.archive_path(sha256)
        try:
            stored = self._read_bounded(path)
        except (FileNotFoundError, PolicyArchiveError):
            stored = None
        if stored is not None and sha256_hex(stored) == sha256:
            return
        if stored is not None:
            log.warning(
                "policy_cache_archive_replaced sha256=%s path=%s reason=hash_mismatch",
                sha256,
                path,
            )
        validate_archive(data, self.limits)
        self._write_archive(sha256, data)

    def _ensure_tree(self, sha256: str, data: bytes, root_dir: Path) -> ArchiveInfo:
        if root_dir.is_dir():
            info = validate_archive(data, self.limits)
            problem = self._tree_mismatch(root_dir, info)
            if problem is None:
                return info
            # The archive bytes were verified against the sha, so the repair is trustworthy.
            log.warning(
                "policy_cache_tree_tampered sha256=%s problem=%r action=re_extract",
                sha256,
                problem,
            )
            stale = self._staging(f"stale-{sha256[:16]}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(root_dir, stale)
            shutil.rmtree(stale, ignore_errors=True)
        staging = self._staging(f"code-{sha256[:16]}")
        try:
            info = extract_archive(data, staging, self.limits)
            root_dir.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, root_dir)
            except OSError:
                # Another process won the race; its tree must still match the archive.
                if not root_dir.is_dir():
                    raise
                problem = self._tree_mismatch(root_dir, info)
                if problem is not None:
                    raise PolicyIntegrityError(
                        f"extracted policy {sha256} does not match its archive: {problem}"
                    ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("policy_cache_extracted sha256=%s files=%d", sha256, len(info.files))
        return info

    @staticmethod
    def _tree_mismatch(root_dir: Path, info: ArchiveInfo) -> str | None:
        """What differs between an extracted tree and the archive's manifest, or ``None``."""
        manifest = info.manifest()
        found: set[str] = set()
        for dirpath, _dirnames, filenames in os.walk(root_dir):
            for name in filenames:
                path = Path(dirpath) / name
                rel = path.relative_to(root_dir).as_posix()
                if rel not in manifest:
                    return f"unexpected file {rel}"
                if path.is_symlink():
                    return f"{rel} was replaced by a link"
                found.add(rel)
                digest = hashlib.sha256()
                with open(path, "rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 16), b""):
                        digest.update(chunk)
                if digest.hexdigest() != manifest[rel]:
                    return f"{rel} was modified"
        missing = set(manifest) - found
        if missing:
            return f"missing {sorted(missing)[0]}"
        return None

    # -- requirements -----------------------------------------------------------------------

    def _requirements_key(self, lines: list[str]) -> str:
        # The pip arguments change what gets installed, so they are part of the key.
        payload = "\n".join(lines) + "\n--\n" + "\n".join(self.pip_args)
        return sha256_hex(payload.encode("utf-8"))

    def installed_requirements(self, requirements: str) -> Path | None:
        """The deps folder for ``requirements`` if it is already installed, else ``None``."""
        lines = _requirements_lines(requirements)
        if not lines:
            return None
        target = self.root / "deps" / self._requirements_key(lines)
        return target if (target / _COMPLETE_MARKER).is_file() else None

    def ensure_requirements(self, requirements: str, *, cwd: Path | None = None) -> Path | None:
        """Install ``requirements`` into a folder named by their hash, once. ``None`` if empty.

        Concurrent callers (threads or processes) wait on a lock file; a failed or timed-out
        install leaves nothing behind and raises ``PolicyError("load_error", ...)``.
        """
        lines = _requirements_lines(requirements)
        if not lines:
            return None
        key = self._requirements_key(lines)
        target = self.root / "deps" / key
        if (target / _COMPLETE_MARKER).is_file():
            return target
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"deps-{key}.lock", "w") as lock_fh:
            fcntl.flock(lock_fh, fcntl.LOCK_EX)
            try:
                if (target / _COMPLETE_MARKER).is_file():
                    return target
                self._pip_install(lines, key, target, cwd)
            finally:
                fcntl.flock(lock_fh, fcntl.LOCK_UN)
        return target

    def _pip_install(self, lines: list[str], key: str, target: Path, cwd: Path | None) -> None:
        staging = self._staging(f"deps-{key[:16]}")
        staging.mkdir(parents=True)
        req_file = staging.with_name(staging.name + ".requirements.txt")
        req_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--target",
            str(staging),
            "--no-input",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            *self.pip_args,
            "-r",
            str(req_file),
        ]
        log.info("policy_requirements_install key=%s packages=%d", key, len(lines))
        try:
            proc = subprocess.run(
                cmd,
                cwd=str(cwd) if cwd else None,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.pip_timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise PolicyError(
                PolicyErrorCode.LOAD_ERROR,
                f"installing code/requirements.txt timed out after {self.pip_timeout:g}s",
            ) from exc
        finally:
            req_file.unlink(missing_ok=True)
        if proc.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-8:]
            raise PolicyError(
                PolicyErrorCode.LOAD_ERROR,
                f"installing code/requirements.txt failed (pip exit {proc.returncode}): "
                + " | ".join(tail),
            )
        (staging / _COMPLETE_MARKER).write_text(key, encoding="utf-8")
        if target.exists():  # a crashed earlier attempt, without the marker
            shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)
        log.info("policy_requirements_installed key=%s target=%s", key, target)


_default_caches: dict[Path, PolicyCache] = {}
_default_lock = threading.Lock()


def get_default_cache() -> PolicyCache:
    """The process-wide cache for the root named by ``AIOS_POLICY_CACHE_DIR``."""
    root = Path(os.environ.get(CACHE_DIR_ENV, DEFAULT_CACHE_DIR)).expanduser().resolve()
    with _default_lock:
        cache = _default_caches.get(root)
        if cache is None:
            cache = _default_caches[root] = PolicyCache(root)
        return cache
