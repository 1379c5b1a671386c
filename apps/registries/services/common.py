"""Helpers shared by the registries: URIs with field-level errors, tags, conflicts, health."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from django.db import IntegrityError, transaction

from apps.core.errors import Conflict, NotImplementedYet, ValidationFailed
from apps.core.uris import URIError, build_uri

log = logging.getLogger("aios.registries")

T = TypeVar("T")

# Registry names are one URL path segment: no ':' (it separates the version) and no '/'.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$")
MAX_TAGS = 200
HEALTH_TIMEOUT_S = 3.0


def field_error(field: str, message: str, **extra: Any) -> ValidationFailed:
    return ValidationFailed(
        f"{field}: {message}", details=[{"field": field, "message": message, **extra}]
    )


def versioned_uri(name: str, version: str, tag: str, *, fields: tuple[str, str, str]) -> str:
    """``name:version-tag`` with the error naming the API field that is wrong."""
    name_field, version_field, tag_field = fields
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise field_error(
            name_field,
            f"invalid name {name!r}: letters, digits, '_', '.', '-' (no ':' or '/'), "
            "at most 200 characters",
        )
    try:
        return build_uri(name, version, tag)
    except URIError as exc:
        bad = version_field if "version" in str(exc) else tag_field
        raise field_error(bad, str(exc)) from None


def normalize_tags(value: Any, field: str = "tags") -> list[str]:
    """Tags are a list of strings; a comma-separated string (AIOS policy style) is accepted."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise field_error(field, "expected a list of strings or a comma-separated string")
    if any("\x00" in v for v in value):
        raise field_error(field, "NUL characters are not accepted")
    if len(value) > MAX_TAGS:
        raise field_error(field, f"at most {MAX_TAGS} tags")
    return value


def create_unique(what: str, uri: str, exists: Callable[[], bool], create: Callable[[], T]) -> T:
    """Create a record whose URI must be new; a duplicate is a 409 (also under a race)."""
    if exists():
        raise Conflict(f"{what} {uri!r} already exists", details=[{"uri": uri}])
    try:
        with transaction.atomic():
            return create()
    except IntegrityError:
        raise Conflict(f"{what} {uri!r} already exists", details=[{"uri": uri}]) from None


def check_url_health(url: str, timeout: float = HEALTH_TIMEOUT_S) -> dict[str, Any]:
    """A real HTTP GET of ``url``: healthy when the server answers below 500 in time.

    Only the status line and headers are read (the body may be large); redirects are not
    followed, since a 3xx already proves the server is up. Proxy settings of the
    environment are ignored so registries on the private network are reached directly.
    """
    started = time.monotonic()
    result: dict[str, Any] = {"url": url}
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        result.update(healthy=False, error="the public URL is not an http(s) URL", latency_ms=0.0)
        return result
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream("GET", url) as response,
        ):
            result.update(healthy=response.status_code < 500, status_code=response.status_code)
    except httpx.HTTPError as exc:
        result.update(healthy=False, error=f"{type(exc).__name__}: {exc}"[:300])
    result["latency_ms"] = round((time.monotonic() - started) * 1000, 2)
    log.info(
        "event=health_check url=%s healthy=%s status=%s latency_ms=%s",
        url,
        result["healthy"],
        result.get("status_code"),
        result["latency_ms"],
    )
    return result


def run_policy(
    policy_rule_uri: str,
    input_data: Any,
    *,
    parameters: dict | None = None,
    settings: dict | None = None,
) -> Any:
    """Evaluate a policy rule in the policies system's sandbox (templates and ranking
    always run user code there). Imported lazily: the policies app owns the runtime."""
    try:
        from apps.policies.services import evaluate_policy
    except ImportError as exc:
        if exc.name != "apps.policies.services":
            raise  # a broken import inside the policies app is a bug, not "not yet"
        raise NotImplementedYet(
            "the policies system (apps.policies.services.evaluate_policy) is not available yet"
        ) from None
    return evaluate_policy(
        policy_rule_uri, input_data, parameters=parameters or {}, settings=settings, mode="sandbox"
    )


def lookup_value(value: Any) -> str | None:
    """A URI or id from a path or query string, or None when it cannot name a record
    (PostgreSQL refuses NUL characters in text parameters)."""
    if not isinstance(value, str) or not value or "\x00" in value or len(value) > 1000:
        return None
    return value
