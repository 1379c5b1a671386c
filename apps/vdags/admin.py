"""Admin pages: vDAGs (graph, assignment, compiled route shown readably) and their
controllers (observed status, endpoints), with the actions an operator needs."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from apps.core.errors import ApiError
from apps.vdags.models import QualitySample, VDag, VDagController


def pretty_json(value) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-width: 80em">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


def _run(modeladmin, request, fn, ok_message: str) -> None:
    try:
        fn()
    except ApiError as exc:
        modeladmin.message_user(request, exc.message, messages.ERROR)
    else:
        modeladmin.message_user(request, ok_message, messages.SUCCESS)


class VDagControllerInline(admin.TabularInline):
    model = VDagController
    extra = 0
    fields = ("vdag_controller_id", "cluster", "status", "public_url")
    readonly_fields = fields
    show_change_link = True
    can_delete = False


@admin.register(VDag)
class VDagAdmin(admin.ModelAdmin):
    list_display = ("vdag_uri", "name", "version", "release_tag", "status", "blocks", "owner")
    list_filter = ("status", "release_tag", "created_at")
    search_fields = ("vdag_uri", "name", "discovery_tags", "block_ids")
    inlines = [VDagControllerInline]
    actions = ["process_again", "refresh_executors", "delete_vdags"]
    readonly_fields = (
        "vdag_uri",
        "route",
        "assignment_pretty",
        "graph_pretty",
        "nodes_pretty",
        "controller_pretty",
        "compiled_pretty",
        "spec_pretty",
        "last_task_id",
        "created_at",
        "updated_at",
    )
    exclude = (
        "spec",
        "nodes",
        "graph",
        "assignment",
        "compiled_graph",
        "controller",
        "block_ids",
        "nested_vdags",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "vdag_uri",
                    "name",
                    "version",
                    "release_tag",
                    "status",
                    "status_reason",
                    "owner",
                )
            },
        ),
        ("graph", {"fields": ("route", "assignment_pretty", "graph_pretty", "nodes_pretty")}),
        ("controller", {"fields": ("controller_pretty", "discovery_tags", "metadata")}),
        ("compiled", {"fields": ("compiled_pretty",)}),
        ("spec as submitted", {"classes": ("collapse",), "fields": ("spec_pretty",)}),
        ("times", {"fields": ("last_task_id", "created_at", "updated_at")}),
    )

    @admin.display(description="blocks")
    def blocks(self, obj: VDag) -> str:
        return ", ".join(obj.block_ids or []) or "-"

    @admin.display(description="route (label → successors)")
    def route(self, obj: VDag) -> str:
        graph = obj.compiled_graph or {}
        nodes = graph.get("nodes") or {}
        edges = graph.get("edges") or {}
        rows = [
            (
                label,
                (nodes.get(label) or {}).get("block_id", "?"),
                ", ".join(edges.get(label) or []) or "→ result",
            )
            for label in graph.get("order") or []
        ]
        if not rows:
            return "not compiled yet"
        return format_html(
            "<table><tr><th>node</th><th>block</th><th>next</th></tr>{}</table>",
            format_html_join(
                "", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", ((a, b, c) for a, b, c in rows)
            ),
        )

    @admin.display(description="assignment")
    def assignment_pretty(self, obj: VDag) -> str:
        return pretty_json(obj.assignment)

    @admin.display(description="graph")
    def graph_pretty(self, obj: VDag) -> str:
        return pretty_json(obj.graph)

    @admin.display(description="nodes")
    def nodes_pretty(self, obj: VDag) -> str:
        return pretty_json(obj.nodes)

    @admin.display(description="controller settings")
    def controller_pretty(self, obj: VDag) -> str:
        return pretty_json(obj.controller)

    @admin.display(description="compiled graph")
    def compiled_pretty(self, obj: VDag) -> str:
        return pretty_json(obj.compiled_graph)

    @admin.display(description="spec")
    def spec_pretty(self, obj: VDag) -> str:
        return pretty_json(obj.spec)

    @admin.action(description="Process again (vdag_creation) — for failed or pending vDAGs")
    def process_again(self, request, queryset):
        from apps.tasks.services import submit
        from apps.vdags import tasks
        from apps.vdags.choices import TASK_VDAG_CREATION, VDagStatus

        count = 0
        for vdag in queryset.exclude(status=VDagStatus.ACTIVE):
            VDag.objects.filter(pk=vdag.pk).update(status=VDagStatus.PENDING, status_reason="")
            submit(
                TASK_VDAG_CREATION,
                tasks.vdag_creation,
                owner=request.user,
                task_data={"vdagURI": vdag.pk},
                vdag_uri=vdag.pk,
            )
            count += 1
        self.message_user(request, f"{count} vdag_creation task(s) queued")

    @admin.action(description="Refresh executor addresses in the compiled graph")
    def refresh_executors(self, request, queryset):
        from apps.vdags.services.vdags import recompile

        for vdag in queryset:
            _run(self, request, lambda v=vdag: recompile(v), f"{vdag.pk}: refreshed")

    @admin.action(description="Delete selected vDAGs (refused while served or nested)")
    def delete_vdags(self, request, queryset):
        from apps.vdags.services.vdags import delete_vdag

        for vdag in queryset:
            _run(self, request, lambda v=vdag: delete_vdag(v), f"{vdag.pk} deleted")

    def get_actions(self, request):
        actions = super().get_actions(request)
        # The plain bulk delete would bypass the served/nested checks.
        actions.pop("delete_selected", None)
        return actions


@admin.register(VDagController)
class VDagControllerAdmin(admin.ModelAdmin):
    list_display = ("vdag_controller_id", "vdag", "cluster", "status", "public_url", "owner")
    list_filter = ("status", "cluster")
    search_fields = ("vdag_controller_id", "vdag__vdag_uri", "public_url", "search_tags")
    actions = ["observe_status", "remove_controllers"]
    readonly_fields = (
        "vdag_controller_id",
        "vdag",
        "cluster",
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
    def endpoints_pretty(self, obj: VDagController) -> str:
        return pretty_json(obj.endpoints)

    @admin.display(description="config")
    def config_pretty(self, obj: VDagController) -> str:
        return pretty_json(obj.config)

    @admin.action(description="Check status now (probe the gRPC port)")
    def observe_status(self, request, queryset):
        from apps.vdags.services.controllers import observe

        for controller in queryset:
            observe(controller)
            self.message_user(request, f"{controller.pk}: {controller.status}")

    @admin.action(description="Remove selected controllers (remove_vdag_controller pre-check)")
    def remove_controllers(self, request, queryset):
        from apps.vdags.services.controllers import remove_controller

        for controller in queryset:
            _run(
                self,
                request,
                lambda c=controller: remove_controller(c, user=request.user),
                f"{controller.pk} removed",
            )

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_add_permission(self, request) -> bool:
        return False  # controllers are created through the API (pre-checks, workloads)


@admin.register(QualitySample)
class QualitySampleAdmin(admin.ModelAdmin):
    list_display = ("ts", "vdag_uri", "vdag_controller_id", "session_id", "seq_no", "policy")
    list_filter = ("vdag_uri", "ts")
    search_fields = ("vdag_uri", "vdag_controller_id", "session_id")
    date_hierarchy = "ts"
    readonly_fields = (
        "vdag_uri",
        "vdag_controller_id",
        "stream_id",
        "ts",
        "session_id",
        "seq_no",
        "policy",
        "request_pretty",
        "response_pretty",
        "result_pretty",
    )
    exclude = ("request", "response", "policy_result")

    @admin.display(description="request")
    def request_pretty(self, obj) -> str:
        return pretty_json(obj.request)

    @admin.display(description="response")
    def response_pretty(self, obj) -> str:
        return pretty_json(obj.response)

    @admin.display(description="policy result")
    def result_pretty(self, obj) -> str:
        return pretty_json(obj.policy_result)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
