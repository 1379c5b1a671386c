"""The Triton-backed example block: `TritonBlock` preset for the `linear` model.

Input  `{"x": [[f, f, f, f], ...]}` (or one row `[f, f, f, f]`, or a `.npy` file named `x`
with `"from": "files.x"` in the init data). Output `{"y": [[...3 floats], ...], "label":
[int, ...]}`. Where Triton is comes from the block's init data: `triton_url` (externally
managed) or the block's init workload (managed: `examples.triton_model.system`). Any key of
the mapping (`protocol`, `inputs`, `outputs`, `timeout_s` ...) may be overridden in
`blockInitData`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from block_sdk.instance.runtime import Block
from block_sdk.triton.instance import TritonBlock


class TritonModelBlock(TritonBlock):
    default_init_data: ClassVar[dict[str, Any]] = {
        "protocol": "grpc",
        "model_name": "linear",
        "model_version": "",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4], "from": "data.x"}],
        "outputs": [{"name": "y", "to": "y"}, {"name": "label", "to": "label"}],
        "timeout_s": 10,
        "wait_for_init_s": 120,
    }


if __name__ == "__main__":
    Block(TritonModelBlock).run()
