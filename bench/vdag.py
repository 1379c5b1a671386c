"""vDAG benchmark: a 3-stage pipeline of trivial functions through a vDAG controller, against
the same three functions composed directly, in one run.

Prints (ratios against the direct composition where it makes sense):
  * direct composition p50/p99 (three `EchoBlock` calls in-process, BlockTester);
  * through the controller, 1-stage and 3-stage vDAGs: end-to-end p50/p99 (target p50 <= 5 ms);
  * added latency per hop between blocks, p50: (3-stage - 1-stage) / 2 (target <= 1 ms);
  * for scale, measured in the same run: one block called through its executor (gRPC ->
    Redis -> instance -> Redis -> gRPC), and CPU time per request of each process role
    (robust when the machine is shared and wall-clock numbers are inflated by waiting);
  * throughput of the 3-stage pipeline with concurrent callers;
  * total RSS of the pipeline's processes (3 executors, 3 instances, 1 controller).
  * optionally the same pipeline in Ray Serve (deployment handles) when `--ray-python` names
    a Python that has `ray[serve]` (install it in a separate venv under /tmp, never in .venv).
  * with `--with-ray`: the Ray Serve baseline of bench/ray_baseline.py (3 deployments
    composed with handles by an ingress deployment, in the venv made by bench/setup_ray.sh),
    run after every AIOS process has stopped, and the ratios: pipeline throughput / Ray's
    (target >= 5x), p50 latency, memory side by side.

Needs a Redis (REDIS_URL, default redis://127.0.0.1:6379/0). Usage:
    .venv/bin/python bench/vdag.py [--requests 2000] [--seconds 5] [--concurrency 32]
        [--with-ray [--ray-python PATH]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
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
from block_sdk.protos import vdag_packet_pb2 as vpb  # noqa: E402
from block_sdk.protos import vdag_packet_pb2_grpc as vpb_grpc  # noqa: E402
from block_sdk.queues import BlockKeys  # noqa: E402
from block_sdk.testing import BlockTester  # noqa: E402
from block_sdk.vdag import GraphNode, compile_graph  # noqa: E402
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


def http_ok(url: str) -> dict | None:
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=1) as r:
        return json.loads(r.read())
    return None


class Pipeline:
    """Three echo blocks (executor + one instance each) and a controller per graph."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.r = redis.Redis.from_url(redis_url)
        self.procs: list[subprocess.Popen] = []
        self.blocks: list[tuple[str, int, int]] = []  # block_id, grpc, http
        self.controller_ids: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="vdag-bench-"))

    def spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=ROOT,
            env={
                **os.environ,
                "REDIS_URL": self.redis_url,
                "AIOS_LOG_LEVEL": "WARNING",
                "AIOS_CLUSTER_ID": "bench",
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"{len(self.procs)}.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def start_blocks(self, n: int = 3) -> None:
        for i in range(n):
            block_id = f"bench-{uuid.uuid4().hex[:8]}"
            g, h = free_port(), free_port()
            self.r.hset(BlockKeys(block_id).instances, "i0", "{}")
            self.spawn(
                ["-m", "block_sdk.instance", "--entrypoint", ENTRY],
                {
                    "BLOCK_ID": block_id,
                    "INSTANCE_ID": "i0",
                    "AIOS_INSTANCE_HTTP_PORT": "0",
                    "BLOCK_INIT_PARAMETERS": json.dumps({"tag": f"s{i + 1}"}),
                },
            )
            self.spawn(
                [
                    "-m",
                    "block_sdk.executor",
                    "--block-id",
                    block_id,
                    "--grpc-port",
                    str(g),
                    "--http-port",
                    str(h),
                    "--grpc-host",
                    "127.0.0.1",
                    "--http-host",
                    "127.0.0.1",
                    "--config",
                    json.dumps({"watch_interval_s": 0.2}),
                ],
                {},
            )
            self.blocks.append((block_id, g, h))
        for block_id, _, h in self.blocks:
            deadline = time.monotonic() + 60
            while (http_ok(f"http://127.0.0.1:{h}/health") or {}).get("instances_alive") != 1:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"block {block_id} did not start")
                time.sleep(0.1)

    def controller(self, stages: int) -> tuple[int, subprocess.Popen]:
        nodes = [
            GraphNode(
                f"s{i + 1}",
                block_id=b,
                executor={
                    "cluster_id": "bench",
                    "grpc": f"127.0.0.1:{g}",
                    "http": f"127.0.0.1:{h}",
                },
            )
            for i, (b, g, h) in enumerate(self.blocks[:stages])
        ]
        conns = [
            {"nodeLabel": f"s{i + 1}", "inputs": [{"nodeLabel": f"s{i}"}]} for i in range(1, stages)
        ]
        graph = compile_graph(nodes, conns, ["s1"], [f"s{stages}"])
        g, h = free_port(), free_port()
        ctl_id = f"bench-ctl-{uuid.uuid4().hex[:6]}"
        self.controller_ids.append(ctl_id)
        doc = {
            "vdag_uri": f"{ctl_id}:1-b",
            "controller_id": ctl_id,
            "cluster_id": "bench",
            "graph": graph.to_dict(),
            "redis_url": self.redis_url,
            "grpc_host": "127.0.0.1",
            "http_host": "127.0.0.1",
            "grpc_port": g,
            "http_port": h,
            "health_interval_s": 0,
            "quality_policy": {"parameters": {"sample_rate": 0.01}},
        }
        proc = self.spawn(["-m", "block_sdk.vdag_controller", "--config", json.dumps(doc)], {})
        deadline = time.monotonic() + 60
        while http_ok(f"http://127.0.0.1:{h}/health") is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("controller did not start")
            time.sleep(0.1)
        return g, proc

    def rss_mb(self, procs: list[subprocess.Popen]) -> float:
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
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
        patterns = [f"{BlockKeys(block_id).base}:*" for block_id, _, _ in self.blocks]
        for ctl in self.controller_ids:
            patterns += [
                f"aios:vdag:{{{ctl}}}:*",
                f"aios:vdag:final:{{{ctl}}}:*",
                f"aios:metrics:live:vdag:{ctl}:1-b",
                f"aios:metrics:live:vdag_controller:{ctl}",
            ]
        for pattern in patterns:
            escaped = pattern.replace("{", "\\{").replace("}", "\\}")
            for key in self.r.scan_iter(match=escaped):
                self.r.delete(key)


def executor_latency(port: int, n: int) -> list[float]:
    from block_sdk.packet import make_block_packet
    from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.BlockInferenceServiceStub(ch)
        req = make_block_packet(PAYLOAD, session_id="bench")
        for _ in range(50):
            stub.infer(req, timeout=10)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            stub.infer(req, timeout=10)
            out.append(time.perf_counter() - t0)
    return out


def cpu_s(procs: list[subprocess.Popen]) -> list[float]:
    out = []
    for p in procs:
        try:
            t = psutil.Process(p.pid).cpu_times()
            out.append(t.user + t.system)
        except psutil.NoSuchProcess:
            out.append(0.0)
    return out


def direct_latency(n: int) -> list[float]:
    testers = [BlockTester(EchoBlock, parameters={"tag": f"s{i + 1}"}) for i in range(3)]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        data = PAYLOAD
        for t in testers:
            data = t.run_one(data)
        out.append(time.perf_counter() - t0)
    return out


def interleaved(ports: dict[str, int], n: int) -> dict[str, list[float]]:
    """Latency of each controller, requests alternating between them, so that every one
    sees the same machine load (a shared machine's load drifts within seconds)."""
    channels = {k: grpc.insecure_channel(f"127.0.0.1:{p}") for k, p in ports.items()}
    try:
        stubs = {k: vpb_grpc.vDAGInferenceServiceStub(c) for k, c in channels.items()}
        req = vpb.vDAGInferencePacket(session_id="bench", data=json.dumps(PAYLOAD))
        for i in range(50):  # warm up channels, caches, instance lists
            for stub in stubs.values():
                req.seq_no = i
                stub.infer(req, timeout=10)
        out: dict[str, list[float]] = {k: [] for k in stubs}
        for i in range(n):
            req.seq_no = i
            for k, stub in stubs.items():
                t0 = time.perf_counter()
                stub.infer(req, timeout=10)
                out[k].append(time.perf_counter() - t0)
    finally:
        for c in channels.values():
            c.close()
    return out


def client_side_chain(ports: list[int], n: int) -> list[float]:
    """The naive alternative: the caller calls each block's executor in turn."""
    from block_sdk.packet import make_block_packet
    from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc

    channels = [grpc.insecure_channel(f"127.0.0.1:{p}") for p in ports]
    try:
        stubs = [pb_grpc.BlockInferenceServiceStub(c) for c in channels]
        out = []
        for i in range(n + 50):
            t0 = time.perf_counter()
            data = json.dumps(PAYLOAD)
            for stub in stubs:
                data = stub.infer(make_block_packet(data, session_id="bench"), timeout=10).data
            if i >= 50:
                out.append(time.perf_counter() - t0)
    finally:
        for c in channels:
            c.close()
    return out


async def _throughput(port: int, seconds: float, concurrency: int) -> tuple[int, int]:
    ok = err = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = vpb_grpc.vDAGInferenceServiceStub(ch)
        end = time.monotonic() + seconds

        async def worker(w: int) -> None:
            nonlocal ok, err
            i = 0
            while time.monotonic() < end:
                i += 1
                try:
                    await stub.infer(
                        vpb.vDAGInferencePacket(
                            session_id=f"w{w}", seq_no=i, data=json.dumps(PAYLOAD)
                        ),
                        timeout=10,
                    )
                    ok += 1
                except grpc.aio.AioRpcError:
                    err += 1

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return ok, err


RAY_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import ray
    from ray import serve

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Stage:
        def __init__(self, tag): self.tag = tag
        def __call__(self, data): return {**data, "echo": True, "tag": self.tag}

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    class Pipe:
        def __init__(self, a, b, c): self.s = [a, b, c]
        async def __call__(self, data):
            for s in self.s:
                data = await s.remote(data)
            return data

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    handle = serve.run(Pipe.bind(Stage.bind("s1"), Stage.bind("s2"), Stage.bind("s3")))
    for _ in range(50): handle.remote({"text": "hello"}).result()
    n = int(sys.argv[1]); lat = []
    for _ in range(n):
        t0 = time.perf_counter(); handle.remote({"text": "hello"}).result()
        lat.append(time.perf_counter() - t0)
    lat.sort()
    t_end = time.monotonic() + float(sys.argv[2]); done = 0
    while time.monotonic() < t_end:
        rs = [handle.remote({"text": "hello"}) for _ in range(32)]
        [r.result() for r in rs]; done += 32
    print(json.dumps({"p50": lat[len(lat)//2], "p99": lat[int(len(lat)*.99)],
                      "rps": done / float(sys.argv[2])}), flush=True)
    time.sleep(30)  # the parent measures the memory of the running cluster meanwhile
""")


def ray_serve(python: str, n: int, seconds: float) -> dict | None:
    """Run the same pipeline in Ray Serve in its own interpreter; the RSS is that of its
    whole process tree (driver, GCS, raylet, workers, Serve controller and proxy)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(RAY_SCRIPT)
    proc = subprocess.Popen(
        [python, f.name, str(n), str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        line = ""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not line.startswith("{"):
            line = proc.stdout.readline() if proc.stdout else ""
            if not line and proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}")
        result = json.loads(line)
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        rss = 0
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                rss += p.memory_info().rss
        result["rss_mb"] = rss / 2**20
        result["processes"] = len(tree)
        return result
    except Exception as exc:  # an optional comparison: report and go on
        print(f"  Ray Serve run failed: {exc}")
        return None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        os.unlink(f.name)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--ray-python", default="", help="a Python with ray[serve] installed")
    ap.add_argument(
        "--with-ray", action="store_true", help="Ray Serve baseline after the run, ratios"
    )
    ap.add_argument("--ray-time-limit", type=float, default=300.0)
    a = ap.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    ms = 1000.0
    ray_python = find_ray_python(a.ray_python) if a.with_ray else None
    if a.with_ray and ray_python is None:
        print("--with-ray: no Ray venv found; run `bash bench/setup_ray.sh` (or --ray-python)")
        return 2
    measured: dict[str, float] = {}

    direct = direct_latency(a.requests)
    d50 = pct(direct, 50)
    print(
        f"direct composition (3 x EchoBlock in-process): p50 {d50 * ms:.3f} ms, "
        f"p99 {pct(direct, 99) * ms:.3f} ms"
    )

    pipe = Pipeline(url)
    try:
        pipe.start_blocks(3)
        ex = executor_latency(pipe.blocks[0][1], a.requests)
        print(
            f"one block through its executor (for scale): p50 {pct(ex, 50) * ms:.3f} ms, "
            f"p99 {pct(ex, 99) * ms:.3f} ms"
        )
        naive = client_side_chain([g for _, g, _ in pipe.blocks], a.requests)
        print(
            f"3 blocks called in turn by the client through their executors: p50 "
            f"{pct(naive, 50) * ms:.3f} ms"
        )
        port1, ctl1 = pipe.controller(1)
        port3, ctl3 = pipe.controller(3)
        roles = [*pipe.procs[:6:2], ctl3]  # the three instances, then the 3-stage controller
        before = cpu_s(roles)
        lat = interleaved({"one": port1, "three": port3}, a.requests)
        used = [
            (b - a_) / (a.requests + 50) * ms for a_, b in zip(before, cpu_s(roles), strict=True)
        ]
        one, three = lat["one"], lat["three"]
        p1, p3 = pct(one, 50), pct(three, 50)
        hop = (p3 - p1) / 2
        print(
            f"vDAG 1 stage through the controller: p50 {p1 * ms:.3f} ms, "
            f"p99 {pct(one, 99) * ms:.3f} ms"
        )
        print(
            f"vDAG 3 stages through the controller: p50 {p3 * ms:.3f} ms "
            f"(target <= 5 ms: {'met' if p3 <= 0.005 else 'MISSED'}), "
            f"p99 {pct(three, 99) * ms:.3f} ms; {p3 / d50:.0f}x the direct composition, "
            f"{p3 / pct(naive, 50):.2f}x the client-side chain"
        )
        print(
            f"added latency per hop between blocks, p50: {hop * ms:.3f} ms "
            f"(target <= 1 ms: {'met' if hop <= 0.001 else 'MISSED'})"
        )
        print(
            "CPU per request (3-stage, 1-stage interleaved): instances "
            + ", ".join(f"{u:.3f}" for u in used[:3])
            + f" ms, 3-stage controller {used[3]:.3f} ms"
        )
        ok, err = asyncio.run(_throughput(port3, a.seconds, a.concurrency))
        rps = ok / a.seconds
        print(
            f"3-stage throughput, {a.concurrency} concurrent callers: {rps:.0f} req/s "
            f"({err} errors)"
        )
        live = [p for p in pipe.procs if p.poll() is None and p is not ctl1]
        rss = pipe.rss_mb(live)
        print(f"total RSS of the pipeline's {len(live)} processes: {rss:.0f} MiB")
        measured.update(p3=p3, rps=rps, rss=rss, processes=len(live))
        if a.ray_python and not a.with_ray:
            ray = ray_serve(a.ray_python, a.requests, a.seconds)
            if ray:
                print(
                    f"Ray Serve 3-stage handles: p50 {ray['p50'] * ms:.3f} ms, "
                    f"{ray['rps']:.0f} req/s, RSS {ray['rss_mb']:.0f} MiB -> vDAG is "
                    f"{ray['p50'] / p3:.1f}x faster at p50, {rps / ray['rps']:.1f}x the "
                    f"throughput, {rss / ray['rss_mb']:.2f}x the memory"
                )
    finally:
        pipe.stop()
    if ray_python and measured:
        compare_with_ray(ray_python, a, measured)
    return 0


def compare_with_ray(python: str, a: argparse.Namespace, aios: dict[str, float]) -> None:
    """The same 3-stage pipeline in Ray Serve, measured once every AIOS process is gone."""
    ms = 1000.0
    print(f"\nRay Serve baseline (3 deployments composed with handles; {python})")
    ray = run_ray_baseline(
        python,
        "pipeline",
        requests=a.requests,
        seconds=a.seconds,
        concurrency=a.concurrency,
        time_limit=a.ray_time_limit,
    )
    if "error" in ray:
        print(f"  Ray Serve run failed: {ray['error']}")
        return
    r = ray["pipeline"]
    print(
        f"  Ray {ray['ray_version']}: p50 {r['p50'] * ms:.3f} ms, p99 {r['p99'] * ms:.3f} ms, "
        f"{r['concurrency']} concurrent callers {r['rps']:.0f} req/s, RSS of Ray's "
        f"{ray['pipeline_processes']} processes {r['rss_mb']:.0f} MiB "
        f"(idle {ray['pipeline_idle_rss_mb']:.0f} MiB)"
    )
    ratio = aios["rps"] / r["rps"] if r["rps"] else float("inf")
    print(
        f"  3-stage pipeline throughput, vDAG / Ray: {aios['rps']:.0f} / {r['rps']:.0f} = "
        f"{ratio:.2f}x ({'meets' if ratio >= 5 else 'misses'} the >= 5x target)"
    )
    print(
        f"  p50: vDAG {aios['p3'] * ms:.3f} ms vs Ray {r['p50'] * ms:.3f} ms -> Ray / vDAG = "
        f"{r['p50'] / aios['p3']:.2f}x"
    )
    print(
        f"  memory: vDAG pipeline ({aios['processes']:.0f} processes) {aios['rss']:.0f} MiB vs "
        f"Ray {r['rss_mb']:.0f} MiB ({r['rss_mb'] / aios['rss']:.1f}x)"
    )


if __name__ == "__main__":
    sys.exit(main())
