import json

from django.contrib import admin, messages
from django.utils.html import format_html

from apps.tasks import services
from apps.tasks.choices import TaskStatus
from apps.tasks.models import Task


def pretty_json(value) -> str:
    return format_html(
        '<pre style="white-space: pre-wrap; max-width: 80em">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, default=str),
    )


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ("task_id", "task_type", "task_status", "progress", "owner", "created_at")
    list_filter = ("task_status", "task_type", "created_at")
    search_fields = ("task_id", "task_type", "progress_message", "error")
    date_hierarchy = "created_at"
    actions = ["retry_failed"]
    readonly_fields = (
        "task_id",
        "task_type",
        "task_status",
        "progress",
        "progress_message",
        "error",
        "attempts",
        "owner",
        "runner",
        "task_data_pretty",
        "task_status_data_pretty",
        "runner_kwargs_pretty",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
    )
    exclude = ("task_data", "task_status_data", "runner_kwargs")

    @admin.display(description="task data")
    def task_data_pretty(self, obj):
        return pretty_json(obj.task_data)

    @admin.display(description="task status data")
    def task_status_data_pretty(self, obj):
        return pretty_json(obj.task_status_data)

    @admin.display(description="runner kwargs")
    def runner_kwargs_pretty(self, obj):
        return pretty_json(obj.runner_kwargs)

    def has_add_permission(self, request):
        return False

    @admin.action(description="Retry selected failed tasks")
    def retry_failed(self, request, queryset):
        retried = 0
        for task in queryset.filter(task_status=TaskStatus.FAILED):
            services.retry(task)
            retried += 1
        self.message_user(request, f"{retried} task(s) queued again", messages.SUCCESS)
