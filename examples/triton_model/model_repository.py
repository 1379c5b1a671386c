"""Builds the example's Triton model repository: one python-backend model, `linear`.

    linear:  x FP32 [-1, 4]  ->  y FP32 [-1, 3] = x @ W + b,  label INT64 [-1] = argmax(y)

`python -m examples.triton_model.model_repository DEST` writes it to DEST (nothing is
downloaded; the weights are fixed numbers below). `reference(x)` computes the same outputs
in-process, for tests and for checking a deployment by hand.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

MODEL_NAME = "linear"
IN_FEATURES = 4
OUT_FEATURES = 3

# Fixed, human-readable weights: easy to check a result with pencil and paper.
WEIGHTS = np.array(
    [
        [0.5, -1.0, 0.25],
        [1.5, 0.5, -0.75],
        [-0.5, 2.0, 1.0],
        [0.25, -0.25, 0.5],
    ],
    dtype=np.float32,
)
BIAS = np.array([0.1, -0.2, 0.3], dtype=np.float32)

CONFIG_PBTXT = f"""name: "{MODEL_NAME}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "x" data_type: TYPE_FP32 dims: [ -1, {IN_FEATURES} ] }}
]
output [
  {{ name: "y" data_type: TYPE_FP32 dims: [ -1, {OUT_FEATURES} ] }},
  {{ name: "label" data_type: TYPE_INT64 dims: [ -1 ] }}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""


def build(dest: str | Path) -> Path:
    """Write the repository under `dest` (created; an old `linear` model there is replaced)."""
    root = Path(dest)
    model_dir = root / MODEL_NAME
    if model_dir.exists():
        shutil.rmtree(model_dir)
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(CONFIG_PBTXT)
    shutil.copyfile(Path(__file__).with_name("linear_model.py"), version_dir / "model.py")
    np.savez(version_dir / "weights.npz", W=WEIGHTS, b=BIAS)
    return root


def reference(x: np.ndarray | list) -> tuple[np.ndarray, np.ndarray]:
    """(y, label) exactly as the Triton model computes them."""
    arr = np.asarray(x, dtype=np.float32).reshape(-1, IN_FEATURES)
    y = (arr @ WEIGHTS + BIAS).astype(np.float32)
    return y, np.argmax(y, axis=-1).astype(np.int64)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m examples.triton_model.model_repository DEST\n")
        sys.exit(2)
    sys.stdout.write(f"{build(sys.argv[1])}\n")
