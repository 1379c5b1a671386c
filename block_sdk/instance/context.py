"""The `context` handed to a block's `__init__`: configuration, metrics, sessions, events and
sidecars. The helpers here are called from block code (worker threads), so they are
synchronous, thread-safe, bounded, and never let an infrastructure hiccup break `on_data`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import redis

from block_sdk.instance.config import InstanceConfig
from block_sdk.metrics import AIOSMetrics
from block_sdk.packet import encode_json

log = logging.getLogger("block_sdk.instance")


class SessionsManager:
    """Small per-session dict store, in memory, with a sliding TTL and an LRU bound.

    `get(sid)` returns the session dict (or `default`), `session(sid)` returns it creating it
    when missing; mutations through the returned dict are kept.
    """

    def __init__(self, ttl_s: float = 3600.0, max_sessions: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._data: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def _live(self, session_id: str, now: float) -> dict[str, Any] | None:
        item = self._data.get(session_id)
        if item is None:
            return None
        if now - item[0] > self.ttl_s:
            del self._data[session_id]
            return None
        self._data[session_id] = (now, item[1])
        self._data.move_to_end(session_id)
        return item[1]

    def _put(self, session_id: str, value: dict[str, Any], now: float) -> None:
        self._data[session_id] = (now, value)
        self._data.move_to_end(session_id)
        while len(self._data) > self.max_sessions:
            self._data.popitem(last=False)

    def get(self, session_id: str, default: Any = None) -> Any:
        with self._lock:
            value = self._live(session_id, time.monotonic())
        return default if value is None else value

    def session(self, session_id: str) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            value = self._live(session_id, now)
            if value is None:
                value = {}
                self._put(session_id, value, now)
            return value

    def set(self, session_id: str, value: dict[str, Any]) -> None:
        with self._lock:
            self._put(session_id, dict(value), time.monotonic())

    def update(self, session_id: str, values: dict[str, Any] | None = None, **kw: Any) -> dict:
        with self._lock:
            now = time.monotonic()
            current = self._live(session_id, now)
            if current is None:
                current = {}
                self._put(session_id, current, now)
            current.update(values or {}, **kw)
            return current

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._data.pop(session_id, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def purge_expired(self) -> int:
        now = time.monotonic()
        with self._lock:
            dead = [k for k, (t, _) in self._data.items() if now - t > self.ttl_s]
            for k in dead:
                del self._data[k]
        return len(dead)

    def __contains__(self, session_id: object) -> bool:
        return self.get(str(session_id)) is not None

    def __len__(self) -> int:
        return len(self._data)


def _sync_redis(url: str) -> redis.Redis:
    # Short timeouts: an event or sidecar push must not stall a block for long.
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


class BlockEvents:
    """`push_event(name, data)` appends to the events sink: a Redis stream capped by MAXLEN
    (approximate trimming, so the cap costs O(1)). The cluster's block-events policy runner
    consumes it. Without a Redis URL (tests) events are kept in `self.pushed` (bounded)."""

    def __init__(
        self,
        block_id: str,
        instance_id: str = "",
        redis_url: str | None = None,
        stream: str = "aios:events",
        maxlen: int = 10_000,
        client: redis.Redis | None = None,
    ) -> None:
        self.block_id = block_id
        self.instance_id = instance_id
        self.stream = stream
        self.maxlen = maxlen
        self._client = client or (_sync_redis(redis_url) if redis_url else None)
        self.pushed: list[dict[str, Any]] = []

    def push_event(self, event_name: str, event_data: Any = None) -> bool:
        doc = {
            "event_name": event_name,
            "block_id": self.block_id,
            "instance_id": self.instance_id,
            "event_data": encode_json(event_data if event_data is not None else {}),
            "ts": repr(time.time()),
        }
        if self._client is None:
            self.pushed.append(doc)
            del self.pushed[: -self.maxlen]
            return True
        for attempt in (1, 2):  # AIOS semantics: one retry, then give up and log
            try:
                self._client.xadd(self.stream, doc, maxlen=self.maxlen, approximate=True)
                return True
            except redis.RedisError as exc:
                if attempt == 2:
                    log.warning(
                        "event push failed", extra={"event_name": event_name, "error": str(exc)}
                    )
        return False


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    serialize = getattr(value, "SerializeToString", None)
    if callable(serialize):
        return serialize()
    if isinstance(value, str):
        return value.encode()
    return encode_json(value).encode()


class BlockSideCars:
    """Pushes data to the block's sidecars through Redis lists.

    Each sidecar is configured by name (`init_data["sidecars"]` or `AIOS_SIDECARS`). By
    default its input list is `aios:block:{B}:sidecar:<name>` on the block's Redis; with
    `{"external": true, "external_redis_url": ...}` it is the AIOS `INPUTS` list (or `queue`)
    on that Redis. Lists are capped (`LTRIM`, newest kept) and expire when nobody consumes.
    """

    def __init__(
        self,
        block_id: str,
        sidecars: dict[str, dict[str, Any]] | None = None,
        redis_url: str | None = None,
        maxlen: int = 10_000,
        ttl_s: int = 3600,
        key_prefix: str = "aios:block",
    ) -> None:
        self.block_id = block_id
        self.sidecars = dict(sidecars or {})
        self.redis_url = redis_url
        self.maxlen = maxlen
        self.ttl_s = ttl_s
        self.key_prefix = key_prefix
        self._clients: dict[str, redis.Redis] = {}
        self._lock = threading.Lock()
        self.pushed: list[tuple[str, bytes]] = []  # used when there is no Redis (tests)

    def target(self, name: str) -> tuple[str | None, str]:
        """(redis url, list key) for a sidecar."""
        conf = self.sidecars.get(name)
        if conf is None:
            raise KeyError(f"unknown sidecar {name!r}; configured: {sorted(self.sidecars)}")
        if conf.get("external"):
            return conf.get("external_redis_url"), conf.get("queue", "INPUTS")
        key = conf.get("queue") or f"{self.key_prefix}:{{{self.block_id}}}:sidecar:{name}"
        return conf.get("redis_url") or self.redis_url, key

    def _client(self, url: str) -> redis.Redis:
        with self._lock:
            client = self._clients.get(url)
            if client is None:
                client = self._clients[url] = _sync_redis(url)
            return client

    def push_to_sidecar(self, name: str, input_proto: Any) -> bool:
        url, key = self.target(name)
        payload = _to_bytes(input_proto)
        if url is None:
            self.pushed.append((name, payload))
            del self.pushed[: -self.maxlen]
            return True
        for attempt in (1, 2):
            try:
                pipe = self._client(url).pipeline(transaction=False)
                pipe.lpush(key, payload)
                pipe.ltrim(key, 0, self.maxlen - 1)
                pipe.expire(key, self.ttl_s)
                pipe.execute()
                return True
            except redis.RedisError as exc:
                if attempt == 2:
                    log.warning("sidecar push failed", extra={"sidecar": name, "error": str(exc)})
                else:
                    with self._lock:
                        self._clients.pop(url, None)  # reconnect on the retry
        return False

    def push_to_all_sidecars(self, input_proto: Any) -> dict[str, bool]:
        return {name: self.push_to_sidecar(name, input_proto) for name in self.sidecars}


@dataclass
class Context:
    """What a block's `__init__(context)` receives. Attribute names follow the AIOS SDK;
    `init_data`, `settings`, `parameters` and `sidecars` are shorter aliases."""

    block_id: str = "test-block"
    instance_id: str = "instance-001"
    block_data: dict[str, Any] = field(default_factory=dict)
    block_init_data: dict[str, Any] = field(default_factory=dict)
    block_init_settings: dict[str, Any] = field(default_factory=dict)
    block_init_parameters: dict[str, Any] = field(default_factory=dict)
    allocation_info: dict[str, Any] = field(
        default_factory=lambda: {"gpus": [], "node_id": "", "cluster_id": ""}
    )
    metrics: AIOSMetrics | None = None
    events: BlockEvents | None = None
    sessions: SessionsManager = field(default_factory=SessionsManager)
    side_cars: BlockSideCars | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("block"))

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = AIOSMetrics(self.block_id, self.instance_id)
        if self.events is None:
            self.events = BlockEvents(self.block_id, self.instance_id)
        if self.side_cars is None:
            self.side_cars = BlockSideCars(self.block_id)

    @property
    def init_data(self) -> dict[str, Any]:
        return self.block_init_data

    @property
    def settings(self) -> dict[str, Any]:
        return self.block_init_settings

    @property
    def parameters(self) -> dict[str, Any]:
        return self.block_init_parameters

    @property
    def sidecars(self) -> BlockSideCars | None:
        return self.side_cars

    def update_parameters(self, params: dict[str, Any]) -> None:
        # Mutate in place: block code may hold a reference to the dict.
        self.block_init_parameters.update(params)

    @classmethod
    def from_config(cls, cfg: InstanceConfig) -> Context:
        alloc = {"gpus": [], "node_id": "", "cluster_id": ""}
        alloc.update(cfg.allocation_info or {})
        return cls(
            block_id=cfg.block_id,
            instance_id=cfg.instance_id,
            block_data=dict(cfg.block_data),
            block_init_data=dict(cfg.init_data),
            block_init_settings=dict(cfg.settings),
            block_init_parameters=dict(cfg.parameters),
            allocation_info=alloc,
            metrics=AIOSMetrics(cfg.block_id, cfg.instance_id),
            events=BlockEvents(
                cfg.block_id,
                cfg.instance_id,
                redis_url=cfg.redis_url,
                stream=cfg.events_stream,
                maxlen=cfg.events_maxlen,
            ),
            sessions=SessionsManager(cfg.session_ttl_s, cfg.session_max),
            side_cars=BlockSideCars(
                cfg.block_id,
                cfg.sidecars,
                redis_url=cfg.redis_url,
                maxlen=cfg.sidecar_maxlen,
                ttl_s=cfg.sidecar_ttl_s,
            ),
            logger=logging.getLogger(f"block.{cfg.block_id}"),
        )
