"""One way for the gateway, the controllers and the allocator to run a policy.

User policies go through the policies system (``apps.policies.services.evaluate_policy``,
sandboxed by default). The project's own built-in policies (``aios.<name>:1.0-stable``, the
folders under ``block_sdk/builtin_policies/``) are trusted code and run in-process (Type 1,
DESIGN §5): placement calls them once per candidate cluster, and a sandbox round trip per
call would dominate a decision over a thousand clusters.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.core.errors import NotImplementedYet, Unprocessable
from apps.core.uris import URIError, parse_uri

log = logging.getLogger("aios.clusters.policies")

BUILTIN_ROOT = Path(settings.BASE_DIR) / "block_sdk" / "builtin_policies"
BUILTIN_PREFIX = "aios."
BUILTIN_VERSION = ("1.0", "stable")
_MAX_INSTANCES = 256

_lock = threading.Lock()
_classes: dict[str, type] = {}
_instances: OrderedDict[tuple[str, str, str], Any] = OrderedDict()


class PolicyCallFailed(Unprocessable):
    code = "policy_failed"


def builtin_folder(uri: str) -> Path | None:
    """The folder of a built-in policy URI, or None when the URI is not a built-in."""
    try:
        parsed = parse_uri(uri, "policy")
    except URIError:
        return None
    if not parsed.name.startswith(BUILTIN_PREFIX) or (parsed.version, parsed.tag) != (
        BUILTIN_VERSION
    ):
        return None
    name = parsed.name[len(BUILTIN_PREFIX) :]
    if not name.replace("_", "").isalnum():
        return None
    folder = BUILTIN_ROOT / name
    return folder if (folder / "code" / "function.py").is_file() else None


def builtin_uri(name: str) -> str:
    return f"{BUILTIN_PREFIX}{name}:{BUILTIN_VERSION[0]}-{BUILTIN_VERSION[1]}"


def _policy_class(folder: Path) -> type:
    key = str(folder)
    cls = _classes.get(key)
    if cls is not None:
        return cls
    path = folder / "code" / "function.py"
    spec = importlib.util.spec_from_file_location(f"_aios_builtin_{folder.name}", path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file exists
        raise PolicyCallFailed(f"cannot load built-in policy {folder.name}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = module.AIOSv1PolicyRule
    _classes[key] = cls
    return cls


def _opaque(value: Any) -> str:
    return f"<{type(value).__name__}@{id(value):x}>"


def _run_builtin(uri: str, folder: Path, input_data: Any, parameters: dict, settings_: dict) -> Any:
    key = (
        uri,
        json.dumps(settings_, sort_keys=True, default=_opaque),
        json.dumps(parameters, sort_keys=True, default=_opaque),
    )
    with _lock:
        instance = _instances.get(key)
        if instance is None:
            instance = _policy_class(folder)(uri, settings_, parameters)
            _instances[key] = instance
            while len(_instances) > _MAX_INSTANCES:
                _instances.popitem(last=False)
        else:
            _instances.move_to_end(key)
    try:
        return instance.eval(parameters, input_data, {})
    except Exception as exc:
        raise PolicyCallFailed(
            f"policy {uri} failed: {type(exc).__name__}: {exc}",
            details=[{"policy": uri}],
        ) from exc


def evaluate(
    uri: str,
    input_data: Any,
    *,
    parameters: dict | None = None,
    settings: dict | None = None,
    execution_mode: str = "local",
    executor_id: str = "",
    builtin_in_process: bool = False,
) -> Any:
    """Run policy ``uri`` on ``input_data`` and return its result.

    ``execution_mode`` is the cluster/gateway's ``policyExecutionMode``: ``local`` runs the
    policy in the control plane's sandbox pool, ``remote`` on the policy executor
    ``executor_id`` (Type 2; the policies system picks one when it is empty). With
    ``builtin_in_process`` a built-in policy runs in this process with exactly the given
    parameters and settings (the allocator's hot path); otherwise it goes through the
    policies system like any other, so its record's defaults apply.
    """
    parameters = dict(parameters or {})
    settings_ = dict(settings or {})
    if builtin_in_process and execution_mode != "remote":
        folder = builtin_folder(uri)
        if folder is not None:
            return _run_builtin(uri, folder, input_data, parameters, settings_)
    try:
        from apps.policies.services import evaluate_policy
    except ImportError:  # pragma: no cover - the policies app is always installed
        raise NotImplementedYet(
            f"policy {uri} cannot run: the policies system is not installed in this build",
            code="policies_unavailable",
        ) from None
    if execution_mode == "remote":
        return evaluate_policy(
            uri,
            input_data,
            parameters=parameters,
            settings=settings_,
            mode="remote",
            executor_id=executor_id or None,
        )
    return evaluate_policy(uri, input_data, parameters=parameters, settings=settings_)
