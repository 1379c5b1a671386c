"""``manage.py aios_policy_executor --port P --register <executor_id>``.

Starts the policy executor service (``python -m block_sdk.policy_runtime.executor``) as a
child process, registers it (or refreshes its record) once its port is bound, and keeps
running until the service exits or this command is stopped (SIGINT/SIGTERM), at which point
the record is marked ``unreachable``. The service gets this environment minus credentials.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ApiError
from apps.policies import runtime, services
from apps.policies.choices import ExecutorStatus
from apps.policies.models import PolicyExecutor
from block_sdk.policy_runtime.sandbox import is_secret_env_name

REPO_ROOT = Path(__file__).resolve().parents[4]
READY_TIMEOUT = 30.0
KEEP_ENV = {"AIOS_DATA_PLANE_API_KEY"}  # the executor checks it on every request


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in KEEP_ENV or not is_secret_env_name(k)}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["AIOS_POLICY_CACHE_DIR"] = str(runtime.cache_root())
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Command(BaseCommand):
    help = "Run a policy executor service (T2) on this machine and register it."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
        parser.add_argument("--register", required=True, metavar="EXECUTOR_ID")
        parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
        parser.add_argument(
            "--public-host", default=None, help="host name callers use (default: --host)"
        )
        parser.add_argument("--workers", type=int, default=None)
        parser.add_argument("--timeout", type=float, default=None, help="seconds per call")
        parser.add_argument("--memory-mb", type=int, default=None)
        parser.add_argument("--api-url", default=None, help="AIOS API for URI-only requests")

    def handle(self, *args, **options) -> None:
        executor_id = options["register"]
        argv = [
            sys.executable,
            "-m",
            "block_sdk.policy_runtime.executor",
            "--host",
            options["host"],
            "--port",
            str(options["port"]),
        ]
        for option in ("workers", "timeout", "memory_mb", "api_url"):
            if options[option] is not None:
                argv += [f"--{option.replace('_', '-')}", str(options[option])]
        proc = subprocess.Popen(
            argv,
            cwd=str(REPO_ROOT),
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        stopping = threading.Event()

        def stop(signum, _frame) -> None:
            stopping.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            port = self._wait_ready(proc)
            host = options["public_host"] or options["host"]
            try:
                executor = services.register_executor(
                    executor_id=executor_id,
                    executor_host_uri=f"http://{host}:{port}",
                    executor_metadata={"pid": proc.pid, "started_by": "aios_policy_executor"},
                    executor_hardware_info=services.local_hardware_info(executor_id),
                    replace=True,
                )
            except ApiError as exc:
                raise CommandError(f"{exc.code}: {exc.message}") from None
            self.stdout.write(
                json.dumps(
                    {
                        "event": "registered",
                        "executor_id": executor.executor_id,
                        "executor_host_uri": executor.executor_host_uri,
                        "pid": proc.pid,
                    }
                )
            )
            self.stdout.flush()
            threading.Thread(target=self._drain, args=(proc,), daemon=True).start()
            while proc.poll() is None and not stopping.is_set():
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
            PolicyExecutor.objects.filter(executor_id=executor_id).update(
                executor_status=ExecutorStatus.UNREACHABLE, last_error="executor stopped"
            )

    @staticmethod
    def _drain(proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for _line in proc.stdout:
            pass

    @staticmethod
    def _wait_ready(proc: subprocess.Popen) -> int:
        assert proc.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CommandError(f"the executor service exited with {proc.returncode}")
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if not ready:
                continue
            line = proc.stdout.readline().decode("utf-8", errors="replace").strip()
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == "ready":
                    return int(event["port"])
        raise CommandError(f"the executor service was not ready within {READY_TIMEOUT:g}s")
