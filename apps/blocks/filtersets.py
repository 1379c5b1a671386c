"""django-filter sets of the blocks app, shared by the REST API and the admin."""

from __future__ import annotations

import django_filters

from apps.blocks.choices import BlockStatus, InstanceHealth, InstanceStatus
from apps.blocks.models import Block, Instance


class BlockFilterSet(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=BlockStatus.choices)
    cluster = django_filters.CharFilter(field_name="cluster_id")
    component = django_filters.CharFilter(field_name="component_uri")
    owner = django_filters.CharFilter(field_name="owner__username")
    tag = django_filters.CharFilter(method="filter_tag", label="has this tag")
    node = django_filters.CharFilter(
        field_name="instances__node_id", distinct=True, label="has an instance on this node"
    )

    class Meta:
        model = Block
        fields = ["status", "cluster", "component", "owner", "tag", "node"]

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tags__contains=[value])


class InstanceFilterSet(django_filters.FilterSet):
    block = django_filters.CharFilter(field_name="block_id")
    node = django_filters.CharFilter(field_name="node_id")
    status = django_filters.MultipleChoiceFilter(choices=InstanceStatus.choices)
    health = django_filters.MultipleChoiceFilter(choices=InstanceHealth.choices)

    class Meta:
        model = Instance
        fields = ["block", "node", "status", "health"]
