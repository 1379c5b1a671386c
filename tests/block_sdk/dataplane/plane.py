"""A test harness that runs one block's data plane for real: an executor process and instance
processes on free ports, registered in Redis the way the control plane does it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis

from block_sdk.packet import make_block_packet
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc
from block_sdk.protos import inference_proxy_pb2_grpc as proxy_grpc
from block_sdk.queues import BlockKeys
from tests.support.procs import ManagedProcess, free_port, python_argv, wait_until

PROBE = "tests.block_sdk.dataplane.dp_blocks:ProbeBlock"
ECHO = "examples.echo.block:EchoBlock"
AIOS_STYLE = "tests.block_sdk.dataplane.aios_style_block:SimpleBlock"

START_TIMEOUT_S = 30.0

# Fast liveness so that death detection and discovery fit in test time.
FAST_INSTANCE_ENV = {
    "AIOS_HEARTBEAT_INTERVAL_S": "0.2",
    "AIOS_HEARTBEAT_TTL_S": "1.0",
    "AIOS_TAKE_TIMEOUT_S": "0.5",
    "AIOS_SHUTDOWN_GRACE_S": "2",
    "AIOS_LOG_LEVEL": "INFO",
}


@dataclass
class Proc:
    name: str
    process: ManagedProcess
    http_port: int | None = None
    grpc_port: int | None = None

    def alive(self) -> bool:
        return self.process.proc.poll() is None


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        raw, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
    if "json" in ctype:
        return status, json.loads(raw)
    return status, raw.decode()


class DataPlane:
    def __init__(self, redis_url: str, log_dir: Path, block_id: str) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.block_id = block_id
        self.keys = BlockKeys(block_id)
        self.events_stream = f"{self.keys.base}:events"  # per test, removed with the keys
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.executor: Proc | None = None
        self.instances: dict[str, Proc] = {}
        self._channel: grpc.Channel | None = None

    # -- processes ---------------------------------------------------------------------
    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("AIOS_EXECUTOR_CONFIG", None)
        env["REDIS_URL"] = self.redis_url
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra or {})
        return env

    def start_executor(self, **config: Any) -> Proc:
        grpc_port, http_port = free_port(), free_port()
        doc = {"watch_interval_s": 0.1, "request_timeout_s": 10.0, **config}
        argv = python_argv(
            "-m",
            "block_sdk.executor",
            "--block-id",
            self.block_id,
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--grpc-host",
            "127.0.0.1",
            "--http-host",
            "127.0.0.1",
            "--redis-url",
            self.redis_url,
            "--config",
            json.dumps(doc),
        )
        proc = ManagedProcess(argv, self._env(), self.log_dir / "executor.log")
        self.executor = Proc("executor", proc, http_port=http_port, grpc_port=grpc_port)
        wait_until(
            lambda: self.http("GET", "/health")[0] == 200,
            START_TIMEOUT_S,
            f"executor of {self.block_id} to answer /health ({proc.log_text()[-500:]})",
        )
        return self.executor

    def start_instance(
        self,
        instance_id: str,
        entrypoint: str = PROBE,
        *,
        register: bool = True,
        parameters: dict[str, Any] | None = None,
        init_data: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        http_port = free_port()
        extra = {
            **FAST_INSTANCE_ENV,
            "BLOCK_ID": self.block_id,
            "INSTANCE_ID": instance_id,
            "AIOS_INSTANCE_HTTP_HOST": "127.0.0.1",
            "AIOS_INSTANCE_HTTP_PORT": str(http_port),
            "BLOCK_INIT_PARAMETERS": json.dumps(parameters or {}),
            "BLOCK_INIT_DATA": json.dumps(init_data or {}),
            "AIOS_EVENTS_STREAM": self.events_stream,
            **(env or {}),
        }
        if register:
            # What the control plane does when it starts an instance.
            self.redis.hset(self.keys.instances, instance_id, json.dumps({"http_port": http_port}))
        argv = python_argv("-m", "block_sdk.instance", "--entrypoint", entrypoint)
        proc = ManagedProcess(argv, self._env(extra), self.log_dir / f"{instance_id}.log")
        handle = Proc(instance_id, proc, http_port=http_port)
        self.instances[instance_id] = handle
        return handle

    def wait_alive(self, instance_ids: list[str], timeout: float = START_TIMEOUT_S) -> None:
        want = set(instance_ids)

        def ready() -> bool:
            status, body = self.http("GET", "/health")
            return status == 200 and want <= set(body["instances"])

        try:
            wait_until(ready, timeout, f"instances {sorted(want)} to be live")
        except TimeoutError as exc:
            logs = " | ".join(p.process.log_text()[-400:] for p in self.instances.values())
            raise TimeoutError(f"{exc}; instance logs: {logs}") from None

    def wait_gone(self, instance_id: str, timeout: float = 15.0) -> None:
        wait_until(
            lambda: instance_id not in self.http("GET", "/health")[1]["instances"],
            timeout,
            f"instance {instance_id} to leave the live set",
        )

    def kill_instance(self, instance_id: str, sig: int = signal.SIGKILL) -> None:
        os.killpg(self.instances[instance_id].process.pid, sig)

    def close(self) -> None:
        procs = [*self.instances.values(), *([self.executor] if self.executor else [])]
        for p in procs:  # TERM everyone first so they shut down in parallel
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.process.pid, signal.SIGTERM)
        for p in procs:
            p.process.stop(timeout=8)
        if self._channel is not None:
            self._channel.close()
        self.redis.close()

    def delete_keys(self, client: redis.Redis) -> None:
        pattern = f"{self.keys.base}:*".replace("{", "\\{").replace("}", "\\}")
        for key in client.scan_iter(match=pattern, count=500):
            client.delete(key)

    # -- clients -----------------------------------------------------------------------
    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            assert self.executor is not None
            self._channel = grpc.insecure_channel(f"127.0.0.1:{self.executor.grpc_port}")
        return self._channel

    def stub(self) -> pb_grpc.BlockInferenceServiceStub:
        return pb_grpc.BlockInferenceServiceStub(self.channel)

    def proxy_stub(self) -> proxy_grpc.InferenceProxyStub:
        return proxy_grpc.InferenceProxyStub(self.channel)

    def infer(self, data: Any = None, *, timeout: float = 10.0, **kw: Any) -> pb.AIOSPacket:
        return self.stub().infer(make_block_packet(data, **kw), timeout=timeout)

    def infer_json(self, data: Any = None, **kw: Any) -> Any:
        return json.loads(self.infer(data, **kw).data)

    def http(self, method: str, path: str, body: Any = None, port: int | None = None):
        assert self.executor is not None or port is not None
        port = port or self.executor.http_port
        return http_json(method, f"http://127.0.0.1:{port}{path}", body)

    def mgmt(self, action: str, data: Any = None) -> tuple[int, Any]:
        return self.http("POST", "/executor/mgmt", {"mgmt_action": action, "mgmt_data": data})

    def instance_counts(self) -> dict[str, int]:
        _, body = self.mgmt("list_instances")
        return {i["instance_id"]: i["dispatched"] for i in body["result"]["instances"]}
