"""Shared pieces of the policy runtime's HTTP services (executor and function server).

JSON in and out, the project's error shape, the optional ``X-AIOS-Key`` check, and a runner
that prints one ``{"event": "ready", ...}`` line on stdout once the port is bound, so whoever
started the process (node agent, test) knows the port even when it asked for port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode

log = logging.getLogger("aios.policy_runtime.http")

API_KEY_ENV = "AIOS_DATA_PLANE_API_KEY"
API_KEY_HEADER = "X-AIOS-Key"
OPEN_PATHS = frozenset({"/health"})  # probes carry no key

_STATUS_BY_CODE = {
    PolicyErrorCode.NOT_FOUND: 404,
    PolicyErrorCode.BUSY: 503,
    PolicyErrorCode.UNAVAILABLE: 503,
}


def error_response(
    code: str, message: str, status: int = 422, details: list[Any] | None = None
) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    return web.json_response(body, status=status)


def policy_error_response(exc: PolicyError) -> web.Response:
    """A ``PolicyError`` as the JSON error shape: 422, or 404/503 for lookup and back-pressure."""
    return error_response(exc.code, exc.message, _STATUS_BY_CODE.get(exc.code, 422), exc.details)


def result_response(result: Any) -> web.Response:
    try:
        text = json.dumps({"result": result}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return error_response(PolicyErrorCode.BAD_OUTPUT, f"result is not JSON-serialisable: {exc}")
    return web.Response(text=text, content_type="application/json")


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps(
                {"error": {"code": "bad_request", "message": f"body is not JSON: {exc}"}}
            ),
            content_type="application/json",
        ) from None


@web.middleware
async def api_key_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    expected = os.environ.get(API_KEY_ENV)
    if expected and request.path not in OPEN_PATHS:
        given = request.headers.get(API_KEY_HEADER, "")
        if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
            return error_response("unauthorized", f"missing or wrong {API_KEY_HEADER}", 401)
    return await handler(request)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except PolicyError as exc:
        return policy_error_response(exc)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("http_unhandled_error path=%s", request.path)
        return error_response("internal", "internal error", 500)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


async def serve(app: web.Application, host: str, port: int, service: str) -> None:
    """Run ``app`` until SIGTERM/SIGINT; announce the bound port on stdout."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port  # the real one for --port 0
    print(  # the CLI contract: one JSON line on stdout when ready
        json.dumps({"event": "ready", "service": service, "host": host, "port": bound}),
        flush=True,
    )
    log.info("%s_listening host=%s port=%s pid=%s", service, host, bound, os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("%s_stopping port=%s", service, bound)
        await runner.cleanup()
