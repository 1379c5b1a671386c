"""Configuration of an instance process, read from environment variables.

The AIOS names (`BLOCK_ID`, `INSTANCE_ID`, `BLOCK_INIT_DATA` ...) are kept so that images
built for AIOS start unchanged; data-plane tuning knobs use the `AIOS_` prefix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

from block_sdk.queues import DEFAULT_REDIS_URL


class ConfigError(ValueError):
    """An environment variable holds something unusable (e.g. JSON that does not parse)."""


def _json_env(env: dict[str, str], name: str, default: Any) -> Any:
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} is not valid JSON: {exc}") from None


def _num(env: dict[str, str], name: str, default: float, kind: type = float) -> Any:
    raw = env.get(name, "")
    if not raw.strip():
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _flag(env: dict[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    return raw in {"1", "true", "yes", "on"}


@dataclass(slots=True)
class InstanceConfig:
    """Everything an instance process needs; `from_env()` documents the variable names."""

    block_id: str = "test-block"
    instance_id: str = "instance-001"
    redis_url: str = DEFAULT_REDIS_URL
    block_data: dict[str, Any] = field(default_factory=dict)
    init_data: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)
    allocation_info: dict[str, Any] = field(default_factory=dict)
    http_host: str = "0.0.0.0"  # noqa: S104 - the health checker reaches instances by pod IP
    http_port: int = 18001  # AIOS instance health/mgmt port; 0 = any free port, -1 = off
    concurrency: int = 1
    io_mode: str = "thread"  # consumer I/O: "thread" (sync Redis per consumer) or "asyncio"
    # Thread consumers acknowledge over a lean connection with `CLIENT REPLY SKIP` (no reply,
    # no wake-up for the acknowledgement); off: redis-py pipelines (block_sdk/resp.py).
    lean_redis: bool = True
    heartbeat_interval_s: float = 1.0
    heartbeat_ttl_s: float = 5.0
    take_timeout_s: float = 1.0
    max_attempts: int = 2
    register_self: bool = False
    events_stream: str = "aios:events"
    events_maxlen: int = 10_000
    sidecars: dict[str, dict[str, Any]] = field(default_factory=dict)
    sidecar_maxlen: int = 10_000
    sidecar_ttl_s: int = 3600
    session_ttl_s: float = 3600.0
    session_max: int = 10_000
    mux_timeout_s: float = 30.0
    shutdown_grace_s: float = 10.0
    handler_timeout_s: float = 10.0
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> InstanceConfig:
        e = dict(os.environ if env is None else env)
        init_data = _json_env(e, "BLOCK_INIT_DATA", {})
        sidecars = _json_env(e, "AIOS_SIDECARS", None)
        if sidecars is None and isinstance(init_data, dict):
            sidecars = init_data.get("sidecars", {})
        cfg = cls(
            block_id=e.get("BLOCK_ID", "test-block"),
            instance_id=e.get("INSTANCE_ID", "instance-001"),
            redis_url=e.get("AIOS_REDIS_URL") or e.get("REDIS_URL") or DEFAULT_REDIS_URL,
            block_data=_json_env(e, "BLOCK_DATA", {}),
            init_data=init_data,
            settings=_json_env(e, "BLOCK_INIT_SETTINGS", {}),
            parameters=_json_env(e, "BLOCK_INIT_PARAMETERS", {}),
            allocation_info=_json_env(e, "ALLOCATION_INFO", {}),
            http_host=e.get("AIOS_INSTANCE_HTTP_HOST", "0.0.0.0"),  # noqa: S104
            http_port=_num(e, "AIOS_INSTANCE_HTTP_PORT", 18001, int),
            concurrency=_num(e, "AIOS_INSTANCE_CONCURRENCY", 1, int),
            io_mode=e.get("AIOS_INSTANCE_IO", "thread").strip().lower(),
            lean_redis=_flag(e, "AIOS_INSTANCE_LEAN_REDIS", True),
            heartbeat_interval_s=_num(e, "AIOS_HEARTBEAT_INTERVAL_S", 1.0),
            heartbeat_ttl_s=_num(e, "AIOS_HEARTBEAT_TTL_S", 5.0),
            take_timeout_s=_num(e, "AIOS_TAKE_TIMEOUT_S", 1.0),
            max_attempts=_num(e, "AIOS_MAX_ATTEMPTS", 2, int),
            register_self=_flag(e, "AIOS_REGISTER_SELF"),
            events_stream=e.get("AIOS_EVENTS_STREAM", "aios:events"),
            events_maxlen=_num(e, "AIOS_EVENTS_MAXLEN", 10_000, int),
            sidecars=_normalize_sidecars(sidecars),
            sidecar_maxlen=_num(e, "AIOS_SIDECAR_MAXLEN", 10_000, int),
            sidecar_ttl_s=_num(e, "AIOS_SIDECAR_TTL_S", 3600, int),
            session_ttl_s=_num(e, "AIOS_SESSION_TTL_S", 3600.0),
            session_max=_num(e, "AIOS_SESSION_MAX", 10_000, int),
            mux_timeout_s=_num(e, "AIOS_MUX_TIMEOUT_S", 30.0),
            shutdown_grace_s=_num(e, "AIOS_SHUTDOWN_GRACE_S", 10.0),
            handler_timeout_s=_num(e, "AIOS_HANDLER_TIMEOUT_S", 10.0),
            log_level=e.get("AIOS_LOG_LEVEL", "INFO"),
        )
        known = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise ConfigError(f"unknown instance setting {key!r}")
            if value is not None:
                setattr(cfg, key, value)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("concurrency must be >= 1")
        if self.io_mode not in ("thread", "asyncio"):
            raise ConfigError("AIOS_INSTANCE_IO must be 'thread' or 'asyncio'")
        if self.heartbeat_ttl_s <= self.heartbeat_interval_s:
            raise ConfigError("heartbeat TTL must exceed the heartbeat interval")
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be >= 1")
        for name, value in (
            ("BLOCK_DATA", self.block_data),
            ("BLOCK_INIT_DATA", self.init_data),
            ("BLOCK_INIT_SETTINGS", self.settings),
            ("BLOCK_INIT_PARAMETERS", self.parameters),
        ):
            if not isinstance(value, dict):
                raise ConfigError(f"{name} must be a JSON object")


def _normalize_sidecars(value: Any) -> dict[str, dict[str, Any]]:
    """Sidecars may be configured as `{name: {...}}` or `[{"name": ..., ...}]`."""
    if not value:
        return {}
    if isinstance(value, dict):
        return {str(k): dict(v or {}) for k, v in value.items()}
    if isinstance(value, list):
        out: dict[str, dict[str, Any]] = {}
        for item in value:
            if isinstance(item, str):
                out[item] = {}
            elif isinstance(item, dict) and item.get("name"):
                out[str(item["name"])] = {k: v for k, v in item.items() if k != "name"}
            else:
                raise ConfigError(f"sidecar entry {item!r} has no name")
        return out
    raise ConfigError("sidecars must be an object or a list")
