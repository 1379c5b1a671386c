"""Domain operations of the policies system: the one entry point other apps call.

Registry: ``register_policy``, ``register_policy_from_url``, ``update_policy``,
``delete_policy``, ``get_policy``, ``archive_listing``.
Execution: ``evaluate_policy`` (modes ``sandbox`` — the default for every control-plane hook —,
``local`` for trusted built-ins, ``remote`` on a registered executor), ``run_management``,
``execute_failure_policy``.
Types 2 to 5: executors (``register_executor``, ``check_executor``, ``execute_on_executor``),
jobs (``submit_job``, ``run_job``; on a cluster ``run_job_on_cluster``), functions
(``create_function``, ``call_function``, ``function_management``, ``reconcile_function``,
``delete_function``) and graphs
(``create_graph``, ``update_graph``, ``execute_graph``).

Every failure of policy code surfaces as ``PolicyExecutionError`` (HTTP 422, ``code`` one of
``timeout``, ``memory``, ``exception``, ``bad_output``, ``bad_input``, ``load_error``,
``integrity``); an unknown URI as ``apps.core.errors.NotFound``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import socket
import time
import urllib.parse
from typing import Any

import httpx
import psutil
import redis
from django.conf import settings as django_settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.core.errors import ApiError, Conflict, NotFound, ValidationFailed
from apps.core.uris import URIError, build_uri, validate_slug_id
from apps.policies import graphs, runtime
from apps.policies.choices import (
    DEFAULT_CLASS_NAME,
    POLICY_JOB_TASK_TYPE,
    ExecutionMode,
    ExecutorStatus,
    FunctionStatus,
    JobStatus,
    PolicyErrorCode,
    PolicyType,
    RunStatus,
)
from apps.policies.errors import PolicyExecutionError
from apps.policies.models import (
    FailurePolicyRun,
    PolicyExecutor,
    PolicyFunction,
    PolicyGraph,
    PolicyJob,
    PolicyRule,
    archive_upload_to,
)
from apps.policies.runners import (
    FunctionRunner,
    FunctionSpec,
    LocalProcessRunner,
    ReplicaStartError,
)
from apps.policies.runtime import DjangoPolicyResolver  # noqa: F401 - the runtime's resolver
from apps.policies.schemas import check_management_commands_schema, check_schema, first_error
from block_sdk.policy_runtime.archive import (
    FUNCTION_PATH,
    ArchiveInfo,
    ArchiveLimits,
    read_member,
    sha256_hex,
)
from block_sdk.policy_runtime.archive import validate_archive as runtime_validate_archive
from block_sdk.policy_runtime.errors import PolicyArchiveError, PolicyError
from block_sdk.policy_runtime.errors import PolicyErrorCode as RuntimeCode

log = logging.getLogger("aios.policies")

FETCH_TIMEOUT = 15.0  # seconds for the whole download of a code_url
FETCH_MAX_REDIRECTS = 3
EXECUTOR_TIMEOUT = 5.0  # health probes of executors
FUNCTION_CALL_TIMEOUT = 30.0  # default per-call limit of a function replica
FUNCTION_HEALTH_TIMEOUT = 2.0
MAX_REPLICAS = 16
RR_KEY_TTL = 24 * 3600
PREVIEW_MAX_BYTES = 256 * 1024

RULE_FIELDS = frozenset(
    {
        "description",
        "tags",
        "metadata",
        "type",
        "class_name",
        "policy_settings",
        "policy_parameters",
        "policy_input_schema",
        "policy_output_schema",
        "policy_settings_schema",
        "policy_parameters_schema",
        "management_commands_schema",
        "code_url",
        "builtin",
    }
)
_DICT_FIELDS = (
    "metadata",
    "policy_settings",
    "policy_parameters",
    "policy_input_schema",
    "policy_output_schema",
    "policy_settings_schema",
    "policy_parameters_schema",
)
_SCHEMA_FIELDS = (
    "policy_input_schema",
    "policy_output_schema",
    "policy_settings_schema",
    "policy_parameters_schema",
)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def get_policy(policy_rule_uri: str) -> PolicyRule:
    """The rule with this URI, or ``NotFound``."""
    try:  # get(), not first(): no ORDER BY on this per-evaluation lookup
        return PolicyRule.objects.get(policy_rule_uri=policy_rule_uri)
    except PolicyRule.DoesNotExist:
        raise runtime.not_found(policy_rule_uri) from None


def archive_limits() -> ArchiveLimits:
    return ArchiveLimits.from_env()


def validate_archive(data: bytes) -> ArchiveInfo:
    """The runtime's archive checks (paths, links, bombs, function.py) as a 400."""
    if not isinstance(data, bytes | bytearray) or not data:
        raise ValidationFailed("the policy archive is empty", code="invalid_archive")
    try:
        return runtime_validate_archive(bytes(data), archive_limits())
    except PolicyArchiveError as exc:
        raise ValidationFailed(
            f"invalid policy archive: {exc.message}",
            code="invalid_archive",
            details=[{"field": "code", "message": exc.message}],
        ) from None


def _check_public_host(url: str) -> None:
    """Refuse URLs that resolve to loopback, link-local or private addresses (SSRF guard),
    unless ``AIOS_POLICY_FETCH_ALLOW_PRIVATE`` is set (local installs and tests)."""
    if os.environ.get("AIOS_POLICY_FETCH_ALLOW_PRIVATE", "").lower() in {"1", "true", "yes"}:
        return
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise ValidationFailed(f"cannot resolve code_url host {host!r}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local:
            raise ValidationFailed(
                f"code_url host {host!r} is a private address; set "
                "AIOS_POLICY_FETCH_ALLOW_PRIVATE=1 to allow it"
            )


def fetch_archive(
    url: str, *, timeout: float = FETCH_TIMEOUT, max_bytes: int | None = None
) -> bytes:
    """Download an archive once (http/https), bounded in time and size; 400 on failure."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValidationFailed("code_url must be an http(s) URL", details=[{"field": "code_url"}])
    _check_public_host(url)
    limit = max_bytes or archive_limits().max_archive_bytes
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    try:
        with (
            httpx.Client(
                timeout=httpx.Timeout(timeout),
                follow_redirects=True,
                max_redirects=FETCH_MAX_REDIRECTS,
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise ValidationFailed(
                    f"fetching code_url answered HTTP {response.status_code}",
                    details=[{"field": "code_url", "status": response.status_code}],
                )
            for chunk in response.iter_bytes(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ValidationFailed(
                        f"the archive at code_url is larger than {limit} bytes",
                        details=[{"field": "code_url"}],
                    )
                if time.monotonic() > deadline:
                    raise ValidationFailed(f"fetching code_url took longer than {timeout:g}s")
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise ValidationFailed(
            f"fetching code_url failed: {type(exc).__name__}: {exc}",
            details=[{"field": "code_url"}],
        ) from None
    return b"".join(chunks)


def _clean_tags(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # AIOS stores tags as a comma-separated string
        return [t.strip() for t in value.split(",") if t.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return [t.strip() for t in value if t.strip()]
    raise ValidationFailed("tags must be a list of strings or a comma-separated string")


def _clean_fields(fields: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    unknown = sorted(set(fields) - RULE_FIELDS)
    if unknown:
        raise ValidationFailed(
            f"unknown policy fields: {unknown}", details=[{"allowed": sorted(RULE_FIELDS)}]
        )
    out = dict(fields)
    if "tags" in out:
        out["tags"] = _clean_tags(out["tags"])
    for name in _DICT_FIELDS:
        if name in out:
            if out[name] is None:
                out[name] = {}
            if not isinstance(out[name], dict):
                raise ValidationFailed(f"{name} must be a JSON object", details=[{"field": name}])
    if "management_commands_schema" in out:
        if out["management_commands_schema"] is None:
            out["management_commands_schema"] = []
        check_management_commands_schema(out["management_commands_schema"])
    if "type" in out and out["type"] not in PolicyType.values:
        raise ValidationFailed(
            f"type must be one of {PolicyType.values}", details=[{"field": "type"}]
        )
    if "class_name" in out:
        if not out["class_name"]:
            out["class_name"] = DEFAULT_CLASS_NAME
        if not isinstance(out["class_name"], str) or not out["class_name"].isidentifier():
            raise ValidationFailed("class_name must be a Python identifier")
    if "description" in out and out["description"] is None:
        out["description"] = ""
    for name in _SCHEMA_FIELDS:
        if name in out:
            check_schema(out[name], name)
    if not partial:
        out.setdefault("class_name", DEFAULT_CLASS_NAME)
    return out


def _check_defaults(rule: PolicyRule) -> None:
    """Default settings/parameters must match their own schemas."""
    for value_field, schema_field in (
        ("policy_parameters", "policy_parameters_schema"),
        ("policy_settings", "policy_settings_schema"),
    ):
        problem = first_error(getattr(rule, schema_field), getattr(rule, value_field))
        if problem:
            raise ValidationFailed(
                f"{value_field} does not match {schema_field} {problem}",
                details=[{"field": value_field, "message": problem}],
            )


def _store_archive(rule: PolicyRule, data: bytes, info: ArchiveInfo) -> None:
    """Put the archive in default storage under its sha256 (shared by identical uploads)."""
    rule.code_sha256 = info.sha256
    rule.code_size = info.size
    rule.code_format = info.format
    name = archive_upload_to(rule, "")
    if default_storage.exists(name):
        with default_storage.open(name, "rb") as fh:
            if sha256_hex(fh.read(info.size + 1)) == info.sha256:
                rule.code.name = name
                return
        log.warning("event=policy_archive_repaired file=%s", name)
        default_storage.delete(name)
    rule.code.name = default_storage.save(name, ContentFile(bytes(data)))
    runtime.forget_verification(rule.code.name)


def _release_archive(name: str, *, keep_pk: Any = None) -> None:
    """Delete a stored archive no other rule points at."""
    if not name:
        return
    others = PolicyRule.objects.filter(code=name)
    if keep_pk is not None:
        others = others.exclude(pk=keep_pk)
    if not others.exists():
        default_storage.delete(name)
        runtime.forget_verification(name)


def _policy_uri(name: Any, version: Any, release_tag: Any) -> str:
    for label, value in (("name", name), ("version", version), ("release_tag", release_tag)):
        if not isinstance(value, str) or not value:
            raise ValidationFailed(f"{label} is required", details=[{"field": label}])
    if "/" in name:
        raise ValidationFailed(
            "a policy name cannot contain '/': the URI is used as a URL path segment",
            details=[{"field": "name"}],
        )
    try:
        return build_uri(name, version, release_tag)
    except URIError as exc:
        raise ValidationFailed(str(exc), details=[{"field": "name"}]) from None


def register_policy(
    *,
    name: str,
    version: str,
    release_tag: str,
    archive: bytes,
    owner: Any = None,
    **fields: Any,
) -> PolicyRule:
    """Validate the archive, store it under its sha256 and create the record (409 if the URI
    exists). ``fields`` are the other ``PolicyRule`` fields (description, tags, schemas…)."""
    uri = _policy_uri(name, version, release_tag)
    cleaned = _clean_fields(fields, partial=False)
    if PolicyRule.objects.filter(policy_rule_uri=uri).exists():
        raise Conflict(f"policy rule {uri!r} already exists", details=[{"policy_rule_uri": uri}])
    info = validate_archive(archive)
    rule = PolicyRule(
        policy_rule_uri=uri,
        name=name,
        version=version,
        release_tag=release_tag,
        owner=owner if owner is not None and getattr(owner, "is_authenticated", False) else None,
        **cleaned,
    )
    _check_defaults(rule)
    _store_archive(rule, archive, info)
    try:
        with transaction.atomic():
            rule.save()
    except IntegrityError:
        raise Conflict(
            f"policy rule {uri!r} already exists", details=[{"policy_rule_uri": uri}]
        ) from None
    log.info(
        "event=policy_registered uri=%s sha256=%s size=%d files=%d",
        uri,
        info.sha256,
        info.size,
        len(info.files),
    )
    return rule


def register_policy_from_url(
    *,
    name: str,
    version: str,
    release_tag: str,
    code_url: str,
    owner: Any = None,
    **fields: Any,
) -> PolicyRule:
    """``register_policy`` with the archive fetched once from ``code_url``."""
    uri = _policy_uri(name, version, release_tag)
    if PolicyRule.objects.filter(policy_rule_uri=uri).exists():
        raise Conflict(f"policy rule {uri!r} already exists", details=[{"policy_rule_uri": uri}])
    archive = fetch_archive(code_url)
    return register_policy(
        name=name,
        version=version,
        release_tag=release_tag,
        archive=archive,
        owner=owner,
        code_url=code_url,
        **fields,
    )


def update_policy(
    rule: PolicyRule,
    *,
    archive: bytes | None = None,
    code_url: str | None = None,
    **fields: Any,
) -> PolicyRule:
    """Change a rule's fields and/or code. The URI (name, version, release_tag) is immutable."""
    for key in ("name", "version", "release_tag", "policy_rule_uri"):
        if key in fields:
            value = fields.pop(key)
            if value != getattr(rule, key):
                raise ValidationFailed(
                    f"{key} cannot change: the policy rule URI is immutable "
                    "(register a new version instead)",
                    details=[{"field": key}],
                )
    cleaned = _clean_fields(fields, partial=True)
    for key, value in cleaned.items():
        setattr(rule, key, value)
    _check_defaults(rule)
    old_name = rule.code.name
    if code_url:
        archive = fetch_archive(code_url)
        rule.code_url = code_url
    if archive is not None:
        info = validate_archive(archive)
        _store_archive(rule, archive, info)
    rule.save()
    if rule.code.name != old_name:
        _release_archive(old_name, keep_pk=None)
    runtime.forget_evaluators(rule.pk)
    log.info("event=policy_updated uri=%s sha256=%s", rule.policy_rule_uri, rule.code_sha256)
    return rule


def delete_policy(rule: PolicyRule) -> None:
    """Delete a rule (409 while functions run it) and its archive if no other rule shares it."""
    running = list(rule.functions.values_list("name", flat=True))
    if running:
        raise Conflict(
            f"policy rule {rule.policy_rule_uri!r} is used by functions {running}; "
            "delete them first",
            details=[{"functions": running}],
        )
    name, pk, uri = rule.code.name, rule.pk, rule.policy_rule_uri
    rule.delete()
    _release_archive(name)
    runtime.forget_evaluators(pk)
    log.info("event=policy_deleted uri=%s", uri)


def archive_listing(rule: PolicyRule) -> dict[str, Any]:
    """Files of the stored archive and the text of ``code/function.py`` (the admin preview)."""
    try:
        data = runtime.read_archive(rule)
        info = runtime_validate_archive(data, archive_limits())
        source = read_member(data, FUNCTION_PATH, archive_limits()) or b""
    except PolicyError as exc:
        return {"error": {"code": exc.code, "message": exc.message}, "files": [], "function_py": ""}
    text = source[:PREVIEW_MAX_BYTES].decode("utf-8", errors="replace")
    if len(source) > PREVIEW_MAX_BYTES:
        text += f"\n# … truncated ({len(source)} bytes)"
    return {
        "format": info.format,
        "sha256": info.sha256,
        "files": [{"path": m.path, "size": m.size, "sha256": m.sha256} for m in info.files],
        "function_py": text,
    }


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------


def _check_mode(mode: str) -> str:
    if mode not in ExecutionMode.values:
        raise ValidationFailed(
            f"mode must be one of {ExecutionMode.values}, not {mode!r}", details=[{"field": "mode"}]
        )
    return mode


def _check_overrides(value: Any, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PolicyExecutionError(PolicyErrorCode.BAD_INPUT, f"{what} must be a JSON object")
    return value


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _api_error(exc: PolicyError, uri: str) -> ApiError:
    if exc.code == RuntimeCode.NOT_FOUND:
        return NotFound(exc.message, details=exc.details)
    return PolicyExecutionError.from_runtime(exc, uri=uri)


def _default_executor_id() -> str:
    configured = os.environ.get("POLICY_SYSTEM_EXECUTOR_ID")
    if configured:
        return configured
    executor = (
        PolicyExecutor.objects.filter(executor_status=ExecutorStatus.HEALTHY)
        .order_by("executor_id")
        .first()
    )
    if executor is None:
        raise PolicyExecutionError(
            PolicyErrorCode.UNAVAILABLE,
            "mode 'remote' needs an executor: none given, none registered as healthy",
        )
    return executor.executor_id


def _evaluator(
    rule: PolicyRule,
    parameters: dict[str, Any] | None,
    settings: dict[str, Any] | None,
    mode: str,
    executor_id: str | None,
    timeout: float | None,
):
    try:
        evaluator = runtime.evaluator_for(
            rule,
            parameters=parameters,
            settings=settings,
            mode=mode,
            executor_id=executor_id,
            timeout=timeout,
        )
    except PolicyError as exc:
        raise _api_error(exc, rule.policy_rule_uri) from None
    problem = first_error(rule.policy_parameters_schema, evaluator.parameters)
    if problem:
        raise PolicyExecutionError(
            PolicyErrorCode.BAD_INPUT, f"parameters do not match the policy's schema {problem}"
        )
    if rule.policy_settings_schema and _is_json(evaluator.settings):
        problem = first_error(rule.policy_settings_schema, evaluator.settings)
        if problem:
            raise PolicyExecutionError(
                PolicyErrorCode.BAD_INPUT, f"settings do not match the policy's schema {problem}"
            )
    return evaluator


def _note_executor(executor_id: str | None, error: PolicyError | None) -> None:
    """Keep ``executor_status`` in step with what calls to the executor observe."""
    if not executor_id:
        return
    if error is not None and error.code in (RuntimeCode.UNAVAILABLE, RuntimeCode.BUSY):
        status = (
            ExecutorStatus.BUSY if error.code == RuntimeCode.BUSY else ExecutorStatus.UNREACHABLE
        )
        PolicyExecutor.objects.filter(executor_id=executor_id).update(
            executor_status=status, last_error=error.message[:2000], last_checked_at=timezone.now()
        )
    elif error is None:
        PolicyExecutor.objects.filter(executor_id=executor_id).exclude(
            executor_status=ExecutorStatus.HEALTHY
        ).update(
            executor_status=ExecutorStatus.HEALTHY, last_error="", last_checked_at=timezone.now()
        )


def _run(
    kind: str,
    policy_rule_uri: str,
    call: tuple[Any, ...],
    *,
    parameters: dict[str, Any] | None,
    settings: dict[str, Any] | None,
    mode: str,
    executor_id: str | None,
    timeout: float | None,
) -> Any:
    _check_mode(mode)
    parameters = _check_overrides(parameters, "parameters")
    settings = _check_overrides(settings, "settings")
    rule = get_policy(policy_rule_uri)
    if mode == ExecutionMode.REMOTE and not executor_id:
        executor_id = _default_executor_id()
    evaluator = _evaluator(rule, parameters, settings, mode, executor_id, timeout)
    started = time.perf_counter()
    try:
        if kind == "eval":
            result = evaluator.execute_policy_rule(call[0])
        else:
            result = evaluator.execute_mgmt_command(call[0], call[1])
    except PolicyError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        log.info(
            "event=policy_failed kind=%s uri=%s mode=%s code=%s ms=%.1f message=%r",
            kind,
            policy_rule_uri,
            mode,
            exc.code,
            elapsed,
            exc.message[:200],
        )
        if mode == ExecutionMode.REMOTE:
            _note_executor(executor_id, exc)
        raise _api_error(exc, policy_rule_uri) from None
    if mode == ExecutionMode.REMOTE:
        _note_executor(executor_id, None)
    log.debug(
        "event=policy_evaluated kind=%s uri=%s mode=%s ms=%.2f",
        kind,
        policy_rule_uri,
        mode,
        (time.perf_counter() - started) * 1000,
    )
    return result


def evaluate_policy(
    policy_rule_uri: str,
    input_data: Any,
    *,
    parameters: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    mode: str = "sandbox",
    executor_id: str | None = None,
    timeout: float | None = None,
) -> Any:
    """Run ``eval(parameters, input_data, context)`` of a registered policy and return its result.

    ``mode``: ``sandbox`` (default; every control-plane hook), ``local`` (in this process: only
    for trusted built-ins), ``remote`` (on ``executor_id``, or ``POLICY_SYSTEM_EXECUTOR_ID``,
    or the first healthy executor). ``parameters``/``settings`` override the record's defaults
    key by key. Input and output schemas are enforced. Raises ``PolicyExecutionError`` (422)
    or ``NotFound``.
    """
    return _run(
        "eval",
        policy_rule_uri,
        (input_data,),
        parameters=parameters,
        settings=settings,
        mode=mode,
        executor_id=executor_id,
        timeout=timeout,
    )


def run_management(
    policy_rule_uri: str,
    action: str,
    data: Any,
    *,
    parameters: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    mode: str = "sandbox",
    executor_id: str | None = None,
    timeout: float | None = None,
) -> Any:
    """Run ``management(action, data)`` of a registered policy (same modes and errors)."""
    if not isinstance(action, str) or not action:
        raise PolicyExecutionError(PolicyErrorCode.BAD_INPUT, "action must be a non-empty string")
    return _run(
        "mgmt",
        policy_rule_uri,
        (action, data),
        parameters=parameters,
        settings=settings,
        mode=mode,
        executor_id=executor_id,
        timeout=timeout,
    )


def execute_failure_policy(
    failure_policy_id: str,
    inputs: Any,
    parameters: dict[str, Any] | None = None,
    *,
    user: Any = None,
) -> FailurePolicyRun:
    """Run a failure policy sandboxed and log the run. Raises (after logging) on failure; the
    error's details carry the ``run_id``."""
    started = time.perf_counter()
    rule = PolicyRule.objects.filter(policy_rule_uri=failure_policy_id).first()
    run = FailurePolicyRun(
        failure_policy_id=failure_policy_id,
        policy=rule,
        inputs=inputs,
        parameters=parameters if isinstance(parameters, dict) else {},
        requested_by=user
        if user is not None and getattr(user, "is_authenticated", False)
        else None,
    )
    try:
        result = evaluate_policy(failure_policy_id, inputs, parameters=parameters)
    except ApiError as exc:
        run.status = RunStatus.FAILED
        run.error = exc.as_dict()["error"]
        run.duration_ms = (time.perf_counter() - started) * 1000
        run.save()
        log.warning(
            "event=failure_policy_failed policy=%s run_id=%s code=%s",
            failure_policy_id,
            run.run_id,
            exc.code,
        )
        exc.details = [*exc.details, {"run_id": str(run.run_id)}]
        raise
    run.status = RunStatus.SUCCEEDED
    run.result = result
    run.duration_ms = (time.perf_counter() - started) * 1000
    run.save()
    log.info("event=failure_policy_run policy=%s run_id=%s", failure_policy_id, run.run_id)
    return run


# ---------------------------------------------------------------------------------------------
# Executors (T2)
# ---------------------------------------------------------------------------------------------


def _check_host_uri(uri: Any) -> str:
    if not isinstance(uri, str) or not uri.startswith(("http://", "https://")):
        raise ValidationFailed(
            "executor_host_uri must be an http(s) URL", details=[{"field": "executor_host_uri"}]
        )
    parts = urllib.parse.urlsplit(uri)
    if not parts.hostname:
        raise ValidationFailed("executor_host_uri has no host")
    return uri.rstrip("/")


def _check_executor_id(executor_id: Any) -> str:
    try:
        return validate_slug_id(executor_id, "executor_id")
    except URIError as exc:
        raise ValidationFailed(str(exc), details=[{"field": "executor_id"}]) from None


def get_executor(executor_id: str) -> PolicyExecutor:
    executor = PolicyExecutor.objects.filter(executor_id=executor_id).first()
    if executor is None:
        raise NotFound(f"policy executor {executor_id!r} is not registered")
    return executor


def register_executor(
    *,
    executor_id: str,
    executor_host_uri: str,
    owner: Any = None,
    executor_metadata: dict | None = None,
    executor_hardware_info: dict | None = None,
    executor_status: str = ExecutorStatus.HEALTHY,
    replace: bool = False,
) -> PolicyExecutor:
    """Register an executor service (409 if the id exists, unless ``replace``)."""
    executor_id = _check_executor_id(executor_id)
    host = _check_host_uri(executor_host_uri)
    if executor_status not in ExecutorStatus.values:
        raise ValidationFailed(f"executor_status must be one of {ExecutorStatus.values}")
    values = {
        "executor_host_uri": host,
        "executor_metadata": executor_metadata or {},
        "executor_hardware_info": executor_hardware_info or {},
        "executor_status": executor_status,
        "last_error": "",
        "last_checked_at": timezone.now(),
    }
    owner = owner if owner is not None and getattr(owner, "is_authenticated", False) else None
    if replace:
        executor, _ = PolicyExecutor.objects.update_or_create(
            executor_id=executor_id, defaults=values, create_defaults={**values, "owner": owner}
        )
    else:
        if PolicyExecutor.objects.filter(executor_id=executor_id).exists():
            raise Conflict(f"policy executor {executor_id!r} already exists")
        try:
            with transaction.atomic():
                executor = PolicyExecutor.objects.create(
                    executor_id=executor_id, owner=owner, **values
                )
        except IntegrityError:
            raise Conflict(f"policy executor {executor_id!r} already exists") from None
    log.info("event=executor_registered executor_id=%s host=%s", executor_id, host)
    return executor


def update_executor(executor: PolicyExecutor, **fields: Any) -> PolicyExecutor:
    """Change an executor's host, metadata, hardware info or status (its id is fixed)."""
    if "executor_id" in fields and fields.pop("executor_id") != executor.executor_id:
        raise ValidationFailed("executor_id cannot change", details=[{"field": "executor_id"}])
    allowed = {
        "executor_host_uri",
        "executor_metadata",
        "executor_hardware_info",
        "executor_status",
    }
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValidationFailed(f"unknown executor fields: {unknown}")
    if "executor_host_uri" in fields:
        fields["executor_host_uri"] = _check_host_uri(fields["executor_host_uri"])
    if "executor_status" in fields and fields["executor_status"] not in ExecutorStatus.values:
        raise ValidationFailed(f"executor_status must be one of {ExecutorStatus.values}")
    for key, value in fields.items():
        setattr(executor, key, value if value is not None else {})
    executor.save()
    return executor


def check_executor(
    executor: PolicyExecutor, *, timeout: float = EXECUTOR_TIMEOUT
) -> PolicyExecutor:
    """Probe ``GET <host>/health`` and record the executor's status."""
    try:
        response = httpx.get(f"{executor.executor_host_uri}/health", timeout=timeout)
        healthy = response.status_code == 200
        error = "" if healthy else f"/health answered {response.status_code}"
    except httpx.HTTPError as exc:
        healthy, error = False, f"{type(exc).__name__}: {exc}"
    executor.executor_status = ExecutorStatus.HEALTHY if healthy else ExecutorStatus.UNREACHABLE
    executor.last_error = error[:2000]
    executor.last_checked_at = timezone.now()
    executor.save(update_fields=["executor_status", "last_error", "last_checked_at", "updated_at"])
    return executor


def execute_on_executor(
    executor_id: str,
    policy_rule_uri: str,
    input_data: Any,
    *,
    parameters: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    timeout: float | None = None,
) -> Any:
    """``evaluate_policy`` on one registered executor (the code is sent once per sha256)."""
    get_executor(executor_id)
    return evaluate_policy(
        policy_rule_uri,
        input_data,
        parameters=parameters,
        settings=settings,
        mode=ExecutionMode.REMOTE,
        executor_id=executor_id,
        timeout=timeout,
    )


def local_hardware_info(executor_id: str = "") -> dict[str, Any]:
    """This machine in the cluster spec's shape (sizes in MB), for executor registration."""
    mb = 1024 * 1024
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    disk = psutil.disk_usage(str(django_settings.AIOS_DATA_DIR))
    return {
        "id": executor_id,
        "hostname": socket.gethostname(),
        "vcpu": {"count": psutil.cpu_count() or 0},
        "memory": {"memory_size": memory.total // mb},
        "swap": {"swap_size": swap.total // mb},
        "storage": {"disk_size": disk.total // mb},
        "network": {},
    }


# ---------------------------------------------------------------------------------------------
# Jobs (T3)
# ---------------------------------------------------------------------------------------------


def submit_job(
    *,
    name: str,
    policy_rule_uri: str,
    policy_rule_parameters: dict[str, Any] | None = None,
    inputs: Any = None,
    executor_id: str | None = None,
    node_selector: dict[str, Any] | None = None,
    cluster_id: str | None = None,
    owner: Any = None,
) -> PolicyJob:
    """Record a job and queue its one run (Celery, task type ``policy_job``).

    With ``executor_id`` the policy runs on that executor; with ``cluster_id`` it runs on that
    cluster as a job workload of its driver (``node_selector`` may pin ``{"node_id": ...}``;
    staff or the cluster's owner only); else sandboxed in the worker.
    """
    from apps.policies import tasks as policy_tasks
    from apps.tasks import services as task_services

    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("name is required", details=[{"field": "name"}])
    if policy_rule_parameters is not None and not isinstance(policy_rule_parameters, dict):
        raise ValidationFailed("policy_rule_parameters must be a JSON object")
    if node_selector is not None and not isinstance(node_selector, dict):
        raise ValidationFailed("node_selector must be a JSON object")
    rule = get_policy(policy_rule_uri)
    if cluster_id and executor_id:
        raise ValidationFailed(
            "a job runs either on a policy executor or on a cluster: give executor_id or "
            "cluster_id, not both"
        )
    if cluster_id:
        check_job_cluster(cluster_id, node_selector or {}, owner)
    executor = get_executor(executor_id) if executor_id else None
    owner = owner if owner is not None and getattr(owner, "is_authenticated", False) else None
    with transaction.atomic():
        job = PolicyJob.objects.create(
            name=name.strip()[:200],
            policy=rule,
            policy_rule_uri=policy_rule_uri,
            policy_rule_parameters=policy_rule_parameters or {},
            inputs=inputs if inputs is not None else {},
            executor=executor,
            executor_id_requested=executor_id or "",
            node_selector=node_selector or {},
            cluster_id=cluster_id or "",
            owner=owner,
        )
        job.task = task_services.submit(
            POLICY_JOB_TASK_TYPE,
            policy_tasks.run_policy_job,
            owner=owner,
            task_data={
                "job_id": str(job.job_id),
                "name": job.name,
                "policy_rule_uri": policy_rule_uri,
                "executor_id": executor_id or "",
                "cluster_id": cluster_id or "",
            },
            job_id=str(job.job_id),
        )
        job.save(update_fields=["task", "updated_at"])
    log.info("event=policy_job_submitted job_id=%s uri=%s", job.job_id, policy_rule_uri)
    return job


def run_job(job_id: str, recorder: Any = None) -> dict[str, Any]:
    """Carry out a job (called by the Celery task). Raises when the policy fails, after
    recording the error on the job."""
    job = PolicyJob.objects.select_related("executor").get(pk=job_id)
    PolicyJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, started_at=timezone.now(), updated_at=timezone.now()
    )
    if recorder is not None:
        recorder.progress(10, f"running {job.policy_rule_uri}", job_id=str(job.job_id))
    if job.cluster_id:
        return run_job_on_cluster(job, recorder)
    executor_id = job.executor.executor_id if job.executor else None
    try:
        result = evaluate_policy(
            job.policy_rule_uri,
            job.inputs,
            parameters=job.policy_rule_parameters or None,
            mode=ExecutionMode.REMOTE if executor_id else ExecutionMode.SANDBOX,
            executor_id=executor_id,
        )
    except ApiError as exc:
        PolicyJob.objects.filter(pk=job.pk).update(
            status=JobStatus.FAILED,
            error=exc.as_dict()["error"],
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        )
        log.info("event=policy_job_failed job_id=%s code=%s", job.job_id, exc.code)
        raise
    PolicyJob.objects.filter(pk=job.pk).update(
        status=JobStatus.COMPLETED,
        result=result,
        finished_at=timezone.now(),
        updated_at=timezone.now(),
    )
    log.info("event=policy_job_completed job_id=%s", job.job_id)
    return {"job_id": str(job.job_id), "result": result}


# ---------------------------------------------------------------------------------------------
# Jobs on a cluster (T3 through the cluster's driver)
# ---------------------------------------------------------------------------------------------

JOB_RUNNER_ENTRY_POINT = "block_sdk.policy_runtime.job_runner"
JOB_POLL_S = 0.5
JOB_LOG_TAIL_BYTES = 64 * 1024


def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        return default
    return value if value > 0 else default


def cluster_job_timeout() -> float:
    """Seconds a policy job may run on a cluster (``AIOS_POLICY_JOB_TIMEOUT_S``, 600)."""
    return _env_seconds("AIOS_POLICY_JOB_TIMEOUT_S", 600.0)


def cluster_job_start_timeout() -> float:
    """Seconds for the job to be picked up and started: a node agent's reconcile, a pod's
    scheduling and image pull (``AIOS_POLICY_JOB_START_TIMEOUT_S``, 120)."""
    return _env_seconds("AIOS_POLICY_JOB_START_TIMEOUT_S", 120.0)


def _job_node_id(node_selector: dict[str, Any]) -> str:
    value = node_selector.get("node_id") or node_selector.get("nodeId") or ""
    return value if isinstance(value, str) else ""


def check_job_cluster(cluster_id: Any, node_selector: dict[str, Any], user: Any) -> Any:
    """The cluster a job may run on: it exists and is live, the caller is staff or its
    owner, and a pinned node belongs to it. Raises 400/403/404/409."""
    from apps.clusters.choices import ClusterStatus
    from apps.clusters.drivers import ensure_available
    from apps.clusters.models import Cluster
    from apps.core.errors import Forbidden

    if not isinstance(cluster_id, str) or not cluster_id:
        raise ValidationFailed("cluster_id must be a cluster id", details=[{"field": "cluster_id"}])
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:
        raise NotFound(f"cluster {cluster_id!r} does not exist")
    is_staff = bool(getattr(user, "is_staff", False))
    if not is_staff and (cluster.owner_id is None or cluster.owner_id != getattr(user, "pk", None)):
        raise Forbidden(f"only staff or the owner of cluster {cluster_id!r} may run jobs on it")
    if cluster.status != ClusterStatus.LIVE:
        raise Conflict(f"cluster {cluster_id!r} is {cluster.status}, not live")
    ensure_available(cluster.driver)
    node_id = _job_node_id(node_selector)
    if node_id and not cluster.nodes.filter(pk=node_id).exists():
        raise NotFound(f"node {node_id!r} is not in cluster {cluster_id!r}")
    return cluster


def job_workload_id(job: PolicyJob) -> str:
    """One workload per job, named after it: a redelivered task finds it instead of
    starting a second run."""
    return f"policy-job-{job.job_id.hex[:20]}"


def _job_runner_args(job: PolicyJob, timeout: float, result_path: str | None) -> list[str]:
    args = [
        "--uri",
        job.policy_rule_uri,
        "--input",
        json.dumps(job.inputs, separators=(",", ":")),
        "--timeout",
        f"{timeout:g}",
    ]
    if job.policy_rule_parameters:
        args += ["--parameters", json.dumps(job.policy_rule_parameters, separators=(",", ":"))]
    if result_path:
        args += ["--result-path", result_path]
    return args


def _local_result_path(job: PolicyJob) -> str:
    return str(django_settings.AIOS_DATA_DIR / "policy-jobs" / str(job.job_id) / "result.json")


def _last_json_line(text: str) -> Any:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict) and ("result" in doc or "error" in doc):
                    return doc
    return None


def _read_tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - JOB_LOG_TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _local_job_outcome(workload: Any, result_path: str) -> dict[str, Any]:
    """What a job runner on a node agent left: its result file, else its log's last line."""
    from pathlib import Path

    doc: Any = None
    source = None
    result_file = Path(result_path)
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads(result_file.read_text(encoding="utf-8"))
        source = "result-file"
    with contextlib.suppress(OSError):  # read once; the job's record keeps it from now on
        result_file.unlink()
        result_file.parent.rmdir()
    tail = ""
    if not isinstance(doc, dict) and workload.log_path:
        tail = _read_tail(workload.log_path)
        doc = _last_json_line(tail)
        source = "log" if doc is not None else None
    return {
        "exit_code": workload.exit_code,
        "source": source,
        "result": doc,
        "raw": tail[-2000:],
    }


def _job_outcome(
    driver: Any, workload: Any, result_path: str | None
) -> tuple[Any, dict[str, Any] | None]:
    """``(result, None)`` or ``(None, error)`` from what the job runner reported."""
    if result_path is None:
        read = driver.job_result(workload.id)  # the driver reads its own (Kubernetes: pod)
    else:
        read = _local_job_outcome(workload, result_path)
    doc = read.get("result")
    exit_code = read.get("exit_code", workload.exit_code)
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        error = doc["error"]
        return None, {
            "code": str(error.get("code") or RuntimeCode.EXCEPTION),
            "message": str(error.get("message") or "the policy job failed"),
            "details": error.get("details") if isinstance(error.get("details"), list) else [],
        }
    if isinstance(doc, dict) and "result" in doc and exit_code in (0, None):
        return doc["result"], None
    tail = str(read.get("raw") or workload.last_error or "")[-500:]
    return None, {
        "code": RuntimeCode.EXCEPTION if exit_code else PolicyErrorCode.BAD_OUTPUT,
        "message": f"the job runner exited with code {exit_code} without a result"
        + (f": {tail}" if tail else ""),
        "details": [{"workload_id": workload.id, "exit_code": exit_code}],
    }


def _wait_for_job(workload_id: str, *, timeout: float, start_timeout: float, recorder: Any) -> Any:
    """Poll the workload row until the job ended; bounded by start + run timeouts."""
    from apps.clusters.choices import WorkloadStatus
    from apps.clusters.models import Workload

    finished = (WorkloadStatus.EXITED, WorkloadStatus.FAILED, WorkloadStatus.STOPPED)
    started = time.monotonic()
    deadline = started + start_timeout + timeout
    start_deadline = started + start_timeout
    seen = ""
    while True:
        row = Workload.objects.filter(pk=workload_id).first()
        if row is None:
            raise PolicyExecutionError(
                PolicyErrorCode.UNAVAILABLE, f"job workload {workload_id} was removed"
            )
        if row.status in finished:
            return row
        now = time.monotonic()
        if row.status != seen:
            seen = row.status
            if recorder is not None:
                recorder.progress(
                    40 if row.status == WorkloadStatus.RUNNING else 25,
                    f"job workload {workload_id} on {row.node_id}: {row.status}",
                    workload_status=row.status,
                )
        if row.status == WorkloadStatus.PENDING and now > start_deadline:
            raise PolicyExecutionError(
                PolicyErrorCode.UNAVAILABLE,
                f"job workload {workload_id} did not start within {start_timeout:g}s on node "
                f"{row.node_id} (is its node agent running?)",
            )
        if now > deadline:
            raise PolicyExecutionError(
                PolicyErrorCode.TIMEOUT, f"the job did not finish within {timeout:g}s"
            )
        time.sleep(JOB_POLL_S)


def run_job_on_cluster(job: PolicyJob, recorder: Any = None) -> dict[str, Any]:
    """Run a job as a ``job`` workload of its cluster's driver and record what it reported.

    The workload runs ``block_sdk.policy_runtime.job_runner``, which fetches the policy from
    the control plane's registry and writes one JSON document. A driver that reads results
    back itself (``job_result``: Kubernetes, from the pod's termination message or log) is
    asked; otherwise (local driver) the runner writes to a file under ``AIOS_DATA_DIR`` and
    the control plane reads it, or the workload's log. The workload is removed afterwards.
    Raises ``PolicyExecutionError`` after recording a failure on the job.
    """
    from apps.clusters.choices import RestartPolicy, WorkloadKind
    from apps.clusters.drivers import WorkloadSpec, get_driver
    from apps.clusters.models import Cluster, Workload

    timeout = cluster_job_timeout()
    workload_id = job.workload_id or job_workload_id(job)
    driver = None
    try:
        cluster = Cluster.objects.filter(pk=job.cluster_id).first()
        if cluster is None:
            raise NotFound(f"cluster {job.cluster_id!r} does not exist any more")
        rule = get_policy(job.policy_rule_uri)
        parameters = {**(rule.policy_parameters or {}), **(job.policy_rule_parameters or {})}
        problem = first_error(rule.policy_parameters_schema, parameters)
        if problem:
            raise PolicyExecutionError(
                PolicyErrorCode.BAD_INPUT, f"parameters do not match the policy's schema {problem}"
            )
        driver = get_driver(cluster)
        reads_back = callable(getattr(driver, "job_result", None))
        result_path = None if reads_back else _local_result_path(job)
        if not Workload.objects.filter(pk=workload_id).exists():
            node_id = _job_node_id(job.node_selector or {})
            spec = WorkloadSpec(
                kind=WorkloadKind.JOB,
                entry_point=JOB_RUNNER_ENTRY_POINT,
                args=_job_runner_args(job, timeout, result_path),
                node_id=node_id or None,
                restart_policy=RestartPolicy.NEVER,
                resources={"timeout_s": int(timeout) + 30},  # the runner's own limit fires first
                labels={"policy_job_id": str(job.job_id)},
                id=workload_id,
            )
            with contextlib.suppress(Conflict):  # a redelivered task: the run already exists
                driver.run_job(spec)
        PolicyJob.objects.filter(pk=job.pk).update(
            workload_id=workload_id, updated_at=timezone.now()
        )
        if recorder is not None:
            recorder.progress(
                20,
                f"job workload {workload_id} submitted to cluster {cluster.id}",
                workload_id=workload_id,
                cluster_id=cluster.id,
            )
        row = _wait_for_job(
            workload_id,
            timeout=timeout,
            start_timeout=cluster_job_start_timeout(),
            recorder=recorder,
        )
        result, error = _job_outcome(driver, row, result_path)
        if error is not None:
            raise PolicyExecutionError(error["code"], error["message"], error["details"])
    except ApiError as exc:
        PolicyJob.objects.filter(pk=job.pk).update(
            status=JobStatus.FAILED,
            error=exc.as_dict()["error"],
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        )
        log.info(
            "event=policy_job_failed job_id=%s cluster_id=%s workload_id=%s code=%s",
            job.job_id,
            job.cluster_id,
            workload_id,
            exc.code,
        )
        _remove_job_workload(driver, workload_id)
        raise
    PolicyJob.objects.filter(pk=job.pk).update(
        status=JobStatus.COMPLETED,
        result=result,
        finished_at=timezone.now(),
        updated_at=timezone.now(),
    )
    log.info(
        "event=policy_job_completed job_id=%s cluster_id=%s workload_id=%s",
        job.job_id,
        job.cluster_id,
        workload_id,
    )
    _remove_job_workload(driver, workload_id)
    return {
        "job_id": str(job.job_id),
        "cluster_id": job.cluster_id,
        "workload_id": workload_id,
        "result": result,
    }


def _remove_job_workload(driver: Any, workload_id: str) -> None:
    """The run is recorded: its process, Job and pods go (best effort, never fails the job)."""
    if driver is None:
        return
    try:
        driver.remove_workload(workload_id)
    except ApiError as exc:
        if exc.status_code != 404:
            log.warning(
                "event=policy_job_workload_not_removed workload_id=%s error=%s",
                workload_id,
                exc.message,
            )


# ---------------------------------------------------------------------------------------------
# Functions (T4)
# ---------------------------------------------------------------------------------------------

_runner: FunctionRunner | None = None


def function_runner() -> FunctionRunner:
    """The runner that starts function replicas (local processes for now)."""
    global _runner
    if _runner is None:
        _runner = LocalProcessRunner(
            base_dir=django_settings.AIOS_DATA_DIR / "policy-functions",
            cache_root=runtime.cache_root(),
        )
    return _runner


def function_call_timeout() -> float:
    """Seconds a replica may spend on one call (``AIOS_POLICY_FUNCTION_TIMEOUT``, default 30)."""
    try:
        return float(os.environ.get("AIOS_POLICY_FUNCTION_TIMEOUT") or FUNCTION_CALL_TIMEOUT)
    except ValueError:
        return FUNCTION_CALL_TIMEOUT


def get_function(name: str) -> PolicyFunction:
    function = PolicyFunction.objects.filter(name=name).first()
    if function is None:
        raise NotFound(f"policy function {name!r} does not exist")
    return function


def _check_autoscaling(value: Any, replicas: int) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationFailed("autoscaling must be a JSON object")
    known = {"enabled", "min_replicas", "max_replicas", "target_cpu_utilization_percentage"}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValidationFailed(
            f"unknown autoscaling keys {unknown}", details=[{"allowed": sorted(known)}]
        )
    low = value.get("min_replicas", replicas)
    high = value.get("max_replicas", replicas)
    if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high <= MAX_REPLICAS):
        raise ValidationFailed(
            f"autoscaling needs 1 <= min_replicas <= max_replicas <= {MAX_REPLICAS}"
        )
    return dict(value)


def _function_spec(function: PolicyFunction, rule: PolicyRule) -> FunctionSpec:
    """Verify the rule's archive, put it in the runtime cache, and describe the replicas."""
    record = runtime.resolver.record_for(rule)
    cache = runtime.policy_cache()
    if not cache.has_archive(record.sha256):
        source = record.archive
        data = source if isinstance(source, bytes) else source.read_bytes()
        cache.store(data, record.sha256)
    return FunctionSpec(
        function_id=str(function.function_id),
        name=function.name,
        policy_rule_uri=rule.policy_rule_uri,
        sha256=record.sha256,
        archive_path=str(cache.archive_path(record.sha256)),
        class_name=rule.class_name or None,
        settings={**record.settings, **(function.policy_rule_settings or {})},
        parameters={**record.parameters, **(function.policy_rule_parameters or {})},
        call_timeout=function_call_timeout(),
    )


def create_function(
    *,
    name: str,
    policy_rule_uri: str,
    policy_rule_parameters: dict[str, Any] | None = None,
    policy_rule_settings: dict[str, Any] | None = None,
    replicas: int = 1,
    autoscaling: dict[str, Any] | None = None,
    executor_id: str | None = None,
    function_metadata: dict[str, Any] | None = None,
    function_tags: list[str] | None = None,
    owner: Any = None,
) -> PolicyFunction:
    """Start ``replicas`` long-lived processes of a policy and record them.

    A policy that cannot load (syntax error, missing class, ``__init__`` raising) fails the
    creation with 422 ``load_error`` and leaves nothing behind.
    """
    try:
        validate_slug_id(name, "function name")
    except URIError as exc:
        raise ValidationFailed(str(exc), details=[{"field": "name"}]) from None
    if (
        isinstance(replicas, bool)
        or not isinstance(replicas, int)
        or not 1 <= replicas <= MAX_REPLICAS
    ):
        raise ValidationFailed(f"replicas must be an integer from 1 to {MAX_REPLICAS}")
    for label, value in (
        ("policy_rule_parameters", policy_rule_parameters),
        ("policy_rule_settings", policy_rule_settings),
        ("function_metadata", function_metadata),
    ):
        if value is not None and not isinstance(value, dict):
            raise ValidationFailed(f"{label} must be a JSON object")
    autoscaling = _check_autoscaling(autoscaling, replicas)
    rule = get_policy(policy_rule_uri)
    executor = get_executor(executor_id) if executor_id else None
    if PolicyFunction.objects.filter(name=name).exists():
        raise Conflict(f"policy function {name!r} already exists")
    owner = owner if owner is not None and getattr(owner, "is_authenticated", False) else None
    try:
        with transaction.atomic():
            function = PolicyFunction.objects.create(
                name=name,
                policy=rule,
                policy_rule_uri=policy_rule_uri,
                policy_rule_parameters=policy_rule_parameters or {},
                policy_rule_settings=policy_rule_settings or {},
                policy_sha256=rule.code_sha256,
                replicas=replicas,
                autoscaling=autoscaling,
                executor=executor,
                function_metadata=function_metadata or {},
                function_tags=_clean_tags(function_tags),
                runner=function_runner().name,
                owner=owner,
            )
    except IntegrityError:
        raise Conflict(f"policy function {name!r} already exists") from None

    try:
        spec = _function_spec(function, rule)
        problem = first_error(rule.policy_parameters_schema, spec.parameters)
        if problem:
            raise PolicyExecutionError(
                PolicyErrorCode.BAD_INPUT, f"parameters do not match the policy's schema {problem}"
            )
        started: list[dict[str, Any]] = []
        try:
            for index in range(replicas):
                started.append(function_runner().start_replica(spec, index))
        except ReplicaStartError as exc:
            for replica in started:
                function_runner().stop_replica(replica)
            raise PolicyExecutionError(
                PolicyErrorCode.LOAD_ERROR, f"function {name!r} could not start: {exc}"
            ) from None
    except PolicyError as exc:
        function.delete()
        raise _api_error(exc, policy_rule_uri) from None
    except BaseException:
        function.delete()
        raise
    function.replica_state = started
    function.status = FunctionStatus.RUNNING
    function.save(update_fields=["replica_state", "status", "updated_at"])
    log.info("event=function_created name=%s replicas=%d uri=%s", name, replicas, policy_rule_uri)
    return function


def _redis() -> redis.Redis:
    return redis.Redis.from_url(
        django_settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
    )


def _next_replica(function: PolicyFunction, count: int) -> int:
    """Round-robin position shared by every web/Celery process (a Redis counter with a TTL)."""
    key = f"aios:policies:function-rr:{function.function_id}"
    try:
        client = _redis()
        pipe = client.pipeline()
        pipe.incr(key)
        pipe.expire(key, RR_KEY_TTL)
        value = pipe.execute()[0]
    except redis.RedisError:
        log.warning("event=function_rr_redis_unavailable name=%s", function.name)
        value = int(time.time() * 1000)
    return (int(value) - 1) % count


def _restart_replica(function: PolicyFunction, index: int, *, stuck: bool = False) -> dict:
    """Replace replica ``index``. The function row is locked meanwhile, so two processes that
    find the same replica dead start one successor, not two."""
    runner = function_runner()
    seen = next((r for r in function.replica_state or [] if r.get("index") == index), None)
    with transaction.atomic():
        locked = PolicyFunction.objects.select_for_update().get(pk=function.pk)
        replicas = list(locked.replica_state or [])
        old = next((r for r in replicas if r.get("index") == index), None)
        if (
            old is not None
            and seen is not None
            and old.get("pid") != seen.get("pid")
            and runner.replica_alive(old)
        ):
            function.replica_state = replicas  # another process replaced it already
            return old
        if old is not None:
            runner.stop_replica(old, force=stuck)
        rule = locked.policy or get_policy(locked.policy_rule_uri)
        try:
            replica = runner.start_replica(_function_spec(locked, rule), index)
        except (ReplicaStartError, PolicyError) as exc:
            locked.last_error = str(exc)[:2000]
            locked.status = FunctionStatus.DEGRADED
            locked.save(update_fields=["last_error", "status", "updated_at"])
            function.status, function.last_error = locked.status, locked.last_error
            raise PolicyExecutionError(
                PolicyErrorCode.UNAVAILABLE, f"replica {index} of {function.name!r} is down: {exc}"
            ) from None
        replica["restarts"] = int((old or {}).get("restarts", 0)) + 1
        replicas = [r for r in replicas if r.get("index") != index] + [replica]
        replicas.sort(key=lambda r: r.get("index", 0))
        locked.replica_state = replicas
        locked.save(update_fields=["replica_state", "updated_at"])
    function.replica_state = replicas
    log.warning("event=function_replica_restarted name=%s index=%d", function.name, index)
    return replica


def _replica_stuck(replica: dict[str, Any]) -> bool:
    """A live replica still busy with a call past its timeout (its thread cannot be
    interrupted, so every later call would wait behind it), or not answering ``/health``."""
    try:
        response = httpx.get(f"{replica['url']}/health", timeout=FUNCTION_HEALTH_TIMEOUT)
        busy_for = float(response.json().get("busy_for_s") or 0.0)
    except (httpx.HTTPError, ValueError, AttributeError):
        return True
    return busy_for > function_call_timeout() + 1.0


def reconcile_function(function: PolicyFunction) -> PolicyFunction:
    """Restart replicas whose process is gone or that are stuck in a call (their in-memory
    state is lost with them)."""
    runner = function_runner()
    down = [
        r for r in function.replica_state or [] if not runner.replica_alive(r) or _replica_stuck(r)
    ]
    for replica in down:
        try:
            _restart_replica(function, int(replica.get("index", 0)), stuck=True)
        except PolicyExecutionError:
            continue
    alive = sum(1 for r in function.replica_state or [] if runner.replica_alive(r))
    function.status = (
        FunctionStatus.RUNNING
        if alive == function.replicas
        else FunctionStatus.DEGRADED
        if alive
        else FunctionStatus.FAILED
    )
    function.save(update_fields=["status", "updated_at"])
    return function


def _post_replica(replica: dict[str, Any], path: str, body: Any, timeout: float) -> Any:
    response = httpx.post(f"{replica['url']}{path}", json=body, timeout=timeout)
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code == 200 and isinstance(payload, dict) and "result" in payload:
        return payload["result"]
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        raise PolicyError.from_dict(payload)
    raise PolicyError(
        RuntimeCode.UNAVAILABLE,
        f"replica answered HTTP {response.status_code}: {response.text[:200]}",
    )


def call_function(name: str, input_data: Any, *, timeout: float | None = None) -> dict[str, Any]:
    """Send ``input_data`` to the next replica (round robin); ``{"result", "replica"}``.

    A replica whose process died is restarted (its state starts afresh) and called once more.
    """
    function = get_function(name)
    replicas = list(function.replica_state or [])
    if not replicas:
        raise PolicyExecutionError(
            PolicyErrorCode.UNAVAILABLE, f"function {name!r} has no replicas"
        )
    replica = replicas[_next_replica(function, len(replicas))]
    limit = (timeout or function_call_timeout()) + 5.0
    for attempt in range(2):
        try:
            result = _post_replica(replica, "/call", input_data, limit)
            return {"result": result, "replica": replica.get("index", 0)}
        except httpx.TransportError as exc:
            if attempt == 1 or function_runner().replica_alive(replica):
                raise PolicyExecutionError(
                    PolicyErrorCode.UNAVAILABLE,
                    f"replica {replica.get('index')} of {name!r} did not answer: {exc}",
                ) from None
            replica = _restart_replica(function, int(replica.get("index", 0)))
        except PolicyError as exc:
            if exc.code == RuntimeCode.TIMEOUT:
                # The call keeps running on the replica's only thread and would block every
                # later call: replace the replica now (its state is lost either way).
                with contextlib.suppress(PolicyExecutionError):
                    _restart_replica(function, int(replica.get("index", 0)), stuck=True)
            raise _api_error(exc, function.policy_rule_uri) from None
    raise AssertionError("unreachable")  # pragma: no cover


def function_management(name: str, action: str, data: Any = None) -> dict[str, Any]:
    """``management(action, data)`` on every replica: ``{"results": [{replica, result|error}]}``."""
    function = get_function(name)
    if not isinstance(action, str) or not action:
        raise PolicyExecutionError(PolicyErrorCode.BAD_INPUT, "action must be a non-empty string")
    results = []
    for replica in function.replica_state or []:
        try:
            result = _post_replica(
                replica, "/mgmt", {"action": action, "data": data}, function_call_timeout() + 5
            )
            results.append({"replica": replica.get("index", 0), "result": result})
        except httpx.TransportError as exc:
            results.append(
                {
                    "replica": replica.get("index", 0),
                    "error": {"code": "unavailable", "message": str(exc)},
                }
            )
        except PolicyError as exc:
            results.append({"replica": replica.get("index", 0), "error": exc.as_dict()["error"]})
    return {"results": results}


def delete_function(function: PolicyFunction) -> None:
    """Stop every replica, then delete the record (409 while a graph uses the function)."""
    using = list(
        PolicyGraph.objects.filter(graph_function_ids__contains=[function.name]).values_list(
            "graph_uri", flat=True
        )
    )
    if using:
        raise Conflict(
            f"function {function.name!r} is used by graphs {using}; delete them first",
            details=[{"graphs": using}],
        )
    runner = function_runner()
    for replica in function.replica_state or []:
        runner.stop_replica(replica)
    runner.stop_all(str(function.function_id))
    with contextlib.suppress(redis.RedisError):  # otherwise the key expires on its own
        _redis().delete(f"aios:policies:function-rr:{function.function_id}")
    name = function.name
    function.delete()
    log.info("event=function_deleted name=%s", name)


# ---------------------------------------------------------------------------------------------
# Graphs (T5)
# ---------------------------------------------------------------------------------------------

GRAPH_FIELDS = frozenset(
    {"description", "metadata", "search_tags", "input_schema", "output_schema"}
)


def get_graph(graph_uri: str) -> PolicyGraph:
    graph = PolicyGraph.objects.filter(graph_uri=graph_uri).first()
    if graph is None:
        raise NotFound(f"policy graph {graph_uri!r} does not exist")
    return graph


def validate_graph(function_ids: Any, connections: Any) -> tuple[list[str], dict[str, list[str]]]:
    """Shape, acyclicity (400 naming the cycle) and existence of every function."""
    nodes, adjacency = graphs.normalise_connections(function_ids, connections)
    graphs.topological_order(nodes, adjacency)
    existing = set(PolicyFunction.objects.filter(name__in=nodes).values_list("name", flat=True))
    missing = [n for n in nodes if n not in existing]
    if missing:
        raise ValidationFailed(
            f"graph functions do not exist: {missing}",
            details=[{"field": "graph_function_ids", "missing": missing}],
        )
    return nodes, adjacency


def _clean_graph_fields(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - GRAPH_FIELDS)
    if unknown:
        raise ValidationFailed(f"unknown graph fields: {unknown}")
    out = dict(fields)
    for name in ("metadata", "input_schema", "output_schema"):
        if name in out:
            out[name] = out[name] or {}
            if not isinstance(out[name], dict):
                raise ValidationFailed(f"{name} must be a JSON object")
    for name in ("input_schema", "output_schema"):
        if name in out:
            check_schema(out[name], name)
    if "search_tags" in out:
        out["search_tags"] = _clean_tags(out["search_tags"])
    if "description" in out and out["description"] is None:
        out["description"] = ""
    return out


def create_graph(
    *,
    name: str,
    version: str,
    release_tag: str,
    graph_function_ids: list[str] | None = None,
    graph_connection_data: dict[str, list[str]] | None = None,
    owner: Any = None,
    **fields: Any,
) -> PolicyGraph:
    uri = _policy_uri(name, version, release_tag)
    cleaned = _clean_graph_fields(fields)
    nodes, adjacency = validate_graph(graph_function_ids, graph_connection_data)
    if PolicyGraph.objects.filter(graph_uri=uri).exists():
        raise Conflict(f"policy graph {uri!r} already exists")
    owner = owner if owner is not None and getattr(owner, "is_authenticated", False) else None
    try:
        with transaction.atomic():
            graph = PolicyGraph.objects.create(
                graph_uri=uri,
                name=name,
                version=version,
                release_tag=release_tag,
                graph_function_ids=nodes,
                graph_connection_data={n: c for n, c in adjacency.items() if c},
                owner=owner,
                **cleaned,
            )
    except IntegrityError:
        raise Conflict(f"policy graph {uri!r} already exists") from None
    log.info("event=graph_created uri=%s nodes=%d", uri, len(nodes))
    return graph


def update_graph(graph: PolicyGraph, **fields: Any) -> PolicyGraph:
    for key in ("name", "version", "release_tag", "graph_uri"):
        if key in fields and fields.pop(key) != getattr(graph, key):
            raise ValidationFailed(f"{key} cannot change: the graph URI is immutable")
    function_ids = fields.pop("graph_function_ids", None)
    connections = fields.pop("graph_connection_data", None)
    cleaned = _clean_graph_fields(fields)
    if function_ids is not None or connections is not None:
        nodes, adjacency = validate_graph(
            function_ids if function_ids is not None else graph.graph_function_ids,
            connections if connections is not None else graph.graph_connection_data,
        )
        graph.graph_function_ids = nodes
        graph.graph_connection_data = {n: c for n, c in adjacency.items() if c}
    for key, value in cleaned.items():
        setattr(graph, key, value)
    graph.save()
    return graph


def execute_graph(
    graph_uri: str, input_data: Any, *, timeout: float | None = None
) -> dict[str, Any]:
    """Run the graph's functions in topological order, outputs fed forward.

    A source gets ``input_data``; a node with one parent gets that parent's output; a node with
    several parents gets ``{parent_name: output}``. Returns ``{"result": {sink: output},
    "order": [...]}``.
    """
    graph = get_graph(graph_uri)
    problem = first_error(graph.input_schema, input_data)
    if problem:
        raise PolicyExecutionError(
            PolicyErrorCode.BAD_INPUT, f"input does not match the graph's input schema {problem}"
        )
    nodes, adjacency = graphs.normalise_connections(
        graph.graph_function_ids, graph.graph_connection_data
    )
    order = graphs.topological_order(nodes, adjacency)
    existing = set(PolicyFunction.objects.filter(name__in=nodes).values_list("name", flat=True))
    missing = [n for n in nodes if n not in existing]
    if missing:
        raise Conflict(f"graph {graph_uri!r} uses functions that no longer exist: {missing}")
    parents = graphs.parents_of(nodes, adjacency)
    outputs: dict[str, Any] = {}
    for node in order:
        ups = parents[node]
        if not ups:
            node_input = input_data
        elif len(ups) == 1:
            node_input = outputs[ups[0]]
        else:
            node_input = {parent: outputs[parent] for parent in ups}
        try:
            outputs[node] = call_function(node, node_input, timeout=timeout)["result"]
        except ApiError as exc:
            exc.message = f"graph node {node!r}: {exc.message}"
            exc.details = [*exc.details, {"node": node}]
            raise
    result = {sink: outputs[sink] for sink in graphs.sinks(nodes, adjacency)}
    problem = first_error(graph.output_schema, result)
    if problem:
        raise PolicyExecutionError(
            PolicyErrorCode.BAD_OUTPUT, f"graph output does not match its output schema {problem}"
        )
    return {"result": result, "order": order}


# ---------------------------------------------------------------------------------------------
# Helpers for other apps
# ---------------------------------------------------------------------------------------------


def policy_exists(policy_rule_uri: str) -> bool:
    return PolicyRule.objects.filter(policy_rule_uri=policy_rule_uri).exists()
