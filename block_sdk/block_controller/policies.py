"""The block controller's policies, evaluated in-process (Type 1: they are this block's own).

A built-in URI (``aios.<name>:1.0-stable``) loads from ``block_sdk/builtin_policies/<name>``,
which ships with the SDK, so a block without network access to the registry still scales and
heals. Any other URI is read from the policy registry through
``block_sdk.policy_runtime.HttpPolicyResolver`` (archive verified by sha256, cached) and run
by ``LocalPolicyEvaluator`` in local mode. Calls run in a worker thread with a timeout so a slow
policy never stalls the controller's loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from pathlib import Path
from typing import Any

from block_sdk.builtin_policies import (
    BUILTIN_POLICIES_DIR,
    BUILTIN_RELEASE_TAG,
    BUILTIN_URI_PREFIX,
    BUILTIN_VERSION,
)

log = logging.getLogger("block_sdk.block_controller.policies")

DEFAULT_AUTOSCALER = (
    f"{BUILTIN_URI_PREFIX}autoscaler_queue_latency:{BUILTIN_VERSION}-{BUILTIN_RELEASE_TAG}"
)
DEFAULT_HEALTH = (
    f"{BUILTIN_URI_PREFIX}health_replace_after_n:{BUILTIN_VERSION}-{BUILTIN_RELEASE_TAG}"
)


def builtin_folder(uri: str) -> Path | None:
    name, _, version = uri.partition(":")
    if version != f"{BUILTIN_VERSION}-{BUILTIN_RELEASE_TAG}" or not name.startswith(
        BUILTIN_URI_PREFIX
    ):
        return None
    short = name[len(BUILTIN_URI_PREFIX) :]
    if not short.replace("_", "").isalnum():
        return None
    folder = BUILTIN_POLICIES_DIR / short
    return folder if (folder / "code" / "function.py").is_file() else None


def _builtin_class(folder: Path) -> type:
    path = folder / "code" / "function.py"
    spec = importlib.util.spec_from_file_location(f"_aios_controller_{folder.name}", path)
    if spec is None or spec.loader is None:  # pragma: no cover - the file exists
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.AIOSv1PolicyRule


class PolicyHandle:
    """One loaded policy rule: ``await eval(input)``, ``await management(action, data)``."""

    def __init__(self, rule: dict[str, Any], *, api_url: str, timeout_s: float) -> None:
        self.uri = str(rule["policyRuleURI"])
        self.parameters = dict(rule.get("parameters") or {})
        self.settings = dict(rule.get("settings") or {})
        self.timeout_s = timeout_s
        self.api_url = api_url
        self.context: dict[str, Any] = {}
        self._instance: Any = None
        self._evaluator: Any = None
        folder = builtin_folder(self.uri)
        self.builtin = folder is not None
        if folder is not None:
            self._instance = _builtin_class(folder)(self.uri, self.settings, self.parameters)

    def _remote_evaluator(self) -> Any:
        if self._evaluator is None:
            from block_sdk.policy_runtime import HttpPolicyResolver, LocalPolicyEvaluator

            self._evaluator = LocalPolicyEvaluator(
                self.uri,
                parameters=self.parameters,
                settings=self.settings,
                mode="local",
                resolver=HttpPolicyResolver(self.api_url, token="", timeout=self.timeout_s),
            )
        return self._evaluator

    def _eval(self, input_data: Any, parameters: dict[str, Any] | None) -> Any:
        if self._instance is not None:
            return self._instance.eval(
                {**self.parameters, **(parameters or {})}, input_data, self.context
            )
        return self._remote_evaluator().execute_policy_rule(input_data)

    def _management(self, action: str, data: Any) -> Any:
        if self._instance is not None:
            fn = getattr(self._instance, "management", None)
            if fn is None:
                raise ValueError(f"policy {self.uri} has no management()")
            return fn(action, data)
        return self._remote_evaluator().execute_mgmt_command(action, data)

    async def eval(self, input_data: Any, parameters: dict[str, Any] | None = None) -> Any:
        return await asyncio.wait_for(
            asyncio.to_thread(self._eval, input_data, parameters), self.timeout_s
        )

    async def management(self, action: str, data: Any) -> Any:
        return await asyncio.wait_for(
            asyncio.to_thread(self._management, action, data), self.timeout_s
        )

    def describe(self) -> dict[str, Any]:
        return {
            "policyRuleURI": self.uri,
            "parameters": self.parameters,
            "settings": self.settings,
            "builtin": self.builtin,
        }


def load(
    rule: dict[str, Any] | None, *, default_uri: str | None, api_url: str, timeout_s: float
) -> PolicyHandle | None:
    if rule is None:
        if default_uri is None:
            return None
        rule = {"policyRuleURI": default_uri}
    return PolicyHandle(rule, api_url=api_url, timeout_s=timeout_s)
