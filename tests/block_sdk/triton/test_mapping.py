"""Packet JSON/files -> Triton tensors and back, without a server: every datatype rule and
every error message a block user can hit."""

from __future__ import annotations

import io

import numpy as np
import pytest

from block_sdk.packet import DataPlaneError, PacketFile
from block_sdk.triton.mapping import (
    InputSpec,
    TritonBlockConfig,
    TritonConfigError,
    json_value,
    packet_tensors,
    put_path,
    split_url,
    to_tensor,
)


def tensor(datatype: str, value=None, shape=None, source="data.v", file=None, fmt="npy"):
    return to_tensor(InputSpec("v", source, datatype, shape, fmt), datatype, value=value, file=file)


def test_values_are_converted_to_the_declared_datatype() -> None:
    arr = tensor("INT64", [[1, 2], [3, 4]])
    assert arr.dtype == np.int64 and arr.shape == (2, 2)
    assert tensor("FP16", [0.5]).dtype == np.float16
    assert tensor("BOOL", [True, False, 1]).tolist() == [True, False, True]
    assert tensor("INT32", [2.0, 3.0]).tolist() == [2, 3]  # whole floats are fine


def test_integers_refuse_fractions_and_bool_refuses_floats() -> None:
    with pytest.raises(DataPlaneError, match="fractional values; INT32 needs integers"):
        tensor("INT32", [1.5])
    with pytest.raises(DataPlaneError, match="must be booleans"):
        tensor("BOOL", [0.5])


def test_bytes_inputs_take_strings_only() -> None:
    arr = tensor("BYTES", [["a", "bc"]])
    assert arr.dtype == object and arr.shape == (1, 2)
    with pytest.raises(DataPlaneError, match="every element must be a string"):
        tensor("BYTES", ["a", 3])


def test_shapes_are_checked_and_flat_values_reshaped() -> None:
    assert tensor("FP32", list(range(8)), shape=(-1, 4)).shape == (2, 4)
    assert tensor("FP32", list(range(6)), shape=(2, 3)).shape == (2, 3)
    with pytest.raises(DataPlaneError, match=r"shape \[2, 3\] needs 6"):
        tensor("FP32", list(range(5)), shape=(2, 3))


def test_raw_files_become_bytes_or_typed_buffers() -> None:
    f = PacketFile.of({"name": "img"}, b"\x01\x02\x03\x04")
    raw = tensor("BYTES", source="files.img", file=f, fmt="raw")
    assert raw.tolist() == [b"\x01\x02\x03\x04"]
    assert tensor("UINT8", source="files[0]", file=f, fmt="raw").tolist() == [1, 2, 3, 4]
    with pytest.raises(DataPlaneError, match="not a whole number of FP32 values"):
        tensor("FP32", source="files[0]", file=PacketFile.of({}, b"\x00" * 6), fmt="raw")


def test_paths_reach_into_objects_and_lists() -> None:
    specs = [InputSpec("a", "data.rows.1.v", "FP32"), InputSpec("b", "data", "FP32")]
    out = packet_tensors(specs[:1], {}, {"rows": [{"v": 1}, {"v": [2, 3]}]}, [])
    assert out[0][0] == "a" and out[0][2].tolist() == [2.0, 3.0]
    assert packet_tensors(specs[1:], {}, [1, 2], [])[0][2].tolist() == [1.0, 2.0]
    with pytest.raises(DataPlaneError, match=r"no '5' in data.rows"):
        packet_tensors([InputSpec("a", "data.rows.5", "FP32")], {}, {"rows": [1]}, [])


def test_missing_datatype_without_metadata_is_a_clear_error() -> None:
    with pytest.raises(DataPlaneError, match="has no datatype in the block config"):
        packet_tensors([InputSpec("x", "data.x")], {}, {"x": [1]}, [])


def test_files_by_position_out_of_range() -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros(2))
    with pytest.raises(DataPlaneError, match=r"read from files\[1\] but the request has 1 file"):
        packet_tensors(
            [InputSpec("x", "files[1]", "FP32")], {}, {}, [PacketFile.of({}, buf.getvalue())]
        )


def test_outputs_become_json_with_text_for_bytes() -> None:
    assert json_value(np.array([b"caf\xc3\xa9", b"x"], dtype=object)) == ["café", "x"]
    assert json_value(np.array([[1, 2]], dtype=np.int64)) == [[1, 2]]
    target: dict = {"a": 1}
    put_path(target, "b.c.d", 5)
    put_path(target, "a.e", 6)  # a scalar in the way is replaced by an object
    assert target == {"a": {"e": 6}, "b": {"c": {"d": 5}}}


def test_config_accepts_aliases_and_url_forms() -> None:
    cfg = TritonBlockConfig.from_init_data(
        {
            "triton_url": "https://triton.example:8000/",
            "model_name": "m",
            "model_version": 3,
            "inputs": [{"name": "x", "datatype": "TYPE_FP32"}],
            "outputs": ["y"],
        }
    )
    assert cfg.triton_url == "triton.example:8000" and cfg.ssl is True
    assert cfg.model_version == "3"
    assert cfg.inputs[0].datatype == "FP32" and cfg.inputs[0].source == "data.x"
    assert cfg.outputs[0].to == "y"
    assert split_url("grpc://h:1") == ("h:1", False)


def test_config_rejects_duplicates_and_two_free_dimensions() -> None:
    with pytest.raises(TritonConfigError) as err:
        TritonBlockConfig.from_init_data(
            {
                "model_name": "m",
                "inputs": [
                    {"name": "x", "shape": [-1, -1]},
                    {"name": "x", "from": "files[a]"},
                ],
                "outputs": [{"name": "y", "to": "a..b", "format": "png"}],
            }
        )
    problems = err.value.problems
    assert any("at most one -1" in p for p in problems)
    assert any("listed twice" in p for p in problems)
    assert any("inputs[1].from 'files[a]'" in p for p in problems)
    assert any("outputs[0].to" in p for p in problems)
    assert any("outputs[0].format" in p for p in problems)
