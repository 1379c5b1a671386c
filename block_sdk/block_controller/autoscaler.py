"""The autoscaler: the block's ``autoscaler`` policy on live metrics, then a scale request.

Metrics each round (Redis only, no control-plane call): requests waiting + in processing per
instance (``q:``/``proc:`` list lengths), the executors' snapshots (latency EWMA, requests
total → throughput, awaited requests), instance heartbeats (processed/errors counters), and
the CPU use of the instances that run on the controller's own node (``cpu_percent``,
``cpu_utilization`` 0..1).

Two policy shapes are understood:

* the built-in ``aios.autoscaler_queue_latency`` answers
  ``{"action": "scale_up" | "scale_down" | "none", "instances": N}``;
* AIOS policies answer ``{"skip": true}``, ``{"skip": false, "operation": "upscale",
  "instances_count": n}`` or ``{"skip": false, "operation": "downscale",
  "instances_list": [ids]}``.

Whatever a policy says, the request never leaves ``minInstances``..``maxInstances`` (the
control plane checks again), and the rule's ``settings.scale_up_cooldown`` /
``scale_down_cooldown`` (seconds since the last scale of the block, by anyone) are honoured
here too. ``settings.enabled: false`` turns the loop off.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psutil

from block_sdk.block_controller.client import ControlPlaneClient, ControlPlaneError
from block_sdk.block_controller.mapper import Mapper
from block_sdk.block_controller.policies import PolicyHandle
from block_sdk.queues import BlockKeys

log = logging.getLogger("block_sdk.block_controller.autoscaler")

MAX_EXECUTOR_SNAPSHOTS = 64


@dataclass
class Decision:
    operation: str  # "upscale" | "downscale"
    target: int
    remove: list[str] | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "target": self.target,
            "remove": self.remove,
            "reason": self.reason,
        }


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def normalize(result: Any, current: int, lo: int, hi: int) -> Decision | None:
    """A policy's answer as a decision within ``lo``..``hi``; None when nothing changes."""
    if not isinstance(result, dict):
        raise ValueError(f"autoscaler policy returned {type(result).__name__}, expected an object")
    reason = str(result.get("reason") or "")
    remove: list[str] | None = None
    if "action" in result:  # the built-in's shape: the count wanted after the action
        action = result.get("action")
        if action in (None, "none", "skip"):
            return None
        target = _int(result.get("instances"))
        if target is None:
            raise ValueError("autoscaler result has no whole 'instances' count")
    else:  # the AIOS shape
        if result.get("skip", True):
            return None
        operation = result.get("operation")
        if operation in ("upscale", "scale_up", "scale"):
            count = _int(result.get("instances_count"))
            if count is None or count < 1:
                raise ValueError("upscale needs instances_count >= 1")
            target = current + count
        elif operation in ("downscale", "scale_down"):
            listed = result.get("instances_list")
            if isinstance(listed, list) and listed:
                remove = [str(i) for i in listed]
                target = current - len(set(remove))
            else:
                count = _int(result.get("instances_count"))
                if count is None or count < 1:
                    raise ValueError("downscale needs instances_list or instances_count")
                target = current - count
        else:
            raise ValueError(f"unknown autoscaler operation {operation!r}")
    clamped = max(lo, min(hi, target))
    if clamped != target:
        reason = f"{reason}; clamped {target} to {clamped} (bounds {lo}..{hi})".strip("; ")
        if remove is not None:
            remove = remove[: max(0, current - clamped)]
    if clamped == current:
        return None
    operation = "upscale" if clamped > current else "downscale"
    if operation == "upscale":
        remove = None
    return Decision(operation, clamped, remove or None, reason)


class Autoscaler:
    def __init__(
        self,
        block_id: str,
        client: ControlPlaneClient,
        redis: Any,
        mapper: Mapper,
        policy: PolicyHandle | None,
        *,
        cluster_id: str = "",
    ) -> None:
        self.block_id = block_id
        self.keys = BlockKeys(block_id)
        self.client = client
        self.redis = redis
        self.mapper = mapper
        self.policy = policy
        self.cluster_id = cluster_id
        settings = policy.settings if policy is not None else {}
        self.enabled = policy is not None and settings.get("enabled", True) is not False
        self.paused = False
        self.last_scale_time: float | None = None
        self.last_metrics: dict[str, Any] = {}
        self.last_decision: dict[str, Any] | None = None
        self.last_error = ""
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self._prev_total: tuple[float, int] | None = None
        self._procs: dict[str, psutil.Process] = {}

    # -- metrics ---------------------------------------------------------------------------
    async def collect(self) -> dict[str, Any]:
        ids = sorted(self.mapper.desired)
        pipe = self.redis.pipeline(transaction=False)
        for iid in ids:
            pipe.llen(self.keys.queue(iid))
            pipe.llen(self.keys.processing(iid))
        res = await pipe.execute() if ids else []
        waiting = {iid: int(res[2 * n]) for n, iid in enumerate(ids)}
        processing = {iid: int(res[2 * n + 1]) for n, iid in enumerate(ids)}
        stats = []
        pattern = f"{self.keys.base}:executor:*"
        keys = []
        async for key in self.redis.scan_iter(match=pattern, count=100):
            keys.append(key)
            if len(keys) >= MAX_EXECUTOR_SNAPSHOTS:
                break
        if keys:
            for raw in await self.redis.mget(keys):
                if raw:
                    try:
                        stats.append(json.loads(raw))
                    except ValueError:
                        continue
        now = time.time()
        total = sum(int(s.get("requests_total") or 0) for s in stats)
        errors = sum(int(s.get("errors_total") or 0) for s in stats)
        latency = max((float(s.get("latency_ewma_s") or 0) for s in stats), default=0.0)
        pending = sum(int(s.get("pending") or 0) for s in stats)
        fps = 0.0
        if self._prev_total is not None and now > self._prev_total[0]:
            fps = max(0.0, (total - self._prev_total[1]) / (now - self._prev_total[0]))
        self._prev_total = (now, total)
        heartbeats = self.mapper.heartbeats
        cpu = self._cpu_percent(heartbeats)
        metrics = {
            "current_instances": len(ids),
            "alive_instances": len(self.mapper.alive),
            "queue_lengths": {iid: waiting[iid] + processing[iid] for iid in ids},
            "waiting": waiting,
            "processing": processing,
            "queue_total": sum(waiting.values()) + sum(processing.values()),
            "latency_p50_ms": round(latency * 1000, 3) if stats else None,
            "latency_p95_ms": round(latency * 1000, 3) if stats else None,
            "fps": round(fps, 3),
            "requests_total": total,
            "errors_total": errors,
            "pending": pending,
            "instances_processed": {
                iid: int(hb.get("processed") or 0) for iid, hb in heartbeats.items()
            },
            "cpu_percent": cpu,
            "cpu_utilization": round(sum(cpu.values()) / len(cpu) / 100, 4) if cpu else None,
            "ts": now,
        }
        self.last_metrics = metrics
        return metrics

    def _cpu_percent(self, heartbeats: dict[str, dict[str, Any]]) -> dict[str, float]:
        """CPU use of the instances that run on this controller's node (their pids are
        meaningful here only); elsewhere the node metrics tell."""
        node_id = os.environ.get("AIOS_NODE_ID", "")
        out: dict[str, float] = {}
        for iid in [i for i in self._procs if i not in self.mapper.desired]:
            del self._procs[iid]
        if not node_id:
            return out
        for iid, info in self.mapper.desired.items():
            pid = (heartbeats.get(iid) or {}).get("pid")
            if info.get("node_id") != node_id or not isinstance(pid, int):
                continue
            try:
                proc = self._procs.get(iid)
                if proc is None or proc.pid != pid:
                    proc = self._procs[iid] = psutil.Process(pid)
                    proc.cpu_percent(None)  # the first reading only starts the interval
                    continue
                out[iid] = round(proc.cpu_percent(None), 2)
            except psutil.Error:
                self._procs.pop(iid, None)
        return out

    def _last_scale(self) -> float | None:
        stamps = [self.last_scale_time] if self.last_scale_time else []
        text = self.mapper.block.get("last_scale_at")
        if isinstance(text, str) and text:
            with contextlib.suppress(ValueError):
                stamps.append(datetime.fromisoformat(text).timestamp())
        return max(stamps) if stamps else None

    # -- one round -------------------------------------------------------------------------
    async def tick(self) -> dict[str, Any] | None:
        if not self.enabled or self.paused or not self.mapper.ready or self.policy is None:
            return None
        block = self.mapper.block
        if block.get("status") != "running":
            return None
        if self.last_scale_time is not None and self.mapper.fetched_at <= self.last_scale_time:
            # Decide on what the last scale produced, not on the count from before it.
            return None
        metrics = await self.collect()
        lo = int(block.get("minInstances", 0))
        hi = int(block.get("maxInstances", 1))
        current = metrics["current_instances"]
        last = self._last_scale()
        now = time.time()
        input_data = {
            **metrics,
            "last_scale_time": last,
            "now": now,
            "minInstances": lo,
            "maxInstances": hi,
            "block_data": block,
            "cluster_data": {"cluster_id": self.cluster_id or block.get("cluster")},
        }
        try:
            result = await self.policy.eval(
                input_data, parameters={"minInstances": lo, "maxInstances": hi}
            )
            decision = normalize(result, current, lo, hi)
        except Exception as exc:  # a broken policy must not stop the controller
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("autoscaler policy failed", extra={"error": self.last_error})
            return None
        record = {"ts": now, "current": current, "result": result, "decision": None}
        self.last_decision = record
        if decision is None:
            return record
        cooldown_key = (
            "scale_up_cooldown" if decision.operation == "upscale" else ("scale_down_cooldown")
        )
        cooldown = self.policy.settings.get(cooldown_key)
        if isinstance(cooldown, int | float) and last is not None and now - last < cooldown:
            record["skipped"] = f"{cooldown_key} ({now - last:.1f}s < {cooldown}s)"
            return record
        record["decision"] = decision.as_dict()
        try:
            if decision.remove:
                answer = await self.client.scale(remove=decision.remove, source="autoscaler")
            else:
                answer = await self.client.scale(instances=decision.target, source="autoscaler")
        except ControlPlaneError as exc:
            record["error"] = str(exc)
            self.last_error = str(exc)
            log.warning("scale request refused", extra={"error": str(exc)})
            self.history.append(record)
            return record
        self.last_scale_time = time.time()
        record["answer"] = answer
        self.history.append(record)
        log.info(
            "scaled",
            extra={"operation": decision.operation, "from": current, "to": decision.target},
        )
        return record

    # -- management ---------------------------------------------------------------------------
    async def management(self, action: str, data: Any) -> Any:
        if action in ("get_state", "state"):
            return self.state()
        if action == "pause":
            self.paused = True
            return {"paused": True}
        if action == "resume":
            self.paused = False
            return {"paused": False}
        if action in ("evaluate", "evaluate_now"):
            return {"round": await self.tick()}
        if action == "get_metrics":
            return await self.collect()
        if self.policy is None:
            raise ValueError(f"unknown action {action!r} and the block has no autoscaler policy")
        return {"policy": await self.policy.management(action, data)}

    def state(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "paused": self.paused,
            "policy": self.policy.describe() if self.policy else None,
            "last_scale_time": self._last_scale(),
            "last_metrics": self.last_metrics,
            "last_decision": self.last_decision,
            "last_error": self.last_error,
            "history": list(self.history)[-10:],
        }
