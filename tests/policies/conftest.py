"""Fixtures of the policies app tests: a fast sandbox pool and a private policy cache."""

from __future__ import annotations

import os

import pytest

from block_sdk.policy_runtime.sandbox import SandboxConfig, SandboxLimits

SANDBOX_TIMEOUT = 2.0


@pytest.fixture(scope="session", autouse=True)
def policy_runtime(tmp_path_factory):
    """One sandbox pool for the session, with short limits so bad policies fail fast."""
    from apps.policies import runtime

    os.environ["AIOS_POLICY_CACHE_DIR"] = str(tmp_path_factory.mktemp("policy-cache"))
    os.environ["AIOS_POLICY_FETCH_ALLOW_PRIVATE"] = "1"
    os.environ["AIOS_POLICY_SANDBOX_TIMEOUT"] = str(SANDBOX_TIMEOUT)
    os.environ["AIOS_POLICY_SANDBOX_CPU_SECONDS"] = str(SANDBOX_TIMEOUT)
    os.environ["AIOS_POLICY_SANDBOX_MEMORY_MB"] = "512"
    os.environ["AIOS_POLICY_FUNCTION_TIMEOUT"] = str(SANDBOX_TIMEOUT)
    config = SandboxConfig(
        workers=2,
        limits=SandboxLimits(timeout=SANDBOX_TIMEOUT, cpu_seconds=SANDBOX_TIMEOUT, memory_mb=512),
    )
    pool = runtime.reset_runtime(config)
    yield pool
    pool.close()


@pytest.fixture
def builtins_seeded(db):
    """The built-in records (transactional tests flush the ones the migration seeded)."""
    from apps.policies.builtins import seed_builtin_policies

    return seed_builtin_policies()
