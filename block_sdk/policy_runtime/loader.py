"""Import of policy code and a bounded cache of live policy instances (in-process, Type 1).

``function.py`` of each archive is imported as ``_aios_policy_<sha>.function``: two policies
never share a module, and relative imports inside a policy's ``code/`` folder work. The
policy's ``code/`` folder and its dependencies folder are on ``sys.path`` only while
``function.py`` is imported; helper modules it imported from ``code/`` are then dropped from
``sys.modules`` so the next policy gets its own ``helpers``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import threading
import traceback
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from block_sdk.policy_runtime.cache import PolicyCache, PreparedPolicy, get_default_cache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode

log = logging.getLogger("aios.policy_runtime.loader")

DEFAULT_CLASS_NAME = "AIOSv1PolicyRule"
DEFAULT_MAX_INSTANCES = 128

# sys.path and sys.modules are process-global; one policy import at a time.
_IMPORT_LOCK = threading.RLock()
_modules: dict[str, types.ModuleType] = {}


def _opaque_token(value: Any) -> str:
    # Helpers (functions, clients) are not JSON: they key the cache by identity. The cache entry
    # keeps a reference to them, so the id cannot be reused while the entry lives.
    return f"<{type(value).__module__}.{type(value).__qualname__}@{id(value):x}>"


def canonical_json(value: Any) -> str:
    """Deterministic JSON of ``value``: sorted keys, no spaces, non-JSON objects by identity."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), default=_opaque_token, ensure_ascii=False
    )


def describe_exception(exc: BaseException) -> str:
    """``"<Type>: <message>"`` — the form callers see in ``PolicyError`` messages."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def policy_traceback(exc: BaseException, code_dir: Path | str | None = None) -> list[str]:
    """The frames of ``exc`` that are in the policy's own code, as ``"file:line in func"``."""
    frames = traceback.extract_tb(exc.__traceback__)
    prefix = str(code_dir) if code_dir else None
    out = []
    for fr in frames:
        if prefix is None or fr.filename.startswith(prefix):
            name = os.path.basename(fr.filename)
            out.append(f"{name}:{fr.lineno} in {fr.name}")
    return out[-10:]


def _load_error(
    message: str, exc: BaseException | None = None, code_dir: Any = None
) -> PolicyError:
    details = policy_traceback(exc, code_dir) if exc is not None else []
    return PolicyError(PolicyErrorCode.LOAD_ERROR, message, details)


def import_policy_module(prepared: PreparedPolicy) -> types.ModuleType:
    """Import ``code/function.py`` of a prepared policy (once per sha256 per process)."""
    module = _modules.get(prepared.sha256)
    if module is not None:
        return module
    with _IMPORT_LOCK:
        module = _modules.get(prepared.sha256)
        if module is not None:
            return module
        module = _import_locked(prepared)
        _modules[prepared.sha256] = module
        return module


def _import_locked(prepared: PreparedPolicy) -> types.ModuleType:
    package_name = f"_aios_policy_{prepared.sha256[:24]}"
    module_name = f"{package_name}.function"
    code_dir = prepared.code_dir
    function_py = code_dir / "function.py"
    if not function_py.is_file():
        raise _load_error(f"policy {prepared.sha256[:12]} has no code/function.py")

    package = types.ModuleType(package_name)
    package.__path__ = [str(code_dir)]
    package.__file__ = None
    package.__package__ = package_name
    spec = importlib.util.spec_from_file_location(module_name, function_py)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has a spec
        raise _load_error(f"cannot import {function_py}")
    module = importlib.util.module_from_spec(spec)

    added_paths = [str(code_dir)]
    if prepared.deps_dir is not None:
        added_paths.append(str(prepared.deps_dir))
    before = set(sys.modules)
    saved_path = list(sys.path)
    saved_bytecode = sys.dont_write_bytecode
    # Bytecode next to the code would make the verified tree differ from its archive.
    sys.dont_write_bytecode = True
    sys.path[:0] = added_paths
    sys.modules[package_name] = package
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        sys.modules.pop(package_name, None)
        where = f"{os.path.basename(exc.filename or 'function.py')}, line {exc.lineno}"
        raise _load_error(f"SyntaxError in policy code: {exc.msg} ({where})", exc) from None
    except BaseException as exc:  # an import can raise anything, SystemExit included
        sys.modules.pop(module_name, None)
        sys.modules.pop(package_name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise _load_error(
            f"importing code/function.py failed: {describe_exception(exc)}", exc, code_dir
        ) from None
    finally:
        sys.path[:] = saved_path
        sys.dont_write_bytecode = saved_bytecode
        # Policy-local helper modules imported by absolute name must not leak to other policies.
        prefix = str(code_dir) + os.sep
        for name in set(sys.modules) - before:
            mod = sys.modules.get(name)
            mod_file = getattr(mod, "__file__", None) or ""
            if name not in (package_name, module_name) and mod_file.startswith(prefix):
                del sys.modules[name]
    log.info("policy_module_imported sha256=%s module=%s", prepared.sha256, module_name)
    return module


def find_policy_class(module: types.ModuleType, class_name: str | None = None) -> type:
    """The policy class in ``module``: ``class_name`` or ``AIOSv1PolicyRule``."""
    wanted = class_name or DEFAULT_CLASS_NAME
    cls = getattr(module, wanted, None)
    if cls is None:
        classes = sorted(
            n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")
        )
        found = ", ".join(classes) if classes else "none"
        raise _load_error(f"class {wanted!r} not found in code/function.py (classes: {found})")
    if not isinstance(cls, type) or not callable(getattr(cls, "eval", None)):
        raise _load_error(f"{wanted!r} in code/function.py is not a class with an eval() method")
    return cls


def instantiate(cls: type, rule_id: str, settings: Any, parameters: Any, code_dir: Any) -> Any:
    """``cls(rule_id, settings, parameters)``, with failures as ``load_error``."""
    try:
        return cls(rule_id, settings, parameters)
    except MemoryError as exc:
        raise PolicyError(
            PolicyErrorCode.MEMORY, f"{cls.__name__}.__init__ ran out of memory"
        ) from exc
    except Exception as exc:
        raise _load_error(
            f"{cls.__name__}.__init__ failed: {describe_exception(exc)}", exc, code_dir
        ) from None


@dataclass
class LoadedPolicy:
    """A live policy instance with its ``context`` (the state ``eval`` may keep across calls)."""

    uri: str
    sha256: str
    instance: Any
    settings: Any
    parameters: Any
    code_dir: Path
    context: dict[str, Any] = field(default_factory=dict)

    def eval(self, input_data: Any, parameters: Any = None) -> Any:
        """Call ``eval(parameters, input_data, context)``; exceptions become ``PolicyError``."""
        params = self.parameters if parameters is None else parameters
        try:
            return self.instance.eval(params, input_data, self.context)
        except PolicyError:
            raise
        except MemoryError as exc:
            raise PolicyError(PolicyErrorCode.MEMORY, "policy ran out of memory in eval()") from exc
        except Exception as exc:
            raise PolicyError(
                PolicyErrorCode.EXCEPTION,
                describe_exception(exc),
                policy_traceback(exc, self.code_dir),
            ) from exc

    def management(self, action: str, data: Any) -> Any:
        """Call ``management(action, data)``; a policy without one answers ``exception``."""
        method = getattr(self.instance, "management", None)
        if not callable(method):
            raise PolicyError(
                PolicyErrorCode.EXCEPTION,
                f"NotImplementedError: policy {self.uri} has no management() method",
            )
        try:
            return method(action, data)
        except PolicyError:
            raise
        except MemoryError as exc:
            raise PolicyError(
                PolicyErrorCode.MEMORY, "policy ran out of memory in management()"
            ) from exc
        except Exception as exc:
            raise PolicyError(
                PolicyErrorCode.EXCEPTION,
                describe_exception(exc),
                policy_traceback(exc, self.code_dir),
            ) from exc


class PolicyLoader:
    """Loads policies through a ``PolicyCache`` and keeps a bounded LRU of live instances.

    The instance key is (uri, sha256, canonical settings, canonical parameters): the same policy
    with other settings is another instance, and a new archive version never reuses an old one.
    """

    def __init__(
        self, cache: PolicyCache | None = None, max_instances: int = DEFAULT_MAX_INSTANCES
    ) -> None:
        self._cache = cache
        self.max_instances = max(1, max_instances)
        self._instances: OrderedDict[tuple[str, str, str, str], LoadedPolicy] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def cache(self) -> PolicyCache:
        return self._cache if self._cache is not None else get_default_cache()

    def load(
        self,
        uri: str,
        sha256: str,
        archive: bytes | str | os.PathLike[str] | None,
        settings: Any,
        parameters: Any,
        class_name: str | None = None,
        *,
        install_requirements: bool = True,
    ) -> LoadedPolicy:
        """The live instance for these settings/parameters, created on first use."""
        key = (uri, sha256, canonical_json(settings), canonical_json(parameters))
        with self._lock:
            loaded = self._instances.get(key)
            if loaded is not None:
                self._instances.move_to_end(key)
                return loaded
        prepared = self.cache.prepare(sha256, archive, install_requirements=install_requirements)
        loaded = self.load_prepared(uri, prepared, settings, parameters, class_name)
        with self._lock:
            existing = self._instances.get(key)
            if existing is not None:  # another thread built it meanwhile; keep one
                return existing
            self._instances[key] = loaded
            while len(self._instances) > self.max_instances:
                self._instances.popitem(last=False)
        return loaded

    @staticmethod
    def load_prepared(
        uri: str,
        prepared: PreparedPolicy,
        settings: Any,
        parameters: Any,
        class_name: str | None = None,
    ) -> LoadedPolicy:
        """Import and instantiate without touching the instance cache."""
        module = import_policy_module(prepared)
        cls = find_policy_class(module, class_name)
        instance = instantiate(cls, uri, settings, parameters, prepared.code_dir)
        log.info("policy_instance_created uri=%s sha256=%s", uri, prepared.sha256[:12])
        return LoadedPolicy(uri, prepared.sha256, instance, settings, parameters, prepared.code_dir)

    def evict(self, uri: str | None = None) -> int:
        """Drop cached instances (of one URI, or all). Returns how many were dropped."""
        with self._lock:
            keys = [k for k in self._instances if uri is None or k[0] == uri]
            for k in keys:
                del self._instances[k]
            return len(keys)

    def __len__(self) -> int:
        return len(self._instances)


_default_loader: PolicyLoader | None = None
_default_loader_lock = threading.Lock()


def get_default_loader() -> PolicyLoader:
    """The process-wide loader (default cache, default LRU size)."""
    global _default_loader
    with _default_loader_lock:
        if _default_loader is None:
            _default_loader = PolicyLoader()
        return _default_loader
