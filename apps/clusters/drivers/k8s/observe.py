"""Read back what Kubernetes runs: pods and Jobs -> workload status, nodes -> node facts.

Pure functions of API objects (dicts). The status values are the local driver's
(``apps.clusters.choices.WorkloadStatus``), so blocks, the admin and the API read a
Kubernetes workload exactly like a process started by a node agent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from apps.clusters.choices import DesiredState, RestartPolicy, WorkloadStatus
from apps.clusters.drivers.k8s import names

GPU_RESOURCE = "nvidia.com/gpu"
# Waiting reasons that are only a container on its way up.
STARTING_REASONS = frozenset({"ContainerCreating", "PodInitializing"})


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def _main_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def pod_restarts(pod: dict[str, Any]) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


def pod_ready(pod: dict[str, Any]) -> bool:
    cond = _condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True")


def ordered_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ready pods first, then the most recently created (a replacement after a crash)."""
    by_age = sorted(
        pods,
        key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "",
        reverse=True,
    )
    return sorted(by_age, key=lambda p: 0 if pod_ready(p) else 1)


def _terminated_message(state: dict[str, Any]) -> str:
    term = state.get("terminated") or {}
    if not term:
        return ""
    parts = [str(term.get("reason") or "terminated")]
    if term.get("exitCode") is not None:
        parts.append(f"exit code {term['exitCode']}")
    text = ", ".join(parts)
    if term.get("message"):
        text += f": {str(term['message']).strip()[-1500:]}"
    return text


@dataclass
class Observation:
    """What one workload looks like on the cluster, in ``Workload`` field names."""

    status: str
    restarts: int = 0
    exit_code: int | None = None
    last_error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)

    def fields(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "last_error": self.last_error[:4000],
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "pid": None,
        }


def pod_summary(pod: dict[str, Any], node_ids: dict[str, str]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    k8s_node = spec.get("nodeName") or ""
    return {
        "name": meta.get("name"),
        "phase": (pod.get("status") or {}).get("phase"),
        "ready": pod_ready(pod),
        "restarts": pod_restarts(pod),
        "kubernetes_node": k8s_node or None,
        "node_id": node_ids.get(k8s_node),
        "pod_ip": (pod.get("status") or {}).get("podIP"),
    }


def observe_deployment(
    pods: list[dict[str, Any]],
    *,
    desired_state: str,
    restart_policy: str,
    max_restarts: int,
    deployment: dict[str, Any] | None = None,
) -> Observation:
    """A Deployment-backed workload. Kubernetes restarts containers in place whatever the
    row says; a row that asked for ``never`` (or ``on-failure`` with ``max_restarts``) is
    reported ``failed`` once it has crashed that often, as the node agent would, so the
    block's health checker replaces it."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if desired_state != DesiredState.RUNNING:
        return Observation(WorkloadStatus.STOPPED, pods=live)
    if not live:
        message = ""
        failure = _condition(deployment or {}, "ReplicaFailure")
        if failure and failure.get("status") == "True":
            message = str(failure.get("message") or failure.get("reason") or "")
        return Observation(WorkloadStatus.PENDING, last_error=message)
    pod = ordered_pods(live)[0]
    status_doc = pod.get("status") or {}
    main = _main_status(pod)
    restarts = pod_restarts(pod)
    state = main.get("state") or {}
    last_state = main.get("lastState") or {}
    last_exit = (last_state.get("terminated") or {}).get("exitCode")
    started = parse_time((state.get("running") or {}).get("startedAt")) or parse_time(
        status_doc.get("startTime")
    )
    limit = 1 if restart_policy == RestartPolicy.NEVER else max_restarts
    if restart_policy != RestartPolicy.ALWAYS and limit and restarts >= limit:
        return Observation(
            WorkloadStatus.FAILED,
            restarts=restarts,
            exit_code=last_exit,
            last_error=_terminated_message(last_state) or "the container exited",
            pods=live,
        )
    waiting = state.get("waiting") or {}
    phase = status_doc.get("phase")
    if phase == "Pending":
        scheduled = _condition(pod, "PodScheduled")
        if scheduled and scheduled.get("status") == "False":
            return Observation(
                WorkloadStatus.PENDING,
                restarts=restarts,
                last_error=str(scheduled.get("message") or scheduled.get("reason") or ""),
                pods=live,
            )
    if waiting and waiting.get("reason") not in STARTING_REASONS:
        # CrashLoopBackOff, ImagePullBackOff, CreateContainerConfigError, ...
        reason = str(waiting.get("reason") or "waiting")
        message = str(waiting.get("message") or "") or _terminated_message(last_state)
        return Observation(
            WorkloadStatus.BACKOFF,
            restarts=restarts,
            exit_code=last_exit,
            last_error=f"{reason}: {message}".rstrip(": "),
            pods=live,
        )
    if phase in ("Failed", "Succeeded"):  # evicted or done: the ReplicaSet replaces it
        return Observation(
            WorkloadStatus.PENDING,
            restarts=restarts,
            last_error=str(status_doc.get("message") or status_doc.get("reason") or phase),
            pods=live,
        )
    if state.get("running") and pod_ready(pod):
        return Observation(
            WorkloadStatus.RUNNING,
            restarts=restarts,
            exit_code=last_exit,
            started_at=started,
            pods=live,
        )
    if state.get("running") or waiting:
        return Observation(
            WorkloadStatus.STARTING, restarts=restarts, exit_code=last_exit, pods=live
        )
    return Observation(WorkloadStatus.PENDING, restarts=restarts, pods=live)


def observe_job(
    job: dict[str, Any] | None, pods: list[dict[str, Any]], *, desired_state: str
) -> Observation:
    if job is None:
        return Observation(WorkloadStatus.PENDING)
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    failed_pods = int(status.get("failed") or 0)
    newest = ordered_pods(pods)
    pod = newest[0] if newest else None
    main = _main_status(pod) if pod else {}
    state = main.get("state") or {}
    term = state.get("terminated") or {}
    if int(status.get("succeeded") or 0) >= 1:
        return Observation(
            WorkloadStatus.EXITED,
            restarts=failed_pods,
            exit_code=0,
            started_at=parse_time(status.get("startTime")),
            finished_at=parse_time(status.get("completionTime")),
            pods=pods,
        )
    failed = _condition(job, "Failed")
    if failed and failed.get("status") == "True":
        detail = _terminated_message(state)
        message = str(failed.get("message") or failed.get("reason") or "the job failed")
        return Observation(
            WorkloadStatus.FAILED,
            restarts=failed_pods,
            exit_code=term.get("exitCode", 1),
            last_error=f"{message}; {detail}" if detail else message,
            started_at=parse_time(status.get("startTime")),
            finished_at=parse_time(failed.get("lastTransitionTime")),
            pods=pods,
        )
    if spec.get("suspend") or desired_state != DesiredState.RUNNING:
        return Observation(WorkloadStatus.STOPPED, restarts=failed_pods, pods=pods)
    if int(status.get("active") or 0) and pod is not None:
        running = bool(state.get("running"))
        return Observation(
            WorkloadStatus.RUNNING if running else WorkloadStatus.STARTING,
            restarts=failed_pods,
            started_at=parse_time(status.get("startTime")),
            pods=pods,
        )
    return Observation(WorkloadStatus.PENDING, restarts=failed_pods, pods=pods)


def job_result(pod: dict[str, Any] | None, log_text: str = "") -> dict[str, Any]:
    """A T3 job's result: the JSON its process wrote to the termination message
    (``$AIOS_RESULT_PATH``), else the last JSON line of its log."""
    main = _main_status(pod) if pod else {}
    term = (main.get("state") or {}).get("terminated") or {}
    raw = str(term.get("message") or "").strip()
    source = "termination-message" if raw else ""
    if not raw and log_text:
        lines = [line.strip() for line in log_text.splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith(("{", "[")):
                raw, source = line, "log"
                break
        if not raw and lines:
            raw, source = lines[-1], "log"
    result: Any = None
    parsed = False
    if raw:
        try:
            result, parsed = json.loads(raw), True
        except ValueError:
            result = raw
    return {
        "exit_code": term.get("exitCode"),
        "source": source or None,
        "json": parsed,
        "result": result,
        "raw": raw[-4000:],
    }


# -- nodes ----------------------------------------------------------------------------------
_QUANTITY_RE = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}


def quantity(value: Any) -> float:
    """A Kubernetes quantity (``"3920m"``, ``"16Gi"``, ``"4"``) as a number of base units."""
    if value is None:
        return 0.0
    match = _QUANTITY_RE.match(str(value).strip())
    if not match:
        return 0.0
    number, suffix = float(match.group(1)), match.group(2)
    if suffix == "m":
        return number / 1000
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    return number * _DECIMAL.get(suffix, 1)


def _mb(value: Any) -> int:
    return int(quantity(value) // 2**20)


@dataclass
class NodeFacts:
    name: str
    ready: bool
    unschedulable: bool
    message: str
    vcpus: float
    memory_mb: int
    storage_mb: int
    gpu_count: int
    gpu_model: str
    gpu_memory_mb: int
    labels: dict[str, str]
    metadata: dict[str, Any]


def node_facts(node: dict[str, Any]) -> NodeFacts:
    meta = node.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    status = node.get("status") or {}
    capacity = status.get("capacity") or {}
    allocatable = status.get("allocatable") or {}
    ready_cond = _condition(node, "Ready")
    ready = bool(ready_cond and ready_cond.get("status") == "True")
    unschedulable = bool((node.get("spec") or {}).get("unschedulable"))
    message = ""
    if not ready:
        message = str((ready_cond or {}).get("message") or "the node is not Ready")
    elif unschedulable:
        message = "the node is cordoned (unschedulable)"
    gpu_count = int(quantity(capacity.get(GPU_RESOURCE)))
    # GPU feature discovery (installed with the GPU operator) labels model and memory (MiB).
    gpu_model = labels.get("nvidia.com/gpu.product", "")
    gpu_memory = int(quantity(labels.get("nvidia.com/gpu.memory"))) if gpu_model else 0
    info = status.get("nodeInfo") or {}
    metadata = {
        "name": meta.get("name"),
        "capacity": {
            "cpu": quantity(capacity.get("cpu")),
            "memory_mb": _mb(capacity.get("memory")),
            "gpus": gpu_count,
            "pods": int(quantity(capacity.get("pods"))),
        },
        "allocatable": {
            "cpu": quantity(allocatable.get("cpu")),
            "memory_mb": _mb(allocatable.get("memory")),
            "gpus": int(quantity(allocatable.get(GPU_RESOURCE))),
            "pods": int(quantity(allocatable.get("pods"))),
        },
        "kubeletVersion": info.get("kubeletVersion"),
        "osImage": info.get("osImage"),
        "architecture": info.get("architecture"),
        "unschedulable": unschedulable,
        "ready": ready,
        "zone": labels.get("topology.kubernetes.io/zone"),
        "instanceType": labels.get("node.kubernetes.io/instance-type"),
    }
    return NodeFacts(
        name=str(meta.get("name") or ""),
        ready=ready,
        unschedulable=unschedulable,
        message=message,
        vcpus=quantity(capacity.get("cpu")),
        memory_mb=_mb(capacity.get("memory")),
        storage_mb=_mb(capacity.get("ephemeral-storage")),
        gpu_count=gpu_count,
        gpu_model=gpu_model,
        gpu_memory_mb=gpu_memory,
        labels=labels,
        metadata=metadata,
    )


def aios_node_label(labels: dict[str, str]) -> str:
    return labels.get(names.NODE_ID) or labels.get(names.LEGACY_NODE_ID) or ""
