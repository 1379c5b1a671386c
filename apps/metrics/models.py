"""Metric storage: history in PostgreSQL (bounded by downsampling and retention) and the
latest value of each node/cluster/entity as one row each, so the query language can run over
real numbers. The live values themselves are in Redis with a TTL (``services``)."""

from __future__ import annotations

from django.db import models


class NodeMetricSample(models.Model):
    """One point of a node's history: reference metric names flattened (``vcpu.load_15m``)."""

    RAW = 0
    FIVE_MINUTES = 300

    node_id = models.CharField(max_length=63)
    cluster_id = models.CharField(max_length=63, db_index=True)
    ts = models.DateTimeField()
    resolution_s = models.PositiveIntegerField(
        default=RAW, help_text="0 = a raw sample; 300 = a five-minute average"
    )
    values = models.JSONField(default=dict)

    class Meta:
        ordering = ["node_id", "ts"]
        indexes = [models.Index(fields=["node_id", "resolution_s", "ts"])]

    def __str__(self) -> str:
        return f"{self.node_id} @ {self.ts:%Y-%m-%d %H:%M:%S} ({self.resolution_s}s)"


class LiveNodeMetrics(models.Model):
    """The latest report of each node (one row per node), for queries."""

    node_id = models.CharField(max_length=63, primary_key=True)
    cluster_id = models.CharField(max_length=63, db_index=True)
    ts = models.DateTimeField(db_index=True)
    vcpu = models.JSONField(default=dict)
    memory = models.JSONField(default=dict)
    gpus = models.JSONField(default=dict)
    disk = models.JSONField(default=dict)
    storage = models.JSONField(default=dict)
    network = models.JSONField(default=dict)
    # The whole report, so ``node.vcpu.load_15m`` resolves as well as ``vcpu.load_15m``.
    doc = models.JSONField(default=dict)

    class Meta:
        ordering = ["node_id"]
        verbose_name_plural = "live node metrics"

    def __str__(self) -> str:
        return self.node_id


class LiveClusterMetrics(models.Model):
    """The latest aggregate of each cluster over its reporting nodes, for queries."""

    cluster_id = models.CharField(max_length=63, primary_key=True)
    ts = models.DateTimeField(db_index=True)
    nodes = models.JSONField(default=dict)
    vcpu = models.JSONField(default=dict)
    memory = models.JSONField(default=dict)
    gpus = models.JSONField(default=dict)
    storage = models.JSONField(default=dict)
    network = models.JSONField(default=dict)
    # The whole aggregate, so ``cluster.gpu.totalFreeMem`` resolves as well as
    # ``gpus.totalFreeMem`` (the reference's filter examples use both).
    doc = models.JSONField(default=dict)

    class Meta:
        ordering = ["cluster_id"]
        verbose_name_plural = "live cluster metrics"

    def __str__(self) -> str:
        return self.cluster_id


class MetricSample(models.Model):
    """One point of a block / instance / vDAG / inference-server metric."""

    entity_type = models.CharField(max_length=32)
    entity_id = models.CharField(max_length=128)
    name = models.CharField(max_length=128)
    value = models.FloatField()
    labels = models.JSONField(default=dict, blank=True)
    ts = models.DateTimeField()

    class Meta:
        ordering = ["entity_type", "entity_id", "name", "ts"]
        indexes = [models.Index(fields=["entity_type", "entity_id", "name", "ts"])]

    def __str__(self) -> str:
        return f"{self.entity_type}:{self.entity_id} {self.name}={self.value}"


class LiveEntityMetrics(models.Model):
    """The latest values of one block / vDAG / ... (name -> value), for queries."""

    entity_type = models.CharField(max_length=32)
    entity_id = models.CharField(max_length=128)
    ts = models.DateTimeField(db_index=True)
    values = models.JSONField(default=dict)
    labels = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["entity_type", "entity_id"]
        verbose_name_plural = "live entity metrics"
        constraints = [
            models.UniqueConstraint(
                fields=["entity_type", "entity_id"], name="metrics_live_entity_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.entity_type}:{self.entity_id}"
