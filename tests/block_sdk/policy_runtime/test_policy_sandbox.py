"""The sandbox pool: every misbehaving policy gives a clear error in time, and the pool keeps
serving other calls meanwhile. Real worker processes throughout."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from block_sdk.policy_runtime.cache import PolicyCache
from block_sdk.policy_runtime.errors import PolicyError, PolicyErrorCode
from block_sdk.policy_runtime.protocol import expose
from block_sdk.policy_runtime.sandbox import (
    AsyncSandboxPool,
    SandboxCall,
    SandboxConfig,
    SandboxLimits,
    SandboxPool,
    build_sandbox_env,
)
from tests.block_sdk.policy_runtime.policy_helpers import (
    BEHAVIOUR_POLICY,
    TEST_TIMEOUT,
    BuiltPolicy,
    wait_for,
)

URI = "behaviour:1.0-test"


@pytest.fixture(scope="module")
def behaviour(tmp_path_factory: pytest.TempPathFactory) -> BuiltPolicy:
    from block_sdk.policy_runtime.archive import package_folder, sha256_hex

    folder = tmp_path_factory.mktemp("behaviour")
    (folder / "code").mkdir()
    (folder / "code" / "function.py").write_text(BEHAVIOUR_POLICY)
    data = package_folder(folder)
    return BuiltPolicy(data, sha256_hex(data), folder)


@pytest.fixture(scope="module")
def call(pool: SandboxPool, behaviour: BuiltPolicy) -> SandboxCall:
    return pool.prepare(URI, behaviour.sha256, behaviour.data, {"mode": "test"}, {"p": 1})


def _error(fn: Callable[[], Any]) -> tuple[PolicyError, float]:
    started = time.monotonic()
    with pytest.raises(PolicyError) as excinfo:
        fn()
    return excinfo.value, time.monotonic() - started


def _assert_pool_answers(pool: SandboxPool, call: SandboxCall) -> None:
    assert pool.evaluate(call, {"op": "echo", "value": "still here"})["echo"] == "still here"


def test_round_trip_keeps_the_instance_warm_in_the_worker(
    pool: SandboxPool, call: SandboxCall
) -> None:
    first = pool.evaluate(call, {"op": "echo", "value": 1})
    assert first["echo"] == 1
    assert first["parameters"] == {"p": 1}
    assert first["rule_id"] == URI
    assert first["pid"] != os.getpid()
    # Sequential calls reuse the most recently used worker and its loaded instance.
    second = pool.evaluate(call, {"op": "echo", "value": 2})
    assert second["pid"] == first["pid"]
    assert second["calls"] == first["calls"] + 1
    assert second["context_calls"] == first["context_calls"] + 1


def test_eval_that_raises_gives_exception_type_and_message(
    pool: SandboxPool, call: SandboxCall
) -> None:
    err, _ = _error(lambda: pool.evaluate(call, {"op": "raise"}))
    assert err.code == PolicyErrorCode.EXCEPTION
    assert err.message == "ValueError: boom from policy"
    assert str(err) == "exception: ValueError: boom from policy"
    _assert_pool_answers(pool, call)


def test_infinite_loop_times_out_while_the_pool_keeps_answering(
    pool: SandboxPool, call: SandboxCall
) -> None:
    outcome: dict[str, Any] = {}

    def stuck() -> None:
        started = time.monotonic()
        try:
            pool.evaluate(call, {"op": "loop"})
        except PolicyError as exc:
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started
        outcome["finished_at"] = time.monotonic()

    thread = threading.Thread(target=stuck)
    thread.start()
    time.sleep(0.3)  # the loop now occupies one worker
    good_started = time.monotonic()
    for i in range(5):
        assert pool.evaluate(call, {"op": "echo", "value": i})["echo"] == i
    good_done = time.monotonic()
    thread.join(timeout=TEST_TIMEOUT + 10)
    assert not thread.is_alive()
    assert good_done - good_started < 1.5
    assert good_done < outcome["finished_at"]  # answered while the bad call was still stuck
    err = outcome["error"]
    assert err.code == PolicyErrorCode.TIMEOUT
    assert f"did not return within {TEST_TIMEOUT:g}s" in err.message
    assert TEST_TIMEOUT - 0.1 <= outcome["elapsed"] < TEST_TIMEOUT + 1.5
    _assert_pool_answers(pool, call)


def test_sleeping_policy_times_out_and_its_worker_is_replaced(
    pool: SandboxPool, call: SandboxCall
) -> None:
    err, elapsed = _error(lambda: pool.evaluate(call, {"op": "sleep"}, timeout=1.0))
    assert err.code == PolicyErrorCode.TIMEOUT
    assert elapsed < 2.5
    assert wait_for(lambda: pool.snapshot()["live"] == 2, 10)
    _assert_pool_answers(pool, call)


def test_allocating_10_gb_is_a_memory_error(pool: SandboxPool, call: SandboxCall) -> None:
    err, elapsed = _error(lambda: pool.evaluate(call, {"op": "allocate"}))
    assert err.code == PolicyErrorCode.MEMORY
    assert "512 MiB" in err.message
    assert elapsed < TEST_TIMEOUT
    _assert_pool_answers(pool, call)


@pytest.mark.parametrize("op", ["exit", "sys_exit"])
def test_policy_that_ends_the_process_is_reported(
    pool: SandboxPool, call: SandboxCall, op: str
) -> None:
    err, elapsed = _error(lambda: pool.evaluate(call, {"op": op}))
    assert err.code == PolicyErrorCode.EXCEPTION
    if op == "exit":
        assert err.message.startswith("WorkerExit:")
        assert "exit status 7" in err.message
    else:
        assert err.message.startswith("SystemExit")
    assert elapsed < TEST_TIMEOUT
    _assert_pool_answers(pool, call)


@pytest.mark.parametrize("setsid", [False, True], ids=["same-session", "own-session"])
def test_forked_children_are_killed_after_the_call(
    pool: SandboxPool, call: SandboxCall, setsid: bool
) -> None:
    result = pool.evaluate(call, {"op": "fork", "setsid": setsid})
    children = result["children"]
    assert len(children) == 5

    def all_gone() -> bool:
        for pid in children:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return False
            except psutil.NoSuchProcess:
                continue
        return True

    assert wait_for(all_gone, 5)
    _assert_pool_answers(pool, call)


def test_worker_exit_is_reported_promptly_even_if_its_children_hold_the_socket(
    pool: SandboxPool, call: SandboxCall, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    err, elapsed = _error(
        lambda: pool.evaluate(call, {"op": "fork_then_exit", "pid_file": str(pid_file)})
    )
    assert err.code == PolicyErrorCode.EXCEPTION
    assert "exit status 9" in err.message
    assert elapsed < TEST_TIMEOUT / 2
    assert wait_for(lambda: _zombie(int(pid_file.read_text())), 5)
    _assert_pool_answers(pool, call)


def test_policy_sees_no_secrets_in_its_environment(
    monkeypatch: pytest.MonkeyPatch, shared_cache: PolicyCache, behaviour: BuiltPolicy
) -> None:
    secrets = {
        "SECRET_KEY": "django-secret-xyz",
        "DATABASE_URL": "postgres://user:pw@db/aios",
        "REDIS_URL": "redis://:pw@127.0.0.1:6379/0",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "GITHUB_TOKEN": "ghp_secret",
        "DB_PASSWORD": "hunter2",
        "AIOS_DATA_PLANE_API_KEY": "data-plane-key",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    config = SandboxConfig(
        workers=1,
        limits=SandboxLimits(timeout=TEST_TIMEOUT, memory_mb=512),
        extra_env={"POLICY_REGION": "eu", "SNEAKY_TOKEN": "nope"},
    )
    with SandboxPool(config, cache=shared_cache) as fresh:
        call = fresh.prepare(URI, behaviour.sha256, behaviour.data)
        seen = fresh.evaluate(call, {"op": "environ"})
    visible = seen["environ"]
    for name, value in secrets.items():
        assert name not in visible
        assert value not in seen["proc_environ"]
    assert "SNEAKY_TOKEN" not in visible
    assert visible["POLICY_REGION"] == "eu"
    assert visible["HOME"] == seen["cwd"]
    assert Path(seen["cwd"]).name.startswith("aios-policy-worker-")
    assert seen["stdin_tty"] is False
    assert set(build_sandbox_env("/x")) >= {"PATH", "HOME", "LANG", "PYTHONPATH"}


@pytest.mark.parametrize("op", ["set", "nan", "object"])
def test_result_that_is_not_json_is_bad_output(
    pool: SandboxPool, call: SandboxCall, op: str
) -> None:
    err, _ = _error(lambda: pool.evaluate(call, {"op": op}))
    assert err.code == PolicyErrorCode.BAD_OUTPUT
    assert "not JSON-serialisable" in err.message
    _assert_pool_answers(pool, call)


def test_input_that_is_not_json_is_bad_input(pool: SandboxPool, call: SandboxCall) -> None:
    err, _ = _error(lambda: pool.evaluate(call, {"op": "echo", "value": {1, 2}}))
    assert err.code == PolicyErrorCode.BAD_INPUT


def test_cpu_time_limit_ends_a_busy_policy(
    shared_cache: PolicyCache, behaviour: BuiltPolicy
) -> None:
    config = SandboxConfig(
        workers=1, limits=SandboxLimits(timeout=30, cpu_seconds=1, memory_mb=512)
    )
    with SandboxPool(config, cache=shared_cache) as cpu_pool:
        call = cpu_pool.prepare(URI, behaviour.sha256, behaviour.data)
        err, elapsed = _error(lambda: cpu_pool.evaluate(call, {"op": "loop"}))
        assert err.code == PolicyErrorCode.TIMEOUT
        assert "CPU time limit of 1s" in err.message
        assert elapsed < 20  # the wall clock (30 s) is not what ended it
        assert cpu_pool.evaluate(call, {"op": "echo", "value": "ok"})["echo"] == "ok"


def test_file_size_limit_applies_to_writes(
    shared_cache: PolicyCache, behaviour: BuiltPolicy
) -> None:
    config = SandboxConfig(
        workers=1, limits=SandboxLimits(timeout=TEST_TIMEOUT, memory_mb=512, max_file_mb=1)
    )
    with SandboxPool(config, cache=shared_cache) as small:
        call = small.prepare(URI, behaviour.sha256, behaviour.data)
        assert small.evaluate(call, {"op": "write_big_file", "mb": 4}) == {"error": 27}  # EFBIG


def test_background_thread_left_by_a_policy_recycles_the_worker(
    pool: SandboxPool, call: SandboxCall
) -> None:
    pid = pool.evaluate(call, {"op": "thread"})["pid"]
    assert wait_for(lambda: not psutil.pid_exists(pid) or _zombie(pid), 5)
    _assert_pool_answers(pool, call)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_tampered_archive_is_refused_by_the_worker(
    tmp_path: Path, policy_source: Callable[..., BuiltPolicy]
) -> None:
    built = policy_source(BEHAVIOUR_POLICY)
    cache = PolicyCache(tmp_path / "cache")
    with SandboxPool(SandboxConfig(workers=1), cache=cache) as fresh:
        call = fresh.prepare(URI, built.sha256, built.data)
        path = cache.archive_path(built.sha256)
        os.chmod(path, 0o644)
        path.write_bytes(built.data + b"tampered")
        err, _ = _error(lambda: fresh.evaluate(call, {"op": "echo"}))
    assert err.code == PolicyErrorCode.INTEGRITY
    assert "was altered" in err.message or "modified" in err.message


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("class AIOSv1PolicyRule(:\n    pass\n", "SyntaxError"),
        ("class Nope:\n    pass\n", "class 'AIOSv1PolicyRule' not found"),
    ],
    ids=["syntax-error", "missing-class"],
)
def test_load_errors_in_the_sandbox(
    pool: SandboxPool, call: SandboxCall, policy_source: Callable[..., BuiltPolicy],
    source: str, fragment: str,
) -> None:  # fmt: skip
    built = policy_source(source)
    bad = pool.prepare("bad:1-a", built.sha256, built.data)
    err, _ = _error(lambda: pool.evaluate(bad, {}))
    assert err.code == PolicyErrorCode.LOAD_ERROR
    assert fragment in err.message
    _assert_pool_answers(pool, call)


class ClusterClient:
    """A client object with methods, like the ones hooks inject into settings."""

    __aios_helper_methods__ = ("get_cluster", "count")

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_cluster(self, cluster_id: str) -> dict[str, Any]:
        self.calls.append(cluster_id)
        return {"id": cluster_id, "gpus": 4}

    def count(self) -> int:
        return len(self.calls)

    def delete_everything(self) -> None:
        raise AssertionError("must never be reachable from the sandbox")


def test_settings_helpers_are_called_back_in_the_parent(
    pool: SandboxPool, behaviour: BuiltPolicy
) -> None:
    parent_pid = os.getpid()
    seen_pids: list[int] = []

    def lookup(key: str) -> dict[str, Any]:
        seen_pids.append(os.getpid())
        if key == "missing":
            raise KeyError(key)
        return {"key": key, "answered_by": os.getpid()}

    client = ClusterClient()
    call = pool.prepare(URI, behaviour.sha256, behaviour.data, {"lookup": lookup, "client": client})
    assert pool.evaluate(call, {"op": "helper", "key": "gpu"}) == {
        "key": "gpu",
        "answered_by": parent_pid,
    }
    assert pool.evaluate(call, {"op": "client", "id": "c1"}) == {
        "cluster": {"id": "c1", "gpus": 4},
        "n": 1,
    }
    failed = pool.evaluate(call, {"op": "helper_fails"})
    assert failed["caught"] == "PolicyCallbackError"
    assert "KeyError" in failed["message"]
    assert seen_pids == [parent_pid, parent_pid]
    assert client.calls == ["c1"]


def test_only_declared_or_exposed_methods_of_objects_are_reachable(
    pool: SandboxPool, behaviour: BuiltPolicy
) -> None:
    class Plain:
        def get_cluster(self, cluster_id: str) -> dict[str, Any]:
            return {"id": cluster_id, "plain": True}

        def count(self) -> int:
            return 0

        def delete_everything(self) -> None:
            raise AssertionError("unreachable")

    with pytest.raises(PolicyError) as excinfo:
        pool.prepare(URI, behaviour.sha256, behaviour.data, {"client": Plain()})
    assert excinfo.value.code == PolicyErrorCode.BAD_INPUT
    assert "expose(" in excinfo.value.message

    call = pool.prepare(
        URI, behaviour.sha256, behaviour.data, {"client": expose(Plain(), "get_cluster", "count")}
    )
    assert pool.evaluate(call, {"op": "client", "id": "c9"}) == {
        "cluster": {"id": "c9", "plain": True},
        "n": 0,
    }
    assert pool.evaluate(call, {"op": "call_method", "name": "delete_everything"}) == {
        "missing": "AttributeError"
    }


def test_helpers_can_be_used_in_init(pool: SandboxPool, policy_source) -> None:
    built = policy_source(
        """
        class AIOSv1PolicyRule:
            def __init__(self, rule_id, settings, parameters):
                self.snapshot = settings["get_metrics"]()

            def eval(self, parameters, input_data, context):
                return self.snapshot
        """
    )
    call = pool.prepare("init:1-a", built.sha256, built.data, {"get_metrics": lambda: {"q": 3}})
    assert pool.evaluate(call, {}) == {"q": 3}


def test_management_runs_in_the_sandbox(pool: SandboxPool, call: SandboxCall) -> None:
    assert pool.management(call, "ping", {"x": 1}) == {"action": "ping", "data": {"x": 1}}
    err, _ = _error(lambda: pool.management(call, "fail", None))
    assert err.code == PolicyErrorCode.EXCEPTION
    assert err.message == "RuntimeError: mgmt failed"


def test_many_threads_share_the_pool_safely(pool: SandboxPool, call: SandboxCall) -> None:
    def work(n: int) -> list[int]:
        return [
            pool.evaluate(call, {"op": "echo", "value": n * 100 + i})["echo"] for i in range(25)
        ]

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(work, range(8)))
    assert results == [[n * 100 + i for i in range(25)] for n in range(8)]


def test_full_queue_answers_busy(shared_cache: PolicyCache, behaviour: BuiltPolicy) -> None:
    config = SandboxConfig(
        workers=1, max_queue=0, limits=SandboxLimits(timeout=TEST_TIMEOUT, memory_mb=512)
    )
    with SandboxPool(config, cache=shared_cache) as tiny:
        call = tiny.prepare(URI, behaviour.sha256, behaviour.data)
        tiny.evaluate(call, {"op": "echo"})  # worker started
        outcome: list[str] = []

        def stuck() -> None:
            try:
                tiny.evaluate(call, {"op": "sleep"})
            except PolicyError as exc:
                outcome.append(exc.code)

        thread = threading.Thread(target=stuck)
        thread.start()
        assert wait_for(lambda: tiny.snapshot()["idle"] == 0, 2)
        err, elapsed = _error(lambda: tiny.evaluate(call, {"op": "echo"}))
        assert err.code == PolicyErrorCode.BUSY
        assert elapsed < 0.5
        thread.join(timeout=TEST_TIMEOUT + 10)
    assert outcome == [PolicyErrorCode.TIMEOUT]


def test_asyncio_wrapper_runs_calls_concurrently(pool: SandboxPool, call: SandboxCall) -> None:
    async def main() -> list[Any]:
        apool = AsyncSandboxPool(pool)
        try:
            return await asyncio.gather(
                *(apool.evaluate(call, {"op": "echo", "value": i}) for i in range(10))
            )
        finally:
            apool._executor.shutdown(wait=True)

    results = asyncio.run(main())
    assert [r["echo"] for r in results] == list(range(10))


@pytest.fixture
def world_readable_cache() -> Iterator[PolicyCache]:
    root = Path(tempfile.mkdtemp(prefix="aios-policy-cache-"))
    os.chmod(root, 0o755)  # noqa: S103 - the unprivileged worker must read the cache
    yield PolicyCache(root)
    shutil.rmtree(root, ignore_errors=True)


def _world_executable(path: str) -> bool:
    """Whether an unprivileged user can reach and run ``path`` (every parent searchable)."""
    current = Path(os.path.realpath(path))
    return all(part.stat().st_mode & stat.S_IXOTH for part in [current, *current.parents])


def _python_for_other_users() -> str | None:
    """An interpreter an unprivileged user can run: ours, else the system's (3.11+)."""
    for candidate in (sys.executable, "/usr/local/bin/python3", "/usr/bin/python3"):
        if os.path.exists(candidate) and _world_executable(candidate):
            check = "import sys; sys.exit(sys.version_info < (3, 11))"
            if subprocess.run([candidate, "-c", check], check=False, timeout=30).returncode == 0:
                return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
@pytest.mark.skipif(_python_for_other_users() is None, reason="no Python runnable by nobody")
def test_workers_can_run_as_an_unprivileged_user(
    world_readable_cache: PolicyCache, behaviour: BuiltPolicy
) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    already = sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"].real == nobody)
    config = SandboxConfig(
        workers=1,
        # RLIMIT_NPROC is per user: the worker plus two children fit, five do not.
        limits=SandboxLimits(timeout=TEST_TIMEOUT, memory_mb=512, max_processes=already + 3),
        run_as_user="nobody",
        python_executable=_python_for_other_users(),
    )
    with SandboxPool(config, cache=world_readable_cache) as dropped:
        call = dropped.prepare(URI, behaviour.sha256, behaviour.data)
        assert dropped.evaluate(call, {"op": "parent_environ"}) == {"denied": "PermissionError"}
        pid = dropped.worker_pids()[0]
        assert psutil.Process(pid).uids().real == nobody
        err, _ = _error(lambda: dropped.evaluate(call, {"op": "fork"}))
        assert err.code == PolicyErrorCode.EXCEPTION
        assert err.message.startswith("BlockingIOError")
        assert dropped.evaluate(call, {"op": "echo", "value": 1})["echo"] == 1
    assert stat.S_IMODE(world_readable_cache.root.stat().st_mode) == 0o755


def test_settings_encoding_snapshots_data_and_refuses_the_unknown() -> None:
    from dataclasses import dataclass

    from block_sdk.policy_runtime.protocol import CALLBACK_MARK, encode_settings

    @dataclass
    class BlockData:
        block_id: str
        instances: tuple[str, ...]

    def get_metrics() -> dict[str, Any]:
        return {}

    encoded, callbacks = encode_settings(
        {"block_data": BlockData("b1", ("i1", "i2")), "get_metrics": get_metrics, "n": (1, 2)}
    )
    assert encoded == {
        "block_data": {"block_id": "b1", "instances": ["i1", "i2"]},
        "get_metrics": {CALLBACK_MARK: "get_metrics"},
        "n": [1, 2],
    }
    assert callbacks == {"get_metrics": get_metrics}
    for bad in ({1, 2}, BlockData, object()):
        with pytest.raises(PolicyError) as excinfo:
            encode_settings({"bad": bad})
        assert excinfo.value.code == PolicyErrorCode.BAD_INPUT
