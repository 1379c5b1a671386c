"""Filters of the parser task log (REST list and admin)."""

import django_filters

from apps.parser.choices import ParserTaskStatus
from apps.parser.models import ParserTask


class ParserTaskFilterSet(django_filters.FilterSet):
    action = django_filters.CharFilter()
    status = django_filters.ChoiceFilter(choices=ParserTaskStatus.choices)
    response_status = django_filters.NumberFilter()
    template_uri = django_filters.CharFilter()
    spec_uri = django_filters.CharFilter()
    owner = django_filters.CharFilter(field_name="owner__username")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = ParserTask
        fields: list[str] = []
