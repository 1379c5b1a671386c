#!/usr/bin/env python
"""Container health check of the AIOS images (Docker/Podman HEALTHCHECK, Kubernetes exec probes).

`aios-healthcheck [ROLE [PORT]]`; without arguments the role and port come from the file the
entry point wrote (`$AIOS_RUN_DIR/aios-role`, default /tmp). Exit 0 healthy, 1 unhealthy.

- web, flower, executor, instance, policy-executor, policy-function: an HTTP GET of the
  role's health URL on 127.0.0.1 answers 2xx;
- worker: the Celery worker of this host answers a ping;
- beat, broker: the Celery broker (Redis) answers PING;
- a role without a health endpoint (or no port known): healthy while the process runs.
Every check ends within $AIOS_HEALTHCHECK_TIMEOUT seconds (default 8).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

TIMEOUT_S = float(os.environ.get("AIOS_HEALTHCHECK_TIMEOUT", "8"))
HTTP_PATHS = {
    "web": "/api/health/",
    "flower": "/healthcheck",
    "executor": "/health",
    "instance": "/health",
    "policy-executor": "/health",
    "policy-function": "/health",
    "node-metrics": "/health",
}


def recorded_role() -> tuple[str, str]:
    path = os.path.join(os.environ.get("AIOS_RUN_DIR", "/tmp"), "aios-role")  # noqa: S108
    try:
        with open(path, encoding="utf-8") as handle:
            parts = handle.read().split()
    except OSError:
        return "", ""
    return (parts[0] if parts else ""), (parts[1] if len(parts) > 1 else "")


def http_ok(port: str, path: str) -> bool:
    # Django checks the Host header against ALLOWED_HOSTS; "localhost" is always allowed.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"Host": "localhost"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def worker_ok() -> bool:
    command = [
        sys.executable, "-m", "celery", "-A", "aios_site", "inspect", "ping",
        "-d", f"celery@{socket.gethostname()}", "--timeout", str(max(1.0, TIMEOUT_S - 3)),
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command,
            cwd=os.environ.get("AIOS_APP_DIR", "/app"),
            capture_output=True,
            timeout=TIMEOUT_S + 30,  # Django and Celery start up before the ping is sent
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def broker_ok() -> bool:
    url = os.environ.get("CELERY_BROKER_URL") or os.environ.get("REDIS_URL", "")
    if not url:
        return False
    try:
        import redis  # in the control-plane and runtime images

        client = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
        return bool(client.ping())
    except Exception:  # any failure is "unhealthy", never a traceback in the probe log
        return False


def check(role: str, port: str) -> bool:
    if role in HTTP_PATHS:
        return http_ok(port, HTTP_PATHS[role]) if port else True
    if role == "worker":
        return worker_ok()
    if role in {"beat", "broker"}:
        return broker_ok()
    return True


def main(argv: list[str]) -> int:
    role, port = recorded_role()
    if argv:
        role, port = argv[0], (argv[1] if len(argv) > 1 else port)
    defaults = {
        "web": "8000",
        "flower": "5555",
        "executor": "18001",
        "instance": "18001",
        "node-metrics": "9109",
    }
    port = port or os.environ.get("AIOS_HEALTH_PORT", "") or defaults.get(role, "")
    healthy = check(role, port)
    if not healthy:
        print(f"aios-healthcheck: {role or 'unknown role'} is unhealthy", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
