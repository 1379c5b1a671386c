"""``POST /api/v1/search/``: the search engine over REST (same IR as the parser's
``search``/``filter`` actions)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.errors import ValidationFailed
from apps.parser import validation
from apps.search import engine, registry
from apps.search.api.serializers import (
    SearchEntitySerializer,
    SearchRequestSerializer,
    SearchResultSerializer,
)


class SearchViewSet(viewsets.ViewSet):
    """Filter any entity type, optionally ranked by a policy."""

    @extend_schema(
        request=SearchRequestSerializer,
        responses=SearchResultSerializer,
        examples=[
            OpenApiExample(
                "Blocks on GPU clusters of a vendor",
                value={
                    "matchType": "block",
                    "filter": {
                        "clusterQuery": {
                            "variable": "clusterMetadata.vendor",
                            "operator": "==",
                            "value": "dma-bangalore",
                        },
                        "blockQuery": {"variable": "minInstances", "operator": ">=", "value": 1},
                    },
                },
                request_only=True,
            )
        ],
    )
    def create(self, request: Request) -> Response:
        values = request.data
        if not isinstance(values, dict):
            raise ValidationFailed("the body must be a JSON object")
        ranked = "rankingPolicyRule" in values
        values = validation.validate_values("search" if ranked else "filter", values)
        return Response(engine.run_ir(values, ranked=ranked))

    @extend_schema(responses=SearchEntitySerializer(many=True))
    @action(detail=False, methods=["get"])
    def entities(self, request: Request) -> Response:
        """The searchable entity types now registered, with their fields and relations."""
        out = []
        for match_type, entity in sorted(registry.registered().items()):
            out.append(
                {
                    "matchType": match_type,
                    "queryKey": entity.key,
                    "filterKeys": engine.allowed_filter_keys(match_type),
                    "fields": entity.fields.public_names(),
                    "idKey": entity.id_key,
                    "relations": [
                        {
                            "target": r.target,
                            "localField": r.local_field,
                            "remoteField": r.remote_field,
                        }
                        for r in registry.relations_of(entity)
                    ],
                }
            )
        return Response(out)
