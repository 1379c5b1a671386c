"""Admin pages: clusters → nodes → GPUs with live metrics, workloads, the gateway config."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from apps.clusters import gateway
from apps.clusters.drivers import get_driver
from apps.clusters.models import GPU, Cluster, GatewayConfig, Node, Workload
from apps.clusters.specs import CLUSTER_MAP_KEYS, GATEWAY_MAP_KEYS, validate_policy_map
from apps.core.errors import ApiError


def _clean_map(value, allowed, what: str) -> dict:
    try:
        return {k: v for k, v in validate_policy_map(value or {}, allowed, what).items() if v}
    except ApiError as exc:
        raise forms.ValidationError(exc.message) from None


class ClusterForm(forms.ModelForm):
    class Meta:
        model = Cluster
        fields = "__all__"

    def clean_config(self):
        config = dict(self.cleaned_data.get("config") or {})
        if "actionsPolicyMap" in config:
            config["actionsPolicyMap"] = _clean_map(
                config["actionsPolicyMap"], CLUSTER_MAP_KEYS, "config.actionsPolicyMap"
            )
        return config


class GatewayConfigForm(forms.ModelForm):
    class Meta:
        model = GatewayConfig
        fields = "__all__"

    def clean_actions_policy_map(self):
        return _clean_map(
            self.cleaned_data.get("actions_policy_map"), GATEWAY_MAP_KEYS, "actions_policy_map"
        )


def pretty_json(value) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-width: 80em">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


def _run(modeladmin, request, fn, ok_message: str) -> None:
    try:
        fn()
    except ApiError as exc:
        modeladmin.message_user(request, f"{exc.message}", messages.ERROR)
    else:
        modeladmin.message_user(request, ok_message, messages.SUCCESS)


class NodeInline(admin.TabularInline):
    model = Node
    extra = 0
    fields = ("id", "status", "schedulable", "memory", "last_heartbeat")
    readonly_fields = ("id", "status", "memory", "last_heartbeat")
    show_change_link = True
    can_delete = False


class GPUInline(admin.TabularInline):
    model = GPU
    extra = 0
    fields = ("index", "model", "memory_mb", "shared", "uuid", "declared")


@admin.register(Cluster)
class ClusterAdmin(admin.ModelAdmin):
    form = ClusterForm
    list_display = ("id", "region_id", "status", "driver", "node_count", "owner", "created_at")
    list_filter = ("status", "driver", "region_id")
    search_fields = ("id", "region_id", "cluster_metadata", "tags")
    inlines = [NodeInline]
    actions = ["provision_again", "remove_clusters", "force_remove_clusters", "check_stability"]
    readonly_fields = (
        "has_kubeconfig",
        "live_metrics",
        "driver_status",
        "config_pretty",
        "metadata_pretty",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("id", "region_id", "status", "status_message", "driver", "owner")}),
        (
            "resources (MB)",
            {"fields": ("gpus", "vcpus", "memory", "swap", "storage", "network")},
        ),
        ("configuration", {"fields": ("config", "config_pretty", "tags", "reputation")}),
        ("metadata", {"fields": ("cluster_metadata", "metadata_pretty")}),
        ("state", {"fields": ("has_kubeconfig", "live_metrics", "driver_status")}),
        ("times", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="nodes")
    def node_count(self, obj: Cluster) -> int:
        return obj.nodes.count()

    @admin.display(boolean=True, description="kubeconfig stored (encrypted)")
    def has_kubeconfig(self, obj: Cluster) -> bool:
        return obj.has_kubeconfig

    @admin.display(description="config")
    def config_pretty(self, obj: Cluster) -> str:
        return pretty_json(obj.config)

    @admin.display(description="cluster metadata")
    def metadata_pretty(self, obj: Cluster) -> str:
        return pretty_json(obj.cluster_metadata)

    @admin.display(description="live metrics (aggregate)")
    def live_metrics(self, obj: Cluster) -> str:
        from apps.metrics.services import cluster_metrics

        return pretty_json(cluster_metrics(obj.id))

    @admin.display(description="driver status")
    def driver_status(self, obj: Cluster) -> str:
        try:
            return pretty_json(get_driver(obj).status())
        except ApiError as exc:
            return exc.message

    @admin.action(description="Provision selected clusters again (cluster_infra_creation)")
    def provision_again(self, request, queryset):
        from apps.clusters import tasks
        from apps.tasks.services import submit

        for cluster in queryset:
            submit(
                "cluster_infra_creation",
                tasks.cluster_infra_creation,
                owner=request.user,
                task_data={"cluster_id": cluster.id},
                cluster_id=cluster.id,
            )
        self.message_user(request, f"{queryset.count()} provisioning task(s) queued")

    @admin.action(description="Remove selected clusters (refused while workloads run)")
    def remove_clusters(self, request, queryset):
        for cluster in queryset:
            _run(
                self,
                request,
                lambda c=cluster: gateway.remove_cluster(c.id, user=request.user),
                f"removal of {cluster.id} queued",
            )

    @admin.action(description="Force-remove selected clusters (stops their workloads)")
    def force_remove_clusters(self, request, queryset):
        for cluster in queryset:
            _run(
                self,
                request,
                lambda c=cluster: gateway.remove_cluster(c.id, user=request.user, force=True),
                f"forced removal of {cluster.id} queued",
            )

    @admin.action(description="Run the stability check")
    def check_stability(self, request, queryset):
        from apps.clusters.controller import ClusterController

        for cluster in queryset:
            result = ClusterController(cluster).stability_check()
            level = messages.SUCCESS if result["is_stable"] else messages.WARNING
            data = result["stability_check_data"]
            self.message_user(
                request,
                f"{cluster.id}: {'stable' if result['is_stable'] else 'NOT stable'} "
                f"(not ready: {data['not_ready_nodes']}, failed: {data['failed_workloads']})",
                level,
            )


@admin.register(Node)
class NodeAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "cluster",
        "status",
        "effective",
        "schedulable",
        "gpu_count",
        "memory",
        "last_heartbeat",
    )
    list_filter = ("status", "schedulable", "cluster")
    search_fields = ("id", "cluster__id", "tags", "node_metadata")
    inlines = [GPUInline]
    actions = ["cordon", "uncordon", "remove_nodes", "force_remove_nodes"]
    readonly_fields = ("last_heartbeat", "agent_pretty", "live_metrics", "created_at")

    @admin.display(description="effective status")
    def effective(self, obj: Node) -> str:
        return obj.effective_status

    @admin.display(description="GPUs")
    def gpu_count(self, obj: Node) -> int:
        return obj.gpus.count()

    @admin.display(description="agent")
    def agent_pretty(self, obj: Node) -> str:
        return pretty_json(obj.agent_info)

    @admin.display(description="live metrics")
    def live_metrics(self, obj: Node) -> str:
        from apps.metrics.services import node_live_metrics

        return pretty_json(node_live_metrics(obj.id) or {"stale": True})

    @admin.action(description="Cordon (no new placements)")
    def cordon(self, request, queryset):
        self.message_user(request, f"{queryset.update(schedulable=False)} node(s) cordoned")

    @admin.action(description="Uncordon")
    def uncordon(self, request, queryset):
        self.message_user(request, f"{queryset.update(schedulable=True)} node(s) uncordoned")

    @admin.action(description="Remove selected nodes (refused while workloads run)")
    def remove_nodes(self, request, queryset):
        for node in queryset:
            _run(
                self,
                request,
                lambda n=node: gateway.remove_node(n.id, user=request.user),
                f"removal of {node.id} queued",
            )

    @admin.action(description="Force-remove selected nodes (stops their workloads)")
    def force_remove_nodes(self, request, queryset):
        for node in queryset:
            _run(
                self,
                request,
                lambda n=node: gateway.remove_node(n.id, user=request.user, force=True),
                f"forced removal of {node.id} queued",
            )


@admin.register(GPU)
class GPUAdmin(admin.ModelAdmin):
    list_display = ("node", "index", "model", "memory_mb", "shared", "declared")
    list_filter = ("shared", "declared", "model")
    search_fields = ("node__id", "model", "uuid")
    actions = ["make_shared", "make_exclusive"]

    @admin.action(description="Mark shared")
    def make_shared(self, request, queryset):
        self.message_user(request, f"{queryset.update(shared=True)} GPU(s) shared")

    @admin.action(description="Mark exclusive")
    def make_exclusive(self, request, queryset):
        self.message_user(request, f"{queryset.update(shared=False)} GPU(s) exclusive")


@admin.register(Workload)
class WorkloadAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "cluster",
        "node",
        "block_id",
        "desired_state",
        "status",
        "pid",
        "restarts",
        "exit_code",
    )
    list_filter = ("kind", "status", "desired_state", "restart_policy", "cluster")
    search_fields = ("id", "block_id", "instance_id", "entry_point", "last_error")
    actions = ["restart", "stop", "start", "remove"]
    readonly_fields = (
        "status",
        "pid",
        "exit_code",
        "restarts",
        "last_error",
        "log_path",
        "log_tail",
        "started_at",
        "finished_at",
        "next_restart_at",
        "observed_at",
    )

    @admin.display(description="log (last lines)")
    def log_tail(self, obj: Workload) -> str:
        from pathlib import Path

        path = Path(obj.log_path) if obj.log_path else None
        if not path or not path.is_file():
            return "-"
        lines = path.read_text(errors="replace").splitlines()[-40:]
        return format_html(
            "<pre>{}</pre>", format_html_join("\n", "{}", ((line,) for line in lines))
        )

    def _each(self, request, queryset, op: str) -> None:
        for workload in queryset.select_related("cluster"):
            driver = get_driver(workload.cluster)
            calls = {
                "restart": lambda w=workload, d=driver: d.restart_workload(w.id),
                "stop": lambda w=workload, d=driver: d.set_desired_state(w.id, "stopped"),
                "start": lambda w=workload, d=driver: d.set_desired_state(w.id, "running"),
                "remove": lambda w=workload, d=driver: d.remove_workload(w.id),
            }
            _run(self, request, calls[op], f"{op}: {workload.id}")

    @admin.action(description="Restart")
    def restart(self, request, queryset):
        self._each(request, queryset, "restart")

    @admin.action(description="Stop (desired state stopped)")
    def stop(self, request, queryset):
        self._each(request, queryset, "stop")

    @admin.action(description="Start (desired state running)")
    def start(self, request, queryset):
        self._each(request, queryset, "start")

    @admin.action(description="Remove")
    def remove(self, request, queryset):
        self._each(request, queryset, "remove")


@admin.register(GatewayConfig)
class GatewayConfigAdmin(admin.ModelAdmin):
    form = GatewayConfigForm
    list_display = ("__str__", "policy_execution_mode", "policy_executor_id", "updated_at")
    readonly_fields = ("map_pretty",)

    @admin.display(description="pre-check map")
    def map_pretty(self, obj: GatewayConfig) -> str:
        return pretty_json(obj.actions_policy_map)

    def has_add_permission(self, request) -> bool:
        return not GatewayConfig.objects.exists()
