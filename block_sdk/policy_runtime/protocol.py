"""Wire format between a sandbox pool and its workers, and the encoding of settings helpers.

Messages are JSON (never pickle) in ``multiprocessing.connection`` frames: the worker runs
untrusted code, and unpickling what it sends would hand it the parent process. JSON also is the
contract for results, so encoding a result doubles as the ``bad_output`` check.

Settings may carry helpers (functions, bound methods, client objects). They cannot cross a
process boundary, so the parent replaces each with a marker; the worker turns markers into
proxies that call back to the parent over the same connection, during a call only.
"""

from __future__ import annotations

import dataclasses
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


HELPER_METHODS_ATTR = "__aios_helper_methods__"


class ExposedHelper:
    """Wraps an object so that a sandboxed policy may call exactly the named methods of it."""

    def __init__(self, target: Any, methods: tuple[str, ...]) -> None:
        missing = [m for m in methods if not callable(getattr(target, m, None))]
        if missing:
            raise ValueError(f"{type(target).__name__} has no callable {', '.join(missing)}")
        self._target = target
        self.__aios_helper_methods__ = methods

    def __getattr__(self, name: str) -> Any:
        if name in self.__dict__.get(HELPER_METHODS_ATTR, ()):
            return getattr(self._target, name)
        raise AttributeError(name)


def expose(target: Any, *methods: str) -> ExposedHelper:
    """Mark which methods of a client object a sandboxed policy may call back.

    ``settings={"cluster_client": expose(client, "get_cluster", "query_clusters")}``. Classes
    may instead declare ``__aios_helper_methods__ = ("get_cluster", ...)`` themselves. Nothing
    else of the object is reachable from the sandbox (no ``save()``, ``delete()``...).
    """
    return ExposedHelper(target, tuple(methods))


def _declared_methods(value: Any) -> tuple[str, ...] | None:
    declared = getattr(value, HELPER_METHODS_ATTR, None)
    if declared is None or isinstance(declared, str):
        return None
    return tuple(str(m) for m in declared)


def encode_settings(settings: Any) -> tuple[Any, dict[str, Callable[..., Any]]]:
    """Split settings into a JSON document and the helpers it references by path.

    - JSON values pass as they are (tuples become lists);
    - a function or other callable becomes ``{"__aios_callback__": "<path>"}``;
    - an object that declares ``__aios_helper_methods__`` (or is wrapped by ``expose()``)
      becomes ``{"__aios_object__": "<path>", "methods": [...]}``, each method registered as the
      callback ``"<path>.<method>"``;
    - a dataclass instance is sent as a snapshot of its fields;
    - anything else is refused (``bad_input``): the sandbox never guesses which methods of an
      arbitrary object are safe to call.
    """
    callbacks: dict[str, Callable[..., Any]] = {}

    def walk(value: Any, path: str) -> Any:
        if value is None or isinstance(value, str | bool | int | float):
            return value
        if isinstance(value, dict):
            return {str(k): walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        methods = _declared_methods(value)
        if methods is not None:
            for name in methods:
                callbacks[f"{path}.{name}"] = getattr(value, name)
            return {OBJECT_MARK: path, OBJECT_METHODS: list(methods)}
        if callable(value) and not isinstance(value, type):
            callbacks[path] = value
            return {CALLBACK_MARK: path}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return walk(dataclasses.asdict(value), path)
        raise PolicyError(
            PolicyErrorCode.BAD_INPUT,
            f"settings[{path!r}] is a {type(value).__name__}: not JSON, not a function, and it "
            "declares no helper methods; wrap it with expose(obj, 'method', ...) to let a "
            "sandboxed policy call it",
        )

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
