"""django-filter sets of the registries, shared by the REST lists and the admin.

Filter names are the API's keys; ``tags`` matches records whose tag list contains the
value; JSON sub-keys that people filter on often (component mode, region…) get their
own filter, and anything else goes through ``POST <collection>/query/``.
"""

from __future__ import annotations

import django_filters
from django.db.models import QuerySet

from apps.registries.choices import AssetSource, ComponentMode, SpecType
from apps.registries.models import (
    Asset,
    AssetRegistry,
    Component,
    ContainerRegistry,
    InferenceServer,
    Spec,
    Template,
)


def _tags_contain(queryset: QuerySet, name: str, value: str) -> QuerySet:
    return queryset.filter(tags__contains=[value]) if value else queryset


class TagsFilterMixin(django_filters.FilterSet):
    tags = django_filters.CharFilter(method=_tags_contain, help_text="has this tag")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")


class SpecFilterSet(TagsFilterMixin):
    specType = django_filters.ChoiceFilter(field_name="spec_type", choices=SpecType.choices)
    specName = django_filters.CharFilter(field_name="name")
    specNameContains = django_filters.CharFilter(field_name="name", lookup_expr="icontains")
    version = django_filters.CharFilter()
    tag = django_filters.CharFilter(help_text="the version tag (release tag)")

    class Meta:
        model = Spec
        fields: list[str] = []


class TemplateFilterSet(TagsFilterMixin):
    templateName = django_filters.CharFilter(field_name="name")
    templatePolicyRuleUri = django_filters.CharFilter(field_name="template_policy_rule_uri")
    version = django_filters.CharFilter()
    tag = django_filters.CharFilter()

    class Meta:
        model = Template
        fields: list[str] = []


class ComponentFilterSet(TagsFilterMixin):
    componentType = django_filters.CharFilter(field_name="component_type")
    name = django_filters.CharFilter()
    nameContains = django_filters.CharFilter(field_name="name", lookup_expr="icontains")
    version = django_filters.CharFilter()
    releaseTag = django_filters.CharFilter(field_name="release_tag")
    componentMode = django_filters.ChoiceFilter(
        field_name="container_registry_info__componentMode", choices=ComponentMode.choices
    )
    containerRegistryId = django_filters.CharFilter(
        field_name="container_registry_info__containerRegistryId"
    )

    class Meta:
        model = Component
        fields: list[str] = []


class ContainerRegistryFilterSet(TagsFilterMixin):
    container_registry_name = django_filters.CharFilter(field_name="name")
    storage_type = django_filters.CharFilter(field_name="storage_info__storage_type")
    registry_type = django_filters.CharFilter(field_name="storage_info__registry_type")

    class Meta:
        model = ContainerRegistry
        fields: list[str] = []


class AssetRegistryFilterSet(TagsFilterMixin):
    asset_registry_name = django_filters.CharFilter(field_name="name")

    class Meta:
        model = AssetRegistry
        fields: list[str] = []


class AssetFilterSet(TagsFilterMixin):
    asset_name = django_filters.CharFilter(field_name="name")
    version = django_filters.CharFilter()
    tag = django_filters.CharFilter()
    source = django_filters.ChoiceFilter(choices=AssetSource.choices)
    sha256 = django_filters.CharFilter()
    assets_db_id = django_filters.UUIDFilter(field_name="assets_db_id")

    class Meta:
        model = Asset
        fields: list[str] = []


class InferenceServerFilterSet(TagsFilterMixin):
    inference_server_name = django_filters.CharFilter(field_name="name")
    region = django_filters.CharFilter(field_name="metadata__region")
    provider = django_filters.CharFilter(field_name="metadata__provider")
    cluster_id = django_filters.CharFilter(field_name="metadata__cluster_id")
    gpu_available = django_filters.BooleanFilter(field_name="metadata__gpu_available")

    class Meta:
        model = InferenceServer
        fields: list[str] = []
