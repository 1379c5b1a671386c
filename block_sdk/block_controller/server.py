"""The block controller process: its loops and its management HTTP server.

Routes: ``GET /health``; ``POST /autoscaler/mgmt``, ``POST /health-checker/mgmt`` (also
``/health/mgmt``), ``POST /mapper/mgmt``, all ``{"mgmt_action", "mgmt_data"}`` → ``{"result"}``
(errors in the one JSON error shape); ``GET /state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from block_sdk.block_controller.autoscaler import Autoscaler
from block_sdk.block_controller.client import ControlPlaneClient, ControlPlaneError
from block_sdk.block_controller.config import ControllerConfig
from block_sdk.block_controller.health import HealthChecker
from block_sdk.block_controller.mapper import Mapper
from block_sdk.block_controller.policies import DEFAULT_AUTOSCALER, DEFAULT_HEALTH, load
from block_sdk.queues import BlockKeys, connect

log = logging.getLogger("block_sdk.block_controller")

TOKEN_WAIT_S = 30.0


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": []}}
    return web.json_response(body, status=status)


class LoopState:
    def __init__(self, name: str, interval_s: float) -> None:
        self.name = name
        self.interval_s = interval_s
        self.rounds = 0
        self.failures = 0
        self.last_ok: float | None = None
        self.last_error = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "rounds": self.rounds,
            "failures": self.failures,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
        }


class BlockController:
    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self.keys = BlockKeys(config.block_id)
        self.token_key = f"{self.keys.base}:svc-token"
        self.loops: dict[str, LoopState] = {}
        self._tasks: list[asyncio.Task] = []
        self._runner: web.AppRunner | None = None
        self.started_at = time.time()

    async def _token(self) -> str:
        if self.config.token:
            return self.config.token
        deadline = time.monotonic() + TOKEN_WAIT_S
        while True:
            raw = await self.redis.get(self.token_key)
            if raw:
                return raw.decode()
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"no service token for block {self.config.block_id} in Redis "
                    f"({self.token_key}); the control plane issues it when it starts the block"
                )
            await asyncio.sleep(0.5)

    async def start(self) -> None:
        cfg = self.config
        self.redis = connect(cfg.redis_url)
        token = await self._token()
        self.client = ControlPlaneClient(cfg.api_url, cfg.block_id, token, cfg.api_timeout_s)
        self.mapper = Mapper(cfg.block_id, self.client, self.redis, self.token_key)
        autoscaler_rule = cfg.autoscaler
        default_autoscaler = DEFAULT_AUTOSCALER if cfg.min_instances < cfg.max_instances else None
        self.autoscaler = Autoscaler(
            cfg.block_id,
            self.client,
            self.redis,
            self.mapper,
            load(
                autoscaler_rule,
                default_uri=default_autoscaler,
                api_url=cfg.api_url,
                timeout_s=cfg.policy_timeout_s,
            ),
            cluster_id=cfg.cluster_id,
        )
        self.health = HealthChecker(
            self.client,
            self.mapper,
            load(
                cfg.stability_checker,
                default_uri=DEFAULT_HEALTH,
                api_url=cfg.api_url,
                timeout_s=cfg.policy_timeout_s,
            ),
            timeout_s=cfg.health_timeout_s,
            startup_grace_s=cfg.startup_grace_s,
            report_interval_s=cfg.report_interval_s,
            metrics_source=self.autoscaler,
        )
        await self._start_http()
        self._tasks = [
            self._loop("mapper", cfg.mapper_interval_s, self.mapper.tick),
            self._loop("autoscaler", cfg.autoscaler_interval_s, self.autoscaler.tick),
            self._loop("health", cfg.health_interval_s, self.health.tick),
        ]
        log.info("block controller started", extra={"config": cfg.to_dict()})

    def _loop(self, name: str, interval: float, fn: Callable[[], Awaitable[Any]]) -> asyncio.Task:
        state = self.loops[name] = LoopState(name, interval)

        async def run() -> None:
            # Every round is bounded: a hung call costs one round, not the loop.
            budget = max(interval * 4, self.config.api_timeout_s + self.config.policy_timeout_s)
            while True:
                started = time.monotonic()
                try:
                    await asyncio.wait_for(fn(), budget)
                    state.last_ok = time.time()
                    state.last_error = ""
                except asyncio.CancelledError:
                    raise
                except (ControlPlaneError, RedisError, OSError, TimeoutError) as exc:
                    state.failures += 1
                    state.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    log.warning(f"{name} round failed", extra={"error": state.last_error})
                except Exception as exc:
                    state.failures += 1
                    state.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    log.exception(f"{name} round crashed")
                state.rounds += 1
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

        return asyncio.create_task(run(), name=f"controller-{name}")

    # -- HTTP ------------------------------------------------------------------------------
    async def _start_http(self) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/health", self._health)
        app.router.add_get("/state", self._state)
        app.router.add_post("/autoscaler/mgmt", self._mgmt(self.autoscaler.management))
        app.router.add_post("/health-checker/mgmt", self._mgmt(self.health.management))
        app.router.add_post("/health/mgmt", self._mgmt(self.health.management))
        app.router.add_post("/mapper/mgmt", self._mgmt(self._mapper_mgmt))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http_host, self.config.http_port)
        await site.start()

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "healthy",
                "block_id": self.config.block_id,
                "uptime_s": round(time.time() - self.started_at, 1),
                "loops": {name: s.as_dict() for name, s in self.loops.items()},
            }
        )

    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "mapper": self.mapper.mapping(),
                "autoscaler": self.autoscaler.state(),
                "health": self.health.state(),
                "loops": {name: s.as_dict() for name, s in self.loops.items()},
            },
            dumps=lambda o: json.dumps(o, default=str),
        )

    async def _mapper_mgmt(self, action: str, data: Any) -> Any:
        if action in ("get_mapping", "get_current_mapping", "state"):
            return self.mapper.mapping()
        if action == "refresh":
            await self.mapper.tick()
            return self.mapper.mapping()
        raise ValueError(f"unknown mapper action {action!r}; known: get_mapping, refresh")

    def _mgmt(self, handler: Callable[[str, Any], Awaitable[Any]]):
        async def route(request: web.Request) -> web.Response:
            try:
                body = await request.json()
            except ValueError:
                return _error(400, "bad_request", "the body must be JSON")
            if not isinstance(body, dict):
                return _error(400, "bad_request", "the body must be a JSON object")
            action = body.get("mgmt_action", body.get("action"))
            if not isinstance(action, str) or not action:
                return _error(400, "bad_request", "mgmt_action is required")
            data = body.get("mgmt_data", body.get("data"))
            try:
                result = await asyncio.wait_for(handler(action, data), 30)
            except ValueError as exc:
                return _error(400, "unknown_action", str(exc))
            except TimeoutError:
                return _error(504, "timeout", f"{action} did not finish in time")
            except Exception as exc:
                log.exception("management command failed")
                return _error(500, "mgmt_failed", f"{type(exc).__name__}: {exc}")
            return web.json_response({"result": result}, dumps=lambda o: json.dumps(o, default=str))

        return route

    # -- stop ---------------------------------------------------------------------------------
    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(Exception):
            await self.health.close()
        with contextlib.suppress(Exception):
            await self.client.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()


async def serve(config: ControllerConfig) -> None:
    controller = BlockController(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await controller.start()
    try:
        await stop.wait()
    finally:
        await controller.stop()
        log.info("block controller stopped")
