"""Admin pages: adhoc inference-server deployments and the request log (read-only)."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html

from apps.core.errors import ApiError
from apps.inference.models import InferenceServerDeployment, RequestLog


def pretty_json(value) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-width: 80em">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


def pretty_json_text(text: str) -> str:
    try:
        return pretty_json(json.loads(text)) if text else "-"
    except ValueError:
        return text


@admin.register(InferenceServerDeployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ("deployment_id", "name", "cluster", "status", "public_url", "owner")
    list_filter = ("status", "cluster")
    search_fields = ("deployment_id", "name", "public_url", "tags")
    actions = ["observe_status", "remove_deployments", "sync_executor_map"]
    readonly_fields = (
        "deployment_id",
        "cluster",
        "server",
        "status",
        "status_reason",
        "public_url",
        "management_url",
        "endpoints_pretty",
        "config_pretty",
        "last_task_id",
        "created_at",
        "updated_at",
    )
    exclude = ("endpoints", "config")

    @admin.display(description="endpoints")
    def endpoints_pretty(self, obj) -> str:
        return pretty_json(obj.endpoints)

    @admin.display(description="config")
    def config_pretty(self, obj) -> str:
        return pretty_json(obj.config)

    @admin.action(description="Check status now (probe the gRPC port)")
    def observe_status(self, request, queryset):
        from apps.inference.services import observe

        for deployment in queryset:
            observe(deployment)
            self.message_user(request, f"{deployment.pk}: {deployment.status}")

    @admin.action(description="Remove selected servers (stop workloads, unlist)")
    def remove_deployments(self, request, queryset):
        from apps.inference.services import remove_deployment

        for deployment in queryset:
            try:
                remove_deployment(deployment, user=request.user)
            except ApiError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(request, f"{deployment.pk} removed")

    @admin.action(description="Rewrite the block → executor map the servers read")
    def sync_executor_map(self, request, queryset):
        from apps.inference.services import sync_executor_map

        self.message_user(request, f"executor map: {sync_executor_map()} running block(s)")

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_add_permission(self, request) -> bool:
        return False  # created through the API (workloads, registry entry)


@admin.register(RequestLog)
class RequestLogAdmin(admin.ModelAdmin):
    list_display = ("ts", "request_id", "session_id", "seq_no", "block_id")
    list_filter = ("ts", "block_id")
    search_fields = ("request_id", "session_id", "block_id")
    date_hierarchy = "ts"
    readonly_fields = (
        "request_id",
        "session_id",
        "block_id",
        "seq_no",
        "ts",
        "data_pretty",
        "query_parameters_pretty",
        "output_ptr_pretty",
    )
    exclude = ("data", "query_parameters", "output_ptr")

    @admin.display(description="data")
    def data_pretty(self, obj) -> str:
        return pretty_json_text(obj.data)

    @admin.display(description="query parameters")
    def query_parameters_pretty(self, obj) -> str:
        return pretty_json_text(obj.query_parameters)

    @admin.display(description="output_ptr")
    def output_ptr_pretty(self, obj) -> str:
        return pretty_json_text(obj.output_ptr)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
