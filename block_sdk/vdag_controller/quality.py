"""The `qualityChecker`: request/response pairs sampled in the background and stored.

The request path only puts the pair on a bounded queue (a full queue drops the pair and counts
it: quality checking never slows or fails inference). One worker task runs the policy
(default `aios.quality_sampler:1.0-stable`) with AIOS's input `{"vdag_info", "input_data":
{"request", "response"}}` (plus `session_id`/`seq_no`); when it answers `{"record": true}` the
pair goes to every sink. Sinks are pluggable (`Sink.store(record)`): a Redis stream with
`MAXLEN` (`aios:vdag:{<controller_id>}:quality`, always on) and an HTTP POST to a
control-plane URL when one is configured; `module:Class` names load others.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import time
from typing import Any, Protocol

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from block_sdk.vdag.serving import PolicyHandle

log = logging.getLogger("block_sdk.vdag_controller.quality")


class Sink(Protocol):
    async def store(self, record: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


class RedisStreamSink:
    """`XADD <key> MAXLEN ~ <maxlen> * record <json>`: bounded, readable with XRANGE."""

    def __init__(self, redis: aioredis.Redis, key: str, maxlen: int = 10_000) -> None:
        self.redis = redis
        self.key = key
        self.maxlen = maxlen

    async def store(self, record: dict[str, Any]) -> None:
        await self.redis.xadd(
            self.key,
            {"record": json.dumps(record, default=str)},
            maxlen=self.maxlen,
            approximate=True,
        )

    async def recent(self, count: int = 10) -> list[dict[str, Any]]:
        rows = await self.redis.xrevrange(self.key, count=max(1, min(count, 1000)))
        out = []
        for entry_id, fields in rows:
            try:
                record = json.loads(fields.get(b"record", b"{}"))
            except ValueError:
                record = {}
            out.append({"id": entry_id.decode(), **record})
        return out

    async def close(self) -> None:
        return None


class HttpSink:
    """POSTs each record as JSON to a URL (e.g. the control plane's quality endpoint)."""

    def __init__(self, url: str, token: str = "", timeout_s: float = 5.0) -> None:
        self.url = url
        self.headers = {"Authorization": f"Token {token}"} if token else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def store(self, record: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        async with self._session.post(self.url, json=record) as resp:
            if resp.status >= 300:
                text = (await resp.text())[:200]
                raise RuntimeError(f"POST {self.url} answered {resp.status}: {text}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def load_sink(spec: str, **kwargs: Any) -> Sink:
    """A custom sink from `module.path:Class`, constructed with the controller's config."""
    module_name, _, attr = spec.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    return cls(**kwargs)


def packet_summary(packet: Any) -> dict[str, Any]:
    """A request or response as JSON (file bytes are not stored, only their size)."""
    return {
        "session_id": packet.session_id,
        "seq_no": int(packet.seq_no),
        "data": packet.data,
        "ts": float(packet.ts),
        "frame_ptr": bytes(packet.frame_ptr).decode("utf-8", "replace"),
        "files": [{"metadata": f.metadata, "size": len(f.file_data)} for f in packet.files],
    }


class QualityChecker:
    def __init__(
        self,
        policy: PolicyHandle | None,
        sinks: list[Any],
        *,
        vdag_info: dict[str, Any],
        queue_max: int = 1000,
    ) -> None:
        self.policy = policy
        self.sinks = sinks
        self.vdag_info = vdag_info
        self.queue: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue(maxsize=queue_max)
        self.seen = 0
        self.recorded = 0
        self.dropped = 0
        self.failed = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.policy is not None:
            self._task = asyncio.create_task(self._run(), name="quality-checker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()

    def submit(self, request: Any, response: Any) -> None:
        """Called on the request path: never blocks, never raises."""
        if self.policy is None:
            return
        try:
            self.queue.put_nowait((request, response))
        except asyncio.QueueFull:
            self.dropped += 1

    async def _run(self) -> None:
        while True:
            request, response = await self.queue.get()
            try:
                await self.check(request, response)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed += 1
                log.warning("quality check failed", extra={"error": str(exc)[:300]})

    async def check(self, request: Any, response: Any) -> bool:
        req, resp = packet_summary(request), packet_summary(response)
        self.seen += 1
        result = await self.policy.eval(  # type: ignore[union-attr]
            {
                "vdag_info": self.vdag_info,
                "session_id": req["session_id"],
                "seq_no": req["seq_no"],
                "input_data": {"request": req, "response": resp},
            }
        )
        if not (isinstance(result, dict) and result.get("record")):
            return False
        record = {
            **self.vdag_info,
            "ts": time.time(),
            "session_id": req["session_id"],
            "seq_no": req["seq_no"],
            "request": req,
            "response": resp,
            "policy": self.policy.uri,  # type: ignore[union-attr]
            "policy_result": {k: v for k, v in result.items() if k != "pair"},
        }
        for sink in self.sinks:
            try:
                await sink.store(record)
            except (RedisError, OSError, aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                self.failed += 1
                log.warning(
                    "quality sink failed", extra={"sink": type(sink).__name__, "error": str(exc)}
                )
        self.recorded += 1
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "policy": self.policy.uri if self.policy else None,
            "parameters": self.policy.parameters if self.policy else {},
            "seen": self.seen,
            "recorded": self.recorded,
            "dropped": self.dropped,
            "failed": self.failed,
            "queued": self.queue.qsize(),
            "queue_max": self.queue.maxsize,
            "sinks": [type(s).__name__ for s in self.sinks],
        }
