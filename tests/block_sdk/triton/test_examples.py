"""The example components: numpy MLP and slow blocks through BlockTester, and every example's
component spec passes the parser's createComponent validation with a loadable entry point."""

from __future__ import annotations

import io
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest

from apps.parser.validation import collect_errors, normalize_values
from block_sdk.instance.pipeline import load_class
from block_sdk.testing import BlockTester, BlockTestError
from examples.numpy_model.block import NumpyMLPBlock
from examples.slow.block import SlowBlock
from tests.support.procs import ROOT

EXAMPLES = ["numpy_model", "slow", "triton_model"]


# -- numpy MLP -----------------------------------------------------------------------------
def mlp_by_hand(seed: int, layers: list[int], x: np.ndarray) -> np.ndarray:
    """The documented model, written out independently of the block's code."""
    rng = np.random.default_rng(seed)
    h = x.astype(np.float32)
    for i, (a, b) in enumerate(itertools.pairwise(layers)):
        w = (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32)
        bias = (rng.standard_normal(b) * 0.1).astype(np.float32)
        h = h @ w + bias
        if i < len(layers) - 2:
            h = np.maximum(h, 0)
    e = np.exp(h - h.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_numpy_mlp_is_deterministic_and_matches_the_documented_model() -> None:
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    a = BlockTester(NumpyMLPBlock, init_data={"seed": 7}).run_one({"x": x.tolist()})
    b = BlockTester(NumpyMLPBlock, init_data={"seed": 7}).run_one({"x": x.tolist()})
    assert a == b  # two instances of one block agree
    expected = mlp_by_hand(7, [4, 16, 3], x)
    np.testing.assert_allclose(a["probabilities"], expected, rtol=1e-5)
    assert a["label"] == expected.argmax(axis=-1).tolist()
    np.testing.assert_allclose(np.sum(a["probabilities"], axis=-1), 1.0, rtol=1e-6)
    other = BlockTester(NumpyMLPBlock, init_data={"seed": 8}).run_one({"x": x.tolist()})
    assert other["probabilities"] != a["probabilities"]


def test_numpy_mlp_takes_one_row_a_batch_or_an_npy_file_and_names_classes() -> None:
    tester = BlockTester(NumpyMLPBlock, init_data={"labels": ["a", "b", "c"]})
    row = [0.1, 0.2, 0.3, 0.4]
    one = tester.run_one({"x": row})
    assert len(one["probabilities"]) == 1 and one["class"][0] in {"a", "b", "c"}
    buf = io.BytesIO()
    np.save(buf, np.array([row, row]))
    batch = tester.run_one({}, files=[({"name": "x"}, buf.getvalue())])
    assert batch["probabilities"] == one["probabilities"] * 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"y": [1]}, 'input must be {"x": [numbers]}'),
        ({"x": [1, 2, 3]}, "x must have 4 numbers per row, got shape [1, 3]"),
        ({"x": ["a", "b", "c", "d"]}, "x must be a list of numbers"),
    ],
)
def test_numpy_mlp_rejects_bad_input_with_a_reason(data: dict, message: str) -> None:
    with pytest.raises(BlockTestError) as err:
        BlockTester(NumpyMLPBlock).run(data)
    assert err.value.code == "ABORTED"  # (False, reason) from on_preprocess
    assert message in err.value.message


def test_numpy_mlp_temperature_updates_live() -> None:
    tester = BlockTester(NumpyMLPBlock)
    x = {"x": [1.0, -2.0, 3.0, 0.5]}
    sharp = max(tester.run_one(x)["probabilities"][0])
    assert tester.update({"temperature": 10.0})[0] is True
    flat = max(tester.run_one(x)["probabilities"][0])
    assert flat < sharp
    assert tester.update({"temperature": 0})[0] is False
    assert tester.management("describe")["parameters"] == 4 * 16 + 16 + 16 * 3 + 3


# -- slow ----------------------------------------------------------------------------------
def test_slow_block_sleeps_its_delay_and_honours_a_capped_request_delay() -> None:
    tester = BlockTester(SlowBlock, parameters={"delay_s": 0.2, "max_delay_s": 0.3})
    t0 = time.perf_counter()
    out = tester.run_one({"job": 1})
    assert 0.19 <= time.perf_counter() - t0 < 1.0
    assert out["input"] == {"job": 1} and out["instance_id"] == "instance-001"
    t0 = time.perf_counter()
    assert tester.run_one({"delay_s": 5})["slept_s"] == pytest.approx(0.3, abs=0.1)
    assert time.perf_counter() - t0 < 1.0
    assert tester.run_one({"delay_s": 0})["processed"] == 3


def test_slow_block_delay_and_mode_change_live() -> None:
    tester = BlockTester(SlowBlock, parameters={"delay_s": 1.0})
    assert tester.update({"delay_s": 0.2})[0] is True
    t0 = time.thread_time()
    assert 0.2 <= tester.run_one({})["slept_s"] < 2.0
    sleeping_cpu = time.thread_time() - t0
    assert tester.update({"busy": True})[0] is True
    t0 = time.thread_time()
    assert 0.2 <= tester.run_one({})["slept_s"] < 2.0
    busy_cpu = time.thread_time() - t0
    # Busy mode burns CPU instead of sleeping (generous: the machine may be crowded).
    assert busy_cpu > max(0.02, 5 * sleeping_cpu)
    assert tester.management("get_delay") == {"delay_s": 0.2, "busy": True}
    assert tester.update({"delay_s": -1})[0] is False
    with pytest.raises(BlockTestError, match="delay_s must be a number >= 0"):
        tester.run({"delay_s": "soon"})


# -- component specs -----------------------------------------------------------------------
def spec_files() -> list[Path]:
    files = [ROOT / "examples" / name / "component.json" for name in EXAMPLES]
    return [*files, ROOT / "examples" / "triton_model" / "component.external.json"]


@pytest.mark.parametrize("path", spec_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_component_spec_is_valid_and_its_entrypoint_loads(path: Path) -> None:
    envelope = json.loads(path.read_text())
    assert envelope["header"]["templateUri"] == "Parser/V1"
    values = envelope["body"]["spec"]["values"]
    assert collect_errors("createComponent", normalize_values("createComponent", values)) == []
    info = values["containerRegistryInfo"]
    entrypoint = info["containerImageMetadata"]["entrypoint"]
    assert entrypoint.startswith(f"examples.{path.parent.name}.block:")
    cls = load_class(entrypoint)
    assert callable(getattr(cls, "on_data", None))
    init = info.get("initContainer")
    if init:  # a managed third-party system: its entry point loads too
        assert info["componentMode"] == "third_party"
        system = load_class(init["containerImageMetadata"]["entrypoint"])
        assert all(callable(getattr(system, m, None)) for m in ("main", "finish", "teardown"))


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "examples").glob("*/block*.json")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_block_spec_is_valid_and_names_its_examples_component(path: Path) -> None:
    values = json.loads(path.read_text())["body"]["spec"]["values"]
    assert collect_errors("createBlock", normalize_values("createBlock", values)) == []
    component_file = "component.external.json" if "external" in path.name else "component.json"
    component = json.loads((path.parent / component_file).read_text())["body"]["spec"]["values"]
    cid = component["componentId"]
    uri = f"{component['componentType']}.{cid['name']}:{cid['version']}-{cid['releaseTag']}"
    assert values["blockComponentURI"] == uri
