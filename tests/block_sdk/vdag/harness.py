"""A small network of real data-plane processes for the vDAG tests: block executors and
instances (started in parallel), vDAG controllers and adhoc inference servers, each on free
ports, registered in Redis as the control plane would. Every id carries a random suffix and
`close()` deletes every key the network created."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis

from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc
from block_sdk.protos import vdag_packet_pb2 as vpb
from block_sdk.protos import vdag_packet_pb2_grpc as vpb_grpc
from block_sdk.queues import BlockKeys
from block_sdk.vdag import CompiledGraph, GraphNode, compile_graph
from tests.block_sdk.dataplane.plane import http_json
from tests.support.procs import ManagedProcess, free_port, python_argv, wait_until

CALC = "tests.block_sdk.vdag.blocks:CalcBlock"
POLICY_DIR = Path(__file__).resolve().parent / "policies"
START_TIMEOUT_S = 40.0

FAST_INSTANCE_ENV = {
    "AIOS_HEARTBEAT_INTERVAL_S": "0.2",
    "AIOS_HEARTBEAT_TTL_S": "1.0",
    "AIOS_TAKE_TIMEOUT_S": "0.5",
    "AIOS_SHUTDOWN_GRACE_S": "1",
    "AIOS_LOG_LEVEL": "INFO",
    "AIOS_POLICY_DIR": str(POLICY_DIR),
}


def short_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def other_db(url: str) -> str:
    """The same Redis server, another database: a second "cluster" that cannot see the
    first one's keys."""
    base, _, db = url.rpartition("/")
    if db.isdigit() and base.count("/") >= 2:
        return f"{base}/{(int(db) + 1) % 16}"
    return url.rstrip("/") + "/1"


@dataclass
class BlockHandle:
    block_id: str
    cluster_id: str
    redis_url: str
    grpc_port: int
    http_port: int
    executor: ManagedProcess
    instances: dict[str, ManagedProcess] = field(default_factory=dict)

    def address(self, **extra: Any) -> dict[str, Any]:
        return {
            "cluster_id": self.cluster_id,
            "grpc": f"127.0.0.1:{self.grpc_port}",
            "http": f"127.0.0.1:{self.http_port}",
            "redis_url": self.redis_url,
            **extra,
        }

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return http_json(method, f"http://127.0.0.1:{self.http_port}{path}", body)

    def metric(self, name: str, **labels: str) -> float:
        _, text = self.http("GET", "/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@dataclass
class ServerHandle:
    name: str
    process: ManagedProcess
    grpc_port: int
    http_port: int
    ids: dict[str, str] = field(default_factory=dict)
    _channel: grpc.Channel | None = None

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        return self._channel

    def vdag_stub(self) -> vpb_grpc.vDAGInferenceServiceStub:
        return vpb_grpc.vDAGInferenceServiceStub(self.channel)

    def block_stub(self) -> pb_grpc.BlockInferenceServiceStub:
        return pb_grpc.BlockInferenceServiceStub(self.channel)

    def infer(
        self,
        data: Any,
        *,
        session_id: str = "s1",
        seq_no: int = 1,
        timeout: float = 10.0,
        files: list[tuple[dict, bytes]] | None = None,
        frame_ptr: bytes = b"",
    ) -> vpb.vDAGInferencePacket:
        req = vpb.vDAGInferencePacket(
            session_id=session_id,
            seq_no=seq_no,
            data=json.dumps(data),
            ts=1.5,
            frame_ptr=frame_ptr,
        )
        for meta, blob in files or []:
            req.files.add(metadata=json.dumps(meta), file_data=blob)
        return self.vdag_stub().infer(req, timeout=timeout)

    def http(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return http_json(method, f"http://127.0.0.1:{self.http_port}{path}", body)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.process.proc.poll() is None:
            self.process.stop(timeout=8)


class Network:
    def __init__(self, redis_url: str, log_dir: Path) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.blocks: dict[str, BlockHandle] = {}
        self.servers: list[ServerHandle] = []
        self._clients: dict[str, redis.Redis] = {}
        self._patterns: set[tuple[str, str]] = set()

    def redis(self, url: str | None = None) -> redis.Redis:
        url = url or self.redis_url
        if url not in self._clients:
            self._clients[url] = redis.Redis.from_url(url, socket_timeout=5)
        return self._clients[url]

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        for name in (
            "AIOS_EXECUTOR_CONFIG",
            "AIOS_VDAG_CONTROLLER_CONFIG",
            "AIOS_API_URL",
            "AIOS_CLUSTER_ID",
        ):
            env.pop(name, None)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    # -- blocks ------------------------------------------------------------------------
    def add_block(
        self,
        name: str,
        params: dict[str, Any],
        *,
        instances: int = 1,
        cluster_id: str = "c1",
        redis_url: str | None = None,
        entrypoint: str = CALC,
        executor_config: dict[str, Any] | None = None,
        instance_env: dict[str, str] | None = None,
    ) -> BlockHandle:
        """Start (without waiting) an executor and `instances` instances of a block."""
        url = redis_url or self.redis_url
        block_id = short_id(name)
        grpc_port, http_port = free_port(), free_port()
        doc = {"watch_interval_s": 0.1, "request_timeout_s": 10.0, **(executor_config or {})}
        argv = python_argv(
            "-m",
            "block_sdk.executor",
            "--block-id",
            block_id,
            "--grpc-port",
            str(grpc_port),
            "--http-port",
            str(http_port),
            "--grpc-host",
            "127.0.0.1",
            "--http-host",
            "127.0.0.1",
            "--redis-url",
            url,
            "--config",
            json.dumps(doc),
        )
        executor = ManagedProcess(
            argv,
            self._env({"REDIS_URL": url, "AIOS_LOG_LEVEL": "WARNING"}),
            self.log_dir / f"{block_id}-executor.log",
        )
        handle = BlockHandle(block_id, cluster_id, url, grpc_port, http_port, executor)
        self.blocks[name] = handle
        self._patterns.add((url, f"{BlockKeys(block_id).base}:*"))
        for i in range(instances):
            self.start_instance(name, f"i{i + 1}", params, entrypoint, instance_env)
        return handle

    def start_instance(
        self,
        name: str,
        instance_id: str,
        params: dict[str, Any],
        entrypoint: str = CALC,
        env: dict[str, str] | None = None,
    ) -> None:
        b = self.blocks[name]
        keys = BlockKeys(b.block_id)
        self.redis(b.redis_url).hset(keys.instances, instance_id, json.dumps({"test": True}))
        extra = {
            **FAST_INSTANCE_ENV,
            "REDIS_URL": b.redis_url,
            "BLOCK_ID": b.block_id,
            "INSTANCE_ID": instance_id,
            "AIOS_CLUSTER_ID": b.cluster_id,
            "AIOS_INSTANCE_HTTP_HOST": "127.0.0.1",
            "AIOS_INSTANCE_HTTP_PORT": "0",
            "BLOCK_INIT_PARAMETERS": json.dumps(params),
            **(env or {}),
        }
        argv = python_argv("-m", "block_sdk.instance", "--entrypoint", entrypoint)
        b.instances[instance_id] = ManagedProcess(
            argv, self._env(extra), self.log_dir / f"{b.block_id}-{instance_id}.log"
        )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        for b in self.blocks.values():
            want = set(b.instances)

            def ready(b: BlockHandle = b, want: set[str] = want) -> bool:
                status, body = b.http("GET", "/health")
                return status == 200 and want <= set(body["instances"])

            try:
                wait_until(ready, timeout, f"block {b.block_id} and its instances")
            except TimeoutError as exc:
                logs = " | ".join(p.log_text()[-600:] for p in [b.executor, *b.instances.values()])
                raise TimeoutError(f"{exc}; logs: {logs}") from None

    def kill_instance(self, name: str, instance_id: str) -> None:
        os.killpg(self.blocks[name].instances[instance_id].pid, signal.SIGKILL)

    def kill_block(self, name: str) -> None:
        b = self.blocks[name]
        for proc in [b.executor, *b.instances.values()]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def node(self, label: str, name: str, **kw: Any) -> GraphNode:
        b = self.blocks[name]
        return GraphNode(label=label, block_id=b.block_id, executor=b.address(), **kw)

    def graph(
        self,
        nodes: list[GraphNode],
        edges: dict[str, list[str]],
        heads: list[str],
        tails: list[str],
        **kw: Any,
    ) -> CompiledGraph:
        """Compile with `edges` given as dst -> [srcs] (the spec's connection direction)."""
        return compile_graph(
            nodes,
            [
                {"nodeLabel": d, "inputs": [{"nodeLabel": s} for s in srcs]}
                for d, srcs in edges.items()
            ],
            heads,
            tails,
            **kw,
        )

    # -- servers -----------------------------------------------------------------------
    def start_controller(
        self, graph: CompiledGraph | dict[str, Any], *, wait: bool = True, **config: Any
    ) -> ServerHandle:
        ctl_id = short_id("ctl")
        grpc_port, http_port = free_port(), free_port()
        doc = {
            "vdag_uri": f"{ctl_id}:1.0-test",
            "controller_id": ctl_id,
            "cluster_id": "c1",
            "graph": graph.to_dict() if isinstance(graph, CompiledGraph) else graph,
            "redis_url": self.redis_url,
            "grpc_host": "127.0.0.1",
            "http_host": "127.0.0.1",
            "grpc_port": grpc_port,
            "http_port": http_port,
            "advertise_grpc": f"127.0.0.1:{grpc_port}",
            "policy_dir": str(POLICY_DIR),
            "request_timeout_s": 10.0,
            "metrics_interval_s": 0.5,
            "health_interval_s": 0,
            **config,
        }
        argv = python_argv("-m", "block_sdk.vdag_controller", "--config", json.dumps(doc))
        proc = ManagedProcess(
            argv, self._env({"AIOS_LOG_LEVEL": "INFO"}), self.log_dir / f"{ctl_id}.log"
        )
        handle = ServerHandle(
            ctl_id,
            proc,
            grpc_port,
            http_port,
            {"vdag_uri": doc["vdag_uri"], "controller_id": ctl_id},
        )
        self.servers.append(handle)
        for pattern in (
            f"aios:vdag:{{{ctl_id}}}:*",
            f"aios:vdag:final:{{{ctl_id}}}:*",
            f"aios:metrics:live:vdag:{doc['vdag_uri']}",
            f"aios:metrics:live:vdag_controller:{ctl_id}",
        ):
            self._patterns.add((self.redis_url, pattern))
        if wait:
            self.wait_server(handle)
        return handle

    def start_adhoc(self, *, wait: bool = True, **config: Any) -> ServerHandle:
        server_id = short_id("adhoc")
        grpc_port, http_port = free_port(), free_port()
        doc = {
            "server_id": server_id,
            "cluster_id": "c1",
            "redis_url": self.redis_url,
            "grpc_host": "127.0.0.1",
            "http_host": "127.0.0.1",
            "grpc_port": grpc_port,
            "http_port": http_port,
            "advertise_grpc": f"127.0.0.1:{grpc_port}",
            "policy_dir": str(POLICY_DIR),
            "request_timeout_s": 10.0,
            **config,
        }
        argv = python_argv("-m", "block_sdk.inference_server", "--config", json.dumps(doc))
        proc = ManagedProcess(
            argv, self._env({"AIOS_LOG_LEVEL": "INFO"}), self.log_dir / f"{server_id}.log"
        )
        handle = ServerHandle(server_id, proc, grpc_port, http_port, {"server_id": server_id})
        self.servers.append(handle)
        for pattern in (f"aios:inference:{{{server_id}}}:*", f"aios:vdag:final:{{{server_id}}}:*"):
            self._patterns.add((self.redis_url, pattern))
        if wait:
            self.wait_server(handle)
        return handle

    def wait_server(self, handle: ServerHandle, timeout: float = START_TIMEOUT_S) -> None:
        """Until /health answers; RuntimeError with the log at once if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if handle.process.proc.poll() is not None:
                raise RuntimeError(f"{handle.name} exited: {handle.process.log_text()[-1500:]}")
            with contextlib.suppress(OSError):
                if handle.http("GET", "/health")[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{handle.name} did not answer /health: {handle.process.log_text()}")

    def close(self) -> None:
        procs: list[ManagedProcess] = [s.process for s in self.servers]
        for b in self.blocks.values():
            procs.extend([*b.instances.values(), b.executor])
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGTERM)
        for s in self.servers:
            s.close()
        for p in procs:
            p.stop(timeout=8)
        for url, pattern in self._patterns:
            client = self.redis(url)
            escaped = pattern.replace("{", "\\{").replace("}", "\\}")
            for key in client.scan_iter(match=escaped, count=500):
                client.delete(key)
        for client in self._clients.values():
            client.close()
