"""The ``kubernetes`` driver: a cluster's workloads as Kubernetes objects.

It talks to the cluster's API server with the official client, from the kubeconfig stored
encrypted on the cluster record (decrypted in memory per operation) or from the pod's own
service account (``config.kubernetes.inCluster``). What it creates is built by the pure
functions of :mod:`apps.clusters.drivers.k8s.manifests` — the same ones
``manage.py aios_k8s_render`` prints.

- ``provision_cluster``: discovers the nodes (capacity, allocatable, ``nvidia.com/gpu``),
  registers/labels them with their AIOS node id, and applies the namespaces, least-privilege
  ServiceAccounts/Roles/RoleBindings, the node-metrics DaemonSet, NetworkPolicies and (with
  ``redis.mode: in-cluster``) the data plane's Redis.
- ``realize``/``unrealize``: a workload row <-> its Deployment/Service/Job/HPA. Writes are
  server-side applies, skipped when the object already carries the same spec hash (applying
  twice changes nothing); removal deletes by label selector *and* name, never an object
  without this cluster's labels.
- ``status``/``sync``: read pods, Jobs and nodes back into the rows (the node agent's status
  values) and, for ``sync``, re-apply what is missing or stale, finish removals and delete
  orphans. ``apps.clusters.drivers.k8s.tasks.sync_all_clusters`` runs it periodically.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from django.db import transaction

from apps.clusters import services
from apps.clusters import workloads as workload_services
from apps.clusters.choices import DesiredState, NodeStatus, WorkloadKind
from apps.clusters.drivers.base import (
    ClusterDriver,
    DriverError,
    ProgressFn,
    WorkloadSpec,
    no_progress,
)
from apps.clusters.drivers.k8s import config as k8s_config
from apps.clusters.drivers.k8s import manifests, names, observe
from apps.clusters.drivers.k8s.client import KubeApiError, KubeClient, describe
from apps.clusters.models import Cluster, Node, Workload
from apps.core.errors import ApiError, NotFound, NotImplementedYet, ValidationFailed
from apps.core.uris import URIError, validate_slug_id

log = logging.getLogger("aios.clusters.k8s")

# Kept for callers of ``ensure_available`` (the driver is available now).
MESSAGE = "the kubernetes driver is not available"
ERROR_PREFIX = "kubernetes: "
WORKLOAD_OBJECT_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "Job")
# Kinds whose presence in our namespace, unlabelled, means someone else uses it too.
FOREIGN_CHECK_KINDS = ("Deployment", "Service", "Job", "Pod", "ConfigMap")
SYSTEM_CONFIGMAPS = frozenset({"kube-root-ca.crt"})


class DriverUnavailable(NotImplementedYet):
    code = "driver_unavailable"


@dataclass
class Snapshot:
    """One read of the cluster: nodes, and this cluster's pods and objects by workload."""

    nodes: list[dict[str, Any]]
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _slug_for(name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug) or "node"
    if len(slug) > 63:
        slug = f"{slug[:54].rstrip('-')}-{names.short_hash(name)}"
    return slug


class KubernetesDriver(ClusterDriver):
    name = "kubernetes"
    available = True

    # -- configuration and connection ---------------------------------------------------------
    @cached_property
    def k8s(self) -> k8s_config.K8sConfig:
        return k8s_config.parse(self.cluster.id, self.cluster.config)

    def connect(self) -> KubeClient:
        cfg = self.k8s
        if cfg.in_cluster:
            return KubeClient.in_cluster(timeout_s=cfg.request_timeout_s)
        return KubeClient.from_kubeconfig(
            self.cluster.get_kubeconfig(), context=cfg.context, timeout_s=cfg.request_timeout_s
        )

    # -- manifests (shared with aios_k8s_render) ----------------------------------------------
    @staticmethod
    def gpu_facts(node: Node | None, gpu_ids: Iterable[int], resources: dict) -> tuple:
        """(shared, uuids) of a placement: shared when the spec says so
        (``resources.shared_gpu``) or every GPU it got is declared shared on the node."""
        gpu_ids = list(gpu_ids)
        rows = {g.index: g for g in node.gpus.all()} if node is not None and node.pk else {}
        selected = [rows.get(i) for i in gpu_ids]
        shared = bool((resources or {}).get("shared_gpu")) or (
            bool(gpu_ids) and all(r is not None and r.shared for r in selected)
        )
        uuids = [r.uuid for r in selected if r is not None and r.uuid]
        return shared, uuids

    def view_of(self, workload: Workload) -> manifests.WorkloadView:
        shared, uuids = self.gpu_facts(workload.node, workload.gpu_ids, workload.resources)
        return manifests.WorkloadView.from_row(workload, gpu_shared=shared, gpu_uuids=uuids)

    def view_of_spec(self, spec: WorkloadSpec, node: Node | None) -> manifests.WorkloadView:
        shared, uuids = self.gpu_facts(node, spec.gpu_ids, spec.resources)
        return manifests.WorkloadView.from_spec(
            spec, cluster_id=self.cluster.id, gpu_shared=shared, gpu_uuids=uuids
        )

    def manifests_for(self, workload: Workload) -> list[dict[str, Any]]:
        return manifests.workload_manifests(self.view_of(workload), self.k8s)

    def node_id_map(self, *, exclude: str | None = None) -> dict[str, str]:
        """Kubernetes node name -> AIOS node id, for the nodes matched so far."""
        out = {}
        for node in self.cluster.nodes.all():
            k8s_name = ((node.node_metadata or {}).get("kubernetes") or {}).get("name")
            if k8s_name and node.id != exclude:
                out[k8s_name] = node.id
        return out

    def cluster_manifests(self) -> list[dict[str, Any]]:
        return manifests.cluster_manifests(self.k8s, self.node_id_map())

    def url_map(self) -> dict[str, str]:
        from apps.clusters.drivers.local import LocalDriver

        return {**LocalDriver(self.cluster).url_map(), "dataPlaneRedis": self.k8s.redis_url}

    def service_dns(self, workload_id: str) -> str:
        return manifests.service_host(self.k8s, workload_id)

    def endpoints(self, workload: Workload) -> dict[str, str]:
        """``name -> host:port`` of a workload's Service (empty for kinds without one)."""
        if workload.kind not in manifests.SERVICE_KINDS:
            return {}
        host = self.service_dns(workload.id)
        return {name: f"{host}:{port}" for name, port in sorted((workload.ports or {}).items())}

    # -- applying -----------------------------------------------------------------------------
    def _apply(self, api: KubeClient, obj: dict[str, Any]) -> str:
        kind, meta = obj["kind"], obj["metadata"]
        existing = api.get(kind, meta.get("namespace"), meta["name"])
        if existing is not None and not names.owned_by(existing, self.cluster.id):
            if kind == "Namespace":
                return "adopted"  # used as it is; never changed or deleted by AIOS
            raise DriverError(
                f"{describe(obj)} exists and is not managed by AIOS cluster "
                f"{self.cluster.id!r}; remove or rename it (AIOS never overwrites it)",
                code="kubernetes_object_conflict",
            )
        wanted = _annotations(obj).get(names.SPEC_HASH)
        if existing is not None and _annotations(existing).get(names.SPEC_HASH) == wanted:
            return "unchanged"
        if existing is not None and kind == "Job":
            # A Job's pod template is immutable: a changed Job is a new Job.
            api.delete(kind, meta.get("namespace"), meta["name"])
            api.apply(obj)
            return "recreated"
        api.apply(obj)
        return "created" if existing is None else "updated"

    def _apply_workload(
        self, api: KubeClient, workload: Workload, docs: list[dict[str, Any]]
    ) -> Counter:
        outcomes: Counter = Counter()
        for doc in docs:
            outcomes[self._apply(api, doc)] += 1
        # Objects of this workload that its current spec no longer has (a Service whose
        # ports went, the HPA of a stopped function) are pruned.
        wanted = {_key(d) for d in docs}
        selector = manifests.workload_selector(self.cluster.id, workload.id)
        for kind in WORKLOAD_OBJECT_KINDS:
            for obj in api.list(kind, self.k8s.namespace, selector):
                obj.setdefault("kind", kind)
                if (kind, obj["metadata"]["name"]) not in wanted:
                    api.delete(kind, self.k8s.namespace, obj["metadata"]["name"])
                    outcomes["pruned"] += 1
        return outcomes

    def _delete_workload_objects(
        self, api: KubeClient, workload_id: str, objects: list[dict[str, Any]] | None = None
    ) -> int:
        """Delete what ``realize`` created for one workload: found by its labels, and only
        under the names the builders give it."""
        name = names.workload_object_name(workload_id)
        selector = manifests.workload_selector(self.cluster.id, workload_id)
        deleted = 0
        if objects is None:
            objects = []
            for kind in WORKLOAD_OBJECT_KINDS:
                for obj in api.list(kind, self.k8s.namespace, selector):
                    obj.setdefault("kind", kind)
                    objects.append(obj)
        for obj in objects:
            if obj["metadata"]["name"] != name:
                log.warning(
                    "event=k8s_unexpected_object kind=%s name=%s workload_id=%s",
                    obj["kind"],
                    obj["metadata"]["name"],
                    workload_id,
                )
                continue
            if api.delete(obj["kind"], self.k8s.namespace, name):
                deleted += 1
        return deleted

    def _record_error(self, workload: Workload, exc: ApiError) -> None:
        log.warning(
            "event=k8s_workload_error workload_id=%s code=%s error=%s",
            workload.id,
            exc.code,
            exc.message,
        )
        workload_services.report_observed(
            workload.id, last_error=f"{ERROR_PREFIX}{exc.message}"[:4000]
        )

    # -- workloads ----------------------------------------------------------------------------
    def prepare(self, spec: WorkloadSpec, node: Node) -> WorkloadSpec:
        # Ports asked as 0 get fixed numbers (each pod has its own IP); a spec Kubernetes
        # cannot run (bad probe, limits below requests) is refused now, as a 400.
        spec.ports = manifests.assign_ports(spec.ports)
        probe = WorkloadSpec(
            **{**spec.as_dict(), "id": spec.id or "validation", "node_id": node.id}
        )
        manifests.workload_manifests(self.view_of_spec(probe, node), self.k8s)
        return spec

    def node_is_alive(self, node: Node) -> bool:
        # Kept current by provisioning, add_node and the periodic sync (no agent heartbeats).
        return node.status == NodeStatus.READY

    def realize(self, workload: Workload) -> None:
        row = Workload.objects.select_related("node").filter(pk=workload.pk).first()
        if row is None:
            return
        if row.remove_requested:
            self.unrealize(row)
            return
        try:
            docs = self.manifests_for(row)
            with self.connect() as api:
                outcomes = self._apply_workload(api, row, docs)
        except ApiError as exc:
            # Called after commit: the row stays, with the reason; the sync retries.
            self._record_error(row, exc)
            return
        if row.last_error.startswith(ERROR_PREFIX):
            workload_services.report_observed(row.id, last_error="")
        log.info(
            "event=k8s_workload_applied workload_id=%s kind=%s outcomes=%s",
            row.id,
            row.kind,
            dict(outcomes),
        )

    def unrealize(self, workload: Workload) -> None:
        """Delete the workload's objects. The row goes once its pods are gone: in
        ``wait_gone`` for callers that wait, otherwise at the next sync."""
        try:
            with self.connect() as api:
                deleted = self._delete_workload_objects(api, workload.id)
        except ApiError as exc:
            self._record_error(workload, exc)
            return
        log.info("event=k8s_workload_deleted workload_id=%s objects=%s", workload.id, deleted)

    def remove_workloads(self, queryset, *, wait: bool = False, timeout_s: float = 30) -> list[str]:
        # Unlike a node agent, the API server is there even when the node is not: removal
        # always goes through it, so nothing is left behind on the cluster.
        workloads = list(queryset.filter(cluster=self.cluster).select_related("node"))
        ids = [w.id for w in workloads]
        if not ids:
            return []
        Workload.objects.filter(pk__in=ids).update(
            remove_requested=True, desired_state=DesiredState.STOPPED
        )
        for workload in workloads:
            workload.remove_requested = True
            transaction.on_commit(lambda w=workload: self.unrealize(w))
        if wait:
            self.wait_gone(ids, timeout_s=timeout_s)
        return ids

    def wait_gone(self, ids: Iterable[str], *, timeout_s: float) -> None:
        ids = list(ids)
        deadline = time.monotonic() + timeout_s
        while True:
            rows = list(Workload.objects.filter(pk__in=ids, cluster=self.cluster))
            if rows:
                try:
                    with self.connect() as api:
                        self._finish_removals(api, self._snapshot(api, nodes=False), rows)
                except ApiError as exc:
                    log.warning("event=k8s_wait_gone_error error=%s", exc.message)
            left = list(Workload.objects.filter(pk__in=ids).values_list("pk", flat=True))
            if not left:
                return
            if time.monotonic() > deadline:
                raise DriverError(
                    f"workloads still running after {timeout_s:.0f}s: {', '.join(left[:10])}",
                    code="removal_timeout",
                )
            time.sleep(0.5)

    def _finish_removals(self, api: KubeClient, snap: Snapshot, rows: list[Workload]) -> list:
        """Rows marked for removal: delete what is left of them; once neither objects nor
        pods remain, delete the row and release its GPUs."""
        finished = []
        for row in rows:
            if not row.remove_requested:
                continue
            label = names.label_value(row.id)
            objects = snap.objects.get(label, [])
            if objects:
                self._delete_workload_objects(api, row.id, objects)
                continue
            if snap.pods.get(label):
                continue  # terminating; their grace period runs
            workload_services.finalize_removal(row)
            finished.append(row.id)
        return finished

    def _snapshot(self, api: KubeClient, *, nodes: bool = True) -> Snapshot:
        cfg = self.k8s
        snap = Snapshot(nodes=api.list("Node", None, self._node_selector()) if nodes else [])
        selector = manifests.workload_selector(self.cluster.id)
        pods: dict[str, list] = defaultdict(list)
        for pod in api.list("Pod", cfg.namespace, selector):
            label = ((pod.get("metadata") or {}).get("labels") or {}).get(names.WORKLOAD_ID)
            if label:
                pods[label].append(pod)
        objects: dict[str, list] = defaultdict(list)
        for kind in WORKLOAD_OBJECT_KINDS:
            for obj in api.list(kind, cfg.namespace, selector):
                obj.setdefault("kind", kind)
                label = ((obj.get("metadata") or {}).get("labels") or {}).get(names.WORKLOAD_ID)
                if label:
                    objects[label].append(obj)
        snap.pods, snap.objects = dict(pods), dict(objects)
        return snap

    # -- reading back ---------------------------------------------------------------------------
    def _observe_workloads(self, snap: Snapshot) -> dict[str, dict[str, Any]]:
        """Write each row's observed state (only what changed) and return pod summaries."""
        node_ids = {
            n["metadata"]["name"]: observe.aios_node_label(
                (n.get("metadata") or {}).get("labels") or {}
            )
            for n in snap.nodes
        }
        node_ids.update(self.node_id_map())
        report: dict[str, dict[str, Any]] = {}
        for row in Workload.objects.filter(cluster=self.cluster, remove_requested=False):
            label = names.label_value(row.id)
            pods = snap.pods.get(label, [])
            objects = snap.objects.get(label, [])
            if row.kind == WorkloadKind.JOB:
                job = next((o for o in objects if o["kind"] == "Job"), None)
                seen = observe.observe_job(job, pods, desired_state=row.desired_state)
            else:
                deployment = next((o for o in objects if o["kind"] == "Deployment"), None)
                seen = observe.observe_deployment(
                    pods,
                    desired_state=row.desired_state,
                    restart_policy=row.restart_policy,
                    max_restarts=row.max_restarts,
                    deployment=deployment,
                )
            fields = seen.fields()
            if not fields["last_error"] and row.last_error.startswith(ERROR_PREFIX) and not objects:
                fields["last_error"] = row.last_error  # the apply failure is still the news
            changed = {k: v for k, v in fields.items() if getattr(row, k) != v}
            if changed:
                workload_services.report_observed(row.id, **changed)
            report[row.id] = {
                "kind": row.kind,
                "status": seen.status,
                "node_id": row.node_id,
                "pods": [observe.pod_summary(p, node_ids) for p in seen.pods or pods],
            }
        return report

    def _reconcile(self, api: KubeClient, snap: Snapshot) -> dict[str, Any]:
        """Re-apply missing or stale objects, finish removals, delete orphans."""
        rows = list(Workload.objects.filter(cluster=self.cluster).select_related("node"))
        known = {names.label_value(r.id) for r in rows}
        applied, failed = [], []
        for row in rows:
            if row.remove_requested:
                continue
            label = names.label_value(row.id)
            try:
                docs = self.manifests_for(row)
            except ApiError as exc:
                self._record_error(row, exc)
                failed.append(row.id)
                continue
            have = {
                _key(o): _annotations(o).get(names.SPEC_HASH) for o in snap.objects.get(label, [])
            }
            want = {_key(d): _annotations(d).get(names.SPEC_HASH) for d in docs}
            if have == want:
                continue
            try:
                self._apply_workload(api, row, docs)
                applied.append(row.id)
                if row.last_error.startswith(ERROR_PREFIX):
                    workload_services.report_observed(row.id, last_error="")
            except ApiError as exc:
                self._record_error(row, exc)
                failed.append(row.id)
        finished = self._finish_removals(api, snap, rows)
        orphans = 0
        for label, objects in snap.objects.items():
            if label in known:
                continue
            # Objects of this cluster whose row is gone (e.g. deleted while the API was
            # unreachable): ours by their labels, so ours to remove.
            for obj in objects:
                if api.delete(obj["kind"], self.k8s.namespace, obj["metadata"]["name"]):
                    orphans += 1
        return {
            "applied": applied,
            "failed": failed,
            "removed": finished,
            "orphans_deleted": orphans,
        }

    # -- nodes ----------------------------------------------------------------------------------
    def _match(
        self, facts: list[observe.NodeFacts], nodes: list[Node]
    ) -> tuple[dict[str, observe.NodeFacts], list[observe.NodeFacts], list[str]]:
        """AIOS node id -> Kubernetes node, the Kubernetes nodes left over, and conflicts."""
        cluster_label = names.label_value(self.cluster.id)
        by_name = {f.name: f for f in facts}
        by_label = {
            observe.aios_node_label(f.labels): f for f in facts if observe.aios_node_label(f.labels)
        }
        by_slug = {_slug_for(f.name): f for f in facts}
        matched: dict[str, observe.NodeFacts] = {}
        used: set[str] = set()
        conflicts: list[str] = []
        for node in nodes:
            meta = node.node_metadata or {}
            candidates = [
                by_label.get(node.id),
                by_name.get(str(meta.get("kubernetesNodeName") or "")),
                by_name.get(str((meta.get("kubernetes") or {}).get("name") or "")),
                by_name.get(node.id),
                by_slug.get(node.id),
            ]
            found = next((f for f in candidates if f is not None and f.name not in used), None)
            if found is None:
                continue
            owner = found.labels.get(names.CLUSTER_ID)
            if owner and owner != cluster_label:
                conflicts.append(
                    f"Kubernetes node {found.name} belongs to AIOS cluster {owner} (label "
                    f"{names.CLUSTER_ID}); not used for node {node.id}"
                )
                used.add(found.name)
                continue
            matched[node.id] = found
            used.add(found.name)
        leftover = []
        for f in facts:
            if f.name in used:
                continue
            owner = f.labels.get(names.CLUSTER_ID)
            if owner and owner != cluster_label:
                conflicts.append(f"Kubernetes node {f.name} belongs to AIOS cluster {owner}")
                continue
            leftover.append(f)
        return matched, leftover, conflicts

    def _new_node_id(self, facts: observe.NodeFacts) -> str | None:
        for candidate in (
            observe.aios_node_label(facts.labels),
            _slug_for(facts.name),
            _slug_for(f"{self.cluster.id}-{facts.name}"),
        ):
            if not candidate:
                continue
            try:
                validate_slug_id(candidate, "node id")
            except URIError:
                continue
            if not Node.objects.filter(pk=candidate).exists():
                return candidate
        return None

    def _update_node(self, api: KubeClient, node: Node, facts: observe.NodeFacts) -> bool:
        """Label the Kubernetes node, copy its capacity and GPUs to the row, and its
        readiness to the row's status. True when the resource totals changed."""
        wanted = {names.NODE_ID: node.id, names.CLUSTER_ID: names.label_value(self.cluster.id)}
        if any(facts.labels.get(k) != v for k, v in wanted.items()):
            try:
                api.merge_patch("Node", None, facts.name, {"metadata": {"labels": wanted}})
            except KubeApiError as exc:
                if exc.http_status != 404:
                    raise
                return False  # the node left between the listing and now

        meta = dict(node.node_metadata or {})
        meta["kubernetes"] = facts.metadata
        storage = {**(node.storage or {}), "size": facts.storage_mb}
        storage.setdefault("disks", 1)
        changed = (
            (node.vcpus or {}).get("count") != facts.vcpus
            or node.memory != facts.memory_mb
            or (node.storage or {}).get("size") != facts.storage_mb
        )
        Node.objects.filter(pk=node.pk).update(
            vcpus={**(node.vcpus or {}), "count": facts.vcpus},
            memory=facts.memory_mb,
            storage=storage,
            node_metadata=meta,
            updated_at=_now(),
        )
        changed = self._update_gpus(node, facts) or changed
        if facts.ready and not facts.unschedulable:
            services.heartbeat(
                node.id,
                agent_info={
                    "driver": "kubernetes",
                    "kubernetes_node": facts.name,
                    "kubelet": facts.metadata.get("kubeletVersion"),
                    "observed_at": _now().isoformat(),
                },
            )
        else:
            services.set_node_status(node.id, NodeStatus.NOT_READY, facts.message)
        return changed

    @staticmethod
    def _update_gpus(node: Node, facts: observe.NodeFacts) -> bool:
        rows = list(node.gpus.all())
        if not facts.gpu_count:
            # No device plugin GPUs: keep what the spec declared (e.g. shared GPUs used
            # through NVIDIA_VISIBLE_DEVICES); drop what an earlier discovery found.
            discovered = [g for g in rows if not g.declared]
            if discovered and len(discovered) == len(rows):
                services.set_node_gpus(node, [], declared=False)
                return True
            return False
        current = {g.index: g for g in rows}
        wanted = [
            {
                "index": i,
                "model": facts.gpu_model or (current[i].model if i in current else ""),
                "memory_mb": facts.gpu_memory_mb or (current[i].memory_mb if i in current else 0),
                "shared": current[i].shared if i in current else False,
                "uuid": current[i].uuid if i in current else "",
            }
            for i in range(facts.gpu_count)
        ]
        same = len(rows) == facts.gpu_count and all(
            current.get(w["index"]) is not None
            and current[w["index"]].model == w["model"]
            and current[w["index"]].memory_mb == w["memory_mb"]
            for w in wanted
        )
        if same:
            return False
        services.set_node_gpus(node, wanted, declared=False)
        return True

    def refresh_nodes(self, api: KubeClient, k8s_nodes: list[dict], *, register: bool) -> dict:
        """Match Kubernetes nodes to the cluster's node rows (registering the others when
        ``register``), label them and copy their facts to the rows."""
        facts = [observe.node_facts(n) for n in k8s_nodes]
        nodes = list(self.cluster.nodes.prefetch_related("gpus"))
        matched, leftover, conflicts = self._match(facts, nodes)
        registered = []
        if register:
            for f in leftover:
                node_id = self._new_node_id(f)
                if node_id is None:
                    conflicts.append(f"no free AIOS node id for Kubernetes node {f.name}")
                    continue
                node = services.register_node(
                    self.cluster,
                    {"id": node_id, "nodeMetadata": {"kubernetesNodeName": f.name}},
                )
                matched[node.id] = f
                nodes.append(node)
                registered.append(node.id)
            leftover = []
        totals_changed = False
        for node in nodes:
            found = matched.get(node.id)
            if found is not None:
                totals_changed = self._update_node(api, node, found) or totals_changed
                continue
            seen_before = ((node.node_metadata or {}).get("kubernetes") or {}).get("name")
            if seen_before:
                message = f"the Kubernetes node {seen_before} is gone"
                services.set_node_status(node.id, NodeStatus.NOT_READY, message)
            else:
                message = (
                    f"no Kubernetes node matches {node.id}: label one with "
                    f"{names.NODE_ID}={node.id} or set nodeMetadata.kubernetesNodeName"
                )
                services.set_node_status(node.id, NodeStatus.PENDING, message)
        if totals_changed or registered:
            services.refresh_cluster_totals(self.cluster)
        for text in conflicts:
            log.warning("event=k8s_node_conflict cluster_id=%s message=%s", self.cluster.id, text)
        return {
            "matched": {node_id: f.name for node_id, f in sorted(matched.items())},
            "registered": registered,
            "unmatched": sorted(n.id for n in nodes if n.id not in matched),
            "unregistered_kubernetes_nodes": sorted(f.name for f in leftover),
            "conflicts": conflicts,
        }

    def _apply_node_ids(self, api: KubeClient, *, exclude: str | None = None) -> None:
        doc = manifests.node_ids_configmap(self.k8s, self.node_id_map(exclude=exclude))
        if doc is not None:
            self._apply(api, doc)

    def _unlabel(self, api: KubeClient, node: Node, k8s_nodes: list[dict]) -> str | None:
        cluster_label = names.label_value(self.cluster.id)
        for item in k8s_nodes:
            labels = (item.get("metadata") or {}).get("labels") or {}
            if (
                labels.get(names.NODE_ID) == node.id
                and labels.get(names.CLUSTER_ID) == cluster_label
            ):
                name = item["metadata"]["name"]
                try:
                    api.merge_patch(
                        "Node",
                        None,
                        name,
                        {"metadata": {"labels": {names.NODE_ID: None, names.CLUSTER_ID: None}}},
                    )
                except KubeApiError as exc:
                    if exc.http_status != 404:  # a node that is gone has no labels left
                        raise
                return name
        return None

    # -- infrastructure ---------------------------------------------------------------------------
    def provision_cluster(self, progress: ProgressFn = no_progress) -> dict[str, Any]:
        cfg = self.k8s
        with self.connect() as api:
            progress(10, "connecting to the Kubernetes API server")
            version = api.server_version()
            progress(20, "discovering nodes")
            nodes = self.refresh_nodes(
                api, api.list("Node", None, self._node_selector()), register=True
            )
            docs = self.cluster_manifests()
            progress(40, f"applying {len(docs)} cluster objects", nodes=nodes["matched"])
            outcomes: Counter = Counter()
            for doc in docs:
                outcomes[self._apply(api, doc)] += 1
        url_map = self.url_map()
        config = dict(self.cluster.config or {})
        config["urlMap"] = url_map
        self.cluster.config = config
        self.cluster.save(update_fields=["config", "updated_at"])
        progress(80, f"{len(nodes['matched'])} node(s) onboarded", applied=dict(outcomes))
        log.info(
            "event=k8s_cluster_provisioned cluster_id=%s namespace=%s outcomes=%s",
            self.cluster.id,
            cfg.namespace,
            dict(outcomes),
        )
        return {
            "urlMap": url_map,
            "namespace": cfg.namespace,
            "systemNamespace": cfg.system_namespace,
            "kubernetesVersion": version.get("gitVersion"),
            "redis": {"mode": cfg.redis_mode, "url": cfg.redis_url},
            "applied": dict(outcomes),
            **nodes,
        }

    def _node_selector(self) -> dict[str, str] | None:
        if not self.k8s.node_selector:
            return None
        return dict(part.split("=", 1) for part in self.k8s.node_selector.split(","))

    def _finish_or_force(self, ids: list[str], timeout_s: float) -> list[str]:
        """Wait for removals; rows still there after the timeout are finalized anyway (their
        objects were deleted; the pods end with their grace period)."""
        try:
            self.wait_gone(ids, timeout_s=timeout_s)
            return []
        except DriverError:
            leftovers = list(Workload.objects.filter(pk__in=ids))
            for workload in leftovers:
                workload_services.finalize_removal(workload)
            return [w.id for w in leftovers]

    def teardown_cluster(
        self, progress: ProgressFn = no_progress, *, timeout_s: float = 60
    ) -> dict[str, Any]:
        cfg = self.k8s
        queryset = Workload.objects.filter(cluster=self.cluster)
        progress(20, f"removing {queryset.count()} workloads")
        removed = self.remove_workloads(queryset)
        leftovers = self._finish_or_force(removed, timeout_s)
        deleted: Counter = Counter()
        kept: list[str] = []
        with self.connect() as api:
            progress(60, "deleting the cluster's objects")
            snap = self._snapshot(api, nodes=True)
            for objects in snap.objects.values():  # orphans of this cluster, if any
                for obj in objects:
                    if api.delete(obj["kind"], cfg.namespace, obj["metadata"]["name"]):
                        deleted[obj["kind"]] += 1
            docs = self.cluster_manifests()
            namespaces = [d for d in docs if d["kind"] == "Namespace"]
            for doc in reversed([d for d in docs if d["kind"] != "Namespace"]):
                meta = doc["metadata"]
                existing = api.get(doc["kind"], meta.get("namespace"), meta["name"])
                if existing is not None and names.owned_by(existing, self.cluster.id):
                    api.delete(doc["kind"], meta.get("namespace"), meta["name"])
                    deleted[doc["kind"]] += 1
            for doc in namespaces:
                name = doc["metadata"]["name"]
                existing = api.get("Namespace", None, name)
                if existing is None or not names.owned_by(existing, self.cluster.id):
                    continue
                foreign = self._foreign_objects(api, name)
                if foreign:
                    kept.append(f"{name} (holds {', '.join(foreign[:5])})")
                    continue
                api.delete("Namespace", None, name)
                deleted["Namespace"] += 1
            for node in self.cluster.nodes.all():
                self._unlabel(api, node, snap.nodes)
        progress(90, "cluster objects deleted", deleted=dict(deleted))
        return {
            "removed_workloads": len(removed),
            "leftover_workloads": leftovers,
            "deleted": dict(deleted),
            "kept_namespaces": kept,
        }

    def _foreign_objects(self, api: KubeClient, namespace: str) -> list[str]:
        """Objects in one of our namespaces that AIOS did not create (they keep it alive)."""
        out = []
        for kind in FOREIGN_CHECK_KINDS:
            for obj in api.list(kind, namespace):
                meta = obj.get("metadata") or {}
                labels = meta.get("labels") or {}
                if kind == "ConfigMap" and meta.get("name") in SYSTEM_CONFIGMAPS:
                    continue
                if labels.get(names.MANAGED_BY) == names.MANAGED_BY_VALUE:
                    continue
                if kind == "Pod" and meta.get("ownerReferences"):
                    # Pods of our objects carry our labels; owned pods of foreign ones count
                    # through their owners.
                    continue
                out.append(f"{kind} {meta.get('name')}")
        return out

    def add_node(self, node: Node, progress: ProgressFn = no_progress) -> dict[str, Any]:
        with self.connect() as api:
            progress(30, f"looking for node {node.id} in the Kubernetes API")
            report = self.refresh_nodes(
                api, api.list("Node", None, self._node_selector()), register=False
            )
            self._apply_node_ids(api)
        node.refresh_from_db()
        k8s_name = report["matched"].get(node.id)
        progress(
            60,
            f"node {node.id} is Kubernetes node {k8s_name}"
            if k8s_name
            else node.status_message or f"no Kubernetes node matches {node.id} yet",
        )
        return {
            "node_id": node.id,
            "kubernetes_node": k8s_name,
            "ready": node.status == NodeStatus.READY,
            "message": node.status_message,
            "conflicts": report["conflicts"],
        }

    def remove_node(
        self, node: Node, progress: ProgressFn = no_progress, *, timeout_s: float = 60
    ) -> dict[str, Any]:
        queryset = Workload.objects.filter(node=node)
        progress(20, f"removing {queryset.count()} workloads from {node.id}")
        removed = self.remove_workloads(queryset)
        leftovers = self._finish_or_force(removed, timeout_s)
        with self.connect() as api:
            unlabelled = self._unlabel(api, node, api.list("Node", None))
            self._apply_node_ids(api, exclude=node.id)
        return {
            "removed_workloads": len(removed),
            "leftover_workloads": leftovers,
            "kubernetes_node": unlabelled,
        }

    # -- status ---------------------------------------------------------------------------------
    def sync(self, *, reconcile: bool = True) -> dict[str, Any]:
        """Read the cluster back into the rows; with ``reconcile``, also re-apply what is
        missing or stale, finish removals and delete orphans (the periodic entry point)."""
        with self.connect() as api:
            snap = self._snapshot(api)
            nodes = self.refresh_nodes(api, snap.nodes, register=False)
            workloads = self._observe_workloads(snap)
            actions = self._reconcile(api, snap) if reconcile else {}
            if reconcile and (nodes["matched"] or nodes["unmatched"]):
                self._apply_node_ids(api)
        return {"nodes": nodes, "workloads": workloads, "actions": actions}

    def status(self) -> dict[str, Any]:
        cfg = None
        doc: dict[str, Any] = {
            "driver": self.name,
            "cluster_id": self.cluster.id,
            "cluster_status": self.cluster.status,
        }
        try:
            cfg = self.k8s
            doc.update(
                namespace=cfg.namespace,
                system_namespace=cfg.system_namespace,
                redis={"mode": cfg.redis_mode, "url": cfg.redis_url},
            )
            observed = self.sync(reconcile=False)
            doc["api"] = {"reachable": True}
            doc["kubernetes_nodes"] = observed["nodes"]
            doc["pods"] = observed["workloads"]
        except ApiError as exc:
            # A read must not fail the admin page or the API: say what is wrong instead.
            doc["api"] = {"reachable": False, "code": exc.code, "error": exc.message}
        nodes = []
        for node in self.cluster.nodes.prefetch_related("gpus"):
            nodes.append(
                {
                    "id": node.id,
                    "status": node.status,
                    "status_message": node.status_message,
                    "schedulable": node.schedulable,
                    "kubernetes_node": ((node.node_metadata or {}).get("kubernetes") or {}).get(
                        "name"
                    ),
                    "gpus": len(node.gpus.all()),
                }
            )
        doc["nodes"] = nodes
        doc["ready_nodes"] = sum(1 for n in nodes if n["status"] == NodeStatus.READY)
        doc["workloads"] = self.workload_summary()
        return doc

    def job_result(self, workload_id: str) -> dict[str, Any]:
        """A T3 job workload's result, read back from its pod's termination message (or the
        last JSON line of its log)."""
        row = Workload.objects.filter(pk=workload_id, cluster=self.cluster).first()
        if row is None:
            raise NotFound(f"workload {workload_id!r} is not in cluster {self.cluster.id!r}")
        if row.kind != WorkloadKind.JOB:
            raise ValidationFailed(f"workload {workload_id!r} is a {row.kind}, not a job")
        with self.connect() as api:
            pods = api.list(
                "Pod", self.k8s.namespace, manifests.workload_selector(self.cluster.id, row.id)
            )
            pod = observe.ordered_pods(pods)[0] if pods else None
            text = ""
            result = observe.job_result(pod)
            if pod is not None and result["source"] is None:
                text = api.pod_log(self.k8s.namespace, pod["metadata"]["name"])
                result = observe.job_result(pod, text)
        return {"workload_id": row.id, "status": row.status, **result}


def service_dns(cluster: Cluster, workload_id: str) -> str:
    """Where pods of ``cluster`` reach a workload's Service (``<name>.<ns>.svc``)."""
    return KubernetesDriver(cluster).service_dns(workload_id)


def data_plane_redis_url(cluster: Cluster) -> str:
    """The Redis the cluster's workloads use (``config.kubernetes.redis``)."""
    return KubernetesDriver(cluster).k8s.redis_url


# Registers the periodic sync's Celery tasks wherever the driver is imported.
from apps.clusters.drivers.k8s import tasks as _tasks  # noqa: E402, F401
