"""django-filter sets of the inference app, shared by the REST API and the admin."""

from __future__ import annotations

import django_filters

from apps.inference.choices import DeploymentStatus
from apps.inference.models import InferenceServerDeployment, RequestLog


class RequestLogFilterSet(django_filters.FilterSet):
    session_id = django_filters.CharFilter()
    block_id = django_filters.CharFilter()
    request_id = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="ts", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="ts", lookup_expr="lte")
    seq_no = django_filters.NumberFilter()

    class Meta:
        model = RequestLog
        fields = ["session_id", "block_id", "request_id", "since", "until", "seq_no"]


class DeploymentFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeploymentStatus.choices)
    cluster = django_filters.CharFilter(field_name="cluster_id")
    name = django_filters.CharFilter()
    tag = django_filters.CharFilter(method="filter_tag", help_text="has this tag")
    owner = django_filters.CharFilter(field_name="owner__username")

    class Meta:
        model = InferenceServerDeployment
        fields = ["status", "cluster", "name", "tag", "owner"]

    def filter_tag(self, queryset, name, value):
        return queryset.filter(tags__contains=[value])
