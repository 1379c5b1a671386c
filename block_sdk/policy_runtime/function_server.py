"""Policy function server (Type 4): one long-lived, stateful policy instance behind HTTP.

``python -m block_sdk.policy_runtime.function_server --port P --policy-archive PATH --sha SHA
--uri URI [--settings JSON] [--parameters JSON] [--class-name NAME]``

The instance is created once, in this process, and keeps its state (attributes and the
``context`` dict) between calls. Calls run one at a time on a dedicated thread, so the policy
needs no locking and ``/health`` keeps answering while a call runs.

- ``POST /call`` (body = input_data) → ``{"result": ...}`` or the error shape with 422.
- ``POST /mgmt`` ``{"action", "data"}`` (or ``mgmt_action``/``mgmt_data``) → ``{"result": ...}``.
- ``GET /health`` → ``{"status": "healthy", "policy_rule_uri", "sha256", "calls"}``.

A call that overruns ``--timeout`` answers 422 ``timeout``; the thread cannot be interrupted,
so later calls wait behind it. The orchestrator (node agent, Kubernetes) replaces a process
whose ``/health`` reports it stuck (``"busy_for_s"``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from block_sdk.policy_runtime import _http
from block_sdk.policy_runtime.archive import sha256_hex
from block_sdk.policy_runtime.cache import PolicyCache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode
from block_sdk.policy_runtime.loader import LoadedPolicy, PolicyLoader

log = logging.getLogger("aios.policy_runtime.function_server")

_MAX_BODY = 32 * 1024 * 1024


class PolicyFunctionServer:
    """Holds the one instance and serialises calls to it."""

    def __init__(self, loaded: LoadedPolicy, timeout: float | None = None) -> None:
        self.loaded = loaded
        self.timeout = timeout
        # One thread: calls run in order, like the single-threaded pod of AIOS functions.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="aios-function"
        )
        self.calls = 0
        self.errors = 0
        self._busy_since: float | None = None
        self.started = time.time()

    def _run(self, fn: Any, *args: Any) -> Any:
        self._busy_since = time.monotonic()
        try:
            return fn(*args)
        finally:
            self._busy_since = None

    async def _submit(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._run, fn, *args)
        self.calls += 1
        try:
            if self.timeout:
                return await asyncio.wait_for(asyncio.shield(future), self.timeout)
            return await future
        except TimeoutError:
            self.errors += 1
            raise PolicyError(
                PolicyErrorCode.TIMEOUT,
                f"policy {self.loaded.uri} did not return within {self.timeout:g}s",
            ) from None
        except PolicyError:
            self.errors += 1
            raise

    async def call(self, request: web.Request) -> web.StreamResponse:
        input_data = await _http.read_json(request)
        result = await self._submit(self.loaded.eval, input_data)
        return _http.result_response(result)

    async def mgmt(self, request: web.Request) -> web.StreamResponse:
        body = await _http.read_json(request)
        if not isinstance(body, dict):
            raise PolicyError(PolicyErrorCode.BAD_INPUT, "mgmt body must be an object")
        action = body.get("action", body.get("mgmt_action"))
        data = body.get("data", body.get("mgmt_data"))
        if not isinstance(action, str):
            raise PolicyError(PolicyErrorCode.BAD_INPUT, "mgmt needs an action")
        result = await self._submit(self.loaded.management, action, data)
        return _http.result_response(result)

    async def health(self, _request: web.Request) -> web.StreamResponse:
        busy_since = self._busy_since
        return web.json_response(
            {
                "status": "healthy",
                "service": "policy-function",
                "policy_rule_uri": self.loaded.uri,
                "sha256": self.loaded.sha256,
                "pid": os.getpid(),
                "calls": self.calls,
                "errors": self.errors,
                "busy_for_s": round(time.monotonic() - busy_since, 3) if busy_since else 0.0,
                "uptime_s": round(time.time() - self.started, 1),
            }
        )

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=_MAX_BODY,
            middlewares=[_http.api_key_middleware, _http.error_middleware],
        )
        app.router.add_post("/call", self.call)
        app.router.add_post("/mgmt", self.mgmt)
        app.router.add_get("/health", self.health)

        async def on_cleanup(_app: web.Application) -> None:
            self._executor.shutdown(wait=False, cancel_futures=True)

        app.on_cleanup.append(on_cleanup)
        return app


def _json_arg(value: str | None, name: str) -> dict[str, Any]:
    """A JSON object given inline or as ``@path``."""
    if not value:
        return {}
    text = Path(value[1:]).read_text(encoding="utf-8") if value.startswith("@") else value
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"--{name} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise SystemExit(f"--{name} must be a JSON object")
    return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m block_sdk.policy_runtime.function_server",
        description=__doc__.split("\n")[0],
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10260, help="0 picks a free port")
    parser.add_argument("--policy-archive", required=True, help="path of the policy archive")
    parser.add_argument("--sha", default=None, help="expected sha256 of the archive")
    parser.add_argument("--uri", required=True, help="policy_rule_uri (the rule_id)")
    parser.add_argument("--settings", default=None, help="JSON object or @file")
    parser.add_argument("--parameters", default=None, help="JSON object or @file")
    parser.add_argument("--class-name", default=None)
    parser.add_argument("--timeout", type=float, default=None, help="seconds per call")
    parser.add_argument("--cache-dir", default=None, help="default: AIOS_POLICY_CACHE_DIR")
    parser.add_argument("--log-level", default=os.environ.get("AIOS_LOG_LEVEL", "INFO"))
    return parser


def load_function(args: argparse.Namespace) -> LoadedPolicy:
    archive = Path(args.policy_archive)
    data = archive.read_bytes()
    sha = args.sha or sha256_hex(data)
    cache = PolicyCache(args.cache_dir) if args.cache_dir else None
    loader = PolicyLoader(cache, max_instances=1)
    return loader.load(
        args.uri,
        sha,
        data,
        _json_arg(args.settings, "settings"),
        _json_arg(args.parameters, "parameters"),
        args.class_name,
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _http.configure_logging(args.log_level)
    try:
        loaded = load_function(args)
    except PolicyError as exc:
        log.error("policy_function_load_failed uri=%s error=%s", args.uri, exc)
        print(json.dumps({"event": "error", **exc.as_dict()}), flush=True)  # CLI contract
        raise SystemExit(2) from None
    server = PolicyFunctionServer(loaded, args.timeout)
    asyncio.run(_http.serve(server.app(), args.host, args.port, "policy_function"))


if __name__ == "__main__":
    main()
