"""Admin of the parser task log: readable specs and answers, re-execute action."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html

from apps.parser import services
from apps.parser.models import ParserTask


def pretty_json(value) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-width: 80em">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


@admin.register(ParserTask)
class ParserTaskAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "action",
        "status",
        "response_status",
        "duration_ms",
        "owner",
        "template_uri",
        "spec_uri",
        "created_at",
    )
    list_filter = ("status", "action", "response_status", "created_at")
    search_fields = ("id", "action", "template_uri", "spec_uri", "owner__username")
    date_hierarchy = "created_at"
    actions = ["re_execute"]
    exclude = ("spec", "response_body")
    readonly_fields = (
        "id",
        "action",
        "requested_action",
        "template_uri",
        "spec_uri",
        "status",
        "response_status",
        "duration_ms",
        "owner",
        "re_executed_from",
        "spec_pretty",
        "response_body_pretty",
        "created_at",
        "updated_at",
        "finished_at",
    )

    @admin.display(description="spec")
    def spec_pretty(self, obj: ParserTask) -> str:
        return pretty_json(obj.spec)

    @admin.display(description="response body")
    def response_body_pretty(self, obj: ParserTask) -> str:
        return pretty_json(obj.response_body)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Re-execute the selected calls (as you)")
    def re_execute(self, request, queryset):
        for task in queryset:
            outcome = services.re_execute(task, user=request.user)
            level = messages.SUCCESS if outcome.ok else messages.WARNING
            self.message_user(
                request, f"{task.action}: {outcome.status} (task {outcome.task.id})", level
            )
