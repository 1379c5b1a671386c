"""The periodic sync of Kubernetes clusters (Celery).

Beat entry (settings ``CELERY_BEAT_SCHEDULE``)::

    "sync-kubernetes-clusters": {"task": "aios.clusters.k8s_sync_all", "schedule": 10.0},

``k8s_sync_all`` fans out one ``k8s_sync`` per live (or provisioning) Kubernetes cluster; a
Redis lock with a TTL keeps two syncs of one cluster from overlapping.
"""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any

import redis
from celery import shared_task
from django.conf import settings

log = logging.getLogger("aios.clusters.k8s")

LOCK_KEY = "aios:clusters:k8s-sync-lock:{cluster_id}"
LOCK_TTL_S = 120  # longer than one sync can take (requests time out well before)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def sync_cluster(cluster_id: str, *, reconcile: bool = True) -> dict[str, Any]:
    """Sync one Kubernetes cluster unless another sync of it is running."""
    from apps.clusters.choices import DriverName
    from apps.clusters.drivers.kubernetes import KubernetesDriver
    from apps.clusters.models import Cluster
    from apps.core.errors import ApiError

    cluster = Cluster.objects.filter(pk=cluster_id, driver=DriverName.KUBERNETES).first()
    if cluster is None:
        return {"cluster_id": cluster_id, "skipped": "no such kubernetes cluster"}
    key, token = LOCK_KEY.format(cluster_id=cluster_id), uuid.uuid4().hex
    if not _redis().set(key, token, nx=True, ex=LOCK_TTL_S):
        return {"cluster_id": cluster_id, "skipped": "a sync of this cluster is running"}
    try:
        result = KubernetesDriver(cluster).sync(reconcile=reconcile)
    except ApiError as exc:
        log.warning(
            "event=k8s_sync_failed cluster_id=%s code=%s error=%s",
            cluster_id,
            exc.code,
            exc.message,
        )
        return {"cluster_id": cluster_id, "error": exc.as_dict()["error"]}
    finally:
        _redis().eval(_RELEASE, 1, key, token)
    actions = result.get("actions") or {}
    log.info(
        "event=k8s_synced cluster_id=%s workloads=%s applied=%s removed=%s orphans=%s",
        cluster_id,
        len(result.get("workloads") or {}),
        len(actions.get("applied") or []),
        len(actions.get("removed") or []),
        actions.get("orphans_deleted", 0),
    )
    return {"cluster_id": cluster_id, "actions": actions, "nodes": result.get("nodes")}


@shared_task(name="aios.clusters.k8s_sync", ignore_result=True)
def k8s_sync(cluster_id: str) -> dict[str, Any]:
    return sync_cluster(cluster_id)


@shared_task(name="aios.clusters.k8s_sync_all", ignore_result=True)
def k8s_sync_all() -> list[str]:
    from apps.clusters.choices import ClusterStatus, DriverName
    from apps.clusters.models import Cluster

    ids = list(
        Cluster.objects.filter(
            driver=DriverName.KUBERNETES,
            status__in=[ClusterStatus.LIVE, ClusterStatus.PROVISIONING],
        ).values_list("pk", flat=True)
    )
    for cluster_id in ids:
        k8s_sync.delay(cluster_id)
    return ids
