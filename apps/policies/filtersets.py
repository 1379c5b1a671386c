"""Filters of the policies registries (the REST lists and the admin share them)."""

from __future__ import annotations

import django_filters
from django.db.models import Q, QuerySet

from apps.policies.choices import ExecutorStatus, FunctionStatus, JobStatus, PolicyType
from apps.policies.models import PolicyExecutor, PolicyFunction, PolicyGraph, PolicyJob, PolicyRule


class PolicyRuleFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", help_text="Text in the URI or description.")
    name = django_filters.CharFilter()
    name_prefix = django_filters.CharFilter(field_name="name", lookup_expr="startswith")
    version = django_filters.CharFilter()
    release_tag = django_filters.CharFilter()
    type = django_filters.ChoiceFilter(choices=PolicyType.choices)
    builtin = django_filters.BooleanFilter()
    tag = django_filters.CharFilter(method="has_tag", help_text="Rules carrying this tag.")
    sha256 = django_filters.CharFilter(field_name="code_sha256")
    owner = django_filters.CharFilter(field_name="owner__username")

    class Meta:
        model = PolicyRule
        fields = ["name", "version", "release_tag", "type", "builtin"]

    def search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(
            Q(policy_rule_uri__icontains=value) | Q(description__icontains=value)
        )

    def has_tag(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(tags__contains=[value])


class PolicyExecutorFilterSet(django_filters.FilterSet):
    executor_status = django_filters.ChoiceFilter(choices=ExecutorStatus.choices)

    class Meta:
        model = PolicyExecutor
        fields = ["executor_status"]


class PolicyJobFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)
    policy_rule_uri = django_filters.CharFilter()
    executor_id = django_filters.CharFilter(field_name="executor__executor_id")
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = PolicyJob
        fields = ["status", "policy_rule_uri"]


class PolicyFunctionFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=FunctionStatus.choices)
    policy_rule_uri = django_filters.CharFilter()

    class Meta:
        model = PolicyFunction
        fields = ["status", "policy_rule_uri"]


class PolicyGraphFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter()
    version = django_filters.CharFilter()
    release_tag = django_filters.CharFilter()
    tag = django_filters.CharFilter(method="has_tag")

    class Meta:
        model = PolicyGraph
        fields = ["name", "version", "release_tag"]

    def has_tag(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(search_tags__contains=[value])
