"""Policy evaluation benchmark: in-process overhead and sandboxed round trip, in one run.

    .venv/bin/python bench/policy_eval.py [--calls 20000] [--sandbox-calls 5000]

Baseline: calling the policy instance's ``eval`` directly. Measured against it:
- ``LocalPolicyEvaluator.execute_policy_rule`` in local mode with a cached instance (Type 1);
- a new ``LocalPolicyEvaluator`` per call (resolve + merge + instance-cache lookup);
- the sandbox round trip (``mode="sandbox"``), sequential and from 4 threads, and with a
  settings helper called back in the parent.
Targets: in-process overhead < 20 us/call, sandboxed p50 < 1 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from block_sdk.policy_runtime import (
    InMemoryPolicyResolver,
    LocalPolicyEvaluator,
    PolicyCache,
    PolicyLoader,
    SandboxConfig,
    SandboxLimits,
    SandboxPool,
    package_folder,
)

POLICY = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.settings = settings

    def eval(self, parameters, input_data, context):
        if input_data.get("use_helper"):
            return {"allowed": self.settings["quota"]() > input_data["load"]}
        return {"allowed": input_data["load"] < parameters["max_load"], "rule": "max_load"}
"""
URI = "bench_quota:1.0-bench"
INPUT = {"load": 3, "session_id": "s-1"}


def per_call_ns(fn: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` mean time per call, in nanoseconds (best = least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - started) / calls)
    return best


def latencies_us(fn: Callable[[], object], calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - started) / 1000)
    out.sort()
    return out


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--sandbox-calls", type=int, default=5000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aios-policy-bench-"))
    (work / "policy" / "code").mkdir(parents=True)
    (work / "policy" / "code" / "function.py").write_text(POLICY)
    archive = package_folder(work / "policy")
    cache = PolicyCache(work / "cache")
    loader = PolicyLoader(cache)
    resolver = InMemoryPolicyResolver()
    resolver.add_archive(URI, archive, parameters={"max_load": 10})

    local = LocalPolicyEvaluator(URI, mode="local", resolver=resolver, loader=loader)
    local.execute_policy_rule(INPUT)
    loaded = local._loaded
    assert loaded is not None
    instance, params, context = loaded.instance, local.parameters, loaded.context

    direct = per_call_ns(lambda: instance.eval(params, INPUT, context), args.calls)
    evaluator = per_call_ns(lambda: local.execute_policy_rule(INPUT), args.calls)

    def fresh_evaluator() -> object:
        return LocalPolicyEvaluator(
            URI, mode="local", resolver=resolver, loader=loader
        ).execute_policy_rule(INPUT)

    fresh = per_call_ns(fresh_evaluator, max(1000, args.calls // 10))

    config = SandboxConfig(workers=2, limits=SandboxLimits(timeout=5.0))
    with SandboxPool(config, cache=cache) as pool:
        sandboxed = LocalPolicyEvaluator(URI, mode="sandbox", resolver=resolver, pool=pool)
        helper = LocalPolicyEvaluator(
            URI, mode="sandbox", resolver=resolver, pool=pool, settings={"quota": lambda: 5}
        )
        for _ in range(200):  # start both workers, load the instance in each
            sandboxed.execute_policy_rule(INPUT)
            helper.execute_policy_rule({"use_helper": True, "load": 1})
        seq = latencies_us(lambda: sandboxed.execute_policy_rule(INPUT), args.sandbox_calls)
        cb = latencies_us(
            lambda: helper.execute_policy_rule({"use_helper": True, "load": 1}),
            max(500, args.sandbox_calls // 5),
        )
        threads_n, per_thread = 4, max(250, args.sandbox_calls // 4)
        barrier = threading.Barrier(threads_n)

        def hammer() -> None:
            barrier.wait()
            for _ in range(per_thread):
                sandboxed.execute_policy_rule(INPUT)

        workers = [threading.Thread(target=hammer) for _ in range(threads_n)]
        started = time.perf_counter()
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        throughput = threads_n * per_thread / (time.perf_counter() - started)

    overhead_us = (evaluator - direct) / 1000
    fresh_overhead_us = (fresh - direct) / 1000
    p50, p99 = pct(seq, 0.50), pct(seq, 0.99)
    direct_us = direct / 1000
    print(f"policy eval benchmark (python {sys.version.split()[0]})")
    print(f"  direct instance.eval                  {direct_us:8.3f} us/call   (baseline)")
    print(
        f"  local evaluator, cached instance      {evaluator / 1000:8.3f} us/call   "
        f"overhead {overhead_us:6.3f} us = {evaluator / direct:5.2f}x baseline   "
        f"(target < 20 us: {'PASS' if overhead_us < 20 else 'FAIL'})"
    )
    print(
        f"  new local evaluator per call          {fresh / 1000:8.3f} us/call   "
        f"overhead {fresh_overhead_us:6.3f} us = {fresh / direct:5.2f}x baseline"
    )
    print(
        f"  sandbox round trip                    p50 {p50:7.1f} us  p99 {pct(seq, 0.99):7.1f} us  "
        f"mean {statistics.fmean(seq):7.1f} us  = {p50 / direct_us:6.0f}x baseline p50   "
        f"(target p50 < 1000 us: {'PASS' if p50 < 1000 else 'FAIL'})"
    )
    print(
        f"  sandbox round trip + 1 helper call    p50 {pct(cb, 0.5):7.1f} us  "
        f"p99 {pct(cb, 0.99):7.1f} us"
    )
    print(f"  sandbox throughput, 4 threads/2 workers {throughput:8.0f} calls/s")
    print(f"  ratio sandbox p50 / in-process call   {p50 / (evaluator / 1000):6.0f}x")
    print(f"  p99/p50 sandbox                       {p99 / p50:6.2f}")


if __name__ == "__main__":
    main()
