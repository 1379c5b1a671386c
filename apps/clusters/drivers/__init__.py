"""Cluster drivers by name: ``local`` (node agents) and ``kubernetes``."""

from __future__ import annotations

from apps.clusters.drivers.base import (
    BlockWorkloads,
    ClusterDriver,
    DriverError,
    WorkloadRef,
    WorkloadSpec,
)
from apps.clusters.drivers.kubernetes import MESSAGE, DriverUnavailable, KubernetesDriver
from apps.clusters.drivers.local import LocalDriver
from apps.core.errors import ValidationFailed

DRIVERS: dict[str, type[ClusterDriver]] = {
    "local": LocalDriver,
    "kubernetes": KubernetesDriver,
}


def driver_class(name: str) -> type[ClusterDriver]:
    try:
        return DRIVERS[name]
    except KeyError:
        raise ValidationFailed(
            f"unknown cluster driver {name!r}", details=[{"allowed": sorted(DRIVERS)}]
        ) from None


def get_driver(cluster) -> ClusterDriver:
    """The driver instance for a cluster row."""
    return driver_class(cluster.driver)(cluster)


def ensure_available(name: str) -> None:
    """Refuse early (501, clear message) when a driver exists by name but not yet in code."""
    if not driver_class(name).available:
        raise DriverUnavailable(
            MESSAGE if name == "kubernetes" else f"driver {name!r} is not available"
        )


__all__ = [
    "DRIVERS",
    "BlockWorkloads",
    "ClusterDriver",
    "DriverError",
    "DriverUnavailable",
    "WorkloadRef",
    "WorkloadSpec",
    "driver_class",
    "ensure_available",
    "get_driver",
]
