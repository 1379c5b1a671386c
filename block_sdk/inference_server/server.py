"""The adhoc inference server process: gRPC `BlockInferenceService.infer` by `block_id`, by
`query_parameters` (search), or along a dynamic graph in `output_ptr`; quota; request logs.

Per request: API key, quota policy (Redis counters, as the vDAG controller), then

* `output_ptr = {"graph": {blk: [children]}}` (with `block_id` = the head): the graph is
  compiled on the fly (cached by its text), every block's executor address looked up, and the
  request runs like a vDAG (`block_sdk.vdag.runner`): hops straight between blocks, fan-out,
  fan-in, one result per tail. The answer's `data` is the tail's, or a JSON object keyed by
  tail block id. Dynamic graphs run no pre/post policies (AIOS semantics).
* `block_id`: the block's executor `BlockInferenceService.infer` (its load balancer, its
  queue); `frame_ptr`, `query_parameters`, files and `output_ptr` pass through.
* `query_parameters` without `block_id`: the control plane's search picks the block (cached
  per session), then as by id.

Every request is logged (request id, session, block, seq_no, ts, data, query_parameters,
output_ptr) through a batching writer; `GET /logs/...` reads them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
import uuid
from collections import OrderedDict
from typing import Any

import grpc
from aiohttp import web
from google.protobuf.message import DecodeError
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from block_sdk.inference_server.config import DEFAULT_QUOTA_POLICY, ServerConfig
from block_sdk.inference_server.directory import BlockDirectory, BlockSearch
from block_sdk.inference_server.request_log import RequestLogWriter, create_table, make_row
from block_sdk.metrics import LATENCY_BUCKETS, PROMETHEUS_CONTENT_TYPE, configure_logging
from block_sdk.packet import (
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    DataPlaneError,
)
from block_sdk.protos import aios_packet_pb2 as pb
from block_sdk.protos import aios_packet_pb2_grpc as pb_grpc
from block_sdk.protos import inference_proxy_pb2 as ppb
from block_sdk.protos import inference_proxy_pb2_grpc as ppb_grpc
from block_sdk.queues import connect
from block_sdk.vdag.graph import CompiledGraph, GraphError, compile_dynamic_graph
from block_sdk.vdag.hops import HopTransport, grpc_error
from block_sdk.vdag.resolvers import policy_resolver
from block_sdk.vdag.runner import GraphRunner, ResultCollector, final_list_key
from block_sdk.vdag.serving import (
    ApiKey,
    PolicyHandle,
    announce_ready,
    errors_middleware,
    json_response,
    policy_spec,
    status_of,
    time_left,
)
from block_sdk.vdag_controller.quota import QuotaChecker, QuotaTable, add_quota_routes

log = logging.getLogger("block_sdk.inference_server")


def dynamic_graph_map(output_ptr: str) -> dict[str, Any] | None:
    """The `{"graph": {...}}` of a request's output_ptr, or None."""
    if not output_ptr or not output_ptr.lstrip().startswith("{"):
        return None
    try:
        doc = json.loads(output_ptr)
    except ValueError:
        raise DataPlaneError(INVALID_ARGUMENT, "output_ptr is not JSON") from None
    if isinstance(doc, dict) and isinstance(doc.get("graph"), dict):
        return doc["graph"]
    return None


class InferenceServer:
    """Everything but the listeners; `start()` / `stop()` on the running loop."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "inference_requests_total",
            "Requests answered",
            ["mode", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "inference_latency_seconds",
            "Request latency",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._graphs: OrderedDict[tuple[str, str], tuple[float, CompiledGraph]] = OrderedDict()
        self.inflight = 0
        self.started_at = time.time()
        self.log_writer: RequestLogWriter | None = None

    async def start(self) -> None:
        cfg = self.config
        self.redis = connect(cfg.redis_url, max_connections=512)
        resolver = policy_resolver(cfg.api_url, cfg.api_token, cfg.policy_dir)
        spec = policy_spec(cfg.quota_policy, DEFAULT_QUOTA_POLICY)
        self.quota = QuotaChecker(
            QuotaTable(self.redis, cfg.redis_prefix),
            PolicyHandle(spec, resolver, cfg.policy_mode) if spec else None,
        )
        self.directory = BlockDirectory(
            self.redis, key=cfg.executors_key, static=cfg.executors, cache_s=cfg.executors_cache_s
        )
        self.search = BlockSearch(
            self.directory,
            self.redis,
            cache_prefix=cfg.redis_prefix,
            api_url=cfg.api_url,
            api_token=cfg.api_token,
            path=cfg.search_path,
            timeout_s=cfg.search_timeout_s,
            session_ttl_s=cfg.session_cache_ttl_s,
        )
        self.transport = HopTransport(
            cluster_id=cfg.cluster_id,
            redis_url=cfg.redis_url,
            redis=self.redis,
            grpc_timeout_s=cfg.hop_timeout_s,
            api_key=cfg.api_key,
        )
        self.collector = ResultCollector(self.redis, final_list_key(cfg.server_id))
        self.collector.start()
        final: dict[str, Any] = {"cluster_id": cfg.cluster_id, "redis_url": cfg.redis_url}
        if cfg.advertise_grpc:
            final["grpc"] = cfg.advertise_grpc
        self.runner = GraphRunner(self.transport, self.collector, final=final)
        self._channels: dict[str, grpc.aio.Channel] = {}
        if cfg.log_dsn:
            if cfg.create_log_table:
                await asyncio.to_thread(create_table, cfg.log_dsn, cfg.log_table)
            self.log_writer = RequestLogWriter(
                cfg.log_dsn,
                table=cfg.log_table,
                flush_ms=cfg.log_flush_ms,
                batch_rows=cfg.log_batch_rows,
                buffer_max=cfg.log_buffer_max,
            )
            self.log_writer.start()

    async def stop(self) -> None:
        await self.collector.stop()
        await self.transport.close()
        await self.search.close()
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        if self.log_writer is not None:
            await asyncio.to_thread(self.log_writer.stop, 5.0)
        await self.redis.aclose()

    # -- modes -----------------------------------------------------------------------------
    def _stub(self, address: str) -> pb_grpc.BlockInferenceServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ],
            )
        return pb_grpc.BlockInferenceServiceStub(channel)

    async def _by_block(
        self,
        request: pb.BlockInferencePacket,
        block_id: str,
        address: dict[str, Any],
        timeout_s: float,
    ) -> pb.AIOSPacket:
        grpc_addr = address.get("grpc")
        if not grpc_addr:
            raise DataPlaneError(
                UNAVAILABLE,
                f"block {block_id} has no gRPC endpoint in its address",
                block_id=block_id,
            )
        forward = pb.BlockInferencePacket()
        forward.CopyFrom(request)
        forward.block_id = block_id
        metadata = (("x-api-key", self.config.api_key),) if self.config.api_key else None
        try:
            return await self._stub(str(grpc_addr)).infer(
                forward, timeout=timeout_s, metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            raise grpc_error(exc, f"block {block_id}") from None

    async def _graph(self, graph_map: dict[str, Any], head: str, output_ptr: str) -> CompiledGraph:
        key = (output_ptr, head)
        hit = self._graphs.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.config.executors_cache_s:
            self._graphs.move_to_end(key)
            return hit[1]
        try:
            graph = compile_dynamic_graph(graph_map, head)
        except GraphError as exc:
            raise DataPlaneError(
                INVALID_ARGUMENT,
                f"dynamic graph in output_ptr: {exc.message}",
                pointer=exc.pointer,
            ) from None
        addresses = {b: await self.directory.require(b) for b in graph.block_ids()}
        graph = graph.with_executors(addresses)
        self._graphs[key] = (now, graph)
        while len(self._graphs) > self.config.graph_cache_max:
            self._graphs.popitem(last=False)
        return graph

    async def infer(self, request: pb.BlockInferencePacket, timeout_s: float) -> pb.AIOSPacket:
        t0 = time.perf_counter()
        mode, code = "block", "OK"
        self.inflight += 1
        try:
            if not request.session_id:
                raise DataPlaneError(INVALID_ARGUMENT, "session_id is required")
            if request.data:
                try:
                    json.loads(request.data)
                except ValueError:
                    raise DataPlaneError(INVALID_ARGUMENT, "data must be a JSON string") from None
            if self.inflight > self.config.max_inflight:
                raise DataPlaneError(
                    RESOURCE_EXHAUSTED, f"server has {self.config.max_inflight} requests in flight"
                )
            graph_map = dynamic_graph_map(request.output_ptr)
            if graph_map is not None:
                mode = "graph"
                if not request.block_id:
                    raise DataPlaneError(
                        INVALID_ARGUMENT, "a graph request needs block_id set to its head block"
                    )
            elif request.block_id:
                mode = "block"
            elif request.query_parameters:
                mode = "query"
            else:
                raise DataPlaneError(
                    INVALID_ARGUMENT,
                    "say where the request goes: block_id, query_parameters, or a graph in "
                    "output_ptr",
                )
            await self.quota.check(
                request.session_id,
                {
                    "session_id": request.session_id,
                    "seq_no": int(request.seq_no),
                    "block_id": request.block_id,
                    "mode": mode,
                },
            )
            block_id = request.block_id
            if mode == "query":
                block_id, address = await self.search.choose(
                    request.session_id, request.query_parameters
                )
            self._log(request, block_id)
            if mode == "graph":
                return await self._run_graph(request, graph_map, timeout_s)  # type: ignore[arg-type]
            if mode == "block":
                address = await self.directory.require(block_id)
            return await self._by_block(request, block_id, address, timeout_s)
        except DataPlaneError as exc:
            code = exc.code
            raise
        finally:
            self.inflight -= 1
            self.requests.labels(mode=mode, code=code).inc()
            if code == "OK":
                self.latency.labels(mode=mode).observe(time.perf_counter() - t0)

    async def _run_graph(
        self, request: pb.BlockInferencePacket, graph_map: dict[str, Any], timeout_s: float
    ) -> pb.AIOSPacket:
        graph = await self._graph(graph_map, request.block_id, request.output_ptr)
        packet = pb.AIOSPacket(
            session_id=request.session_id, seq_no=request.seq_no, data=request.data, ts=request.ts
        )
        packet.files.extend(request.files)
        result = await self.runner.run(
            graph, packet, timeout_s=timeout_s, frame_ptr=request.frame_ptr
        )
        data, files = result.combined()
        out = pb.AIOSPacket(
            session_id=request.session_id, seq_no=request.seq_no, data=data, ts=request.ts
        )
        out.files.extend(files)
        return out

    def _log(self, request: pb.BlockInferencePacket, block_id: str) -> None:
        if self.log_writer is None:
            return
        self.log_writer.add(
            make_row(
                request_id=uuid.uuid4(),
                session_id=request.session_id,
                block_id=block_id,
                seq_no=request.seq_no,
                ts=request.ts,
                data=request.data,
                query_parameters=request.query_parameters,
                output_ptr=request.output_ptr,
            )
        )


class BlockInferenceServicer(pb_grpc.BlockInferenceServiceServicer):
    def __init__(self, server: InferenceServer, auth: ApiKey) -> None:
        self.server = server
        self.auth = auth

    async def infer(
        self, request: pb.BlockInferencePacket, context: grpc.aio.ServicerContext
    ) -> pb.AIOSPacket:
        await self.auth.check(context)
        try:
            return await self.server.infer(
                request, time_left(context, self.server.config.request_timeout_s)
            )
        except DataPlaneError as exc:
            await context.abort(status_of(exc.code), exc.to_json())


class ResultProxyServicer(ppb_grpc.InferenceProxyServicer):
    """Results of graph requests from blocks in other clusters."""

    def __init__(self, server: InferenceServer, auth: ApiKey) -> None:
        self.server = server
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
        self.server.collector.deliver(packet)
        return ppb.InferenceRespose(message=True)


class ServerHTTP:
    """`/logs/...`, `/quota/...`, `/health`, `/metrics`."""

    def __init__(self, server: InferenceServer) -> None:
        self.s = server

    def app(self) -> web.Application:
        app = web.Application(middlewares=[errors_middleware], client_max_size=1024 * 1024)
        add_quota_routes(app, self.s.quota)
        app.router.add_get("/logs/session_block", self.logs_session_block)
        app.router.add_get("/logs/session/{session_id}", self.logs_session)
        app.router.add_get("/logs/request/{request_id}", self.logs_request)
        app.router.add_get("/logs/block/{block_id}", self.logs_block)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        return app

    def _writer(self) -> RequestLogWriter:
        if self.s.log_writer is None:
            raise DataPlaneError(UNAVAILABLE, "request logging is not configured (log_dsn)")
        return self.s.log_writer

    @staticmethod
    def _limit(request: web.Request) -> int:
        raw = request.query.get("limit", "100")
        try:
            limit = int(raw)
        except ValueError:
            raise DataPlaneError(INVALID_ARGUMENT, f"limit must be a number, not {raw!r}") from None
        if not 1 <= limit <= 1000:
            raise DataPlaneError(INVALID_ARGUMENT, "limit must be within 1..1000")
        return limit

    async def _query(self, where: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        writer = self._writer()
        for key, value in where.items():
            if "\x00" in str(value):
                raise DataPlaneError(INVALID_ARGUMENT, f"{key} holds a NUL character")
        try:
            return await asyncio.to_thread(writer.query, where, limit)
        except Exception as exc:
            raise DataPlaneError(UNAVAILABLE, f"request log database: {exc}") from exc

    async def logs_session(self, request: web.Request) -> web.Response:
        sid = request.match_info["session_id"]
        rows = await self._query({"session_id": sid}, self._limit(request))
        return json_response({"session_id": sid, "count": len(rows), "logs": rows})

    async def logs_block(self, request: web.Request) -> web.Response:
        block_id = request.match_info["block_id"]
        rows = await self._query({"block_id": block_id}, self._limit(request))
        return json_response({"block_id": block_id, "count": len(rows), "logs": rows})

    async def logs_request(self, request: web.Request) -> web.Response:
        raw = request.match_info["request_id"]
        try:
            rid = uuid.UUID(raw)
        except ValueError:
            raise DataPlaneError(
                INVALID_ARGUMENT, f"{raw!r} is not a request id (a UUID)"
            ) from None
        rows = await self._query({"request_id": rid}, 1)
        if not rows:
            raise DataPlaneError("NOT_FOUND", f"no logged request {raw}")
        return json_response({"log": rows[0]})

    async def logs_session_block(self, request: web.Request) -> web.Response:
        sid = request.query.get("session_id")
        block_id = request.query.get("block_id")
        if not sid or not block_id:
            raise DataPlaneError(INVALID_ARGUMENT, "session_id and block_id are both required")
        rows = await self._query({"session_id": sid, "block_id": block_id}, self._limit(request))
        return json_response(
            {"session_id": sid, "block_id": block_id, "count": len(rows), "logs": rows}
        )

    async def health(self, request: web.Request) -> web.Response:
        s = self.s
        try:
            await s.redis.ping()
            redis_ok = True
        except Exception:
            redis_ok = False
        return json_response(
            {
                "status": "healthy" if redis_ok else "unhealthy",
                "server_id": s.config.server_id,
                "redis": redis_ok,
                "inflight": s.inflight,
                "searches": s.search.searches,
                "request_log": s.log_writer.stats() if s.log_writer else None,
                "uptime_s": time.time() - s.started_at,
            },
            200 if redis_ok else 503,
        )

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.s.registry),
            headers={"Content-Type": PROMETHEUS_CONTENT_TYPE},
        )


class ServerProcess:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server = InferenceServer(config)

    async def start(self) -> None:
        cfg = self.config
        await self.server.start()
        self.grpc_server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.so_reuseport", 0),
            ]
        )
        auth = ApiKey(cfg.api_key)
        pb_grpc.add_BlockInferenceServiceServicer_to_server(
            BlockInferenceServicer(self.server, auth), self.grpc_server
        )
        ppb_grpc.add_InferenceProxyServicer_to_server(
            ResultProxyServicer(self.server, auth), self.grpc_server
        )
        self.grpc_port = self.grpc_server.add_insecure_port(f"{cfg.grpc_host}:{cfg.grpc_port}")
        if not self.grpc_port:
            raise OSError(f"cannot bind gRPC port {cfg.grpc_port}")
        await self.grpc_server.start()
        self.runner = web.AppRunner(ServerHTTP(self.server).app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, cfg.http_host, cfg.http_port)
        await site.start()
        socks = site._server.sockets if site._server else []
        self.http_port = socks[0].getsockname()[1] if socks else cfg.http_port
        log.info(
            "inference server ready",
            extra={
                "server_id": cfg.server_id,
                "grpc_port": self.grpc_port,
                "http_port": self.http_port,
                "request_log": bool(cfg.log_dsn),
                "pid": os.getpid(),
            },
        )
        announce_ready("inference_server", grpc_port=self.grpc_port, http_port=self.http_port)

    async def stop(self, grace_s: float = 5.0) -> None:
        await self.grpc_server.stop(grace_s)
        await self.runner.cleanup()
        await self.server.stop()


async def serve(config: ServerConfig) -> None:
    process = ServerProcess(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await process.start()
    await stop.wait()
    log.info("inference server stopping")
    await process.stop()


def run(config: ServerConfig) -> None:
    configure_logging({"server_id": config.server_id}, config.log_level)
    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    except ImportError:  # optional speed-up only
        pass
    asyncio.run(serve(config))
