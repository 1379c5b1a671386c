"""Small pieces shared by the vDAG controller and the adhoc inference server: policy objects
from configuration, API-key checks, gRPC status mapping, JSON HTTP helpers, the ready line."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from typing import Any

import grpc
from aiohttp import web

from block_sdk.packet import INVALID_ARGUMENT, UNAUTHENTICATED, DataPlaneError

GRPC_STATUS: dict[str, grpc.StatusCode] = {c.name: c for c in grpc.StatusCode}
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 409,
    "DEADLINE_EXCEEDED": 504,
    "UNAVAILABLE": 503,
}


def status_of(code: str) -> grpc.StatusCode:
    return GRPC_STATUS.get(code, grpc.StatusCode.INTERNAL)


def policy_spec(value: Any, default_uri: str | None = None) -> dict[str, Any] | None:
    """A policy from configuration: a URI, `{"policyRuleURI"|"uri", "parameters",
    "settings", "mode"}`, `None` (the default URI) or `false`/`""` (no policy)."""
    if value is None:
        value = default_uri
    if not value:
        return None
    if isinstance(value, str):
        return {"uri": value, "parameters": {}, "settings": {}, "mode": None}
    if isinstance(value, Mapping):
        uri = value.get("policyRuleURI") or value.get("policy_rule_uri") or value.get("uri")
        if not uri:
            uri = default_uri
        if not uri:
            return None
        return {
            "uri": str(uri),
            "parameters": dict(value.get("parameters") or {}),
            "settings": dict(value.get("settings") or {}),
            "mode": value.get("mode") or value.get("executionMode"),
        }
    raise ValueError(f"a policy must be a URI or an object, not {type(value).__name__}")


class PolicyHandle:
    """One configured policy: a `LocalPolicyEvaluator`, replaceable live (`set_parameters`)."""

    def __init__(self, spec: dict[str, Any], resolver: Any, mode: str = "local") -> None:
        self.spec = spec
        self.resolver = resolver
        self.mode = spec.get("mode") or mode
        self.evaluator = self._build(spec["parameters"])

    def _build(self, parameters: dict[str, Any]) -> Any:
        from block_sdk.policy_runtime import LocalPolicyEvaluator

        return LocalPolicyEvaluator(
            self.spec["uri"],
            parameters=parameters,
            settings=self.spec["settings"],
            mode=self.mode,
            resolver=self.resolver,
        )

    @property
    def uri(self) -> str:
        return self.spec["uri"]

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.evaluator.parameters)

    def set_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        merged = {**self.spec["parameters"], **parameters}
        self.evaluator = self._build(merged)  # a new instance: state starts afresh
        self.spec = {**self.spec, "parameters": merged}
        return self.parameters

    async def eval(self, input_data: Any) -> Any:
        if self.evaluator.mode == "local":  # microseconds: not worth a thread hop
            return self.evaluator.execute_policy_rule(input_data)
        return await self.evaluator.aexecute_policy_rule(input_data)

    async def management(self, action: str, data: Any) -> Any:
        if self.evaluator.mode == "local":
            return self.evaluator.execute_mgmt_command(action, data)
        return await self.evaluator.aexecute_mgmt_command(action, data)


class ApiKey:
    """Checks `x-api-key` / `authorization: Bearer` metadata when a key is configured."""

    def __init__(self, key: str) -> None:
        self.key = key

    async def check(self, context: grpc.aio.ServicerContext) -> None:
        if not self.key:
            return
        for name, value in context.invocation_metadata() or ():
            if name in ("x-api-key", "authorization") and value in (
                self.key,
                f"Bearer {self.key}",
            ):
                return
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            DataPlaneError(UNAUTHENTICATED, "missing or wrong API key").to_json(),
        )


def time_left(context: grpc.aio.ServicerContext, configured: float) -> float:
    """The request's budget: the smaller of ours and the client's, finishing a little early
    so the client gets our status rather than its own timeout."""
    remaining = context.time_remaining()
    if remaining is not None:
        # The margin must cover building and sending the status on a busy machine.
        margin = min(0.1, max(0.02, 0.05 * remaining))
        return max(0.001, min(configured, remaining - margin))
    return configured


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, default=str))


def error_response(exc: DataPlaneError, status: int | None = None) -> web.Response:
    return json_response(exc.to_dict(), status or HTTP_STATUS.get(exc.code, 500))


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        raise DataPlaneError(INVALID_ARGUMENT, "body is not JSON") from None
    if not isinstance(body, dict):
        raise DataPlaneError(INVALID_ARGUMENT, "body must be a JSON object")
    return body


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """DataPlaneError -> the JSON error shape with its HTTP status; anything else -> 500."""
    try:
        return await handler(request)
    except DataPlaneError as exc:
        return error_response(exc)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        import logging

        logging.getLogger("block_sdk.vdag.serving").exception(
            "http handler failed", extra={"path": request.path}
        )
        return error_response(DataPlaneError("INTERNAL", f"{type(exc).__name__}: {exc}"), 500)


def announce_ready(service: str, **ports: Any) -> None:
    """One JSON line on stdout once the ports are bound (useful with port 0)."""
    sys.stdout.write(json.dumps({"event": "ready", "service": service, **ports}) + "\n")
    sys.stdout.flush()
