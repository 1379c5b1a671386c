"""The node-metrics agent loop: sample every ``interval_s``, push what is buffered.

Each tick takes one sample with ``block_sdk.node_agent.hardware.HardwareSampler`` (psutil;
NVML only when ``pynvml`` imports and a GPU exists) into a bounded buffer, then pushes the
buffer, oldest first, to ``POST /api/v1/metrics/nodes/<id>/report/``. A failed push leaves
the samples buffered and waits with capped exponential back-off; sampling goes on, and the
buffer drops its oldest samples when full. Every wait is an ``Event.wait`` with a timeout, so
SIGTERM ends the loop at once: one last push (bounded by the HTTP timeout), then exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from block_sdk.node_metrics.buffer import Backoff, SampleBuffer
from block_sdk.node_metrics.config import AgentConfig, ConfigError, load_config
from block_sdk.node_metrics.health import HealthServer
from block_sdk.node_metrics.pusher import DELIVERED, REJECTED, Pusher, PushOutcome, agent_info

log = logging.getLogger("aios.node_metrics")


def use_host_root(host_root: str) -> str:
    """Point psutil at the host's ``/proc`` when the host's ``/`` is mounted (DaemonSet);
    returns the path whose disk is reported."""
    if not host_root:
        return "/"
    proc = Path(host_root) / "proc"
    if (proc / "stat").is_file():
        import psutil

        psutil.PROCFS_PATH = str(proc)  # Linux only; the DaemonSet runs on Linux nodes
    return host_root if Path(host_root).is_dir() else "/"


class NodeMetricsAgent:
    def __init__(self, config: AgentConfig, sampler: Any = None) -> None:
        self.config = config
        self.stop_event = threading.Event()
        self.buffer = SampleBuffer(config.buffer_size)
        self.backoff = Backoff(config.backoff_initial_s, config.backoff_max_s)
        self.pusher = Pusher(config.report_url, config.timeout_s)
        if sampler is None:
            from block_sdk.node_agent.hardware import HardwareSampler

            disk_path = use_host_root(config.host_root)
            sampler = HardwareSampler(declared_gpus=config.declared_gpus, disk_path=disk_path)
        self.sampler = sampler
        self.node_id = ""
        self.started = time.time()
        self.last_sample_at: float | None = None
        self.last_push_at: float | None = None
        self.last_error = ""
        self.last_status: int | None = None
        self.pushed = 0
        self.rejected = 0
        self.sample_errors = 0
        self.push_not_before = 0.0  # monotonic; set by back-off
        self._missing_node_logged = False

    # -- state for /health and /metrics ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        since = self.last_sample_at or self.started
        # Alive while samples keep coming (a stuck psutil call or a dead loop is unhealthy).
        healthy = now - since <= max(3 * self.config.interval_s, 30.0)
        status = "ok" if healthy else "stalled"
        if not self.node_id:
            status = "waiting_for_node_id"
        return {
            "healthy": healthy,
            "status": status,
            "node_id": self.node_id,
            "cluster_id": self.config.cluster_id,
            "buffered": len(self.buffer),
            "buffer_size": self.buffer.capacity,
            "dropped": self.buffer.dropped,
            "pushed": self.pushed,
            "rejected": self.rejected,
            "sample_errors": self.sample_errors,
            "consecutive_failures": self.backoff.failures,
            "last_sample_at": self.last_sample_at,
            "last_push_at": self.last_push_at,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "uptime_s": round(now - self.started, 1),
        }

    def prometheus(self) -> str:
        snap = self.snapshot()
        labels = f'node="{snap["node_id"]}"'
        lines = []
        for name, kind, value in (
            ("aios_node_metrics_buffered", "gauge", snap["buffered"]),
            ("aios_node_metrics_dropped_total", "counter", snap["dropped"]),
            ("aios_node_metrics_pushed_total", "counter", snap["pushed"]),
            ("aios_node_metrics_rejected_total", "counter", snap["rejected"]),
            ("aios_node_metrics_push_failures", "gauge", snap["consecutive_failures"]),
        ):
            lines += [f"# TYPE {name} {kind}", f"{name}{{{labels}}} {value}"]
        return "\n".join(lines) + "\n"

    # -- the loop -----------------------------------------------------------------------------
    def sample_once(self) -> None:
        try:
            doc = self.sampler.sample()
        except Exception as exc:  # one bad read must not stop the agent
            self.sample_errors += 1
            log.warning("sample_failed", extra={"error": repr(exc)})
            return
        self.last_sample_at = time.time()
        lost = self.buffer.append(doc)
        if lost:
            log.warning(
                "buffer_full",
                extra={
                    "dropped": lost,
                    "dropped_total": self.buffer.dropped,
                    "buffered": len(self.buffer),
                },
            )

    def _resolve_node(self) -> bool:
        if not self.node_id:
            self.node_id = self.config.resolve_node_id()
            if self.node_id:
                log.info("node_resolved", extra={"node_id": self.node_id})
            elif not self._missing_node_logged:
                self._missing_node_logged = True
                log.warning(
                    "node_id_unknown",
                    extra={
                        "k8s_node": self.config.k8s_node_name,
                        "file": self.config.node_id_file,
                    },
                )
        return bool(self.node_id)

    def flush(self, *, final: bool = False) -> None:
        """Push the buffer, a batch at a time, until it is empty or a push fails."""
        while len(self.buffer) and (final or not self.stop_event.is_set()):
            if not self._resolve_node():
                return
            batch = self.buffer.oldest(self.config.batch_size)
            outcome = self.pusher.push(
                self.node_id,
                self.config.cluster_id,
                batch,
                self.config.current_token(),
                agent_info(len(self.buffer), self.buffer.dropped),
            )
            self.last_status = outcome.status
            if outcome.kind == DELIVERED:
                self.buffer.discard_oldest(len(batch))
                self.pushed += len(batch)
                self.last_push_at = time.time()
                if self.backoff.failures:
                    log.info("push_recovered", extra={"after_failures": self.backoff.failures})
                self.backoff.reset()
                self.last_error = ""
                continue
            self._failed(outcome, batch)
            if outcome.kind != REJECTED or final:
                return

    def _failed(self, outcome: PushOutcome, batch: list[dict[str, Any]]) -> None:
        self.last_error = f"{outcome.status or 'no answer'}: {outcome.message}"[:500]
        if outcome.kind == REJECTED:
            # Resending the same content cannot succeed; keeping it would block the buffer.
            self.buffer.discard_oldest(len(batch))
            self.rejected += len(batch)
            log.error(
                "push_rejected",
                extra={"status": outcome.status, "samples": len(batch), "error": outcome.message},
            )
            return
        delay = self.backoff.next_delay()
        self.push_not_before = time.monotonic() + delay
        log.warning(
            "push_failed",
            extra={
                "status": outcome.status,
                "error": outcome.message,
                "retry_in_s": round(delay, 2),
                "buffered": len(self.buffer),
                "failures": self.backoff.failures,
            },
        )

    def run(self) -> int:
        interval = self.config.interval_s
        next_sample = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now >= next_sample:
                self.sample_once()
                next_sample += interval
                if next_sample <= now:  # fell behind (suspended, slow read): no burst
                    next_sample = now + interval
            if len(self.buffer) and time.monotonic() >= self.push_not_before:
                self.flush()
            if self.config.once:
                break
            wake = next_sample
            if len(self.buffer) and self.push_not_before > time.monotonic():
                wake = min(wake, self.push_not_before)
            self.stop_event.wait(max(0.0, wake - time.monotonic()))
        if len(self.buffer) and not self.config.once:
            self.flush(final=True)  # one bounded last try: the HTTP timeout caps it
        return 0

    def stop(self, *_args: Any) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.pusher.close()


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        sys.stderr.write(f"node-metrics: {exc}\n")
        return 2
    from block_sdk.metrics import configure_logging

    configure_logging({"service": "node-metrics"}, level=config.log_level)
    agent = NodeMetricsAgent(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, agent.stop)
    health = None
    if not config.once:
        try:
            health = HealthServer(
                config.health_host, config.health_port, agent.snapshot, agent.prometheus
            )
        except OSError as exc:
            log.error("health_bind_failed", extra={"port": config.health_port, "error": repr(exc)})
            return 1
        health.start()
    log.info(
        "node_metrics_started",
        extra={
            "node_id": config.node_id or f"(from {config.node_id_file})",
            "cluster_id": config.cluster_id,
            "url": config.control_plane_url,
            "interval_s": config.interval_s,
            "buffer_size": config.buffer_size,
            "health_port": health.port if health else None,
            "pid": os.getpid(),
        },
    )
    try:
        code = agent.run()
    finally:
        if health is not None:
            with contextlib.suppress(Exception):
                health.close()
        agent.close()
    if config.once and agent.pushed == 0:
        code = 1  # --once is a check: it fails when nothing was delivered
    log.info(
        "node_metrics_stopped",
        extra={
            "pushed": agent.pushed,
            "dropped": agent.buffer.dropped,
            "buffered": len(agent.buffer),
        },
    )
    return code
