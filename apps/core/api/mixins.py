"""Viewset mixins shared by every registry: the ``query/`` endpoint and owner handling."""

from __future__ import annotations

from django.db.models import Q
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.query import QueryError, QueryFields, compile_query

QueryRequestSerializer = inline_serializer(
    name="QueryRequest",
    fields={
        "query": serializers.JSONField(
            help_text="AIOS conditions ({variable, operator, value} / {logicalOperator, "
            "conditions}) or a Mongo-style filter ($and, $or, $in, $gte, $regex, ...)."
        )
    },
)


class QueryMixin:
    """Adds ``POST <collection>/query/`` compiled through :mod:`apps.core.query`.

    A viewset sets ``query_fields``: the allow-list of fields callers may filter on.
    """

    query_fields: QueryFields = QueryFields()

    @extend_schema(
        request=QueryRequestSerializer,
        examples=[
            OpenApiExample(
                "AIOS condition",
                value={"query": {"variable": "name", "operator": "==", "value": "x"}},
            ),
            OpenApiExample("Mongo filter", value={"query": {"name": {"$regex": "^x"}}}),
        ],
    )
    @action(detail=False, methods=["post"], url_path="query")
    def query(self, request: Request) -> Response:
        body = request.data
        if not isinstance(body, dict):
            raise QueryError("the body must be a JSON object with a 'query' key")
        query = body.get("query", body.get("filter", {}))
        queryset = self.filter_queryset(self.get_queryset()).filter(
            compile_query(query, self.query_fields)
        )
        page = self.paginate_queryset(queryset)
        if page is not None:
            return self.get_paginated_response(self.get_serializer(page, many=True).data)
        return Response(self.get_serializer(queryset, many=True).data)


class OwnedQuerysetMixin:
    """Objects carry an owner. Writes to them are the owner's or staff's (see
    ``IsOwnerOrStaffForWrites``). With ``owner_scoped_reads`` a non-staff user also only
    *sees* their own objects and ownerless (system) ones; registries leave it off, since
    the catalogue of a network is shared."""

    owner_scoped_reads = False

    def get_queryset(self):
        queryset = super().get_queryset()
        user = self.request.user
        if not self.owner_scoped_reads or user.is_staff:
            return queryset
        if not user.is_authenticated:
            return queryset.none()
        return queryset.filter(Q(owner=user) | Q(owner__isnull=True))

    def perform_create(self, serializer) -> None:
        user = self.request.user
        serializer.save(owner=user if user.is_authenticated else None)
