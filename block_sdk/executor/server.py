"""The executor process: gRPC ingress (`BlockInferenceService`, `InferenceProxy`) and the
HTTP side (`/health`, `/metrics`, `/executor/mgmt`, `/parameters`) on one asyncio loop.

Errors leave as gRPC statuses whose detail is the JSON error document
`{"error": {"code", "message", "details"}}`; no request can wait past its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError

from block_sdk.executor.config import ExecutorConfig
from block_sdk.executor.core import Executor
from block_sdk.metrics import PROMETHEUS_CONTENT_TYPE, RingBufferHandler, configure_logging
from block_sdk.packet import (
    INVALID_ARGUMENT,
    NOT_FOUND,
    UNAUTHENTICATED,
    DataPlaneError,
    block_packet_to_aios,
)
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc
from block_sdk.protos import inference_proxy_pb2 as ppb
from block_sdk.protos import inference_proxy_pb2_grpc as ppb_grpc

log = logging.getLogger("block_sdk.executor")

GRPC_CODES: dict[str, grpc.StatusCode] = {c.name: c for c in grpc.StatusCode}


def _status(code: str) -> grpc.StatusCode:
    return GRPC_CODES.get(code, grpc.StatusCode.INTERNAL)


class _Auth:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key

    async def check(self, context: grpc.aio.ServicerContext) -> None:
        if not self.api_key:
            return
        for key, value in context.invocation_metadata() or ():
            if key in ("x-api-key", "authorization") and value in (
                self.api_key,
                f"Bearer {self.api_key}",
            ):
                return
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            DataPlaneError(UNAUTHENTICATED, "missing or wrong API key").to_json(),
        )


def _timeout(context: grpc.aio.ServicerContext, configured: float) -> float:
    remaining = context.time_remaining()
    # Finish a little before the client's own deadline so it gets our status, not its own.
    if remaining is not None:
        return max(0.001, min(configured, remaining - 0.005))
    return configured


class BlockInferenceServicer(pb_grpc.BlockInferenceServiceServicer):
    """Request/response: the answer is the instance's output AIOSPacket."""

    def __init__(self, executor: Executor, auth: _Auth) -> None:
        self.executor = executor
        self.auth = auth

    async def infer(
        self, request: pb.BlockInferencePacket, context: grpc.aio.ServicerContext
    ) -> pb.AIOSPacket:
        await self.auth.check(context)
        ex = self.executor
        if request.block_id and request.block_id != ex.block_id:
            err = DataPlaneError(
                NOT_FOUND, f"this executor serves block {ex.block_id!r}, not {request.block_id!r}"
            )
            await context.abort(_status(err.code), err.to_json())
        try:
            return await ex.submit(
                block_packet_to_aios(request),
                timeout_s=_timeout(context, ex.config.request_timeout_s),
                want_reply=True,
                frame_ptr=request.frame_ptr,
                query_parameters=request.query_parameters,
                method="infer",
            )
        except DataPlaneError as exc:
            await context.abort(_status(exc.code), exc.to_json())


class InferenceProxyServicer(ppb_grpc.InferenceProxyServicer):
    """Fire-and-forward: `rpc_data` is a serialized AIOSPacket; its output_ptr routes the
    result. `message=True` means the packet is queued on an instance."""

    def __init__(self, executor: Executor, auth: _Auth) -> None:
        self.executor = executor
        self.auth = auth

    async def infer(
        self, request: ppb.InferenceMessage, context: grpc.aio.ServicerContext
    ) -> ppb.InferenceRespose:
        await self.auth.check(context)
        try:
            packet = pb.AIOSPacket.FromString(request.rpc_data)
        except DecodeError:
            err = DataPlaneError(INVALID_ARGUMENT, "rpc_data is not a serialized AIOSPacket")
            await context.abort(_status(err.code), err.to_json())
        ex = self.executor
        try:
            await ex.submit(
                packet,
                timeout_s=ex.config.proxy_timeout_s or None,
                want_reply=False,
                method="proxy",
            )
        except DataPlaneError as exc:
            await context.abort(_status(exc.code), exc.to_json())
        return ppb.InferenceRespose(message=True)


# -- HTTP ------------------------------------------------------------------------------
def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, default=str))


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(DataPlaneError(code, message).to_dict(), status)


class ExecutorHTTP:
    """`/health`, `/metrics`, `/executor/mgmt`, `/parameters` (with `/executor/...` aliases)."""

    def __init__(self, executor: Executor, ring: RingBufferHandler | None) -> None:
        self.executor = executor
        self.ring = ring

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024, middlewares=[self._auth_middleware])
        for prefix in ("", "/executor"):
            app.router.add_get(f"{prefix}/health", self.health)
            app.router.add_get(f"{prefix}/metrics", self.metrics)
            app.router.add_post(f"{prefix}/parameters", self.parameters)
        app.router.add_post("/executor/mgmt", self.mgmt)
        app.router.add_post("/mgmt", self.mgmt)
        return app

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler):
        # Probes and scrapes stay open; commands need the key when one is configured.
        key = self.executor.config.api_key
        if key and request.method == "POST":
            given = request.headers.get("x-api-key") or request.headers.get("Authorization", "")
            if given not in (key, f"Bearer {key}"):
                return _error(401, UNAUTHENTICATED, "missing or wrong API key")
        return await handler(request)

    async def health(self, request: web.Request) -> web.Response:
        ex = self.executor
        alive = len(ex._live_list)
        body = {
            "status": "healthy"
            if ex.redis_ok and alive
            else ("degraded" if ex.redis_ok else "unhealthy"),
            "block_id": ex.block_id,
            "executor_id": ex.config.executor_id,
            "instances_alive": alive,
            "instances": list(ex._live_list),
            "redis": ex.redis_ok,
            "pending": len(ex.demux),
        }
        # No live instance is "degraded", not down: the executor can still answer UNAVAILABLE.
        return _json(body, 200 if ex.redis_ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.executor.metrics.exposition(),
            headers={"Content-Type": PROMETHEUS_CONTENT_TYPE},
        )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise DataPlaneError(INVALID_ARGUMENT, "body is not JSON") from None
        if not isinstance(body, dict):
            raise DataPlaneError(INVALID_ARGUMENT, "body must be a JSON object")
        return body

    async def parameters(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
        except DataPlaneError as exc:
            return _json(exc.to_dict(), 400)
        params = body.get("parameters", body)
        if not isinstance(params, dict):
            return _error(400, INVALID_ARGUMENT, "parameters must be an object")
        wait = body.get("wait_s")
        result = await self.executor.push_parameters(
            params, float(wait) if wait is not None else None
        )
        return _json(result)

    async def mgmt(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
        except DataPlaneError as exc:
            return _json(exc.to_dict(), 400)
        action = body.get("mgmt_action", body.get("action"))
        data = body.get("mgmt_data", body.get("data")) or {}
        if not action:
            return _error(400, INVALID_ARGUMENT, "mgmt_action is required")
        ex = self.executor
        try:
            if action in ("get_mapping", "mapping", "current_mapping"):
                result: Any = ex.mapping()
            elif action in ("list_instances", "instances"):
                result = {"instances": ex.list_instances()}
            elif action in ("logs", "get_logs"):
                n = int(data.get("n", data.get("lines", 100))) if isinstance(data, dict) else 100
                result = {"lines": self.ring.tail(n) if self.ring else []}
            elif action == "set_lb_policy":
                if not isinstance(data, dict) or not data.get("name"):
                    return _error(400, INVALID_ARGUMENT, "set_lb_policy needs data.name")
                ex.set_policy(str(data["name"]), data.get("parameters"), data.get("settings"))
                result = ex.mapping()
            elif action in ("get_config", "config"):
                result = ex.config.to_dict()
            elif action == "stats":
                result = ex.stats()
            elif action == "refresh":
                await ex.refresh()
                result = {"instances": list(ex._live_list)}
            else:
                # Anything else is the load-balancer policy's own management command.
                handler = getattr(ex.policy, "management", None)
                if handler is None:
                    raise KeyError(action)
                result = handler(action, data)
        except KeyError:
            return _error(400, INVALID_ARGUMENT, f"unknown management action {action!r}")
        except ValueError as exc:
            return _error(400, INVALID_ARGUMENT, str(exc))
        except DataPlaneError as exc:
            return _json(exc.to_dict(), 400)
        return _json({"mgmt_action": action, "result": result})


# -- process ---------------------------------------------------------------------------
class ExecutorServer:
    """Owns the executor, its gRPC server and its HTTP runner."""

    def __init__(self, config: ExecutorConfig, ring: RingBufferHandler | None = None) -> None:
        self.config = config
        self.executor = Executor(config)
        self.ring = ring
        self.grpc_port: int | None = None
        self.http_port: int | None = None

    async def start(self) -> None:
        cfg = self.config
        await self.executor.start()
        max_bytes = cfg.grpc_max_message_mb * 1024 * 1024
        self.grpc_server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
                ("grpc.so_reuseport", 0),
            ]
        )
        auth = _Auth(cfg.api_key)
        pb_grpc.add_BlockInferenceServiceServicer_to_server(
            BlockInferenceServicer(self.executor, auth), self.grpc_server
        )
        ppb_grpc.add_InferenceProxyServicer_to_server(
            InferenceProxyServicer(self.executor, auth), self.grpc_server
        )
        self.grpc_port = self.grpc_server.add_insecure_port(f"{cfg.grpc_host}:{cfg.grpc_port}")
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC port {cfg.grpc_port}")
        await self.grpc_server.start()
        self.http_runner = web.AppRunner(
            ExecutorHTTP(self.executor, self.ring).app(), access_log=None
        )
        await self.http_runner.setup()
        site = web.TCPSite(self.http_runner, cfg.http_host, cfg.http_port)
        await site.start()
        socks = site._server.sockets if site._server else []
        self.http_port = socks[0].getsockname()[1] if socks else cfg.http_port
        log.info(
            "executor ready",
            extra={
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "lb_policy": cfg.lb_policy,
                "instances": list(self.executor._live_list),
            },
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        await self.grpc_server.stop(grace_s)
        await self.http_runner.cleanup()
        await self.executor.stop()


async def serve(config: ExecutorConfig, ring: RingBufferHandler | None = None) -> None:
    server = ExecutorServer(config, ring)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    log.info("executor stopping")
    await server.stop()
    log.info("executor stopped")


def run(config: ExecutorConfig) -> None:
    ring = configure_logging(
        {"block_id": config.block_id, "executor_id": config.executor_id}, config.log_level
    )
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:  # optional speed-up only
        pass
    asyncio.run(serve(config, ring))
