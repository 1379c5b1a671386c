"""Benchmark: the Triton-backed block through the executor vs tritonclient straight to Triton.

One run, everything real and on this machine: a Triton server (CPU, python backend) with the
example `linear` model; for each protocol (gRPC, HTTP) one block = executor process + one
instance process running `examples.triton_model.block:TritonModelBlock`; sequential requests
from one client. Prints p50/p95 latencies and the ratios block / direct (target <= 1.3x for
gRPC), the block's own in-process overhead (BlockTester, no executor hop), and the executor
hop alone (the echo example block through the same path).

    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/block_triton.py [--n 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import redis
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from block_sdk.packet import make_block_packet  # noqa: E402
from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc  # noqa: E402
from block_sdk.testing import BlockTester  # noqa: E402
from block_sdk.triton.server import TritonServer  # noqa: E402
from examples.triton_model.block import TritonModelBlock  # noqa: E402
from examples.triton_model.model_repository import build  # noqa: E402

X = [[1.0, 2.0, 3.0, 4.0]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(fn: Callable[[], object], n: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples) * 1000,
        "p95_ms": samples[int(0.95 * (len(samples) - 1))] * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
        "rps": n / sum(samples),
    }


def direct_call(url: str, protocol: str) -> Callable[[], object]:
    mod = grpcclient if protocol == "grpc" else httpclient
    client = mod.InferenceServerClient(url=url)
    arr = np.asarray(X, dtype=np.float32)

    def call() -> object:
        inp = mod.InferInput("x", list(arr.shape), "FP32")
        if protocol == "http":
            inp.set_data_from_numpy(arr, binary_data=True)
            outs = [mod.InferRequestedOutput(n, binary_data=True) for n in ("y", "label")]
        else:
            inp.set_data_from_numpy(arr)
            outs = [mod.InferRequestedOutput(n) for n in ("y", "label")]
        result = client.infer("linear", [inp], outputs=outs)
        # The same work the block does with the result: numbers to JSON.
        return json.dumps(
            {"y": result.as_numpy("y").tolist(), "label": result.as_numpy("label").tolist()}
        )

    return call


class Block:
    """Executor + one instance, as child processes in their own sessions."""

    def __init__(
        self,
        redis_url: str,
        init_data: dict,
        logdir: Path,
        entrypoint: str = "examples.triton_model.block:TritonModelBlock",
    ) -> None:
        self.block_id = f"bench-{uuid.uuid4().hex[:8]}"
        self._logs: list = []
        self.grpc_port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT), REDIS_URL=redis_url, AIOS_REDIS_URL=redis_url,
                   AIOS_LOG_LEVEL="WARNING", BLOCK_ID=self.block_id, INSTANCE_ID="i-1",
                   BLOCK_INIT_DATA=json.dumps(init_data))  # fmt: skip
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "block_sdk.instance", "--entrypoint",
                 entrypoint, "--http-port", "0"],
                cwd=ROOT, env=env, start_new_session=True,
                stdout=self._log(logdir / f"{self.block_id}-instance.log"), stderr=subprocess.STDOUT,
            ),
            subprocess.Popen(
                [sys.executable, "-m", "block_sdk.executor", "--block-id", self.block_id,
                 "--grpc-port", str(self.grpc_port), "--http-port", str(free_port()),
                 "--redis-url", redis_url, "--instances", "i-1", "--watch-interval-s", "0.2"],
                cwd=ROOT, env=env, start_new_session=True,
                stdout=self._log(logdir / f"{self.block_id}-executor.log"), stderr=subprocess.STDOUT,
            ),
        ]  # fmt: skip
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = pb_grpc.BlockInferenceServiceStub(self.channel)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.call()
                break
            except grpc.RpcError:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    self.stop()
                    raise RuntimeError(f"block did not come up; logs in {logdir}") from None
                time.sleep(0.2)

    def _log(self, path: Path):
        fh = path.open("wb")  # closed in stop()
        self._logs.append(fh)
        return fh

    def call(self) -> object:
        return self.stub.infer(make_block_packet({"x": X}, block_id=self.block_id), timeout=10)

    def stop(self) -> None:
        self.channel.close()
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        for fh in self._logs:
            fh.close()
        client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        keys = list(client.scan_iter(match=f"aios:block:{{{self.block_id}}}:*"))
        if keys:
            client.delete(*keys)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1000, help="measured requests per case")
    ap.add_argument("--warmup", type=int, default=100)
    a = ap.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    work = Path(tempfile.mkdtemp(prefix="aios-bench-triton-"))
    results: dict[str, dict[str, float]] = {}
    with TritonServer(build(work / "repo")) as server:
        for protocol in ("grpc", "http"):
            url = server.grpc_url if protocol == "grpc" else server.http_url
            results[f"direct_{protocol}"] = measure(direct_call(url, protocol), a.n, a.warmup)
            tester = BlockTester(
                TritonModelBlock, init_data={"triton_url": url, "protocol": protocol}
            )
            results[f"in_process_{protocol}"] = measure(
                lambda t=tester: t.run_one({"x": X}), a.n, a.warmup
            )
            block = Block(redis_url, {"triton_url": url, "protocol": protocol}, work)
            try:
                results[f"block_{protocol}"] = measure(block.call, a.n, a.warmup)
            finally:
                block.stop()
        # The executor hop alone: the trivial echo block through the same executor path.
        echo = Block(redis_url, {}, work, entrypoint="examples.echo.block:EchoBlock")
        try:
            results["echo_block_hop"] = measure(echo.call, a.n, a.warmup)
        finally:
            echo.stop()

    print(
        f"Triton-backed block vs tritonclient -> Triton (n={a.n}, sequential, one client, CPU Triton)"
    )
    print(f"{'case':<20}{'p50 ms':>9}{'p95 ms':>9}{'mean ms':>9}{'rps':>9}")
    for name, r in results.items():
        print(
            f"{name:<20}{r['p50_ms']:>9.3f}{r['p95_ms']:>9.3f}{r['mean_ms']:>9.3f}{r['rps']:>9.0f}"
        )
    ratios = {}
    for protocol in ("grpc", "http"):
        d = results[f"direct_{protocol}"]["p50_ms"]
        ratios[f"block_vs_direct_{protocol}_p50"] = results[f"block_{protocol}"]["p50_ms"] / d
        ratios[f"in_process_vs_direct_{protocol}_p50"] = (
            results[f"in_process_{protocol}"]["p50_ms"] / d
        )
        ratios[f"added_ms_{protocol}_p50"] = results[f"block_{protocol}"]["p50_ms"] - d
        ratios[f"block_minus_echo_hop_ms_{protocol}_p50"] = (
            results[f"block_{protocol}"]["p50_ms"] - results["echo_block_hop"]["p50_ms"]
        )
    print()
    for k, v in ratios.items():
        print(f"{k:<34}{v:>8.3f}")
    target = ratios["block_vs_direct_grpc_p50"]
    print(
        f"\ntarget: block (gRPC) <= 1.3x direct gRPC p50 -> {'MET' if target <= 1.3 else 'NOT MET'} ({target:.2f}x)"
    )
    print(json.dumps({"results": results, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
