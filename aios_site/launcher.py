"""`make up`: bring the whole system up on this machine, and down again on Ctrl-C.

Starts (or reuses) the embedded PostgreSQL and Redis, migrates, seeds, creates the admin
user and API token, then runs daphne (HTTP + websockets), a Celery worker, Celery beat,
Flower and the local cluster's node agent as child processes, each in its own process
group. Ctrl-C (SIGINT) or SIGTERM stops every child (SIGTERM, then SIGKILL after a grace
period) and the embedded servers this run started. If any child dies, everything stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from aios_site import embedded

log = logging.getLogger("aios.launcher")

BASE_DIR = Path(__file__).resolve().parent.parent
GRACE_S = 10.0
READY_TIMEOUT_S = 120.0
DEFAULT_EXTRA_PROCESSES = "node=aios_node --cluster local --node local-node-1 --create"


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None


@dataclass
class Launcher:
    env: dict[str, str]
    children: list[Child] = field(default_factory=list)
    started_embedded: bool = False
    stopping: bool = False

    # -- setup ------------------------------------------------------------------
    def prepare(self) -> None:
        if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
            was_running = embedded.postgres().is_running() and embedded.redis().is_running()
            self.env.setdefault("DATABASE_URL", embedded.ensure_database_url())
            self.env.setdefault("REDIS_URL", embedded.ensure_redis_url())
            self.started_embedded = not was_running
            log.info("embedded servers %s", "reused" if was_running else "started")
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("aios_bootstrap")
        # Built-in policies change with the code; the migration seeds them only once.
        self.manage("aios_seed_policies")
        for command in self.env.get("AIOS_SETUP_COMMANDS", "").split(","):
            if command.strip():
                self.manage(*command.split())

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            check=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )

    # -- children ---------------------------------------------------------------
    def plan(self) -> None:
        http_port = self.env.get("AIOS_HTTP_PORT", "8000")
        flower_port = self.env.get("AIOS_FLOWER_PORT", "5555")
        data = embedded.data_dir()
        py = sys.executable
        self.children = [
            Child(
                "web",
                [
                    py,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    http_port,
                    "aios_site.asgi:application",
                ],
            ),
            Child(
                "worker",
                [
                    py,
                    "-m",
                    "celery",
                    "-A",
                    "aios_site",
                    "worker",
                    "-l",
                    "INFO",
                    "--concurrency",
                    self.env.get("AIOS_WORKER_CONCURRENCY", "2"),
                    "-n",
                    f"aios-worker-{os.getpid()}@%h",
                ],
            ),
            Child(
                "beat",
                [
                    py,
                    "-m",
                    "celery",
                    "-A",
                    "aios_site",
                    "beat",
                    "-l",
                    "INFO",
                    "--schedule",
                    str(data / "celerybeat-schedule"),
                ],
            ),
        ]
        if self.env.get("AIOS_FLOWER", "1") != "0":
            self.children.append(
                Child(
                    "flower",
                    [
                        py,
                        "-m",
                        "celery",
                        "-A",
                        "aios_site",
                        "flower",
                        f"--port={flower_port}",
                        "--address=127.0.0.1",
                    ],
                )
            )
        # The local cluster's node agent runs by default; AIOS_EXTRA_PROCESSES replaces it
        # ("name=manage.py command args; ..."), an empty value runs none.
        extras = self.env.get("AIOS_EXTRA_PROCESSES", DEFAULT_EXTRA_PROCESSES)
        for extra in extras.split(";"):
            if extra.strip():
                name, _, command = extra.partition("=")
                self.children.append(Child(name.strip(), [py, "manage.py", *command.split()]))

    def start_children(self) -> None:
        for child in self.children:
            child.proc = subprocess.Popen(
                child.argv,
                cwd=BASE_DIR,
                env=self.env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: we stop the whole tree
            )
            log.info("started %s pid=%s", child.name, child.proc.pid)

    def wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.env.get('AIOS_HTTP_PORT', '8000')}/api/health/"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and not self.stopping:
            self.check_children()
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        if not self.stopping:
            raise RuntimeError(f"the web server did not answer {url} within {READY_TIMEOUT_S}s")

    def check_children(self) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}")

    def stop(self) -> None:
        self.stopping = True
        running = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for child in running:
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        for child in running:
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing", child.name, GRACE_S)
        # Kill each group, even when its leader exited: its grandchildren must not survive.
        for child in self.children:
            if child.proc is not None:
                _signal_group(child.proc, signal.SIGKILL)
                try:
                    child.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log.error("%s pid=%s did not die", child.name, child.proc.pid)
        if self.started_embedded:
            embedded.stop_all()
            log.info("embedded servers stopped")

    def banner(self) -> None:
        http = f"http://127.0.0.1:{self.env.get('AIOS_HTTP_PORT', '8000')}"
        lines = [
            "",
            "AIOS is up.",
            f"  dashboard  {http}/",
            f"  admin      {http}/admin/   (user: admin)",
            f"  API docs   {http}/api/docs/",
            f"  OpenAPI    {http}/api/schema/",
            f"  metrics    {http}/metrics",
        ]
        if self.env.get("AIOS_FLOWER", "1") != "0":
            lines.append(
                f"  Flower     http://127.0.0.1:{self.env.get('AIOS_FLOWER_PORT', '5555')}/"
            )
        lines.append("Press Ctrl-C to stop everything.")
        print("\n".join(lines), flush=True)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="launcher: %(message)s")
    launcher = Launcher(env=dict(os.environ))

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        launcher.prepare()
        launcher.plan()
        launcher.start_children()
        launcher.wait_ready()
        launcher.banner()
        while True:
            launcher.check_children()
            time.sleep(0.5)
    except KeyboardInterrupt:
        log.info("stopping")
    except Exception as exc:
        log.error("%s", exc)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup short
        launcher.stop()
    return code


if __name__ == "__main__":
    raise SystemExit(main())
