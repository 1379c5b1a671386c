"""The Triton-backed block through the real data plane: executor process -> Redis queue ->
instance process -> Triton, answering `BlockInferenceService.infer` with the same numbers as
calling Triton directly."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis

from block_sdk.triton.server import TritonServer
from tests.block_sdk.triton.helpers import X, direct, npy, requires_triton, start_block, url_of

pytestmark = requires_triton


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_block_over_grpc_returns_the_numbers_of_direct_triton(
    triton: TritonServer, tmp_path: Path, redis_url: str, block_id: str, protocol: str
) -> None:
    block = start_block(
        tmp_path,
        redis_url,
        block_id,
        "examples.triton_model.block:TritonModelBlock",
        {"triton_url": url_of(triton, protocol), "protocol": protocol},
        instances=2 if protocol == "grpc" else 1,
    )
    try:
        expected = direct(url_of(triton, protocol), protocol, X)
        for seq in range(6):  # spread over the instances by the load balancer
            reply = block.infer({"x": X}, session_id=f"s{seq}", seq_no=seq)
            assert json.loads(reply.data) == expected
            assert reply.seq_no == seq

    finally:
        block.stop()


def test_file_input_and_bad_requests_through_the_executor(
    triton: TritonServer, tmp_path: Path, redis_url: str, block_id: str
) -> None:
    block = start_block(
        tmp_path,
        redis_url,
        block_id,
        "examples.triton_model.block:TritonModelBlock",
        {
            "triton_url": triton.grpc_url,
            "protocol": "grpc",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "from": "files.x"}],
        },
    )
    try:
        good = [({"name": "x"}, npy(np.asarray(X, dtype=np.float32)))]
        assert json.loads(block.infer({}, files=good).data) == direct(triton.grpc_url, "grpc", X)

        bad = [({"name": "x"}, npy(np.zeros((2, 3), dtype=np.float32)))]
        with pytest.raises(grpc.RpcError) as err:
            block.infer({}, files=bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        doc = json.loads(err.value.details())
        assert "shape [-1, 4] needs a multiple of 4" in doc["error"]["message"]

        with pytest.raises(grpc.RpcError) as err:
            block.infer({"x": X})  # no file attached
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "no file has metadata name 'x'" in err.value.details()

        # The instance is still serving after the bad requests.
        assert json.loads(block.infer({}, files=good).data) == direct(triton.grpc_url, "grpc", X)
    finally:
        block.stop()


def _instance_health(rds: redis.Redis, block_id: str, instance_id: str = "i-1") -> tuple[int, dict]:
    info = json.loads(rds.get(f"aios:block:{{{block_id}}}:hb:{instance_id}"))
    url = f"http://127.0.0.1:{info['http_port']}/health"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_instance_health_endpoint_follows_model_readiness(
    triton: TritonServer, tmp_path: Path, redis_url: str, block_id: str, rds: redis.Redis
) -> None:
    good = start_block(
        tmp_path, redis_url, block_id, "examples.triton_model.block:TritonModelBlock",
        {"triton_url": triton.http_url, "protocol": "http"}, executor=False,
    )  # fmt: skip
    try:
        status, body = _instance_health(rds, block_id)
        assert status == 200 and body["status"] == "healthy" and body["model_ready"] is True
    finally:
        good.stop()

    bad_id = f"{block_id}-nomodel"
    bad = start_block(
        tmp_path, redis_url, bad_id, "examples.triton_model.block:TritonModelBlock",
        {"triton_url": triton.http_url, "protocol": "http", "model_name": "not-loaded"},
        executor=False,
    )  # fmt: skip
    try:
        status, body = _instance_health(rds, bad_id)
        assert status == 503  # what the health checker counts as a failed check
        assert "model_ready" in body["error"]["message"]
    finally:
        bad.stop()
        keys = list(rds.scan_iter(match=f"aios:block:{{{bad_id}}}:*"))
        if keys:
            rds.delete(*keys)
