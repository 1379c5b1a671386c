"""Wire format between a sandbox pool and its workers, and the encoding of settings helpers.

Messages are JSON (never pickle) in ``multiprocessing.connection`` frames: the worker runs
untrusted code, and unpickling what it sends would hand it the parent process. JSON also is the
contract for results, so encoding a result doubles as the ``bad_output`` check.

Settings may carry helpers (functions, bound methods, client objects). They cannot cross a
process boundary, so the parent replaces each with a marker; the worker turns markers into
proxies that call back to the parent over the same connection, during a call only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode

CALLBACK_MARK = "__aios_callback__"
OBJECT_MARK = "__aios_object__"
OBJECT_METHODS = "methods"


def dumps(message: dict[str, Any]) -> bytes:
    """Strict JSON (no NaN/Infinity: they are not JSON and would break HTTP clients later)."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode(
        "utf-8"
    )


def loads(raw: bytes) -> dict[str, Any]:
    message = json.loads(raw)
    if not isinstance(message, dict) or "op" not in message:
        raise ValueError("not a protocol message")
    return message


def _public_methods(value: Any) -> list[str]:
    names = []
    for name in dir(value):
        if name.startswith("_"):
            continue
        try:
            attr = getattr(value, name)
        except Exception:  # noqa: S112 - a property that raises is simply not a helper
            continue
        if callable(attr):
            names.append(name)
    return names


def encode_settings(settings: Any) -> tuple[Any, dict[str, Callable[..., Any]]]:
    """Split settings into a JSON document and the helpers it references by path.

    A callable becomes ``{"__aios_callback__": "<path>"}``. Any other non-JSON object becomes
    ``{"__aios_object__": "<path>", "methods": [...]}`` exposing its public methods, each
    registered as the callback ``"<path>.<method>"``.
    """
    callbacks: dict[str, Callable[..., Any]] = {}

    def walk(value: Any, path: str) -> Any:
        if value is None or isinstance(value, str | bool | int | float):
            return value
        if isinstance(value, dict):
            return {str(k): walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if callable(value):
            callbacks[path] = value
            return {CALLBACK_MARK: path}
        methods = _public_methods(value)
        if not methods:
            raise PolicyError(
                PolicyErrorCode.BAD_INPUT,
                f"settings[{path!r}] is a {type(value).__name__}: neither JSON nor a helper with "
                "methods, so it cannot be passed to a sandboxed policy",
            )
        for name in methods:
            callbacks[f"{path}.{name}"] = getattr(value, name)
        return {OBJECT_MARK: path, OBJECT_METHODS: methods}

    return walk(settings, ""), callbacks


def decode_settings(value: Any, make_callable: Callable[[str], Callable[..., Any]]) -> Any:
    """Rebuild settings in the worker, markers replaced by proxies from ``make_callable``."""
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get(CALLBACK_MARK), str):
            return make_callable(value[CALLBACK_MARK])
        if isinstance(value.get(OBJECT_MARK), str) and isinstance(value.get(OBJECT_METHODS), list):
            path = value[OBJECT_MARK]
            return HelperObjectProxy(
                path, {m: make_callable(f"{path}.{m}") for m in value[OBJECT_METHODS]}
            )
        return {k: decode_settings(v, make_callable) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_settings(v, make_callable) for v in value]
    return value


class HelperObjectProxy:
    """Stands in for a client object of the parent: its public methods call back to it."""

    def __init__(self, path: str, methods: dict[str, Callable[..., Any]]) -> None:
        self._path = path
        self._methods = methods

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            return self.__dict__["_methods"][name]
        except KeyError:
            raise AttributeError(
                f"settings helper {self.__dict__.get('_path')!r} has no method {name!r}"
            ) from None

    def __repr__(self) -> str:
        return f"<helper {self._path} methods={sorted(self._methods)}>"


class PolicyCallbackError(RuntimeError):
    """A settings helper failed in the parent process (raised inside the sandboxed policy)."""
