"""Where an instance sends a result that nobody waits for: the `output_ptr` route.

A vDAG request carries its compiled route in `AIOSPacket.output_ptr`, a JSON object:

    {"route": {"<block_id>": ["<next_block_id>", ...], ...},   # also accepted: "graph"
     "endpoints": {"<block_id>": "host:port", ...},            # InferenceProxy of each block
     "final": {"redis_list": "<key>"} | {"grpc": "host:port"},  # where results are collected
     ...}                                                       # other keys travel untouched

This module parses that and offers the small `Router` the instance runtime calls after a
request without a reply target finished. Forwarding policy (fan-out copies, fan-in, cross-
cluster hops, error propagation rules) belongs to the vDAG layer, which plugs in by passing
its own `Forwarder`; the default one covers direct `InferenceProxy` hops and a Redis-list or
gRPC `final` target, enough for a linear pipeline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import redis.asyncio as aioredis

from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.protos import inference_proxy_pb2 as ppb
from block_sdk.protos import inference_proxy_pb2_grpc as pgrpc

log = logging.getLogger("block_sdk.routing")

FINAL_TTL_MS = 300_000
FINAL_MAXLEN = 100_000


@dataclass(slots=True)
class Route:
    """Parsed `output_ptr`."""

    graph: dict[str, list[str]] = field(default_factory=dict)
    endpoints: dict[str, str] = field(default_factory=dict)
    final: Any = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, output_ptr: str) -> Route | None:
        """None when there is no route (direct inference): the common, fast case."""
        if not output_ptr:
            return None
        try:
            doc = json.loads(output_ptr)
        except ValueError:
            log.warning("output_ptr is not JSON; ignored", extra={"output_ptr": output_ptr[:200]})
            return None
        if not isinstance(doc, dict):
            return None
        graph = doc.get("route") or doc.get("graph") or {}
        if not isinstance(graph, dict):
            graph = {}
        return cls(
            graph={str(k): [str(x) for x in (v or [])] for k, v in graph.items()},
            endpoints={str(k): str(v) for k, v in (doc.get("endpoints") or {}).items()},
            final=doc.get("final"),
            raw=doc,
        )

    def successors(self, block_id: str) -> list[str]:
        return self.graph.get(block_id, [])


class Forwarder(Protocol):
    """Sends a packet to the next block, or a finished result to the final target."""

    async def forward(self, next_block_id: str, packet: pb.AIOSPacket, route: Route) -> None: ...

    async def deliver_final(self, packet: pb.AIOSPacket, route: Route) -> None: ...


class RoutingError(Exception):
    pass


class DefaultForwarder:
    """Hops over `InferenceProxy` gRPC; final results to a Redis list or InferenceProxy."""

    def __init__(self, redis: aioredis.Redis | None, timeout_s: float = 5.0) -> None:
        self.redis = redis
        self.timeout_s = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> pgrpc.InferenceProxyStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(address)
        return pgrpc.InferenceProxyStub(channel)

    async def _proxy(self, address: str, packet: pb.AIOSPacket) -> None:
        msg = ppb.InferenceMessage(rpc_data=packet.SerializeToString())
        resp = await self._stub(address).infer(msg, timeout=self.timeout_s)
        if not resp.message:
            raise RoutingError(f"{address} refused the packet")

    async def forward(self, next_block_id: str, packet: pb.AIOSPacket, route: Route) -> None:
        address = route.endpoints.get(next_block_id)
        if not address:
            raise RoutingError(f"no endpoint for next block {next_block_id!r} in output_ptr")
        await self._proxy(address, packet)

    async def deliver_final(self, packet: pb.AIOSPacket, route: Route) -> None:
        final = route.final
        if isinstance(final, dict) and final.get("redis_list"):
            if self.redis is None:
                raise RoutingError("final redis_list target needs a Redis connection")
            key = str(final["redis_list"])
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(key, packet.SerializeToString())
            pipe.ltrim(key, 0, FINAL_MAXLEN - 1)
            pipe.pexpire(key, int(final.get("ttl_ms", FINAL_TTL_MS)))
            await pipe.execute()
        elif isinstance(final, dict) and final.get("grpc"):
            await self._proxy(str(final["grpc"]), packet)
        else:
            raise RoutingError(f"unsupported final target {final!r}")

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


class Router:
    """Called by an instance for each finished request that has an `output_ptr` route."""

    def __init__(self, block_id: str, forwarder: Forwarder) -> None:
        self.block_id = block_id
        self.forwarder = forwarder

    async def route_output(self, packet: pb.AIOSPacket) -> bool:
        """Forward to successors (a copy each) or deliver to `final`. False: no route."""
        route = Route.parse(packet.output_ptr)
        if route is None:
            return False
        nxt = route.successors(self.block_id)
        if nxt:
            await asyncio.gather(*(self.forwarder.forward(b, packet, route) for b in nxt))
        elif route.final is not None:
            await self.forwarder.deliver_final(packet, route)
        else:
            return False
        return True

    async def route_error(self, packet: pb.AIOSPacket, error_json: str) -> bool:
        """Errors travel to the final target so the original caller sees them."""
        route = Route.parse(packet.output_ptr)
        if route is None or route.final is None:
            return False
        failed = pb.AIOSPacket()
        failed.CopyFrom(packet)
        failed.data = error_json
        await self.forwarder.deliver_final(failed, route)
        return True
