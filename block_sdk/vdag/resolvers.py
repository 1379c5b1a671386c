"""Where the vDAG controller and the adhoc server find their policies.

A chain: the control plane's registry over HTTP when an API URL is configured (production),
then a folder of policies when one is given (`<dir>/<uri>/code/function.py`, tests and
offline use), then the built-ins shipped in `block_sdk/builtin_policies` under their registry
URIs (`aios.<name>:1.0-stable`), so a controller with no configuration still runs its default
quota and quality policies.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from block_sdk.builtin_policies import builtin_policy_folders, builtin_policy_uri
from block_sdk.policy_runtime import (
    DirectoryPolicyResolver,
    HttpPolicyResolver,
    InMemoryPolicyResolver,
    PolicyError,
    PolicyErrorCode,
    PolicyRecord,
    package_folder,
)

_builtin: InMemoryPolicyResolver | None = None
_builtin_lock = threading.Lock()


def builtin_resolver() -> InMemoryPolicyResolver:
    """The built-in policies, packaged from their folders once per process."""
    global _builtin
    with _builtin_lock:
        if _builtin is None:
            resolver = InMemoryPolicyResolver()
            for name, folder in builtin_policy_folders().items():
                meta: dict[str, Any] = {}
                meta_path = folder / "policy.json"
                if meta_path.is_file():
                    meta = json.loads(meta_path.read_text(encoding="utf-8"))
                resolver.add_archive(
                    builtin_policy_uri(name),
                    package_folder(folder),
                    settings=meta.get("policy_settings") or {},
                    parameters=meta.get("policy_parameters") or {},
                )
            _builtin = resolver
        return _builtin


class ChainResolver:
    """Asks each resolver in turn; "not found" and "unavailable" fall through to the next."""

    def __init__(self, resolvers: list[Any]) -> None:
        self.resolvers = [r for r in resolvers if r is not None]

    def resolve(self, policy_rule_uri: str) -> PolicyRecord:
        last: PolicyError | None = None
        for resolver in self.resolvers:
            try:
                return resolver.resolve(policy_rule_uri)
            except PolicyError as exc:
                if exc.code not in (PolicyErrorCode.NOT_FOUND, PolicyErrorCode.UNAVAILABLE):
                    raise
                last = exc
        raise last or PolicyError(PolicyErrorCode.NOT_FOUND, f"policy {policy_rule_uri!r} unknown")


def policy_resolver(api_url: str = "", api_token: str = "", policy_dir: str = "") -> ChainResolver:
    chain: list[Any] = []
    if api_url:
        chain.append(HttpPolicyResolver(api_url, token=api_token or None))
    if policy_dir:
        chain.append(DirectoryPolicyResolver(policy_dir))
    chain.append(builtin_resolver())
    return ChainResolver(chain)
