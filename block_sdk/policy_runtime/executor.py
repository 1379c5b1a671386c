"""Policy executor service (Type 2): runs policies over HTTP in its own sandbox pool.

``python -m block_sdk.policy_runtime.executor --port P [--host 127.0.0.1]``

- ``POST /execute`` ``{"policy_rule_uri", "input_data", "parameters"?, "settings"?,
  "sha256"?, "archive_b64"?, "class_name"?, "timeout"?}`` → ``{"result": ...}``, or the error
  shape with 422 (policy failed), 404 (unknown policy), 409 ``archive_required`` (send the code
  once with ``archive_b64``), 503 (busy).
- ``POST /mgmt`` same fields with ``action``/``data`` (or ``mgmt_action``/``mgmt_data``).
- ``GET /health`` → ``{"status": "healthy", "pool": {...}}``.

A request naming ``sha256`` (and ``archive_b64`` the first time) is self-contained: its settings
and parameters are final. A request with only ``policy_rule_uri`` is resolved through the
registry (``--api-url`` or ``--policy-dir``) and merged with the record's defaults. Executors
are stateless (T2): ``management()`` state lives in whichever worker ran it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from aiohttp import web

from block_sdk.policy_runtime import _http
from block_sdk.policy_runtime.archive import sha256_hex
from block_sdk.policy_runtime.cache import PolicyCache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode, PolicyIntegrityError
from block_sdk.policy_runtime.evaluator import (
    DirectoryPolicyResolver,
    HttpPolicyResolver,
    LocalPolicyEvaluator,
    PolicyResolver,
)
from block_sdk.policy_runtime.loader import canonical_json
from block_sdk.policy_runtime.sandbox import (
    AsyncSandboxPool,
    SandboxCall,
    SandboxConfig,
    SandboxPool,
)

log = logging.getLogger("aios.policy_runtime.executor")

_MAX_BODY = 96 * 1024 * 1024  # an archive in base64 plus the input
_CACHE_SIZE = 256
_RECORD_TTL = 60.0


class PolicyExecutorService:
    """The executor's state: a sandbox pool, its cache, and LRUs of prepared calls."""

    def __init__(self, pool: SandboxPool, resolver: PolicyResolver | None = None) -> None:
        self.pool = pool
        self.apool = AsyncSandboxPool(pool)
        self.resolver = resolver
        self._calls: OrderedDict[str, SandboxCall] = OrderedDict()
        self._evaluators: OrderedDict[str, tuple[float, LocalPolicyEvaluator]] = OrderedDict()
        self._lock = threading.Lock()
        self.started = time.time()

    # -- turning a request into a prepared call ---------------------------------------------------

    def _direct_call(self, body: dict[str, Any]) -> SandboxCall:
        uri = str(body["policy_rule_uri"])
        sha = body.get("sha256")
        archive: bytes | None = None
        if body.get("archive_b64"):
            try:
                archive = base64.b64decode(body["archive_b64"], validate=True)
            except (binascii.Error, ValueError, TypeError) as exc:
                raise PolicyError(
                    PolicyErrorCode.BAD_INPUT, f"archive_b64 is not base64: {exc}"
                ) from None
            actual = sha256_hex(archive)
            if sha and sha != actual:
                raise PolicyIntegrityError(f"archive hashes to {actual}, request says {sha}")
            sha = actual
        if not isinstance(sha, str):
            raise PolicyError(PolicyErrorCode.BAD_INPUT, "sha256 must be a string")
        if archive is None and not self.pool.cache.has_archive(sha):
            raise _ArchiveRequired(sha)
        settings = body.get("settings") or {}
        parameters = body.get("parameters") or {}
        class_name = body.get("class_name")
        key = canonical_json([uri, sha, class_name, settings, parameters])
        with self._lock:
            call = self._calls.get(key)
            if call is not None:
                self._calls.move_to_end(key)
                return call
        call = self.pool.prepare(uri, sha, archive, settings, parameters, class_name)
        with self._lock:
            self._calls[key] = call
            while len(self._calls) > _CACHE_SIZE:
                self._calls.popitem(last=False)
        return call

    def _registry_evaluator(self, body: dict[str, Any]) -> LocalPolicyEvaluator:
        uri = str(body["policy_rule_uri"])
        if self.resolver is None:
            raise PolicyError(
                PolicyErrorCode.NOT_FOUND,
                f"policy rule {uri!r}: this executor has no registry (--api-url/--policy-dir); "
                "send sha256 and archive_b64",
            )
        key = canonical_json([uri, body.get("settings"), body.get("parameters")])
        now = time.monotonic()
        with self._lock:
            hit = self._evaluators.get(key)
            if hit is not None and now - hit[0] < _RECORD_TTL:
                self._evaluators.move_to_end(key)
                return hit[1]
        evaluator = LocalPolicyEvaluator(
            uri,
            parameters=body.get("parameters"),
            settings=body.get("settings"),
            mode="sandbox",
            resolver=self.resolver,
            pool=self.pool,
        )
        with self._lock:
            self._evaluators[key] = (now, evaluator)
            while len(self._evaluators) > _CACHE_SIZE:
                self._evaluators.popitem(last=False)
        return evaluator

    # -- handlers -------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body = await _http.read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("policy_rule_uri"), str):
            raise PolicyError(
                PolicyErrorCode.BAD_INPUT, "body must be an object with a policy_rule_uri"
            )
        return body

    @staticmethod
    def _timeout(body: dict[str, Any]) -> float | None:
        value = body.get("timeout")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    async def execute(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        try:
            if body.get("sha256") or body.get("archive_b64"):
                call = await asyncio.to_thread(self._direct_call, body)
                result = await self.apool.evaluate(
                    call, body.get("input_data"), timeout=self._timeout(body)
                )
            else:
                evaluator = await asyncio.to_thread(self._registry_evaluator, body)
                result = await evaluator.aexecute_policy_rule(
                    body.get("input_data"), timeout=self._timeout(body)
                )
        except _ArchiveRequired as exc:
            return exc.response()
        log.debug("executor_execute uri=%s", body["policy_rule_uri"])
        return _http.result_response(result)

    async def mgmt(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        action = body.get("action", body.get("mgmt_action"))
        data = body.get("data", body.get("mgmt_data"))
        if not isinstance(action, str):
            raise PolicyError(PolicyErrorCode.BAD_INPUT, "mgmt needs an action")
        try:
            if body.get("sha256") or body.get("archive_b64"):
                call = await asyncio.to_thread(self._direct_call, body)
                result = await self.apool.management(
                    call, action, data, timeout=self._timeout(body)
                )
            else:
                evaluator = await asyncio.to_thread(self._registry_evaluator, body)
                result = await evaluator.aexecute_mgmt_command(
                    action, data, timeout=self._timeout(body)
                )
        except _ArchiveRequired as exc:
            return exc.response()
        return _http.result_response(result)

    async def health(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {
                "status": "healthy",
                "service": "policy-executor",
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started, 1),
                "pool": self.pool.snapshot(),
            }
        )

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=_MAX_BODY,
            middlewares=[_http.api_key_middleware, _http.error_middleware],
        )
        app.router.add_post("/execute", self.execute)
        app.router.add_post("/mgmt", self.mgmt)
        app.router.add_get("/health", self.health)

        async def on_cleanup(_app: web.Application) -> None:
            await asyncio.to_thread(self.apool.close)

        app.on_cleanup.append(on_cleanup)
        return app


class _ArchiveRequired(Exception):
    def __init__(self, sha256: str) -> None:
        super().__init__(sha256)
        self.sha256 = sha256

    def response(self) -> web.Response:
        return _http.error_response(
            "archive_required",
            f"this executor does not hold policy archive {self.sha256}; resend with archive_b64",
            409,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m block_sdk.policy_runtime.executor", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=10250, help="0 picks a free port")
    parser.add_argument("--workers", type=int, default=None, help="sandbox worker processes")
    parser.add_argument("--timeout", type=float, default=None, help="wall-clock s per call")
    parser.add_argument("--cpu-seconds", type=float, default=None)
    parser.add_argument("--memory-mb", type=int, default=None)
    parser.add_argument("--max-queue", type=int, default=None)
    parser.add_argument("--cache-dir", default=None, help="default: AIOS_POLICY_CACHE_DIR")
    parser.add_argument("--api-url", default=None, help="AIOS API to resolve policy URIs")
    parser.add_argument("--policy-dir", default=None, help="folder of policy archives")
    parser.add_argument("--log-level", default=os.environ.get("AIOS_LOG_LEVEL", "INFO"))
    return parser


def make_service(args: argparse.Namespace) -> PolicyExecutorService:
    """The service configured from the environment, with command-line flags on top."""
    base = SandboxConfig.from_env()
    flags = {"timeout": args.timeout, "cpu_seconds": args.cpu_seconds, "memory_mb": args.memory_mb}
    limits = replace(base.limits, **{k: v for k, v in flags.items() if v})
    config = replace(
        base,
        workers=args.workers or base.workers,
        max_queue=args.max_queue or base.max_queue,
        limits=limits,
    )
    cache = PolicyCache(args.cache_dir) if args.cache_dir else None
    pool = SandboxPool(config, cache=cache)
    resolver: PolicyResolver | None = None
    if args.api_url:
        resolver = HttpPolicyResolver(args.api_url, cache=pool.cache)
    elif args.policy_dir:
        resolver = DirectoryPolicyResolver(args.policy_dir)
    return PolicyExecutorService(pool, resolver)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _http.configure_logging(args.log_level)
    service = make_service(args)
    asyncio.run(_http.serve(service.app(), args.host, args.port, "policy_executor"))


if __name__ == "__main__":
    main()
