"""Typed errors of the policies system, in the project's one JSON error shape."""

from __future__ import annotations

from typing import Any

from rest_framework import status

from apps.core.errors import Unprocessable
from apps.policies.choices import PolicyErrorCode

_STATUS = {
    PolicyErrorCode.BUSY: status.HTTP_503_SERVICE_UNAVAILABLE,
    PolicyErrorCode.UNAVAILABLE: status.HTTP_503_SERVICE_UNAVAILABLE,
}


class PolicyExecutionError(Unprocessable):
    """A policy could not be loaded or run: HTTP 422 with ``code`` one of
    ``timeout``, ``memory``, ``exception``, ``bad_output``, ``bad_input``, ``load_error``,
    ``integrity`` (and 503 ``busy`` / ``unavailable`` when the capacity to run it is missing).
    """

    def __init__(self, code: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message, code=code, details=details, status_code=_STATUS.get(code, 422))

    @classmethod
    def from_runtime(cls, exc: Any, *, uri: str | None = None) -> PolicyExecutionError:
        """Wrap a runtime ``PolicyError`` (keeps its code, message and details)."""
        message = exc.message
        if uri and uri not in message:
            message = f"{uri}: {message}"
        return cls(exc.code, message, list(exc.details))
