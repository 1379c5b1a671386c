"""Typed errors of the policy runtime.

Every failure a caller can see is a ``PolicyError`` with a stable ``code``; the API edge turns
it into the project's one JSON error shape (``{"error": {"code", "message", "details"}}``).
"""

from __future__ import annotations

from typing import Any


class PolicyErrorCode:
    """The stable error codes. Strings, so they cross process and HTTP boundaries as is."""

    LOAD_ERROR = "load_error"  # bad archive, import failure, class missing, __init__ raised
    EXCEPTION = "exception"  # eval()/management() raised, or the worker died while running it
    TIMEOUT = "timeout"  # wall-clock or CPU-time limit exceeded
    MEMORY = "memory"  # memory limit exceeded
    BAD_INPUT = "bad_input"  # input not JSON or not matching the input schema
    BAD_OUTPUT = "bad_output"  # result not JSON-serialisable or not matching the output schema
    INTEGRITY = "integrity"  # sha256 mismatch between stored bytes and the expected hash
    NOT_FOUND = "not_found"  # no policy rule with this URI
    BUSY = "busy"  # back-pressure: the sandbox queue is full
    UNAVAILABLE = "unavailable"  # a remote executor or registry cannot be reached

    ALL = frozenset(
        {
            LOAD_ERROR,
            EXCEPTION,
            TIMEOUT,
            MEMORY,
            BAD_INPUT,
            BAD_OUTPUT,
            INTEGRITY,
            NOT_FOUND,
            BUSY,
            UNAVAILABLE,
        }
    )


class PolicyError(Exception):
    """A policy could not be loaded or evaluated. ``str(err)`` is ``"<code>: <message>"``."""

    def __init__(self, code: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details: list[Any] = list(details or [])

    def as_dict(self) -> dict[str, Any]:
        """The JSON error shape shared with the control-plane API."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> PolicyError:
        """Rebuild an error received over HTTP (accepts the body or its ``error`` member)."""
        err = body.get("error", body) if isinstance(body, dict) else {}
        if not isinstance(err, dict):
            err = {}
        code = str(err.get("code") or PolicyErrorCode.EXCEPTION)
        message = str(err.get("message") or "unknown error")
        details = err.get("details")
        if code == PolicyErrorCode.INTEGRITY:
            return PolicyIntegrityError(message)
        return cls(code, message, details if isinstance(details, list) else None)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the error picklable (thread pools, multiprocessing) despite the custom __init__.
        return (_rebuild_policy_error, (type(self), self.code, self.message, self.details))


def _rebuild_policy_error(
    cls: type[PolicyError], code: str, message: str, details: list[Any]
) -> PolicyError:
    err = cls.__new__(cls)
    PolicyError.__init__(err, code, message, details)
    return err


class PolicyArchiveError(PolicyError):
    """The archive is unsafe or malformed (path traversal, links, bombs, missing function.py)."""

    def __init__(self, message: str, details: list[Any] | None = None) -> None:
        super().__init__(PolicyErrorCode.LOAD_ERROR, message, details)


class PolicyIntegrityError(PolicyError):
    """Stored bytes do not hash to the expected sha256: the file was altered or corrupted."""

    def __init__(self, message: str, details: list[Any] | None = None) -> None:
        super().__init__(PolicyErrorCode.INTEGRITY, message, details)
