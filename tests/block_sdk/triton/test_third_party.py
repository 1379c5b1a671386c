"""Third-party systems: the managed mode (an init workload starts Triton, publishes its finish
data, instances pick it up, SIGTERM tears Triton down leaving no process) and the externally
managed mode (the URL in blockInitData), plus the init SDK's failure paths."""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis

from block_sdk.testing import BlockTester
from block_sdk.third_party.init import InitRunner, SpecError, init_argv, init_spec
from block_sdk.third_party.sdk import (
    InitContext,
    InitFailed,
    InitTimeout,
    finish_key,
    read_status,
    status_key,
    wait_for_finish,
)
from block_sdk.triton.mapping import TritonConfigError
from block_sdk.triton.server import TritonServer, free_port
from examples.triton_model.block import TritonModelBlock
from tests.block_sdk.triton.helpers import X, child_env, direct, requires_triton, start_block
from tests.support.procs import ROOT, ManagedProcess, wait_until


def init_workload(tmp_path: Path, redis_url: str, spec: dict) -> ManagedProcess:
    spec = {"redis_url": redis_url, **spec}
    return ManagedProcess(
        init_argv(spec),
        env=child_env(redis_url),
        log_path=tmp_path / f"init-{spec['block_id']}.log",
    )


def triton_example_spec(block_id: str, redis_url: str) -> dict:
    """What the control plane builds from the example component for a managed block."""
    component = json.loads((ROOT / "examples/triton_model/component.json").read_text())
    values = component["body"]["spec"]["values"]
    spec = init_spec(
        block_id,
        values["containerRegistryInfo"],
        block_init_data=values["componentInitData"],
        redis_url=redis_url,
    )
    assert spec is not None
    return spec


def port_listening(url: str) -> bool:
    host, port = url.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.3):
            return True
    except OSError:
        return False


@requires_triton
def test_managed_triton_serves_the_block_and_sigterm_leaves_no_process(
    tmp_path: Path, redis_url: str, block_id: str, rds: redis.Redis
) -> None:
    workload = init_workload(tmp_path, redis_url, triton_example_spec(block_id, redis_url))
    block = None
    try:
        # The instance starts with no triton_url: it waits for the workload's finish data.
        block = start_block(
            tmp_path,
            redis_url,
            block_id,
            "examples.triton_model.block:TritonModelBlock",
            {"protocol": "grpc"},
            ready_timeout=90,
        )
        finish = wait_for_finish(block_id, 5, redis_url=redis_url)
        assert set(finish) >= {"inference_url", "http_url", "grpc_url", "metrics_url"}
        assert 0 < rds.pttl(finish_key(block_id)) <= 60_000  # published with a TTL

        reply = block.infer({"x": X})
        assert json.loads(reply.data) == direct(finish["grpc_url"], "grpc", X)

        triton_pids = [p.pid for p in workload.descendants()]
        assert triton_pids, "the init workload should have started tritonserver"
        assert any("tritonserver" in psutil.Process(p).name() for p in triton_pids)

        # Block removal: SIGTERM to the workload tears Triton down.
        workload.signal(signal.SIGTERM)
        assert workload.proc.wait(timeout=30) == 0, workload.log_text()
        for pid in triton_pids:
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
        for key in ("http_url", "grpc_url"):
            assert not port_listening(finish[key])
        assert rds.get(finish_key(block_id)) is None
        assert read_status(block_id, redis_url=redis_url)["stage"] == "stopped"
    finally:
        if block is not None:
            block.stop()
        workload.stop()


@requires_triton
def test_triton_does_not_outlive_a_sigkilled_init_workload(
    tmp_path: Path, redis_url: str, block_id: str
) -> None:
    workload = init_workload(tmp_path, redis_url, triton_example_spec(block_id, redis_url))
    try:
        finish = wait_for_finish(block_id, 90, redis_url=redis_url)
        triton_pids = [p.pid for p in workload.descendants()]
        assert triton_pids
        workload.signal(signal.SIGKILL)  # no teardown runs: the kernel must stop Triton
        wait_until(
            lambda: not [p for p in triton_pids if psutil.pid_exists(p)
                         and psutil.Process(p).status() != psutil.STATUS_ZOMBIE],
            20,
            "Triton to exit after its parent was killed",
        )  # fmt: skip
        assert not port_listening(finish["grpc_url"])
    finally:
        workload.stop()


@requires_triton
def test_externally_managed_triton_via_init_data_and_init_container(
    triton: TritonServer, block_id: str
) -> None:
    external = BlockTester(
        TritonModelBlock, block_id=block_id, init_data={"triton_url": triton.grpc_url}
    )
    assert external.block.endpoint_source == "init_data"
    assert external.run_one({"x": X}) == direct(triton.grpc_url, "grpc", X)

    # The control plane may merge the init workload's finish data into blockInitData.
    merged = BlockTester(
        TritonModelBlock,
        block_id=block_id,
        init_data={"protocol": "http", "initContainer": {"http_url": triton.http_url}},
    )
    assert merged.block.endpoint_source == "initContainer"
    assert merged.run_one({"x": X}) == direct(triton.http_url, "http", X)


@requires_triton
def test_instance_follows_triton_when_the_workload_republishes(
    triton: TritonServer, block_id: str, redis_url: str
) -> None:
    ctx = InitContext(block_id=block_id, redis_url=redis_url, ttl_s=30)
    dead = f"127.0.0.1:{free_port()}"
    ctx.finish({"grpc_url": dead, "http_url": dead})
    tester = BlockTester(TritonModelBlock, block_id=block_id, init_data={"timeout_s": 3})
    assert tester.block.connection.url == dead
    # The system came back elsewhere (a restarted init workload publishes again).
    ctx.finish({"grpc_url": triton.grpc_url, "http_url": triton.http_url})
    assert tester.run_one({"x": X}) == direct(triton.grpc_url, "grpc", X)
    assert tester.block.connection.url == triton.grpc_url
    ctx.close()


def test_wait_for_finish_returns_as_soon_as_finish_is_published(
    block_id: str, redis_url: str
) -> None:
    ctx = InitContext(block_id=block_id, redis_url=redis_url, ttl_s=10)
    timer = threading.Timer(0.5, ctx.finish, args=({"inference_url": "127.0.0.1:9"},))
    timer.start()
    t0 = time.monotonic()
    assert wait_for_finish(block_id, 10, redis_url=redis_url) == {"inference_url": "127.0.0.1:9"}
    assert time.monotonic() - t0 < 3
    timer.join()
    ctx.close()


def test_wait_for_finish_times_out_with_the_last_stage(block_id: str, redis_url: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(InitTimeout, match="no init workload has reported"):
        wait_for_finish(block_id, 0.5, redis_url=redis_url)
    assert time.monotonic() - t0 < 2
    InitContext(block_id=block_id, redis_url=redis_url).status("main", "installing")
    with pytest.raises(InitTimeout, match="last stage: main"):
        wait_for_finish(block_id, 0.3, redis_url=redis_url)


def test_finish_file_works_without_redis_finish_key(tmp_path: Path, block_id: str) -> None:
    path = tmp_path / "finish.json"
    ctx = InitContext(block_id=block_id, finish_file=str(path))  # no Redis at all
    ctx.finish({"inference_url": "10.0.0.5:8000"})
    assert wait_for_finish(block_id, 1, finish_file=str(path)) == {"inference_url": "10.0.0.5:8000"}
    ctx.clear()
    assert not path.exists()


def test_a_failing_stage_is_reported_and_fails_waiting_instances_fast(
    tmp_path: Path, redis_url: str, block_id: str
) -> None:
    workload = init_workload(
        tmp_path,
        redis_url,
        {"block_id": block_id, "entrypoint": "tests.block_sdk.triton.systems:FailingSystem",
         "config": {"marker_dir": str(tmp_path)}},
    )  # fmt: skip
    try:
        with pytest.raises(InitFailed, match="the license server said no"):
            wait_for_finish(block_id, 30, redis_url=redis_url)
        assert workload.proc.wait(timeout=15) == 1
        status = read_status(block_id, redis_url=redis_url)
        assert status["stage"] == "failed" and status["failed_stage"] == "main"
        assert (tmp_path / "teardown").exists()  # cleaned up after itself
        # An instance of the block fails to start with that reason, instead of hanging.
        with pytest.raises(TritonConfigError, match="license server said no"):
            BlockTester(TritonModelBlock, block_id=block_id, init_data={"wait_for_init_s": 30})
    finally:
        workload.stop()


def test_finish_keys_are_refreshed_while_alive_and_expire_after_a_crash(
    tmp_path: Path, redis_url: str, block_id: str, rds: redis.Redis
) -> None:
    workload = init_workload(
        tmp_path,
        redis_url,
        {"block_id": block_id, "entrypoint": "tests.block_sdk.triton.systems:StaticSystem",
         "config": {"marker_dir": str(tmp_path), "url": "10.1.2.3:8000"}, "ttl_s": 3},
    )  # fmt: skip
    try:
        assert wait_for_finish(block_id, 30, redis_url=redis_url) == {
            "inference_url": "10.1.2.3:8000"
        }
        assert 0 < rds.pttl(finish_key(block_id)) <= 3000
        time.sleep(4)  # longer than the TTL: only the refresh keeps it
        assert rds.get(finish_key(block_id)) is not None
        workload.signal(signal.SIGKILL)  # no chance to clean up
        wait_until(lambda: rds.get(finish_key(block_id)) is None, 6, "the finish key to expire")
        wait_until(lambda: rds.get(status_key(block_id)) is None, 6, "the status key to expire")
    finally:
        workload.stop()


def test_a_system_that_dies_ends_the_workload_with_failed(
    tmp_path: Path, redis_url: str, block_id: str
) -> None:
    workload = init_workload(
        tmp_path,
        redis_url,
        {"block_id": block_id, "entrypoint": "tests.block_sdk.triton.systems:DyingSystem",
         "config": {"marker_dir": str(tmp_path)}, "ttl_s": 3},
    )  # fmt: skip
    try:
        assert workload.proc.wait(timeout=20) == 1  # the node agent restarts it
        status = read_status(block_id, redis_url=redis_url)
        assert status["stage"] == "failed" and "stopped running" in status["message"]
        assert (tmp_path / "teardown").exists()
    finally:
        workload.stop()


def test_sigterm_during_start_up_tears_down_at_once(
    tmp_path: Path, redis_url: str, block_id: str
) -> None:
    workload = init_workload(
        tmp_path,
        redis_url,
        {"block_id": block_id, "entrypoint": "tests.block_sdk.triton.systems:SlowStartSystem",
         "config": {"marker_dir": str(tmp_path)}},
    )  # fmt: skip
    try:
        wait_until(lambda: (tmp_path / "main").exists(), 20, "the system to enter main()")
        t0 = time.monotonic()
        workload.signal(signal.SIGTERM)
        assert workload.proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 5
        assert (tmp_path / "teardown").exists()
        assert read_status(block_id, redis_url=redis_url)["stage"] == "stopped"
    finally:
        workload.stop()


def test_delete_mode_only_tears_down(tmp_path: Path, redis_url: str, block_id: str) -> None:
    InitContext(block_id=block_id, redis_url=redis_url).finish({"inference_url": "stale:1"})
    runner = InitRunner(
        {"block_id": block_id, "entrypoint": "tests.block_sdk.triton.systems:StaticSystem",
         "operating_mode": "delete", "redis_url": redis_url,
         "config": {"marker_dir": str(tmp_path)}}
    )  # fmt: skip
    try:
        assert runner.run() == 0
    finally:
        runner.close()
    assert (tmp_path / "teardown").exists() and not (tmp_path / "begin").exists()
    assert read_status(block_id, redis_url=redis_url)["stage"] == "stopped"
    with pytest.raises(InitTimeout):
        wait_for_finish(block_id, 0.2, redis_url=redis_url)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{not json", "spec is not JSON"),
        ('{"entrypoint": "a:B"}', "spec.block_id is required"),
        ('{"block_id": "b", "entrypoint": "a:B", "operating_mode": "upgrade"}', "operating_mode"),
    ],
)
def test_bad_specs_exit_2_with_a_message(tmp_path: Path, spec: str, message: str) -> None:
    proc = ManagedProcess(
        [sys.executable, "-m", "block_sdk.third_party.init", "--spec", spec],
        log_path=tmp_path / "bad.log",
    )
    try:
        assert proc.proc.wait(timeout=20) == 2
        assert message in proc.log_text()
    finally:
        proc.stop()


def test_init_spec_comes_from_the_components_init_container() -> None:
    spec = triton_example_spec("tri-x", "redis://127.0.0.1:6379/0")
    assert spec["entrypoint"] == "examples.triton_model.system:TritonModelSystem"
    assert spec["config"]["startup_timeout_s"] == 120
    assert spec["block_init_data"]["model_name"] == "linear"
    assert init_spec("b", {"componentMode": "aios"}) is None
    with pytest.raises(SpecError, match="entrypoint"):
        init_spec("b", {"initContainer": {"containerImage": "img:1"}})
