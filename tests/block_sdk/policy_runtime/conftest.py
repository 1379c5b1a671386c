"""Fixtures for the policy runtime tests: policy builders, a shared sandbox pool.

Everything runs for real: archives are built byte by byte, sandboxes are real worker
processes, the executor and function server are real subprocesses talking HTTP. No database.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
if str(REPO_ROOT) not in sys.path:  # runs with -p no:django too, which does not add it
    sys.path.insert(0, str(REPO_ROOT))

from block_sdk.policy_runtime.archive import package_folder, sha256_hex  # noqa: E402
from block_sdk.policy_runtime.cache import PolicyCache  # noqa: E402
from block_sdk.policy_runtime.sandbox import SandboxConfig, SandboxLimits, SandboxPool  # noqa: E402
from tests.block_sdk.policy_runtime.policy_helpers import TEST_TIMEOUT, BuiltPolicy  # noqa: E402


@pytest.fixture
def policy_source(tmp_path: Path) -> Callable[..., BuiltPolicy]:
    """Write a ``code/`` folder from sources and package it: ``policy_source(src, **files)``."""
    counter = iter(range(10_000))

    def build(
        source: str, files: dict[str, str] | None = None, requirements: str | None = None
    ) -> BuiltPolicy:
        folder = tmp_path / f"policy{next(counter)}"
        code = folder / "code"
        code.mkdir(parents=True)
        (code / "function.py").write_text(textwrap.dedent(source), encoding="utf-8")
        for name, text in (files or {}).items():
            target = code / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text), encoding="utf-8")
        if requirements is not None:
            (code / "requirements.txt").write_text(requirements, encoding="utf-8")
        data = package_folder(folder)
        return BuiltPolicy(data, sha256_hex(data), folder)

    return build


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> PolicyCache:
    return PolicyCache(tmp_path_factory.mktemp("policy-cache"))


@pytest.fixture(scope="module")
def pool(shared_cache: PolicyCache) -> Iterator[SandboxPool]:
    """A two-worker sandbox pool with short limits, shared by a test module."""
    config = SandboxConfig(
        workers=2,
        max_queue=16,
        limits=SandboxLimits(timeout=TEST_TIMEOUT, cpu_seconds=10, memory_mb=512),
    )
    sandbox = SandboxPool(config, cache=shared_cache)
    yield sandbox
    sandbox.close()
