"""A lean asyncio Redis connection for the executor's two hot-path commands.

The executor spends most of its CPU per request in redis-py's asyncio layers (connection pool,
retry wrapper, event dispatch, stream reader) around two commands: the enqueue script and the
reply reader's blocking pop. This is one plain connection speaking RESP2 over an
`asyncio.Protocol`: requests are pipelined and answered in order, a reply is parsed straight
from the bytes received, and errors are redis-py's exception types so callers keep their
`except RedisError` handling. Everything else (watcher, sweeps, parameters) stays on redis-py.

Plain TCP (`redis://`) and Unix sockets (`unix://`) are supported, with password/username and
db from the URL; `supports()` says no to anything else (TLS, Sentinel, Cluster), where callers
keep using redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

_CRLF = b"\r\n"


def supports(url: str) -> bool:
    """True for the URLs this connection speaks: redis:// and unix://, without TLS."""
    try:
        return urlsplit(url).scheme in ("redis", "unix")
    except ValueError:
        return False


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode()
        elif isinstance(a, int | float):
            b = repr(a).encode()
        else:
            raise TypeError(f"cannot send {type(a).__name__} to Redis")
        out.append(b"$%d\r\n" % len(b))
        out.append(b)
        out.append(_CRLF)
    return b"".join(out)


class _Incomplete(Exception):
    pass


def parse(buf: bytearray | bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 reply from `buf` at `pos`: (value, next position); raises _Incomplete.
    Bulk strings are bytes, status replies bytes, errors ResponseError instances (returned,
    not raised: the caller decides), nulls None."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    line = bytes(buf[pos + 1 : end])
    pos = end + 2
    if kind == 0x24:  # $ bulk string
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            raise _Incomplete
        return bytes(buf[pos : pos + n]), pos + n + 2
    if kind == 0x2A:  # * array
        n = int(line)
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 0x3A:  # : integer
        return int(line), pos
    if kind == 0x2B:  # + status
        return line, pos
    if kind == 0x2D:  # - error
        text = line.decode(errors="replace")
        if text.startswith("NOSCRIPT"):
            return NoScriptError(text), pos
        return ResponseError(text), pos
    raise RedisConnectionError(f"unexpected RESP type byte {kind!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self, conn: RespConnection) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn._feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._lost(self, exc)


class RespConnection:
    """One Redis connection with pipelined, in-order replies.

    `execute(*args, timeout_s=...)` returns the reply or raises redis-py's exceptions
    (`ResponseError`, `ConnectionError`, `TimeoutError`). A timed-out request closes the
    connection (its reply would otherwise be taken for the next request's) and the next
    call reconnects, so the caller's retry/backoff logic sees an ordinary Redis error.
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        if not supports(url):
            raise ValueError(f"unsupported Redis URL for the lean connection: {url!r}")
        kw = parse_url(url)
        self.path: str | None = kw.get("path")
        self.host: str = kw.get("host") or "localhost"
        self.port: int = int(kw.get("port") or 6379)
        self.db = int(kw.get("db") or 0)
        self.username: str | None = kw.get("username")
        self.password: str | None = kw.get("password")
        self.connect_timeout_s = connect_timeout_s
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._buf = bytearray()
        self._lock: asyncio.Lock | None = None

    # -- connection ----------------------------------------------------------------------
    async def _connect(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._transport is not None and not self._transport.is_closing():
                return
            loop = asyncio.get_running_loop()
            self._buf.clear()
            protocol = _Protocol(self)
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    if self.path:
                        transport, _ = await loop.create_unix_connection(
                            lambda: protocol, self.path
                        )
                    else:
                        transport, _ = await loop.create_connection(
                            lambda: protocol, self.host, self.port
                        )
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
            self._transport, self._protocol = transport, protocol  # type: ignore[assignment]
            try:
                if self.password:
                    auth = (self.username, self.password) if self.username else (self.password,)
                    await self._call(("AUTH", *auth), self.connect_timeout_s)
                if self.db:
                    await self._call(("SELECT", self.db), self.connect_timeout_s)
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        transport, self._transport, self._protocol = self._transport, None, None
        if transport is not None:
            transport.abort()
        self._fail_all(RedisConnectionError("connection closed"))

    def _fail_all(self, exc: Exception) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
        self._buf.clear()

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return  # an old connection we already replaced
        self._transport = self._protocol = None
        self._fail_all(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _feed(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                try:
                    value, pos = parse(buf, pos)
                except _Incomplete:
                    break
                if not self._waiters:
                    raise RedisConnectionError("reply without a request")
                fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_result(value)
        except (RedisConnectionError, ValueError) as exc:
            # A protocol error leaves the stream unusable: start over on a new connection.
            self._fail_all(RedisConnectionError(f"bad reply from Redis: {exc}"))
            if self._transport is not None:
                self._transport.abort()
            return
        del buf[:pos]

    # -- commands ------------------------------------------------------------------------
    async def _call(self, args: tuple[Any, ...], timeout_s: float | None) -> Any:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise RedisConnectionError("not connected")
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        transport.write(pack(args))
        try:
            async with asyncio.timeout(timeout_s):
                value = await fut
        except TimeoutError:
            # Redis (or the path to it) is stuck: start over on a fresh connection, like
            # redis-py does on a socket timeout. Requests pipelined behind fail with it.
            self.close()
            raise RedisTimeoutError(f"no reply from Redis within {timeout_s}s") from None
        # A cancelled caller (its gRPC call went away) leaves its cancelled future in the
        # queue: the reply still arrives in order and `_feed` drops it, so the requests
        # pipelined behind it are not disturbed.
        if isinstance(value, ResponseError):
            raise value
        return value

    async def execute(self, *args: Any, timeout_s: float | None = 10.0) -> Any:
        if self._transport is None or self._transport.is_closing():
            await self._connect()
        return await self._call(args, timeout_s)

    async def run_script(
        self,
        sha: str,
        script: str,
        keys: list[str],
        args: list[Any],
        timeout_s: float | None = 10.0,
    ) -> Any:
        """EVALSHA, falling back to EVAL (which caches the script) on NOSCRIPT."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args, timeout_s=timeout_s)
        except NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args, timeout_s=timeout_s)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class SyncRespConnection:
    """The blocking twin, for one instance consumer thread (one thread, one connection).

    Lets the thread send commands whose replies Redis is told to skip (`CLIENT REPLY SKIP`),
    which redis-py's pipelines cannot express: the instance's acknowledgement then costs no
    reply and no wake-up of its own. Errors and timeouts are redis-py's exception types; any
    socket error closes the connection and the next call reconnects.
    """

    def __init__(
        self, url: str, *, socket_timeout_s: float = 10.0, connect_timeout_s: float = 5.0
    ) -> None:
        if not supports(url):
            raise ValueError(f"unsupported Redis URL for the lean connection: {url!r}")
        kw = parse_url(url)
        self.path: str | None = kw.get("path")
        self.host: str = kw.get("host") or "localhost"
        self.port: int = int(kw.get("port") or 6379)
        self.db = int(kw.get("db") or 0)
        self.username: str | None = kw.get("username")
        self.password: str | None = kw.get("password")
        self.socket_timeout_s = socket_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None
        self._buf = bytearray()

    def _connect(self) -> socket.socket:
        try:
            if self.path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.connect_timeout_s)
                sock.connect(self.path)
            else:
                sock = socket.create_connection((self.host, self.port), self.connect_timeout_s)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        sock.settimeout(self.socket_timeout_s)
        self._sock, self._buf = sock, bytearray()
        try:
            if self.password:
                auth = (self.username, self.password) if self.username else (self.password,)
                self.execute("AUTH", *auth)
            if self.db:
                self.execute("SELECT", self.db)
        except BaseException:
            self.close()
            raise
        return sock

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buf = bytearray()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def send(self, data: bytes) -> None:
        sock = self._sock or self._connect()
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise RedisConnectionError(f"connection to Redis lost: {exc}") from exc

    def read_reply(self) -> Any:
        """The next reply (a ResponseError is returned, not raised)."""
        sock = self._sock
        if sock is None:
            raise RedisConnectionError("not connected")
        while True:
            if self._buf:
                try:
                    value, pos = parse(self._buf, 0)
                except _Incomplete:
                    pass
                except ValueError as exc:
                    self.close()
                    raise RedisConnectionError(f"bad reply from Redis: {exc}") from exc
                else:
                    del self._buf[:pos]
                    return value
            try:
                chunk = sock.recv(65536)
            except TimeoutError as exc:
                self.close()  # the late reply would be taken for the next request's
                raise RedisTimeoutError(f"no reply from Redis within {sock.gettimeout()}s") from exc
            except OSError as exc:
                self.close()
                raise RedisConnectionError(f"connection to Redis lost: {exc}") from exc
            if not chunk:
                self.close()
                raise RedisConnectionError("connection closed by Redis")
            self._buf += chunk

    def execute(self, *args: Any) -> Any:
        self.send(pack(args))
        value = self.read_reply()
        if isinstance(value, ResponseError):
            raise value
        return value

    def reply_skip_works(self) -> bool:
        """Whether the server honours `CLIENT REPLY SKIP` (some proxies and managed Redis
        services refuse CLIENT commands; a skipped reply that still came would shift every
        reply after it). Leaves the connection in step either way."""
        self.send(
            pack(("CLIENT", "REPLY", "SKIP")) + pack(("ECHO", "skipped")) + pack(("ECHO", "seen"))
        )
        first = self.read_reply()
        if first == b"seen":
            return True
        # Refused: the refusal, then both echoes, came back.
        while first != b"seen":
            first = self.read_reply()
        return False
