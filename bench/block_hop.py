"""Block hop benchmark: what the data plane adds on top of calling block code directly.

One run prints, for a trivial block (examples.echo):
  * p50/p99 latency of calling the class in-process (BlockTester, the baseline);
  * p50/p99 through the executor (gRPC -> Redis queue -> instance -> reply) and the added
    latency per hop (target: p50 <= 1 ms), for both instance I/O modes;
  * one raw Redis LPUSH->BRPOP hop between two processes, for scale;
  * the floor: the same process layout (grpc.aio handler -> Redis list -> worker process ->
    Redis list -> one reader) with none of the SDK, i.e. what gRPC + Redis cost by themselves;
  * throughput with 1, 2 and 4 instances (ratios against 1 instance);
  * CPU time per request of the executor and instance processes, and their RSS;
  * with `--baseline-src DIR` (a copy of another revision's `block_sdk/`, `aios_instance/` and
    `examples/`, e.g. `git archive HEAD~3 block_sdk aios_instance examples | tar -x -C DIR`):
    the executor path of that tree in the same interleaved rounds, as a before/after ratio;
  * with `--with-ray`: the same trivial model as one Ray Serve deployment called through a
    deployment handle (bench/ray_baseline.py, run in the separate venv made by
    bench/setup_ray.sh), after the AIOS processes are stopped, and the ratios: one-instance
    block throughput / Ray's (target >= 5x), latency, memory side by side.

Needs a Redis (REDIS_URL, default redis://127.0.0.1:6379/0). Usage:
    .venv/bin/python bench/block_hop.py [--requests 2000] [--rounds 3] [--seconds 3] [--concurrency 32]
        [--baseline-src DIR] [--with-ray [--ray-python PATH]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import psutil  # noqa: E402
import redis  # noqa: E402

from bench.ray_baseline import find_ray_python, run_ray_baseline  # noqa: E402
from block_sdk.packet import make_block_packet  # noqa: E402
from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc  # noqa: E402
from block_sdk.queues import BlockKeys  # noqa: E402
from block_sdk.testing import BlockTester  # noqa: E402
from examples.echo.block import EchoBlock  # noqa: E402

ENTRY = "examples.echo.block:EchoBlock"
PAYLOAD = {"text": "hello", "n": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


class Block:
    """An executor plus instances of the echo block, as child processes."""

    def __init__(
        self,
        redis_url: str,
        io_mode: str = "thread",
        parameters: dict | None = None,
        root: Path = ROOT,
    ) -> None:
        self.root = root  # the source tree the processes run from (--baseline-src)
        self.redis_url = redis_url
        self.io_mode = io_mode
        self.parameters = parameters or {}
        self.block_id = f"bench-{uuid.uuid4().hex[:8]}"
        self.keys = BlockKeys(self.block_id)
        self.r = redis.Redis.from_url(redis_url)
        self.procs: list[subprocess.Popen] = []
        self.grpc_port, self.http_port = free_port(), free_port()

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        if self.root != ROOT:
            env = {**env, "PYTHONPATH": str(self.root)}
        self.procs.append(
            subprocess.Popen(
                [sys.executable, *argv],
                cwd=self.root,
                env={**os.environ, "REDIS_URL": self.redis_url, "AIOS_LOG_LEVEL": "WARNING", **env},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def start(self, n_instances: int, registered: int | None = None) -> None:
        for i in range(n_instances):
            iid = f"i{i}"
            if registered is None or i < registered:
                self.r.hset(self.keys.instances, iid, "{}")
            self._spawn(
                ["-m", "block_sdk.instance", "--entrypoint", ENTRY],
                {
                    "BLOCK_ID": self.block_id,
                    "INSTANCE_ID": iid,
                    "AIOS_INSTANCE_HTTP_PORT": "0",
                    "AIOS_INSTANCE_IO": self.io_mode,
                    "BLOCK_INIT_PARAMETERS": json.dumps(self.parameters),
                },
            )
        config = {"watch_interval_s": 0.2, "lb_policy": "least_queue",
                  "lb_parameters": {"session_stickiness": False}, "max_queue_length": 100000}  # fmt: skip
        self._spawn(
            ["-m", "block_sdk.executor", "--block-id", self.block_id,
             "--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port),
             "--grpc-host", "127.0.0.1", "--http-host", "127.0.0.1",
             "--config", json.dumps(config)],
            {},
        )  # fmt: skip
        self.wait_alive(registered if registered is not None else n_instances)

    def wait_alive(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.http_port}/health"
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(url, timeout=1) as resp,
            ):
                if json.loads(resp.read())["instances_alive"] == n:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.block_id}: {n} live instances never showed up")

    def set_live(self, n: int, total: int) -> None:
        for i in range(total):
            if i < n:
                self.r.hset(self.keys.instances, f"i{i}", "{}")
            else:
                self.r.hdel(self.keys.instances, f"i{i}")
        self.wait_alive(n)

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds (user + system) used so far by (executor, instances)."""
        ex = inst = 0.0
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(p.pid).cpu_times()
                if p is self.procs[-1]:  # the executor is spawned last
                    ex += t.user + t.system
                else:
                    inst += t.user + t.system
        return ex, inst

    def rss_mb(self) -> float:
        total = 0
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                total += psutil.Process(p.pid).memory_info().rss
        return total / 2**20

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        pattern = f"{self.keys.base}:*".replace("{", "\\{").replace("}", "\\}")
        for key in self.r.scan_iter(match=pattern):
            self.r.delete(key)


def _floor_worker(url: str, key: str) -> None:
    """Floor: the bare instance side (BLMOVE, LPUSH reply, LREM), no SDK."""
    r = redis.Redis.from_url(url, socket_timeout=30)  # above every blocking timeout used
    while True:
        item = r.blmove(f"{key}:q", f"{key}:p", 1, "RIGHT", "LEFT")
        if item is None:
            continue
        pipe = r.pipeline(transaction=False)
        pipe.lpush(f"{key}:r", item)
        pipe.lrem(f"{key}:p", 1, item)
        pipe.execute()


def _floor_server(url: str, key: str, port: int) -> None:
    """Floor: the bare executor side (grpc.aio handler, LPUSH, one BLPOP reader), no SDK."""
    import redis.asyncio as aioredis

    from block_sdk.protos import aios_packet_pb2 as pb

    async def serve() -> None:
        r = aioredis.Redis.from_url(url)
        waiting: dict[bytes, asyncio.Future] = {}
        counter = iter(range(1, 1 << 62))

        async def reader() -> None:
            rr = aioredis.Redis.from_url(url, socket_timeout=30)
            while True:
                got = await rr.blpop([f"{key}:r"], timeout=1)
                fut = waiting.pop(got[1], None) if got else None
                if fut is not None and not fut.done():
                    fut.set_result(True)

        class Servicer(pb_grpc.BlockInferenceServiceServicer):
            async def infer(self, request, context):
                rid = str(next(counter)).encode()
                fut = waiting[rid] = asyncio.get_running_loop().create_future()
                await r.lpush(f"{key}:q", rid)
                await fut
                return pb.AIOSPacket(data=request.data)

        task = asyncio.create_task(reader())
        server = grpc.aio.server()
        pb_grpc.add_BlockInferenceServiceServicer_to_server(Servicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()
        task.cancel()

    asyncio.run(serve())


class Floor:
    """The same process layout with none of the SDK: what gRPC + Redis cost by themselves."""

    def __init__(self, url: str) -> None:
        self.url, self.key, self.grpc_port = url, f"bench:floor:{uuid.uuid4().hex}", free_port()
        ctx = mp.get_context("spawn")
        self.procs = [
            ctx.Process(target=_floor_worker, args=(url, self.key), daemon=True),
            ctx.Process(target=_floor_server, args=(url, self.key, self.grpc_port), daemon=True),
        ]

    def start(self) -> None:
        for p in self.procs:
            p.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        channel.close()

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        r = redis.Redis.from_url(self.url)
        r.delete(f"{self.key}:q", f"{self.key}:p", f"{self.key}:r")


def bench_direct(n: int) -> list[float]:
    tester = BlockTester(EchoBlock)
    for _ in range(200):
        tester.run_packet(tester.packet(PAYLOAD))
    out = []
    for _ in range(n):
        t = time.perf_counter()
        tester.run_packet(tester.packet(PAYLOAD))
        out.append(time.perf_counter() - t)
    return out


def bench_latency(block: Block | Floor, n: int) -> list[float]:
    channel = grpc.insecure_channel(f"127.0.0.1:{block.grpc_port}")
    stub = pb_grpc.BlockInferenceServiceStub(channel)
    req = make_block_packet(PAYLOAD)
    for _ in range(300):
        stub.infer(req, timeout=10)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        stub.infer(req, timeout=10)
        out.append(time.perf_counter() - t)
    channel.close()
    return out


async def _throughput(port: int, seconds: float, concurrency: int) -> tuple[int, int]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.BlockInferenceServiceStub(channel)
        req = make_block_packet(PAYLOAD)
        done = errors = 0
        stop_at = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < stop_at:
                try:
                    await stub.infer(req, timeout=10)
                    done += 1
                except grpc.aio.AioRpcError:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return done, errors


def bench_throughput(block: Block, seconds: float, concurrency: int) -> tuple[float, int]:
    asyncio.run(_throughput(block.grpc_port, 1.0, concurrency))  # warm-up
    done, errors = asyncio.run(_throughput(block.grpc_port, seconds, concurrency))
    return done / seconds, errors


def _hop_echo(url: str, a: str, b: str) -> None:
    r = redis.Redis.from_url(url, socket_timeout=30)
    while True:
        item = r.brpop([a], timeout=5)
        if item is None:
            return
        r.lpush(b, item[1])


def bench_redis_hop(url: str, n: int) -> list[float]:
    a, b = f"bench:hop:{uuid.uuid4().hex}", f"bench:hop:{uuid.uuid4().hex}"
    p = mp.get_context("spawn").Process(target=_hop_echo, args=(url, a, b), daemon=True)
    p.start()
    r = redis.Redis.from_url(url, socket_timeout=30)
    out = []
    for i in range(n + 200):
        t = time.perf_counter()
        r.lpush(a, b"x")
        r.brpop([b], timeout=5)
        if i >= 200:
            out.append((time.perf_counter() - t) / 2)  # two hops per round trip
    p.terminate()
    r.delete(a, b)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--baseline-src",
        default="",
        help="a tree with another revision's block_sdk/, aios_instance/ and examples/: its "
        "executor path runs in the same rounds (before/after ratio)",
    )
    ap.add_argument("--with-ray", action="store_true", help="compare with Ray Serve")
    ap.add_argument("--ray-python", default="", help="Python of the Ray venv (bench/setup_ray.sh)")
    ap.add_argument("--ray-time-limit", type=float, default=300.0)
    args = ap.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    redis.Redis.from_url(url).ping()
    ray_python = find_ray_python(args.ray_python) if args.with_ray else None
    if args.with_ray and ray_python is None:
        print("--with-ray: no Ray venv found; run `bash bench/setup_ray.sh` (or --ray-python)")
        return 2
    print(
        f"block hop benchmark  cpus={os.cpu_count()}  load={os.getloadavg()[0]:.1f}  "
        f"redis={url}  requests={args.requests} x {args.rounds} rounds"
    )

    # Rounds interleave every variant so that load from other processes on the machine hits
    # them alike; the median of the per-round p50s is reported.
    blocks = {mode: Block(url, io_mode=mode) for mode in ("thread", "asyncio")}
    if args.baseline_src:
        blocks["baseline"] = Block(url, io_mode="thread", root=Path(args.baseline_src).resolve())
    floor = Floor(url)
    series: dict[str, list[list[float]]] = {}
    cpu: dict[str, list[tuple[float, float]]] = {}  # per round: (executor, instance) s/request
    names = {
        "direct": "direct in-process (BlockTester)",
        "hop": "one Redis LPUSH->BRPOP hop",
        "floor": "floor: bare grpc.aio + Redis queue, no SDK",
        "thread": "through executor, instance io=thread",
        "asyncio": "through executor, instance io=asyncio",
    }
    if args.baseline_src:
        names["baseline"] = "baseline tree, through executor, io=thread"
    rss: dict[str, float] = {}
    try:
        for block in blocks.values():
            block.start(1)
        floor.start()
        for _ in range(args.rounds):
            series.setdefault("direct", []).append(bench_direct(args.requests))
            series.setdefault("hop", []).append(bench_redis_hop(url, args.requests))
            try:
                series.setdefault("floor", []).append(bench_latency(floor, args.requests))
            except grpc.RpcError as exc:
                alive = [(p.is_alive(), p.exitcode) for p in floor.procs]
                raise RuntimeError(f"floor processes (alive, exit): {alive}") from exc
            for mode, block in blocks.items():
                c0 = block.cpu_s()
                series.setdefault(mode, []).append(bench_latency(block, args.requests))
                c1 = block.cpu_s()
                n = args.requests + 300  # with the warm-up calls
                cpu.setdefault(mode, []).append(((c1[0] - c0[0]) / n, (c1[1] - c0[1]) / n))
        rss = {mode: block.rss_mb() for mode, block in blocks.items()}
    finally:
        for block in blocks.values():
            block.stop()
        floor.stop()

    def p50(key: str) -> float:
        return statistics.median(pct(v, 50) for v in series[key])

    print(f"\n{'latency (median over rounds)':44s} {'p50 ms':>8s} {'p99 ms':>8s}  per-round p50")
    for key, name in names.items():
        p99 = statistics.median(pct(v, 99) for v in series[key])
        rounds = " ".join(f"{pct(v, 50) * 1e3:.3f}" for v in series[key])
        print(f"{name:44s} {p50(key) * 1e3:8.3f} {p99 * 1e3:8.3f}  [{rounds}]")
    base = p50("direct")
    for mode in ("thread", "asyncio"):
        added = (p50(mode) - base) * 1e3
        verdict = "meets" if added <= 1.0 else "misses"
        print(f"added per hop (io={mode}): p50 {added:.3f} ms ({verdict} the 1 ms target); "
              f"{p50(mode) / base:.0f}x the direct call, {p50(mode) / p50('floor'):.2f}x the floor")  # fmt: skip
    print("\nCPU per request (median over rounds) and RSS, executor + 1 instance:")
    for mode in blocks:
        ex = statistics.median(c[0] for c in cpu[mode]) * 1e6
        inst = statistics.median(c[1] for c in cpu[mode]) * 1e6
        print(f"  {names[mode]:44s} executor {ex:6.0f} us  instance {inst:6.0f} us  "
              f"RSS {rss.get(mode, 0):5.0f} MiB")  # fmt: skip
    if args.baseline_src:
        ratio = p50("thread") / p50("baseline")
        ex_new = statistics.median(c[0] for c in cpu["thread"])
        ex_old = statistics.median(c[0] for c in cpu["baseline"])
        in_new = statistics.median(c[1] for c in cpu["thread"])
        in_old = statistics.median(c[1] for c in cpu["baseline"])
        wins = sum(
            pct(a, 50) < pct(b, 50)
            for a, b in zip(series["thread"], series["baseline"], strict=True)
        )
        print(f"this tree vs baseline tree (io=thread): p50 {ratio:.2f}x "
              f"(faster in {wins} of {args.rounds} rounds), executor CPU {ex_new / ex_old:.2f}x, "
              f"instance CPU {in_new / in_old:.2f}x")  # fmt: skip

    # A trivial block is CPU-bound on the load generator, executor and Redis, so on a small
    # machine more instances cannot help; a block that waits (a stand-in for a GPU or remote
    # model call) shows what instances add.
    one_instance_rps = 0.0
    for label, params in (
        ("trivial echo", {}),
        ("echo + 5 ms wait per request (model stand-in)", {"delay_s": 0.005}),
    ):
        print(f"\nthroughput, {label} ({args.seconds:.0f}s, {args.concurrency} concurrent callers)")
        block = Block(url, io_mode="thread", parameters=params)
        results: dict[int, float] = {}
        try:
            block.start(4, registered=1)
            for n in (1, 2, 4):
                block.set_live(n, 4)
                rps, errors = bench_throughput(block, args.seconds, args.concurrency)
                results[n] = rps
                print(f"  {n} instance(s): {rps:8.0f} req/s  ({results[n] / results[1]:.2f}x of 1)"
                      f"{f'  errors={errors}' if errors else ''}")  # fmt: skip
        finally:
            block.stop()
        if not params:
            one_instance_rps = results[1]

    if ray_python:
        compare_with_ray(ray_python, args, p50("thread"), series["thread"], one_instance_rps, rss)
    return 0


def compare_with_ray(
    python: str,
    args: argparse.Namespace,
    aios_p50: float,
    aios_rounds: list[list[float]],
    aios_rps: float,
    rss: dict[str, float],
) -> None:
    """The same trivial model as one Ray Serve deployment behind a handle, measured after
    every AIOS process has stopped (the two never compete for the CPUs)."""
    print(f"\nRay Serve baseline (single deployment, handle calls; {python})")
    ray = run_ray_baseline(
        python,
        "single",
        requests=args.requests,
        seconds=args.seconds,
        concurrency=args.concurrency,
        time_limit=args.ray_time_limit,
    )
    if "error" in ray:
        print(f"  Ray Serve run failed: {ray['error']}")
        return
    single = ray["single"]
    aios_seq_rps = statistics.median(len(v) / sum(v) for v in aios_rounds)
    print(
        f"  Ray {ray['ray_version']}: p50 {single['p50'] * 1e3:.3f} ms, p99 {single['p99'] * 1e3:.3f} ms, "
        f"sequential {single['sequential_rps']:.0f} req/s, {single['concurrency']} concurrent "
        f"callers {single['rps']:.0f} req/s, RSS of Ray's {ray['single_processes']} processes "
        f"{single['rss_mb']:.0f} MiB (idle {ray['single_idle_rss_mb']:.0f} MiB)"
    )
    ratio = aios_rps / single["rps"] if single["rps"] else float("inf")
    verdict = "meets" if ratio >= 5 else "misses"
    print(
        f"  one-instance block throughput / Ray single deployment: {aios_rps:.0f} / "
        f"{single['rps']:.0f} = {ratio:.2f}x ({verdict} the >= 5x target)"
    )
    print(
        f"  latency p50: AIOS executor hop {aios_p50 * 1e3:.3f} ms vs Ray handle call "
        f"{single['p50'] * 1e3:.3f} ms -> Ray / AIOS = {single['p50'] / aios_p50:.2f}x; sequential "
        f"throughput {aios_seq_rps:.0f} vs {single['sequential_rps']:.0f} req/s "
        f"({aios_seq_rps / single['sequential_rps']:.2f}x)"
    )
    print(
        f"  memory: AIOS executor + 1 instance {rss.get('thread', 0):.0f} MiB vs Ray "
        f"{single['rss_mb']:.0f} MiB ({single['rss_mb'] / max(rss.get('thread', 1), 1):.1f}x)"
    )


if __name__ == "__main__":
    sys.exit(main())
