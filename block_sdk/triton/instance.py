"""`TritonBlock`: a ready block class that serves a model running in NVIDIA Triton.

Use it as a component's entry point (`block_sdk.triton.instance:TritonBlock`) or subclass it
with `default_init_data` (see `examples/triton_model/block.py`). The block's init data says
which Triton, which model, and how packet JSON/files map to input tensors and outputs back
to JSON (see `block_sdk.triton.mapping` for the format):

    {"triton_url": "127.0.0.1:8001", "protocol": "grpc", "model_name": "linear",
     "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "from": "data.x"}],
     "outputs": [{"name": "y", "to": "y"}], "timeout_s": 10}

Where Triton is (third-party modes):
* externally managed: `triton_url` is in the init data;
* managed: no `triton_url`; the URL comes from the block's init workload (its finish data,
  `grpc_url` or `http_url`/`inference_url` by protocol), read from
  `blockInitData.initContainer` or waited for with `wait_for_finish` (up to
  `wait_for_init_s`). If Triton later moves (the workload was restarted), a request that
  finds it unreachable re-reads the finish data and reconnects.

Bad requests fail in `on_preprocess` with INVALID_ARGUMENT and a message naming the input;
Triton's own refusals keep their meaning (INVALID_ARGUMENT, UNAVAILABLE, DEADLINE_EXCEEDED).
`health()` raises (so `/health` answers 503) unless the server is live and ready and the
model is ready.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, ClassVar

from block_sdk.instance.api import BlockCodeError, OnDataResult, PreProcessResult
from block_sdk.metrics import LATENCY_BUCKETS
from block_sdk.packet import INVALID_ARGUMENT, UNAVAILABLE, DataPlaneError
from block_sdk.third_party.sdk import InitError, read_finish, resolve_finish_data
from block_sdk.triton.client import TritonConnection
from block_sdk.triton.mapping import (
    OutputSpec,
    TritonBlockConfig,
    TritonConfigError,
    json_value,
    normalize_datatype,
    npy_bytes,
    packet_tensors,
    put_path,
    split_url,
)

log = logging.getLogger("block_sdk.triton")

RECONNECT_MIN_INTERVAL_S = 1.0


class TritonUnhealthy(DataPlaneError):
    """Triton or the model is not ready; `details` holds the readiness document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        what = [k for k in ("server_live", "server_ready", "model_ready") if not doc.get(k)]
        reason = doc.get("error") or f"not ready: {', '.join(what)}"
        super().__init__(UNAVAILABLE, f"triton model {doc.get('model_name')!r}: {reason}", **doc)


class TritonBlock:
    """Block class mapping packets to a Triton model and back (see the module docstring)."""

    # Subclasses preset the mapping; the block's own init data overrides it key by key.
    default_init_data: ClassVar[dict[str, Any]] = {}

    def __init__(self, context: Any) -> None:
        self.context = context
        self.block_id = getattr(context, "block_id", "") or "test-block"
        init = {**self.default_init_data, **dict(getattr(context, "block_init_data", {}) or {})}
        self.init_data = init
        self.config = TritonBlockConfig.from_init_data(init)
        self.endpoint_source = "init_data" if self.config.triton_url else "init_workload"
        url, ssl = self._resolve_url()
        self.connection = self._connect(url, ssl)
        self._datatypes = {s.name: s.datatype for s in self.config.inputs if s.datatype}
        self._outputs: list[OutputSpec] = list(self.config.outputs)
        self._output_names = [o.name for o in self._outputs]
        self._metadata: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._last_reconnect = 0.0
        self.requests = 0
        self.errors = 0
        self._init_metrics()
        log.info(
            "triton block ready",
            extra={
                "triton_url": url,
                "protocol": self.config.protocol,
                "model_name": self.config.model_name,
                "endpoint_source": self.endpoint_source,
            },
        )

    # -- wiring ------------------------------------------------------------------------------
    def _resolve_url(self) -> tuple[str, bool]:
        cfg = self.config
        if cfg.triton_url:
            return cfg.triton_url, cfg.ssl
        try:
            finish = resolve_finish_data(self.block_id, self.init_data, cfg.wait_for_init_s)
        except InitError as exc:
            raise TritonConfigError(
                [f"no triton_url in the init data and no Triton from the init workload: {exc}"]
            ) from exc
        if (
            isinstance(self.init_data.get("initContainer"), dict)
            and self.init_data["initContainer"]
        ):
            self.endpoint_source = "initContainer"
        return self._url_from_finish(finish)

    def _url_from_finish(self, finish: dict[str, Any]) -> tuple[str, bool]:
        key = "grpc_url" if self.config.protocol == "grpc" else "http_url"
        url = finish.get(key) or finish.get("inference_url")
        if not isinstance(url, str) or not url:
            raise TritonConfigError(
                [f"the init workload's finish data has neither {key} nor inference_url: {finish}"]
            )
        return split_url(url)

    def _connect(self, url: str, ssl: bool) -> TritonConnection:
        cfg = self.config
        return TritonConnection(url, cfg.protocol, cfg.timeout_s, ssl=ssl, headers=cfg.headers)

    def _init_metrics(self) -> None:
        metrics = getattr(self.context, "metrics", None)
        self._metrics = metrics
        if metrics is None:
            return
        metrics.register_histogram(
            "aios_triton_infer_seconds", "Time in the Triton call", buckets=LATENCY_BUCKETS
        )
        metrics.register_counter("aios_triton_errors_total", "Failed Triton calls", ["code"])

    def _maybe_reconnect(self) -> bool:
        """After UNAVAILABLE: if the init workload now advertises another URL, switch to it."""
        if self.endpoint_source != "init_workload":
            return False
        now = time.monotonic()
        with self._lock:
            if now - self._last_reconnect < RECONNECT_MIN_INTERVAL_S:
                return False
            self._last_reconnect = now
            try:
                finish = read_finish(
                    self.block_id,
                    redis_url=self.init_data.get("init_redis_url"),
                    finish_file=self.init_data.get("init_finish_file"),
                )
            except Exception as exc:
                log.warning("re-reading finish data failed", extra={"error": str(exc)})
                return False
            if not finish:
                return False
            url, ssl = self._url_from_finish(finish)
            if url == self.connection.url:
                return False
            old, self.connection = self.connection, self._connect(url, ssl)
            log.warning("triton moved; reconnected", extra={"old": old.url, "new": url})
        old.close()
        return True

    def _ensure_metadata(self) -> None:
        """Fill datatypes / the output list from the model's metadata, once, when the config
        leaves them out."""
        needs = any(s.name not in self._datatypes for s in self.config.inputs) or not self._outputs
        if not needs or self._metadata is not None:
            return
        with self._lock:
            if self._metadata is not None:
                return
            meta = self.connection.model_metadata(self.config.model_name, self.config.model_version)
            for item in meta.get("inputs", []):
                self._datatypes.setdefault(item["name"], normalize_datatype(item["datatype"]))
            if not self._outputs:
                self._outputs = [OutputSpec(o["name"], o["name"]) for o in meta.get("outputs", [])]
                self._output_names = [o.name for o in self._outputs]
            self._metadata = meta

    # -- the SDK contract -------------------------------------------------------------------
    def on_preprocess(self, packet: Any) -> list[PreProcessResult]:
        data = packet.data
        if isinstance(data, str | bytes):
            try:
                data = json.loads(data) if data else {}
            except ValueError as exc:
                raise BlockCodeError(
                    INVALID_ARGUMENT, f"packet data is not JSON: {exc}", stage="on_preprocess"
                ) from None
        try:
            self._ensure_metadata()
            tensors = packet_tensors(self.config.inputs, self._datatypes, data, list(packet.files))
        except BlockCodeError:
            raise
        except DataPlaneError as exc:
            raise BlockCodeError(
                exc.code, exc.message, stage="on_preprocess", **exc.details
            ) from None
        return [
            PreProcessResult(
                packet=packet,
                extra_data={
                    "tensors": tensors,
                    "request_id": getattr(packet, "request_id", "") or "",
                },
            )
        ]

    def _infer(self, tensors: list[Any], request_id: str) -> dict[str, Any]:
        cfg = self.config
        try:
            return self.connection.infer(
                cfg.model_name, cfg.model_version, tensors, self._output_names, request_id
            )
        except DataPlaneError as exc:
            if exc.code == UNAVAILABLE and self._maybe_reconnect():
                return self.connection.infer(
                    cfg.model_name, cfg.model_version, tensors, self._output_names, request_id
                )
            raise

    def on_data(self, entry: PreProcessResult) -> OnDataResult:
        extra = entry.extra_data or {}
        t0 = time.perf_counter()
        self.requests += 1
        try:
            arrays = self._infer(extra["tensors"], extra.get("request_id", ""))
        except DataPlaneError as exc:
            self.errors += 1
            if self._metrics is not None:
                self._metrics.increment_counter(
                    "aios_triton_errors_total", labels={"code": exc.code}
                )
            raise BlockCodeError(exc.code, exc.message, stage="on_data", **exc.details) from None
        if self._metrics is not None:
            self._metrics.observe_histogram("aios_triton_infer_seconds", time.perf_counter() - t0)
        output: dict[str, Any] = {}
        files: list[tuple[dict[str, Any], bytes]] | None = None
        for spec in self._outputs:
            arr = arrays[spec.name]
            if spec.format == "npy":
                files = files or []
                meta = {
                    "name": spec.to,
                    "output": spec.name,
                    "format": "npy",
                    "dtype": str(arr.dtype),
                    "shape": list(arr.shape),
                }
                files.append((meta, npy_bytes(arr)))
            else:
                put_path(output, spec.to, json_value(arr))
        return OnDataResult(output=output, files=files)

    def on_update(self, params: dict[str, Any]) -> tuple[bool, Any]:
        if "timeout_s" in params:
            value = params["timeout_s"]
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                return False, "timeout_s must be a positive number"
            self.config.timeout_s = float(value)
            old, self.connection = (
                self.connection,
                self._connect(self.connection.url, self.connection.ssl),
            )
            old.close()
        return True, params

    def status(self) -> dict[str, Any]:
        """Readiness of the server and the model, never raising."""
        cfg = self.config
        state = self.connection.readiness(
            cfg.model_name, cfg.model_version, min(2.0, cfg.timeout_s)
        )
        healthy = state["server_live"] and state["server_ready"] and state["model_ready"]
        return {
            "status": "healthy" if healthy else "unhealthy",
            "triton_url": self.connection.url,
            "protocol": cfg.protocol,
            "model_name": cfg.model_name,
            "model_version": cfg.model_version,
            "endpoint_source": self.endpoint_source,
            "requests": self.requests,
            "errors": self.errors,
            **state,
        }

    def health(self) -> dict[str, Any]:
        doc = self.status()
        if doc["status"] != "healthy":
            if self.endpoint_source == "init_workload" and self._maybe_reconnect():
                doc = self.status()
            if doc["status"] != "healthy":
                raise TritonUnhealthy(doc)
        return doc

    def management(self, action: str, data: Any) -> Any:
        cfg = self.config
        if action == "status":
            return self.status()
        if action == "model_metadata":
            return self.connection.model_metadata(cfg.model_name, cfg.model_version)
        if action == "model_config":
            return self.connection.model_config(cfg.model_name, cfg.model_version)
        if action == "statistics":
            return self.connection.statistics(cfg.model_name, cfg.model_version)
        if action == "config":
            return {
                "triton_url": self.connection.url,
                "protocol": cfg.protocol,
                "model_name": cfg.model_name,
                "model_version": cfg.model_version,
                "inputs": [_spec_dict(s) for s in cfg.inputs],
                "outputs": [_spec_dict(o) for o in self._outputs],
                "timeout_s": cfg.timeout_s,
                "endpoint_source": self.endpoint_source,
            }
        if action == "reconnect":
            self._last_reconnect = 0.0
            return {"reconnected": self._maybe_reconnect(), "triton_url": self.connection.url}
        return {
            "message": f"unknown action: {action}",
            "actions": [
                "status",
                "model_metadata",
                "model_config",
                "statistics",
                "config",
                "reconnect",
            ],
        }

    def get_muxer(self) -> None:
        return None

    def close(self) -> None:
        self.connection.close()


def _spec_dict(spec: Any) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in spec.__slots__}
