"""REST surface of the parser: the action endpoints and the parser task log."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api.mixins import OwnedQuerysetMixin, QueryMixin
from apps.core.query import QueryFields
from apps.parser import actions, services
from apps.parser.api.serializers import ParserTaskSerializer, WithSpecBodySerializer
from apps.parser.filtersets import ParserTaskFilterSet
from apps.parser.models import ParserTask
from apps.registries.api.views import NulSafeMixin

TASK_HEADER = "X-AIOS-Parser-Task"

ACTION_PARAMETER = OpenApiParameter(
    "action",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    enum=[*actions.ACTIONS, *sorted(actions.ALIASES)],
    description="the parser action (aliases as in the AIOS docs are accepted)",
)
ACTION_RESPONSES = {
    200: OpenApiResponse(OpenApiTypes.OBJECT, description="search/filter results, or done"),
    201: OpenApiResponse(OpenApiTypes.OBJECT, description="the created resource"),
    202: OpenApiResponse(OpenApiTypes.OBJECT, description="{task_id, status_url}: long action"),
    400: OpenApiResponse(description="invalid spec: details list a JSON pointer per error"),
    401: OpenApiResponse(description="authentication required"),
    404: OpenApiResponse(description="unknown action, template or spec"),
    409: OpenApiResponse(description="already exists"),
    422: OpenApiResponse(description="the template's policy failed"),
    501: OpenApiResponse(description="the action's backend is not implemented yet"),
}
ENVELOPE_EXAMPLE = OpenApiExample(
    "createComponent",
    value={
        "header": {"templateUri": "Parser/V1", "parameters": {}},
        "body": {
            "spec": {
                "values": {
                    "componentId": {"name": "echo", "version": "1.0.0", "releaseTag": "stable"},
                    "componentType": "model",
                    "containerRegistryInfo": {
                        "componentMode": "aios",
                        "containerImageMetadata": {"entrypoint": "examples.echo:EchoBlock"},
                    },
                }
            }
        },
    },
    request_only=True,
)


def _respond(outcome: services.Outcome) -> Response:
    response = Response(outcome.body, status=outcome.status)
    response[TASK_HEADER] = str(outcome.task.id)
    return response


class ParserActionView(APIView):
    """``POST /api/<action>`` with a spec envelope."""

    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="parser_action",
        summary="Run a parser action on a spec envelope",
        parameters=[ACTION_PARAMETER],
        request=OpenApiTypes.OBJECT,
        responses=ACTION_RESPONSES,
        examples=[ENVELOPE_EXAMPLE],
        tags=["parser"],
    )
    def post(self, request: Request, action: str) -> Response:
        return _respond(services.execute(action, request.data, user=request.user))


class ParserWithSpecView(APIView):
    """``POST /api/with-spec/<action>?specUri=<uri>``: run a stored spec."""

    permission_classes = [IsAuthenticated]
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="parser_action_with_spec",
        summary="Run a parser action on a spec from the spec store",
        parameters=[
            ACTION_PARAMETER,
            OpenApiParameter("specUri", OpenApiTypes.STR, OpenApiParameter.QUERY, required=True),
        ],
        request=WithSpecBodySerializer,
        responses=ACTION_RESPONSES,
        tags=["parser"],
    )
    def post(self, request: Request, action: str) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        outcome = services.execute_with_spec(
            action,
            request.query_params.get("specUri"),
            user=request.user,
            parameters=data.get("parameters"),
        )
        return _respond(outcome)


class ParserTaskViewSet(
    NulSafeMixin,
    OwnedQuerysetMixin,
    QueryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The log of parser calls; users see their own, staff see all."""

    queryset = ParserTask.objects.select_related("owner")
    serializer_class = ParserTaskSerializer
    filterset_class = ParserTaskFilterSet
    permission_classes = [IsAuthenticated]
    owner_scoped_reads = True
    query_fields = QueryFields.of(
        "id",
        "action",
        "requested_action",
        "template_uri",
        "spec_uri",
        "status",
        "response_status",
        "duration_ms",
        "created_at",
        "finished_at",
        json=("spec", "response_body"),
        owner="owner__username",
    )

    @extend_schema(
        summary="Run the same spec again, as the caller",
        request=None,
        responses=ACTION_RESPONSES,
    )
    @action(detail=True, methods=["post"], url_path="re-execute")
    def re_execute(self, request: Request, pk: str | None = None) -> Response:
        task = self.get_object()
        return _respond(services.re_execute(task, user=request.user))
