"""TritonBlock in-process (BlockTester) against a real Triton server: the numbers equal a direct
tritonclient call over HTTP and gRPC, inputs come from JSON or files, bad requests get clear
INVALID_ARGUMENT errors, health reflects server and model readiness."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator

import numpy as np
import psutil
import pytest

from block_sdk.testing import BlockTester, BlockTestError
from block_sdk.triton.instance import TritonBlock, TritonUnhealthy
from block_sdk.triton.mapping import TritonConfigError
from block_sdk.triton.server import TritonServer, free_port
from examples.triton_model.block import TritonModelBlock
from examples.triton_model.model_repository import reference
from tests.block_sdk.triton.helpers import X, direct, npy, requires_triton, url_of

pytestmark = requires_triton

PROTOCOLS = ["http", "grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_block_returns_exactly_what_triton_returns(triton: TritonServer, protocol: str) -> None:
    tester = BlockTester(
        TritonModelBlock, init_data={"triton_url": url_of(triton, protocol), "protocol": protocol}
    )
    out = tester.run_one({"x": X})
    assert out == direct(url_of(triton, protocol), protocol, X)
    y, label = reference(X)
    np.testing.assert_allclose(out["y"], y, rtol=1e-6)
    assert out["label"] == label.tolist()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_row_is_reshaped_to_the_configured_shape(triton: TritonServer, protocol: str) -> None:
    tester = BlockTester(
        TritonModelBlock, init_data={"triton_url": url_of(triton, protocol), "protocol": protocol}
    )
    assert tester.run_one({"x": X[0]}) == direct(url_of(triton, protocol), protocol, [X[0]])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_npy_file_input_by_name_and_by_position(triton: TritonServer, protocol: str) -> None:
    blob = npy(np.asarray(X, dtype=np.float64))  # converted to FP32 by the block
    expected = direct(url_of(triton, protocol), protocol, X)
    for source, files in (
        ("files.x", [({"name": "other"}, b"ignored"), ({"name": "x"}, blob)]),
        ("files[0]", [({"name": "whatever"}, blob)]),
    ):
        tester = BlockTester(
            TritonBlock,
            init_data={
                "triton_url": url_of(triton, protocol),
                "protocol": protocol,
                "model_name": "linear",
                "inputs": [{"name": "x", "datatype": "FP32", "from": source}],
                "outputs": [{"name": "y"}, {"name": "label"}],
            },
        )
        assert tester.run_one({}, files=files) == expected


def test_datatypes_and_outputs_default_to_the_models_metadata(triton: TritonServer) -> None:
    tester = BlockTester(
        TritonBlock,
        init_data={"triton_url": triton.grpc_url, "protocol": "grpc", "model_name": "linear",
                   "inputs": [{"name": "x", "from": "data.features"}]},
    )  # fmt: skip
    out = tester.run_one({"features": X})
    assert out == direct(triton.grpc_url, "grpc", X)


def test_outputs_go_to_nested_keys_and_npy_files(triton: TritonServer) -> None:
    tester = BlockTester(
        TritonBlock,
        init_data={
            "triton_url": triton.http_url,
            "protocol": "http",
            "model_name": "linear",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "from": "data.req.x"}],
            "outputs": [{"name": "label", "to": "result.class"}, {"name": "y", "format": "npy"}],
        },
    )
    packet = tester.packet({"req": {"x": X}})
    reply = tester.run_packet(packet)
    assert json.loads(reply.data) == {
        "result": {"class": direct(triton.http_url, "http", X)["label"]}
    }
    assert len(reply.files) == 1
    meta = json.loads(reply.files[0].metadata)
    assert meta["name"] == "y" and meta["shape"] == [3, 3]
    y = np.load(io.BytesIO(reply.files[0].file_data))
    np.testing.assert_array_equal(
        y, np.asarray(direct(triton.http_url, "http", X)["y"], dtype=np.float32)
    )


@pytest.mark.parametrize(
    ("data", "files", "message"),
    [
        ({"y": X}, None, "input 'x' is read from data.x, which the request does not have"),
        (
            {"x": [1, 2, 3]},
            None,
            "has 3 value(s) in shape [3]; shape [-1, 4] needs a multiple of 4",
        ),
        ({"x": [[1, 2, 3, 4], [1, 2]]}, None, "is not a regular (rectangular) array"),
        ({"x": "one two"}, None, "must be a number or a (nested) list of numbers for FP32"),
        ({"x": [["a", "b", "c", "d"]]}, None, "holds non-numeric values; FP32 needs numbers"),
        ({"x": None}, None, "got nothing"),
        ("not json {", None, "packet data is not JSON"),
    ],
)
def test_bad_requests_fail_with_invalid_argument_naming_the_problem(
    triton: TritonServer, data: object, files: object, message: str
) -> None:
    tester = BlockTester(TritonModelBlock, init_data={"triton_url": triton.grpc_url})
    with pytest.raises(BlockTestError) as err:
        tester.run(data, files)
    assert err.value.code == "INVALID_ARGUMENT"
    assert message in err.value.message


def test_bad_file_inputs_fail_with_invalid_argument(triton: TritonServer) -> None:
    init = {
        "triton_url": triton.grpc_url,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "from": "files.x"}],
    }
    tester = BlockTester(TritonModelBlock, init_data=init)
    with pytest.raises(BlockTestError, match="no file has metadata name 'x'") as err:
        tester.run({}, [({"name": "y"}, npy(np.zeros((1, 4))))])
    assert err.value.code == "INVALID_ARGUMENT"
    with pytest.raises(BlockTestError, match=r"the file is not a \.npy array"):
        tester.run({}, [({"name": "x"}, b"definitely not numpy")])
    with pytest.raises(BlockTestError, match=r"needs a multiple of 4"):
        tester.run({}, [({"name": "x"}, npy(np.zeros((2, 3))))])


def test_triton_rejection_keeps_its_meaning(triton: TritonServer) -> None:
    # No shape in the config: the block sends what it got and Triton refuses the shape.
    tester = BlockTester(
        TritonBlock,
        init_data={"triton_url": triton.grpc_url, "protocol": "grpc", "model_name": "linear",
                   "inputs": [{"name": "x", "datatype": "FP32"}]},
    )  # fmt: skip
    with pytest.raises(BlockTestError) as err:
        tester.run({"x": [1, 2, 3]})
    assert err.value.code == "INVALID_ARGUMENT"
    assert "linear" in err.value.message and "shape" in err.value.message


def test_config_errors_are_all_listed_at_once() -> None:
    with pytest.raises(TritonConfigError) as err:
        BlockTester(
            TritonBlock,
            init_data={
                "triton_url": "127.0.0.1:1",
                "protocol": "smoke-signals",
                "inputs": [{"name": "x", "datatype": "FLOAT128", "from": "body.x"}, {}],
                "timeout_s": -1,
            },
        )
    text = str(err.value)
    for part in (
        "model_name is required",
        "protocol must be one of",
        "inputs[0].datatype 'FLOAT128'",
        "inputs[0].from 'body.x'",
        "inputs[1] must be an object with a name",
        "timeout_s must be a positive number",
    ):
        assert part in text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_reports_ready_server_and_model(triton: TritonServer, protocol: str) -> None:
    tester = BlockTester(
        TritonModelBlock, init_data={"triton_url": url_of(triton, protocol), "protocol": protocol}
    )
    health = tester.health()
    assert health["status"] == "healthy"
    assert health["server_ready"] and health["model_ready"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_fails_for_a_model_triton_does_not_serve(
    triton: TritonServer, protocol: str
) -> None:
    tester = BlockTester(
        TritonModelBlock,
        init_data={"triton_url": url_of(triton, protocol), "protocol": protocol,
                   "model_name": "no-such-model"},
    )  # fmt: skip
    with pytest.raises(TritonUnhealthy) as err:
        tester.health()
    assert err.value.code == "UNAVAILABLE"
    assert "model_ready" in err.value.message
    assert tester.management("status")["status"] == "unhealthy"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unreachable_triton_is_unavailable_not_a_hang(protocol: str) -> None:
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    tester = BlockTester(
        TritonModelBlock, init_data={"triton_url": url, "protocol": protocol, "timeout_s": 3}
    )
    with pytest.raises(BlockTestError) as err:
        tester.run({"x": X})
    assert err.value.code == "UNAVAILABLE"
    assert url in err.value.message
    with pytest.raises(TritonUnhealthy):
        tester.health()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a Triton that hangs."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(srv.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    srv.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_hanging_triton_costs_at_most_timeout_s(silent_server: str, protocol: str) -> None:
    tester = BlockTester(
        TritonModelBlock,
        init_data={"triton_url": silent_server, "protocol": protocol, "timeout_s": 1},
    )
    t0 = time.monotonic()
    with pytest.raises(BlockTestError) as err:
        tester.run({"x": X})
    assert err.value.code == "DEADLINE_EXCEEDED"
    t1 = time.monotonic()
    with pytest.raises(TritonUnhealthy):
        tester.health()
    assert t1 - t0 < 3 and time.monotonic() - t1 < 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_connection_is_reused_across_requests(triton: TritonServer, protocol: str) -> None:
    url = url_of(triton, protocol)
    port = int(url.rsplit(":", 1)[1])
    tester = BlockTester(TritonModelBlock, init_data={"triton_url": url, "protocol": protocol})
    for _ in range(30):
        tester.run_one({"x": X})
    me = psutil.Process()
    conns = [
        c for c in me.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]  # fmt: skip
    assert len(conns) == 1


def test_management_reports_metadata_and_statistics(triton: TritonServer) -> None:
    tester = BlockTester(TritonModelBlock, init_data={"triton_url": triton.grpc_url})
    meta = tester.management("model_metadata")
    assert [i["name"] for i in meta["inputs"]] == ["x"]
    assert {o["name"] for o in meta["outputs"]} == {"y", "label"}
    before = tester.management("statistics")["model_stats"][0]["inference_count"]
    tester.run_one({"x": X})
    after = tester.management("statistics")["model_stats"][0]["inference_count"]
    assert int(after) == int(before) + 1
    assert tester.management("config")["model_name"] == "linear"
    assert "actions" in tester.management("what-is-this")


def test_timeout_can_be_updated_live(triton: TritonServer) -> None:
    tester = BlockTester(TritonModelBlock, init_data={"triton_url": triton.grpc_url})
    assert tester.update({"timeout_s": 2.5}) == (True, {"timeout_s": 2.5})
    assert tester.block.connection.timeout_s == 2.5
    assert tester.update({"timeout_s": 0})[0] is False
    assert tester.run_one({"x": X}) == direct(triton.grpc_url, "grpc", X)
