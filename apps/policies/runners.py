"""Where T4 policy functions run: the ``FunctionRunner`` interface and its local implementation.

``LocalProcessRunner`` starts each replica as a ``block_sdk.policy_runtime.function_server``
process on this machine. Replicas are *detached* (their own session, not tied to the process
that started them) and everything needed to find them again (pid, process start time, port)
is stored on the ``PolicyFunction`` record, so any web or Celery process can call, check,
restart or stop them, and they survive a restart of the process that created them. They run
with the sandbox's allow-listed environment (no database URL, keys or tokens).

A later issue moves replicas under the node agents / the Kubernetes driver (a Deployment per
function, an HPA for ``autoscaling``): that is another ``FunctionRunner`` with the same four
methods.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from block_sdk.policy_runtime.sandbox import build_sandbox_env

log = logging.getLogger("aios.policies.runners")

_FUNCTION_SERVER = "block_sdk.policy_runtime.function_server"


class ReplicaStartError(RuntimeError):
    """A replica did not come up; the message carries the reason (its log's last lines)."""


@dataclass(frozen=True)
class FunctionSpec:
    """What a replica runs: one policy instance with its final settings and parameters."""

    function_id: str
    name: str
    policy_rule_uri: str
    sha256: str
    archive_path: str
    class_name: str | None
    settings: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    call_timeout: float | None = None


class FunctionRunner(Protocol):
    """Starts and stops the replicas of policy functions."""

    name: str

    def start_replica(self, spec: FunctionSpec, index: int) -> dict[str, Any]:
        """Start replica ``index``; return its JSON state (must hold ``url``)."""

    def stop_replica(self, replica: dict[str, Any], *, force: bool = False) -> None:
        """Stop a replica described by the state ``start_replica`` returned (``force``: at
        once, for a replica stuck in a call that could not shut down cleanly anyway)."""

    def replica_alive(self, replica: dict[str, Any]) -> bool:
        """Whether the replica's process is still the one that was started."""

    def stop_all(self, function_id: str) -> None:
        """Remove whatever the runner keeps for a function (logs, files)."""


class LocalProcessRunner:
    """Replicas as detached child processes of whichever process starts them."""

    name = "local"

    def __init__(self, base_dir: Path, cache_root: Path, *, start_timeout: float = 30.0) -> None:
        self.base_dir = Path(base_dir)
        self.cache_root = Path(cache_root)
        self.start_timeout = start_timeout

    def _dir(self, function_id: str) -> Path:
        path = self.base_dir / function_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def start_replica(self, spec: FunctionSpec, index: int) -> dict[str, Any]:
        folder = self._dir(spec.function_id)
        settings_file = folder / "settings.json"
        parameters_file = folder / "parameters.json"
        settings_file.write_text(json.dumps(spec.settings), encoding="utf-8")
        parameters_file.write_text(json.dumps(spec.parameters), encoding="utf-8")
        log_path = folder / f"replica-{index}.log"
        argv = [
            sys.executable,
            "-s",
            "-m",
            _FUNCTION_SERVER,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--policy-archive",
            spec.archive_path,
            "--sha",
            spec.sha256,
            "--uri",
            spec.policy_rule_uri,
            "--settings",
            f"@{settings_file}",
            "--parameters",
            f"@{parameters_file}",
            "--cache-dir",
            str(self.cache_root),
            "--log-level",
            "WARNING",
        ]
        if spec.class_name:
            argv += ["--class-name", spec.class_name]
        if spec.call_timeout:
            argv += ["--timeout", str(spec.call_timeout)]
        env = build_sandbox_env(str(folder))
        with open(log_path, "wb") as log_fh:
            proc = subprocess.Popen(
                argv,
                cwd=str(folder),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        port = self._wait_ready(proc, log_path)
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:
            create_time = 0.0
        log.info(
            "event=function_replica_started function=%s index=%d pid=%d port=%d",
            spec.name,
            index,
            proc.pid,
            port,
        )
        return {
            "index": index,
            "runner": self.name,
            "pid": proc.pid,
            "create_time": create_time,
            "port": port,
            "url": f"http://127.0.0.1:{port}",
            "log": str(log_path),
            "started_at": time.time(),
        }

    def _wait_ready(self, proc: subprocess.Popen[bytes], log_path: Path) -> int:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            text = log_path.read_text(encoding="utf-8", errors="replace")
            for line in text.splitlines():
                if not line.startswith("{"):
                    continue
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "ready":
                        return int(event["port"])
                    if event.get("event") == "error":
                        self._kill(proc.pid)
                        error = event.get("error") or {}
                        raise ReplicaStartError(
                            f"{error.get('code', 'load_error')}: {error.get('message', line)}"
                        )
            if proc.poll() is not None:
                tail = " | ".join(text.strip().splitlines()[-5:])
                raise ReplicaStartError(f"function server exited ({proc.returncode}): {tail}")
            time.sleep(0.05)
        self._kill(proc.pid)
        raise ReplicaStartError(f"function server not ready within {self.start_timeout:g}s")

    def replica_alive(self, replica: dict[str, Any]) -> bool:
        pid = replica.get("pid")
        if not isinstance(pid, int):
            return False
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                return False
            # A recycled pid belongs to another process: compare start times.
            created = replica.get("create_time")
            return not created or abs(proc.create_time() - float(created)) < 1.0
        except psutil.Error:
            return False

    def stop_replica(self, replica: dict[str, Any], *, force: bool = False) -> None:
        if self.replica_alive(replica):
            self._kill(int(replica["pid"]), grace=0.0 if force else 3.0)

    @staticmethod
    def _kill(pid: int, grace: float = 3.0) -> None:
        # The replica leads its own session and process group: signal the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return
            except ChildProcessError:  # not our child: poll for it to vanish
                if not psutil.pid_exists(pid):
                    return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def stop_all(self, function_id: str) -> None:
        folder = self.base_dir / function_id
        for path in folder.glob("*.json"):
            path.unlink(missing_ok=True)
