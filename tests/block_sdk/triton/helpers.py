"""Helpers for the Triton tests: the skip marker, and starting the data plane's real
executor and instance processes for a block."""

from __future__ import annotations

import io
import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from block_sdk.packet import make_block_packet
from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc
from block_sdk.triton.server import TritonServer, tritonserver_available
from tests.support.procs import ROOT, ManagedProcess, free_port, port_open, wait_until

TRITON_OK, TRITON_WHY = tritonserver_available()
requires_triton = pytest.mark.skipif(
    not TRITON_OK, reason=f"tritonserver binary not installed here: {TRITON_WHY}"
)


def child_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        AIOS_REDIS_URL=redis_url,
        AIOS_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


@dataclass
class RunningBlock:
    """An executor plus instance processes of one block, reachable over gRPC."""

    block_id: str
    grpc_port: int
    procs: list[ManagedProcess] = field(default_factory=list)

    def stub(self) -> pb_grpc.BlockInferenceServiceStub:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        return pb_grpc.BlockInferenceServiceStub(self.channel)

    def infer(self, data: object, timeout: float = 20.0, **kw: object):
        return self.stub().infer(
            make_block_packet(data, block_id=self.block_id, **kw), timeout=timeout
        )

    def logs(self) -> str:
        return "\n".join(f"--- {p.argv[2:4]} ---\n{p.log_text()}" for p in self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def _executor_health(http_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=2) as resp:
        return json.loads(resp.read())


def start_block(
    tmp_path: Path,
    redis_url: str,
    block_id: str,
    entrypoint: str,
    init_data: dict,
    instances: int = 1,
    ready_timeout: float = 60.0,
    executor: bool = True,
) -> RunningBlock:
    """Start `instances` instance processes and (unless `executor=False`) one executor;
    wait until every instance heartbeats and the executor sees them all alive."""
    ids = [f"i-{n + 1}" for n in range(instances)]
    block = RunningBlock(block_id, free_port())
    try:
        for iid in ids:
            env = child_env(
                redis_url, BLOCK_ID=block_id, INSTANCE_ID=iid, BLOCK_INIT_DATA=json.dumps(init_data)
            )
            block.procs.append(
                ManagedProcess(
                    [
                        sys.executable,
                        "-m",
                        "block_sdk.instance",
                        "--entrypoint",
                        entrypoint,
                        "--http-port",
                        "0",
                        "--http-host",
                        "127.0.0.1",
                    ],
                    env=env,
                    log_path=tmp_path / f"{block_id}-{iid}.log",
                )
            )
        http_port = free_port()
        if executor:
            block.procs.append(
                ManagedProcess(
                    [
                        sys.executable,
                        "-m",
                        "block_sdk.executor",
                        "--block-id",
                        block_id,
                        "--grpc-port",
                        str(block.grpc_port),
                        "--http-port",
                        str(http_port),
                        "--grpc-host",
                        "127.0.0.1",
                        "--http-host",
                        "127.0.0.1",
                        "--redis-url",
                        redis_url,
                        "--instances",
                        ",".join(ids),
                        "--watch-interval-s",
                        "0.2",
                    ],
                    env=child_env(redis_url),
                    log_path=tmp_path / f"{block_id}-executor.log",
                )
            )
        client = redis.Redis.from_url(redis_url, socket_timeout=5)

        def ready() -> bool:
            for p in block.procs:
                if p.proc.poll() is not None:
                    raise RuntimeError(f"a block process exited early:\n{block.logs()}")
            alive = all(client.exists(f"aios:block:{{{block_id}}}:hb:{i}") for i in ids)
            return alive and (not executor or port_open(block.grpc_port))

        try:
            wait_until(ready, ready_timeout, f"block {block_id} to come up")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{block.logs()}") from None
        if executor:
            # The executor learns liveness on its next watch tick.
            wait_until(
                lambda: _executor_health(http_port)["instances_alive"] == instances,
                20,
                "the executor to see every instance",
            )
        client.close()
        return block
    except BaseException:
        block.stop()
        raise


# -- the baseline: the example model called straight with tritonclient -----------------
X = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0], [-3.25, 0.0, 1.5, 7.0]]


def url_of(server: TritonServer, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def direct(url: str, protocol: str, x: list) -> dict[str, list]:
    """The same model called straight with tritonclient: the baseline numbers."""
    arr = np.asarray(x, dtype=np.float32)
    mod = grpcclient if protocol == "grpc" else httpclient
    client = mod.InferenceServerClient(url=url)
    try:
        inp = mod.InferInput("x", list(arr.shape), "FP32")
        inp.set_data_from_numpy(arr)
        result = client.infer("linear", [inp])
        return {"y": result.as_numpy("y").tolist(), "label": result.as_numpy("label").tolist()}
    finally:
        client.close()


def npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
