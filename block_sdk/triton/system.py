"""A managed Triton Inference Server as a block's third-party system.

Run by the init workload (`python -m block_sdk.third_party.init`) with this class (or a
subclass) as the entry point. Configuration (`InitContext.config`):

    {"model_repository": "/models",          a prepared repository, or
     "repository_builder": "pkg.mod:build",  a function build(dest: Path) -> Path that writes one
     "host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "metrics_port": 0,   0: free port
     "startup_timeout_s": 120}

`finish()` publishes `{"inference_url", "http_url", "grpc_url", "metrics_url",
"model_repository", "pid"}`; TritonBlock instances of the block read it at start.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from block_sdk.third_party.sdk import InitContext
from block_sdk.triton.server import TritonServer


def _load_callable(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"repository_builder {ref!r} must look like 'module.path:function'")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise TypeError(f"repository_builder {ref!r} is not callable")
    return fn


class TritonSystem:
    """begin: prepare the model repository; main: start Triton; finish: its endpoints."""

    def __init__(self, context: InitContext) -> None:
        self.context = context
        self.config: dict[str, Any] = {**self.default_config(), **(context.config or {})}
        self.server: TritonServer | None = None
        self.repository: Path | None = None

    def default_config(self) -> dict[str, Any]:
        return {}

    def build_repository(self, dest: Path) -> Path:
        """Subclasses may write a repository here; the default uses `repository_builder`."""
        builder = self.config.get("repository_builder")
        if not builder:
            raise ValueError("config needs model_repository or repository_builder")
        return Path(_load_callable(str(builder))(dest))

    def begin(self) -> tuple[bool, Any]:
        repo = self.config.get("model_repository")
        if repo:
            self.repository = Path(repo)
            if not self.repository.is_dir():
                return False, f"model repository {repo} does not exist"
        else:
            assert self.context.workdir is not None
            self.repository = self.build_repository(self.context.workdir / "model_repository")
        return True, f"model repository {self.repository}"

    def main(self) -> tuple[bool, Any]:
        cfg = self.config
        self.server = TritonServer(
            self.repository,
            host=str(cfg.get("host", "127.0.0.1")),
            http_port=int(cfg.get("http_port", 0)),
            grpc_port=int(cfg.get("grpc_port", 0)),
            metrics_port=int(cfg.get("metrics_port", 0)),
            startup_timeout_s=float(cfg.get("startup_timeout_s", 120)),
        )
        self.server.start()
        return True, f"tritonserver pid {self.server.pid}"

    def finish(self) -> tuple[bool, dict[str, Any]]:
        assert self.server is not None
        data: dict[str, Any] = dict(self.server.endpoints())
        data["model_repository"] = str(self.repository)
        data["pid"] = self.server.pid
        return True, data

    def is_alive(self) -> bool:
        return self.server is not None and self.server.is_alive()

    def teardown(self) -> None:
        if self.server is not None:
            self.server.stop()
