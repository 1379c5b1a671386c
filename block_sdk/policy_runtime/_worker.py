"""Sandbox worker process: ``python -m block_sdk.policy_runtime._worker --fd N --config JSON``.

Started by ``SandboxPool`` with a clean environment, in its own session, cwd and HOME in a private
temporary directory, stdin on /dev/null. It applies its resource limits before it loads any
policy, then serves calls over the inherited socket until the parent closes it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import resource
import shutil
import signal
import sys
import threading
import time
from collections import OrderedDict
from multiprocessing.connection import Connection
from typing import Any

from block_sdk.policy_runtime import _procs, protocol
from block_sdk.policy_runtime.cache import PolicyCache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode
from block_sdk.policy_runtime.loader import LoadedPolicy, PolicyLoader, describe_exception

log = logging.getLogger("aios.policy_runtime.worker")

_PR_SET_CHILD_SUBREAPER = 36
_MiB = 1024 * 1024


def _apply_limits(config: dict[str, Any]) -> None:
    """Resource limits of this process (and of anything it forks)."""
    memory = int(config.get("memory_bytes") or 0)
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    file_bytes = int(config.get("file_bytes") or 0)
    if file_bytes > 0:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        # Over-large writes then fail with EFBIG instead of killing the worker.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    open_files = int(config.get("open_files") or 0)
    if open_files > 0:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    max_processes = int(config.get("max_processes") or 0)
    if max_processes > 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _set_cpu_budget(seconds: float) -> None:
    """RLIMIT_CPU counts the whole life of the process: move the soft limit per call."""
    if seconds <= 0:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(used + seconds) + 1
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _become_subreaper() -> None:
    # Orphans of the policy's children re-parent to us, so we can find and kill them.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _watch_parent(parent_pid: int, home: str | None) -> None:
    # A worker stuck in policy code never reads EOF from its socket; this still ends it, and
    # removes the private folder the vanished parent can no longer clean up.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            _kill_children()
            if home:
                shutil.rmtree(home, ignore_errors=True)
            os._exit(0)


def _kill_children() -> bool:
    """Kill every process the policy left behind. ``False`` (fast path) when there were none."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    me = os.getpid()
    for _ in range(50):
        # Killing a child re-parents its own children to us (subreaper): loop until none left.
        _procs.kill_tree(me, include_root=False)
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                break
        time.sleep(0.01)
    return True


class Worker:
    """Serves eval/management calls for the parent over one connection."""

    def __init__(self, conn: Connection, config: dict[str, Any]) -> None:
        self.conn = conn
        self.config = config
        self.cache = PolicyCache(config["cache_root"]) if config.get("cache_root") else None
        self.max_instances = int(config.get("max_instances") or 64)
        self.max_result_bytes = int(config.get("max_result_bytes") or 16 * _MiB)
        self.cpu_seconds = float(config.get("cpu_seconds") or 0)
        self.recycle_after = int(config.get("recycle_after") or 0)
        self.memory_mb = int(config.get("memory_bytes") or 0) // _MiB
        self.instances: OrderedDict[str, LoadedPolicy] = OrderedDict()
        self.calls = 0
        self.active_id: int | None = None
        self.io_lock = threading.Lock()
        self.thread_baseline = threading.active_count()

    # -- helpers called back in the parent ------------------------------------------------

    def make_callable(self, name: str) -> Any:
        worker = self

        def helper(*args: Any, **kwargs: Any) -> Any:
            return worker.callback(name, list(args), kwargs)

        helper.__name__ = name.rsplit(".", 1)[-1]
        helper.__qualname__ = f"settings.{name}"
        return helper

    def callback(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        with self.io_lock:
            if self.active_id is None:
                raise protocol.PolicyCallbackError(
                    f"settings helper {name!r} can only be called during eval() or management()"
                )
            try:
                raw = protocol.dumps(
                    {
                        "op": "callback",
                        "id": self.active_id,
                        "name": name,
                        "args": args,
                        "kwargs": kwargs,
                    }
                )
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"arguments of settings helper {name!r} must be JSON-serialisable: {exc}"
                ) from None
            self.conn.send_bytes(raw)
            reply = protocol.loads(self.conn.recv_bytes())
        if reply.get("op") != "callback_result":
            raise protocol.PolicyCallbackError(f"unexpected reply to helper {name!r}")
        if reply.get("ok"):
            return reply.get("result")
        raise protocol.PolicyCallbackError(f"settings helper {name!r} failed: {reply.get('error')}")

    # -- calls -------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        with self.io_lock:
            self.conn.send_bytes(protocol.dumps(message))

    def _instance(self, call_id: int, key: str) -> LoadedPolicy:
        loaded = self.instances.get(key)
        if loaded is not None:
            self.instances.move_to_end(key)
            return loaded
        self._send({"op": "need_setup", "id": call_id})
        setup = protocol.loads(self.conn.recv_bytes())
        if setup.get("op") != "setup":
            raise PolicyError(PolicyErrorCode.LOAD_ERROR, "sandbox protocol error: expected setup")
        policy = setup["policy"]
        cache = self.cache if self.cache is not None else PolicyCache(policy["cache_root"])
        prepared = cache.prepare(
            policy["sha256"], policy["archive_path"], install_requirements=False
        )
        settings = protocol.decode_settings(setup.get("settings"), self.make_callable)
        loaded = PolicyLoader.load_prepared(
            policy["uri"], prepared, settings, setup.get("parameters"), policy.get("class_name")
        )
        self.instances[key] = loaded
        while len(self.instances) > self.max_instances:
            self.instances.popitem(last=False)
        return loaded

    def handle(self, message: dict[str, Any]) -> bool:
        """Run one call and answer it. Returns ``False`` when this worker should exit."""
        call_id = int(message.get("id", 0))
        recycle = False
        reply: dict[str, Any]
        self.active_id = call_id
        _set_cpu_budget(self.cpu_seconds)
        try:
            loaded = self._instance(call_id, message["key"])
            if message.get("kind") == "mgmt":
                result = loaded.management(message.get("action", ""), message.get("data"))
            else:
                result = loaded.eval(message.get("input"))
            reply = {"op": "result", "id": call_id, "result": result}
        except PolicyError as exc:
            message = exc.message
            if exc.code == PolicyErrorCode.MEMORY:
                recycle = True
                message = f"{message} (limit {self.memory_mb} MiB)"
            reply = self._error(call_id, exc.code, message, exc.details)
        except MemoryError:
            recycle = True
            reply = self._error(
                call_id,
                PolicyErrorCode.MEMORY,
                f"policy exceeded the memory limit of {self.memory_mb} MiB",
            )
        except BaseException as exc:  # SystemExit, KeyboardInterrupt raised by policy code
            recycle = True
            reply = self._error(call_id, PolicyErrorCode.EXCEPTION, describe_exception(exc))
        finally:
            self.active_id = None

        if _kill_children():
            log.info("policy_children_killed call_id=%s", call_id)
        if threading.active_count() > self.thread_baseline:
            # A thread the policy started keeps running between calls: start afresh.
            recycle = True
        self.calls += 1
        if self.recycle_after and self.calls >= self.recycle_after:
            recycle = True
        reply["recycle"] = recycle
        self._send_reply(call_id, reply)
        return not recycle

    @staticmethod
    def _error(call_id: int, code: str, message: str, details: Any = None) -> dict[str, Any]:
        return {
            "op": "error",
            "id": call_id,
            "code": code,
            "message": message,
            "details": details or [],
        }

    def _send_reply(self, call_id: int, reply: dict[str, Any]) -> None:
        try:
            raw = protocol.dumps(reply)
        except (TypeError, ValueError, RecursionError) as exc:
            raw = protocol.dumps(
                self._error(
                    call_id,
                    PolicyErrorCode.BAD_OUTPUT,
                    f"result is not JSON-serialisable: {describe_exception(exc)}",
                )
                | {"recycle": reply.get("recycle", False)}
            )
        except MemoryError:
            raw = protocol.dumps(
                self._error(call_id, PolicyErrorCode.MEMORY, "result too large to encode")
                | {"recycle": True}
            )
        if len(raw) > self.max_result_bytes:
            raw = protocol.dumps(
                self._error(
                    call_id,
                    PolicyErrorCode.BAD_OUTPUT,
                    f"result is {len(raw)} bytes, over the limit of {self.max_result_bytes}",
                )
                | {"recycle": reply.get("recycle", False)}
            )
        with self.io_lock:
            self.conn.send_bytes(raw)

    def serve(self) -> None:
        self._send({"op": "ready", "pid": os.getpid()})
        while True:
            try:
                raw = self.conn.recv_bytes()
            except (EOFError, OSError):
                return
            message = protocol.loads(raw)
            if message.get("op") == "call" and not self.handle(message):
                return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    config = json.loads(args.config)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    parent_pid = os.getppid()
    _apply_limits(config)
    _become_subreaper()
    home = config.get("home")
    threading.Thread(target=_watch_parent, args=(parent_pid, home), daemon=True).start()
    conn = Connection(args.fd)
    worker = Worker(conn, config)
    try:
        worker.serve()
    finally:
        _kill_children()
        conn.close()
    # Skip interpreter teardown: policy objects' finalizers have nothing left to do.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
