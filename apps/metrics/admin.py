"""Admin pages of the metrics system (read-only: metrics are written by agents and services)."""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from apps.metrics import services
from apps.metrics.models import (
    LiveClusterMetrics,
    LiveEntityMetrics,
    LiveNodeMetrics,
    MetricSample,
    NodeMetricSample,
)


def pretty_json(value) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-width: 80em">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(NodeMetricSample)
class NodeMetricSampleAdmin(ReadOnlyAdmin):
    list_display = ("node_id", "cluster_id", "ts", "resolution_s")
    list_filter = ("resolution_s", "cluster_id")
    search_fields = ("node_id", "cluster_id")
    date_hierarchy = "ts"
    readonly_fields = ("values_pretty",)
    exclude = ("values",)
    actions = ["downsample_now"]

    @admin.display(description="values")
    def values_pretty(self, obj):
        return pretty_json(obj.values)

    @admin.action(description="Run downsampling and retention now")
    def downsample_now(self, request, queryset):
        result = services.downsample_and_prune()
        self.message_user(request, f"downsampling: {result}")


@admin.register(LiveNodeMetrics)
class LiveNodeMetricsAdmin(ReadOnlyAdmin):
    list_display = ("node_id", "cluster_id", "ts", "load_15m", "free_mem", "gpu_free_mem")
    list_filter = ("cluster_id",)
    search_fields = ("node_id", "cluster_id")
    readonly_fields = ("report_pretty",)
    exclude = ("vcpu", "memory", "gpus", "disk", "storage", "network", "doc")

    @admin.display(description="load 15m")
    def load_15m(self, obj):
        return (obj.vcpu or {}).get("load_15m")

    @admin.display(description="free memory (MB)")
    def free_mem(self, obj):
        return (obj.memory or {}).get("freeMem")

    @admin.display(description="free GPU memory (MB)")
    def gpu_free_mem(self, obj):
        return (obj.gpus or {}).get("totalFreeMem")

    @admin.display(description="latest report")
    def report_pretty(self, obj):
        return pretty_json(obj.doc)


@admin.register(LiveClusterMetrics)
class LiveClusterMetricsAdmin(ReadOnlyAdmin):
    list_display = ("cluster_id", "ts", "reporting_nodes", "gpu_free_mem")
    search_fields = ("cluster_id",)
    readonly_fields = ("report_pretty",)
    exclude = ("nodes", "vcpu", "memory", "gpus", "storage", "network", "doc")

    @admin.display(description="reporting nodes")
    def reporting_nodes(self, obj):
        return (obj.nodes or {}).get("reporting")

    @admin.display(description="free GPU memory (MB)")
    def gpu_free_mem(self, obj):
        return (obj.gpus or {}).get("totalFreeMem")

    @admin.display(description="aggregate")
    def report_pretty(self, obj):
        return pretty_json(obj.doc)


@admin.register(MetricSample)
class MetricSampleAdmin(ReadOnlyAdmin):
    list_display = ("entity_type", "entity_id", "name", "value", "ts")
    list_filter = ("entity_type", "name")
    search_fields = ("entity_id", "name")
    date_hierarchy = "ts"


@admin.register(LiveEntityMetrics)
class LiveEntityMetricsAdmin(ReadOnlyAdmin):
    list_display = ("entity_type", "entity_id", "ts")
    list_filter = ("entity_type",)
    search_fields = ("entity_id",)
    readonly_fields = ("values_pretty", "labels_pretty")
    exclude = ("values", "labels")

    @admin.display(description="values")
    def values_pretty(self, obj):
        return pretty_json(obj.values)

    @admin.display(description="labels")
    def labels_pretty(self, obj):
        return pretty_json(obj.labels)
