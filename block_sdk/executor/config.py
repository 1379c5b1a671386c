"""Executor configuration: defaults <- JSON document <- environment <- command-line flags.

The JSON document (file given by `--config PATH`, or `AIOS_EXECUTOR_CONFIG` holding either a
path or the JSON text itself) uses the field names of `ExecutorConfig`, e.g.

    {"block_id": "echo-1", "instances": ["i-1", "i-2"], "lb_policy": "least_queue",
     "lb_parameters": {"session_stickiness": true}, "max_queue_length": 1000,
     "request_timeout_s": 30}

`instances` is only a seed: the live set comes from the Redis registry hash
`aios:block:{B}:instances` (maintained by the control plane) and instance heartbeats.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from block_sdk.queues import DEFAULT_REDIS_URL


class ExecutorConfigError(ValueError):
    pass


@dataclass(slots=True)
class ExecutorConfig:
    block_id: str = ""
    executor_id: str = ""
    redis_url: str = DEFAULT_REDIS_URL
    grpc_host: str = "0.0.0.0"  # noqa: S104 - served to other pods/clusters
    grpc_port: int = 50051
    http_host: str = "0.0.0.0"  # noqa: S104
    http_port: int = 18000  # AIOS executor metrics port; mgmt and health share it
    instances: list[str] = field(default_factory=list)
    lb_policy: str = "round_robin"
    lb_settings: dict[str, Any] = field(default_factory=dict)
    lb_parameters: dict[str, Any] = field(default_factory=dict)
    max_queue_length: int = 1000
    max_pending: int = 10_000
    request_timeout_s: float = 30.0
    proxy_timeout_s: float = 0.0  # 0: fire-and-forward packets do not expire in the queue
    max_attempts: int = 2
    watch_interval_s: float = 0.5
    reply_block_s: float = 1.0
    params_ack_timeout_s: float = 5.0
    grpc_max_message_mb: int = 64
    api_key: str = ""
    log_level: str = "INFO"
    # Hot-path Redis commands (enqueue, reply pop) on a lean RESP connection instead of
    # redis-py (block_sdk/resp.py); off: everything through redis-py, as before.
    lean_redis: bool = True

    def validate(self) -> ExecutorConfig:
        if not self.block_id:
            raise ExecutorConfigError("block_id is required")
        if self.max_queue_length < 1 or self.max_pending < 1:
            raise ExecutorConfigError("max_queue_length and max_pending must be >= 1")
        if self.request_timeout_s <= 0:
            raise ExecutorConfigError("request_timeout_s must be > 0")
        if self.max_attempts < 1:
            raise ExecutorConfigError("max_attempts must be >= 1")
        if not self.executor_id:
            self.executor_id = f"{socket.gethostname()}-{os.getpid()}"
        self.instances = [str(i) for i in self.instances]
        return self

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        if doc.get("api_key"):
            doc["api_key"] = "***"
        return doc


_ENV = {
    "block_id": "BLOCK_ID",
    "executor_id": "AIOS_EXECUTOR_ID",
    "redis_url": "AIOS_REDIS_URL",
    "grpc_port": "AIOS_EXECUTOR_GRPC_PORT",
    "http_port": "AIOS_EXECUTOR_HTTP_PORT",
    "lb_policy": "AIOS_LB_POLICY",
    "max_queue_length": "AIOS_MAX_QUEUE_LENGTH",
    "request_timeout_s": "AIOS_REQUEST_TIMEOUT_S",
    "max_attempts": "AIOS_MAX_ATTEMPTS",
    "api_key": "AIOS_API_KEY",
    "log_level": "AIOS_LOG_LEVEL",
    "lean_redis": "AIOS_EXECUTOR_LEAN_REDIS",
}


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(ExecutorConfig)}[name]
    try:
        if kind == "bool" and isinstance(value, str):
            return value.strip().lower() not in ("", "0", "false", "no", "off")
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind.startswith("list") and isinstance(value, str):
            value = value.strip()
            return (
                json.loads(value)
                if value.startswith("[")
                else [v.strip() for v in value.split(",") if v.strip()]
            )
        if kind.startswith("dict") and isinstance(value, str):
            return json.loads(value) if value.strip() else {}
    except ValueError as exc:
        raise ExecutorConfigError(f"{name}: {exc}") from None
    return value


def _document(source: str) -> dict[str, Any]:
    text = source.strip()
    if not text:
        return {}
    if not text.startswith("{"):
        text = Path(text).read_text()
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ExecutorConfigError(f"executor config is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ExecutorConfigError("executor config must be a JSON object")
    return doc


def load_config(
    config_source: str | None = None,
    env: dict[str, str] | None = None,
    **flags: Any,
) -> ExecutorConfig:
    e = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    known = {f.name for f in fields(ExecutorConfig)}
    doc = _document(config_source or e.get("AIOS_EXECUTOR_CONFIG", ""))
    unknown = set(doc) - known
    if unknown:
        raise ExecutorConfigError(f"unknown executor config keys: {sorted(unknown)}")
    values.update(doc)
    if "redis_url" not in doc and e.get("REDIS_URL"):
        values["redis_url"] = e["REDIS_URL"]
    for name, var in _ENV.items():
        if e.get(var):
            values[name] = e[var]
    for name, value in flags.items():
        if value is not None:
            values[name] = value
    cfg = ExecutorConfig(**{k: _coerce(k, v) for k, v in values.items()})
    return cfg.validate()
