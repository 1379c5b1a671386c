"""Small third-party "systems" for the init-workload tests (no Triton needed).

Each writes what happened to files under `config["marker_dir"]`, so a test can see that
teardown ran even when the workload process is gone.
"""

from __future__ import annotations

import time
from pathlib import Path

from block_sdk.third_party.sdk import InitContext


class _Recording:
    def __init__(self, context: InitContext) -> None:
        self.context = context
        self.marker_dir = Path(context.config["marker_dir"])

    def mark(self, name: str) -> None:
        (self.marker_dir / name).write_text(str(time.time()))

    def teardown(self) -> None:
        self.mark("teardown")


class StaticSystem(_Recording):
    """Publishes a fixed URL; stays alive until SIGTERM."""

    def begin(self):
        self.mark("begin")
        return True, "begun"

    def main(self):
        self.mark("main")
        return True, "running"

    def finish(self):
        return True, {"inference_url": self.context.config.get("url", "127.0.0.1:1")}

    def is_alive(self):
        return True


class FailingSystem(_Recording):
    """main() refuses, AIOS style."""

    def main(self):
        return False, "the license server said no"


class DyingSystem(StaticSystem):
    """Publishes, then reports its system dead on the first supervision check."""

    def is_alive(self):
        return False


class SlowStartSystem(_Recording):
    """main() takes far longer than any test; SIGTERM must cut it short."""

    def main(self):
        self.mark("main")
        time.sleep(300)
        return True, "too late"

    def finish(self):
        return {"inference_url": "never"}
