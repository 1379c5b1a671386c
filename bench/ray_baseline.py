"""Ray Serve baseline for the AIOS data-plane benchmarks (bench/block_hop.py, bench/vdag.py).

Two halves in one file:

* the **runner** (`python ray_baseline.py ...`, run with the Python of the separate Ray venv that
  `bench/setup_ray.sh` creates — Ray is never installed into the project's .venv) measures, for
  the same trivial model the AIOS benches use (echo: the input dict plus `"echo": true`):
    - `single`: one Ray Serve deployment called through a `DeploymentHandle`: sequential
      p50/p99 latency, sequential throughput, and throughput with N concurrent callers;
    - `pipeline`: three such deployments composed with handles by an ingress deployment
      (Ray Serve's model-composition pattern): the same numbers end to end;
    - total RSS of Ray's processes (the driver and every process Ray started), idle after
      deployment and after the load;
  and prints one JSON document on its last stdout line.
* the **caller side** (`run_ray_baseline()`, `find_ray_python()`), imported by the AIOS benches
  from the project's .venv (nothing here imports Ray at module level), runs the runner as a
  time-bounded subprocess in its own session and makes sure no Ray process outlives it.

Ray on a 2-core machine is heavy; every run is bounded (`--time-limit`, SIGALRM inside, a
subprocess timeout outside) and ends with `serve.shutdown()`, `ray.shutdown()` and a kill of
any process Ray started that is still alive. Usage:

    bash bench/setup_ray.sh                                   # once: /tmp/aios-bench-ray
    /tmp/aios-bench-ray/bin/python bench/ray_baseline.py [--mode single|pipeline|all]
        [--requests 1000] [--seconds 5] [--concurrency 32] [--max-ongoing 64] [--time-limit 240]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = "/tmp/aios-bench-ray"
PAYLOAD = {"text": "hello", "n": 1}


# -- caller side (project .venv) ---------------------------------------------------------------
def find_ray_python(explicit: str = "") -> str | None:
    """The Python of the Ray venv: `explicit`, `$AIOS_RAY_PYTHON`, or `$AIOS_RAY_VENV` /
    the default venv of bench/setup_ray.sh. None when none of them exists."""
    candidates = [
        explicit,
        os.environ.get("AIOS_RAY_PYTHON", ""),
        os.path.join(os.environ.get("AIOS_RAY_VENV", DEFAULT_VENV), "bin", "python"),
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    return None


def _kill_pids(pids: list[dict[str, Any]]) -> int:
    """SIGKILL the recorded processes still alive (same pid *and* start time, so a reused
    pid is never hit). Returns how many were killed."""
    killed = 0
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a project dependency
        return 0
    for rec in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(rec["pid"])
            if abs(p.create_time() - rec["create_time"]) < 0.01:
                p.kill()
                killed += 1
    return killed


def run_ray_baseline(
    python: str,
    mode: str = "all",
    *,
    requests: int = 1000,
    seconds: float = 5.0,
    concurrency: int = 32,
    max_ongoing: int = 64,
    time_limit: float = 240.0,
) -> dict[str, Any]:
    """Run the runner under `python` (the Ray venv's) and return its JSON document, or
    `{"error": "..."}`. Never leaves a Ray process behind."""
    pidfile = Path(tempfile.mkstemp(prefix="aios-ray-pids-", suffix=".json")[1])
    argv = [
        python,
        str(Path(__file__).resolve()),
        "--mode",
        mode,
        "--requests",
        str(requests),
        "--seconds",
        str(seconds),
        "--concurrency",
        str(concurrency),
        "--max-ongoing",
        str(max_ongoing),
        "--time-limit",
        str(time_limit),
        "--pidfile",
        str(pidfile),
    ]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)  # the Ray venv must not see the project's packages
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=time_limit + 60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        result: dict[str, Any] = {"error": f"Ray baseline ran past {time_limit + 60:.0f}s"}
    else:
        result = {}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError, ValueError):
            leftovers = _kill_pids(json.loads(pidfile.read_text() or "[]"))
            if leftovers:
                result["killed_leftover_processes"] = leftovers
        pidfile.unlink(missing_ok=True)
    if "error" in result:
        return result
    for line in reversed((out or "").strip().splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                return {**json.loads(line), **result}
    tail = (err or "").strip().splitlines()[-5:]
    return {"error": f"Ray baseline exited {proc.returncode}: {' | '.join(tail)}"}


# -- runner (Ray venv) -------------------------------------------------------------------------
def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else 0.0


class _Deadline(Exception):
    pass


def _ray_processes() -> list[Any]:
    """This driver and every process it (transitively) started: GCS, raylet, workers,
    Serve controller and replicas."""
    import psutil

    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def _rss_mb() -> tuple[float, int]:
    import psutil

    total, n = 0, 0
    for p in _ray_processes():
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
            n += 1
    return total / 2**20, n


def _record_pids(pidfile: str) -> None:
    import psutil

    recs = []
    for p in _ray_processes()[1:]:
        with contextlib.suppress(psutil.Error):
            recs.append({"pid": p.pid, "create_time": p.create_time(), "name": p.name()})
    if pidfile:
        Path(pidfile).write_text(json.dumps(recs))


def _sequential(handle: Any, n: int) -> list[float]:
    for _ in range(min(200, n)):  # warm-up: routers, replicas, connections
        handle.remote(PAYLOAD).result(timeout_s=30)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        handle.remote(PAYLOAD).result(timeout_s=30)
        out.append(time.perf_counter() - t0)
    return out


def _concurrent(handle: Any, seconds: float, concurrency: int) -> tuple[float, int]:
    """Throughput with `concurrency` asyncio callers awaiting handle calls (the way an async
    Ray Serve ingress calls a deployment)."""
    import asyncio

    async def run(span: float) -> tuple[int, int]:
        h = handle.options()  # a handle bound to this loop
        done = errors = 0
        stop_at = time.monotonic() + span

        async def caller() -> None:
            nonlocal done, errors
            while time.monotonic() < stop_at:
                try:
                    await asyncio.wait_for(h.remote(PAYLOAD), 30)
                    done += 1
                except Exception:  # counted and reported, the run goes on
                    errors += 1

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return done, errors

    asyncio.run(run(1.0))  # warm-up
    done, errors = asyncio.run(run(seconds))
    return done / seconds, errors


def _measure(handle: Any, a: argparse.Namespace) -> dict[str, Any]:
    lat = _sequential(handle, a.requests)
    rps, errors = _concurrent(handle, a.seconds, a.concurrency)
    return {
        "p50": _pct(lat, 50),
        "p99": _pct(lat, 99),
        "sequential_rps": len(lat) / sum(lat) if lat else 0.0,
        "rps": rps,
        "concurrency": a.concurrency,
        "errors": errors,
    }


def runner(a: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray import serve

    opts = {"max_ongoing_requests": a.max_ongoing, "ray_actor_options": {"num_cpus": 0}}

    @serve.deployment(**opts)
    class Echo:
        """The trivial model: the input dict plus "echo": true (examples/echo's on_data)."""

        def __init__(self, tag: str | None = None) -> None:
            self.tag = tag

        def __call__(self, data: dict) -> dict:
            out = dict(data)
            out["echo"] = True
            if self.tag is not None:
                out["tag"] = self.tag
            return out

    @serve.deployment(**opts)
    class Pipeline:
        """Ingress composing three Echo deployments through handles, stage after stage."""

        def __init__(self, s1: Any, s2: Any, s3: Any) -> None:
            self.stages = [s1, s2, s3]

        async def __call__(self, data: dict) -> dict:
            for stage in self.stages:
                data = await stage.remote(data)
            return data

    tmp = tempfile.mkdtemp(prefix="aios-ray-")
    doc: dict[str, Any] = {
        "ray_version": ray.__version__,
        "cpus": os.cpu_count(),
        "max_ongoing_requests": a.max_ongoing,
    }
    t_start = time.monotonic()
    try:
        ray.init(
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            _temp_dir=tmp,
        )
        # Handles only: no HTTP proxy actor (it would cost memory and CPU nobody uses here).
        serve.start(proxy_location="Disabled")
        doc["startup_s"] = time.monotonic() - t_start
        if a.mode in ("single", "all"):
            handle = serve.run(Echo.bind(), name="single", route_prefix=None)
            _record_pids(a.pidfile)
            doc["single_idle_rss_mb"], doc["single_processes"] = _rss_mb()
            doc["single"] = _measure(handle, a)
            doc["single"]["rss_mb"], _ = _rss_mb()
            serve.delete("single")
        if a.mode in ("pipeline", "all"):
            stages = [Echo.options(name=f"Stage{i}").bind(f"s{i}") for i in (1, 2, 3)]
            app = Pipeline.bind(*stages)
            handle = serve.run(app, name="pipeline", route_prefix=None)
            _record_pids(a.pidfile)
            doc["pipeline_idle_rss_mb"], doc["pipeline_processes"] = _rss_mb()
            doc["pipeline"] = _measure(handle, a)
            doc["pipeline"]["rss_mb"], _ = _rss_mb()
    finally:
        _record_pids(a.pidfile)
        with contextlib.suppress(Exception):
            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    doc["total_s"] = time.monotonic() - t_start
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=("single", "pipeline", "all"), default="all")
    ap.add_argument("--requests", type=int, default=1000, help="sequential calls timed")
    ap.add_argument("--seconds", type=float, default=5.0, help="concurrent-callers window")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-ongoing", type=int, default=64, help="max_ongoing_requests")
    ap.add_argument("--time-limit", type=float, default=240.0, help="hard bound on the run")
    ap.add_argument("--pidfile", default="", help="where to record the pids Ray started")
    a = ap.parse_args()

    def on_alarm(signum: int, frame: Any) -> None:
        raise _Deadline(f"time limit {a.time_limit:.0f}s reached")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(a.time_limit)))
    try:
        doc = runner(a)
    except _Deadline as exc:
        doc = {"error": str(exc)}
    finally:
        signal.alarm(0)
        # Whatever ray.shutdown() left (it should leave nothing) goes now.
        if a.pidfile:
            with contextlib.suppress(OSError, ValueError):
                _kill_pids(json.loads(Path(a.pidfile).read_text() or "[]"))
    sys.stdout.write(json.dumps(doc) + "\n")
    return 0 if "error" not in doc else 1


if __name__ == "__main__":
    sys.exit(main())
