"""The Triton-backed block through the real data plane: executor process -> Redis queue ->
instance process -> Triton, answering `BlockInferenceService.infer` with the same numbers as
calling Triton directly."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

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
        instances=2,
    )
    try:
        expected = direct(url_of(triton, protocol), protocol, X)
        for seq in range(6):  # round-robin: both instances answer
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
