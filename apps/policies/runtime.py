"""Glue between the registry and ``block_sdk.policy_runtime``.

- ``DjangoPolicyResolver``: the runtime's ``PolicyResolver`` backed by ``PolicyRule`` rows and
  the archive in default storage, whose sha256 is verified on every resolve (a file altered
  in storage gives ``integrity``). Verification is memoised per file identity (inode, size,
  mtime) on the filesystem, and for ``VERIFY_TTL`` seconds on object storage.
- This process's policy cache, sandbox pool and in-process loader (created lazily, under
  ``AIOS_DATA_DIR/policy-cache`` unless ``AIOS_POLICY_CACHE_DIR`` says otherwise).
- A bounded LRU of ``LocalPolicyEvaluator`` objects keyed by (rule, code, mode, settings,
  parameters), so a hook called on every request does not re-resolve or re-prepare.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from django.conf import settings as django_settings
from django.core.files.storage import default_storage

from apps.core.errors import NotFound
from block_sdk.policy_runtime.archive import sha256_hex
from block_sdk.policy_runtime.cache import PolicyCache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode, PolicyIntegrityError
from block_sdk.policy_runtime.evaluator import LocalPolicyEvaluator, PolicyRecord
from block_sdk.policy_runtime.loader import PolicyLoader, canonical_json
from block_sdk.policy_runtime.sandbox import SandboxConfig, SandboxPool

log = logging.getLogger("aios.policies.runtime")

VERIFY_TTL = 30.0  # seconds a verified object-storage archive is trusted without re-reading
MAX_EVALUATORS = 256

_lock = threading.RLock()
_cache: PolicyCache | None = None
_pool: SandboxPool | None = None
_loader: PolicyLoader | None = None
_evaluators: OrderedDict[tuple, LocalPolicyEvaluator] = OrderedDict()
# storage name -> (identity, sha256): the archive was verified while it had this identity.
_verified: dict[str, tuple[Any, str]] = {}


def cache_root() -> Path:
    configured = os.environ.get("AIOS_POLICY_CACHE_DIR")
    return Path(configured) if configured else Path(django_settings.AIOS_DATA_DIR) / "policy-cache"


def policy_cache() -> PolicyCache:
    global _cache
    with _lock:
        if _cache is None:
            _cache = PolicyCache(cache_root())
        return _cache


def sandbox_pool() -> SandboxPool:
    """This process's sandbox pool (workers start on first use)."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = SandboxPool(SandboxConfig.from_env(), cache=policy_cache())
        return _pool


def policy_loader() -> PolicyLoader:
    global _loader
    with _lock:
        if _loader is None:
            _loader = PolicyLoader(policy_cache())
        return _loader


def reset_runtime(config: SandboxConfig | None = None) -> SandboxPool:
    """Close the pool and forget cached evaluators; start a pool with ``config`` (tests).

    The cache root is read again (``AIOS_POLICY_CACHE_DIR``)."""
    global _pool, _loader, _cache
    with _lock:
        if _pool is not None:
            _pool.close()
        _cache = None
        _pool = SandboxPool(config or SandboxConfig.from_env(), cache=policy_cache())
        _loader = PolicyLoader(policy_cache())
        _evaluators.clear()
        _verified.clear()
        return _pool


def forget_verification(name: str | None = None) -> None:
    with _lock:
        if name is None:
            _verified.clear()
        else:
            _verified.pop(name, None)


def _storage_path(name: str) -> Path | None:
    try:
        return Path(default_storage.path(name))
    except NotImplementedError:  # object storage (S3): no local path
        return None


def read_archive(rule: Any) -> bytes:
    """The stored archive of ``rule``, verified against ``code_sha256``."""
    name = rule.code.name
    try:
        with default_storage.open(name, "rb") as fh:
            data = fh.read(policy_cache().limits.max_archive_bytes + 1)
    except FileNotFoundError:
        raise PolicyError(
            PolicyErrorCode.INTEGRITY, f"the stored archive of {rule.policy_rule_uri} is missing"
        ) from None
    actual = sha256_hex(data)
    if actual != rule.code_sha256:
        log.warning(
            "event=policy_archive_tampered uri=%s file=%s expected=%s actual=%s",
            rule.policy_rule_uri,
            name,
            rule.code_sha256,
            actual,
        )
        raise PolicyIntegrityError(
            f"the stored archive of {rule.policy_rule_uri} was modified: it hashes to "
            f"{actual[:16]}…, the record says {rule.code_sha256[:16]}…"
        )
    return data


def verified_archive_source(rule: Any) -> bytes | Path:
    """What the runtime should load: the file path on a filesystem, else the bytes.

    The content is checked against the record's sha256 unless this exact file (same inode,
    size and mtime) or this object (within ``VERIFY_TTL``) was already checked.
    """
    name = rule.code.name
    path = _storage_path(name)
    if path is not None:
        try:
            st = path.stat()
        except FileNotFoundError:
            raise PolicyError(
                PolicyErrorCode.INTEGRITY,
                f"the stored archive of {rule.policy_rule_uri} is missing",
            ) from None
        identity: Any = (st.st_ino, st.st_size, st.st_mtime_ns)
        if _verified.get(name) == (identity, rule.code_sha256):
            return path
        read_archive(rule)
        _verified[name] = (identity, rule.code_sha256)
        return path
    hit = _verified.get(name)
    now = time.monotonic()
    if hit is not None and hit[1] == rule.code_sha256 and now - hit[0] < VERIFY_TTL:
        cache = policy_cache()
        if cache.has_archive(rule.code_sha256):
            return cache.archive_path(rule.code_sha256)
    data = read_archive(rule)
    _verified[name] = (now, rule.code_sha256)
    return data


class DjangoPolicyResolver:
    """``PolicyResolver`` (and ``ExecutorResolver``) over the registry tables."""

    def record_for(self, rule: Any) -> PolicyRecord:
        from apps.policies.schemas import to_json_schema

        return PolicyRecord(
            uri=rule.policy_rule_uri,
            sha256=rule.code_sha256,
            archive=verified_archive_source(rule),
            settings=dict(rule.policy_settings or {}),
            parameters=dict(rule.policy_parameters or {}),
            input_schema=to_json_schema(rule.policy_input_schema),
            output_schema=to_json_schema(rule.policy_output_schema),
            class_name=rule.class_name or None,
        )

    def resolve(self, policy_rule_uri: str) -> PolicyRecord:
        from apps.policies.models import PolicyRule

        rule = PolicyRule.objects.filter(policy_rule_uri=policy_rule_uri).first()
        if rule is None:
            raise PolicyError(
                PolicyErrorCode.NOT_FOUND, f"policy rule {policy_rule_uri!r} is not registered"
            )
        return self.record_for(rule)

    def resolve_executor(self, executor_id: str) -> str:
        from apps.policies.models import PolicyExecutor

        executor = PolicyExecutor.objects.filter(executor_id=executor_id).first()
        if executor is None:
            raise PolicyError(
                PolicyErrorCode.NOT_FOUND, f"policy executor {executor_id!r} is not registered"
            )
        return executor.executor_host_uri


class _FixedResolver:
    """Hands an evaluator the record already resolved (and verified) by the caller."""

    def __init__(self, record: PolicyRecord, executors: DjangoPolicyResolver) -> None:
        self.record = record
        self.executors = executors

    def resolve(self, policy_rule_uri: str) -> PolicyRecord:
        return self.record

    def resolve_executor(self, executor_id: str) -> str:
        return self.executors.resolve_executor(executor_id)


resolver = DjangoPolicyResolver()


def evaluator_for(
    rule: Any,
    *,
    parameters: dict[str, Any] | None,
    settings: dict[str, Any] | None,
    mode: str,
    executor_id: str | None = None,
    timeout: float | None = None,
) -> LocalPolicyEvaluator:
    """A cached evaluator of ``rule`` with these overrides; verifies the archive every time."""
    record = resolver.record_for(rule)
    key = (
        rule.pk,
        rule.updated_at,
        record.sha256,
        mode,
        executor_id,
        timeout,
        canonical_json(parameters or {}),
        canonical_json(settings or {}),
    )
    with _lock:
        evaluator = _evaluators.get(key)
        if evaluator is not None:
            _evaluators.move_to_end(key)
            return evaluator
    evaluator = LocalPolicyEvaluator(
        rule.policy_rule_uri,
        parameters=parameters,
        settings=settings,
        mode=mode,
        executor_id=executor_id,
        resolver=_FixedResolver(record, resolver),
        pool=sandbox_pool() if mode == "sandbox" else None,
        loader=policy_loader(),
        timeout=timeout,
    )
    with _lock:
        _evaluators[key] = evaluator
        while len(_evaluators) > MAX_EVALUATORS:
            _evaluators.popitem(last=False)
    return evaluator


def forget_evaluators(rule_pk: Any = None) -> None:
    """Drop cached evaluators (of one rule, or all), e.g. after an update or delete."""
    with _lock:
        for key in [k for k in _evaluators if rule_pk is None or k[0] == rule_pk]:
            del _evaluators[key]


def not_found(uri: str) -> NotFound:
    return NotFound(f"policy rule {uri!r} is not registered", details=[{"policy_rule_uri": uri}])
