"""The mapper: the executor's instance registry follows what the control plane keeps.

The control plane writes ``aios:block:{B}:instances`` when it starts or removes an instance;
the mapper re-reads the block every ``mapper_interval_s`` and repairs the hash (a lost write,
a Redis restart, an instance removed while Redis was unreachable). An entry the control plane
wrote moments ago is left alone even if the document read just before did not list it yet.
The mapper's snapshot (block document, desired instances, live ones) is what the autoscaler
and the health checker work from.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from block_sdk.block_controller.client import ControlPlaneClient
from block_sdk.queues import BlockKeys

log = logging.getLogger("block_sdk.block_controller.mapper")

FRESH_REGISTRATION_S = 5.0  # younger registry entries are not removed by a possibly stale read


def tombstone_key(keys: BlockKeys, instance_id: str) -> str:
    """Set (with a TTL) by the control plane when it removes an instance."""
    return f"{keys.base}:removed:{instance_id}"


class Mapper:
    def __init__(self, block_id: str, client: ControlPlaneClient, redis: Any, token_key: str):
        self.block_id = block_id
        self.keys = BlockKeys(block_id)
        self.client = client
        self.redis = redis
        self.token_key = token_key
        self.block: dict[str, Any] = {}
        self.desired: dict[str, dict[str, Any]] = {}
        self.alive: set[str] = set()
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.fetched_at = 0.0
        self.added = 0
        self.removed = 0

    @property
    def ready(self) -> bool:
        return bool(self.block)

    @staticmethod
    def _info(instance: dict[str, Any]) -> dict[str, Any]:
        return {
            "instance_id": instance["id"],
            "node_id": instance.get("node"),
            "gpus": instance.get("gpus") or [],
            "host": instance.get("host") or "127.0.0.1",
            "http_port": instance.get("http_port"),
        }

    async def tick(self) -> None:
        started = time.time()
        doc = await self.client.block()
        desired = {
            i["id"]: {**self._info(i), "created_at": i.get("created_at")}
            for i in doc.get("instances") or []
            if isinstance(i, dict) and i.get("id") and i.get("status") != "removing"
        }
        current_raw = await self.redis.hgetall(self.keys.instances)
        current: dict[str, dict[str, Any]] = {}
        for key, value in current_raw.items():
            try:
                info = json.loads(value)
            except ValueError:
                info = {}
            current[key.decode() if isinstance(key, bytes) else key] = (
                info if isinstance(info, dict) else {}
            )
        missing = [iid for iid in desired if iid not in current]
        removed_lately: set[str] = set()
        if missing:
            # The control plane leaves a short-lived tombstone when it removes an instance: a
            # document read just before that removal must not bring it back.
            check = self.redis.pipeline(transaction=False)
            for iid in missing:
                check.exists(tombstone_key(self.keys, iid))
            flags = await check.execute()
            removed_lately = {iid for iid, flag in zip(missing, flags, strict=True) if flag}
        pipe = self.redis.pipeline(transaction=False)
        for iid, info in desired.items():
            if iid not in current and iid not in removed_lately:
                registered = {k: v for k, v in info.items() if k != "created_at"}
                pipe.hset(
                    self.keys.instances,
                    iid,
                    json.dumps({**registered, "registered_at": time.time()}),
                )
                self.added += 1
                log.info("registry repaired: added", extra={"instance_id": iid})
        for iid, info in current.items():
            if iid in desired:
                continue
            registered_at = info.get("registered_at")
            if (
                isinstance(registered_at, int | float)
                and registered_at > started - FRESH_REGISTRATION_S
            ):
                continue
            pipe.hdel(self.keys.instances, iid)
            self.removed += 1
            log.info("registry repaired: removed", extra={"instance_id": iid})
        ids = sorted(desired)
        for iid in ids:
            pipe.get(self.keys.heartbeat(iid))
        # The service token lives as long as its block's controller keeps refreshing it.
        pipe.expire(self.token_key, 7 * 24 * 3600)
        res = await pipe.execute()
        beats = res[len(res) - len(ids) - 1 : len(res) - 1] if ids else []
        heartbeats: dict[str, dict[str, Any]] = {}
        for iid, raw in zip(ids, beats, strict=True):
            if raw is None:
                continue
            try:
                heartbeats[iid] = json.loads(raw)
            except ValueError:
                heartbeats[iid] = {}
        self.block = doc
        self.desired = desired
        self.heartbeats = heartbeats
        self.alive = set(heartbeats)
        # When the read began: a decision taken after a scale waits for a read begun after it.
        self.fetched_at = started

    def mapping(self) -> dict[str, Any]:
        return {
            "block_id": self.block_id,
            "status": self.block.get("status"),
            "desired": sorted(self.desired),
            "alive": sorted(self.alive),
            "instances": self.desired,
            "fetched_at": self.fetched_at,
            "repairs": {"added": self.added, "removed": self.removed},
        }
