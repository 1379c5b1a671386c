"""Request quotas of a vDAG controller (and of the adhoc inference server).

`QuotaTable` is AIOS's `QuotaManagement` over Redis: a counter per session and one global
counter, both living one window (`ttl_s`, set when a window's first request counts them).
Replicas of a controller share them. `QuotaChecker` runs the `quotaChecker` policy on every
request with the counts including this request (`session_count`, `global_count`, and AIOS's
`quota` = session count); a denied request is not counted and fails `RESOURCE_EXHAUSTED`.

Keys: `<prefix>:quota:s:<session_id>`, `<prefix>:quota:global` (prefix e.g.
`aios:vdag:{<controller_id>}`), every one with a TTL.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from block_sdk.packet import INTERNAL, RESOURCE_EXHAUSTED, UNAVAILABLE, DataPlaneError
from block_sdk.vdag.serving import PolicyHandle

log = logging.getLogger("block_sdk.vdag_controller.quota")

DEFAULT_WINDOW_S = 60.0
_MAX_SCAN = 100_000

# KEYS: session, global. ARGV: amount, ttl ms. Counts; the TTL starts with the window.
_INCR_LUA = """
local s = redis.call('INCRBY', KEYS[1], ARGV[1])
if s == tonumber(ARGV[1]) or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local g = redis.call('INCRBY', KEYS[2], ARGV[1])
if g == tonumber(ARGV[1]) or redis.call('PTTL', KEYS[2]) < 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {s, g}
"""

_UNDO_LUA = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECRBY', KEYS[i], ARGV[1]) end
end
return 1
"""


class QuotaTable:
    """Counters per session and global (AIOS `QuotaManagement`)."""

    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: float = DEFAULT_WINDOW_S) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._incr = redis.register_script(_INCR_LUA)
        self._undo = redis.register_script(_UNDO_LUA)

    def session_key(self, session_id: str) -> str:
        return f"{self.prefix}:quota:s:{session_id}"

    @property
    def global_key(self) -> str:
        return f"{self.prefix}:quota:global"

    async def increment(self, session_id: str, amount: int = 1) -> tuple[int, int]:
        """(session count, global count) after counting `amount`."""
        s, g = await self._incr(
            keys=[self.session_key(session_id), self.global_key],
            args=[amount, max(1, int(self.ttl_s * 1000))],
        )
        return int(s), int(g)

    async def undo(self, session_id: str, amount: int = 1) -> None:
        await self._undo(keys=[self.session_key(session_id), self.global_key], args=[amount])

    async def get(self, session_id: str) -> int:
        value = await self.redis.get(self.session_key(session_id))
        return int(value or 0)

    async def get_global(self) -> int:
        return int(await self.redis.get(self.global_key) or 0)

    async def ttl(self, session_id: str) -> float | None:
        ms = await self.redis.pttl(self.session_key(session_id))
        return ms / 1000 if ms and ms > 0 else None

    async def exists(self, session_id: str) -> bool:
        return bool(await self.redis.exists(self.session_key(session_id)))

    async def reset(self, session_id: str) -> None:
        """Count from zero again (the window keeps running)."""
        key = self.session_key(session_id)
        ttl = await self.redis.pttl(key)
        await self.redis.set(key, 0, px=ttl if ttl and ttl > 0 else int(self.ttl_s * 1000))

    async def remove(self, session_id: str) -> bool:
        return bool(await self.redis.delete(self.session_key(session_id)))

    async def clean(self) -> int:
        """Remove every counter of this prefix (sessions and global)."""
        pattern = f"{self.prefix}:quota:*".replace("{", "\\{").replace("}", "\\}")
        removed = 0
        async for key in self.redis.scan_iter(match=pattern, count=500):
            removed += await self.redis.delete(key)
            if removed >= _MAX_SCAN:
                break
        return removed


class QuotaChecker:
    """The `quotaChecker` hook: count, ask the policy, refuse or let through."""

    def __init__(self, table: QuotaTable, policy: PolicyHandle | None) -> None:
        self.table = table
        self.policy = policy
        self.denied = 0
        self._sync_window()

    def _sync_window(self) -> None:
        if self.policy is not None:
            window = self.policy.parameters.get("window_s")
            if isinstance(window, int | float) and window > 0:
                self.table.ttl_s = float(window)

    def set_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        if self.policy is None:
            raise DataPlaneError("FAILED_PRECONDITION", "no quota policy is configured")
        result = self.policy.set_parameters(parameters)
        self._sync_window()
        return result

    async def check(self, session_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """Raises DataPlaneError RESOURCE_EXHAUSTED when the policy says no."""
        if self.policy is None:
            return {"allowed": True}
        try:
            session_count, global_count = await self.table.increment(session_id)
        except (RedisError, OSError) as exc:
            raise DataPlaneError(UNAVAILABLE, f"quota table unavailable: {exc}") from exc
        try:
            result = await self.policy.eval(
                {
                    "session_id": session_id,
                    "session_count": session_count,
                    "global_count": global_count,
                    "quota": session_count,
                    "input": request,
                }
            )
        except Exception as exc:
            await self._undo(session_id)
            raise DataPlaneError(INTERNAL, f"quota policy {self.policy.uri} failed: {exc}") from exc
        allowed = result.get("allowed") if isinstance(result, dict) else bool(result)
        if not allowed:
            self.denied += 1
            await self._undo(session_id)
            reason = result.get("reason") if isinstance(result, dict) else None
            raise DataPlaneError(
                RESOURCE_EXHAUSTED,
                reason or f"quota exceeded for session {session_id}",
                session_id=session_id,
                session_count=session_count,
                policy=self.policy.uri,
            )
        return result if isinstance(result, dict) else {"allowed": True}

    async def _undo(self, session_id: str) -> None:
        try:
            await self.table.undo(session_id)
        except (RedisError, OSError) as exc:
            log.warning("quota undo failed", extra={"session_id": session_id, "error": str(exc)})


def add_quota_routes(app: Any, checker: QuotaChecker) -> None:
    """The AIOS quota REST API on an aiohttp app: `GET /quota/<sid>`, `POST
    /quota/reset/<sid>`, `GET /quota/exists/<sid>`, `DELETE /quota/<sid>`, `POST /quota/mgmt`
    (`{"mgmt_action", "mgmt_data"}`: `get_parameters`, `set_parameters`, `clean`, else the
    policy's own `management`)."""
    from block_sdk.vdag.serving import json_response, read_json

    table = checker.table

    async def get(request: Any) -> Any:
        sid = request.match_info["session_id"]
        return json_response(
            {
                "session_id": sid,
                "quota": await table.get(sid),
                "global": await table.get_global(),
                "ttl_s": await table.ttl(sid),
            }
        )

    async def exists(request: Any) -> Any:
        sid = request.match_info["session_id"]
        return json_response({"session_id": sid, "exists": await table.exists(sid)})

    async def reset(request: Any) -> Any:
        sid = request.match_info["session_id"]
        await table.reset(sid)
        return json_response({"session_id": sid, "quota": 0})

    async def remove(request: Any) -> Any:
        sid = request.match_info["session_id"]
        return json_response({"session_id": sid, "removed": await table.remove(sid)})

    async def mgmt(request: Any) -> Any:
        body = await read_json(request)
        action = body.get("mgmt_action", body.get("action"))
        data = body.get("mgmt_data", body.get("data"))
        if not action:
            raise DataPlaneError("INVALID_ARGUMENT", "mgmt_action is required")
        if action == "get_parameters":
            result: Any = {
                "policy": checker.policy.uri if checker.policy else None,
                "parameters": checker.policy.parameters if checker.policy else {},
                "window_s": table.ttl_s,
            }
        elif action == "set_parameters":
            if not isinstance(data, dict):
                raise DataPlaneError("INVALID_ARGUMENT", "set_parameters needs an object")
            result = {"parameters": checker.set_parameters(data), "window_s": table.ttl_s}
        elif action == "clean":
            result = {"removed": await table.clean()}
        elif action == "stats":
            result = {"denied": checker.denied, "global": await table.get_global()}
        else:
            if checker.policy is None:
                raise DataPlaneError("FAILED_PRECONDITION", "no quota policy is configured")
            try:
                result = await checker.policy.management(str(action), data)
            except Exception as exc:
                raise DataPlaneError(
                    "INVALID_ARGUMENT", f"quota policy management {action!r} failed: {exc}"
                ) from exc
        return json_response({"mgmt_action": action, "result": result})

    app.router.add_get("/quota/exists/{session_id}", exists)
    app.router.add_post("/quota/reset/{session_id}", reset)
    app.router.add_post("/quota/mgmt", mgmt)
    app.router.add_get("/quota/{session_id}", get)
    app.router.add_delete("/quota/{session_id}", remove)
