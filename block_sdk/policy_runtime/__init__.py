"""AIOS policy runtime: safe loading and execution of ``AIOSv1PolicyRule`` policies.

No Django here. Public names are imported lazily so that a sandbox worker, which imports this
package first, starts without pulling in what it does not use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # errors
    "PolicyError": "errors",
    "PolicyErrorCode": "errors",
    "PolicyArchiveError": "errors",
    "PolicyIntegrityError": "errors",
    # archives
    "ArchiveLimits": "archive",
    "ArchiveInfo": "archive",
    "validate_archive": "archive",
    "extract_archive": "archive",
    "package_folder": "archive",
    "read_member": "archive",
    "sha256_hex": "archive",
    # cache and loading
    "PolicyCache": "cache",
    "PreparedPolicy": "cache",
    "get_default_cache": "cache",
    "PolicyLoader": "loader",
    "LoadedPolicy": "loader",
    "get_default_loader": "loader",
    "canonical_json": "loader",
    # sandbox
    "SandboxPool": "sandbox",
    "AsyncSandboxPool": "sandbox",
    "SandboxConfig": "sandbox",
    "SandboxLimits": "sandbox",
    "SandboxCall": "sandbox",
    "get_default_pool": "sandbox",
    "set_default_pool": "sandbox",
    "PolicyCallbackError": "protocol",
    "expose": "protocol",
    # evaluator and resolvers
    "LocalPolicyEvaluator": "evaluator",
    "PolicyRecord": "evaluator",
    "PolicyResolver": "evaluator",
    "ExecutorResolver": "evaluator",
    "InMemoryPolicyResolver": "evaluator",
    "DirectoryPolicyResolver": "evaluator",
    "HttpPolicyResolver": "evaluator",
    "set_default_resolver": "evaluator",
    "get_default_resolver": "evaluator",
    "merge_overrides": "evaluator",
}

__all__ = [
    "ArchiveInfo",
    "ArchiveLimits",
    "AsyncSandboxPool",
    "DirectoryPolicyResolver",
    "ExecutorResolver",
    "HttpPolicyResolver",
    "InMemoryPolicyResolver",
    "LoadedPolicy",
    "LocalPolicyEvaluator",
    "PolicyArchiveError",
    "PolicyCache",
    "PolicyCallbackError",
    "PolicyError",
    "PolicyErrorCode",
    "PolicyIntegrityError",
    "PolicyLoader",
    "PolicyRecord",
    "PolicyResolver",
    "PreparedPolicy",
    "SandboxCall",
    "SandboxConfig",
    "SandboxLimits",
    "SandboxPool",
    "canonical_json",
    "expose",
    "extract_archive",
    "get_default_cache",
    "get_default_loader",
    "get_default_pool",
    "get_default_resolver",
    "merge_overrides",
    "package_folder",
    "read_member",
    "set_default_pool",
    "set_default_resolver",
    "sha256_hex",
    "validate_archive",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from block_sdk.policy_runtime.archive import (
        ArchiveInfo,
        ArchiveLimits,
        extract_archive,
        package_folder,
        read_member,
        sha256_hex,
        validate_archive,
    )
    from block_sdk.policy_runtime.cache import PolicyCache, PreparedPolicy, get_default_cache
    from block_sdk.policy_runtime.errors import (
        PolicyArchiveError,
        PolicyError,
        PolicyErrorCode,
        PolicyIntegrityError,
    )
    from block_sdk.policy_runtime.evaluator import (
        DirectoryPolicyResolver,
        ExecutorResolver,
        HttpPolicyResolver,
        InMemoryPolicyResolver,
        LocalPolicyEvaluator,
        PolicyRecord,
        PolicyResolver,
        get_default_resolver,
        merge_overrides,
        set_default_resolver,
    )
    from block_sdk.policy_runtime.loader import (
        LoadedPolicy,
        PolicyLoader,
        canonical_json,
        get_default_loader,
    )
    from block_sdk.policy_runtime.protocol import PolicyCallbackError, expose
    from block_sdk.policy_runtime.sandbox import (
        AsyncSandboxPool,
        SandboxCall,
        SandboxConfig,
        SandboxLimits,
        SandboxPool,
        get_default_pool,
        set_default_pool,
    )
