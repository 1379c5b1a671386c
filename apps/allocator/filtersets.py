"""django-filter sets of the allocator."""

from __future__ import annotations

import django_filters

from apps.allocator.models import Allocation


class AllocationFilterSet(django_filters.FilterSet):
    cluster = django_filters.CharFilter(field_name="cluster_id")
    node = django_filters.CharFilter(field_name="node_id")

    class Meta:
        model = Allocation
        fields = ["cluster", "node", "block_id", "instance_id", "shared_gpus"]
