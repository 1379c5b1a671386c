"""Admin pages for blocks and instances: status, placement, endpoints, readable JSON, and the
operator's actions (scale up/down by one, remove; replace an instance). Every action calls the
same services as the API, so pre-checks and bounds apply."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from apps.blocks import services
from apps.blocks.models import Block, Instance
from apps.core.errors import ApiError


def pretty_json(value) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-width: 80em">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


def _each(modeladmin, request, queryset, fn, verb: str) -> None:
    done, failed = 0, []
    for obj in queryset:
        try:
            fn(obj)
            done += 1
        except ApiError as exc:
            failed.append(f"{obj.pk}: {exc.message}")
    if done:
        modeladmin.message_user(request, f"{verb} {done} item(s)", messages.SUCCESS)
    for message in failed[:10]:
        modeladmin.message_user(request, message, messages.ERROR)


class InstanceInline(admin.TabularInline):
    model = Instance
    extra = 0
    fields = ("instance_id", "node", "gpus", "status", "health", "last_health_at", "replaces")
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(Block)
class BlockAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "component_uri",
        "cluster",
        "status",
        "instance_count",
        "min_instances",
        "max_instances",
        "grpc_endpoint",
        "owner",
        "created_at",
    )
    list_filter = ("status", "cluster")
    search_fields = ("id", "component_uri", "status_reason", "tags")
    inlines = [InstanceInline]
    actions = ["scale_up", "scale_down", "remove_blocks"]
    readonly_fields = (
        "id",
        "component",
        "component_uri",
        "cluster",
        "status",
        "status_reason",
        "endpoints_pretty",
        "spec_pretty",
        "parameters_pretty",
        "init_data_pretty",
        "policies_pretty",
        "allocation_pretty",
        "services_pretty",
        "last_task_id",
        "last_scale_at",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("id", "component", "component_uri", "owner", "tags")}),
        ("state", {"fields": ("status", "status_reason", "cluster", "endpoints_pretty")}),
        ("bounds", {"fields": ("min_instances", "max_instances", "last_scale_at")}),
        (
            "spec",
            {
                "fields": (
                    "spec_pretty",
                    "parameters_pretty",
                    "init_data_pretty",
                    "policies_pretty",
                )
            },
        ),
        ("runtime", {"fields": ("allocation_pretty", "services_pretty", "last_task_id")}),
        ("times", {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("cluster", "owner")

    def has_add_permission(self, request) -> bool:
        return False  # blocks are created through createBlock (allocation, pre-checks)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # removal stops processes: use the "remove" action

    @admin.display(description="instances")
    def instance_count(self, obj: Block) -> int:
        return obj.instances.count()

    @admin.display(description="gRPC")
    def grpc_endpoint(self, obj: Block) -> str:
        return (obj.endpoints or {}).get("grpc", "")

    @admin.display(description="endpoints")
    def endpoints_pretty(self, obj: Block) -> str:
        endpoints = obj.endpoints or {}
        if not endpoints:
            return "-"
        return format_html_join(
            "", "<div><b>{}</b>: <code>{}</code></div>", sorted(endpoints.items())
        )

    @admin.display(description="spec as submitted")
    def spec_pretty(self, obj: Block) -> str:
        return pretty_json(obj.spec)

    @admin.display(description="parameters")
    def parameters_pretty(self, obj: Block) -> str:
        return pretty_json(obj.parameters)

    @admin.display(description="blockInitData / initSettings")
    def init_data_pretty(self, obj: Block) -> str:
        return pretty_json(
            {"blockInitData": obj.block_init_data, "initSettings": obj.init_settings}
        )

    @admin.display(description="policies")
    def policies_pretty(self, obj: Block) -> str:
        return pretty_json(obj.policies)

    @admin.display(description="allocation")
    def allocation_pretty(self, obj: Block) -> str:
        return pretty_json(obj.allocation)

    @admin.display(description="services")
    def services_pretty(self, obj: Block) -> str:
        return pretty_json(obj.services)

    @admin.action(description="Scale up by one instance (within maxInstances)")
    def scale_up(self, request, queryset) -> None:
        _each(
            self,
            request,
            queryset,
            lambda b: services.scale_block(b.id, delta=1, user=request.user, source="admin"),
            "scaled up",
        )

    @admin.action(description="Scale down by one instance (within minInstances)")
    def scale_down(self, request, queryset) -> None:
        _each(
            self,
            request,
            queryset,
            lambda b: services.scale_block(b.id, delta=-1, user=request.user, source="admin"),
            "scaled down",
        )

    @admin.action(description="Remove (stop every process, release every GPU)")
    def remove_blocks(self, request, queryset) -> None:
        _each(
            self,
            request,
            queryset,
            lambda b: services.remove_block(b.id, user=request.user),
            "removal requested for",
        )


@admin.register(Instance)
class InstanceAdmin(admin.ModelAdmin):
    list_display = (
        "instance_id",
        "block",
        "node",
        "gpus",
        "status",
        "health",
        "last_health_at",
        "requests_processed",
    )
    list_filter = ("status", "health", "block__cluster")
    search_fields = ("instance_id", "block__id", "node__id", "workload_id")
    actions = ["replace_instances"]
    readonly_fields = (
        "instance_id",
        "block",
        "node",
        "gpus",
        "workload_id",
        "host",
        "http_port",
        "status",
        "health",
        "health_pretty",
        "last_health_at",
        "consecutive_failures",
        "requests_processed",
        "requests_failed",
        "replaces",
        "created_at",
        "updated_at",
    )
    exclude = ("health_detail",)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # use "replace", or scale the block down

    @admin.display(description="last health check")
    def health_pretty(self, obj: Instance) -> str:
        return pretty_json(obj.health_detail)

    @admin.action(description="Replace (new instance, then this one goes)")
    def replace_instances(self, request, queryset) -> None:
        _each(
            self,
            request,
            queryset,
            lambda i: services.replace_instance(
                i.block_id, i.instance_id, reason="admin action", user=request.user
            ),
            "replaced",
        )
