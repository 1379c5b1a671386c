"""The cluster driver interface: how a cluster's infrastructure and workloads are realized.

Everything that runs on a cluster is a **workload**, described declaratively by a
:class:`WorkloadSpec` (entry point or image, args, env, ports, resources, node and GPU
placement, probes, restart policy) and recorded as a ``Workload`` row: the desired state.
A driver *realizes* rows: the ``local`` driver lets its node agents start processes, the
``kubernetes`` driver applies Deployments/Jobs. Block, vDAG-controller, job and function
operations are implemented here once, on top of the workload primitives, so a driver only
implements infrastructure (provision/teardown, nodes) and ``realize``/``unrealize``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Q

from apps.clusters.choices import (
    ACTIVE_WORKLOAD_STATUSES,
    DesiredState,
    RestartPolicy,
    WorkloadKind,
)
from apps.clusters.models import Cluster, Node, Workload
from apps.core.errors import ApiError, Conflict, NotFound, ValidationFailed

log = logging.getLogger("aios.clusters.drivers")

ProgressFn = Callable[..., None]  # progress(percent, message, **data), e.g. TaskRecorder.progress
WORKLOAD_ID_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
ENTRY_POINT_RE = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
PORT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


def no_progress(percent: int, message: str = "", **data: Any) -> None:
    """The progress callback used when nobody records progress."""


class DriverError(ApiError):
    status_code = 409
    code = "driver_error"


@dataclass
class WorkloadSpec:
    """What to run and where. Only ``kind`` and one of ``entry_point``/``command``/``image``
    are required; the driver chooses a node when ``node_id`` is empty."""

    kind: str
    entry_point: str = ""  # "pkg.module" (run as -m) or "pkg.module:callable"
    command: list[str] = field(default_factory=list)  # a raw argv instead of an entry point
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    image: str = ""  # container image, for drivers that run containers
    ports: dict[str, int] = field(default_factory=dict)  # name -> port; 0 = driver chooses
    resources: dict[str, Any] = field(default_factory=dict)  # vcpus, memory_mb, gpus
    node_id: str | None = None
    gpu_ids: list[int] = field(default_factory=list)
    probes: dict[str, Any] = field(default_factory=dict)  # {"liveness": {"http": {...}}}
    restart_policy: str = RestartPolicy.ALWAYS
    max_restarts: int = 0
    stop_grace_s: float = 5.0
    block_id: str = ""
    instance_id: str = ""
    labels: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def validate(self) -> None:
        if self.kind not in WorkloadKind.values:
            raise ValidationFailed(
                f"unknown workload kind {self.kind!r}",
                details=[{"field": "kind", "allowed": list(WorkloadKind.values)}],
            )
        if not (self.entry_point or self.command or self.image):
            raise ValidationFailed("a workload needs an entry_point, a command or an image")
        if self.entry_point and not ENTRY_POINT_RE.match(self.entry_point):
            raise ValidationFailed(
                f"invalid entry point {self.entry_point!r}: 'pkg.module' or 'pkg.module:callable'"
            )
        if not all(isinstance(a, str) for a in [*self.command, *self.args]):
            raise ValidationFailed("command and args must be lists of strings")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise ValidationFailed("env must map strings to strings")
        for name, port in self.ports.items():
            if (
                not PORT_NAME_RE.match(str(name))
                or not isinstance(port, int)
                or not (0 <= port <= 65535)
            ):
                raise ValidationFailed(f"invalid port {name!r}: {port!r}")
        if self.restart_policy not in RestartPolicy.values:
            raise ValidationFailed(
                f"unknown restart policy {self.restart_policy!r}",
                details=[{"allowed": list(RestartPolicy.values)}],
            )
        if self.id is not None and (len(self.id) > 128 or not WORKLOAD_ID_RE.match(self.id)):
            raise ValidationFailed(f"invalid workload id {self.id!r}")
        if not (0 < float(self.stop_grace_s) <= 600):
            raise ValidationFailed("stop_grace_s must be in (0, 600]")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WorkloadRef:
    id: str
    kind: str
    node_id: str
    ports: dict[str, int]
    block_id: str = ""
    instance_id: str = ""

    @classmethod
    def of(cls, workload: Workload) -> WorkloadRef:
        return cls(
            workload.id,
            workload.kind,
            workload.node_id,
            dict(workload.ports),
            workload.block_id,
            workload.instance_id,
        )


@dataclass
class BlockWorkloads:
    block_id: str
    executor: WorkloadRef | None
    instances: list[WorkloadRef]


class ClusterDriver(ABC):
    """One cluster's infrastructure. Construct with the cluster row; methods are synchronous
    and bounded (anything slow runs inside a Celery task that passes ``progress``)."""

    name: str = "abstract"
    available: bool = True

    def __init__(self, cluster: Cluster):
        self.cluster = cluster

    # -- infrastructure (driver-specific) -------------------------------------------------
    @abstractmethod
    def provision_cluster(self, progress: ProgressFn = no_progress) -> dict[str, Any]:
        """Create the cluster's services; returns ``{"urlMap": {...}, ...}``."""

    @abstractmethod
    def teardown_cluster(
        self, progress: ProgressFn = no_progress, *, timeout_s: float = 60
    ) -> dict[str, Any]:
        """Remove every workload and service of the cluster."""

    @abstractmethod
    def add_node(self, node: Node, progress: ProgressFn = no_progress) -> dict[str, Any]:
        """Make a registered node usable (join it, label it, or wait for its agent)."""

    @abstractmethod
    def remove_node(
        self, node: Node, progress: ProgressFn = no_progress, *, timeout_s: float = 60
    ) -> dict[str, Any]:
        """Stop the node's workloads and take it out of the cluster."""

    @abstractmethod
    def realize(self, workload: Workload) -> None:
        """Start making the row's desired state real (apply a Deployment, wake an agent)."""

    @abstractmethod
    def unrealize(self, workload: Workload) -> None:
        """Start removing what ``realize`` created; the row is deleted once it is gone."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """The cluster as the driver sees it: nodes, workloads by state."""

    # -- hooks a driver may refine ------------------------------------------------------------
    def prepare(self, spec: WorkloadSpec, node: Node) -> WorkloadSpec:
        """Settle what the driver decides (free ports, ...) before the row is written."""
        return spec

    def node_is_alive(self, node: Node) -> bool:
        return node.is_healthy

    # -- workloads -------------------------------------------------------------------------
    def pick_node(self, spec: WorkloadSpec) -> Node:
        """The ready, schedulable node with the fewest active workloads."""
        nodes = (
            self.cluster.nodes.filter(schedulable=True)
            .annotate(
                active=Count(
                    "workloads",
                    filter=Q(workloads__desired_state=DesiredState.RUNNING),
                )
            )
            .order_by("active", "id")
        )
        for node in nodes:
            if self.node_is_alive(node):
                return node
        raise DriverError(
            f"cluster {self.cluster.id!r} has no ready, schedulable node for a {spec.kind} "
            "workload (start its node agents: manage.py aios_node --cluster "
            f"{self.cluster.id} --node <id>)",
            code="no_ready_node",
        )

    def create_workload(self, spec: WorkloadSpec) -> WorkloadRef:
        spec.validate()
        if spec.node_id:
            node = self.cluster.nodes.filter(pk=spec.node_id).first()
            if node is None:
                raise NotFound(f"node {spec.node_id!r} is not in cluster {self.cluster.id!r}")
        else:
            node = self.pick_node(spec)
        spec = self.prepare(spec, node)
        workload_id = spec.id or _generated_id(spec)
        try:
            with transaction.atomic():
                workload = Workload.objects.create(
                    id=workload_id,
                    cluster=self.cluster,
                    node=node,
                    kind=spec.kind,
                    block_id=spec.block_id,
                    instance_id=spec.instance_id,
                    labels=spec.labels,
                    entry_point=spec.entry_point,
                    command=spec.command,
                    args=spec.args,
                    env=spec.env,
                    image=spec.image,
                    ports=spec.ports,
                    resources=spec.resources,
                    gpu_ids=list(spec.gpu_ids),
                    probes=spec.probes,
                    restart_policy=spec.restart_policy,
                    max_restarts=spec.max_restarts,
                    stop_grace_s=spec.stop_grace_s,
                )
        except IntegrityError:
            raise Conflict(f"workload {workload_id!r} already exists") from None
        transaction.on_commit(lambda: self.realize(workload))
        log.info(
            "event=workload_created workload_id=%s kind=%s cluster_id=%s node_id=%s",
            workload.id,
            workload.kind,
            self.cluster.id,
            node.id,
        )
        return WorkloadRef.of(workload)

    def remove_workloads(self, queryset, *, wait: bool = False, timeout_s: float = 30) -> list[str]:
        """Ask for the workloads to go; with ``wait``, return once their rows are gone."""
        from apps.clusters import workloads as workload_services

        workloads = list(queryset.filter(cluster=self.cluster).select_related("node"))
        ids = [w.id for w in workloads]
        if not ids:
            return []
        Workload.objects.filter(pk__in=ids).update(
            remove_requested=True, desired_state=DesiredState.STOPPED
        )
        for workload in workloads:
            workload.remove_requested = True
            if self.node_is_alive(workload.node):
                transaction.on_commit(lambda w=workload: self.unrealize(w))
            else:
                # Nobody is there to stop it: the process (if any) died with its node.
                workload_services.finalize_removal(workload)
        if wait:
            self.wait_gone(ids, timeout_s=timeout_s)
        return ids

    def wait_gone(self, ids: Iterable[str], *, timeout_s: float) -> None:
        ids = list(ids)
        deadline = time.monotonic() + timeout_s
        while Workload.objects.filter(pk__in=ids).exists():
            if time.monotonic() > deadline:
                left = list(Workload.objects.filter(pk__in=ids).values_list("pk", flat=True))
                raise DriverError(
                    f"workloads still running after {timeout_s:.0f}s: {', '.join(left[:10])}",
                    code="removal_timeout",
                )
            time.sleep(0.2)

    def remove_workload(self, workload_id: str, *, wait: bool = False, timeout_s: float = 30):
        if not Workload.objects.filter(pk=workload_id, cluster=self.cluster).exists():
            raise NotFound(f"workload {workload_id!r} is not in cluster {self.cluster.id!r}")
        return self.remove_workloads(
            Workload.objects.filter(pk=workload_id), wait=wait, timeout_s=timeout_s
        )

    def restart_workload(self, workload_id: str) -> WorkloadRef:
        from django.db.models import F

        updated = Workload.objects.filter(pk=workload_id, cluster=self.cluster).update(
            generation=F("generation") + 1, desired_state=DesiredState.RUNNING
        )
        if not updated:
            raise NotFound(f"workload {workload_id!r} is not in cluster {self.cluster.id!r}")
        workload = Workload.objects.get(pk=workload_id)
        transaction.on_commit(lambda: self.realize(workload))
        return WorkloadRef.of(workload)

    def set_desired_state(self, workload_id: str, state: str) -> WorkloadRef:
        if state not in DesiredState.values:
            raise ValidationFailed(f"desired state must be one of {list(DesiredState.values)}")
        updated = Workload.objects.filter(pk=workload_id, cluster=self.cluster).update(
            desired_state=state
        )
        if not updated:
            raise NotFound(f"workload {workload_id!r} is not in cluster {self.cluster.id!r}")
        workload = Workload.objects.get(pk=workload_id)
        transaction.on_commit(lambda: self.realize(workload))
        return WorkloadRef.of(workload)

    # -- blocks -----------------------------------------------------------------------------
    def create_block(
        self,
        block_id: str,
        *,
        executor: WorkloadSpec | None,
        instances: Iterable[WorkloadSpec] = (),
    ) -> BlockWorkloads:
        """The block's executor plus its instances (each placed on its allocated node/GPUs)."""
        with transaction.atomic():
            executor_ref = None
            if executor is not None:
                executor.kind = WorkloadKind.EXECUTOR
                executor.block_id = block_id
                executor.id = executor.id or f"{block_id}-executor"
                executor_ref = self.create_workload(executor)
            refs = [self._instance(block_id, spec) for spec in instances]
        return BlockWorkloads(block_id, executor_ref, refs)

    def _instance(self, block_id: str, spec: WorkloadSpec) -> WorkloadRef:
        spec.kind = WorkloadKind.INSTANCE
        spec.block_id = block_id
        spec.instance_id = spec.instance_id or f"{block_id}-{uuid.uuid4().hex[:8]}"
        spec.id = spec.id or spec.instance_id
        return self.create_workload(spec)

    def scale_block(
        self,
        block_id: str,
        *,
        add: Iterable[WorkloadSpec] = (),
        remove: Iterable[str] = (),
        wait: bool = False,
    ) -> BlockWorkloads:
        with transaction.atomic():
            added = [self._instance(block_id, spec) for spec in add]
            remove = list(remove)
            if remove:
                self.remove_workloads(
                    Workload.objects.filter(block_id=block_id, instance_id__in=remove)
                )
        if wait and remove:
            self.wait_gone(
                Workload.objects.filter(block_id=block_id, instance_id__in=remove).values_list(
                    "pk", flat=True
                ),
                timeout_s=60,
            )
        return BlockWorkloads(block_id, None, added)

    def remove_instance(self, block_id: str, instance_id: str, *, wait: bool = False) -> bool:
        queryset = Workload.objects.filter(block_id=block_id, instance_id=instance_id)
        return bool(self.remove_workloads(queryset, wait=wait))

    def remove_block(self, block_id: str, *, wait: bool = False, timeout_s: float = 60) -> int:
        queryset = Workload.objects.filter(block_id=block_id)
        return len(self.remove_workloads(queryset, wait=wait, timeout_s=timeout_s))

    def block_workloads(self, block_id: str) -> list[Workload]:
        return list(Workload.objects.filter(cluster=self.cluster, block_id=block_id))

    # -- vDAG controllers, jobs, functions -----------------------------------------------------
    def create_vdag_controller(
        self, controller_id: str, spec: WorkloadSpec, *, replicas: int = 1
    ) -> list[WorkloadRef]:
        return self._replicas(
            WorkloadKind.VDAG_CONTROLLER, "vdag_controller_id", controller_id, spec, replicas
        )

    def remove_vdag_controller(self, controller_id: str, *, wait: bool = False) -> int:
        queryset = Workload.objects.filter(
            kind=WorkloadKind.VDAG_CONTROLLER, labels__vdag_controller_id=controller_id
        )
        return len(self.remove_workloads(queryset, wait=wait))

    def create_function(
        self, function_id: str, spec: WorkloadSpec, *, replicas: int = 1
    ) -> list[WorkloadRef]:
        return self._replicas(WorkloadKind.FUNCTION, "function_id", function_id, spec, replicas)

    def remove_function(self, function_id: str, *, wait: bool = False) -> int:
        queryset = Workload.objects.filter(
            kind=WorkloadKind.FUNCTION, labels__function_id=function_id
        )
        return len(self.remove_workloads(queryset, wait=wait))

    def run_job(self, spec: WorkloadSpec) -> WorkloadRef:
        """A one-off process: never restarted on success; ``max_restarts`` retries on failure."""
        spec.kind = WorkloadKind.JOB
        if spec.restart_policy == RestartPolicy.ALWAYS:
            spec.restart_policy = RestartPolicy.NEVER
        return self.create_workload(spec)

    def _replicas(
        self, kind: str, label: str, owner_id: str, spec: WorkloadSpec, replicas: int
    ) -> list[WorkloadRef]:
        if not (1 <= replicas <= 64):
            raise ValidationFailed("replicas must be between 1 and 64")
        refs = []
        with transaction.atomic():
            for index in range(replicas):
                replica = WorkloadSpec(**{**spec.as_dict()})
                replica.kind = kind
                replica.labels = {**spec.labels, label: owner_id, "replica": index}
                replica.id = f"{owner_id}-{index}" if replicas > 1 or not spec.id else spec.id
                refs.append(self.create_workload(replica))
        return refs

    # -- reporting -------------------------------------------------------------------------
    def workload_summary(self) -> dict[str, Any]:
        rows = (
            Workload.objects.filter(cluster=self.cluster)
            .values("node_id", "kind", "status")
            .annotate(n=Count("id"))
        )
        by_status: dict[str, int] = {}
        by_kind: dict[str, int] = {}
        per_node: dict[str, dict[str, int]] = {}
        for row in rows:
            by_status[row["status"]] = by_status.get(row["status"], 0) + row["n"]
            by_kind[row["kind"]] = by_kind.get(row["kind"], 0) + row["n"]
            node = per_node.setdefault(row["node_id"], {})
            node[row["status"]] = node.get(row["status"], 0) + row["n"]
        active = Workload.objects.filter(
            cluster=self.cluster, status__in=ACTIVE_WORKLOAD_STATUSES
        ).count()
        return {
            "total": sum(by_status.values()),
            "active": active,
            "by_status": by_status,
            "by_kind": by_kind,
            "per_node": per_node,
        }


def _generated_id(spec: WorkloadSpec) -> str:
    base = spec.instance_id or spec.block_id or spec.kind.replace("_", "-")
    return f"{base}-{uuid.uuid4().hex[:8]}"[:128]
