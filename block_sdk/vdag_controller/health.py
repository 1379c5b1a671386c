"""The `healthChecker`: the vDAG's blocks, checked periodically through their executors.

Every `interval_s` (and on `GET /health/check`) each distinct block of the graph is asked
`GET http://<executor http>/health` with a timeout. The data handed to the policy is AIOS's
shape: `{block_id: {"success": true, "data": {"instances": [...], ...}}}` or `{block_id:
{"success": false, "data": {"mode": "api_internal_error" | "network_error" |
"general_error" | "timeout_error", "data": "<message>"}}}`. The configured policy receives
`{"vdag", "health_check_data"}` and its answer is reported as is; without a policy the
controller's own verdict is used: a block is healthy when its executor answered and has at
least one live instance. The last report is kept in memory and in Redis
(`aios:vdag:{<controller_id>}:health`, TTL three intervals).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from block_sdk.vdag.graph import CompiledGraph
from block_sdk.vdag.serving import PolicyHandle

log = logging.getLogger("block_sdk.vdag_controller.health")


class HealthChecker:
    def __init__(
        self,
        graph: CompiledGraph,
        policy: PolicyHandle | None,
        *,
        vdag_uri: str,
        redis: aioredis.Redis | None,
        redis_key: str,
        interval_s: float = 15.0,
        timeout_s: float = 2.0,
    ) -> None:
        self.graph = graph
        self.policy = policy
        self.vdag_uri = vdag_uri
        self.redis = redis
        self.redis_key = redis_key
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.last: dict[str, Any] | None = None
        self.checks = 0
        self._task: asyncio.Task | None = None
        self._session: aiohttp.ClientSession | None = None

    def blocks(self) -> dict[str, dict[str, Any]]:
        """block_id -> executor address, for the distinct blocks of the graph."""
        out: dict[str, dict[str, Any]] = {}
        for label in self.graph.order:
            node = self.graph.nodes[label]
            if node.block_id and node.block_id not in out:
                out[node.block_id] = dict(node.executor or {})
        return out

    def start(self) -> None:
        if self.interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="health-checker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("health check round failed")

    async def _probe(self, block_id: str, address: dict[str, Any]) -> dict[str, Any]:
        http = address.get("http")
        if not http:
            return {
                "success": False,
                "data": {"mode": "general_error", "data": "no executor HTTP address known"},
            }
        url = http if str(http).startswith("http") else f"http://{http}"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._session.get(f"{url.rstrip('/')}/health") as resp:
                    text = await resp.text()
                    try:
                        body = json.loads(text)
                    except ValueError:
                        body = {"raw": text[:300]}
                    if resp.status >= 400:
                        return {
                            "success": False,
                            "data": {
                                "mode": "api_internal_error",
                                "data": f"/health answered {resp.status}: {text[:300]}",
                            },
                        }
                    return {"success": True, "data": body}
        except TimeoutError:
            return {
                "success": False,
                "data": {"mode": "timeout_error", "data": f"no answer in {self.timeout_s}s"},
            }
        except (aiohttp.ClientConnectionError, OSError) as exc:
            return {"success": False, "data": {"mode": "network_error", "data": str(exc)}}
        except Exception as exc:
            return {"success": False, "data": {"mode": "general_error", "data": str(exc)}}

    @staticmethod
    def verdict(data: dict[str, Any]) -> dict[str, Any]:
        unhealthy = []
        for block_id, item in data.items():
            body = item.get("data") if isinstance(item.get("data"), dict) else {}
            alive = body.get("instances_alive", len(body.get("instances") or []))
            if not item.get("success") or not alive:
                unhealthy.append(block_id)
        return {"healthy": not unhealthy, "unhealthy_blocks": unhealthy}

    async def check(self) -> dict[str, Any]:
        blocks = self.blocks()
        results = await asyncio.gather(*(self._probe(b, a) for b, a in blocks.items()))
        data = dict(zip(blocks, results, strict=True))
        verdict = self.verdict(data)
        report: dict[str, Any] = {
            "vdag": self.vdag_uri,
            "ts": time.time(),
            "health_check_data": data,
            **verdict,
        }
        if self.policy is not None:
            try:
                report["policy_result"] = await self.policy.eval(
                    {"vdag": self.vdag_uri, "health_check_data": data}
                )
            except Exception as exc:
                report["policy_error"] = str(exc)
        self.checks += 1
        self.last = report
        if not verdict["healthy"]:
            log.warning("vDAG unhealthy", extra={"unhealthy_blocks": verdict["unhealthy_blocks"]})
        if self.redis is not None:
            ttl = int(max(self.interval_s, 1.0) * 3)
            with contextlib.suppress(RedisError, OSError):
                await self.redis.set(self.redis_key, json.dumps(report, default=str), ex=ttl)
        return report
