"""Periodic upkeep of the metrics history (scheduled from ``MetricsConfig.ready``)."""

from __future__ import annotations

from celery import shared_task

from apps.metrics import services


@shared_task(name="aios.metrics.downsample", ignore_result=True)
def downsample() -> dict[str, int]:
    return services.downsample_and_prune()
