"""The health checker: probe every instance's ``/health``, run the ``stabilityChecker``
policy, ask the control plane to replace the instances it names, report health.

A probe is healthy on HTTP 200 within ``health_timeout_s``; anything else (refused, timeout,
non-200) is unhealthy. An instance younger than ``startup_grace_s`` that fails is "starting"
and not counted (its model may still be loading). The policy receives the AIOS input
``{"health_check_data": {instance_id: bool}, "instances": [ids]}``; the built-in
``aios.health_replace_after_n`` answers ``{"replace": [ids]}`` after N consecutive failures.
AIOS policies that act through side effects answer ``{}``: nothing is replaced then.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from datetime import datetime
from typing import Any

import aiohttp

from block_sdk.block_controller.client import ControlPlaneClient, ControlPlaneError
from block_sdk.block_controller.mapper import Mapper
from block_sdk.block_controller.policies import PolicyHandle

log = logging.getLogger("block_sdk.block_controller.health")

REPLACE_MEMORY_S = 60.0  # an instance asked for replacement is not asked again for this long


def _created(info: dict[str, Any]) -> float | None:
    value = info.get("created_at")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


class HealthChecker:
    def __init__(
        self,
        client: ControlPlaneClient,
        mapper: Mapper,
        policy: PolicyHandle | None,
        *,
        timeout_s: float,
        startup_grace_s: float,
        report_interval_s: float,
        metrics_source: Any = None,
    ) -> None:
        self.client = client
        self.mapper = mapper
        self.policy = policy
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.startup_grace_s = startup_grace_s
        self.report_interval_s = report_interval_s
        self.metrics_source = metrics_source
        self.paused = False
        self.last_results: dict[str, dict[str, Any]] = {}
        self.last_policy_result: Any = None
        self.last_error = ""
        self.replaced: dict[str, float] = {}
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self._last_report = 0.0
        self._last_reported_state: dict[str, Any] = {}
        self._session: aiohttp.ClientSession | None = None

    async def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def probe(self, info: dict[str, Any]) -> dict[str, Any]:
        url = f"http://{info.get('host') or '127.0.0.1'}:{info.get('http_port')}/health"
        started = time.monotonic()
        try:
            session = await self._sess()
            async with session.get(url) as resp:
                body = await resp.text()
                ok = resp.status == 200
                detail = {"status": resp.status, "body": body[:500]}
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            ok, detail = False, {"error": f"{type(exc).__name__}: {exc}"[:500]}
        detail["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
        return {"healthy": ok, "detail": detail}

    async def tick(self) -> dict[str, Any] | None:
        if self.paused or not self.mapper.ready:
            return None
        if self.mapper.block.get("status") != "running":
            return None
        desired = dict(self.mapper.desired)
        now = time.time()
        self.replaced = {k: v for k, v in self.replaced.items() if now - v < REPLACE_MEMORY_S}
        ids = [iid for iid in sorted(desired) if iid not in self.replaced]
        probes = await asyncio.gather(*(self.probe(desired[iid]) for iid in ids))
        results: dict[str, dict[str, Any]] = {}
        checks: dict[str, bool] = {}
        for iid, probe in zip(ids, probes, strict=True):
            created = _created(desired[iid])
            young = created is not None and now - created < self.startup_grace_s
            if not probe["healthy"] and young:
                results[iid] = {"healthy": None, "detail": {**probe["detail"], "starting": True}}
                continue
            results[iid] = probe
            checks[iid] = probe["healthy"]
        hbs = self.mapper.heartbeats
        for iid, result in results.items():
            hb = hbs.get(iid) or {}
            result["processed"] = int(hb.get("processed") or 0)
            result["errors"] = int(hb.get("errors") or 0)
        self.last_results = results
        record: dict[str, Any] = {"ts": now, "checks": checks, "replace": []}
        if self.policy is not None and checks:
            try:
                verdict = await self.policy.eval(
                    {
                        "health_check_data": checks,
                        "instances": sorted(checks),
                        "block_id": self.mapper.block_id,
                    }
                )
                self.last_policy_result = verdict
                replace = verdict.get("replace") if isinstance(verdict, dict) else None
                record["replace"] = [str(i) for i in replace or [] if str(i) in checks]
            except Exception as exc:  # a broken policy must not stop health reporting
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("health policy failed", extra={"error": self.last_error})
        for iid in record["replace"]:
            reason = f"failed health checks: {results[iid]['detail']}"
            try:
                answer = await self.client.replace(iid, reason)
                self.replaced[iid] = time.time()
                record.setdefault("answers", {})[iid] = answer
                log.warning("instance replaced", extra={"instance_id": iid})
            except ControlPlaneError as exc:
                if exc.status == 404:
                    self.replaced[iid] = time.time()  # already gone
                record.setdefault("errors", {})[iid] = str(exc)
                self.last_error = str(exc)
        if record["replace"]:
            self.history.append(record)
        await self._report(results)
        return record

    async def _report(self, results: dict[str, dict[str, Any]]) -> None:
        state = {iid: r.get("healthy") for iid, r in results.items()}
        due = time.monotonic() - self._last_report >= self.report_interval_s
        if not due and state == self._last_reported_state:
            return
        report: dict[str, Any] = {"instances": results}
        metrics = getattr(self.metrics_source, "last_metrics", None) or {}
        numbers = {
            key: metrics[key]
            for key in ("queue_total", "fps", "latency_p50_ms", "pending", "current_instances")
            if isinstance(metrics.get(key), int | float)
        }
        numbers["healthy_instances"] = sum(1 for v in state.values() if v is True)
        report["metrics"] = numbers
        try:
            await self.client.report(report)
            self._last_report = time.monotonic()
            self._last_reported_state = state
        except ControlPlaneError as exc:
            self.last_error = str(exc)
            log.warning("health report failed", extra={"error": str(exc)})

    async def management(self, action: str, data: Any) -> Any:
        if action in ("get_state", "state"):
            return self.state()
        if action in ("check_now", "check"):
            return {"round": await self.tick()}
        if action == "pause":
            self.paused = True
            return {"paused": True}
        if action == "resume":
            self.paused = False
            return {"paused": False}
        if self.policy is None:
            raise ValueError(f"unknown action {action!r} and the block has no health policy")
        return {"policy": await self.policy.management(action, data)}

    def state(self) -> dict[str, Any]:
        return {
            "paused": self.paused,
            "policy": self.policy.describe() if self.policy else None,
            "instances": self.last_results,
            "last_policy_result": self.last_policy_result,
            "recently_replaced": sorted(self.replaced),
            "last_error": self.last_error,
            "history": list(self.history)[-10:],
        }
