"""A block's executor: gRPC ingress, in-process load balancing onto instance queues, and the
executor's HTTP management surface. Run it with `python -m block_sdk.executor`."""

from block_sdk.executor.config import ExecutorConfig, load_config
from block_sdk.executor.lb_policies import (
    BUILTIN_POLICIES,
    LeastQueuePolicy,
    RoundRobinPolicy,
    StickySessions,
    load_policy,
)

__all__ = [
    "BUILTIN_POLICIES",
    "ExecutorConfig",
    "LeastQueuePolicy",
    "RoundRobinPolicy",
    "StickySessions",
    "load_config",
    "load_policy",
]
