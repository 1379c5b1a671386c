"""LocalPolicyEvaluator in local and sandbox modes, overrides, schemas, and the resolvers."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from block_sdk.policy_runtime.cache import PolicyCache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode
from block_sdk.policy_runtime.evaluator import (
    DirectoryPolicyResolver,
    HttpPolicyResolver,
    InMemoryPolicyResolver,
    LocalPolicyEvaluator,
    PolicyRecord,
    get_default_resolver,
    set_default_resolver,
)
from block_sdk.policy_runtime.loader import PolicyLoader
from block_sdk.policy_runtime.sandbox import SandboxPool
from tests.block_sdk.policy_runtime.policy_helpers import BuiltPolicy

ALLOWLIST_POLICY = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.settings = settings
        self.local_allowlist = list(parameters.get("local_allowlist", []))

    def eval(self, parameters, input_data, context):
        ip = input_data["ip"]
        remote = self.settings["allowlist_api"]() if "allowlist_api" in self.settings else []
        allowed = ip in self.local_allowlist or ip in remote
        return {
            "allowed": allowed,
            "input_data": input_data,
            "reason": "listed" if allowed else "not listed",
            "settings_seen": {k: v for k, v in self.settings.items() if not callable(v)},
            "parameters_seen": parameters,
        }

    def management(self, action, data):
        if action == "update_local_allowlist":
            self.local_allowlist = list(data["ips"])
            return {"count": len(self.local_allowlist)}
        if action == "get_state":
            return {"local_allowlist": self.local_allowlist}
        raise ValueError(f"unknown action {action!r}")
"""

INPUT_SCHEMA = {
    "type": "object",
    "properties": {"ip": {"type": "string", "pattern": r"^\d+\.\d+\.\d+\.\d+$"}},
    "required": ["ip"],
}
OUTPUT_SCHEMA = {
    "type": "object",
    "properties": {"allowed": {"type": "boolean"}},
    "required": ["allowed"],
}
URI = "ip_allowlist:1.0-beta"


@pytest.fixture
def allowlist(policy_source: Callable[..., BuiltPolicy]) -> BuiltPolicy:
    return policy_source(ALLOWLIST_POLICY)


@pytest.fixture
def resolver(allowlist: BuiltPolicy) -> InMemoryPolicyResolver:
    memory = InMemoryPolicyResolver()
    memory.add_archive(
        URI,
        allowlist.data,
        settings={"region": "eu", "tier": "gold"},
        parameters={"local_allowlist": ["10.0.0.1"], "strict": True},
        input_schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
    )
    return memory


@pytest.fixture
def loader(tmp_path: Path) -> PolicyLoader:
    return PolicyLoader(PolicyCache(tmp_path / "cache"))


def _evaluator(resolver, mode: str, pool: SandboxPool, loader: PolicyLoader, **kw: Any):
    return LocalPolicyEvaluator(URI, mode=mode, resolver=resolver, pool=pool, loader=loader, **kw)


@pytest.mark.parametrize("mode", ["local", "sandbox"])
def test_caller_settings_and_parameters_override_the_record_defaults(
    resolver, pool: SandboxPool, loader: PolicyLoader, mode: str
) -> None:
    evaluator = _evaluator(
        resolver,
        mode,
        pool,
        loader,
        parameters={"local_allowlist": ["10.0.0.9"]},
        settings={"tier": "silver"},
    )
    result = evaluator.execute_policy_rule({"ip": "10.0.0.9"})
    assert result["allowed"] is True
    assert result["settings_seen"] == {"region": "eu", "tier": "silver"}  # caller wins, key by key
    assert result["parameters_seen"] == {"local_allowlist": ["10.0.0.9"], "strict": True}
    # The record itself is untouched: another evaluator gets the defaults.
    default = _evaluator(resolver, mode, pool, loader).execute_policy_rule({"ip": "10.0.0.9"})
    assert default["allowed"] is False
    assert default["settings_seen"] == {"region": "eu", "tier": "gold"}


@pytest.mark.parametrize("mode", ["local", "sandbox"])
def test_settings_helpers_behave_the_same_in_both_modes(
    resolver, pool: SandboxPool, loader: PolicyLoader, mode: str
) -> None:
    calls: list[str] = []

    def allowlist_api() -> list[str]:
        calls.append("called")
        return ["192.168.1.1"]

    evaluator = _evaluator(resolver, mode, pool, loader, settings={"allowlist_api": allowlist_api})
    assert evaluator.execute_policy_rule({"ip": "192.168.1.1"})["allowed"] is True
    assert evaluator.execute_policy_rule({"ip": "192.168.1.2"})["allowed"] is False
    assert calls == ["called", "called"]


@pytest.mark.parametrize("mode", ["local", "sandbox"])
def test_input_and_output_schemas_are_enforced(
    resolver, pool: SandboxPool, loader: PolicyLoader, mode: str
) -> None:
    evaluator = _evaluator(resolver, mode, pool, loader)
    with pytest.raises(PolicyError) as excinfo:
        evaluator.execute_policy_rule({"ip": "not-an-ip"})
    assert excinfo.value.code == PolicyErrorCode.BAD_INPUT
    assert "ip" in excinfo.value.message
    with pytest.raises(PolicyError) as excinfo:
        evaluator.execute_policy_rule({})
    assert excinfo.value.code == PolicyErrorCode.BAD_INPUT

    broken_output = InMemoryPolicyResolver()
    record = resolver.resolve(URI)
    broken_output.add(
        PolicyRecord(URI, record.sha256, record.archive, output_schema={"type": "array"})
    )
    with pytest.raises(PolicyError) as excinfo:
        _evaluator(broken_output, mode, pool, loader).execute_policy_rule({"ip": "1.2.3.4"})
    assert excinfo.value.code == PolicyErrorCode.BAD_OUTPUT


def test_management_commands_keep_state_in_local_mode(
    resolver, pool: SandboxPool, loader: PolicyLoader
) -> None:
    evaluator = _evaluator(resolver, "local", pool, loader)
    assert evaluator.execute_mgmt_command("update_local_allowlist", {"ips": ["8.8.8.8"]}) == {
        "count": 1
    }
    assert evaluator.execute_policy_rule({"ip": "8.8.8.8"})["allowed"] is True
    assert evaluator.execute_mgmt_command("get_state", {}) == {"local_allowlist": ["8.8.8.8"]}
    with pytest.raises(PolicyError) as excinfo:
        evaluator.execute_mgmt_command("nope", {})
    assert excinfo.value.message == "ValueError: unknown action 'nope'"


def test_management_in_sandbox_mode(resolver, pool: SandboxPool, loader: PolicyLoader) -> None:
    evaluator = _evaluator(resolver, "sandbox", pool, loader)
    assert evaluator.execute_mgmt_command("get_state", {}) == {"local_allowlist": ["10.0.0.1"]}


def test_async_variants(resolver, pool: SandboxPool, loader: PolicyLoader) -> None:
    evaluator = _evaluator(resolver, "sandbox", pool, loader)

    async def main() -> list[Any]:
        return await asyncio.gather(
            evaluator.aexecute_policy_rule({"ip": "10.0.0.1"}),
            evaluator.aexecute_mgmt_command("get_state", {}),
        )

    verdict, state = asyncio.run(main())
    assert verdict["allowed"] is True
    assert state == {"local_allowlist": ["10.0.0.1"]}


def test_unknown_uri_bad_mode_and_missing_executor_are_clear_errors(
    resolver, pool: SandboxPool, loader: PolicyLoader
) -> None:
    with pytest.raises(PolicyError) as excinfo:
        LocalPolicyEvaluator("nope:1-a", resolver=resolver)
    assert excinfo.value.code == PolicyErrorCode.NOT_FOUND
    with pytest.raises(PolicyError, match="mode must be one of"):
        LocalPolicyEvaluator(URI, mode="cloud", resolver=resolver)
    remote = LocalPolicyEvaluator(URI, mode="remote", resolver=resolver)
    with pytest.raises(PolicyError, match="needs an executor_id"):
        remote.execute_policy_rule({"ip": "1.1.1.1"})
    helper = LocalPolicyEvaluator(
        URI, mode="remote", executor_id="http://127.0.0.1:9", resolver=resolver,
        settings={"allowlist_api": lambda: []},
    )  # fmt: skip
    with pytest.raises(PolicyError, match="cannot be sent to a remote executor"):
        helper.execute_policy_rule({"ip": "1.1.1.1"})


def test_default_resolver_is_pluggable(resolver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOS_API_URL", raising=False)
    monkeypatch.delenv("AIOS_POLICY_DIR", raising=False)
    set_default_resolver(None)
    with pytest.raises(PolicyError, match="no policy resolver"):
        get_default_resolver()
    set_default_resolver(resolver)
    try:
        assert LocalPolicyEvaluator(URI).record.uri == URI
    finally:
        set_default_resolver(None)


def test_directory_resolver_reads_archives_folders_and_metadata(
    tmp_path: Path, allowlist: BuiltPolicy, pool: SandboxPool, loader: PolicyLoader
) -> None:
    root = tmp_path / "policies"
    root.mkdir()
    (root / f"{URI}.tar.gz").write_bytes(allowlist.data)
    (root / f"{URI}.json").write_text(
        json.dumps(
            {"policy_parameters": {"local_allowlist": ["1.1.1.1"]}, "sha256": allowlist.sha256}
        )
    )
    # A policy kept as a plain folder is packaged reproducibly on the fly.
    folder = root / "folder_policy:2.0-a"
    (folder / "code").mkdir(parents=True)
    (folder / "code" / "function.py").write_text(
        (allowlist.folder / "code" / "function.py").read_text()
    )
    directory = DirectoryPolicyResolver(root)

    evaluator = LocalPolicyEvaluator(URI, mode="sandbox", resolver=directory, pool=pool)
    assert evaluator.execute_policy_rule({"ip": "1.1.1.1"})["allowed"] is True
    first = directory.resolve("folder_policy:2.0-a")
    assert first.sha256 == directory.resolve("folder_policy:2.0-a").sha256
    with pytest.raises(PolicyError) as excinfo:
        directory.resolve("absent:1-a")
    assert excinfo.value.code == PolicyErrorCode.NOT_FOUND
    with pytest.raises(PolicyError):
        directory.resolve("../etc/passwd")

    (root / f"{URI}.json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(PolicyError) as excinfo:
        directory.resolve(URI)
    assert excinfo.value.code == PolicyErrorCode.INTEGRITY


class _Registry:
    """A tiny real HTTP server standing in for the AIOS API: policies, files, executors."""

    def __init__(self) -> None:
        self.policies: dict[str, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}
        self.executors: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                return None

            def do_GET(self) -> None:
                registry.requests.append((self.path, self.headers.get("Authorization")))
                path = urllib.parse.unquote(self.path)
                body: Any = None
                if path.startswith("/api/v1/policies/"):
                    body = registry.policies.get(path.removeprefix("/api/v1/policies/").rstrip("/"))
                elif path.startswith("/api/v1/policy-executors/"):
                    url = registry.executors.get(path.split("/")[4])
                    body = {"executor_host_uri": url} if url else None
                elif path.startswith("/files/") and path[7:] in registry.files:
                    data = registry.files[path[7:]]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                raw = json.dumps(body if body is not None else {"detail": "not found"}).encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry() -> Iterator[_Registry]:
    server = _Registry()
    yield server
    server.close()


def test_http_resolver_fetches_the_record_and_the_archive_once(
    tmp_path: Path, registry: _Registry, allowlist: BuiltPolicy, pool: SandboxPool
) -> None:
    registry.files["a.tar.gz"] = allowlist.data
    registry.policies[URI] = {
        "policy_rule_uri": URI,
        "sha256": allowlist.sha256,
        "archive_url": "/files/a.tar.gz",
        "policy_settings": {"region": "us"},
        "policy_parameters": {"local_allowlist": ["5.5.5.5"]},
        "policy_input_schema": INPUT_SCHEMA,
    }
    registry.executors["exec-1"] = "http://127.0.0.1:1"
    cache = PolicyCache(tmp_path / "cache")
    resolver = HttpPolicyResolver(registry.url, token="tok-123", cache=cache, timeout=5)

    record = resolver.resolve(URI)
    assert record.sha256 == allowlist.sha256
    assert record.settings == {"region": "us"}
    assert record.input_schema == INPUT_SCHEMA
    evaluator = LocalPolicyEvaluator(
        URI, mode="local", resolver=resolver, loader=PolicyLoader(cache)
    )
    assert evaluator.execute_policy_rule({"ip": "5.5.5.5"})["allowed"] is True
    assert ("/files/a.tar.gz", "Token tok-123") in registry.requests
    assert resolver.resolve_executor("exec-1") == "http://127.0.0.1:1"

    # Once the cache holds the sha256, a fresh resolver does not download again.
    downloads = sum(1 for path, _ in registry.requests if path.startswith("/files/"))
    HttpPolicyResolver(registry.url, cache=cache).resolve(URI)
    assert sum(1 for path, _ in registry.requests if path.startswith("/files/")) == downloads


def test_http_resolver_errors(tmp_path: Path, registry: _Registry, allowlist: BuiltPolicy) -> None:
    registry.files["evil.tar.gz"] = allowlist.data + b"tampered"
    registry.policies[URI] = {"sha256": allowlist.sha256, "archive_url": "/files/evil.tar.gz"}
    resolver = HttpPolicyResolver(registry.url, cache=PolicyCache(tmp_path / "c"), timeout=5)
    with pytest.raises(PolicyError) as excinfo:
        resolver.resolve(URI)
    assert excinfo.value.code == PolicyErrorCode.INTEGRITY
    with pytest.raises(PolicyError) as excinfo:
        resolver.resolve("missing:1-a")
    assert excinfo.value.code == PolicyErrorCode.NOT_FOUND
    with pytest.raises(PolicyError) as excinfo:
        resolver.resolve_executor("nope")
    assert excinfo.value.code == PolicyErrorCode.NOT_FOUND
    down = HttpPolicyResolver("http://127.0.0.1:9", cache=PolicyCache(tmp_path / "d"), timeout=2)
    with pytest.raises(PolicyError) as excinfo:
        down.resolve(URI)
    assert excinfo.value.code == PolicyErrorCode.UNAVAILABLE
