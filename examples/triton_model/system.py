"""The example's managed third-party system: a Triton server for the `linear` repository.

Run by the block's init workload:

    python -m block_sdk.third_party.init --spec '{"block_id": "tri-1",
        "entrypoint": "examples.triton_model.system:TritonModelSystem"}'

It builds the model repository into its work folder, starts Triton (free ports, CPU),
publishes `{"inference_url", "http_url", "grpc_url", "metrics_url", ...}` and stops Triton
when the workload gets SIGTERM (block removal).
"""

from __future__ import annotations

from pathlib import Path

from block_sdk.triton.system import TritonSystem
from examples.triton_model.model_repository import build


class TritonModelSystem(TritonSystem):
    def build_repository(self, dest: Path) -> Path:
        return build(dest)
