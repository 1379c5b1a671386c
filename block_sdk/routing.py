"""Where an instance sends a result that nobody waits for: the `output_ptr` route.

Two kinds of route travel in `AIOSPacket.output_ptr`:

* **vDAG routes** (`{"kind": "aios.vdag/1", ...}`, see `block_sdk.vdag.route`): the compiled
  graph, the node the packet is addressed to and the request's `final` target. The instance
  asks `Router.prepare()` before block code runs (fan-in, pre-processing policy) and
  `Router.route_output()` after (post-processing policy, conditional routing, forwarding to
  the successors' executors straight through Redis or over gRPC, results to `final`); the
  logic lives in `block_sdk.vdag.forwarder`.
* **simple routes** (the first form, kept for single hops and tests):

    {"route": {"<block_id>": ["<next_block_id>", ...], ...},   # also accepted: "graph"
     "endpoints": {"<block_id>": "host:port", ...},            # InferenceProxy of each block
     "final": {"redis_list": "<key>"} | {"grpc": "host:port"},  # where results are collected
     ...}                                                       # other keys travel untouched

  handled by `DefaultForwarder` (direct `InferenceProxy` hops, a Redis-list or gRPC `final`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from block_sdk.packet import DataPlaneError, Packet
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.protos import inference_proxy_pb2 as ppb
from block_sdk.protos import inference_proxy_pb2_grpc as pgrpc
from block_sdk.vdag.route import RouteError, VdagRoute, parse_route

if TYPE_CHECKING:
    from block_sdk.vdag.forwarder import VdagForwarder

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
    """Called by an instance around each request that carries an `output_ptr` route."""

    def __init__(
        self,
        block_id: str,
        forwarder: Forwarder,
        *,
        redis_url: str | None = None,
        cluster_id: str | None = None,
        instance_id: str = "",
    ) -> None:
        self.block_id = block_id
        self.forwarder = forwarder
        self.redis_url = (
            redis_url
            or os.environ.get("AIOS_REDIS_URL")
            or os.environ.get("REDIS_URL")
            or "redis://127.0.0.1:6379/0"
        )
        self.cluster_id = cluster_id if cluster_id is not None else _cluster_from_env()
        self.instance_id = instance_id
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self._vdag: VdagForwarder | None = None

    @property
    def vdag(self) -> VdagForwarder:
        """The vDAG forwarder, built on the first vDAG packet (plain blocks never pay)."""
        if self._vdag is None:
            from block_sdk.vdag.forwarder import VdagForwarder

            self._vdag = VdagForwarder(
                self.block_id,
                redis=getattr(self.forwarder, "redis", None),
                redis_url=self.redis_url,
                cluster_id=self.cluster_id,
                instance_id=self.instance_id,
                loop=self.loop,
            )
        return self._vdag

    @staticmethod
    def _vdag_route(output_ptr: str) -> VdagRoute | None:
        try:
            return parse_route(output_ptr)
        except RouteError as exc:
            raise DataPlaneError("INVALID_ARGUMENT", str(exc)) from None

    def prepare(self, packet: Packet, *, block_muxes: bool = False) -> Packet | None:
        """Before block code (worker thread): the packet to run, or None when the router
        consumed it (an input of a fan-in that is not complete yet, a skip marker).
        Raises DataPlaneError, which fails the request like an error of the block."""
        if not packet.output_ptr:
            return packet
        route = self._vdag_route(packet.output_ptr)
        if route is None:
            return packet
        try:
            return self.vdag.prepare(packet, route, block_muxes)
        except DataPlaneError:
            raise
        except (RedisError, OSError) as exc:
            raise DataPlaneError("UNAVAILABLE", f"vDAG fan-in: redis unavailable: {exc}") from exc
        except Exception as exc:  # a routing failure fails the request, never the consumer
            log.exception("vDAG prepare failed", extra={"node": route.node})
            raise DataPlaneError("INTERNAL", f"vDAG routing before {route.node}: {exc}") from exc

    def route_sync(self, envelopes: list[Any], result: Any, error: Any, client: Any) -> bool:
        """Consumer-thread fast path after block code, on its own round trip: True when the
        outcome is fully routed with the thread's Redis client (no hand-off to the loop);
        False: nothing was done, route with `route_output`/`route_error` on the loop."""
        plan = self.stage_sync(envelopes, result, error, client)
        if plan is None:
            return False
        pipe = client.pipeline(transaction=False)
        plan.stage(pipe)
        if not len(pipe):
            return True
        try:
            results = pipe.execute(raise_on_error=False)
        except (RedisError, OSError):
            plan.abandon()
            return False  # the async path routes it
        plan.settle(results)
        return True

    def stage_sync(self, envelopes: list[Any], result: Any, error: Any, client: Any) -> Any:
        """Consumer-thread fast path after block code: a plan whose `stage(pipe)` adds the
        routing commands to the thread's acknowledgement pipeline and whose
        `settle(results)` checks them (its results come first), or None: nothing was done,
        route with `route_output`/`route_error` on the loop."""
        if error is not None:
            return None
        if result is None:
            return _NOTHING  # the router consumed the packet before block code
        if not result.output_ptr or self._vdag is None:
            return None
        try:
            route = parse_route(result.output_ptr)
        except RouteError:
            return None
        if route is None:
            return None
        try:
            return self._vdag.plan_sync(result, route, client)
        except (RedisError, OSError):
            return None  # nothing was staged: the async path tries (and reports) again

    async def route_output(self, packet: pb.AIOSPacket | None) -> bool:
        """Forward to successors (a copy each) or deliver to `final`. False: no route."""
        if packet is None or not packet.output_ptr:
            return False
        try:
            vroute = self._vdag_route(packet.output_ptr)
        except DataPlaneError:
            log.warning(
                "unusable vDAG route dropped", extra={"output_ptr": packet.output_ptr[:200]}
            )
            return False
        if vroute is not None:
            await self.vdag.route_output(packet, vroute)
            return True
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
        try:
            vroute = self._vdag_route(packet.output_ptr) if packet.output_ptr else None
        except DataPlaneError:
            vroute = None
        if vroute is not None:
            await self.vdag.fail(vroute, packet, error_json)
            return True
        route = Route.parse(packet.output_ptr)
        if route is None or route.final is None:
            return False
        failed = pb.AIOSPacket()
        failed.CopyFrom(packet)
        failed.data = error_json
        await self.forwarder.deliver_final(failed, route)
        return True

    async def close(self) -> None:
        if self._vdag is not None:
            await self._vdag.close()
        close = getattr(self.forwarder, "close", None)
        if close is not None:
            await close()


class _NothingToRoute:
    size = 0

    def stage(self, pipe: Any) -> None:
        return None

    def settle(self, results: list[Any]) -> None:
        return None

    def abandon(self) -> None:
        return None


_NOTHING = _NothingToRoute()


def _cluster_from_env() -> str:
    """This process's cluster: `AIOS_CLUSTER_ID`, else `ALLOCATION_INFO["cluster_id"]`."""
    cluster = os.environ.get("AIOS_CLUSTER_ID", "")
    if cluster:
        return cluster
    try:
        info = json.loads(os.environ.get("ALLOCATION_INFO") or "{}")
    except ValueError:
        return ""
    return str(info.get("cluster_id") or "") if isinstance(info, dict) else ""
