"""Configuration of the node-metrics agent: environment (the DaemonSet's contract) + flags.

Environment (flags of the same meaning win):

==============================  =================================================================
``AIOS_NODE_ID``                this node's AIOS id; or, on Kubernetes, the next two
``AIOS_K8S_NODE_NAME``          the Kubernetes node name (downward API ``spec.nodeName``) ...
``AIOS_NODE_ID_FILE``           ... looked up in this JSON map of node names to AIOS node ids
                                (the driver's ``aios-node-ids`` ConfigMap); re-read until the
                                node appears in it
``AIOS_CLUSTER_ID``             the cluster (sent along; the control plane checks it)
``AIOS_CONTROL_PLANE_URL``      where to push (``AIOS_API_URL`` also accepted)
``AIOS_API_TOKEN``              DRF token of staff or the cluster's owner, or
``AIOS_API_TOKEN_FILE``         a file holding it (a mounted Secret; re-read on every push)
``AIOS_HOST_ROOT``              the host's ``/`` mounted read-only (``/host``): read its
                                ``/proc`` and disk instead of the container's
``AIOS_NODE_METRICS_INTERVAL_S`` sampling period (5)
``AIOS_NODE_METRICS_BUFFER``    samples kept while the control plane is away (120)
``AIOS_NODE_METRICS_BATCH``     samples per push (at most 120, the endpoint's limit)
``AIOS_NODE_METRICS_TIMEOUT_S`` HTTP timeout of one push (5)
``AIOS_NODE_METRICS_BACKOFF_MAX_S`` longest wait between failed pushes (60)
``AIOS_HEALTH_HOST``/``_PORT``  the ``/health`` listener (127.0.0.1:9109; port 0 = any free)
``AIOS_DECLARED_GPUS``          JSON list of ``{"model", "memory_mb"}``: report declared GPUs
                                instead of NVML (nodes without a GPU driver, tests)
==============================  =================================================================
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_BATCH = 120  # the control plane's MAX_REPORT_SAMPLES
DEFAULT_HEALTH_PORT = 9109


class ConfigError(ValueError):
    """The agent cannot start with this configuration (exit code 2)."""


@dataclass
class AgentConfig:
    control_plane_url: str
    node_id: str = ""
    cluster_id: str = ""
    token: str = ""
    token_file: str = ""
    k8s_node_name: str = ""
    node_id_file: str = ""
    interval_s: float = 5.0
    buffer_size: int = 120
    batch_size: int = MAX_BATCH
    timeout_s: float = 5.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    health_host: str = "127.0.0.1"
    health_port: int = DEFAULT_HEALTH_PORT
    host_root: str = ""
    declared_gpus: list[dict[str, Any]] | None = None
    log_level: str = "INFO"
    once: bool = False

    def validate(self) -> None:
        if not self.control_plane_url.startswith(("http://", "https://")):
            raise ConfigError(
                "set AIOS_CONTROL_PLANE_URL (or --control-plane-url) to the control plane's "
                f"http(s) URL, not {self.control_plane_url!r}"
            )
        if not self.node_id and not (self.k8s_node_name and self.node_id_file):
            raise ConfigError(
                "no node id: set AIOS_NODE_ID (--node-id), or AIOS_K8S_NODE_NAME with "
                "AIOS_NODE_ID_FILE"
            )
        if not (0.05 <= self.interval_s <= 3600):
            raise ConfigError("the interval must be between 0.05 and 3600 seconds")
        if not (1 <= self.buffer_size <= 100_000):
            raise ConfigError("the buffer size must be between 1 and 100000 samples")
        if not (1 <= self.batch_size <= MAX_BATCH):
            raise ConfigError(f"the batch size must be between 1 and {MAX_BATCH}")
        if not (0.1 <= self.timeout_s <= 120):
            raise ConfigError("the timeout must be between 0.1 and 120 seconds")
        if not (0 <= self.health_port <= 65535):
            raise ConfigError("the health port must be between 0 and 65535")

    @property
    def report_url(self) -> str:
        return f"{self.control_plane_url.rstrip('/')}/api/v1/metrics/nodes/{{node_id}}/report/"

    def current_token(self) -> str:
        """The token; from the file when one is named (so a rotated Secret is picked up)."""
        if self.token_file:
            try:
                return Path(self.token_file).read_text(encoding="utf-8").strip()
            except OSError:
                return self.token
        return self.token

    def resolve_node_id(self) -> str:
        """The AIOS node id, or "" while the node-name map does not list this node yet."""
        if self.node_id:
            return self.node_id
        try:
            mapping = json.loads(Path(self.node_id_file).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
        value = mapping.get(self.k8s_node_name) if isinstance(mapping, dict) else None
        return value if isinstance(value, str) else ""


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None


def _declared(raw: str | None) -> list[dict[str, Any]] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"declared GPUs are not JSON: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(g, dict) for g in value):
        raise ConfigError('declared GPUs must be a JSON list of {"model", "memory_mb"}')
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m block_sdk.node_metrics",
        description="Sample this node's hardware and push it to the AIOS control plane.",
    )
    parser.add_argument("--node-id", help="AIOS node id (default AIOS_NODE_ID)")
    parser.add_argument("--cluster-id", help="AIOS cluster id (default AIOS_CLUSTER_ID)")
    parser.add_argument("--control-plane-url", help="default AIOS_CONTROL_PLANE_URL")
    parser.add_argument("--token-file", help="file with the API token (default AIOS_API_TOKEN*)")
    parser.add_argument("--interval", type=float, help="sampling period in seconds")
    parser.add_argument("--buffer-size", type=int, help="samples kept while pushes fail")
    parser.add_argument("--batch-size", type=int, help=f"samples per push (<= {MAX_BATCH})")
    parser.add_argument("--timeout", type=float, help="HTTP timeout of one push (s)")
    parser.add_argument("--backoff-max", type=float, help="longest wait between retries (s)")
    parser.add_argument("--health-host", help="address of /health (default 127.0.0.1)")
    parser.add_argument("--health-port", type=int, help="port of /health; 0 = any free port")
    parser.add_argument("--host-root", help="the host's / mounted in the container")
    parser.add_argument("--declare-gpus", help='JSON list of {"model", "memory_mb"}')
    parser.add_argument("--log-level", help="default AIOS_LOG_LEVEL or INFO")
    parser.add_argument("--once", action="store_true", help="sample, push once, and exit")
    return parser


def load_config(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """The configuration from ``env`` (default ``os.environ``) with ``argv``'s flags on top."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)

    def pick(flag: Any, *names: str, default: str = "") -> str:
        if flag is not None:
            return str(flag)
        for name in names:
            if env.get(name):
                return env[name]
        return default

    health_port = args.health_port
    if health_port is None:
        health_port = int(_number(env, "AIOS_HEALTH_PORT", DEFAULT_HEALTH_PORT))
    config = AgentConfig(
        control_plane_url=pick(
            args.control_plane_url, "AIOS_CONTROL_PLANE_URL", "AIOS_API_URL"
        ).rstrip("/"),
        node_id=pick(args.node_id, "AIOS_NODE_ID"),
        cluster_id=pick(args.cluster_id, "AIOS_CLUSTER_ID"),
        token=env.get("AIOS_API_TOKEN", ""),
        token_file=pick(args.token_file, "AIOS_API_TOKEN_FILE"),
        k8s_node_name=env.get("AIOS_K8S_NODE_NAME", ""),
        node_id_file=env.get("AIOS_NODE_ID_FILE", ""),
        interval_s=args.interval or _number(env, "AIOS_NODE_METRICS_INTERVAL_S", 5.0),
        buffer_size=args.buffer_size or int(_number(env, "AIOS_NODE_METRICS_BUFFER", 120)),
        batch_size=args.batch_size or int(_number(env, "AIOS_NODE_METRICS_BATCH", MAX_BATCH)),
        timeout_s=args.timeout or _number(env, "AIOS_NODE_METRICS_TIMEOUT_S", 5.0),
        backoff_max_s=args.backoff_max or _number(env, "AIOS_NODE_METRICS_BACKOFF_MAX_S", 60.0),
        health_host=pick(args.health_host, "AIOS_HEALTH_HOST", default="127.0.0.1"),
        health_port=health_port,
        host_root=pick(args.host_root, "AIOS_HOST_ROOT"),
        declared_gpus=_declared(pick(args.declare_gpus, "AIOS_DECLARED_GPUS") or None),
        log_level=pick(args.log_level, "AIOS_LOG_LEVEL", default="INFO"),
        once=bool(args.once),
    )
    config.backoff_initial_s = min(1.0, config.interval_s)
    config.validate()
    return config
