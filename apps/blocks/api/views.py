"""REST surface of blocks: list/filter/query/retrieve, create (same as createBlock), delete
(a removal task), scale, live parameters, management commands, and the endpoints the
block's own controller calls with its service token (instances, replace, health report).

Views stay thin: every operation is a function of ``apps.blocks.services``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, viewsets
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from apps.blocks import services
from apps.blocks.api.serializers import (
    AcceptedSerializer,
    BlockSerializer,
    HealthReportSerializer,
    InstanceSerializer,
    MgmtResultSerializer,
    MgmtSerializer,
    ParametersResultSerializer,
    ParametersSerializer,
    ReplaceResultSerializer,
    ReplaceSerializer,
    ScaleResultSerializer,
    ScaleSerializer,
)
from apps.blocks.auth import BlockServiceTokenAuthentication
from apps.blocks.filtersets import BlockFilterSet
from apps.blocks.models import Block
from apps.blocks.search import BLOCK_QUERY_FIELDS
from apps.core.api.mixins import QueryMixin
from apps.core.errors import ValidationFailed
from apps.core.permissions import IsAuthenticatedForWrites

SLUG_LOOKUP = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
INSTANCE_ID_PARAM = OpenApiParameter(
    "instance_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="instance id"
)


def _user(request: Request):
    return request.user if request.user.is_authenticated else None


def _body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ValidationFailed("the body must be a JSON object")
    return request.data


def spec_values(data: Any) -> dict[str, Any]:
    """The block spec values of a body that is either the values or the parser envelope."""
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be a JSON object")
    body = data.get("body")
    if isinstance(body, dict) and ("header" in data or "head" in data or "spec" in body):
        values = (body.get("spec") or {}).get("values", body.get("values"))
        if not isinstance(values, dict):
            raise ValidationFailed("body.spec.values must be a JSON object")
        return values
    return dict(data)


class BlockViewSet(
    QueryMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Blocks of the network: a component instantiated on one cluster."""

    queryset = (
        Block.objects.select_related("owner", "cluster")
        .prefetch_related("instances")
        .order_by("id")
    )
    serializer_class = BlockSerializer
    filterset_class = BlockFilterSet
    permission_classes = [IsAuthenticatedForWrites]
    authentication_classes = [
        BlockServiceTokenAuthentication,
        TokenAuthentication,
        SessionAuthentication,
    ]
    lookup_value_regex = SLUG_LOOKUP
    query_fields = BLOCK_QUERY_FIELDS

    @extend_schema(
        request=inline_serializer("BlockSpec", {"blockComponentURI": serializers.CharField()}),
        responses={202: AcceptedSerializer, 200: OpenApiTypes.OBJECT},
        description="The same as POST /api/createBlock: the spec values (or the whole parser "
        "envelope). The schema validation of the parser applies.",
    )
    def create(self, request: Request) -> Response:
        from apps.parser import validation

        values = validation.validate_values("createBlock", spec_values(request.data), [])
        code, body = services.create_block(values, user=_user(request))
        return Response(body, status=code)

    @extend_schema(responses={202: AcceptedSerializer, 200: OpenApiTypes.OBJECT})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        code, body = services.remove_block(pk, user=_user(request))
        return Response(body, status=code)

    @extend_schema(request=ScaleSerializer, responses=ScaleResultSerializer)
    @action(detail=True, methods=["post"])
    def scale(self, request: Request, pk: str | None = None) -> Response:
        serializer = ScaleSerializer(data=_body(request))
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = services.scale_block(
            pk,
            instances=data.get("instances"),
            delta=data.get("delta"),
            remove=data.get("remove"),
            force=data.get("force", False),
            user=_user(request),
            source=data.get("source") or "api",
        )
        return Response(result)

    @extend_schema(request=ParametersSerializer, responses=ParametersResultSerializer)
    @action(detail=True, methods=["post"])
    def parameters(self, request: Request, pk: str | None = None) -> Response:
        serializer = ParametersSerializer(data=_body(request))
        serializer.is_valid(raise_exception=True)
        result = services.update_parameters(
            pk,
            serializer.validated_data["parameters"],
            user=_user(request),
            wait_s=serializer.validated_data.get("wait_s", 5.0),
        )
        return Response(result)

    @extend_schema(request=MgmtSerializer, responses=MgmtResultSerializer)
    @action(detail=True, methods=["post"])
    def mgmt(self, request: Request, pk: str | None = None) -> Response:
        data = _body(request)
        result = services.execute_mgmt(
            pk,
            service=str(data.get("service") or ""),
            action=str(
                data.get("mgmt_action") or data.get("mgmtCommand") or data.get("action") or ""
            ),
            data=data.get("mgmt_data", data.get("mgmtData", data.get("payload"))),
            user=_user(request),
        )
        return Response(result)

    @extend_schema(responses=InstanceSerializer(many=True))
    @action(detail=True, methods=["get"])
    def instances(self, request: Request, pk: str | None = None) -> Response:
        """The instances the control plane keeps for the block (the mapper's source)."""
        block = services.get_block(pk)
        return Response(services.live_instance_documents(block))

    @extend_schema(
        request=ReplaceSerializer,
        responses=ReplaceResultSerializer,
        parameters=[INSTANCE_ID_PARAM],
    )
    @action(
        detail=True,
        methods=["post"],
        url_path=r"instances/(?P<instance_id>[A-Za-z0-9][A-Za-z0-9._\-]{0,127})/replace",
    )
    def replace(self, request: Request, pk: str | None = None, instance_id: str = "") -> Response:
        """Replace a failing instance (the health checker calls this)."""
        serializer = ReplaceSerializer(data=_body(request))
        serializer.is_valid(raise_exception=True)
        result = services.replace_instance(
            pk, instance_id, reason=serializer.validated_data["reason"], user=_user(request)
        )
        return Response(result)

    @extend_schema(
        request=HealthReportSerializer,
        responses=inline_serializer(
            "HealthReportResult",
            {"block_id": serializers.CharField(), "updated": serializers.IntegerField()},
        ),
    )
    @action(detail=True, methods=["post"], url_path="health-report")
    def health_report(self, request: Request, pk: str | None = None) -> Response:
        """The block controller's health (and metrics) report."""
        return Response(services.record_health(pk, _body(request), user=_user(request)))
