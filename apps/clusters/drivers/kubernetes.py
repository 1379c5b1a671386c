"""The ``kubernetes`` driver: registered by name, implemented in a later issue.

Every call answers a clear 501 naming what is missing instead of failing half-way; the
interface it will implement is :class:`apps.clusters.drivers.base.ClusterDriver`.
"""

from __future__ import annotations

from typing import Any, NoReturn

from apps.clusters.drivers.base import ClusterDriver
from apps.core.errors import NotImplementedYet

MESSAGE = (
    "the kubernetes driver is not available yet in this version of AIOS; "
    "register the cluster with config.driver 'local' (node agents) for now"
)


class DriverUnavailable(NotImplementedYet):
    code = "driver_unavailable"


class KubernetesDriver(ClusterDriver):
    name = "kubernetes"
    available = False

    def _unavailable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise DriverUnavailable(MESSAGE)

    provision_cluster = _unavailable
    teardown_cluster = _unavailable
    add_node = _unavailable
    remove_node = _unavailable
    realize = _unavailable
    unrealize = _unavailable
    status = _unavailable
    create_workload = _unavailable
