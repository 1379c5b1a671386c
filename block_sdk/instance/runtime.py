"""The instance process: `Block(MyClass).run()`.

One asyncio loop owns all I/O: `concurrency` consumer tasks take requests off the instance's
Redis queue (BLMOVE into its processing list), run block code in worker threads, and answer
plus acknowledge in one pipeline. Beside them: a heartbeat task (liveness for the executor),
a parameter-update listener (pub/sub, with a version check on every heartbeat so a missed
message is caught up), a muxer janitor, and an HTTP server (`/health`, `/mgmt`, `/metrics`,
`/setParameters`). Block code never runs on the loop, so a slow model cannot stop heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis as sync_redis
from aiohttp import web
from redis.exceptions import RedisError

from block_sdk import resp
from block_sdk.instance.config import InstanceConfig
from block_sdk.instance.context import Context
from block_sdk.instance.pipeline import BlockPipeline, output_packet
from block_sdk.metrics import LATENCY_BUCKETS, PROMETHEUS_CONTENT_TYPE, configure_logging
from block_sdk.packet import (
    DEADLINE_EXCEEDED,
    INTERNAL,
    INVALID_ARGUMENT,
    DataPlaneError,
    Packet,
)
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.queues import (
    ACK_AND_TAKE_LUA,
    BlockKeys,
    QueueEnvelope,
    QueueReply,
    RequestQueues,
    ack_and_take_call,
    ack_then_take,
    ack_then_take_lean,
    connect,
    stage_completion,
    stage_prefetch,
)
from block_sdk.routing import DefaultForwarder, Router

log = logging.getLogger("block_sdk.instance")

PARAMS_ACK_TTL_S = 3600

# Remove our heartbeat/registration only if they are still ours: a restarted instance with
# the same id may already have written its own.
_RETIRE_LUA = """
local hb = redis.call('GET', KEYS[1])
if hb and string.find(hb, ARGV[1], 1, true) then redis.call('DEL', KEYS[1]) end
if ARGV[3] == '1' then
  local reg = redis.call('HGET', KEYS[2], ARGV[2])
  if reg and string.find(reg, ARGV[1], 1, true) then redis.call('HDEL', KEYS[2], ARGV[2]) end
end
return 1
"""


@dataclass(slots=True)
class _Work:
    """Outcome of one taken request (or one muxed group of them)."""

    group: list[tuple[QueueEnvelope | None, bytes]]  # env None: undecodable, ack only
    result: pb.AIOSPacket | None
    error: DataPlaneError | None
    elapsed: float = 0.0
    taken_at: float = 0.0


class Block:
    """Runs a block class as an instance process.

    `Block(MyClass).run()` reads its configuration from the environment (see
    `InstanceConfig.from_env`); pass `config=` or keyword overrides to set it in code.
    """

    def __init__(
        self,
        block_cls: type,
        config: InstanceConfig | None = None,
        **overrides: Any,
    ) -> None:
        self.block_cls = block_cls
        self.config = config or InstanceConfig.from_env(**overrides)
        self.keys = BlockKeys(self.config.block_id)
        self.context: Context | None = None
        self.pipeline: BlockPipeline | None = None
        self.http_port: int | None = None
        self._stopping: asyncio.Event | None = None  # created on the serving loop
        self._applied_version = 0
        self._inflight = 0
        self._processed = 0
        self._errors = 0
        self._started_at = time.time()
        self._incarnation = uuid.uuid4().hex
        self._mux_waiting: dict[tuple[str, int], list[tuple[QueueEnvelope | None, bytes]]] = {}
        self._lock = threading.Lock()  # counters and muxer state are shared by consumers
        # With one consumer, block code is never entered twice at once: on_update waits for
        # the on_data in progress (block classes written for concurrency 1 need not lock).
        self._block_lock = threading.Lock()
        self._thread_stop = threading.Event()

    # -- entry points --------------------------------------------------------------------
    def run(self) -> None:
        """Blocking: serve until SIGTERM/SIGINT."""
        ring = configure_logging(
            {"block_id": self.config.block_id, "instance_id": self.config.instance_id},
            self.config.log_level,
        )
        self._log_ring = ring
        try:
            import uvloop  # type: ignore[import-not-found]

            uvloop.install()
        except ImportError:  # optional speed-up only
            pass
        try:
            asyncio.run(self.serve())
        except Exception:
            log.exception("instance failed", extra={"block_class": self.block_cls.__name__})
            raise SystemExit(1) from None

    async def serve(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stopping.set)

        self._data_pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="block-data")
        self._ctl_pool = ThreadPoolExecutor(2, thread_name_prefix="block-ctl")
        # Construct the block (model loading may be slow) before advertising liveness.
        self.context = Context.from_config(cfg)
        self.pipeline = await loop.run_in_executor(
            self._data_pool, BlockPipeline, self.block_cls, self.context
        )
        self._init_metrics()

        self.redis = connect(
            cfg.redis_url,
            max_connections=cfg.concurrency + 8,
            socket_timeout=cfg.take_timeout_s + 10,  # above the blocking take
        )
        self.queues = RequestQueues(self.redis, self.keys)
        self.router = Router(
            cfg.block_id,
            DefaultForwarder(self.redis),
            redis_url=cfg.redis_url,
            cluster_id=os.environ.get("AIOS_CLUSTER_ID")
            or str(cfg.allocation_info.get("cluster_id") or ""),
            instance_id=cfg.instance_id,
        )

        requeued, failed = await self.queues.recover_own(cfg.instance_id, cfg.max_attempts)
        if requeued or failed:
            log.warning(
                "recovered unacknowledged work", extra={"requeued": requeued, "failed": failed}
            )

        runner = await self._start_http()
        await self._apply_params_if_newer()
        await self._heartbeat_once()

        threads: list[threading.Thread] = []
        tasks: list[asyncio.Task] = []
        if cfg.io_mode == "asyncio":
            tasks = [
                asyncio.create_task(self._consume(i), name=f"consumer-{i}")
                for i in range(cfg.concurrency)
            ]
        else:
            for i in range(cfg.concurrency):
                t = threading.Thread(
                    target=self._consume_thread, args=(i, loop), name=f"consumer-{i}", daemon=True
                )
                t.start()
                threads.append(t)
        aux = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._params_listener(), name="params"),
        ]
        if self.pipeline.muxer is not None:
            aux.append(asyncio.create_task(self._mux_janitor(), name="mux-janitor"))
        log.info(
            "instance ready",
            extra={"http_port": self.http_port, "concurrency": cfg.concurrency, "pid": os.getpid()},
        )

        await self._stopping.wait()
        log.info("instance stopping")
        # Consumers finish the request in hand; an idle one returns within take_timeout_s.
        grace = cfg.take_timeout_s + cfg.shutdown_grace_s
        self._thread_stop.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
        if threads:
            deadline = time.monotonic() + grace
            for t in threads:
                await asyncio.to_thread(t.join, max(0.0, deadline - time.monotonic()))
        for t in aux:
            t.cancel()
        await asyncio.gather(*tasks, *aux, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            # Dropping the heartbeat makes executors move anything still queued here.
            await self.redis.eval(
                _RETIRE_LUA,
                2,
                self.keys.heartbeat(cfg.instance_id),
                self.keys.instances,
                self._incarnation,
                cfg.instance_id,
                "1" if cfg.register_self else "0",
            )
        await runner.cleanup()
        with contextlib.suppress(Exception):
            await self.router.close()
        await self.redis.aclose()
        self._data_pool.shutdown(wait=False, cancel_futures=True)
        self._ctl_pool.shutdown(wait=False, cancel_futures=True)
        log.info("instance stopped")

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    # -- metrics -------------------------------------------------------------------------
    def _init_metrics(self) -> None:
        m = self.context.metrics
        m.register_counter("aios_instance_requests_total", "Requests finished", ["status"])
        m.register_histogram(
            "aios_instance_processing_seconds",
            "Time in block code per request",
            buckets=LATENCY_BUCKETS,
        )
        m.register_gauge("aios_instance_inflight", "Requests being processed")
        m.register_gauge("aios_instance_queue_length", "Requests waiting in this instance's queue")
        m.register_counter("aios_instance_param_updates_total", "Parameter updates applied")

    # -- the hot path --------------------------------------------------------------------
    # Two ways to drive it, sharing `_execute` / `_settle`:
    #  * "thread" (default): each consumer is a thread doing blocking BLMOVE -> block code ->
    #    reply+ack pipeline with a synchronous Redis client. No cross-thread hand-off per
    #    request; measured ~0.2 ms/request faster than the asyncio variant (docs/blocks-sdk.md).
    #  * "asyncio": consumer tasks on the loop take/ack with redis.asyncio and run block code
    #    in the worker pool.
    # Either way block code never runs on the loop, so heartbeats and /health stay responsive.
    def _execute(self, item: bytes) -> _Work | None:
        """Decode, check the deadline, mux, run block code. None: held by the muxer."""
        cfg = self.config
        taken_at = time.time()
        try:
            env = QueueEnvelope.FromString(item)
        except Exception:
            log.error("undecodable envelope dropped")
            return _Work([(None, item)], None, None)
        if env.deadline and time.time() > env.deadline:
            # The caller has given up; do not spend model time on it.
            err = DataPlaneError(DEADLINE_EXCEEDED, "request expired in the queue")
            return _Work([(env, item)], None, err)
        packet = Packet.from_proto(
            env.packet,
            frame_ptr=env.frame_ptr,
            query_parameters=env.query_parameters,
            block_id=env.block_id or cfg.block_id,
            request_id=env.request_id,
        )
        if packet.output_ptr:
            # vDAG routes: fan-in across instances and the node's pre-processing policy
            # (block_sdk.routing / block_sdk.vdag.forwarder). None: the router consumed it.
            try:
                packet = self.router.prepare(packet, block_muxes=self.pipeline.muxer is not None)
            except DataPlaneError as exc:
                return _Work([(env, item)], None, exc, 0.0, taken_at)
            if packet is None:
                return _Work([(env, item)], None, None, 0.0, taken_at)
        group: list[tuple[QueueEnvelope | None, bytes]] = [(env, item)]
        muxer = self.pipeline.muxer
        if muxer is not None:
            key = muxer.key_of(packet)
            with self._lock:
                self._mux_waiting.setdefault(key, []).append((env, item))
                merged = muxer.process_packet(packet)
                if merged is None:
                    return None  # stays unacknowledged until its group completes or expires
                group = self._mux_waiting.pop(key, group)
            packet = merged
        with self._lock:
            self._inflight += 1
        t0 = time.perf_counter()
        serial = self.config.concurrency == 1
        try:
            if serial:
                self._block_lock.acquire()
            outputs = self.pipeline.process(packet)
            result, error = output_packet(packet, outputs), None
        except DataPlaneError as exc:
            result, error = None, exc
        except Exception as exc:  # defensive: the pipeline wraps block errors already
            result, error = None, DataPlaneError(INTERNAL, f"{type(exc).__name__}: {exc}")
        finally:
            if serial:
                self._block_lock.release()
            with self._lock:
                self._inflight -= 1
        elapsed = time.perf_counter() - t0
        self.context.metrics.observe_histogram("aios_instance_processing_seconds", elapsed)
        return _Work(group, result, error, elapsed, taken_at)

    def _settle(self, work: _Work) -> tuple[list[tuple[str, bytes, bytes | None]], list]:
        """Account the outcome; return (reply_to, envelope bytes, reply) per acknowledgement
        and the fire-and-forward envelopes whose result goes to the output_ptr route."""
        cfg = self.config
        error = work.error
        real = [(env, item) for env, item in work.group if env is not None]
        if error is not None:
            log.info(
                "request failed",
                extra={"code": error.code, "reason": error.message[:300], "n": len(real)},
            )
            error.details.setdefault("block_id", cfg.block_id)
            error.details.setdefault("instance_id", cfg.instance_id)
        if real:
            with self._lock:
                if error is None:
                    self._processed += len(real)
                else:
                    self._errors += len(real)
            self.context.metrics.increment_counter(
                "aios_instance_requests_total",
                len(real),
                {"status": "ok" if error is None else error.code},
            )
        acks: list[tuple[str, bytes, bytes | None]] = []
        routes: list[QueueEnvelope] = []
        for env, item in work.group:
            if env is None:
                acks.append(("", item, None))
                continue
            if not env.reply_to:
                routes.append(env)
                acks.append(("", item, None))
                continue
            if error is None:
                reply = QueueReply(
                    request_id=env.request_id,
                    ok=True,
                    packet=work.result,
                    instance_id=cfg.instance_id,
                    processing_s=work.elapsed,
                    taken_at=work.taken_at,
                )
            else:
                reply = QueueReply(
                    request_id=env.request_id,
                    ok=False,
                    error_code=error.code,
                    error_message=error.to_json(),
                    instance_id=cfg.instance_id,
                    processing_s=work.elapsed,
                    taken_at=work.taken_at,
                )
            acks.append((env.reply_to, item, reply.SerializeToString()))
        return acks, routes

    async def _route_all(self, routes: list[QueueEnvelope], work: _Work) -> None:
        """Fire-and-forward requests finished: hand results to their output_ptr route."""
        for env in routes:
            try:
                if work.error is None:
                    routed = await self.router.route_output(work.result)
                else:
                    routed = await self.router.route_error(env.packet, work.error.to_json())
                if not routed:
                    log.debug("result without route dropped", extra={"request_id": env.request_id})
            except Exception as exc:
                log.warning(
                    "routing failed", extra={"request_id": env.request_id, "error": str(exc)}
                )

    async def _complete_async(self, work: _Work | None, prefetch: bool = False) -> bytes | None:
        """Reply + acknowledge; with `prefetch`, also take the next waiting request in the
        same round trip (returned, already in the processing list)."""
        pipe = self.redis.pipeline(transaction=False)
        if work is not None:
            acks, routes = self._settle(work)
            if routes:
                await self._route_all(routes, work)
            stage_completion(pipe, self.keys.processing(self.config.instance_id), acks)
        if prefetch:
            stage_prefetch(pipe, self.keys, self.config.instance_id)
        if not len(pipe):
            return None
        res = await pipe.execute()
        return res[-1] if prefetch else None

    async def _consume(self, worker: int) -> None:
        """asyncio consumer (AIOS_INSTANCE_IO=asyncio)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        backoff = 0.05
        item: bytes | None = None
        while not self._stopping.is_set() or item is not None:
            try:
                if item is None:
                    item = await self.queues.take(cfg.instance_id, cfg.take_timeout_s)
                    if item is None:
                        continue
                backoff = 0.05
                work = await loop.run_in_executor(self._data_pool, self._execute, item)
                item = None
                item = await self._complete_async(work, prefetch=not self._stopping.is_set())
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # Unacknowledged work stays in the processing list; restart/sweep recovers it.
                log.warning("redis error in consumer", extra={"worker": worker, "error": str(exc)})
                item = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            except Exception:
                log.exception("request handling failed", extra={"worker": worker})
                item = None

    def _consume_thread(self, worker: int, loop: asyncio.AbstractEventLoop) -> None:
        """Thread consumer (default): blocking take -> run -> reply+ack, sync Redis. Under
        load the ack of one request and the take of the next share one round trip."""
        cfg = self.config
        client = sync_redis.Redis.from_url(
            cfg.redis_url, socket_timeout=cfg.take_timeout_s + 10, socket_connect_timeout=5
        )
        queue, processing = self.keys.queue(cfg.instance_id), self.keys.processing(cfg.instance_id)
        ack_and_take = client.register_script(ACK_AND_TAKE_LUA)
        lean = self._lean_connection()
        backoff = 0.05
        item: bytes | None = None
        try:
            while not self._thread_stop.is_set() or item is not None:
                try:
                    if item is None:
                        item = client.blmove(queue, processing, cfg.take_timeout_s, "RIGHT", "LEFT")
                        if item is None:
                            continue
                    backoff = 0.05
                    work = self._execute(item)
                    item = None
                    prefetch = not self._thread_stop.is_set()
                    acks: list[tuple[str, bytes, bytes | None]] = []
                    staged = None  # vDAG routing commands riding on the ack's round trip
                    if work is not None:
                        acks, routes = self._settle(work)
                        if routes:
                            staged = self.router.stage_sync(routes, work.result, work.error, client)
                            if staged is None:
                                # Routing uses the loop's async clients; ack once it is done.
                                asyncio.run_coroutine_threadsafe(
                                    self._route_all(routes, work), loop
                                ).result(timeout=60)
                    if len(acks) == 1 and staged is None and prefetch:
                        # The common case: reply + ack + wait for the next, one round trip.
                        if lean is not None:
                            item = ack_then_take_lean(
                                lean, self.keys, cfg.instance_id, acks[0], cfg.take_timeout_s
                            )
                        else:
                            item = ack_then_take(
                                client, self.keys, cfg.instance_id, acks[0], cfg.take_timeout_s
                            )
                        continue
                    if len(acks) == 1 and staged is None:
                        keys, args = ack_and_take_call(self.keys, cfg.instance_id, acks[0], False)
                        ack_and_take(keys=keys, args=args)
                        continue
                    pipe = client.pipeline(transaction=False)
                    if staged is not None:
                        staged.stage(pipe)
                    stage_completion(pipe, processing, acks)
                    if prefetch:
                        stage_prefetch(pipe, self.keys, cfg.instance_id)
                    if len(pipe):
                        if staged is None:
                            res = pipe.execute()
                        else:
                            try:
                                res = pipe.execute(raise_on_error=False)
                            except BaseException:
                                staged.abandon()  # nothing sent: route on the loop instead
                                asyncio.run_coroutine_threadsafe(
                                    self._route_all(routes, work), loop
                                ).result(timeout=60)
                                raise
                            staged.settle(res)
                            if isinstance(res[-1], Exception):
                                raise res[-1]
                        item = res[-1] if prefetch else None
                except (RedisError, OSError) as exc:
                    log.warning(
                        "redis error in consumer", extra={"worker": worker, "error": str(exc)}
                    )
                    item = None
                    self._thread_stop.wait(backoff)
                    backoff = min(backoff * 2, 2.0)
                except Exception:
                    log.exception("request handling failed", extra={"worker": worker})
                    item = None
        finally:
            client.close()
            if lean is not None:
                lean.close()

    def _lean_connection(self) -> resp.SyncRespConnection | None:
        """The consumer thread's lean connection, if configured and the server honours
        `CLIENT REPLY SKIP`; None: acknowledge through redis-py pipelines."""
        cfg = self.config
        if not (cfg.lean_redis and resp.supports(cfg.redis_url)):
            return None
        conn = resp.SyncRespConnection(cfg.redis_url, socket_timeout_s=cfg.take_timeout_s + 10)
        try:
            if conn.reply_skip_works():
                return conn
            log.info("redis refuses CLIENT REPLY SKIP; acknowledging through redis-py")
        except (RedisError, OSError) as exc:
            log.warning("lean connection unavailable", extra={"error": str(exc)})
        conn.close()
        return None

    async def _mux_janitor(self) -> None:
        muxer = self.pipeline.muxer
        while True:
            await asyncio.sleep(min(1.0, max(0.05, muxer.timeout_s / 4)))
            for key, _packets in muxer.expire():
                with self._lock:
                    group = self._mux_waiting.pop(key, [])
                if group:
                    err = DataPlaneError(
                        DEADLINE_EXCEEDED,
                        f"muxer gave up waiting for {muxer.N} inputs of {key}",
                        received=len(group),
                    )
                    with contextlib.suppress(RedisError, OSError):
                        await self._complete_async(_Work(group, None, err))

    # -- liveness ------------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "instance_id": cfg.instance_id,
            "pid": os.getpid(),
            "host": os.environ.get("AIOS_INSTANCE_ADVERTISE_HOST") or socket.gethostname(),
            "http_port": self.http_port,
            "concurrency": cfg.concurrency,
            "started_at": self._started_at,
            "processed": self._processed,
            "errors": self._errors,
            "inflight": self._inflight,
            "params_version": self._applied_version,
            "incarnation": self._incarnation,
            "ts": time.time(),
        }

    async def _heartbeat_once(self) -> None:
        cfg = self.config
        info = json.dumps(self._info())
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self.keys.heartbeat(cfg.instance_id), info, px=int(cfg.heartbeat_ttl_s * 1000))
        pipe.llen(self.keys.queue(cfg.instance_id))
        pipe.hget(self.keys.params, "version")
        if cfg.register_self:
            # Re-asserted on every beat so a registration lost to a race heals itself.
            pipe.hset(self.keys.instances, cfg.instance_id, info)
        res = await pipe.execute()
        qlen, version = res[1], res[2]
        metrics = self.context.metrics
        metrics.set_gauge("aios_instance_queue_length", int(qlen))
        metrics.set_gauge("aios_instance_inflight", self._inflight)
        if version is not None and int(version) > self._applied_version:
            await self._apply_params_if_newer()

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self._heartbeat_once()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("heartbeat failed", extra={"error": str(exc)})

    # -- parameters ----------------------------------------------------------------------
    async def _params_listener(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.params_channel)
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None:
                        await self._apply_params_if_newer()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # The heartbeat's version check still catches updates while we reconnect.
                log.warning("parameter listener error", extra={"error": str(exc)})
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _apply_params_if_newer(self) -> None:
        raw = await self.redis.hgetall(self.keys.params)
        if not raw:
            return
        version = int(raw.get(b"version", b"0"))
        if version <= self._applied_version:
            return
        # One version behind: hand on_update just the delta (AIOS semantics); further
        # behind (missed updates, fresh start): the cumulative parameters.
        field = b"last_update" if version == self._applied_version + 1 else b"parameters"
        self._applied_version = version
        try:
            params = json.loads(raw.get(field) or raw.get(b"parameters") or b"{}")
        except ValueError:
            params = None
        if not isinstance(params, dict):
            ok, result = False, "parameters are not a JSON object"
        else:
            ok, result = await self.apply_parameters(params)
        ack = {"version": version, "ok": ok, "result": result, "ts": time.time()}
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.params_ack, self.config.instance_id, json.dumps(ack, default=str))
        pipe.expire(self.keys.params_ack, PARAMS_ACK_TTL_S)
        await pipe.execute()

    async def apply_parameters(self, params: dict[str, Any]) -> tuple[bool, Any]:
        loop = asyncio.get_running_loop()
        ok, result = await loop.run_in_executor(self._data_pool, self._update_locked, params)
        self.context.metrics.increment_counter("aios_instance_param_updates_total")
        log.info("parameters updated", extra={"ok": ok, "keys": sorted(params)})
        return ok, result

    def _update_locked(self, params: dict[str, Any]) -> tuple[bool, Any]:
        with self._block_lock:
            return self.pipeline.update(params)

    # -- HTTP ----------------------------------------------------------------------------
    async def _start_http(self) -> web.AppRunner:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get("/health", self._http_health)
        app.router.add_get("/metrics", self._http_metrics)
        app.router.add_post("/mgmt", self._http_mgmt)
        app.router.add_post("/setParameters", self._http_set_params)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        if self.config.http_port < 0:
            return runner
        site = web.TCPSite(runner, self.config.http_host, self.config.http_port)
        await site.start()
        sockets = site._server.sockets if site._server else []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.config.http_port
        return runner

    async def _call_ctl(self, fn, *args) -> Any:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(
            loop.run_in_executor(self._ctl_pool, fn, *args), self.config.handler_timeout_s
        )

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response(DataPlaneError(code, message).to_dict(), status=status)

    async def _http_health(self, request: web.Request) -> web.Response:
        try:
            body = await self._call_ctl(self.pipeline.health)
        except TimeoutError:
            return self._error(503, DEADLINE_EXCEEDED, "health() timed out")
        except Exception as exc:
            return self._error(503, INTERNAL, f"health() raised {type(exc).__name__}: {exc}")
        return web.json_response(body, dumps=lambda v: json.dumps(v, default=str))

    async def _http_metrics(self, request: web.Request) -> web.Response:
        body = self.context.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(
                text=DataPlaneError(INVALID_ARGUMENT, "body is not JSON").to_json(),
                content_type="application/json",
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(
                text=DataPlaneError(INVALID_ARGUMENT, "body must be an object").to_json(),
                content_type="application/json",
            )
        return body

    async def _http_mgmt(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        action = body.get("mgmt_action", body.get("action"))
        data = body.get("mgmt_data", body.get("data", {}))
        if not action:
            return self._error(400, INVALID_ARGUMENT, "mgmt_action is required")
        try:
            result = await self._call_ctl(self.pipeline.management, str(action), data)
        except TimeoutError:
            return self._error(504, DEADLINE_EXCEEDED, "management() timed out")
        except DataPlaneError as exc:
            status = 404 if exc.code == "NOT_FOUND" else 500
            return web.json_response(exc.to_dict(), status=status)
        return web.json_response(
            {"instance_id": self.config.instance_id, "result": result},
            dumps=lambda v: json.dumps(v, default=str),
        )

    async def _http_set_params(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        params = body.get("parameters", body)
        ok, result = await self.apply_parameters(params)
        return web.json_response(
            {"ok": ok, "result": result},
            status=200 if ok else 400,
            dumps=lambda v: json.dumps(v, default=str),
        )
