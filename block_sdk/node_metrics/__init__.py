"""The node-metrics agent: samples one node's hardware and pushes it to the control plane.

``python -m block_sdk.node_metrics`` (the ``aios-runtime node-metrics`` role; one pod per node
in the Kubernetes driver's DaemonSet). Django-free: it only needs psutil, httpx and, for GPU
metrics, ``pynvml`` when the NVIDIA runtime provides it. See ``agent.py`` for the loop.
"""

from __future__ import annotations

from block_sdk.node_metrics.buffer import Backoff, SampleBuffer
from block_sdk.node_metrics.config import AgentConfig, ConfigError

__all__ = ["AgentConfig", "Backoff", "ConfigError", "SampleBuffer"]
