"""README command 1 (`make up`) brings the system up, and Ctrl-C leaves nothing running."""

import contextlib
import os
import signal
import subprocess
import urllib.request

import psutil
import pytest

from tests.support.procs import ROOT, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_make_up_serves_then_stops_every_child_on_sigint(child_env, tmp_path):
    http_port, flower_port = free_port(), free_port()
    env = dict(child_env)
    env.update(
        AIOS_HTTP_PORT=str(http_port),
        AIOS_FLOWER_PORT=str(flower_port),
        AIOS_ADMIN_PASSWORD="pw-smoke-123",
        AIOS_DATA_DIR=str(tmp_path / "data"),
    )
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "up"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    seen: set[int] = set()
    try:
        base = f"http://127.0.0.1:{http_port}"
        wait_until(lambda: http_status(f"{base}/api/schema/") == 200, 180, "/api/schema/")
        assert http_status(f"{base}/api/docs/") == 200
        assert http_status(f"{base}/admin/login/") == 200
        wait_until(lambda: http_status(f"http://127.0.0.1:{flower_port}/") == 200, 60, "flower")
        children = psutil.Process(proc.pid).children(recursive=True)
        seen = {child.pid for child in children}
        names = " ".join(" ".join(child.cmdline()) for child in children)
        for expected in ("daphne", "worker", "beat", "flower", "aios_node"):
            assert expected in names, names
        assert "API token for admin (shown once)" in (tmp_path / "up.log").read_text()

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert proc.wait(timeout=60) is not None
        wait_until(
            lambda: (
                not [
                    pid
                    for pid in seen
                    if psutil.pid_exists(pid)
                    and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                ]
            ),
            30,
            "every child to exit",
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log.close()
