"""Typed errors and the one JSON error shape of the API.

Every error leaves the API as ``{"error": {"code": ..., "message": ..., "details": [...]}}``
with the right 4xx status. A 500 is a bug: it is logged with its traceback and answered
in the same shape without internals.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger("aios.api")


class ApiError(Exception):
    """An error that maps to one HTTP status and the JSON error shape."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[Any] | None = None,
        status_code: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.details = details or []
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    def as_dict(self) -> dict:
        return error_body(self.code, self.message, self.details)


class ValidationFailed(ApiError):
    code = "validation_error"


class NotFound(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApiError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class Forbidden(ApiError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"


class Unprocessable(ApiError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "unprocessable"


class NotImplementedYet(ApiError):
    status_code = status.HTTP_501_NOT_IMPLEMENTED
    code = "not_implemented"


def error_body(code: str, message: str, details: list[Any] | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or []}}


def _flatten_drf_detail(detail: Any, prefix: str = "") -> list[dict]:
    """DRF nests errors per field; flatten them into ``[{"field", "message"}]``."""
    if isinstance(detail, dict):
        out: list[dict] = []
        for key, value in detail.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.extend(_flatten_drf_detail(value, path))
        return out
    if isinstance(detail, list):
        out = []
        for index, value in enumerate(detail):
            nested = isinstance(value, dict | list)
            out.extend(_flatten_drf_detail(value, f"{prefix}[{index}]" if nested else prefix))
        return out
    return [{"field": prefix or None, "message": str(detail)}]


_DRF_CODES = {
    drf_exceptions.NotAuthenticated: "not_authenticated",
    drf_exceptions.AuthenticationFailed: "authentication_failed",
    drf_exceptions.PermissionDenied: "forbidden",
    drf_exceptions.NotFound: "not_found",
    drf_exceptions.MethodNotAllowed: "method_not_allowed",
    drf_exceptions.ParseError: "parse_error",
    drf_exceptions.UnsupportedMediaType: "unsupported_media_type",
    drf_exceptions.Throttled: "throttled",
    drf_exceptions.ValidationError: "validation_error",
}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApiError):
        return Response(exc.as_dict(), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        details = [
            {"field": field, "message": message}
            for field, messages in getattr(exc, "message_dict", {"": exc.messages}).items()
            for message in messages
        ]
        message = details[0]["message"] if details else "invalid input"
        return Response(error_body("validation_error", message, details), status=400)
    if isinstance(exc, Http404):
        return Response(error_body("not_found", str(exc) or "not found"), status=404)
    if isinstance(exc, DjangoPermissionDenied):
        return Response(error_body("forbidden", str(exc) or "forbidden"), status=403)

    if isinstance(exc, ValueError) and "NUL (0x00)" in str(exc):
        # PostgreSQL text cannot hold NUL; psycopg refuses it before the query is sent.
        return Response(
            error_body("validation_error", "strings must not contain NUL (\\x00) characters"),
            status=400,
        )

    response = drf_exception_handler(exc, context)
    if response is None:
        view = context.get("view")
        log.exception("unhandled error in %s", type(view).__name__ if view else "api")
        return Response(
            error_body("internal_error", "internal server error; the error was logged"),
            status=500,
        )
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, drf_exceptions.ValidationError):
        details = _flatten_drf_detail(exc.detail)
        message = "; ".join(
            f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details[:5]
        )
    else:
        details = []
        message = str(exc.detail) if hasattr(exc, "detail") else str(exc)
    response.data = error_body(code, message or "invalid input", details)
    return response
