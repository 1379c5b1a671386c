"""Sandboxed policy evaluation: a fixed-size pool of warm worker processes.

Each worker is a fresh interpreter (``block_sdk.policy_runtime._worker``) started with an
allow-listed environment (no database URLs, keys or tokens), its own session and temporary
working directory, stdin on /dev/null, and setrlimit limits on address space, CPU time per call,
file size and open files. The parent enforces a wall-clock timeout per call. A worker that
times out, runs out of memory, exits or crashes is killed with its whole process tree and
replaced in the background; the caller gets a ``PolicyError`` saying why.

Hot path: the parent sends one small JSON frame over a socketpair and waits for one back; the
worker keeps policy instances loaded, keyed by (uri, sha256, settings, parameters), so settings
cross the boundary only the first time a worker sees them.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from block_sdk.policy_runtime import _procs, protocol
from block_sdk.policy_runtime.cache import PolicyCache, get_default_cache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode
from block_sdk.policy_runtime.loader import describe_exception

log = logging.getLogger("aios.policy_runtime.sandbox")

_MiB = 1024 * 1024
# The folder that holds the block_sdk package: the only entry of the workers' PYTHONPATH.
_IMPORT_ROOT = str(Path(__file__).resolve().parents[2])
_SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|KEY|CREDENTIAL|AUTH|COOKIE|SESSION")
_SECRET_NAMES = frozenset(
    {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DSN"}
)
_SECRET_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCP_", "KUBE", "PG", "DJANGO_", "SENTRY_")
_PASSTHROUGH_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")
_DEATH_CHECK_INTERVAL = 0.1


def is_secret_env_name(name: str) -> bool:
    """True for variable names that may hold credentials; these never reach a worker."""
    upper = name.upper()
    return (
        upper in _SECRET_NAMES
        or upper.startswith(_SECRET_PREFIXES)
        or upper.endswith("_URL")
        or bool(_SECRET_NAME.search(upper))
    )


def build_sandbox_env(home: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The complete environment of a worker: an allow-list, never a copy of ours."""
    env = {
        "PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONPATH": _IMPORT_ROOT,
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONIOENCODING": "utf-8",
    }
    for name in _PASSTHROUGH_ENV:
        if os.environ.get(name):
            env[name] = os.environ[name]
    for name, value in (extra or {}).items():
        if is_secret_env_name(name) or name in ("HOME", "PYTHONPATH", "PATH"):
            log.warning("sandbox_env_refused name=%s reason=secret_or_reserved", name)
            continue
        env[name] = value
    return env


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


@dataclass(frozen=True)
class SandboxLimits:
    """Per-call and per-worker limits."""

    timeout: float = 5.0  # wall clock, seconds per call (parent side)
    cpu_seconds: float = 5.0  # CPU time per call (RLIMIT_CPU, moved per call)
    memory_mb: int = 1024  # address space of a worker (RLIMIT_AS)
    max_file_mb: int = 64  # largest file a worker may write (RLIMIT_FSIZE)
    max_open_files: int = 256  # RLIMIT_NOFILE
    max_result_bytes: int = 16 * _MiB  # one encoded reply
    # RLIMIT_NPROC counts every process of the worker's *user*, so it only means something with
    # SandboxConfig.run_as_user (a user of its own), and root ignores it. 0 = not set.
    max_processes: int = 0

    @classmethod
    def from_env(cls) -> SandboxLimits:
        """Defaults overridden by ``AIOS_POLICY_SANDBOX_*`` environment variables."""
        d = cls()
        return cls(
            timeout=_env_number("AIOS_POLICY_SANDBOX_TIMEOUT", d.timeout),
            cpu_seconds=_env_number("AIOS_POLICY_SANDBOX_CPU_SECONDS", d.cpu_seconds),
            memory_mb=int(_env_number("AIOS_POLICY_SANDBOX_MEMORY_MB", d.memory_mb)),
            max_file_mb=int(_env_number("AIOS_POLICY_SANDBOX_MAX_FILE_MB", d.max_file_mb)),
            max_open_files=int(_env_number("AIOS_POLICY_SANDBOX_MAX_OPEN_FILES", d.max_open_files)),
            max_result_bytes=d.max_result_bytes,
            max_processes=int(_env_number("AIOS_POLICY_SANDBOX_MAX_PROCESSES", d.max_processes)),
        )


@dataclass(frozen=True)
class SandboxConfig:
    """How a pool is sized and how its workers are started."""

    workers: int = 2
    max_queue: int = 64  # callers waiting for a worker beyond this get PolicyError("busy")
    queue_timeout: float | None = None  # wait for a free worker; None = limits.timeout
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    start_timeout: float = 20.0
    max_calls_per_worker: int = 0  # recycle a worker after this many calls; 0 = never
    max_instances_per_worker: int = 64
    # When the parent runs as root, run workers as this user (e.g. "nobody"): they then cannot
    # read the parent's /proc/<pid>/environ either. The cache must be readable by that user.
    run_as_user: str | None = None
    # The interpreter of the workers (default: this one). Python 3.11+ with block_sdk importable
    # from PYTHONPATH; the policies' imports resolve against its site-packages.
    python_executable: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> SandboxConfig:
        return cls(
            workers=int(_env_number("AIOS_POLICY_SANDBOX_WORKERS", 2)),
            max_queue=int(_env_number("AIOS_POLICY_SANDBOX_MAX_QUEUE", 64)),
            limits=SandboxLimits.from_env(),
            max_calls_per_worker=int(_env_number("AIOS_POLICY_SANDBOX_RECYCLE_AFTER", 0)),
            run_as_user=os.environ.get("AIOS_POLICY_SANDBOX_USER") or None,
            python_executable=os.environ.get("AIOS_POLICY_SANDBOX_PYTHON") or None,
        )


@dataclass(frozen=True)
class SandboxCall:
    """A policy bound to its settings and parameters, encoded once for repeated calls."""

    uri: str
    sha256: str
    key: str  # identifies the instance inside a worker
    policy: dict[str, Any]  # what a worker needs to load the code
    settings: Any  # JSON, helpers replaced by markers
    parameters: Any
    callbacks: Mapping[str, Callable[..., Any]]


class _WorkerHandle:
    """The parent's end of one worker process."""

    def __init__(self, proc: subprocess.Popen[bytes], conn: Connection, home: Path) -> None:
        self.proc = proc
        self.conn = conn
        self.home = home
        self.pid = proc.pid
        self.calls = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 8) -> list[str]:
        try:
            text = (self.home / "worker.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return [line for line in text.strip().splitlines()[-lines:] if line.strip()]

    def kill(self) -> None:
        """Kill the worker and everything it started, then remove its directory."""
        _procs.kill_tree(self.pid, include_root=False)
        # The worker leads its own session: this reaches children that kept its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            self.conn.close()

    def cleanup(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)


class SandboxPool:
    """A thread-safe pool of sandbox workers. Workers start lazily, up to ``config.workers``."""

    def __init__(self, config: SandboxConfig | None = None, *, cache: PolicyCache | None = None):
        self.config = config or SandboxConfig.from_env()
        if self.config.workers < 1:
            raise ValueError("a sandbox pool needs at least one worker")
        self.cache = cache if cache is not None else get_default_cache()
        self._cond = threading.Condition()
        self._idle: list[_WorkerHandle] = []
        self._live = 0  # workers running or starting
        self._waiting = 0
        self._closed = False
        self._ids = itertools.count(1)
        self._respawns: set[threading.Thread] = set()
        self._pid = os.getpid()
        self.stats = {"calls": 0, "errors": 0, "spawned": 0, "killed": 0}
        _live_pools.add(self)

    # -- preparing calls ------------------------------------------------------------------------

    def prepare(
        self,
        uri: str,
        sha256: str,
        archive: bytes | str | os.PathLike[str] | None = None,
        settings: Any = None,
        parameters: Any = None,
        class_name: str | None = None,
    ) -> SandboxCall:
        """Verify/extract/install the policy here (trusted side) and encode its settings.

        Helpers in ``settings`` are kept by reference and called here when the policy uses them.
        """
        prepared = self.cache.prepare(sha256, archive)
        encoded, callbacks = protocol.encode_settings(settings if settings is not None else {})
        params = parameters if parameters is not None else {}
        try:
            identity = json.dumps(
                [uri, sha256, class_name, encoded, params], sort_keys=True, allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise PolicyError(
                PolicyErrorCode.BAD_INPUT, f"parameters are not JSON-serialisable: {exc}"
            ) from None
        policy = {
            "uri": uri,
            "sha256": sha256,
            "archive_path": str(prepared.archive_path),
            "cache_root": str(self.cache.root),
            "class_name": class_name,
        }
        return SandboxCall(
            uri=uri,
            sha256=sha256,
            key=hashlib.sha256(identity.encode("utf-8")).hexdigest(),
            policy=policy,
            settings=encoded,
            parameters=params,
            callbacks=callbacks,
        )

    # -- public calls ---------------------------------------------------------------------------

    def evaluate(self, call: SandboxCall, input_data: Any, *, timeout: float | None = None) -> Any:
        """``eval(parameters, input_data, context)`` in a worker; returns its JSON result."""
        return self._run(call, {"kind": "eval", "input": input_data}, timeout)

    def management(
        self, call: SandboxCall, action: str, data: Any, *, timeout: float | None = None
    ) -> Any:
        """``management(action, data)`` in a worker (state is per worker: T2 is stateless)."""
        return self._run(call, {"kind": "mgmt", "action": action, "data": data}, timeout)

    def run(
        self,
        uri: str,
        sha256: str,
        archive: bytes | str | os.PathLike[str] | None,
        input_data: Any,
        *,
        settings: Any = None,
        parameters: Any = None,
        class_name: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One-shot convenience: ``prepare`` then ``evaluate``."""
        call = self.prepare(uri, sha256, archive, settings, parameters, class_name)
        return self.evaluate(call, input_data, timeout=timeout)

    # -- worker management --------------------------------------------------------------------

    def _spawn(self) -> _WorkerHandle:
        home = Path(tempfile.mkdtemp(prefix="aios-policy-worker-"))
        limits = self.config.limits
        worker_config = {
            "home": str(home),
            "cache_root": str(self.cache.root),
            "memory_bytes": int(limits.memory_mb * _MiB),
            "cpu_seconds": limits.cpu_seconds,
            "file_bytes": int(limits.max_file_mb * _MiB),
            "open_files": limits.max_open_files,
            "max_processes": limits.max_processes,
            "max_result_bytes": limits.max_result_bytes,
            "max_instances": self.config.max_instances_per_worker,
            "recycle_after": self.config.max_calls_per_worker,
        }
        parent_sock, child_sock = socket.socketpair()
        user_kwargs: dict[str, Any] = {}
        if self.config.run_as_user and os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam(self.config.run_as_user)
            os.chown(home, entry.pw_uid, entry.pw_gid)
            user_kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        try:
            with open(home / "worker.log", "wb") as log_fh:
                if user_kwargs:
                    os.chown(home / "worker.log", user_kwargs["user"], user_kwargs["group"])
                proc = subprocess.Popen(
                    [
                        self.config.python_executable or sys.executable,
                        "-s",  # no user site-packages
                        "-P",  # no cwd on sys.path: the policy could plant modules there
                        "-m",
                        "block_sdk.policy_runtime._worker",
                        "--fd",
                        str(child_sock.fileno()),
                        "--config",
                        json.dumps(worker_config),
                    ],
                    env=build_sandbox_env(str(home), self.config.extra_env),
                    cwd=str(home),
                    stdin=subprocess.DEVNULL,
                    stdout=log_fh,
                    stderr=subprocess.STDOUT,
                    pass_fds=(child_sock.fileno(),),
                    start_new_session=True,
                    **user_kwargs,
                )
        except OSError as exc:
            parent_sock.close()
            shutil.rmtree(home, ignore_errors=True)
            raise PolicyError(
                PolicyErrorCode.UNAVAILABLE, f"cannot start a sandbox worker: {exc}"
            ) from None
        except BaseException:
            parent_sock.close()
            shutil.rmtree(home, ignore_errors=True)
            raise
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        handle = _WorkerHandle(proc, conn, home)
        try:
            if not conn.poll(self.config.start_timeout):
                raise PolicyError(
                    PolicyErrorCode.UNAVAILABLE,
                    f"sandbox worker did not start within {self.config.start_timeout:g}s",
                )
            ready = protocol.loads(conn.recv_bytes(4096))
            if ready.get("op") != "ready":
                raise PolicyError(PolicyErrorCode.UNAVAILABLE, "sandbox worker sent no ready")
        except (EOFError, OSError, ValueError, PolicyError) as exc:
            tail = handle.log_tail()
            handle.kill()
            handle.cleanup()
            if isinstance(exc, PolicyError):
                exc.details.extend(tail)
                raise
            raise PolicyError(
                PolicyErrorCode.UNAVAILABLE, f"sandbox worker failed to start: {exc}", tail
            ) from None
        self.stats["spawned"] += 1
        log.info("sandbox_worker_started pid=%s home=%s", proc.pid, home)
        return handle

    def _checkout(self, wait: float) -> _WorkerHandle:
        deadline = time.monotonic() + wait
        spawn = False
        with self._cond:
            if self._closed:
                raise PolicyError(PolicyErrorCode.UNAVAILABLE, "sandbox pool is closed")
            saturated = not self._idle and self._live >= self.config.workers
            if saturated and self._waiting >= self.config.max_queue:
                raise PolicyError(
                    PolicyErrorCode.BUSY,
                    f"sandbox queue is full ({self.config.max_queue} calls waiting)",
                )
            self._waiting += 1
            try:
                while True:
                    if self._closed:
                        raise PolicyError(PolicyErrorCode.UNAVAILABLE, "sandbox pool is closed")
                    if self._idle:
                        worker = self._idle.pop()  # LIFO: the most recently used is warmest
                        if worker.alive():
                            return worker
                        self._live -= 1
                        self._retire_later(worker)
                        continue
                    if self._live < self.config.workers:
                        self._live += 1
                        spawn = True
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PolicyError(
                            PolicyErrorCode.BUSY,
                            f"no sandbox worker became free within {wait:g}s",
                        )
                    self._cond.wait(remaining)
            finally:
                self._waiting -= 1
        assert spawn
        try:
            return self._spawn()
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise

    def _checkin(self, worker: _WorkerHandle) -> None:
        with self._cond:
            if self._closed:
                self._live -= 1
                closed = True
            else:
                self._idle.append(worker)
                closed = False
            self._cond.notify()
        if closed:
            worker.kill()
            worker.cleanup()

    def _retire_later(self, worker: _WorkerHandle) -> None:
        threading.Thread(target=self._retire, args=(worker,), daemon=True).start()

    @staticmethod
    def _retire(worker: _WorkerHandle) -> None:
        worker.kill()
        worker.cleanup()

    def _replace(self, worker: _WorkerHandle) -> None:
        """Kill a worker now; start its replacement in the background, keeping its slot."""
        worker.kill()
        worker.cleanup()
        self.stats["killed"] += 1

        def respawn() -> None:
            try:
                fresh = self._spawn()
            except Exception as exc:
                log.warning("sandbox_worker_respawn_failed error=%s", describe_exception(exc))
                with self._cond:
                    self._live -= 1
                    self._respawns.discard(threading.current_thread())
                    self._cond.notify()
                return
            self._checkin(fresh)
            with self._cond:
                self._respawns.discard(threading.current_thread())

        with self._cond:
            if self._closed:
                self._live -= 1
                return
            thread = threading.Thread(target=respawn, name="aios-sandbox-respawn", daemon=True)
            self._respawns.add(thread)
        thread.start()

    # -- the call loop --------------------------------------------------------------------------

    def _run(self, call: SandboxCall, body: dict[str, Any], timeout: float | None) -> Any:
        if self._pid != os.getpid():
            raise PolicyError(
                PolicyErrorCode.UNAVAILABLE, "sandbox pool used after fork; create a new pool"
            )
        limit = self.config.limits.timeout if timeout is None else timeout
        queue_wait = self.config.queue_timeout if self.config.queue_timeout is not None else limit
        call_id = next(self._ids)
        message = {"op": "call", "id": call_id, "key": call.key, **body}
        try:
            raw = protocol.dumps(message)
        except (TypeError, ValueError) as exc:
            raise PolicyError(
                PolicyErrorCode.BAD_INPUT, f"input is not JSON-serialisable: {exc}"
            ) from None
        worker = self._checkout(queue_wait)
        self.stats["calls"] += 1
        started = time.monotonic()
        try:
            reply = self._exchange(worker, call, call_id, raw, started + limit, limit)
        except PolicyError:
            self.stats["errors"] += 1
            self._replace(worker)
            raise
        except BaseException:
            self._replace(worker)
            raise
        worker.calls += 1
        if reply.get("recycle"):
            self._replace(worker)
        else:
            self._checkin(worker)
        if reply["op"] == "result":
            return reply.get("result")
        self.stats["errors"] += 1
        details = reply.get("details")
        raise PolicyError(
            str(reply.get("code") or PolicyErrorCode.EXCEPTION),
            str(reply.get("message") or "policy failed"),
            details if isinstance(details, list) else None,
        )

    def _exchange(
        self,
        worker: _WorkerHandle,
        call: SandboxCall,
        call_id: int,
        raw: bytes,
        deadline: float,
        limit: float,
    ) -> dict[str, Any]:
        conn = worker.conn
        max_bytes = self.config.limits.max_result_bytes + 4096
        try:
            conn.send_bytes(raw)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PolicyError(
                        PolicyErrorCode.TIMEOUT,
                        f"policy {call.uri} did not return within {limit:g}s",
                    )
                # Wait in slices: a dead worker's forked children may keep the socket open, so
                # EOF alone cannot be trusted to tell us the worker is gone.
                if not conn.poll(min(remaining, _DEATH_CHECK_INTERVAL)):
                    if not worker.alive():
                        raise EOFError("worker exited")
                    continue
                try:
                    reply = protocol.loads(conn.recv_bytes(max_bytes))
                except OSError as exc:
                    if "bad message length" in str(exc):
                        raise PolicyError(
                            PolicyErrorCode.BAD_OUTPUT,
                            f"result is over the limit of {self.config.limits.max_result_bytes} "
                            "bytes",
                        ) from None
                    raise
                except (ValueError, RecursionError) as exc:
                    raise PolicyError(
                        PolicyErrorCode.BAD_OUTPUT, f"worker sent invalid JSON: {exc}"
                    ) from None
                if reply.get("id") != call_id:
                    raise PolicyError(PolicyErrorCode.EXCEPTION, "sandbox protocol out of step")
                op = reply["op"]
                if op in ("result", "error"):
                    return reply
                if op == "need_setup":
                    conn.send_bytes(
                        protocol.dumps(
                            {
                                "op": "setup",
                                "id": call_id,
                                "policy": call.policy,
                                "settings": call.settings,
                                "parameters": call.parameters,
                            }
                        )
                    )
                elif op == "callback":
                    conn.send_bytes(self._run_callback(call, reply))
                else:
                    raise PolicyError(PolicyErrorCode.EXCEPTION, f"unexpected worker op {op!r}")
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            raise self._death_error(worker, call) from exc

    @staticmethod
    def _run_callback(call: SandboxCall, request: dict[str, Any]) -> bytes:
        name = str(request.get("name"))
        func = call.callbacks.get(name)
        if func is None:
            return protocol.dumps(
                {"op": "callback_result", "id": request["id"], "ok": False,
                 "error": f"no settings helper named {name!r}"}
            )  # fmt: skip
        args = request.get("args") or []
        kwargs = request.get("kwargs") or {}
        try:
            result = func(*args, **kwargs)
            return protocol.dumps(
                {"op": "callback_result", "id": request["id"], "ok": True, "result": result}
            )
        except Exception as exc:
            log.info("sandbox_callback_failed name=%s error=%s", name, describe_exception(exc))
            return protocol.dumps(
                {"op": "callback_result", "id": request["id"], "ok": False,
                 "error": describe_exception(exc)}
            )  # fmt: skip

    def _death_error(self, worker: _WorkerHandle, call: SandboxCall) -> PolicyError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.proc.wait(timeout=2)
        rc = worker.proc.returncode
        tail = worker.log_tail()
        if rc is not None and rc < 0:
            sig = -rc
            name = signal.Signals(sig).name if sig in signal.valid_signals() else str(sig)
            if sig == signal.SIGXCPU:
                return PolicyError(
                    PolicyErrorCode.TIMEOUT,
                    f"policy {call.uri} exceeded its CPU time limit of "
                    f"{self.config.limits.cpu_seconds:g}s",
                    tail,
                )
            if sig == signal.SIGKILL:
                return PolicyError(
                    PolicyErrorCode.MEMORY,
                    f"policy {call.uri} was killed (SIGKILL), most likely out of memory",
                    tail,
                )
            return PolicyError(
                PolicyErrorCode.EXCEPTION,
                f"WorkerCrash: policy {call.uri} crashed the sandbox worker with {name}",
                tail,
            )
        return PolicyError(
            PolicyErrorCode.EXCEPTION,
            f"WorkerExit: policy {call.uri} ended the sandbox worker process "
            f"(exit status {rc}, e.g. os._exit)",
            tail,
        )

    # -- lifecycle --------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Counters for health endpoints and metrics."""
        with self._cond:
            return {
                "workers": self.config.workers,
                "live": self._live,
                "idle": len(self._idle),
                "waiting": self._waiting,
                **self.stats,
            }

    def worker_pids(self) -> list[int]:
        with self._cond:
            return [w.pid for w in self._idle]

    def close(self) -> None:
        """Kill every idle worker; busy ones are killed when their call returns."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
            respawns = list(self._respawns)
        for worker in idle:
            worker.kill()
            worker.cleanup()
        # A replacement still starting would be orphaned at interpreter exit: let it land (it is
        # killed on check-in, since the pool is closed).
        deadline = time.monotonic() + self.config.start_timeout
        for thread in respawns:
            thread.join(max(0.0, deadline - time.monotonic()))
        _live_pools.discard(self)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncSandboxPool:
    """asyncio front of a ``SandboxPool``: calls run on a bounded thread pool, never the loop."""

    def __init__(self, pool: SandboxPool, max_threads: int | None = None) -> None:
        self.pool = pool
        threads = max_threads or (pool.config.workers + min(pool.config.max_queue, 32))
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="aios-sandbox"
        )

    async def prepare(self, *args: Any, **kwargs: Any) -> SandboxCall:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self.pool.prepare, *args, **kwargs)
        )

    async def evaluate(
        self, call: SandboxCall, input_data: Any, *, timeout: float | None = None
    ) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, functools.partial(self.pool.evaluate, call, input_data, timeout=timeout)
        )

    async def management(
        self, call: SandboxCall, action: str, data: Any, *, timeout: float | None = None
    ) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor,
            functools.partial(self.pool.management, call, action, data, timeout=timeout),
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.pool.close()


_live_pools: weakref.WeakSet[SandboxPool] = weakref.WeakSet()
_default_pool: SandboxPool | None = None
_default_pool_lock = threading.Lock()


def get_default_pool() -> SandboxPool:
    """The process-wide pool (configured from ``AIOS_POLICY_SANDBOX_*``); re-created after fork."""
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None or _default_pool._pid != os.getpid() or _default_pool._closed:
            _default_pool = SandboxPool(SandboxConfig.from_env())
        return _default_pool


def set_default_pool(pool: SandboxPool | None) -> None:
    """Install the pool ``mode="sandbox"`` evaluators use by default (``None`` resets)."""
    global _default_pool
    with _default_pool_lock:
        _default_pool = pool


@atexit.register
def _close_all_pools() -> None:
    for pool in list(_live_pools):
        if pool._pid == os.getpid():
            with contextlib.suppress(Exception):
                pool.close()


def with_limits(config: SandboxConfig, **changes: Any) -> SandboxConfig:
    """A copy of ``config`` with some ``SandboxLimits`` fields changed."""
    return replace(config, limits=replace(config.limits, **changes))
