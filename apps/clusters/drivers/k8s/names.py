"""Kubernetes names and labels of what the driver creates.

Workload ids may be 128 characters and contain dots; Kubernetes wants DNS-1035 labels (at
most 63 characters, starting with a letter) for Services and label values of at most 63
characters. Long or unusual ids are shortened deterministically with a hash suffix, so the
same workload always maps to the same names, and the full id is kept in an annotation.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "aios"
APP_NAME = "app.kubernetes.io/name"
APP_COMPONENT = "app.kubernetes.io/component"
PART_OF = "app.kubernetes.io/part-of"
CLUSTER_ID = "aios.io/cluster-id"
WORKLOAD_ID = "aios.io/workload-id"
BLOCK_ID = "aios.io/block-id"
INSTANCE_ID = "aios.io/instance-id"
NODE_ID = "aios.io/node-id"
KIND = "aios.io/kind"
# AIOS's original node label (reference §1.4): read when matching nodes, never written.
LEGACY_NODE_ID = "nodeID"

SPEC_HASH = "aios.io/spec-hash"
WORKLOAD_FULL_ID = "aios.io/workload"
GENERATION = "aios.io/generation"

_DNS_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_IANA_SVC_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def short_hash(value: str, length: int = 8) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:length]


def dns_label(value: str, *, prefix: str = "w", max_length: int = 63) -> str:
    """A DNS-1035 label (Service, Namespace and port-free object names) for ``value``."""
    name = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)
    if not name or not name[0].isalpha():
        name = f"{prefix}-{name}".strip("-")
    if name == value and len(name) <= max_length and _DNS_LABEL_RE.match(name):
        return name
    if len(name) > max_length or name != value:
        # Changed or too long: a hash of the original keeps distinct ids distinct.
        suffix = short_hash(value)
        name = f"{name[: max_length - len(suffix) - 1].rstrip('-')}-{suffix}"
    return name


def label_value(value: str) -> str:
    """``value`` when it is a valid label value, else a shortened, hashed form of it."""
    if len(value) <= 63 and _LABEL_VALUE_RE.match(value):
        return value
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")
    suffix = short_hash(value)
    return f"{clean[: 63 - len(suffix) - 1].rstrip('-_.')}-{suffix}".lstrip("-_.")


def port_name(name: str) -> str | None:
    """A container port name (IANA_SVC_NAME: at most 15 characters, a letter included), or
    None when the workload's name cannot be one (the port is then referred to by number)."""
    candidate = name.replace("_", "-").lower()
    if (
        len(candidate) <= 15
        and _IANA_SVC_NAME_RE.match(candidate)
        and "--" not in candidate
        and any(c.isalpha() for c in candidate)
    ):
        return candidate
    return None


def workload_object_name(workload_id: str) -> str:
    """The name of every object of one workload (Deployment, Service, Job, HPA)."""
    return dns_label(workload_id)


def namespace_name(cluster_id: str) -> str:
    return dns_label(f"aios-{cluster_id}")


def system_namespace_name(cluster_id: str) -> str:
    return dns_label(f"aios-{cluster_id}-system")


def cluster_scoped_name(cluster_id: str, what: str) -> str:
    return dns_label(f"aios-{cluster_id}-{what}")


def spec_hash(obj: dict[str, Any]) -> str:
    """The hash of a manifest without its own hash annotation: equal hashes, equal specs."""
    clean = json.loads(json.dumps(obj, sort_keys=True))
    clean.get("metadata", {}).get("annotations", {}).pop(SPEC_HASH, None)
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()[:20]


def owned_by(obj: dict[str, Any] | None, cluster_id: str) -> bool:
    """An object is AIOS's (this cluster's) when it carries both ownership labels."""
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY) == MANAGED_BY_VALUE and labels.get(CLUSTER_ID) == label_value(
        cluster_id
    )
