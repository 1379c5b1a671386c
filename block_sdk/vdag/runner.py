"""Running one request through a compiled graph, from the caller's side (vDAG controller,
adhoc inference server): send the packet to every head, collect one result per tail.

Results come back to a per-process Redis list (`aios:vdag:final:{<owner>}:<uuid>`, TTL
refreshed by every push) drained by one reader task, or over gRPC `InferenceProxy` from
blocks in other clusters (the server hands those to `ResultCollector.deliver`). A request is
done when every tail has answered (a result, or "skipped" for a branch a post-processing policy
pruned); the first error ends it at once; its deadline ends it with `DEADLINE_EXCEEDED`
naming the tails still missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from block_sdk.packet import DEADLINE_EXCEEDED, INTERNAL, DataPlaneError
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.vdag.graph import CompiledGraph
from block_sdk.vdag.hops import FINAL_TTL_MS, HopTransport
from block_sdk.vdag.route import FINAL_KIND, new_route, parse_doc

log = logging.getLogger("block_sdk.vdag.runner")

FINAL_PREFIX = "aios:vdag:final"


def final_list_key(owner: str) -> str:
    return f"{FINAL_PREFIX}:{{{owner}}}:{uuid.uuid4().hex[:12]}"


@dataclass(slots=True)
class _Pending:
    tails: frozenset[str]
    future: asyncio.Future
    results: dict[str, pb.AIOSPacket] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)

    def missing(self) -> list[str]:
        return sorted(self.tails - set(self.results) - self.skipped)


class ResultCollector:
    """Resolves each request's future when all its tails have answered."""

    def __init__(
        self,
        redis: aioredis.Redis,
        list_key: str,
        *,
        block_timeout_s: float = 1.0,
        drain_batch: int = 256,
    ) -> None:
        self.redis = redis
        self.list_key = list_key
        self.block_timeout_s = block_timeout_s
        self.drain_batch = drain_batch
        self._pending: dict[str, _Pending] = {}
        self._task: asyncio.Task | None = None
        self.orphans = 0

    def __len__(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="vdag-result-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(DataPlaneError("UNAVAILABLE", "shutting down"))
        self._pending.clear()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.list_key)

    def expect(self, rid: str, tails: list[str]) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = _Pending(frozenset(tails), fut)
        return fut

    def missing(self, rid: str) -> list[str]:
        pending = self._pending.get(rid)
        return pending.missing() if pending else []

    def discard(self, rid: str) -> None:
        self._pending.pop(rid, None)

    def deliver(self, packet: pb.AIOSPacket) -> bool:
        """One result/skip/error marker; False when no request here waits for it."""
        doc = parse_doc(packet.output_ptr)
        if not doc or doc.get("kind") != FINAL_KIND:
            log.warning("not a vDAG result; dropped", extra={"output_ptr": packet.output_ptr[:200]})
            return True
        pending = self._pending.get(str(doc.get("rid")))
        if pending is None or pending.future.done():
            self.orphans += 1
            return False
        node = str(doc.get("node") or "")
        error = doc.get("error")
        if isinstance(error, dict):
            err = DataPlaneError.from_json(
                str(error.get("code") or INTERNAL), str(error.get("message") or "")
            )
            err.details.setdefault("node", node)
            pending.future.set_exception(err)
            return True
        if node not in pending.tails or node in pending.results or node in pending.skipped:
            return True  # a duplicate (a re-run after a crash) or a stray: ignore
        if doc.get("skipped"):
            pending.skipped.add(node)
        else:
            pending.results[node] = packet
        if not pending.missing():
            pending.future.set_result(pending)
        return True

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            try:
                got = await self.redis.blpop([self.list_key], timeout=self.block_timeout_s)
                if got is None:
                    continue
                self._deliver_raw(got[1])
                await asyncio.sleep(0)  # let the woken request answer before draining
                more = await self.redis.lpop(self.list_key, self.drain_batch)
                for raw in more or ():
                    self._deliver_raw(raw)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, RedisError, OSError) as exc:
                log.warning("result reader redis error", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _deliver_raw(self, raw: bytes) -> None:
        try:
            packet = pb.AIOSPacket.FromString(raw)
        except Exception:  # a corrupt entry must not stop the reader
            log.exception("undecodable result dropped")
            return
        self.deliver(packet)


@dataclass(slots=True)
class GraphResult:
    """Per tail label, the tail's output packet; tails pruned by a policy are absent."""

    graph: CompiledGraph
    outputs: dict[str, pb.AIOSPacket]
    skipped: list[str]

    def combined(self) -> tuple[str, list[Any]]:
        """(data, files) of the vDAG answer: one tail -> its data; several -> a JSON object
        keyed by tail label. Files of the tails, in tail order."""
        tails = self.graph.tails
        if len(tails) == 1:
            out = self.outputs.get(tails[0])
            return (out.data if out is not None else "null"), list(out.files if out else [])
        doc: dict[str, Any] = {}
        files: list[Any] = []
        for label in tails:
            out = self.outputs.get(label)
            if out is None:
                continue
            try:
                doc[label] = json.loads(out.data) if out.data else None
            except ValueError:
                doc[label] = out.data
            files.extend(out.files)
        return json.dumps(doc, separators=(",", ":")), files


class GraphRunner:
    """Sends requests into a graph and awaits their results."""

    def __init__(
        self,
        transport: HopTransport,
        collector: ResultCollector,
        *,
        final: dict[str, Any],
        vdag_uri: str = "",
    ) -> None:
        self.transport = transport
        self.collector = collector
        self.final = {**final, "redis_list": collector.list_key}
        self.vdag_uri = vdag_uri

    async def run(
        self,
        graph: CompiledGraph,
        packet: pb.AIOSPacket,
        *,
        timeout_s: float,
        frame_ptr: bytes = b"",
    ) -> GraphResult:
        """Raises DataPlaneError (the first failing hop's error, or DEADLINE_EXCEEDED)."""
        rid = uuid.uuid4().hex
        deadline = time.time() + timeout_s
        route = new_route(
            graph,
            rid,
            final=self.final,
            deadline=deadline,
            vdag=self.vdag_uri,
            frame_ptr=frame_ptr,
        )
        fut = self.collector.expect(rid, graph.tails)
        try:
            sends = []
            for head in graph.heads:
                node = graph.nodes[head]
                out = pb.AIOSPacket()
                out.CopyFrom(packet)
                out.output_ptr = route.ptr(head)
                sends.append(
                    self.transport.send(
                        node.executor,
                        node.block_id or "",
                        out,
                        deadline=deadline,
                        frame_ptr=frame_ptr,
                        sticky=packet.session_id,
                        request_id=f"{rid}:{head}",
                    )
                )
            for result in await asyncio.gather(*sends, return_exceptions=True):
                if isinstance(result, BaseException):
                    if isinstance(result, DataPlaneError):
                        raise result
                    raise DataPlaneError(INTERNAL, f"sending to the graph failed: {result}")
            try:
                async with asyncio.timeout(max(0.0, deadline - time.time())):
                    pending = await fut
            except TimeoutError:
                missing = self.collector.missing(rid)
                raise DataPlaneError(
                    DEADLINE_EXCEEDED,
                    f"no result from {', '.join(missing) or 'the graph'} within {timeout_s:.3f}s",
                    waiting_for=missing,
                ) from None
        finally:
            self.collector.discard(rid)
        return GraphResult(graph, dict(pending.results), sorted(pending.skipped))


__all__ = [
    "FINAL_TTL_MS",
    "GraphResult",
    "GraphRunner",
    "ResultCollector",
    "final_list_key",
]
