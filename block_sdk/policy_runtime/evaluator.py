"""``LocalPolicyEvaluator``: the one entry point for running a policy rule, in any mode.

Modes: ``"local"`` (Type 1, in this process: trusted or block-owned code), ``"sandbox"``
(a worker of a ``SandboxPool``: the default for control-plane hooks) and ``"remote"`` (Type 2,
a policy executor service over HTTP). Where a policy's code and defaults come from is
pluggable: a ``PolicyResolver`` returns a ``PolicyRecord``. In-memory, directory and HTTP
resolvers live here; the Django side registers one that reads its database.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from block_sdk.policy_runtime.archive import package_folder, sha256_hex
from block_sdk.policy_runtime.cache import PolicyCache, get_default_cache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode, PolicyIntegrityError
from block_sdk.policy_runtime.loader import LoadedPolicy, PolicyLoader, get_default_loader
from block_sdk.policy_runtime.sandbox import SandboxCall, SandboxPool, get_default_pool

log = logging.getLogger("aios.policy_runtime.evaluator")

MODES = ("local", "sandbox", "remote")
API_URL_ENV = "AIOS_API_URL"
API_TOKEN_ENV = "AIOS_API_TOKEN"  # noqa: S105 - a variable name, not a secret
POLICY_DIR_ENV = "AIOS_POLICY_DIR"
API_KEY_ENV = "AIOS_DATA_PLANE_API_KEY"
API_KEY_HEADER = "X-AIOS-Key"


@dataclass(frozen=True)
class PolicyRecord:
    """Everything needed to run a policy rule, wherever it was stored."""

    uri: str
    sha256: str
    # The archive: bytes, a path to it, or None when the cache already holds this sha256.
    archive: bytes | Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # default policy_settings
    parameters: dict[str, Any] = field(default_factory=dict)  # default policy_parameters
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    class_name: str | None = None


@runtime_checkable
class PolicyResolver(Protocol):
    """Finds a policy rule by URI. Raise ``PolicyError("not_found", ...)`` when unknown."""

    def resolve(self, policy_rule_uri: str) -> PolicyRecord: ...


@runtime_checkable
class ExecutorResolver(Protocol):
    """Finds the base URL of a registered policy executor by its id."""

    def resolve_executor(self, executor_id: str) -> str: ...


def _not_found(uri: str, where: str) -> PolicyError:
    return PolicyError(PolicyErrorCode.NOT_FOUND, f"policy rule {uri!r} not found in {where}")


class InMemoryPolicyResolver:
    """Records held in a dict: tests, built-ins shipped with a process, executor uploads."""

    def __init__(self) -> None:
        self._records: dict[str, PolicyRecord] = {}
        self._executors: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, record: PolicyRecord) -> PolicyRecord:
        with self._lock:
            self._records[record.uri] = record
        return record

    def add_archive(
        self,
        uri: str,
        archive: bytes,
        *,
        settings: dict[str, Any] | None = None,
        parameters: dict[str, Any] | None = None,
        input_schema: dict[str, Any] | None = None,
        output_schema: dict[str, Any] | None = None,
        class_name: str | None = None,
    ) -> PolicyRecord:
        """Register archive bytes under ``uri`` (its sha256 is computed here)."""
        return self.add(
            PolicyRecord(
                uri=uri,
                sha256=sha256_hex(archive),
                archive=archive,
                settings=dict(settings or {}),
                parameters=dict(parameters or {}),
                input_schema=input_schema,
                output_schema=output_schema,
                class_name=class_name,
            )
        )

    def add_executor(self, executor_id: str, url: str) -> None:
        with self._lock:
            self._executors[executor_id] = url

    def resolve(self, policy_rule_uri: str) -> PolicyRecord:
        record = self._records.get(policy_rule_uri)
        if record is None:
            raise _not_found(policy_rule_uri, "the in-memory registry")
        return record

    def resolve_executor(self, executor_id: str) -> str:
        url = self._executors.get(executor_id)
        if url is None:
            raise PolicyError(PolicyErrorCode.NOT_FOUND, f"policy executor {executor_id!r} unknown")
        return url


class DirectoryPolicyResolver:
    """Policies stored as files: ``<root>/<uri>.zip|.tar.gz|.tar.xz`` or a folder ``<root>/<uri>/``.

    An optional ``<root>/<uri>.json`` holds the record's other fields in the registry's names:
    ``policy_settings``, ``policy_parameters``, ``policy_input_schema``,
    ``policy_output_schema``, ``class_name`` and ``sha256`` (checked against the file when set).
    A folder is packaged on the fly, reproducibly, so its sha256 is stable.
    """

    _SUFFIXES = (".zip", ".tar.gz", ".tar.xz")

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def _path_for(self, uri: str) -> Path:
        if not uri or "/" in uri or "\\" in uri or uri.startswith(".") or "\x00" in uri:
            raise PolicyError(PolicyErrorCode.BAD_INPUT, f"invalid policy rule URI {uri!r}")
        return self.root / uri

    def resolve(self, policy_rule_uri: str) -> PolicyRecord:
        base = self._path_for(policy_rule_uri)
        archive: bytes | Path | None = None
        for suffix in self._SUFFIXES:
            candidate = base.with_name(base.name + suffix)
            if candidate.is_file():
                archive = candidate
                break
        if archive is None and base.is_dir():
            archive = package_folder(base)
        if archive is None:
            raise _not_found(policy_rule_uri, str(self.root))
        data = archive if isinstance(archive, bytes) else archive.read_bytes()
        meta: dict[str, Any] = {}
        meta_path = base.with_name(base.name + ".json")
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise PolicyError(
                    PolicyErrorCode.LOAD_ERROR, f"{meta_path} is not valid JSON: {exc}"
                ) from None
        sha = sha256_hex(data)
        expected = meta.get("sha256")
        if expected and expected != sha:
            raise PolicyIntegrityError(
                f"{archive if isinstance(archive, Path) else base} hashes to {sha}, "
                f"the record says {expected}"
            )
        return PolicyRecord(
            uri=policy_rule_uri,
            sha256=sha,
            archive=data,
            settings=dict(meta.get("policy_settings") or {}),
            parameters=dict(meta.get("policy_parameters") or {}),
            input_schema=meta.get("policy_input_schema") or None,
            output_schema=meta.get("policy_output_schema") or None,
            class_name=meta.get("class_name") or None,
        )


def _http_json(
    url: str,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """One JSON request with the standard library (block_sdk ships in slim images)."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - http(s) only
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    if not url.startswith(("http://", "https://")):
        raise PolicyError(PolicyErrorCode.BAD_INPUT, f"not an http(s) URL: {url!r}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PolicyError(PolicyErrorCode.UNAVAILABLE, f"{method} {url} failed: {reason}") from None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, {"error": {"code": "bad_response", "message": raw[:200].decode("latin-1")}}


class HttpPolicyResolver:
    """Reads policy records from the AIOS API: ``GET {api}/api/v1/policies/<uri>/``.

    The answer carries ``sha256``, ``archive_url`` (absolute, or relative to the API),
    ``policy_settings``, ``policy_parameters``, ``policy_input_schema``,
    ``policy_output_schema`` and optionally ``class_name``. The archive is downloaded only when
    the local cache does not already hold that sha256. Records are kept for ``ttl`` seconds.
    """

    def __init__(
        self,
        api_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        ttl: float = 30.0,
        cache: PolicyCache | None = None,
        max_archive_bytes: int | None = None,
    ) -> None:
        url = api_url or os.environ.get(API_URL_ENV)
        if not url:
            raise PolicyError(
                PolicyErrorCode.UNAVAILABLE, f"no API URL: pass api_url or set {API_URL_ENV}"
            )
        self.api_url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get(API_TOKEN_ENV)
        self.timeout = timeout
        self.ttl = ttl
        self._cache = cache
        self.max_archive_bytes = max_archive_bytes
        self._records: dict[str, tuple[float, PolicyRecord]] = {}
        self._lock = threading.Lock()

    @property
    def cache(self) -> PolicyCache:
        return self._cache if self._cache is not None else get_default_cache()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"} if self.token else {}

    def resolve(self, policy_rule_uri: str) -> PolicyRecord:
        now = time.monotonic()
        with self._lock:
            hit = self._records.get(policy_rule_uri)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        quoted = urllib.parse.quote(policy_rule_uri, safe=":")
        url = f"{self.api_url}/api/v1/policies/{quoted}/"
        status, body = _http_json(url, headers=self._headers(), timeout=self.timeout)
        if status == 404:
            raise _not_found(policy_rule_uri, self.api_url)
        if status != 200 or not isinstance(body, dict):
            raise PolicyError(
                PolicyErrorCode.UNAVAILABLE, f"GET {url} answered {status}: {str(body)[:200]}"
            )
        sha = body.get("sha256")
        if not isinstance(sha, str):
            raise PolicyError(PolicyErrorCode.LOAD_ERROR, f"{url} gave no sha256")
        archive: bytes | None = None
        if not self.cache.has_archive(sha):
            archive_url = body.get("archive_url") or body.get("code_url") or body.get("code")
            if not archive_url:
                raise PolicyError(PolicyErrorCode.LOAD_ERROR, f"{url} gave no archive_url")
            archive = self._download(urllib.parse.urljoin(url, archive_url))
            actual = sha256_hex(archive)
            if actual != sha:
                raise PolicyIntegrityError(
                    f"archive of {policy_rule_uri} hashes to {actual}, the registry says {sha}"
                )
        record = PolicyRecord(
            uri=body.get("policy_rule_uri") or policy_rule_uri,
            sha256=sha,
            archive=archive,
            settings=dict(body.get("policy_settings") or {}),
            parameters=dict(body.get("policy_parameters") or {}),
            input_schema=body.get("policy_input_schema") or None,
            output_schema=body.get("policy_output_schema") or None,
            class_name=body.get("class_name") or None,
        )
        with self._lock:
            self._records[policy_rule_uri] = (now, record)
        return record

    def _download(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise PolicyError(PolicyErrorCode.LOAD_ERROR, f"archive URL is not http(s): {url!r}")
        limit = self.max_archive_bytes or self.cache.limits.max_archive_bytes
        req = urllib.request.Request(url, headers=self._headers())  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                data = resp.read(limit + 1)
        except urllib.error.HTTPError as exc:
            raise PolicyError(
                PolicyErrorCode.UNAVAILABLE, f"downloading {url} answered {exc.code}"
            ) from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PolicyError(
                PolicyErrorCode.UNAVAILABLE, f"downloading {url} failed: {reason}"
            ) from None
        if len(data) > limit:
            raise PolicyError(PolicyErrorCode.LOAD_ERROR, f"archive at {url} is over {limit} bytes")
        return data

    def resolve_executor(self, executor_id: str) -> str:
        quoted = urllib.parse.quote(executor_id, safe="")
        url = f"{self.api_url}/api/v1/policy-executors/{quoted}/"
        status, body = _http_json(url, headers=self._headers(), timeout=self.timeout)
        if status == 404:
            raise PolicyError(PolicyErrorCode.NOT_FOUND, f"policy executor {executor_id!r} unknown")
        if status != 200 or not isinstance(body, dict) or not body.get("executor_host_uri"):
            raise PolicyError(
                PolicyErrorCode.UNAVAILABLE, f"GET {url} answered {status}: {str(body)[:200]}"
            )
        return str(body["executor_host_uri"])


_default_resolver: PolicyResolver | None = None
_default_resolver_lock = threading.Lock()


def set_default_resolver(resolver: PolicyResolver | None) -> None:
    """Register the resolver evaluators use when none is passed (the Django app does this)."""
    global _default_resolver
    with _default_resolver_lock:
        _default_resolver = resolver


def get_default_resolver() -> PolicyResolver:
    """The registered resolver, else HTTP (``AIOS_API_URL``) or a folder (``AIOS_POLICY_DIR``)."""
    global _default_resolver
    with _default_resolver_lock:
        if _default_resolver is None:
            if os.environ.get(API_URL_ENV):
                _default_resolver = HttpPolicyResolver()
            elif os.environ.get(POLICY_DIR_ENV):
                _default_resolver = DirectoryPolicyResolver(os.environ[POLICY_DIR_ENV])
            else:
                raise PolicyError(
                    PolicyErrorCode.UNAVAILABLE,
                    "no policy resolver: register one with set_default_resolver(), "
                    f"or set {API_URL_ENV} or {POLICY_DIR_ENV}",
                )
        return _default_resolver


def merge_overrides(defaults: dict[str, Any] | None, overrides: dict[str, Any] | None) -> dict:
    """The record's defaults with the caller's values on top (top-level keys; caller wins)."""
    merged = dict(defaults or {})
    merged.update(overrides or {})
    return merged


def _compile_schema(schema: dict[str, Any] | None, what: str) -> Any:
    if not schema:
        return None
    import jsonschema  # only when a schema is in play: keeps worker and CLI start-up light

    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise PolicyError(
            PolicyErrorCode.LOAD_ERROR, f"the policy's {what} schema is invalid: {exc.message}"
        ) from None
    return cls(schema)


def _check_schema(validator: Any, value: Any, code: str, what: str) -> None:
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise PolicyError(
            code, f"{what} does not match the policy's schema at {where}: {error.message}"
        )


class LocalPolicyEvaluator:
    """Runs one policy rule with the caller's settings and parameters.

    ``settings``/``parameters`` override the record's defaults key by key. Helpers in settings
    (functions, client objects) work in every mode but ``remote``: in the sandbox they are
    called back in this process.
    """

    def __init__(
        self,
        policy_rule_uri: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        mode: str = "local",
        executor_id: str | None = None,
        *,
        resolver: PolicyResolver | None = None,
        pool: SandboxPool | None = None,
        loader: PolicyLoader | None = None,
        timeout: float | None = None,
        executor_url: str | None = None,
    ) -> None:
        if mode not in MODES:
            raise PolicyError(
                PolicyErrorCode.BAD_INPUT, f"mode must be one of {', '.join(MODES)}, not {mode!r}"
            )
        self.policy_rule_uri = policy_rule_uri
        self.mode = mode
        self.executor_id = executor_id
        self.timeout = timeout
        self.resolver = resolver if resolver is not None else get_default_resolver()
        self.record = self.resolver.resolve(policy_rule_uri)
        self.settings = merge_overrides(self.record.settings, settings)
        self.parameters = merge_overrides(self.record.parameters, parameters)
        self._input_validator = _compile_schema(self.record.input_schema, "input")
        self._output_validator = _compile_schema(self.record.output_schema, "output")
        self._pool = pool
        self._loader = loader
        self._executor_url = executor_url
        self._loaded: LoadedPolicy | None = None
        self._call: SandboxCall | None = None
        self._lock = threading.Lock()

    # -- public API ------------------------------------------------------------------------------

    def execute_policy_rule(self, input_data: Any, *, timeout: float | None = None) -> Any:
        """``eval(parameters, input_data, context)``; raises ``PolicyError`` on any failure.

        ``timeout`` (sandbox and remote modes) overrides the evaluator's for this call.
        """
        if self._input_validator is not None:
            _check_schema(self._input_validator, input_data, PolicyErrorCode.BAD_INPUT, "input")
        limit = self.timeout if timeout is None else timeout
        if self.mode == "local":
            result = (self._loaded or self._load_local()).eval(input_data)
        elif self.mode == "sandbox":
            call = self._call or self._prepare_sandbox()
            result = self.pool.evaluate(call, input_data, timeout=limit)
        else:
            result = self._remote("execute", {"input_data": input_data}, limit)
        if self._output_validator is not None:
            _check_schema(self._output_validator, result, PolicyErrorCode.BAD_OUTPUT, "output")
        return result

    def execute_mgmt_command(
        self, action: str, data: Any = None, *, timeout: float | None = None
    ) -> Any:
        """``management(action, data)`` of the policy."""
        limit = self.timeout if timeout is None else timeout
        if self.mode == "local":
            return (self._loaded or self._load_local()).management(action, data)
        if self.mode == "sandbox":
            call = self._call or self._prepare_sandbox()
            return self.pool.management(call, action, data, timeout=limit)
        return self._remote("mgmt", {"action": action, "data": data}, limit)

    async def aexecute_policy_rule(self, input_data: Any, *, timeout: float | None = None) -> Any:
        """``execute_policy_rule`` for asyncio code (runs in a thread, never on the loop)."""
        return await asyncio.to_thread(self.execute_policy_rule, input_data, timeout=timeout)

    async def aexecute_mgmt_command(
        self, action: str, data: Any = None, *, timeout: float | None = None
    ) -> Any:
        return await asyncio.to_thread(self.execute_mgmt_command, action, data, timeout=timeout)

    # -- modes -----------------------------------------------------------------------------------

    @property
    def pool(self) -> SandboxPool:
        return self._pool if self._pool is not None else get_default_pool()

    def _load_local(self) -> LoadedPolicy:
        with self._lock:
            if self._loaded is None:
                loader = self._loader if self._loader is not None else get_default_loader()
                self._loaded = loader.load(
                    self.policy_rule_uri,
                    self.record.sha256,
                    self.record.archive,
                    self.settings,
                    self.parameters,
                    self.record.class_name,
                )
            return self._loaded

    def _prepare_sandbox(self) -> SandboxCall:
        with self._lock:
            if self._call is None:
                self._call = self.pool.prepare(
                    self.policy_rule_uri,
                    self.record.sha256,
                    self.record.archive,
                    self.settings,
                    self.parameters,
                    self.record.class_name,
                )
            return self._call

    def executor_url(self) -> str:
        """Where ``mode="remote"`` sends calls: explicit URL, URL-like id, or the resolver."""
        if self._executor_url:
            return self._executor_url.rstrip("/")
        if not self.executor_id:
            raise PolicyError(PolicyErrorCode.BAD_INPUT, 'mode="remote" needs an executor_id')
        if self.executor_id.startswith(("http://", "https://")):
            return self.executor_id.rstrip("/")
        if isinstance(self.resolver, ExecutorResolver):
            self._executor_url = self.resolver.resolve_executor(self.executor_id).rstrip("/")
            return self._executor_url
        raise PolicyError(
            PolicyErrorCode.NOT_FOUND,
            f"cannot find policy executor {self.executor_id!r}: the resolver has no executors",
        )

    def _remote(self, endpoint: str, payload: dict[str, Any], timeout: float | None) -> Any:
        for name, value in self.settings.items():
            if callable(value) or not isinstance(
                value, dict | list | str | int | float | bool | type(None)
            ):
                raise PolicyError(
                    PolicyErrorCode.BAD_INPUT,
                    f"settings[{name!r}] is a helper object: it cannot be sent to a remote "
                    "executor (use mode='sandbox' or 'local')",
                )
        base = self.executor_url()
        body: dict[str, Any] = {
            "policy_rule_uri": self.policy_rule_uri,
            "sha256": self.record.sha256,
            "class_name": self.record.class_name,
            "settings": self.settings,
            "parameters": self.parameters,
            **payload,
        }
        if timeout is not None:
            body["timeout"] = timeout
        headers = {}
        if os.environ.get(API_KEY_ENV):
            headers[API_KEY_HEADER] = os.environ[API_KEY_ENV]
        # The executor enforces the policy's limit; this only bounds a hung network.
        http_timeout = (timeout or 30.0) + 10.0
        url = f"{base}/{endpoint}"
        status, reply = _http_json(
            url, method="POST", body=body, headers=headers, timeout=http_timeout
        )
        if status == 409 and _error_code(reply) == "archive_required":
            # First call on this executor for this sha256: send the code once, then it is cached.
            body["archive_b64"] = base64.b64encode(self._archive_bytes()).decode("ascii")
            status, reply = _http_json(
                url, method="POST", body=body, headers=headers, timeout=http_timeout
            )
        if status == 200 and isinstance(reply, dict) and "result" in reply:
            return reply["result"]
        if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
            raise PolicyError.from_dict(reply)
        raise PolicyError(
            PolicyErrorCode.UNAVAILABLE, f"POST {url} answered {status}: {str(reply)[:200]}"
        )

    def _archive_bytes(self) -> bytes:
        archive = self.record.archive
        if isinstance(archive, bytes):
            data = archive
        elif archive is not None:
            data = Path(archive).read_bytes()
        else:
            cache = (
                self._pool.cache
                if self._pool is not None
                else self._loader.cache
                if self._loader is not None
                else get_default_cache()
            )
            data = cache.read_archive(self.record.sha256)
        if sha256_hex(data) != self.record.sha256:
            raise PolicyIntegrityError(f"archive of {self.policy_rule_uri} does not match sha256")
        return data


def _error_code(reply: Any) -> str | None:
    if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
        code = reply["error"].get("code")
        return code if isinstance(code, str) else None
    return None
