"""Workload rows as the node agent and the drivers use them: argv, environment, wake-ups,
status reports and the end of a removal (row deleted, GPU reservations released)."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.clusters import conf
from apps.clusters.models import Workload

log = logging.getLogger("aios.clusters.workloads")

# Environment a workload process starts from. Secrets of the control plane (DATABASE_URL,
# SECRET_KEY, AIOS_FERNET_KEY, ...) are deliberately not passed: the data plane never needs
# them, and a workload that does gets them explicitly through its own ``env``.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "USER")
ENTRY_RUNNER = "block_sdk.node_agent.entry"


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def wake_agent(node_id: str) -> None:
    """Nudge the node's agent to reconcile now instead of at its next tick (best effort)."""
    key = conf.AGENT_WAKE_KEY.format(node_id=node_id)
    try:
        pipe = _redis().pipeline()
        pipe.lpush(key, "1")
        pipe.ltrim(key, 0, 9)  # a bounded list: many wake-ups collapse into a few
        pipe.expire(key, conf.AGENT_WAKE_TTL_S)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("event=agent_wake_failed node_id=%s error=%r", node_id, exc)


def workload_argv(workload: Workload, python: str | None = None) -> list[str]:
    """The argv of a workload: ``python -m module args`` / the entry runner / the command."""
    python = python or sys.executable
    args = [str(a) for a in workload.args or []]
    if workload.command:
        return [str(c) for c in workload.command] + args
    if ":" in workload.entry_point:
        return [python, "-m", ENTRY_RUNNER, workload.entry_point, *args]
    if workload.entry_point:
        return [python, "-m", workload.entry_point, *args]
    raise ValueError(f"workload {workload.id} has neither an entry point nor a command")


def workload_environment(
    workload: Workload, *, parent_env: dict[str, str], extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {k: parent_env[k] for k in INHERITED_ENV if k in parent_env}
    env.update(
        {
            "PYTHONPATH": str(settings.BASE_DIR),
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": settings.REDIS_URL,
            "AIOS_REDIS_URL": settings.REDIS_URL,
            "AIOS_CONTROL_PLANE_URL": settings.AIOS_PUBLIC_URL,
            "AIOS_WORKLOAD_ID": workload.id,
            "AIOS_WORKLOAD_KIND": workload.kind,
            "AIOS_CLUSTER_ID": workload.cluster_id,
            "AIOS_NODE_ID": workload.node_id,
            "NODE_ID": workload.node_id,
        }
    )
    if workload.block_id:
        env["BLOCK_ID"] = workload.block_id
    if workload.instance_id:
        env["INSTANCE_ID"] = workload.instance_id
    # GPU placement: the process sees only the GPUs allocated to it.
    visible = ",".join(str(i) for i in workload.gpu_ids or [])
    env["CUDA_VISIBLE_DEVICES"] = visible
    env["NVIDIA_VISIBLE_DEVICES"] = visible or "none"
    for name, port in (workload.ports or {}).items():
        env[f"AIOS_PORT_{name.upper()}"] = str(port)
    env.update({str(k): str(v) for k, v in (workload.env or {}).items()})
    env.update(extra or {})
    return env


def report_observed(workload_id: str, **fields: Any) -> bool:
    """Write what the agent observed (status, pid, exit code, ...); False if the row is gone."""
    fields["observed_at"] = timezone.now()
    return bool(Workload.objects.filter(pk=workload_id).update(**fields))


def finalize_removal(workload: Workload) -> None:
    """The workload's process is gone: release its reservations and delete the row, in one
    transaction, so nobody sees the workload gone while its GPUs still look reserved."""
    from apps.allocator.services import release

    with transaction.atomic():
        if workload.instance_id:
            release(workload.instance_id)
        Workload.objects.filter(pk=workload.pk).delete()
    log.info("event=workload_removed workload_id=%s node_id=%s", workload.pk, workload.node_id)
