"""The vDAG controller process: gRPC `vDAGInferenceService` in front of a compiled graph, and
its REST management API (aiohttp).

Per request: check the API key, run the `quotaChecker` policy (Redis counters), send the packet
to the graph's heads and await every tail (`block_sdk.vdag.runner`), answer, then hand the
request/response pair to the background quality checker. The answer's `data` is the tail's
output `data` for one tail, a JSON object keyed by tail label for several; files of the tails
are passed back; `frame_ptr`, `session_id`, `seq_no` and `ts` are the request's. Failures are
gRPC statuses whose detail is the JSON error document (`RESOURCE_EXHAUSTED` for quota,
`DEADLINE_EXCEEDED`, the failing block's code otherwise).

The controller also serves `InferenceProxy`: blocks in other clusters deliver results to it
over gRPC (a result for another replica of the controller is passed on through Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError

from block_sdk.metrics import PROMETHEUS_CONTENT_TYPE, configure_logging
from block_sdk.packet import INVALID_ARGUMENT, RESOURCE_EXHAUSTED, DataPlaneError
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.protos import inference_proxy_pb2 as ppb
from block_sdk.protos import inference_proxy_pb2_grpc as ppb_grpc
from block_sdk.protos import vdag_packet_pb2 as vpb
from block_sdk.protos import vdag_packet_pb2_grpc as vpb_grpc
from block_sdk.queues import connect
from block_sdk.vdag.hops import FINAL_TTL_MS, HopTransport
from block_sdk.vdag.resolvers import policy_resolver
from block_sdk.vdag.route import parse_doc
from block_sdk.vdag.runner import GraphRunner, ResultCollector, final_list_key
from block_sdk.vdag.serving import (
    ApiKey,
    PolicyHandle,
    announce_ready,
    errors_middleware,
    json_response,
    policy_spec,
    read_json,
    status_of,
    time_left,
)
from block_sdk.vdag_controller.config import (
    DEFAULT_QUALITY_POLICY,
    DEFAULT_QUOTA_POLICY,
    ControllerConfig,
)
from block_sdk.vdag_controller.health import HealthChecker
from block_sdk.vdag_controller.metrics import ControllerMetrics, push_loop
from block_sdk.vdag_controller.quality import HttpSink, QualityChecker, RedisStreamSink, load_sink
from block_sdk.vdag_controller.quota import QuotaChecker, QuotaTable, add_quota_routes

log = logging.getLogger("block_sdk.vdag_controller")


def request_summary(request: vpb.vDAGInferencePacket) -> dict[str, Any]:
    return {
        "session_id": request.session_id,
        "seq_no": int(request.seq_no),
        "ts": float(request.ts),
        "files": len(request.files),
    }


class VdagController:
    """Everything but the network listeners; `start()`/`stop()` on the running loop."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.graph = config.compiled_graph()
        self.metrics = ControllerMetrics(
            {"vdag": config.vdag_uri, "controller_id": config.controller_id}
        )
        self.started_at = time.time()
        self.results_over_grpc = 0
        self._tasks: list[asyncio.Task] = []

    def _policy(self, value: Any, default: str | None) -> PolicyHandle | None:
        spec = policy_spec(value, default)
        if spec is None:
            return None
        return PolicyHandle(spec, self.resolver, self.config.policy_mode)

    async def start(self) -> None:
        cfg = self.config
        self.redis = connect(cfg.redis_url, max_connections=512)
        self.resolver = policy_resolver(cfg.api_url, cfg.api_token, cfg.policy_dir)
        # Policies load now: a missing or broken one stops the start, not the first request.
        self.quota = QuotaChecker(
            QuotaTable(self.redis, cfg.redis_prefix),
            self._policy(cfg.quota_policy, DEFAULT_QUOTA_POLICY),
        )
        sinks: list[Any] = [
            RedisStreamSink(self.redis, f"{cfg.redis_prefix}:quality", cfg.quality_stream_maxlen)
        ]
        if cfg.quality_sink_url:
            sinks.append(HttpSink(cfg.quality_sink_url, cfg.api_token))
        for spec in cfg.quality_sinks:
            sinks.append(load_sink(spec, config=cfg))
        self.stream_sink = sinks[0]
        self.quality = QualityChecker(
            self._policy(cfg.quality_policy, DEFAULT_QUALITY_POLICY),
            sinks,
            vdag_info={"vdag": cfg.vdag_uri, "controller_id": cfg.controller_id},
            queue_max=cfg.quality_queue_max,
        )
        self.health = HealthChecker(
            self.graph,
            self._policy(cfg.health_policy, None),
            vdag_uri=cfg.vdag_uri,
            redis=self.redis,
            redis_key=f"{cfg.redis_prefix}:health",
            interval_s=cfg.health_interval_s,
            timeout_s=cfg.health_timeout_s,
        )
        self.transport = HopTransport(
            cluster_id=cfg.cluster_id,
            redis_url=cfg.redis_url,
            redis=self.redis,
            grpc_timeout_s=cfg.hop_timeout_s,
            api_key=cfg.api_key,
        )
        self.collector = ResultCollector(self.redis, final_list_key(cfg.controller_id))
        self.collector.start()
        final: dict[str, Any] = {"cluster_id": cfg.cluster_id, "redis_url": cfg.redis_url}
        if cfg.advertise_grpc:
            final["grpc"] = cfg.advertise_grpc
        self.runner = GraphRunner(
            self.transport, self.collector, final=final, vdag_uri=cfg.vdag_uri
        )
        self.quality.start()
        self.health.start()
        self._tasks.append(
            asyncio.create_task(
                push_loop(
                    self.metrics,
                    self.redis,
                    [("vdag", cfg.vdag_uri), ("vdag_controller", cfg.controller_id)],
                    cfg.metrics_interval_s,
                    cfg.metrics_ttl_s,
                    extra=lambda: {
                        "quota_denied_total": float(self.quota.denied),
                        "quality_recorded_total": float(self.quality.recorded),
                    },
                ),
                name="metrics-push",
            )
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.quality.stop()
        await self.health.stop()
        await self.collector.stop()
        await self.transport.close()
        await self.redis.aclose()

    # -- inference -------------------------------------------------------------------------
    async def infer(
        self, request: vpb.vDAGInferencePacket, timeout_s: float
    ) -> vpb.vDAGInferencePacket:
        """Raises DataPlaneError."""
        t0 = time.perf_counter()
        code = "OK"
        self.metrics.inflight += 1
        try:
            if not request.session_id:
                raise DataPlaneError(INVALID_ARGUMENT, "session_id is required")
            if request.data:
                try:
                    json.loads(request.data)
                except ValueError:
                    raise DataPlaneError(INVALID_ARGUMENT, "data must be a JSON string") from None
            if self.metrics.inflight > self.config.max_inflight:
                raise DataPlaneError(
                    RESOURCE_EXHAUSTED,
                    f"controller has {self.config.max_inflight} requests in flight",
                )
            await self.quota.check(request.session_id, request_summary(request))
            packet = pb.AIOSPacket(
                session_id=request.session_id,
                seq_no=request.seq_no,
                data=request.data,
                ts=request.ts,
            )
            for f in request.files:
                packet.files.add(metadata=f.metadata, file_data=f.file_data)
            result = await self.runner.run(
                self.graph, packet, timeout_s=timeout_s, frame_ptr=request.frame_ptr
            )
            data, files = result.combined()
            response = vpb.vDAGInferencePacket(
                session_id=request.session_id,
                seq_no=request.seq_no,
                frame_ptr=request.frame_ptr,
                data=data,
                ts=request.ts,
            )
            for f in files:
                response.files.add(metadata=f.metadata, file_data=f.file_data)
            self.quality.submit(request, response)
            return response
        except DataPlaneError as exc:
            code = exc.code
            raise
        finally:
            self.metrics.inflight -= 1
            self.metrics.observe(code, time.perf_counter() - t0)

    async def deliver_result(self, packet: pb.AIOSPacket) -> None:
        """A result that came over gRPC; one for another replica goes to its Redis list."""
        self.results_over_grpc += 1
        if self.collector.deliver(packet):
            return
        doc = parse_doc(packet.output_ptr) or {}
        target = doc.get("list")
        if isinstance(target, str) and target and target != self.collector.list_key:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(target, packet.SerializeToString())
            pipe.pexpire(target, FINAL_TTL_MS)
            await pipe.execute()


class VdagServicer(vpb_grpc.vDAGInferenceServiceServicer):
    def __init__(self, controller: VdagController, auth: ApiKey) -> None:
        self.controller = controller
        self.auth = auth

    async def infer(
        self, request: vpb.vDAGInferencePacket, context: grpc.aio.ServicerContext
    ) -> vpb.vDAGInferencePacket:
        await self.auth.check(context)
        timeout = time_left(context, self.controller.config.request_timeout_s)
        try:
            return await self.controller.infer(request, timeout)
        except DataPlaneError as exc:
            await context.abort(status_of(exc.code), exc.to_json())


class ResultProxyServicer(ppb_grpc.InferenceProxyServicer):
    """Results from blocks of other clusters (`rpc_data` = serialized AIOSPacket)."""

    def __init__(self, controller: VdagController, auth: ApiKey) -> None:
        self.controller = controller
        self.auth = auth

    async def infer(
        self, request: ppb.InferenceMessage, context: grpc.aio.ServicerContext
    ) -> ppb.InferenceRespose:
        await self.auth.check(context)
        try:
            packet = pb.AIOSPacket.FromString(request.rpc_data)
        except DecodeError:
            err = DataPlaneError(INVALID_ARGUMENT, "rpc_data is not a serialized AIOSPacket")
            await context.abort(status_of(err.code), err.to_json())
        await self.controller.deliver_result(packet)
        return ppb.InferenceRespose(message=True)


class ControllerHTTP:
    """REST management: quota, quality, health, metrics."""

    def __init__(self, controller: VdagController) -> None:
        self.c = controller

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_middleware], client_max_size=1024 * 1024)
        add_quota_routes(app, self.c.quota)
        app.router.add_post("/quality-check/mgmt", self.quality_mgmt)
        app.router.add_get("/health/check", self.health_check)
        app.router.add_post("/health/mgmt", self.health_mgmt)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/graph", self.graph)
        return app

    @staticmethod
    async def _mgmt(request: web.Request) -> tuple[str, Any]:
        body = await read_json(request)
        action = body.get("mgmt_action", body.get("action"))
        if not action:
            raise DataPlaneError(INVALID_ARGUMENT, "mgmt_action is required")
        return str(action), body.get("mgmt_data", body.get("data"))

    async def quality_mgmt(self, request: web.Request) -> web.Response:
        action, data = await self._mgmt(request)
        q = self.c.quality
        if action in ("stats", "get_state_controller"):
            result: Any = q.stats()
        elif action in ("get_samples", "recent"):
            count = int((data or {}).get("count", 10)) if isinstance(data, dict) else 10
            result = {"samples": await self.c.stream_sink.recent(count)}
        elif action == "set_parameters":
            if q.policy is None or not isinstance(data, dict):
                raise DataPlaneError(
                    INVALID_ARGUMENT,
                    "set_parameters needs an object and a configured quality policy",
                )
            result = {"parameters": q.policy.set_parameters(data)}
        else:
            if q.policy is None:
                raise DataPlaneError("FAILED_PRECONDITION", "no quality policy is configured")
            try:
                result = await q.policy.management(action, data)
            except Exception as exc:
                raise DataPlaneError(INVALID_ARGUMENT, f"{action!r} failed: {exc}") from exc
        return json_response({"mgmt_action": action, "result": result})

    async def health_check(self, request: web.Request) -> web.Response:
        return json_response(await self.c.health.check())

    async def health_mgmt(self, request: web.Request) -> web.Response:
        action, data = await self._mgmt(request)
        h = self.c.health
        if action in ("get_last", "last"):
            result: Any = h.last
        elif action == "set_interval":
            if not isinstance(data, dict) or not isinstance(data.get("interval_s"), int | float):
                raise DataPlaneError(INVALID_ARGUMENT, "set_interval needs {'interval_s': n}")
            h.interval_s = float(data["interval_s"])
            result = {"interval_s": h.interval_s}
        elif action == "check":
            result = await h.check()
        else:
            if h.policy is None:
                raise DataPlaneError(
                    INVALID_ARGUMENT,
                    f"unknown action {action!r} (get_last, set_interval, check; no health "
                    "policy is configured)",
                )
            try:
                result = await h.policy.management(action, data)
            except Exception as exc:
                raise DataPlaneError(INVALID_ARGUMENT, f"{action!r} failed: {exc}") from exc
        return json_response({"mgmt_action": action, "result": result})

    async def health(self, request: web.Request) -> web.Response:
        c = self.c
        try:
            await c.redis.ping()
            redis_ok = True
        except Exception:
            redis_ok = False
        return json_response(
            {
                "status": "healthy" if redis_ok else "unhealthy",
                "vdag": c.config.vdag_uri,
                "controller_id": c.config.controller_id,
                "redis": redis_ok,
                "inflight": c.metrics.inflight,
                "requests_total": c.metrics.total,
                "results_over_grpc": c.results_over_grpc,
                "uptime_s": time.time() - c.started_at,
                "last_health_check": (c.health.last or {}).get("healthy"),
            },
            200 if redis_ok else 503,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.c.metrics.exposition(self.c.quality.stats()),
            headers={"Content-Type": PROMETHEUS_CONTENT_TYPE},
        )

    async def graph(self, request: web.Request) -> web.Response:
        return json_response({"vdag": self.c.config.vdag_uri, "graph": self.c.graph.to_dict()})


class ControllerServer:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.controller = VdagController(config)
        self.grpc_port: int | None = None
        self.http_port: int | None = None

    async def start(self) -> None:
        cfg = self.config
        await self.controller.start()
        self.grpc_server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        auth = ApiKey(cfg.api_key)
        vpb_grpc.add_vDAGInferenceServiceServicer_to_server(
            VdagServicer(self.controller, auth), self.grpc_server
        )
        ppb_grpc.add_InferenceProxyServicer_to_server(
            ResultProxyServicer(self.controller, auth), self.grpc_server
        )
        self.grpc_port = self.grpc_server.add_insecure_port(f"{cfg.grpc_host}:{cfg.grpc_port}")
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC port {cfg.grpc_port}")
        await self.grpc_server.start()
        self.runner = web.AppRunner(ControllerHTTP(self.controller).app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, cfg.http_host, cfg.http_port)
        await site.start()
        socks = site._server.sockets if site._server else []
        self.http_port = socks[0].getsockname()[1] if socks else cfg.http_port
        log.info(
            "vdag controller ready",
            extra={
                "vdag": cfg.vdag_uri,
                "controller_id": cfg.controller_id,
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "nodes": len(self.controller.graph.nodes),
                "pid": os.getpid(),
            },
        )
        announce_ready("vdag_controller", grpc_port=self.grpc_port, http_port=self.http_port)

    async def stop(self, grace_s: float = 5.0) -> None:
        await self.grpc_server.stop(grace_s)
        await self.runner.cleanup()
        await self.controller.stop()


async def serve(config: ControllerConfig) -> None:
    server = ControllerServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    log.info("vdag controller stopping")
    await server.stop()


def run(config: ControllerConfig) -> None:
    configure_logging(
        {"vdag": config.vdag_uri, "controller_id": config.controller_id}, config.log_level
    )
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:  # optional speed-up only
        pass
    asyncio.run(serve(config))
