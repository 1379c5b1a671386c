"""The executor's engine: choose an instance, enqueue, await the reply; keep the live instance
set current; move work off dead instances; push parameter updates.

Hot path per request: one policy call (in-process), one Redis round trip to enqueue (a Lua
script that also enforces the queue bound), then an await on a future that the process's
single reply reader resolves. Everything else (instance discovery, queue-length snapshots,
requeue sweeps, stats) runs in one background watcher every `watch_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError, WatchError

from block_sdk import resp
from block_sdk.executor.config import ExecutorConfig
from block_sdk.executor.lb_policies import NoInstanceAvailable, chosen_instance, load_policy
from block_sdk.metrics import LATENCY_BUCKETS, AIOSMetrics
from block_sdk.packet import (
    ABORTED,
    DEADLINE_EXCEEDED,
    INTERNAL,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    DataPlaneError,
)
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.queues import (
    BlockKeys,
    EnqueueBatcher,
    QueueEnvelope,
    QueueFull,
    QueueReply,
    ReplyDemux,
    RequestQueues,
    connect,
)

log = logging.getLogger("block_sdk.executor")

STATS_TTL_FACTOR = 6  # stats key lives this many watch intervals


@dataclass(slots=True)
class InstanceState:
    instance_id: str
    alive: bool = False
    registered: bool = False
    info: dict[str, Any] = field(default_factory=dict)  # from the registry hash
    heartbeat: dict[str, Any] = field(default_factory=dict)  # last heartbeat document
    waiting: int = 0
    processing: int = 0
    dispatched: int = 0
    completed: int = 0
    failed: int = 0
    requeued_from: int = 0

    def to_dict(self, inflight: int) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "alive": self.alive,
            "registered": self.registered,
            "info": self.info,
            "heartbeat": self.heartbeat,
            "queue_length": self.waiting,
            "processing": self.processing,
            "inflight": inflight,
            "dispatched": self.dispatched,
            "completed": self.completed,
            "failed": self.failed,
            "requeued_from": self.requeued_from,
        }


class Executor:
    """One block's executor. `start()` / `stop()` bracket its life on the running loop."""

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.block_id = config.block_id
        self.keys = BlockKeys(config.block_id)
        self.reply_key = self.keys.reply(config.executor_id)
        self.metrics = AIOSMetrics(
            config.block_id, config.executor_id, const_labels={"block_id": config.block_id}
        )
        self._init_metrics()
        self.policy = load_policy(config.lb_policy, config.lb_settings, config.lb_parameters)
        self.policy_name = config.lb_policy
        self.instances: dict[str, InstanceState] = {}
        self.inflight: dict[str, int] = {}
        self._owner: dict[str, str] = {}
        self._live_list: list[str] = []
        # Shared, updated in place by the watcher, read by the policy on every request.
        self.lb_context: dict[str, Any] = {
            "block_id": self.block_id,
            "instances": self._live_list,
            "alive": frozenset(),
            "inflight": self.inflight,
            "queue_lengths": {},
        }
        self._ids = itertools.count(1)
        self._rid_prefix = f"{config.executor_id}-{int(time.time() * 1000):x}-"
        self.requests_total = 0
        self.errors_total = 0
        self._latency_ewma = 0.0
        self._watch_task: asyncio.Task | None = None
        self.started_at = time.time()
        self.redis_ok = False

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        self.redis = connect(
            cfg.redis_url, max_connections=512, socket_timeout=cfg.reply_block_s + 10
        )
        # The two hot-path commands (enqueue script, reply pop) on lean connections of their
        # own: about half the CPU per command of redis-py's asyncio client (docs/benchmarks.md).
        lean = cfg.lean_redis and resp.supports(cfg.redis_url)
        self.queues = RequestQueues(
            self.redis,
            self.keys,
            lean=resp.RespConnection(cfg.redis_url) if lean else None,
            lean_timeout_s=cfg.reply_block_s + 10,
        )
        self.batcher = EnqueueBatcher(self.queues, cfg.max_queue_length)
        self.demux = ReplyDemux(
            self.redis,
            self.reply_key,
            cfg.reply_block_s,
            on_orphan=self._on_orphan,
            lean=resp.RespConnection(cfg.redis_url) if lean else None,
        )
        self.demux.start()
        await self.refresh()  # live instances first: recovered work needs somewhere to go
        await self._recover_sweep_list()
        self._watch_task = asyncio.create_task(self._watch_loop(), name="executor-watch")

    async def stop(self) -> None:
        if self._watch_task:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        await self.demux.stop()
        if self.queues.lean is not None:
            await self.queues.lean.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(self.keys.executor_stats(self.config.executor_id))
        await self.redis.aclose()

    def _init_metrics(self) -> None:
        m = self.metrics
        m.register_counter(
            "aios_executor_tasks_processed_total", "Requests answered", ["method", "code"]
        )
        m.register_histogram(
            "aios_executor_latency_seconds",
            "End-to-end request latency inside the executor",
            ["method"],
            buckets=LATENCY_BUCKETS,
        )
        m.register_counter(
            "aios_executor_instance_requests_total", "Requests placed per instance", ["instance_id"]
        )
        m.register_gauge("aios_executor_instance_inflight", "Awaited requests", ["instance_id"])
        m.register_gauge("aios_executor_queue_length", "Waiting requests", ["instance_id"])
        m.register_gauge("aios_executor_processing", "Requests being processed", ["instance_id"])
        m.register_gauge("aios_executor_instances_alive", "Live instances")
        m.register_counter("aios_executor_requeued_total", "Requests moved off a dead instance")
        m.register_counter("aios_executor_failed_back_total", "Requests failed back", ["code"])
        m.register_gauge("aios_executor_pending", "Requests awaiting a reply")
        m.register_histogram(
            "aios_executor_queue_wait_seconds",
            "Time a request waited in an instance queue before being taken",
            buckets=LATENCY_BUCKETS,
        )
        m.register_histogram(
            "aios_executor_block_seconds",
            "Time instances spent in block code per request",
            buckets=LATENCY_BUCKETS,
        )

    # -- hot path ------------------------------------------------------------------------
    def _choose(self, session_id: str, seq_no: int) -> str:
        try:
            result = self.policy.eval(
                self.config.lb_parameters,
                {"session_id": session_id, "seq_no": seq_no, "block_id": self.block_id},
                self.lb_context,
            )
            iid = chosen_instance(result)
        except NoInstanceAvailable:
            raise DataPlaneError(
                UNAVAILABLE, f"no live instance of block {self.block_id}", block_id=self.block_id
            ) from None
        except DataPlaneError:
            raise
        except Exception as exc:
            log.exception("load-balancer policy failed")
            raise DataPlaneError(INTERNAL, f"load-balancer policy failed: {exc}") from exc
        if iid not in self.lb_context["alive"]:
            raise DataPlaneError(INTERNAL, f"load-balancer chose unknown instance {iid!r}")
        return iid

    async def _place(self, env: QueueEnvelope, iid: str) -> str:
        """Enqueue on `iid`; when its queue is full, on the least-loaded other one."""
        try:
            if await self.batcher.enqueue(iid, env.SerializeToString()):
                return iid
        except (RedisError, OSError) as exc:
            raise DataPlaneError(UNAVAILABLE, f"redis unavailable: {exc}") from exc
        others = sorted(
            (i for i in self._live_list if i != iid), key=lambda i: self.inflight.get(i, 0)
        )
        for other in others:
            env.instance_id = other
            try:
                await self.queues.enqueue(
                    other, env.SerializeToString(), self.config.max_queue_length
                )
                return other
            except QueueFull:
                continue
            except (RedisError, OSError) as exc:
                raise DataPlaneError(UNAVAILABLE, f"redis unavailable: {exc}") from exc
        raise DataPlaneError(
            RESOURCE_EXHAUSTED,
            f"all instance queues of block {self.block_id} are full "
            f"({self.config.max_queue_length} waiting each)",
            block_id=self.block_id,
        )

    async def submit(
        self,
        packet: pb.AIOSPacket,
        *,
        timeout_s: float | None,
        want_reply: bool,
        frame_ptr: bytes = b"",
        query_parameters: str = "",
        method: str = "infer",
    ) -> pb.AIOSPacket | None:
        """Place one packet on an instance; with `want_reply`, await and return its answer.
        Raises DataPlaneError with the gRPC code the caller must see."""
        t0 = time.perf_counter()
        code = "OK"
        try:
            result = await self._submit(packet, timeout_s, want_reply, frame_ptr, query_parameters)
            return result
        except DataPlaneError as exc:
            code = exc.code
            raise
        finally:
            elapsed = time.perf_counter() - t0
            self.requests_total += 1
            if code != "OK":
                self.errors_total += 1
            self._latency_ewma = 0.9 * self._latency_ewma + 0.1 * elapsed
            m = self.metrics
            m.increment_counter(
                "aios_executor_tasks_processed_total", 1, {"method": method, "code": code}
            )
            m.observe_histogram("aios_executor_latency_seconds", elapsed, {"method": method})

    async def _submit(
        self,
        packet: pb.AIOSPacket,
        timeout_s: float | None,
        want_reply: bool,
        frame_ptr: bytes,
        query_parameters: str,
    ) -> pb.AIOSPacket | None:
        cfg = self.config
        if want_reply and len(self.demux) >= cfg.max_pending:
            raise DataPlaneError(
                RESOURCE_EXHAUSTED, f"executor has {cfg.max_pending} requests in flight"
            )
        iid = self._choose(packet.session_id, packet.seq_no)
        rid = f"{self._rid_prefix}{next(self._ids)}"
        now = time.time()
        deadline = now + timeout_s if timeout_s else 0.0
        env = QueueEnvelope(
            request_id=rid,
            packet=packet,
            reply_to=self.reply_key if want_reply else "",
            deadline=deadline,
            block_id=self.block_id,
            enqueued_at=now,
            frame_ptr=frame_ptr,
            query_parameters=query_parameters,
            instance_id=iid,
        )
        fut = self.demux.register(rid) if want_reply else None
        try:
            iid = await self._place(env, iid)
        except BaseException:
            if fut is not None:
                self.demux.discard(rid)
            raise
        state = self.instances.get(iid)
        if state is not None:
            state.dispatched += 1
        self.metrics.increment_counter(
            "aios_executor_instance_requests_total", 1, {"instance_id": iid}
        )
        if fut is None:
            return None

        self.inflight[iid] = self.inflight.get(iid, 0) + 1
        self._owner[rid] = iid
        try:
            async with asyncio.timeout(timeout_s):
                reply: QueueReply = await fut
        except TimeoutError:
            raise DataPlaneError(
                DEADLINE_EXCEEDED,
                f"no answer from block {self.block_id} within {timeout_s:.3f}s",
                block_id=self.block_id,
                instance_id=self._owner.get(rid, iid),
            ) from None
        finally:
            self.demux.discard(rid)
            owner = self._owner.pop(rid, iid)
            left = self.inflight.get(owner, 1) - 1
            self.inflight[owner] = left if left > 0 else 0
        state = self.instances.get(reply.instance_id or owner)
        if reply.taken_at:
            m = self.metrics
            m.observe_histogram("aios_executor_queue_wait_seconds", max(0.0, reply.taken_at - now))
            m.observe_histogram("aios_executor_block_seconds", reply.processing_s)
        if reply.ok:
            if state is not None:
                state.completed += 1
            return reply.packet
        if state is not None:
            state.failed += 1
        raise DataPlaneError.from_json(reply.error_code or INTERNAL, reply.error_message)

    def _on_orphan(self, reply: QueueReply) -> None:
        log.debug("late or duplicate reply dropped", extra={"request_id": reply.request_id})

    # -- instance set ----------------------------------------------------------------------
    async def refresh(self) -> None:
        """Re-read the registry, heartbeats and queue lengths; sweep dead instances."""
        registry_raw = await self.redis.hgetall(self.keys.instances)
        registry: dict[str, dict[str, Any]] = {}
        for k, v in registry_raw.items():
            try:
                info = json.loads(v) if v else {}
            except ValueError:
                info = {"raw": v.decode(errors="replace")}
            registry[k.decode()] = info if isinstance(info, dict) else {"value": info}
        wanted = set(registry) | set(self.config.instances) | set(self.instances)
        ids = sorted(wanted)
        pipe = self.redis.pipeline(transaction=False)
        for iid in ids:
            pipe.get(self.keys.heartbeat(iid))
            pipe.llen(self.keys.queue(iid))
            pipe.llen(self.keys.processing(iid))
        res = await pipe.execute() if ids else []
        live: list[str] = []
        dead_with_work: list[str] = []
        for n, iid in enumerate(ids):
            hb, waiting, processing = res[3 * n], int(res[3 * n + 1]), int(res[3 * n + 2])
            state = self.instances.get(iid)
            if state is None:
                state = self.instances[iid] = InstanceState(iid)
            state.registered = iid in registry or iid in self.config.instances
            state.info = registry.get(iid, {})
            state.waiting, state.processing = waiting, processing
            if hb is not None:
                try:
                    state.heartbeat = json.loads(hb)
                except ValueError:
                    state.heartbeat = {}
            was_alive = state.alive
            # Live = registered (by the control plane or config) and heartbeating.
            state.alive = hb is not None and state.registered
            if state.alive:
                live.append(iid)
                if not was_alive:
                    log.info("instance joined", extra={"instance_id": iid})
            else:
                if was_alive:
                    log.warning(
                        "instance left",
                        extra={"instance_id": iid, "heartbeat": hb is not None},
                    )
                if hb is None and (waiting or processing):
                    dead_with_work.append(iid)
                elif hb is None and not state.registered and not self.inflight.get(iid):
                    # Gone for good and nothing left to recover: forget it.
                    del self.instances[iid]
        # Swap contents in place: the policy holds references to these objects.
        self._live_list[:] = live
        self.lb_context["alive"] = frozenset(live)
        self.lb_context["queue_lengths"] = {
            iid: self.instances[iid].waiting + self.instances[iid].processing for iid in live
        }
        self.redis_ok = True
        for iid in dead_with_work:
            await self.sweep_instance(iid)
        self._publish_gauges()

    def _publish_gauges(self) -> None:
        m = self.metrics
        m.set_gauge("aios_executor_instances_alive", len(self._live_list))
        m.set_gauge("aios_executor_pending", len(self.demux))
        for iid, st in self.instances.items():
            labels = {"instance_id": iid}
            m.set_gauge("aios_executor_queue_length", st.waiting, labels)
            m.set_gauge("aios_executor_processing", st.processing, labels)
            m.set_gauge("aios_executor_instance_inflight", self.inflight.get(iid, 0), labels)

    async def _watch_loop(self) -> None:
        interval = self.config.watch_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
                await self._write_stats()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.redis_ok = False
                log.warning("instance watch failed", extra={"error": str(exc)})
            except Exception:
                log.exception("instance watch crashed; continuing")

    async def _write_stats(self) -> None:
        doc = self.stats()
        ttl_ms = int(self.config.watch_interval_s * STATS_TTL_FACTOR * 1000)
        await self.redis.set(
            self.keys.executor_stats(self.config.executor_id), json.dumps(doc), px=ttl_ms
        )

    def stats(self) -> dict[str, Any]:
        """Snapshot for the autoscaler/health checker (also written to Redis)."""
        return {
            "ts": time.time(),
            "block_id": self.block_id,
            "executor_id": self.config.executor_id,
            "alive": list(self._live_list),
            "inflight": dict(self.inflight),
            "queue_lengths": {i: s.waiting for i, s in self.instances.items()},
            "processing": {i: s.processing for i, s in self.instances.items()},
            "requests_total": self.requests_total,
            "errors_total": self.errors_total,
            "latency_ewma_s": self._latency_ewma,
            "pending": len(self.demux),
        }

    # -- recovery ------------------------------------------------------------------------
    async def sweep_instance(self, dead: str) -> tuple[int, int]:
        """Move a dead instance's unfinished requests to live ones, or fail them back."""
        requeued = failed = 0
        for source, started in (
            (self.keys.processing(dead), True),
            (self.keys.queue(dead), False),
        ):
            for _ in range(100_000):  # bounded by the queue bound in practice
                item = await self.queues.claim_for_sweep(source)
                if item is None:
                    break
                ok = await self._requeue(item, dead, started)
                requeued += ok
                failed += not ok
                await self.queues.finish_sweep(item)
        if requeued or failed:
            state = self.instances.get(dead)
            if state is not None:
                state.requeued_from += requeued
            log.warning(
                "moved work off dead instance",
                extra={"instance_id": dead, "requeued": requeued, "failed": failed},
            )
        return requeued, failed

    async def _requeue(self, item: bytes, dead: str, started: bool) -> bool:
        try:
            env = QueueEnvelope.FromString(item)
        except Exception:
            log.error("undecodable envelope dropped during sweep", extra={"instance_id": dead})
            return False
        if started:
            env.attempt += 1
        if env.deadline and time.time() > env.deadline:
            await self._fail_back(env, DEADLINE_EXCEEDED, "request expired while its instance died")
            return False
        if env.attempt >= self.config.max_attempts:
            await self._fail_back(
                env,
                UNAVAILABLE,
                f"instance {dead} died while processing the request "
                f"(attempt {env.attempt} of {self.config.max_attempts})",
                instance_id=dead,
            )
            return False
        try:
            target = self._choose(env.packet.session_id, env.packet.seq_no)
            env.instance_id = target
            target = await self._place(env, target)
        except DataPlaneError as exc:
            await self._fail_back(env, exc.code, exc.message)
            return False
        # Keep this executor's accounting right when the request is one of its own.
        if env.request_id in self._owner:
            old = self._owner[env.request_id]
            self.inflight[old] = max(0, self.inflight.get(old, 1) - 1)
            self.inflight[target] = self.inflight.get(target, 0) + 1
            self._owner[env.request_id] = target
        self.metrics.increment_counter("aios_executor_requeued_total")
        return True

    async def _fail_back(self, env: QueueEnvelope, code: str, message: str, **details) -> None:
        self.metrics.increment_counter("aios_executor_failed_back_total", 1, {"code": code})
        await self.queues.fail_back(env, code, message, block_id=self.block_id, **details)

    async def _recover_sweep_list(self) -> None:
        """Requests a crashed sweeper left in the sweep list get handled now."""
        items = await self.redis.lrange(self.keys.sweep, 0, 10_000)
        for item in items:
            await self._requeue(item, "unknown", started=True)
            await self.queues.finish_sweep(item)

    # -- control -------------------------------------------------------------------------
    def set_policy(self, name: str, parameters: dict | None, settings: dict | None) -> None:
        policy = load_policy(name, settings, parameters)
        self.policy, self.policy_name = policy, name
        self.config.lb_policy = name
        self.config.lb_parameters = dict(parameters or {})
        self.config.lb_settings = dict(settings or {})
        log.info("load-balancer policy set", extra={"policy": name})

    def mapping(self) -> dict[str, Any]:
        sessions = getattr(self.policy, "sessions", None)
        return {
            "block_id": self.block_id,
            "executor_id": self.config.executor_id,
            "lb_policy": self.policy_name,
            "lb_parameters": self.config.lb_parameters,
            "instances": list(self._live_list),
            "sessions": sessions.snapshot() if sessions is not None else {},
        }

    def list_instances(self) -> list[dict[str, Any]]:
        """The block's instances; one deregistered with nothing left to recover is not listed
        even while its last heartbeat has not expired yet (it is forgotten at expiry)."""
        return [
            st.to_dict(self.inflight.get(iid, 0))
            for iid, st in sorted(self.instances.items())
            if st.registered or st.alive or self.inflight.get(iid) or st.waiting or st.processing
        ]

    async def push_parameters(
        self, params: dict[str, Any], wait_s: float | None = None
    ) -> dict[str, Any]:
        """Store the update (merged into the block's cumulative parameters), announce it,
        and wait (bounded) for every live instance to acknowledge it."""
        key = self.keys.params
        for _ in range(20):  # optimistic concurrency against other executors
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    current = await pipe.hget(key, "parameters")
                    merged = json.loads(current) if current else {}
                    merged.update(params)
                    pipe.multi()
                    pipe.hset(
                        key,
                        mapping={
                            "parameters": json.dumps(merged),
                            "last_update": json.dumps(params),
                        },
                    )
                    pipe.hincrby(key, "version", 1)
                    res = await pipe.execute()
                    version = int(res[-1])
                    break
                except WatchError:
                    continue
        else:
            raise DataPlaneError(ABORTED, "parameter update raced too many times")
        await self.redis.publish(self.keys.params_channel, str(version))
        expected = set(self._live_list)
        acks: dict[str, Any] = {}
        wait = self.config.params_ack_timeout_s if wait_s is None else wait_s
        deadline = time.monotonic() + wait
        while expected and time.monotonic() < deadline:
            raw = await self.redis.hgetall(self.keys.params_ack)
            for k, v in raw.items():
                iid = k.decode()
                try:
                    ack = json.loads(v)
                except ValueError:
                    continue
                if iid in expected and int(ack.get("version", 0)) >= version:
                    acks[iid] = ack
            if expected <= set(acks):
                break
            await asyncio.sleep(0.05)
        return {
            "version": version,
            "parameters": params,
            "acks": acks,
            "missing": sorted(expected - set(acks)),
        }
