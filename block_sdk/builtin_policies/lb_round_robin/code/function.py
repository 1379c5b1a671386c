"""Round-robin load balancer with session stickiness (hook: the block ``loadBalancer``).

Each request without a known session goes to the next healthy instance in order; a session
stays on its instance while that instance is healthy. The contract (input, output, parameters,
management actions) is in ``block_sdk.builtin_policies.lb_contract``; the choosing logic is
the executor's own ``RoundRobinPolicy``, so the record and the executor agree.

input_data:  ``{"instances": [{"instance_id", "queue_length", "healthy"}], "session_id"}``
returns:     ``{"instance_id": str}``
"""

from __future__ import annotations

from block_sdk.builtin_policies.lb_contract import RegistryLoadBalancerMixin
from block_sdk.executor.lb_policies import RoundRobinPolicy


class AIOSv1PolicyRule(RegistryLoadBalancerMixin, RoundRobinPolicy):
    """Round-robin over healthy instances, sticky per session."""
