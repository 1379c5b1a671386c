"""How the adhoc inference server finds blocks: by id, and by search.

**By id.** `block_id -> executor address` comes from the server's configuration (`executors`)
and from the Redis hash the control plane maintains, `aios:block-executors` (field = block
id, value = JSON `{"cluster_id", "grpc": "host:port", "http": "host:port", "redis_url"}`;
the control plane writes a field when a block's executor is up and deletes it when the block
is removed). Lookups are cached in-process for `cache_s`.

**By search.** `query_parameters` (a search spec: the AIOS `{"body": {"values": {...}}}` or
the values themselves, e.g. `{"matchType": "block", "filter": {...}, "rankingPolicyRule":
{...}}`) is sent to the control plane's `POST /api/v1/search/` with the server's API token;
the results arrive ranked; the first one whose executor can be reached is chosen. The choice
is cached per (session, query) in Redis for `session_ttl_s`, so a session keeps talking to the
same block and the control plane is asked once per session, not per request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from block_sdk.packet import INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, DataPlaneError

log = logging.getLogger("block_sdk.inference_server.directory")

EXECUTORS_KEY = "aios:block-executors"


class BlockDirectory:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key: str = EXECUTORS_KEY,
        static: dict[str, dict[str, Any]] | None = None,
        cache_s: float = 5.0,
    ) -> None:
        self.redis = redis
        self.key = key
        self.static = dict(static or {})
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, dict[str, Any] | None]] = {}

    async def address(self, block_id: str) -> dict[str, Any] | None:
        if block_id in self.static:
            return self.static[block_id]
        hit = self._cache.get(block_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.cache_s:
            return hit[1]
        try:
            raw = await self.redis.hget(self.key, block_id)
        except (RedisError, OSError) as exc:
            if hit is not None:
                return hit[1]  # a stale answer beats none while Redis hiccups
            raise DataPlaneError(UNAVAILABLE, f"block directory unavailable: {exc}") from exc
        value: dict[str, Any] | None = None
        if raw:
            try:
                doc = json.loads(raw)
                value = doc if isinstance(doc, dict) else None
            except ValueError:
                log.warning("unreadable executor address", extra={"block_id": block_id})
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[block_id] = (now, value)
        return value

    async def require(self, block_id: str) -> dict[str, Any]:
        address = await self.address(block_id)
        if not address:
            raise DataPlaneError(
                NOT_FOUND,
                f"block {block_id!r} is unknown to this inference server (not in its "
                f"configuration nor in {self.key})",
                block_id=block_id,
            )
        return address


def search_values(query_parameters: str) -> dict[str, Any]:
    """The search values out of `query_parameters` (AIOS envelope or bare values)."""
    try:
        doc = json.loads(query_parameters)
    except ValueError:
        raise DataPlaneError(INVALID_ARGUMENT, "query_parameters is not JSON") from None
    if not isinstance(doc, dict):
        raise DataPlaneError(INVALID_ARGUMENT, "query_parameters must be a JSON object")
    body = doc.get("body")
    if isinstance(body, dict) and isinstance(body.get("values"), dict):
        return body["values"]
    if isinstance(doc.get("values"), dict) and "matchType" not in doc:
        return doc["values"]
    return doc


def candidate_id(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        for key in ("id", "block_id", "blockId"):
            if isinstance(item.get(key), str) and item[key]:
                return item[key]
    return None


def candidate_address(item: Any) -> dict[str, Any] | None:
    """An executor address carried by a search result (the block's `endpoints`)."""
    if not isinstance(item, dict):
        return None
    endpoints = item.get("endpoints")
    if isinstance(endpoints, dict) and endpoints.get("grpc"):
        cluster = item.get("cluster_id") or item.get("cluster")
        if isinstance(cluster, dict):
            cluster = cluster.get("id") or cluster.get("cluster_id")
        return {
            "grpc": endpoints["grpc"],
            **({"http": endpoints["http"]} if endpoints.get("http") else {}),
            **({"cluster_id": str(cluster)} if cluster else {}),
        }
    return None


class BlockSearch:
    """Search through the control plane, with the per-session choice cached in Redis."""

    def __init__(
        self,
        directory: BlockDirectory,
        redis: aioredis.Redis,
        *,
        cache_prefix: str,
        api_url: str,
        api_token: str = "",
        path: str = "/api/v1/search/",
        timeout_s: float = 5.0,
        session_ttl_s: float = 600.0,
    ) -> None:
        self.directory = directory
        self.redis = redis
        self.cache_prefix = cache_prefix
        self.url = api_url.rstrip("/") + path if api_url else ""
        self.headers = {"Authorization": f"Token {api_token}"} if api_token else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.session_ttl_s = session_ttl_s
        self._http: aiohttp.ClientSession | None = None
        self.searches = 0

    def cache_key(self, session_id: str, query_parameters: str) -> str:
        digest = hashlib.sha256(query_parameters.encode()).hexdigest()[:16]
        return f"{self.cache_prefix}:session:{session_id}:{digest}"

    async def choose(self, session_id: str, query_parameters: str) -> tuple[str, dict[str, Any]]:
        key = self.cache_key(session_id, query_parameters)
        try:
            cached = await self.redis.get(key)
        except (RedisError, OSError):
            cached = None
        if cached:
            try:
                doc = json.loads(cached)
                return str(doc["block_id"]), dict(doc["address"])
            except (ValueError, KeyError, TypeError):
                pass
        block_id, address = await self._search(query_parameters)
        try:
            await self.redis.set(
                key,
                json.dumps({"block_id": block_id, "address": address}),
                ex=max(1, int(self.session_ttl_s)),
            )
        except (RedisError, OSError) as exc:
            log.warning("session cache write failed", extra={"error": str(exc)})
        return block_id, address

    async def _search(self, query_parameters: str) -> tuple[str, dict[str, Any]]:
        if not self.url:
            raise DataPlaneError(
                "FAILED_PRECONDITION",
                "search by query_parameters needs the control plane's URL (api_url)",
            )
        values = search_values(query_parameters)
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        self.searches += 1
        try:
            async with self._http.post(self.url, json=values) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DataPlaneError(UNAVAILABLE, f"search at {self.url} failed: {exc}") from exc
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {}
        if status >= 500:
            raise DataPlaneError(UNAVAILABLE, f"search answered {status}: {text[:200]}")
        if status >= 400:
            message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            raise DataPlaneError(
                INVALID_ARGUMENT, f"search refused the query ({status}): {message or text[:200]}"
            )
        results = body.get("results") if isinstance(body, dict) else body
        if not isinstance(results, list):
            raise DataPlaneError(UNAVAILABLE, "search answered without a results list")
        for item in results:
            block_id = candidate_id(item)
            if not block_id:
                continue
            address = candidate_address(item) or await self.directory.address(block_id)
            if address:
                return block_id, address
        raise DataPlaneError(
            NOT_FOUND,
            f"the search matched no reachable block ({len(results)} results)",
            results=len(results),
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
