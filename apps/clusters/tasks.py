"""Celery tasks of the clusters app: thin wrappers that call the controller, recorded in the
tasks DB (task types ``cluster_infra_creation``, ``cluster_infra_remove``, ``node_addition``,
``node_removal``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from apps.clusters import conf, services
from apps.clusters.controller import ClusterController
from apps.tasks.services import TaskRecorder, tracked_task


@tracked_task(name="aios.clusters.cluster_infra_creation")
def cluster_infra_creation(recorder: TaskRecorder, cluster_id: str) -> dict[str, Any]:
    return ClusterController.for_id(cluster_id).provision(recorder.progress)


@tracked_task(name="aios.clusters.cluster_infra_remove")
def cluster_infra_remove(
    recorder: TaskRecorder, cluster_id: str, force: bool = False
) -> dict[str, Any]:
    return ClusterController.for_id(cluster_id).teardown(
        recorder.progress, timeout_s=conf.REMOVAL_WAIT_S
    )


@tracked_task(name="aios.clusters.node_addition")
def node_addition(recorder: TaskRecorder, node_id: str) -> dict[str, Any]:
    node = services.get_node(node_id)
    return ClusterController(node.cluster).add_node(node, recorder.progress)


@tracked_task(name="aios.clusters.node_removal")
def node_removal(recorder: TaskRecorder, node_id: str, force: bool = False) -> dict[str, Any]:
    node = services.get_node(node_id)
    return ClusterController(node.cluster).remove_node(
        node, recorder.progress, timeout_s=conf.REMOVAL_WAIT_S
    )


@shared_task(name="aios.clusters.mark_stale_nodes", ignore_result=True)
def mark_stale_nodes() -> int:
    return services.mark_stale_nodes()
