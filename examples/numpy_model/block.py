"""A tiny numpy MLP as a block: `x -> relu(x @ W1 + b1) -> softmax(h @ W2 + b2)`.

Weights come from `numpy.random.default_rng(seed)`, so every instance of a block (and your
own check in a notebook) computes the same numbers. Init data: `seed` (default 0),
`layers` (default `[4, 16, 3]`: input width, hidden widths..., number of classes), `labels`
(optional class names). Input: `{"x": [f, ...]}` (one row) or `{"x": [[...], ...]}` (a
batch), or a `.npy` file (`float32`/`float64`, last dimension = input width). Output:
`{"probabilities": [[...]], "label": [int, ...], "logits": [[...]]}` (plus `"class"` names
when `labels` are given). Parameter `temperature` (default 1.0) is updated live.
"""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import numpy as np

from aios_instance import Block, OnDataResult, PreProcessResult

DEFAULT_LAYERS = [4, 16, 3]
MAX_ROWS = 4096  # bounds the work one request can ask for


def make_weights(seed: int, layers: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The MLP's (W, b) pairs for `seed`; He-style scaling keeps activations moderate."""
    rng = np.random.default_rng(seed)
    params = []
    for fan_in, fan_out in itertools.pairwise(layers):
        w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
        b = rng.standard_normal(fan_out) * 0.1
        params.append((w.astype(np.float32), b.astype(np.float32)))
    return params


def forward(
    params: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) for a batch `x` of shape (n, input width)."""
    h = x.astype(np.float32)
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = np.maximum(h, 0.0)
    z = h / np.float32(temperature)
    z = z - z.max(axis=-1, keepdims=True)  # numerically stable softmax
    e = np.exp(z)
    return h, e / e.sum(axis=-1, keepdims=True)


class NumpyMLPBlock:
    def __init__(self, context):
        self.context = context
        init = context.block_init_data or {}
        self.seed = int(init.get("seed", 0))
        self.layers = [int(n) for n in init.get("layers", DEFAULT_LAYERS)]
        if len(self.layers) < 2 or any(n < 1 for n in self.layers):
            raise ValueError("layers must list at least an input width and a class count, all >= 1")
        self.labels = init.get("labels")
        if self.labels is not None and len(self.labels) != self.layers[-1]:
            raise ValueError(f"labels must have {self.layers[-1]} names")
        self.params = make_weights(self.seed, self.layers)
        self.temperature = float(context.block_init_parameters.get("temperature", 1.0))
        self.processed = 0

    def _input(self, packet) -> np.ndarray:
        if packet.files:
            try:
                arr = np.load(io.BytesIO(packet.files[0].file_data), allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise ValueError(f"the attached file is not a .npy array: {exc}") from None
        else:
            data = packet.data
            if isinstance(data, str):
                data = json.loads(data) if data else {}
            if not isinstance(data, dict) or "x" not in data:
                raise ValueError('input must be {"x": [numbers]} or a .npy file')
            try:
                arr = np.asarray(data["x"], dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"x must be a list of numbers (or of rows): {exc}") from None
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.layers[0]:
            raise ValueError(
                f"x must have {self.layers[0]} numbers per row, got shape {list(arr.shape)}"
            )
        if arr.shape[0] > MAX_ROWS:
            raise ValueError(f"at most {MAX_ROWS} rows per request")
        if not np.all(np.isfinite(arr)):
            raise ValueError("x must be finite numbers")
        return arr

    def on_preprocess(self, packet):
        try:
            x = self._input(packet)
        except ValueError as exc:
            return False, str(exc)
        return True, [PreProcessResult(packet=packet, extra_data={"x": x})]

    def on_data(self, entry):
        logits, probs = forward(self.params, entry.extra_data["x"], self.temperature)
        label = probs.argmax(axis=-1)
        output: dict[str, Any] = {
            "probabilities": probs.tolist(),
            "label": label.tolist(),
            "logits": logits.tolist(),
        }
        if self.labels is not None:
            output["class"] = [self.labels[i] for i in label]
        self.processed += 1
        return True, OnDataResult(output=output, files=[])

    def on_update(self, updated_parameters):
        if "temperature" in updated_parameters:
            t = float(updated_parameters["temperature"])
            if t <= 0:
                return False, "temperature must be > 0"
            self.temperature = t
        return True, updated_parameters

    def health(self):
        return {"status": "healthy", "processed": self.processed, "layers": self.layers}

    def management(self, action, data):
        if action == "describe":
            return {
                "seed": self.seed,
                "layers": self.layers,
                "parameters": int(sum(w.size + b.size for w, b in self.params)),
                "temperature": self.temperature,
            }
        return {"message": f"unknown action: {action}", "actions": ["describe"]}

    def get_muxer(self):
        return None


if __name__ == "__main__":
    Block(NumpyMLPBlock).run()
