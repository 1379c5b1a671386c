"""What vDAG controllers report, brought into the control plane by pulling (controllers need
no credential and the control plane stays off the inference path):

- **quality samples**: each controller appends recorded request/response pairs to a bounded
  Redis stream (``aios:vdag:{<controller_id>}:quality``); ``collect_quality`` copies new
  entries into ``QualitySample`` rows (idempotent: a cursor per controller, and a unique
  (controller, stream id) pair);
- **metrics history**: each controller keeps live hashes ``aios:metrics:live:vdag:<uri>`` and
  ``aios:metrics:live:vdag_controller:<id>`` (with a TTL); ``collect_metrics`` records fresh
  ones through the metrics system (latest row + throttled history in PostgreSQL).

``collect_all`` runs both for every controller (a Celery beat task calls it).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, transaction

from apps.vdags.models import QualitySample, VDagController

log = logging.getLogger("aios.vdags.telemetry")

QUALITY_BATCH = 500
LIVE_KEY = "aios:metrics:live:{}:{}"
# A live hash older than this is a stopped controller's leftover: not history.
FRESH_S = 60.0


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)


def controller_prefix(controller_id: str) -> str:
    """The controller process's Redis prefix (``ControllerConfig.redis_prefix``)."""
    return f"aios:vdag:{{{controller_id}}}"


def quality_stream(controller_id: str) -> str:
    return f"{controller_prefix(controller_id)}:quality"


def _next_id(stream_id: str) -> str:
    """The smallest stream id after ``stream_id`` (XRANGE's start is inclusive)."""
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _when(value: Any, stream_id: str) -> datetime:
    if isinstance(value, int | float) and math.isfinite(value):
        return datetime.fromtimestamp(value, tz=UTC)
    return datetime.fromtimestamp(int(stream_id.partition("-")[0]) / 1000, tz=UTC)


def collect_quality(controller: VDagController, *, limit: int = 10 * QUALITY_BATCH) -> int:
    """Copy the controller's new quality records into ``QualitySample``; returns how many."""
    client = _redis()
    key = quality_stream(controller.pk)
    cursor = controller.quality_cursor or "0-0"
    copied = 0
    while copied < limit:
        rows = client.xrange(key, min=_next_id(cursor), count=QUALITY_BATCH)
        if not rows:
            break
        samples = []
        for raw_id, fields in rows:
            stream_id = raw_id.decode()
            try:
                record = json.loads(fields.get(b"record", b"{}"))
            except ValueError:
                record = {}
            if not isinstance(record, dict):
                record = {}
            samples.append(
                QualitySample(
                    vdag_controller_id=controller.pk,
                    vdag_uri=str(record.get("vdag") or controller.vdag_id)[:300],
                    stream_id=stream_id,
                    ts=_when(record.get("ts"), stream_id),
                    session_id=str(record.get("session_id") or "")[:255],
                    seq_no=int(record.get("seq_no") or 0),
                    request=record.get("request") or {},
                    response=record.get("response") or {},
                    policy=str(record.get("policy") or "")[:300],
                    policy_result=record.get("policy_result") or {},
                )
            )
        cursor = samples[-1].stream_id
        try:
            with transaction.atomic():
                QualitySample.objects.bulk_create(samples, ignore_conflicts=True)
                VDagController.objects.filter(pk=controller.pk).update(quality_cursor=cursor)
        except IntegrityError:  # pragma: no cover - ignore_conflicts covers duplicates
            log.warning("event=quality_copy_failed controller=%s", controller.pk, exc_info=True)
            break
        controller.quality_cursor = cursor
        copied += len(samples)
    if copied:
        log.info("event=quality_collected controller=%s samples=%d", controller.pk, copied)
    return copied


def _numbers(raw: dict[bytes, bytes]) -> tuple[dict[str, float], float | None]:
    values: dict[str, float] = {}
    ts = None
    for key, value in raw.items():
        name = key.decode()
        try:
            number = float(value)
        except ValueError:
            continue
        if not math.isfinite(number):
            continue
        if name == "_ts":
            ts = number
        else:
            values[name] = number
    return values, ts


def collect_metrics(controller: VDagController) -> dict[str, int]:
    """Record the controller's fresh live metrics (and its vDAG's) as history."""
    from apps.core.errors import ApiError
    from apps.metrics.services import record_entity_metrics

    recorded = {}
    now = time.time()
    for entity_type, entity_id in (
        ("vdag_controller", controller.pk),
        ("vdag", controller.vdag_id),
    ):
        values, ts = _numbers(_redis().hgetall(LIVE_KEY.format(entity_type, entity_id)))
        if not values or ts is None or now - ts > FRESH_S:
            continue
        try:
            record_entity_metrics(
                entity_type,
                entity_id,
                values,
                labels={"vdag_uri": controller.vdag_id, "controller_id": controller.pk},
                ts=ts,
            )
        except ApiError as exc:  # a name the metrics system refuses: skip, keep the rest
            log.warning(
                "event=vdag_metrics_refused entity=%s:%s error=%s",
                entity_type,
                entity_id,
                exc.message,
            )
            continue
        recorded[entity_type] = len(values)
    return recorded


def collect_all(max_controllers: int = 1000) -> dict[str, int]:
    """Quality samples and metrics of every controller (bounded per run)."""
    samples = metrics = 0
    for controller in VDagController.objects.order_by("pk")[:max_controllers]:
        try:
            samples += collect_quality(controller)
            metrics += len(collect_metrics(controller))
        except redis.RedisError as exc:
            log.warning("event=vdag_collect_failed controller=%s error=%r", controller.pk, exc)
    return {"quality_samples": samples, "metrics_entities": metrics}


def forget_controller(controller_id: str) -> int:
    """Delete a removed controller's Redis keys (quota table, quality stream, health)."""
    client = _redis()
    pattern = f"{controller_prefix(controller_id)}:*".replace("{", "\\{").replace("}", "\\}")
    keys = list(client.scan_iter(match=pattern, count=500))
    keys.append(LIVE_KEY.format("vdag_controller", controller_id))
    return int(client.delete(*keys)) if keys else 0
