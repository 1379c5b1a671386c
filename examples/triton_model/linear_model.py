"""Triton python-backend model `linear`: y = x @ W + b and label = argmax(y).

Copied into the model repository as `linear/1/model.py` by `model_repository.build`. The
weights are read from `weights.npz` beside it, written by the same builder, so the numbers
have one source (`examples.triton_model.model_repository.WEIGHTS` / `BIAS`).
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        here = os.path.join(args["model_repository"], args["model_version"])
        weights = np.load(os.path.join(here, "weights.npz"))
        self.W = weights["W"].astype(np.float32)
        self.b = weights["b"].astype(np.float32)
        self.max_batch_size = config.get("max_batch_size", 0)

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy().astype(np.float32)
            y = (x @ self.W + self.b).astype(np.float32)
            label = np.argmax(y, axis=-1).astype(np.int64)
            responses.append(
                pb_utils.InferenceResponse(
                    [pb_utils.Tensor("y", y), pb_utils.Tensor("label", label)]
                )
            )
        return responses
