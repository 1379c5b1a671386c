"""The instance's side of vDAG routing: what happens before and after block code runs.

Before (`prepare`, in the consumer thread): a packet for a fan-in node records itself in the
Redis fan-in group and only the arrival that completes the group goes on, with the inputs
merged AIOS-style (`data = {"inputs": [...]}` in the node's declared input order, files
concatenated); a block with its own `Muxer(N)` gets the inputs one by one instead. Then the
node's pre-processing policy.

After (`route_output`, on the instance's loop): the node's post-processing policy (which may
choose the next labels: conditional routing), then a copy of the result to every chosen
successor, or to `final` at a tail. Successors not chosen are *skipped*: a skip marker travels
down the pruned branch so a fan-in further on does not wait for it, and a pruned tail is
reported to the collector as skipped. Any failure here ends the request: the error goes to
`final`, so the caller gets it without waiting for its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict
from typing import Any

import redis as sync_redis
import redis.asyncio as aioredis

from block_sdk.packet import (
    DEADLINE_EXCEEDED,
    FAILED_PRECONDITION,
    INTERNAL,
    INVALID_ARGUMENT,
    DataPlaneError,
    Packet,
    PacketFile,
)
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.queues import _ENQUEUE_LUA, QUEUE_TTL_MS, BlockKeys, QueueEnvelope
from block_sdk.vdag.fanin import FanIn
from block_sdk.vdag.hops import (
    DEFAULT_MAX_QUEUE,
    FINAL_MAXLEN,
    FINAL_TTL_MS,
    HopTransport,
    error_of,
    norm_url,
)
from block_sdk.vdag.policies import NodePolicies, policy_ref
from block_sdk.vdag.route import VdagRoute

log = logging.getLogger("block_sdk.vdag.forwarder")

DEFAULT_FANIN_TTL_S = 60.0
FANIN_TTL_MARGIN_S = 5.0
_SEEN_MAX = 4096


def fanin_ttl_ms(route: VdagRoute) -> int:
    if route.deadline:
        return int(max(1.0, route.deadline - time.time() + FANIN_TTL_MARGIN_S) * 1000)
    return int(DEFAULT_FANIN_TTL_S * 1000)


def _parse_data(text: Any) -> Any:
    if not isinstance(text, str | bytes):
        return text
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


class VdagForwarder:
    """Owned by an instance's `Router`; one per instance process."""

    def __init__(
        self,
        block_id: str,
        *,
        redis: aioredis.Redis,
        redis_url: str,
        cluster_id: str = "",
        instance_id: str = "",
        loop: asyncio.AbstractEventLoop | None = None,
        hop_timeout_s: float = 5.0,
    ) -> None:
        self.block_id = block_id
        self.loop = loop
        self.transport = HopTransport(
            cluster_id=cluster_id, redis_url=redis_url, redis=redis, grpc_timeout_s=hop_timeout_s
        )
        self._sync = sync_redis.Redis.from_url(
            redis_url, socket_timeout=10, socket_connect_timeout=5
        )
        self.fanin = FanIn(self._sync)
        self.policies = NodePolicies(block_id, instance_id)
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._local = norm_url(redis_url)
        self._enqueue_sha: str | None = None
        self._rr = 0
        self.sync_routed = 0

    # -- before block code (worker thread) ----------------------------------------------
    def prepare(self, packet: Packet, route: VdagRoute, block_muxes: bool) -> Packet | None:
        """The packet block code should run, or None when there is nothing to run (an input
        of an incomplete fan-in group, or a skip marker). Raises DataPlaneError."""
        graph = route.graph
        node = graph.nodes[route.node]
        if node.block_id and node.block_id != self.block_id:
            raise DataPlaneError(
                FAILED_PRECONDITION,
                f"packet for node {route.node} (block {node.block_id}) reached block "
                f"{self.block_id}: the vDAG's executor addresses are wrong",
                node=route.node,
            )
        if route.frame_ptr and not packet.frame_ptr:
            packet.frame_ptr = route.frame_ptr.encode()
        if graph.is_fan_in(route.node) and not block_muxes:
            merged = self._fan_in(packet, route)
            if merged is None:
                return None
            packet = merged
        elif route.skipped and block_muxes:
            # The block's own Muxer would wait for an input that will never come.
            raise DataPlaneError(
                FAILED_PRECONDITION,
                f"a branch into {route.node} was pruned by conditional routing, but its block "
                "merges inputs with its own Muxer, which cannot be told; remove get_muxer() "
                "from the block to let the router merge",
                node=route.node,
            )
        elif route.skipped:
            # Only fan-in nodes receive skip markers; anything else just passes the skip on.
            self._on_loop(self.skip_from(route, route.node, packet))
            return None
        ref = policy_ref(node.pre_policy)
        if ref is not None:
            packet = self.policies.run_pre(ref, route.vdag, node, packet)
        return packet

    def _fan_in(self, packet: Packet, route: VdagRoute) -> Packet | None:
        node = route.node
        preds = route.graph.predecessors(node)
        payload = b"" if route.skipped else packet.to_proto().SerializeToString()
        got = self.fanin.arrive(
            route.rid, node, route.sender, payload, len(preds), fanin_ttl_ms(route)
        )
        if got is None:
            return None
        inputs = [pb.AIOSPacket.FromString(got[p]) for p in preds if got.get(p)]
        if not inputs:
            # Every branch into this node was pruned: it does not run either.
            self._on_loop(self.skip_from(route, node, packet))
            return None
        merged = packet.copy()
        merged.data = {"inputs": [_parse_data(p.data) for p in inputs]}
        merged.files = [PacketFile(f.metadata, f.file_data) for p in inputs for f in p.files]
        merged.output_ptr = route.ptr(node, route.sender)
        first = inputs[0]
        merged.session_id, merged.seq_no, merged.ts = first.session_id, first.seq_no, first.ts
        return merged

    def _on_loop(self, coro: Any) -> None:
        """Run a routing coroutine on the instance's loop from a worker thread."""
        if self.loop is None:
            raise DataPlaneError(INTERNAL, "vDAG forwarder has no event loop")
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    # -- after block code, fast path (consumer thread) ----------------------------------
    def plan_sync(self, packet: pb.AIOSPacket, route: VdagRoute, client: Any) -> SyncPlan | None:
        """The Redis commands that route a result, to be sent on the consumer thread's own
        client in the same round trip as its acknowledgement, when everything is local: no
        post-processing policy, successors in this Redis with a fresh live-instance list
        (kept by the async path), or a local `final`. None: take the async path."""
        graph, label = route.graph, route.node
        node = graph.nodes[label]
        if node.post_policy or (route.deadline and time.time() > route.deadline):
            return None
        ops: list[tuple[str, str, bytes, int, str]] = []
        successors = graph.successors(label)
        if not successors:
            key = route.final.get("redis_list")
            url = self.transport.redis_url_for(route.final) if key else None
            if url is None or norm_url(url) != self._local:
                return None
            out = pb.AIOSPacket()
            out.CopyFrom(packet)
            out.output_ptr = route.final_ptr(label)
            ops.append(("final", str(key), out.SerializeToString(), 0, label))
        now = time.monotonic()
        for succ in successors:
            target = graph.nodes[succ]
            url = self.transport.redis_url_for(target.executor)
            if url is None or norm_url(url) != self._local:
                return None
            entry = self.transport._live.get((self._local, target.block_id or ""))
            if (
                entry is None
                or not entry.live
                or now - entry.fetched_at > 2 * self.transport.refresh_s
            ):
                return None  # the async path refreshes the list
            self._rr += 1
            iid = self.transport._order(entry.live, packet.session_id, self._rr)[0]
            out = pb.AIOSPacket()
            out.CopyFrom(packet)
            out.output_ptr = route.ptr(succ, label)
            env = QueueEnvelope(
                request_id=f"{route.rid}:{succ}:{label}",
                packet=out,
                deadline=route.deadline,
                block_id=target.block_id or "",
                enqueued_at=time.time(),
                frame_ptr=route.frame_ptr.encode(),
                instance_id=iid,
            )
            max_len = int(target.executor.get("max_queue_length") or DEFAULT_MAX_QUEUE)
            queue_key = BlockKeys(target.block_id or "").queue(iid)
            ops.append(("enqueue", queue_key, env.SerializeToString(), max_len, succ))
        if self._enqueue_sha is None and any(op[0] == "enqueue" for op in ops):
            self._enqueue_sha = client.script_load(_ENQUEUE_LUA)
        if not self._first_time(route, "ok"):
            return SyncPlan(self, route, packet, [])  # a repeat (muxed group): done already
        return SyncPlan(self, route, packet, ops)

    def route_sync(self, packet: pb.AIOSPacket, route: VdagRoute, client: Any) -> bool:
        """`plan_sync` sent on its own (one round trip). False: take the async path."""
        plan = self.plan_sync(packet, route, client)
        if plan is None:
            return False
        pipe = client.pipeline(transaction=False)
        plan.stage(pipe)
        if not len(pipe):
            return True
        try:
            results = pipe.execute(raise_on_error=False)
        except BaseException:
            plan.abandon()
            raise
        plan.settle(results)
        return True

    async def _retry(self, route: VdagRoute, packet: pb.AIOSPacket, targets: list[str]) -> None:
        try:
            for succ in targets:
                if succ:
                    await self._forward(route, route.node, succ, packet)
                else:
                    out = pb.AIOSPacket()
                    out.CopyFrom(packet)
                    out.output_ptr = route.final_ptr(route.node)
                    await self.transport.deliver_final(route.final, out)
        except DataPlaneError as exc:
            exc.details.setdefault("node", route.node)
            await self.fail(route, packet, exc.to_json())

    # -- after block code (loop) ---------------------------------------------------------
    def _first_time(self, route: VdagRoute, what: str) -> bool:
        """False for a repeat of the same (request, node) outcome in this process (a muxed
        group answers once per member)."""
        key = (route.rid, route.node, what)
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    async def route_output(self, packet: pb.AIOSPacket, route: VdagRoute) -> None:
        if not self._first_time(route, "ok"):
            return
        try:
            await self._route_output(packet, route)
        except DataPlaneError as exc:
            exc.details.setdefault("node", route.node)
            await self.fail(route, packet, exc.to_json())
        except Exception as exc:  # never lose a request to a routing bug
            log.exception("vdag routing failed", extra={"rid": route.rid, "node": route.node})
            err = DataPlaneError(INTERNAL, f"routing after {route.node} failed: {exc}")
            await self.fail(route, packet, err.to_json())

    async def _route_output(self, packet: pb.AIOSPacket, route: VdagRoute) -> None:
        graph, label = route.graph, route.node
        node = graph.nodes[label]
        successors = graph.successors(label)
        chosen: list[str] | None = None
        ref = policy_ref(node.post_policy)
        if ref is not None:
            packet, chosen = await asyncio.to_thread(
                self.policies.run_post, ref, route.vdag, node, packet
            )
        if chosen is not None:
            unknown = [x for x in chosen if x not in successors]
            if unknown:
                raise DataPlaneError(
                    INVALID_ARGUMENT,
                    f"post-processing policy of {label} chose {', '.join(unknown)}, not among "
                    f"its successors ({', '.join(successors) or 'none: it is a tail'})",
                    node=label,
                )
        targets = successors if chosen is None else [s for s in successors if s in chosen]
        if route.deadline and time.time() > route.deadline:
            raise DataPlaneError(
                DEADLINE_EXCEEDED, f"request deadline passed after node {label}", node=label
            )
        jobs = []
        if not successors:
            out = pb.AIOSPacket()
            out.CopyFrom(packet)
            out.output_ptr = route.final_ptr(label, skipped=chosen == [] and bool(ref))
            jobs.append(self.transport.deliver_final(route.final, out))
        for succ in targets:
            jobs.append(self._forward(route, label, succ, packet))
        for succ in successors:
            if succ not in targets:
                jobs.append(self._skip(route, label, succ, packet))
        if len(jobs) == 1:
            await jobs[0]
        else:
            await asyncio.gather(*jobs)

    async def _forward(
        self, route: VdagRoute, label: str, succ: str, packet: pb.AIOSPacket, skipped=False
    ) -> None:
        node = route.graph.nodes[succ]
        out = pb.AIOSPacket()
        out.CopyFrom(packet)
        out.output_ptr = route.ptr(succ, label, skipped=skipped)
        await self.transport.send(
            node.executor,
            node.block_id or "",
            out,
            deadline=route.deadline,
            frame_ptr=route.frame_ptr.encode(),
            sticky=packet.session_id,
            request_id=f"{route.rid}:{succ}:{label}",
        )

    async def _skip(self, route: VdagRoute, sender: str, label: str, packet: Any) -> None:
        """Node `label` will not receive `sender`'s output. A fan-in node is told (it may
        still run with its other inputs); any other node is skipped with its subtree."""
        if route.graph.is_fan_in(label):
            marker = pb.AIOSPacket(
                session_id=packet.session_id, seq_no=int(packet.seq_no), ts=float(packet.ts)
            )
            await self._forward(route, sender, label, marker, skipped=True)
            return
        await self.skip_from(route, label, packet)

    async def skip_from(self, route: VdagRoute, label: str, packet: Any) -> None:
        """`label` does not run: skip its successors, or report a skipped tail."""
        successors = route.graph.successors(label)
        if not successors:
            marker = pb.AIOSPacket(
                session_id=packet.session_id,
                seq_no=int(packet.seq_no),
                ts=float(packet.ts),
                output_ptr=route.final_ptr(label, skipped=True),
            )
            await self.transport.deliver_final(route.final, marker)
            return
        await asyncio.gather(*(self._skip(route, label, s, packet) for s in successors))

    async def fail(self, route: VdagRoute, packet: Any, error_json: str) -> None:
        """The request ends with this error at the caller."""
        if not self._first_time(route, "error"):
            return
        marker = pb.AIOSPacket(
            session_id=packet.session_id,
            seq_no=int(packet.seq_no),
            ts=float(packet.ts),
            output_ptr=route.final_ptr(route.node, error=error_of(error_json)),
        )
        try:
            await self.transport.deliver_final(route.final, marker)
        except DataPlaneError as exc:
            log.error(
                "cannot report a failed vDAG request to its caller",
                extra={"rid": route.rid, "node": route.node, "error": exc.message},
            )

    async def close(self) -> None:
        await self.transport.close()
        with contextlib.suppress(Exception):
            self._sync.close()


class SyncPlan:
    """Routing commands staged on a consumer thread's pipeline (see `plan_sync`)."""

    def __init__(
        self,
        forwarder: VdagForwarder,
        route: VdagRoute,
        packet: pb.AIOSPacket,
        ops: list[tuple[str, str, bytes, int, str]],
    ) -> None:
        self.forwarder = forwarder
        self.route = route
        self.packet = packet
        self.ops = ops
        self.size = 0

    def stage(self, pipe: Any) -> None:
        """Append the commands; they come first in the pipeline's results."""
        sha = self.forwarder._enqueue_sha
        for kind, key, payload, max_len, _ in self.ops:
            if kind == "enqueue":
                pipe.evalsha(sha, 1, key, payload, max_len, QUEUE_TTL_MS)
                self.size += 1
            else:
                pipe.lpush(key, payload)
                pipe.ltrim(key, 0, FINAL_MAXLEN - 1)
                pipe.pexpire(key, FINAL_TTL_MS)
                self.size += 3

    def abandon(self) -> None:
        """The pipeline failed as a whole: the async path must route this result."""
        self.forwarder._seen.pop((self.route.rid, self.route.node, "ok"), None)

    def settle(self, results: list[Any]) -> None:
        """Check our share of the pipeline's results (the first `size`); a full queue or a
        lost script is retried on the async path, which reports to the caller if it must."""
        fwd = self.forwarder
        retry: list[str] = []
        pos = 0
        for kind, _, _, _, succ in self.ops:
            if kind == "enqueue":
                res = results[pos]
                pos += 1
                if isinstance(res, Exception) or res == -1:
                    if isinstance(res, Exception):
                        fwd._enqueue_sha = None  # e.g. NOSCRIPT after a Redis restart
                    retry.append(succ)
            else:
                if any(isinstance(r, Exception) for r in results[pos : pos + 3]):
                    retry.append("")
                pos += 3
        if self.ops:
            fwd.sync_routed += 1
        if retry:
            fwd._on_loop(fwd._retry(self.route, self.packet, retry))
