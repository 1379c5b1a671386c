"""django-filter sets of the vdags app, shared by the REST API and the admin."""

from __future__ import annotations

import django_filters

from apps.vdags.choices import ControllerStatus, VDagStatus
from apps.vdags.models import QualitySample, VDag, VDagController


class VDagFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=VDagStatus.choices)
    name = django_filters.CharFilter(field_name="name")
    name_contains = django_filters.CharFilter(field_name="name", lookup_expr="icontains")
    version = django_filters.CharFilter(field_name="version")
    release_tag = django_filters.CharFilter(field_name="release_tag")
    tag = django_filters.CharFilter(method="filter_tag", help_text="has this discovery tag")
    block = django_filters.CharFilter(method="filter_block", help_text="routes through block")
    nests = django_filters.CharFilter(method="filter_nests", help_text="nests this vDAG URI")
    owner = django_filters.CharFilter(field_name="owner__username")

    class Meta:
        model = VDag
        fields = ["status", "name", "version", "release_tag", "tag", "block", "nests", "owner"]

    def filter_tag(self, queryset, name, value):
        return queryset.filter(discovery_tags__contains=[value])

    def filter_block(self, queryset, name, value):
        return queryset.filter(block_ids__contains=[value])

    def filter_nests(self, queryset, name, value):
        return queryset.filter(nested_vdags__contains=[value])


class VDagControllerFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=ControllerStatus.choices)
    vdag_uri = django_filters.CharFilter(field_name="vdag_id")
    cluster = django_filters.CharFilter(field_name="cluster_id")
    tag = django_filters.CharFilter(method="filter_tag", help_text="has this search tag")
    owner = django_filters.CharFilter(field_name="owner__username")

    class Meta:
        model = VDagController
        fields = ["status", "vdag_uri", "cluster", "tag", "owner"]

    def filter_tag(self, queryset, name, value):
        return queryset.filter(search_tags__contains=[value])


class QualitySampleFilterSet(django_filters.FilterSet):
    vdag_uri = django_filters.CharFilter()
    controller = django_filters.CharFilter(field_name="vdag_controller_id")
    session_id = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="ts", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="ts", lookup_expr="lte")

    class Meta:
        model = QualitySample
        fields = ["vdag_uri", "controller", "session_id", "since", "until"]
