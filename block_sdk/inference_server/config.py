"""Adhoc inference server configuration: defaults <- JSON document <- environment <- flags.

The document (`--config FILE_OR_JSON`, or `AIOS_INFERENCE_SERVER_CONFIG`) uses the field
names of `ServerConfig`, e.g.

    {"server_id": "eu-1", "cluster_id": "c1", "grpc_port": 31500, "http_port": 31501,
     "executors": {"<block_id>": {"cluster_id", "grpc", "http", "redis_url"}},
     "api_url": "http://control-plane:8000", "api_token": "...",
     "quota_policy": {"parameters": {"requests_per_session": 1000}},
     "log_dsn": "postgresql://aios@db/aios", "log_flush_ms": 200, "log_batch_rows": 500}
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from block_sdk.inference_server.directory import EXECUTORS_KEY
from block_sdk.inference_server.request_log import DEFAULT_TABLE
from block_sdk.queues import DEFAULT_REDIS_URL
from block_sdk.vdag_controller.config import ControllerConfigError, coerce, json_document

DEFAULT_QUOTA_POLICY = "aios.quota_session_global:1.0-stable"


class ServerConfigError(ControllerConfigError):
    pass


@dataclass(slots=True)
class ServerConfig:
    server_id: str = ""
    cluster_id: str = ""
    redis_url: str = DEFAULT_REDIS_URL
    grpc_host: str = "0.0.0.0"  # noqa: S104 - a public gateway
    grpc_port: int = 31500
    http_host: str = "0.0.0.0"  # noqa: S104
    http_port: int = 31501
    advertise_grpc: str = ""
    request_timeout_s: float = 30.0
    hop_timeout_s: float = 5.0
    max_inflight: int = 10_000
    executors: dict[str, dict[str, Any]] = field(default_factory=dict)
    executors_key: str = EXECUTORS_KEY
    executors_cache_s: float = 5.0
    api_url: str = ""
    api_token: str = ""
    search_path: str = "/api/v1/search/"
    search_timeout_s: float = 5.0
    session_cache_ttl_s: float = 600.0
    graph_cache_max: int = 1024
    quota_policy: Any = None  # None: the built-in default; false/"": no quota check
    policy_mode: str = "local"
    policy_dir: str = ""
    log_dsn: str = ""  # PostgreSQL URL; empty: no request logging
    log_table: str = DEFAULT_TABLE
    log_flush_ms: int = 200
    log_batch_rows: int = 500
    log_buffer_max: int = 10_000
    create_log_table: bool = False
    api_key: str = ""
    log_level: str = "INFO"

    @property
    def redis_prefix(self) -> str:
        return f"aios:inference:{{{self.server_id}}}"

    def validate(self) -> ServerConfig:
        if not self.server_id:
            self.server_id = f"inference-{socket.gethostname()}"
        if self.request_timeout_s <= 0:
            raise ServerConfigError("request_timeout_s must be > 0")
        if self.policy_mode not in ("local", "sandbox"):
            raise ServerConfigError("policy_mode must be 'local' or 'sandbox'")
        if self.log_flush_ms < 1 or self.log_batch_rows < 1 or self.log_buffer_max < 1:
            raise ServerConfigError("log_flush_ms, log_batch_rows and log_buffer_max must be >= 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for secret in ("api_key", "api_token"):
            if doc.get(secret):
                doc[secret] = "***"
        if doc.get("log_dsn") and "@" in doc["log_dsn"]:
            scheme, _, rest = doc["log_dsn"].partition("://")
            doc["log_dsn"] = f"{scheme}://***@{rest.rpartition('@')[2]}"
        return doc


_ENV = {
    "server_id": "AIOS_INFERENCE_SERVER_ID",
    "cluster_id": "AIOS_CLUSTER_ID",
    "redis_url": "AIOS_REDIS_URL",
    "grpc_port": "AIOS_INFERENCE_GRPC_PORT",
    "http_port": "AIOS_INFERENCE_HTTP_PORT",
    "advertise_grpc": "AIOS_INFERENCE_ADVERTISE_GRPC",
    "request_timeout_s": "AIOS_REQUEST_TIMEOUT_S",
    "api_url": "AIOS_API_URL",
    "api_token": "AIOS_API_TOKEN",
    "policy_dir": "AIOS_POLICY_DIR",
    "log_dsn": "AIOS_REQUEST_LOG_DSN",
    "api_key": "AIOS_API_KEY",
    "log_level": "AIOS_LOG_LEVEL",
}


def load_config(
    config_source: str | None = None, env: dict[str, str] | None = None, **flags: Any
) -> ServerConfig:
    e = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    known = {f.name for f in fields(ServerConfig)}
    try:
        doc = json_document(config_source or e.get("AIOS_INFERENCE_SERVER_CONFIG", ""), "config")
    except ControllerConfigError as exc:
        raise ServerConfigError(str(exc)) from None
    unknown = set(doc) - known
    if unknown:
        raise ServerConfigError(f"unknown inference server config keys: {sorted(unknown)}")
    values.update(doc)
    if "redis_url" not in doc and e.get("REDIS_URL"):
        values["redis_url"] = e["REDIS_URL"]
    for name, var in _ENV.items():
        if e.get(var):
            values[name] = e[var]
    for name, value in flags.items():
        if value is not None:
            values[name] = value
    if isinstance(values.get("create_log_table"), str):
        values["create_log_table"] = values["create_log_table"].lower() in ("1", "true", "yes")
    try:
        cfg = ServerConfig(**{k: coerce(ServerConfig, k, v) for k, v in values.items()})
    except ControllerConfigError as exc:
        raise ServerConfigError(str(exc)) from None
    return cfg.validate()
