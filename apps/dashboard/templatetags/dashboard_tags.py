"""Template filters of the dashboard: status colours, sizes, ages, dictionary lookups."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

MISSING = "\u2013"  # an en dash where a value is unknown

GOOD = {"running", "live", "ready", "healthy", "active", "completed", "up", "free"}
BAD = {"failed", "not_ready", "unhealthy", "missing", "down", "exited"}
BUSY = {"in_progress", "allocating", "provisioning", "starting", "removing", "backoff"}


@register.filter
def status_class(value: Any) -> str:
    """CSS class of a status badge: good / bad / busy / idle."""
    text = str(value or "").lower()
    if text in GOOD:
        return "good"
    if text in BAD:
        return "bad"
    if text in BUSY:
        return "busy"
    return "idle"


@register.filter
def mb(value: Any) -> str:
    """A size in MB, readable: ``512 MB``, ``15.6 GB``, ``1.2 TB``."""
    try:
        size = float(value)
    except (TypeError, ValueError):
        return MISSING
    for unit in ("MB", "GB"):
        if abs(size) < 1024:
            return f"{size:.0f} {unit}" if unit == "MB" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


@register.filter
def pct(value: Any) -> str:
    try:
        return f"{float(value):.0f}%"
    except (TypeError, ValueError):
        return MISSING


@register.filter
def num(value: Any) -> str:
    """A metric value: integers as such, others with two significant decimals."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return MISSING
    if number.is_integer():
        return f"{int(number)}"
    return f"{number:.2f}" if abs(number) < 100 else f"{number:.0f}"


@register.filter
def age(seconds: Any) -> str:
    """Seconds as a short age: ``4s``, ``3m``, ``2h``, ``5d``; ``never`` for None."""
    if seconds is None:
        return "never"
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return MISSING
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s / 60:.0f}m"
    if s < 86400:
        return f"{s / 3600:.0f}h"
    return f"{s / 86400:.0f}d"


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    if isinstance(mapping, dict):
        return mapping.get(key)
    return None


@register.filter
def label(value: Any) -> str:
    """``not_ready`` -> ``not ready``."""
    return str(value or "").replace("_", " ")
