"""One hop of a vDAG request: a packet to the next block's executor, or a result to `final`.

Same cluster: the packet is pushed straight onto one of the block's instance queues in Redis
(`aios:block:{B}:q:<iid>`, the same bounded Lua enqueue the block's executor uses for its
`InferenceProxy`), skipping the executor's gRPC hop. The instance is chosen among the live ones
(registered in `aios:block:{B}:instances` and heartbeating; the list is refreshed in the
background every `refresh_s`) by rendezvous hashing of the session id, so a session sticks to
one instance like the executors' default policy, and every sender agrees without talking.
If the instance dies, the block's executor sweeps its queue onto a live one as for any request.

Another cluster: `InferenceProxy.infer` on that executor's gRPC address with the serialized
`AIOSPacket` (fire-and-forward; the receiving executor queues it and answers at once).

"Same cluster" is decided from the executor address: a `cluster_id` equal to ours (then its
`redis_url`, or ours); without cluster ids, a `redis_url` equal to ours or no `grpc` address at
all. `"transport": "grpc" | "redis"` in the address forces one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from block_sdk.packet import (
    DEADLINE_EXCEEDED,
    INTERNAL,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    DataPlaneError,
)
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.protos import inference_proxy_pb2 as ppb
from block_sdk.protos import inference_proxy_pb2_grpc as pgrpc
from block_sdk.queues import BlockKeys, QueueEnvelope, QueueFull, RequestQueues, connect

log = logging.getLogger("block_sdk.vdag.hops")

FINAL_TTL_MS = 120_000
FINAL_MAXLEN = 100_000
DEFAULT_MAX_QUEUE = 1000
GRPC_STATUS = {c.name: c for c in grpc.StatusCode}


def norm_url(url: str) -> str:
    return url.strip().rstrip("/").replace("localhost", "127.0.0.1")


def grpc_error(exc: grpc.aio.AioRpcError, where: str) -> DataPlaneError:
    """A gRPC failure as a DataPlaneError (the detail is our JSON error document if the
    peer is one of ours)."""
    code = exc.code().name if exc.code() is not None else UNAVAILABLE
    text = exc.details() or ""
    if text.startswith("{"):
        err = DataPlaneError.from_json(code, text)
        err.details.setdefault("hop", where)
        return err
    return DataPlaneError(code, f"{where}: {text or code}", hop=where)


@dataclass(slots=True)
class _LiveSet:
    """Live instances of one block in one Redis, refreshed in the background."""

    queues: RequestQueues
    live: list[str] = field(default_factory=list)
    fetched_at: float = 0.0
    task: asyncio.Task | None = None
    rr: int = 0


class HopTransport:
    """Sends packets along vDAG edges and results to their final target (asyncio)."""

    def __init__(
        self,
        *,
        cluster_id: str = "",
        redis_url: str = "",
        redis: aioredis.Redis | None = None,
        grpc_timeout_s: float = 5.0,
        refresh_s: float = 0.5,
        api_key: str = "",
    ) -> None:
        self.cluster_id = cluster_id or ""
        self.redis_url = redis_url or ""
        self.grpc_timeout_s = grpc_timeout_s
        self.refresh_s = refresh_s
        self._metadata = (("x-api-key", api_key),) if api_key else None
        self._clients: dict[str, aioredis.Redis] = {}
        self._own: set[str] = set()
        if redis is not None and self.redis_url:
            self._clients[norm_url(self.redis_url)] = redis
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._live: dict[tuple[str, str], _LiveSet] = {}
        self.sent_redis = 0
        self.sent_grpc = 0

    # -- decisions ---------------------------------------------------------------------
    def redis_url_for(self, address: Mapping[str, Any]) -> str | None:
        """The Redis to use for `address`, or None when it must be reached over gRPC."""
        forced = address.get("transport")
        url = str(address.get("redis_url") or "")
        if forced == "grpc":
            return None
        if forced == "redis":
            return url or self.redis_url
        target = str(address.get("cluster_id") or "")
        if target and self.cluster_id:
            return (url or self.redis_url) if target == self.cluster_id else None
        if url:
            if norm_url(url) == norm_url(self.redis_url) or not address.get("grpc"):
                return url
            return None
        return None if address.get("grpc") else self.redis_url

    def _client(self, url: str) -> aioredis.Redis:
        key = norm_url(url)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = connect(url, max_connections=256)
            self._own.add(key)
        return client

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ],
            )
        return channel

    # -- live instances ----------------------------------------------------------------
    async def _refresh(self, entry: _LiveSet) -> None:
        redis = entry.queues.redis
        keys = entry.queues.keys
        try:
            registered = [k.decode() for k in await redis.hkeys(keys.instances)]
            live: list[str] = []
            if registered:
                pipe = redis.pipeline(transaction=False)
                for iid in registered:
                    pipe.exists(keys.heartbeat(iid))
                res = await pipe.execute()
                live = sorted(iid for iid, ok in zip(registered, res, strict=True) if ok)
            entry.live = live
            entry.fetched_at = time.monotonic()
        except (RedisError, OSError) as exc:
            log.warning(
                "instance list refresh failed", extra={"block_id": keys.block_id, "error": str(exc)}
            )
            entry.fetched_at = time.monotonic()

    async def live_instances(self, url: str, block_id: str) -> _LiveSet:
        """The (possibly slightly stale) live set of `block_id` in the Redis at `url`."""
        key = (norm_url(url), block_id)
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = _LiveSet(
                RequestQueues(self._client(url), BlockKeys(block_id))
            )
        age = time.monotonic() - entry.fetched_at
        if not entry.live or entry.fetched_at == 0.0:
            if age > 0.05:  # an empty answer is re-asked soon, not on every packet
                await self._refresh(entry)
        elif age > 2 * self.refresh_s:
            # Idle for a while: the list may name instances that died since; ask first.
            await self._refresh(entry)
        elif age > self.refresh_s and (entry.task is None or entry.task.done()):
            # Under traffic: refresh beside the request, the list is at most slightly old.
            entry.task = asyncio.ensure_future(self._refresh(entry))
        return entry

    @staticmethod
    def _order(live: list[str], sticky: str, rr: int) -> list[str]:
        if len(live) <= 1:
            return list(live)
        if sticky:
            # Rendezvous hashing: stable per session, the same answer in every process.
            return sorted(
                live, key=lambda iid: zlib.crc32(f"{iid}\0{sticky}".encode()), reverse=True
            )
        start = rr % len(live)
        return live[start:] + live[:start]

    # -- sending -------------------------------------------------------------------------
    async def send(
        self,
        address: Mapping[str, Any],
        block_id: str,
        packet: pb.AIOSPacket,
        *,
        deadline: float = 0.0,
        frame_ptr: bytes = b"",
        sticky: str = "",
        request_id: str = "",
    ) -> str:
        """Hand `packet` to `block_id`'s instances; returns "redis" or "grpc". Raises
        DataPlaneError (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ...)."""
        if deadline and time.time() > deadline:
            raise DataPlaneError(
                DEADLINE_EXCEEDED, "request deadline passed before the hop", block_id=block_id
            )
        url = self.redis_url_for(address)
        if url is not None:
            entry = await self.live_instances(url, block_id)
            if entry.live:
                await self._enqueue(
                    entry, block_id, packet, address, deadline, frame_ptr, sticky, request_id
                )
                self.sent_redis += 1
                return "redis"
            if not address.get("grpc"):
                raise DataPlaneError(
                    UNAVAILABLE, f"no live instance of block {block_id}", block_id=block_id
                )
        grpc_addr = address.get("grpc")
        if not grpc_addr:
            raise DataPlaneError(
                UNAVAILABLE,
                f"block {block_id} is not reachable: its executor address has no gRPC endpoint "
                "and its Redis is another cluster's",
                block_id=block_id,
            )
        await self._proxy(str(grpc_addr), packet, deadline, f"executor of {block_id}")
        self.sent_grpc += 1
        return "grpc"

    async def _enqueue(
        self,
        entry: _LiveSet,
        block_id: str,
        packet: pb.AIOSPacket,
        address: Mapping[str, Any],
        deadline: float,
        frame_ptr: bytes,
        sticky: str,
        request_id: str,
    ) -> None:
        entry.rr += 1
        max_len = int(address.get("max_queue_length") or DEFAULT_MAX_QUEUE)
        env = QueueEnvelope(
            request_id=request_id,
            packet=packet,
            reply_to="",
            deadline=deadline,
            block_id=block_id,
            enqueued_at=time.time(),
            frame_ptr=frame_ptr,
        )
        for iid in self._order(entry.live, sticky, entry.rr):
            env.instance_id = iid
            try:
                await entry.queues.enqueue(iid, env.SerializeToString(), max_len)
                return
            except QueueFull:
                continue
            except (RedisError, OSError) as exc:
                raise DataPlaneError(
                    UNAVAILABLE, f"redis of block {block_id} unavailable: {exc}", block_id=block_id
                ) from exc
        raise DataPlaneError(
            RESOURCE_EXHAUSTED,
            f"all instance queues of block {block_id} are full ({max_len} waiting each)",
            block_id=block_id,
        )

    async def _proxy(
        self, address: str, packet: pb.AIOSPacket, deadline: float, where: str
    ) -> None:
        timeout = self.grpc_timeout_s
        if deadline:
            timeout = max(0.001, min(timeout, deadline - time.time()))
        stub = pgrpc.InferenceProxyStub(self._channel(address))
        try:
            resp = await stub.infer(
                ppb.InferenceMessage(rpc_data=packet.SerializeToString()),
                timeout=timeout,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise grpc_error(exc, f"{where} at {address}") from None
        if not resp.message:
            raise DataPlaneError(UNAVAILABLE, f"{where} at {address} refused the packet")

    async def deliver_final(self, final: Mapping[str, Any], packet: pb.AIOSPacket) -> str:
        """A result (or error/skip marker) to the request's collector."""
        key = final.get("redis_list")
        url = self.redis_url_for(final) if key else None
        if url is not None and key:
            client = self._client(url)
            try:
                pipe = client.pipeline(transaction=False)
                pipe.lpush(str(key), packet.SerializeToString())
                pipe.ltrim(str(key), 0, FINAL_MAXLEN - 1)
                pipe.pexpire(str(key), FINAL_TTL_MS)
                await pipe.execute()
                return "redis"
            except (RedisError, OSError) as exc:
                if not final.get("grpc"):
                    raise DataPlaneError(
                        UNAVAILABLE, f"cannot deliver the result: redis unavailable: {exc}"
                    ) from exc
        if final.get("grpc"):
            await self._proxy(str(final["grpc"]), packet, 0.0, "result collector")
            return "grpc"
        raise DataPlaneError(INTERNAL, f"unusable final target {dict(final)!r}")

    async def close(self) -> None:
        for entry in self._live.values():
            if entry.task is not None and not entry.task.done():
                entry.task.cancel()
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()
        for key in self._own:
            with contextlib.suppress(Exception):
                await self._clients[key].aclose()
        self._clients.clear()
        self._own.clear()


def error_of(error_json: str, default_code: str = INTERNAL) -> dict[str, Any]:
    """`{"code", "message"}` for a final error marker from a JSON error document."""
    code = default_code
    with contextlib.suppress(ValueError, KeyError, TypeError):
        code = str(json.loads(error_json)["error"]["code"]) or default_code
    return {"code": code, "message": error_json}
