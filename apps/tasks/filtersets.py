"""Filters for the tasks list (used by the REST API and the admin alike)."""

import django_filters

from apps.tasks.choices import TaskStatus
from apps.tasks.models import Task


class TaskFilterSet(django_filters.FilterSet):
    task_type = django_filters.CharFilter()
    task_status = django_filters.ChoiceFilter(choices=TaskStatus.choices)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Task
        fields = ["task_type", "task_status"]
