"""Admin of the policies system: readable JSON, a code preview, and operator actions."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from apps.core.errors import ApiError
from apps.policies import services
from apps.policies.models import (
    FailurePolicyRun,
    PolicyExecutor,
    PolicyFunction,
    PolicyGraph,
    PolicyJob,
    PolicyRule,
)


def pretty_json(value: Any) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-width: 80em">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


def _json_display(field: str, label: str):
    @admin.display(description=label)
    def show(self, obj):
        return pretty_json(getattr(obj, field))

    show.__name__ = f"{field}_pretty"
    return show


class JsonReadableAdmin(admin.ModelAdmin):
    """Shows the listed JSON fields pretty-printed and read-only."""

    json_fields: tuple[str, ...] = ()

    def get_readonly_fields(self, request, obj=None):
        return (
            *super().get_readonly_fields(request, obj),
            *(f"{f}_pretty" for f in self.json_fields),
        )

    def get_exclude(self, request, obj=None):
        return (*(super().get_exclude(request, obj) or ()), *self.json_fields)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for field in cls.json_fields:
            setattr(cls, f"{field}_pretty", _json_display(field, field.replace("_", " ")))


@admin.register(PolicyRule)
class PolicyRuleAdmin(JsonReadableAdmin):
    list_display = (
        "policy_rule_uri",
        "type",
        "builtin",
        "code_format",
        "code_size",
        "owner",
        "updated_at",
    )
    list_filter = ("builtin", "type", "release_tag", "created_at")
    search_fields = ("policy_rule_uri", "name", "description", "code_sha256")
    date_hierarchy = "created_at"
    json_fields = (
        "tags",
        "metadata",
        "policy_settings",
        "policy_parameters",
        "policy_input_schema",
        "policy_output_schema",
        "policy_settings_schema",
        "policy_parameters_schema",
        "management_commands_schema",
    )
    readonly_fields = (
        "policy_rule_uri",
        "name",
        "version",
        "release_tag",
        "code",
        "code_sha256",
        "code_size",
        "code_format",
        "code_url",
        "owner",
        "created_at",
        "updated_at",
        "code_preview",
    )
    actions = ["verify_archives", "check_in_sandbox"]

    def has_add_permission(self, request) -> bool:
        return False  # registering goes through the API or `aios_policy_package --register`

    @admin.display(description="code preview")
    def code_preview(self, obj: PolicyRule) -> str:
        listing = services.archive_listing(obj)
        if "error" in listing:
            return format_html(
                '<p style="color:#ba2121"><b>{}</b>: {}</p>',
                listing["error"]["code"],
                listing["error"]["message"],
            )
        rows = format_html_join(
            "",
            "<tr><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
            ((f["path"], f["size"], f["sha256"][:16]) for f in listing["files"]),
        )
        return format_html(
            "<table><tr><th>file</th><th>bytes</th><th>sha256</th></tr>{}</table>"
            '<h4>code/function.py</h4><pre style="max-height: 40em; overflow: auto; '
            'background: #f8f8f8; padding: 1em">{}</pre>',
            rows,
            listing["function_py"],
        )

    @admin.action(description="Verify stored archives against their sha256")
    def verify_archives(self, request, queryset) -> None:
        bad = []
        for rule in queryset:
            listing = services.archive_listing(rule)
            if "error" in listing:
                bad.append(f"{rule.policy_rule_uri} ({listing['error']['message']})")
        if bad:
            self.message_user(request, "Tampered or missing: " + "; ".join(bad), messages.ERROR)
        else:
            self.message_user(request, f"{queryset.count()} archive(s) verified", messages.SUCCESS)

    @admin.action(description="Check that the code loads (management get_state in the sandbox)")
    def check_in_sandbox(self, request, queryset) -> None:
        for rule in queryset[:20]:
            try:
                services.run_management(rule.policy_rule_uri, "get_state", {})
                self.message_user(request, f"{rule}: loads and answers", messages.SUCCESS)
            except ApiError as exc:
                level = messages.WARNING if exc.code == "exception" else messages.ERROR
                self.message_user(request, f"{rule}: {exc.code}: {exc.message}", level)


@admin.register(PolicyExecutor)
class PolicyExecutorAdmin(JsonReadableAdmin):
    list_display = ("executor_id", "executor_host_uri", "executor_status", "last_checked_at")
    list_filter = ("executor_status",)
    search_fields = ("executor_id", "executor_host_uri")
    json_fields = ("executor_metadata", "executor_hardware_info")
    readonly_fields = ("last_checked_at", "last_error", "created_at", "updated_at")
    actions = ["probe_health"]

    @admin.action(description="Probe /health of the selected executors")
    def probe_health(self, request, queryset) -> None:
        for executor in queryset:
            executor = services.check_executor(executor)
            self.message_user(request, f"{executor}: {executor.executor_status}")


@admin.register(PolicyJob)
class PolicyJobAdmin(JsonReadableAdmin):
    list_display = (
        "job_id",
        "name",
        "policy_rule_uri",
        "status",
        "executor",
        "cluster_id",
        "created_at",
    )
    list_filter = ("status", "created_at")
    search_fields = ("job_id", "name", "policy_rule_uri", "cluster_id", "workload_id")
    date_hierarchy = "created_at"
    json_fields = ("policy_rule_parameters", "inputs", "node_selector", "result", "error")
    readonly_fields = (
        "job_id",
        "name",
        "policy",
        "policy_rule_uri",
        "executor",
        "executor_id_requested",
        "cluster_id",
        "workload_id",
        "status",
        "task",
        "owner",
        "started_at",
        "finished_at",
        "created_at",
    )

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(PolicyFunction)
class PolicyFunctionAdmin(JsonReadableAdmin):
    list_display = ("name", "policy_rule_uri", "replicas", "status", "runner", "updated_at")
    list_filter = ("status", "runner")
    search_fields = ("name", "policy_rule_uri")
    json_fields = (
        "policy_rule_parameters",
        "policy_rule_settings",
        "autoscaling",
        "function_metadata",
        "function_tags",
        "replica_state",
    )
    readonly_fields = (
        "function_id",
        "name",
        "policy",
        "policy_rule_uri",
        "policy_sha256",
        "replicas",
        "runner",
        "status",
        "last_error",
        "owner",
        "created_at",
        "updated_at",
    )
    actions = ["reconcile", "stop_and_delete"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Restart dead replicas")
    def reconcile(self, request, queryset) -> None:
        for function in queryset:
            function = services.reconcile_function(function)
            self.message_user(request, f"{function}: {function.status}")

    @admin.action(description="Stop replicas and delete")
    def stop_and_delete(self, request, queryset) -> None:
        for function in list(queryset):
            try:
                services.delete_function(function)
            except ApiError as exc:
                self.message_user(request, f"{function}: {exc.message}", messages.ERROR)

    def delete_model(self, request, obj: PolicyFunction) -> None:
        services.delete_function(obj)


@admin.register(PolicyGraph)
class PolicyGraphAdmin(JsonReadableAdmin):
    list_display = ("graph_uri", "node_count", "owner", "updated_at")
    search_fields = ("graph_uri", "name", "description")
    json_fields = (
        "metadata",
        "search_tags",
        "graph_function_ids",
        "graph_connection_data",
        "input_schema",
        "output_schema",
    )
    readonly_fields = ("graph_uri", "name", "version", "release_tag", "owner", "created_at")

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="functions")
    def node_count(self, obj: PolicyGraph) -> int:
        return len(obj.graph_function_ids or [])


@admin.register(FailurePolicyRun)
class FailurePolicyRunAdmin(JsonReadableAdmin):
    list_display = ("created_at", "failure_policy_id", "status", "duration_ms", "requested_by")
    list_filter = ("status", "created_at")
    search_fields = ("run_id", "failure_policy_id")
    date_hierarchy = "created_at"
    json_fields = ("inputs", "parameters", "result", "error")
    readonly_fields = (
        "run_id",
        "failure_policy_id",
        "policy",
        "status",
        "duration_ms",
        "requested_by",
        "created_at",
    )

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
