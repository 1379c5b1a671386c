"""A `tritonclient` connection for one block instance, over HTTP or gRPC, with errors mapped to
data-plane error codes.

Connections are made once and reused: the gRPC client is thread-safe (one per instance); the
HTTP client is not (tritonclient says so), so each worker thread keeps its own, created on
first use. Inputs travel as binary tensors on both protocols (no JSON number encoding).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from typing import Any

import numpy as np

from block_sdk.packet import (
    DEADLINE_EXCEEDED,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    DataPlaneError,
)

log = logging.getLogger("block_sdk.triton")

_GRPC_CODES = {
    "INVALID_ARGUMENT": INVALID_ARGUMENT,
    "UNAVAILABLE": UNAVAILABLE,
    "DEADLINE_EXCEEDED": DEADLINE_EXCEEDED,
    "NOT_FOUND": NOT_FOUND,
    "RESOURCE_EXHAUSTED": RESOURCE_EXHAUSTED,
    "UNIMPLEMENTED": INTERNAL,
}
_HTTP_CODES = {
    "400": INVALID_ARGUMENT,
    "404": NOT_FOUND,
    "429": RESOURCE_EXHAUSTED,
    "503": UNAVAILABLE,
}


def map_error(exc: BaseException, url: str, model: str) -> DataPlaneError:
    """A tritonclient / socket failure as a DataPlaneError the block's caller can act on."""
    if isinstance(exc, DataPlaneError):
        return exc
    status = ""
    message = str(exc)
    status_fn = getattr(exc, "status", None)
    if callable(status_fn):
        status = str(status_fn() or "")
        msg_fn = getattr(exc, "message", None)
        message = str(msg_fn() if callable(msg_fn) else exc)
    code = INTERNAL
    if status.startswith("StatusCode."):
        code = _GRPC_CODES.get(status.removeprefix("StatusCode."), INTERNAL)
    elif status in _HTTP_CODES:
        code = _HTTP_CODES[status]
    elif (
        isinstance(exc, TimeoutError | socket.timeout)
        or "timed out" in message.lower()
        or "deadline" in message.lower()
    ):
        code = DEADLINE_EXCEEDED
    elif (
        isinstance(exc, OSError) or "connect" in message.lower() or "unavailable" in message.lower()
    ):
        code = UNAVAILABLE
    where = f"triton {model!r} at {url}" if model else f"triton at {url}"
    return DataPlaneError(code, f"{where}: {message}", triton_url=url, model_name=model)


class TritonConnection:
    """Calls one Triton server; `infer()` returns `{output name: numpy array}`."""

    def __init__(
        self,
        url: str,
        protocol: str,
        timeout_s: float,
        *,
        ssl: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.ssl = ssl
        self.headers = dict(headers or {}) or None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Any] = []
        if protocol == "grpc":
            import tritonclient.grpc as grpcclient

            self._mod = grpcclient
            self._shared = grpcclient.InferenceServerClient(url=url, ssl=ssl)
            self._clients.append(self._shared)
        else:
            import tritonclient.http as httpclient

            self._mod = httpclient
            self._shared = None

    # -- clients -----------------------------------------------------------------------------
    def client(self) -> Any:
        if self._shared is not None:
            return self._shared
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._mod.InferenceServerClient(
                url=self.url,
                connection_timeout=self.timeout_s,
                network_timeout=self.timeout_s,
                ssl=self.ssl,
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def reset_thread_client(self) -> None:
        """Drop this thread's HTTP client (after a broken connection); the next call reconnects."""
        client = getattr(self._local, "client", None)
        if client is not None:
            self._local.client = None
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            # A broken client may fail to close; it is dropped either way.
            with contextlib.suppress(Exception):
                client.close()

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception as exc:
                log.debug("closing triton client failed", extra={"error": str(exc)})

    # -- calls -------------------------------------------------------------------------------
    def _kw(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self.headers:
            kw["headers"] = self.headers
        if self.protocol == "grpc":
            kw["client_timeout"] = self.timeout_s
        return kw

    def infer(
        self,
        model_name: str,
        model_version: str,
        tensors: list[tuple[str, str, np.ndarray]],
        output_names: list[str],
        request_id: str = "",
    ) -> dict[str, np.ndarray]:
        mod = self._mod
        inputs = []
        for name, datatype, arr in tensors:
            item = mod.InferInput(name, list(arr.shape), datatype)
            if self.protocol == "http":
                item.set_data_from_numpy(arr, binary_data=True)
            else:
                item.set_data_from_numpy(arr)
            inputs.append(item)
        if self.protocol == "http":
            outputs = [mod.InferRequestedOutput(n, binary_data=True) for n in output_names]
        else:
            outputs = [mod.InferRequestedOutput(n) for n in output_names]
        try:
            result = self.client().infer(
                model_name,
                inputs,
                model_version=model_version,
                outputs=outputs or None,
                request_id=request_id,
                **self._kw(),
            )
        except Exception as exc:
            err = map_error(exc, self.url, model_name)
            if self.protocol == "http" and err.code in (UNAVAILABLE, DEADLINE_EXCEEDED):
                self.reset_thread_client()
            raise err from exc
        names = list(output_names)
        if not names:
            resp = result.get_response()
            if self.protocol == "http":
                names = [o["name"] for o in resp.get("outputs", [])]
            else:
                names = [o.name for o in resp.outputs]
        out = {}
        for name in names:
            arr = result.as_numpy(name)
            if arr is None:
                raise DataPlaneError(
                    INTERNAL, f"triton {model_name!r} returned no output {name!r}", output=name
                )
            out[name] = arr
        return out

    def _ask(self, fn: str, *args: Any, **kw: Any) -> Any:
        client = self.client()
        extra = {"headers": self.headers} if self.headers else {}
        if self.protocol == "grpc":
            extra["client_timeout"] = min(self.timeout_s, kw.pop("timeout_s", self.timeout_s))
        kw.pop("timeout_s", None)
        try:
            return getattr(client, fn)(*args, **kw, **extra)
        except Exception as exc:
            err = map_error(exc, self.url, str(args[0]) if args else "")
            if self.protocol == "http" and err.code in (UNAVAILABLE, DEADLINE_EXCEEDED):
                self.reset_thread_client()
            raise err from exc

    def readiness(
        self, model_name: str, model_version: str, timeout_s: float = 2.0
    ) -> dict[str, Any]:
        """`{"server_live", "server_ready", "model_ready"}`; an unreachable server is all False
        plus `error`."""
        state: dict[str, Any] = {"server_live": False, "server_ready": False, "model_ready": False}
        try:
            state["server_live"] = bool(self._ask("is_server_live", timeout_s=timeout_s))
            state["server_ready"] = bool(self._ask("is_server_ready", timeout_s=timeout_s))
            state["model_ready"] = bool(
                self._ask("is_model_ready", model_name, model_version, timeout_s=timeout_s)
            )
        except DataPlaneError as exc:
            state["error"] = exc.message
        return state

    def model_metadata(self, model_name: str, model_version: str) -> dict[str, Any]:
        """The model's inputs/outputs as plain dicts (same shape on both protocols)."""
        if self.protocol == "grpc":
            meta = self._ask("get_model_metadata", model_name, model_version, as_json=True)
            for key in ("inputs", "outputs"):
                for t in meta.get(key, []):
                    t["shape"] = [int(d) for d in t.get("shape", [])]
            return meta
        return self._ask("get_model_metadata", model_name, model_version)

    def model_config(self, model_name: str, model_version: str) -> dict[str, Any]:
        if self.protocol == "grpc":
            return self._ask("get_model_config", model_name, model_version, as_json=True)
        return self._ask("get_model_config", model_name, model_version)

    def statistics(self, model_name: str, model_version: str) -> dict[str, Any]:
        if self.protocol == "grpc":
            return self._ask("get_inference_statistics", model_name, model_version, as_json=True)
        return self._ask("get_inference_statistics", model_name, model_version)
