"""vDAG controller configuration: defaults <- JSON document <- environment <- flags.

The document (`--config FILE_OR_JSON`, or `AIOS_VDAG_CONTROLLER_CONFIG` holding a path or the
JSON itself) uses the field names of `ControllerConfig`, e.g.

    {"vdag_uri": "pose:1.0-stable", "controller_id": "pose-ctl-1", "cluster_id": "c1",
     "graph": <CompiledGraph.to_dict()> | {"nodes", "connections", "inputs", "outputs"},
     "executors": {"<block_id>": {"cluster_id", "grpc", "http", "redis_url"}},
     "grpc_port": 50061, "http_port": 18061, "advertise_grpc": "10.0.0.7:50061",
     "quota_policy": {"policyRuleURI": "aios.quota_session_global:1.0-stable",
                      "parameters": {"requests_per_session": 1000, "window_s": 60}},
     "quality_policy": {"parameters": {"sample_rate": 0.1}},
     "health_policy": null, "health_interval_s": 15, "quality_sink_url": "",
     "api_url": "http://control-plane:8000", "api_token": "..."}

`graph` may also come from `--graph-file` / `--graph-json` (a compiled graph, or the spec form
with `nodes` and the `graph` keys, compiled at start).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from block_sdk.queues import DEFAULT_REDIS_URL
from block_sdk.vdag.graph import CompiledGraph, GraphError, compile_graph

DEFAULT_QUOTA_POLICY = "aios.quota_session_global:1.0-stable"
DEFAULT_QUALITY_POLICY = "aios.quality_sampler:1.0-stable"


class ControllerConfigError(ValueError):
    pass


@dataclass(slots=True)
class ControllerConfig:
    vdag_uri: str = ""
    controller_id: str = ""
    cluster_id: str = ""
    graph: dict[str, Any] = field(default_factory=dict)
    executors: dict[str, dict[str, Any]] = field(default_factory=dict)
    redis_url: str = DEFAULT_REDIS_URL
    grpc_host: str = "0.0.0.0"  # noqa: S104 - served to clients and other clusters
    grpc_port: int = 50061
    http_host: str = "0.0.0.0"  # noqa: S104
    http_port: int = 18061
    advertise_grpc: str = ""  # host:port blocks of other clusters send results to
    request_timeout_s: float = 30.0
    max_inflight: int = 10_000
    hop_timeout_s: float = 5.0
    quota_policy: Any = None  # None: the built-in default; false/"": no quota check
    quality_policy: Any = None  # None: the built-in default; false/"": no sampling
    health_policy: Any = None
    policy_mode: str = "local"
    policy_dir: str = ""
    api_url: str = ""
    api_token: str = ""
    quality_queue_max: int = 1000
    quality_stream_maxlen: int = 10_000
    quality_sink_url: str = ""
    quality_sinks: list[str] = field(default_factory=list)  # extra "module:Class" sinks
    health_interval_s: float = 15.0
    health_timeout_s: float = 2.0
    metrics_interval_s: float = 5.0
    metrics_ttl_s: int = 120
    api_key: str = ""
    log_level: str = "INFO"

    @property
    def redis_prefix(self) -> str:
        return f"aios:vdag:{{{self.controller_id}}}"

    def compiled_graph(self) -> CompiledGraph:
        doc = self.graph
        if not isinstance(doc, dict) or not doc:
            raise ControllerConfigError("a graph is required (graph, --graph-file, --graph-json)")
        try:
            if "connections" in doc or isinstance(doc.get("nodes"), list):
                spec_graph = doc.get("graph") if isinstance(doc.get("graph"), dict) else doc
                graph = compile_graph(
                    doc.get("nodes") or [],
                    spec_graph.get("connections"),
                    spec_graph.get("inputs"),
                    spec_graph.get("outputs"),
                )
            else:
                graph = CompiledGraph.from_dict(doc)
        except GraphError as exc:
            raise ControllerConfigError(f"invalid graph at {exc.pointer or '/'}: {exc}") from None
        if self.executors:
            graph = graph.with_executors(self.executors)
        return graph

    def validate(self) -> ControllerConfig:
        if not self.vdag_uri:
            raise ControllerConfigError("vdag_uri is required")
        if not self.controller_id:
            self.controller_id = f"{self.vdag_uri}@{socket.gethostname()}"
        if self.request_timeout_s <= 0 or self.max_inflight < 1:
            raise ControllerConfigError("request_timeout_s and max_inflight must be positive")
        if self.policy_mode not in ("local", "sandbox"):
            raise ControllerConfigError("policy_mode must be 'local' or 'sandbox'")
        self.compiled_graph()  # fail at start, not at the first request
        return self

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        for secret in ("api_key", "api_token"):
            if doc.get(secret):
                doc[secret] = "***"
        return doc


_ENV = {
    "vdag_uri": "AIOS_VDAG_URI",
    "controller_id": "AIOS_VDAG_CONTROLLER_ID",
    "cluster_id": "AIOS_CLUSTER_ID",
    "redis_url": "AIOS_REDIS_URL",
    "grpc_port": "AIOS_VDAG_GRPC_PORT",
    "http_port": "AIOS_VDAG_HTTP_PORT",
    "advertise_grpc": "AIOS_VDAG_ADVERTISE_GRPC",
    "request_timeout_s": "AIOS_REQUEST_TIMEOUT_S",
    "policy_dir": "AIOS_POLICY_DIR",
    "api_url": "AIOS_API_URL",
    "api_token": "AIOS_API_TOKEN",
    "quality_sink_url": "AIOS_QUALITY_SINK_URL",
    "api_key": "AIOS_API_KEY",
    "log_level": "AIOS_LOG_LEVEL",
}


def coerce(cls: type, name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(cls)}[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind.startswith(("dict", "list")) and isinstance(value, str):
            text = value.strip()
            if not text:
                return {} if kind.startswith("dict") else []
            if kind.startswith("list") and not text.startswith("["):
                return [v.strip() for v in text.split(",") if v.strip()]
            return json.loads(text)
        if kind == "Any" and isinstance(value, str) and value.strip().startswith(("{", "null")):
            return json.loads(value)
    except ValueError as exc:
        raise ControllerConfigError(f"{name}: {exc}") from None
    return value


def json_document(source: str, what: str) -> dict[str, Any]:
    """A JSON object from text or a file path."""
    text = source.strip()
    if not text:
        return {}
    if not text.startswith("{"):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise ControllerConfigError(f"cannot read {what} {source!r}: {exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ControllerConfigError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ControllerConfigError(f"{what} must be a JSON object")
    return doc


def load_config(
    config_source: str | None = None,
    env: dict[str, str] | None = None,
    *,
    graph_source: str | None = None,
    **flags: Any,
) -> ControllerConfig:
    e = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    known = {f.name for f in fields(ControllerConfig)}
    doc = json_document(config_source or e.get("AIOS_VDAG_CONTROLLER_CONFIG", ""), "config")
    unknown = set(doc) - known
    if unknown:
        raise ControllerConfigError(f"unknown vDAG controller config keys: {sorted(unknown)}")
    values.update(doc)
    if "redis_url" not in doc and e.get("REDIS_URL"):
        values["redis_url"] = e["REDIS_URL"]
    for name, var in _ENV.items():
        if e.get(var):
            values[name] = e[var]
    graph_text = graph_source or e.get("AIOS_VDAG_GRAPH", "")
    if graph_text:
        values["graph"] = json_document(graph_text, "graph")
    for name, value in flags.items():
        if value is not None:
            values[name] = value
    cfg = ControllerConfig(**{k: coerce(ControllerConfig, k, v) for k, v in values.items()})
    return cfg.validate()
