"""Least-queue load balancer with session stickiness (hook: the block ``loadBalancer``).

Each request without a known session goes to the healthy instance with the shortest queue
(ties rotate); a session stays on its instance while that instance is healthy. The contract
(input, output, parameters, management actions) is in
``block_sdk.builtin_policies.lb_contract``; the choosing logic is the executor's own
``LeastQueuePolicy``, so the record and the executor agree.

input_data:  ``{"instances": [{"instance_id", "queue_length", "healthy"}], "session_id"}``
returns:     ``{"instance_id": str}``
"""

from __future__ import annotations

from block_sdk.builtin_policies.lb_contract import RegistryLoadBalancerMixin
from block_sdk.executor.lb_policies import LeastQueuePolicy


class AIOSv1PolicyRule(RegistryLoadBalancerMixin, LeastQueuePolicy):
    """The healthy instance with the shortest queue, sticky per session."""
