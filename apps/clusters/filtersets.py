"""django-filter sets of the clusters app, shared by the REST API and the admin."""

from __future__ import annotations

import django_filters

from apps.clusters.choices import (
    ClusterStatus,
    DesiredState,
    DriverName,
    NodeStatus,
    WorkloadKind,
    WorkloadStatus,
)
from apps.clusters.models import GPU, Cluster, Node, Workload


class _TagFilterMixin(django_filters.FilterSet):
    tag = django_filters.CharFilter(method="filter_tag", help_text="has this tag")

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tags__contains=[value])


class ClusterFilterSet(_TagFilterMixin):
    status = django_filters.ChoiceFilter(choices=ClusterStatus.choices)
    driver = django_filters.ChoiceFilter(choices=DriverName.choices)
    region = django_filters.CharFilter(field_name="region_id")
    owner = django_filters.CharFilter(field_name="owner__username")

    class Meta:
        model = Cluster
        fields = ["status", "driver", "region", "owner", "tag"]


class NodeFilterSet(_TagFilterMixin):
    cluster = django_filters.CharFilter(field_name="cluster_id")
    status = django_filters.ChoiceFilter(choices=NodeStatus.choices)
    gpu_model = django_filters.CharFilter(
        field_name="gpus__model", lookup_expr="iexact", distinct=True
    )

    class Meta:
        model = Node
        fields = ["cluster", "status", "schedulable", "gpu_model", "tag"]


class GPUFilterSet(django_filters.FilterSet):
    node = django_filters.CharFilter(field_name="node_id")
    cluster = django_filters.CharFilter(field_name="node__cluster_id")
    model = django_filters.CharFilter(field_name="model", lookup_expr="iexact")

    class Meta:
        model = GPU
        fields = ["node", "cluster", "model", "shared"]


class WorkloadFilterSet(django_filters.FilterSet):
    cluster = django_filters.CharFilter(field_name="cluster_id")
    node = django_filters.CharFilter(field_name="node_id")
    kind = django_filters.ChoiceFilter(choices=WorkloadKind.choices)
    status = django_filters.ChoiceFilter(choices=WorkloadStatus.choices)
    desired_state = django_filters.ChoiceFilter(choices=DesiredState.choices)

    class Meta:
        model = Workload
        fields = ["cluster", "node", "kind", "status", "desired_state", "block_id", "instance_id"]
