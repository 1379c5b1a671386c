"""The small SDK shared by third-party init workloads and the block instances that use them.

A block whose component runs a third-party system (a Triton server, vLLM, a database ...)
finds it one of two ways:

* **externally managed**: the system's address is in `blockInitData` (e.g. `triton_url`);
  nothing runs on the block's behalf.
* **managed**: an *init workload* (`python -m block_sdk.third_party.init --spec JSON`) starts
  the system, then calls `InitContext.finish(data)`. The finish data (e.g.
  `{"inference_url": "127.0.0.1:8000", "grpc_url": ..., "metrics_url": ...}`) is written to
  the Redis key `aios:block:{B}:init:finish` with a TTL that the live workload keeps
  refreshing (so a workload that dies without cleaning up stops advertising a dead system),
  and optionally to a JSON file. Instances call `wait_for_finish(block_id, timeout)` at start.
  The AIOS docs also place the finish data in `blockInitData.initContainer`; when the control
  plane merged it there, `resolve_finish_data` takes it from there without waiting.

Progress of the workload is `aios:block:{B}:init:status`: `{"stage": "begin" | "main" |
"finish" | "failed" | "stopping" | "stopped", "message", "pid", "ts"}` (same TTL rule).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from block_sdk.queues import DEFAULT_REDIS_URL, BlockKeys

log = logging.getLogger("block_sdk.third_party")

DEFAULT_TTL_S = 60.0
STAGES = ("begin", "main", "finish", "failed", "stopping", "stopped")
FINISH_FILE_ENV = "AIOS_INIT_FINISH_FILE"


class InitError(RuntimeError):
    """Base class: the third-party system of a block is not available."""


class InitFailed(InitError):
    """The init workload reported `failed`; `status` is its status document."""

    def __init__(self, message: str, status: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status or {}


class InitTimeout(InitError, TimeoutError):
    """No finish data appeared in time."""


def finish_key(block_id: str) -> str:
    return f"{BlockKeys(block_id).base}:init:finish"


def status_key(block_id: str) -> str:
    return f"{BlockKeys(block_id).base}:init:status"


def default_redis_url() -> str:
    return os.environ.get("AIOS_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def _redis(url: str) -> redis.Redis:
    # Short timeouts: these are small GET/SET calls; a dead Redis must not hang a start-up.
    return redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)


def _write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    os.replace(tmp, path)


@dataclass
class InitContext:
    """What an init workload's class receives: its block, its configuration, and `finish()`.

    `config` is the system's own configuration (from the component's init container
    metadata); `block_init_data` is the block's init data; `workdir` is a folder the system
    may use for its files (created on demand, removed by the runner when the workload ends
    if the runner created it).
    """

    block_id: str
    config: dict[str, Any] = field(default_factory=dict)
    block_init_data: dict[str, Any] = field(default_factory=dict)
    block_data: dict[str, Any] = field(default_factory=dict)
    operating_mode: str = "create"
    redis_url: str | None = None
    finish_file: str | None = None
    ttl_s: float = DEFAULT_TTL_S
    workdir: Path | None = None
    logger: logging.Logger = field(
        default_factory=lambda: logging.getLogger("block_sdk.third_party.system")
    )
    finish_data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self._client = _redis(self.redis_url) if self.redis_url else None

    @property
    def redis(self) -> redis.Redis | None:
        return self._client

    def _px(self) -> int:
        return int(self.ttl_s * 1000)

    def finish(self, data: dict[str, Any]) -> None:
        """Publish the system's connection data (URLs, ...) for the block's instances."""
        if not isinstance(data, dict):
            raise TypeError("finish data must be a JSON object (dict)")
        text = json.dumps(data)  # fails here, not in an instance, when not JSON-able
        self.finish_data = data
        if self._client is not None:
            self._client.set(finish_key(self.block_id), text, px=self._px())
        if self.finish_file:
            _write_json_atomic(Path(self.finish_file), data)
        self.status("finish", "system ready", data=data)
        log.info("finish data published", extra={"block_id": self.block_id, "data": data})

    def status(self, stage: str, message: str = "", **extra: Any) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        doc = {"stage": stage, "message": message, "pid": os.getpid(), "ts": time.time(), **extra}
        if self._client is not None:
            try:
                self._client.set(
                    status_key(self.block_id), json.dumps(doc, default=str), px=self._px()
                )
            except redis.RedisError as exc:
                log.warning("init status write failed", extra={"stage": stage, "error": str(exc)})

    def refresh(self) -> None:
        """Keep the finish/status keys alive while the workload lives (called periodically)."""
        if self._client is None:
            return
        pipe = self._client.pipeline(transaction=False)
        pipe.pexpire(finish_key(self.block_id), self._px())
        pipe.pexpire(status_key(self.block_id), self._px())
        if self.finish_data is not None:
            # Re-assert: the key may have been lost (Redis restart) while the system lives.
            pipe.set(
                finish_key(self.block_id), json.dumps(self.finish_data), px=self._px(), nx=True
            )
        pipe.execute()

    def clear(self) -> None:
        """Withdraw the finish data: the system is going away."""
        self.finish_data = None
        if self._client is not None:
            with contextlib.suppress(redis.RedisError):
                self._client.delete(finish_key(self.block_id))
        if self.finish_file:
            with contextlib.suppress(FileNotFoundError):
                Path(self.finish_file).unlink()

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()


def read_finish(
    block_id: str, *, redis_url: str | None = None, finish_file: str | None = None
) -> dict[str, Any] | None:
    """The published finish data, or None (no waiting)."""
    client = _redis(redis_url or default_redis_url())
    try:
        raw = client.get(finish_key(block_id))
    finally:
        client.close()
    if raw:
        return json.loads(raw)
    path = finish_file or os.environ.get(FINISH_FILE_ENV)
    if path and Path(path).is_file():
        return json.loads(Path(path).read_text())
    return None


def read_status(block_id: str, *, redis_url: str | None = None) -> dict[str, Any] | None:
    client = _redis(redis_url or default_redis_url())
    try:
        raw = client.get(status_key(block_id))
    finally:
        client.close()
    return json.loads(raw) if raw else None


def wait_for_finish(
    block_id: str,
    timeout: float,
    *,
    redis_url: str | None = None,
    finish_file: str | None = None,
    poll_s: float = 0.2,
) -> dict[str, Any]:
    """Wait until the block's init workload has published its finish data; return it.

    Raises `InitFailed` as soon as the workload reports `failed`, `InitTimeout` (a
    TimeoutError) after `timeout` seconds, saying the last stage seen.
    """
    url = redis_url or default_redis_url()
    path = finish_file or os.environ.get(FINISH_FILE_ENV)
    client = _redis(url)
    deadline = time.monotonic() + max(0.0, timeout)
    last_status: dict[str, Any] | None = None
    last_error = ""
    try:
        while True:
            try:
                raw, status_raw = client.mget(finish_key(block_id), status_key(block_id))
                if raw:
                    return json.loads(raw)
                last_status = json.loads(status_raw) if status_raw else None
                if last_status and last_status.get("stage") == "failed":
                    raise InitFailed(
                        f"the init workload of block {block_id} failed: "
                        f"{last_status.get('message') or 'no reason given'}",
                        last_status,
                    )
            except redis.RedisError as exc:
                last_error = str(exc)
            if path and Path(path).is_file():
                with contextlib.suppress(ValueError, OSError):
                    return json.loads(Path(path).read_text())
            if time.monotonic() >= deadline:
                stage = (last_status or {}).get("stage", "none (no init workload has reported)")
                extra = f"; last Redis error: {last_error}" if last_error else ""
                raise InitTimeout(
                    f"the init workload of block {block_id} published no finish data within "
                    f"{timeout:.0f}s (last stage: {stage}){extra}"
                )
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
    finally:
        client.close()


def resolve_finish_data(
    block_id: str,
    init_data: dict[str, Any],
    timeout: float,
    *,
    redis_url: str | None = None,
    finish_file: str | None = None,
) -> dict[str, Any]:
    """Finish data merged into `blockInitData.initContainer` by the control plane, else
    `wait_for_finish`."""
    merged = init_data.get("initContainer") if isinstance(init_data, dict) else None
    if isinstance(merged, dict) and merged:
        return merged
    return wait_for_finish(
        block_id,
        timeout,
        redis_url=redis_url or init_data.get("init_redis_url"),
        finish_file=finish_file or init_data.get("init_finish_file"),
    )
