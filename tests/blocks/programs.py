"""Small block classes and a third-party "system" used by the blocks tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

from aios_instance import OnDataResult


class InitDataBlock:
    """Answers with what the block learnt at start: its init data (with the init workload's
    finish data under ``initContainer``) and the GPUs it sees."""

    def __init__(self, context):
        self.context = context

    def on_data(self, entry):
        return True, OnDataResult(
            output={
                "initContainer": self.context.block_init_data.get("initContainer"),
                "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "allocation": self.context.allocation_info,
            }
        )


class BrokenBlock:
    """Cannot even be built: its instances exit at start."""

    def __init__(self, context):
        raise RuntimeError("model weights not found")

    def on_data(self, entry):  # pragma: no cover - never reached
        return True, OnDataResult(output={})


class FakeSystem:
    """A managed third-party system: publishes an address, notes its teardown in a file."""

    def __init__(self, context):
        self.context = context
        self.marker = Path(context.config["marker"])

    def begin(self):
        return True, "installing"

    def main(self):
        return True, "started"

    def finish(self):
        return True, {"inference_url": "127.0.0.1:65000", "started_by": self.context.block_id}

    def is_alive(self):
        return True

    def teardown(self):
        self.marker.write_text(json.dumps({"torn_down": self.context.block_id}))
