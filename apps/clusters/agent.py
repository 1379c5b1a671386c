"""The node agent of the local driver (``manage.py aios_node --cluster C --node N``).

Each tick it heartbeats its node, turns the node's workload rows into
``block_sdk.node_agent.supervisor.DesiredProcess`` values, lets the supervisor start, restart
or stop child processes, writes what it observed back to the rows, and every few seconds
reports hardware metrics. Between ticks it blocks (with a timeout) on a Redis list that
drivers push to when a workload changes, so it reacts at once without busy polling.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from apps.clusters import conf, gateway, services
from apps.clusters import workloads as workload_services
from apps.clusters.choices import DesiredState
from apps.clusters.models import Cluster, Node, Workload
from apps.clusters.specs import parse_declared_gpus
from block_sdk.node_agent.hardware import HardwareSampler
from block_sdk.node_agent.supervisor import (
    AgentLockHeld,
    DesiredProcess,
    Observed,
    Supervisor,
    acquire_lock,
)

log = logging.getLogger("aios.clusters.agent")


class AgentError(RuntimeError):
    """The agent cannot run (its node is missing, another agent holds it, ...)."""


@dataclass
class AgentOptions:
    cluster_id: str
    node_id: str
    create: bool = False
    declare_gpus: list[dict[str, Any]] | None = None
    region_id: str = "local"
    tick_s: float = 1.0
    heartbeat_s: float = 2.0
    metrics_interval_s: float = 5.0
    keep_workloads_on_exit: bool = False
    stop_grace_s: float = 5.0
    data_dir: Path = field(default_factory=lambda: Path(settings.AIOS_DATA_DIR))

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "node-agents" / self.cluster_id / self.node_id

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs" / "workloads" / self.cluster_id / self.node_id


def _aware(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, tz=UTC) if ts else None


def spec_hash(workload: Workload, argv: list[str], env: dict[str, str]) -> str:
    doc = {"generation": workload.generation, "argv": argv, "env": env}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


class NodeAgent:
    def __init__(self, options: AgentOptions):
        self.options = options
        self.stopping = False
        self.node_removed = False
        self.sampler = HardwareSampler(declared_gpus=options.declare_gpus)
        self.supervisor = Supervisor(
            options.state_dir / "state.json",
            options.log_dir,
            marker=f"{options.cluster_id}/{options.node_id}",
        )
        self._lock = None
        self._last_heartbeat = 0.0
        self._last_metrics = 0.0
        self._started_at = datetime.now(tz=UTC).isoformat()
        self._redis = workload_services._redis()
        self._wake_key = conf.AGENT_WAKE_KEY.format(node_id=options.node_id)
        self._bad_rows: set[str] = set()

    # -- start -------------------------------------------------------------------------------
    def setup(self) -> None:
        try:
            self._lock = acquire_lock(self.options.state_dir / "agent.lock")
        except AgentLockHeld as exc:
            raise AgentError(
                f"{exc}: node {self.options.node_id} already has a running agent"
            ) from None
        self._ensure_registered()
        outcomes = self.supervisor.load_and_adopt()
        log.info(
            "event=agent_started cluster_id=%s node_id=%s adopted=%s",
            self.options.cluster_id,
            self.options.node_id,
            sum(1 for v in outcomes.values() if v == "adopted"),
        )

    def _ensure_registered(self) -> None:
        opts = self.options
        node = Node.objects.filter(pk=opts.node_id).first()
        if node is not None and node.cluster_id != opts.cluster_id:
            raise AgentError(
                f"node {opts.node_id!r} belongs to cluster {node.cluster_id!r}, "
                f"not {opts.cluster_id!r}"
            )
        if node is None and not opts.create:
            raise AgentError(
                f"node {opts.node_id!r} is not registered; add it with addNode "
                "(POST /api/addNode) or start the agent with --create"
            )
        info = self.sampler.static_info()
        if opts.declare_gpus is not None:
            info["gpus"] = {
                "count": len(opts.declare_gpus),
                "gpus": [
                    {
                        "modelName": g["model"],
                        "memory": g["memory_mb"],
                        "shared": g.get("shared", False),
                    }
                    for g in opts.declare_gpus
                ],
            }
        if not Cluster.objects.filter(pk=opts.cluster_id).exists():
            if not opts.create:
                raise AgentError(f"cluster {opts.cluster_id!r} does not exist")
            gateway.create_cluster(
                {
                    "id": opts.cluster_id,
                    "regionId": opts.region_id,
                    "config": {"driver": "local"},
                    "clusterMetadata": {"name": opts.cluster_id, "createdBy": "aios_node"},
                },
                run_async=False,
            )
            log.info("event=cluster_created cluster_id=%s", opts.cluster_id)
        if node is None:
            gateway.add_node(
                {**info, "id": opts.node_id, "clusterId": opts.cluster_id}, run_async=False
            )
            log.info("event=node_created node_id=%s", opts.node_id)
        elif opts.declare_gpus is not None:
            services.set_node_gpus(node, parse_declared_gpus(opts.declare_gpus))
            services.refresh_cluster_totals(node.cluster)
        else:
            detected = self.sampler.gpu_list()
            if detected and not node.gpus.exists():
                services.set_node_gpus(
                    node,
                    [
                        {
                            "index": g["gpu_id"],
                            "model": g["modelName"],
                            "memory_mb": g["totalMem"],
                            "uuid": g.get("uuid", ""),
                        }
                        for g in detected
                    ],
                    declared=False,
                )
                services.refresh_cluster_totals(node.cluster)

    # -- loop --------------------------------------------------------------------------------
    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        failures = 0
        try:
            while not self.stopping:
                try:
                    self.tick()
                    failures = 0
                except DatabaseError as exc:
                    failures += 1
                    log.warning("event=agent_db_error error=%r failures=%s", exc, failures)
                    connection.close()
                    time.sleep(min(10.0, 0.5 * 2**failures))
                    continue
                if self.node_removed:
                    log.warning("event=node_removed node_id=%s", self.options.node_id)
                    break
                self._wait()
        finally:
            self.shutdown()
        return 0

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def _wait(self) -> None:
        try:
            # Bounded: returns on a wake-up or after one tick.
            self._redis.blpop([self._wake_key], timeout=min(4.0, self.options.tick_s))
            self._redis.delete(self._wake_key)
        except Exception as exc:  # Redis down: fall back to a plain sleep
            log.debug("event=agent_wait_redis_error error=%r", exc)
            time.sleep(self.options.tick_s)

    def tick(self) -> None:
        close_old_connections()
        now = time.monotonic()
        if now - self._last_heartbeat >= self.options.heartbeat_s:
            node = services.heartbeat(self.options.node_id, agent_info=self._agent_info())
            if node is None:
                self.node_removed = True
                return
            self._last_heartbeat = now
        self.reconcile()
        if now - self._last_metrics >= self.options.metrics_interval_s:
            self._last_metrics = now
            self.report_metrics()

    def _agent_info(self) -> dict[str, Any]:
        return {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self._started_at,
            "workloads": len(self.supervisor.running_pids()),
        }

    def reconcile(self) -> dict[str, Observed]:
        rows = {w.id: w for w in Workload.objects.filter(node_id=self.options.node_id)}
        desired = []
        for workload in rows.values():
            try:
                argv = workload_services.workload_argv(workload)
            except ValueError as exc:
                if workload.id not in self._bad_rows:
                    workload_services.report_observed(
                        workload.id, status="failed", last_error=str(exc)
                    )
                    self._bad_rows.add(workload.id)
                continue
            env = workload_services.workload_environment(workload, parent_env=dict(os.environ))
            desired.append(
                DesiredProcess(
                    id=workload.id,
                    argv=argv,
                    env=env,
                    cwd=str(settings.BASE_DIR),
                    running=workload.desired_state == DesiredState.RUNNING
                    and not workload.remove_requested,
                    restart_policy=workload.restart_policy,
                    max_restarts=workload.max_restarts,
                    stop_grace_s=workload.stop_grace_s,
                    spec_hash=spec_hash(workload, argv, env),
                    remove=workload.remove_requested,
                )
            )
        observed = self.supervisor.reconcile(desired)
        for wid, obs in observed.items():
            workload = rows.get(wid)
            if workload is None:
                continue
            if obs.gone:
                workload_services.finalize_removal(workload)
                continue
            self._write_back(workload, obs)
        return observed

    @staticmethod
    def _write_back(workload: Workload, obs: Observed) -> None:
        fields = {
            "status": obs.status,
            "pid": obs.pid,
            "exit_code": obs.exit_code,
            "restarts": obs.restarts,
            "last_error": obs.last_error[:4000],
            "log_path": obs.log_path,
            "started_at": _aware(obs.started_at),
            "finished_at": _aware(obs.finished_at),
            "next_restart_at": _aware(obs.next_restart_at),
        }
        changed = {
            k: v
            for k, v in fields.items()
            if k not in ("next_restart_at",) and getattr(workload, k) != v
        }
        if (fields["next_restart_at"] is None) != (workload.next_restart_at is None):
            changed["next_restart_at"] = fields["next_restart_at"]
        if changed:
            workload_services.report_observed(workload.id, **changed)

    def report_metrics(self) -> None:
        from apps.metrics.services import record_node_metrics

        try:
            doc = self.sampler.sample()
        except Exception as exc:  # a metrics failure must not stop supervision
            log.warning("event=metrics_sample_failed error=%r", exc)
            return
        record_node_metrics(self.options.node_id, self.options.cluster_id, doc)

    # -- stop --------------------------------------------------------------------------------
    def shutdown(self) -> None:
        if self.options.keep_workloads_on_exit and not self.node_removed:
            self.supervisor.save()
            log.info(
                "event=agent_exit workloads=kept count=%s", len(self.supervisor.running_pids())
            )
        else:
            self.supervisor.stop_all(self.options.stop_grace_s)
            try:
                close_old_connections()
                for wid in list(self.supervisor.procs):
                    workload_services.report_observed(wid, status="stopped", pid=None)
            except DatabaseError:
                pass
            log.info("event=agent_exit workloads=stopped")
        if self._lock is not None:
            self._lock.close()
            self._lock = None
