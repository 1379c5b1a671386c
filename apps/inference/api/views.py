"""REST surface of the inference app under /api/v1/inference/:

- ``logs/`` (list, filters, ``query/``) and the reference's reads ``logs/session/<id>/``,
  ``logs/request/<id>/``, ``logs/block/<id>/``, ``logs/session_block/?session_id=&block_id=``;
- ``deployments/``: adhoc inference servers run on a cluster (create 202, status, delete);
- ``search/``: the read-only search adhoc servers resolve ``query_parameters`` with.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from apps.core.api.mixins import QueryMixin
from apps.core.errors import ValidationFailed
from apps.core.permissions import IsOwnerOrStaffForWrites
from apps.core.query import QueryFields
from apps.inference import services
from apps.inference.api.serializers import (
    DeploymentCreateSerializer,
    DeploymentSerializer,
    RequestLogSerializer,
)
from apps.inference.filtersets import DeploymentFilterSet, RequestLogFilterSet
from apps.inference.models import InferenceServerDeployment, RequestLog

ANY_ID = r"[^/]{1,255}"
SLUG_LOOKUP = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"


def _user(request: Request):
    return request.user if request.user.is_authenticated else None


class RequestLogViewSet(QueryMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Requests logged by adhoc inference servers (oldest first). Reading needs an
    authenticated user: logs hold other users' request data."""

    queryset = RequestLog.objects.order_by("ts", "request_id")
    serializer_class = RequestLogSerializer
    filterset_class = RequestLogFilterSet
    permission_classes = [IsAuthenticated]
    query_fields = QueryFields(
        fields={
            "request_id": "request_id",
            "session_id": "session_id",
            "block_id": "block_id",
            "seq_no": "seq_no",
            "ts": "ts",
        }
    )

    def _page(self, queryset) -> Response:
        page = self.paginate_queryset(queryset)
        if page is not None:
            return self.get_paginated_response(self.get_serializer(page, many=True).data)
        return Response(self.get_serializer(queryset, many=True).data)

    @action(detail=False, methods=["get"], url_path=rf"session/(?P<session_id>{ANY_ID})")
    def session(self, request: Request, session_id: str) -> Response:
        return self._page(services.logs_of_session(session_id))

    @action(detail=False, methods=["get"], url_path=rf"request/(?P<request_id>{ANY_ID})")
    def request_logs(self, request: Request, request_id: str) -> Response:
        return self._page(services.logs_of_request(request_id))

    @action(detail=False, methods=["get"], url_path=rf"block/(?P<block_id>{ANY_ID})")
    def block(self, request: Request, block_id: str) -> Response:
        return self._page(services.logs_of_block(block_id))

    @extend_schema(
        parameters=[
            OpenApiParameter("session_id", OpenApiTypes.STR, required=True),
            OpenApiParameter("block_id", OpenApiTypes.STR, required=True),
        ]
    )
    @action(detail=False, methods=["get"], url_path="session_block", filterset_class=None)
    def session_block(self, request: Request) -> Response:
        return self._page(
            services.logs_of_session_block(
                request.query_params.get("session_id"), request.query_params.get("block_id")
            )
        )


class DeploymentViewSet(
    QueryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Adhoc inference servers run as workloads on a cluster and listed in the
    inference-server registry (``/api/v1/inference-servers/``)."""

    queryset = InferenceServerDeployment.objects.select_related("cluster", "owner")
    serializer_class = DeploymentSerializer
    filterset_class = DeploymentFilterSet
    permission_classes = [IsOwnerOrStaffForWrites]
    lookup_value_regex = SLUG_LOOKUP
    query_fields = QueryFields(
        fields={
            "deployment_id": "deployment_id",
            "name": "name",
            "cluster_id": "cluster_id",
            "status": "status",
            "public_url": "public_url",
        },
        json_fields={"config": "config", "metadata": "metadata", "tags": "tags"},
    )

    @extend_schema(request=DeploymentCreateSerializer, responses={202: DeploymentSerializer})
    def create(self, request: Request) -> Response:
        data = request.data
        if not isinstance(data, dict):
            raise ValidationFailed("the body must be a JSON object")
        deployment, _task = services.create_deployment(
            deployment_id=data.get("deployment_id"),
            cluster_id=data.get("cluster_id"),
            name=data.get("name"),
            config=data.get("config"),
            metadata=data.get("metadata"),
            tags=data.get("tags"),
            user=_user(request),
        )
        return Response(DeploymentSerializer(deployment).data, status=status.HTTP_202_ACCEPTED)

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        return Response(self.get_serializer(services.observe(self.get_object())).data)

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        wait = str(request.query_params.get("wait", "")).lower() in {"1", "true", "yes"}
        result = services.remove_deployment(self.get_object(), user=_user(request), wait=wait)
        return Response(result, status=status.HTTP_200_OK)


class SearchThrottle(AnonRateThrottle):
    # Servers search once per (session, query) and cache the choice; this bounds what an
    # anonymous caller can make the ranking sandbox do.
    rate = "600/min"


class InferenceSearchView(APIView):
    """The search adhoc inference servers resolve ``query_parameters`` with: the search
    engine (filter, then an optional ranking policy) as a read. Anyone may call it, as
    anyone may list blocks; it needs no credential in the data plane."""

    permission_classes = [AllowAny]
    throttle_classes = [SearchThrottle]

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={200: OpenApiTypes.OBJECT},
        description="Body: the search values {matchType, filter, rankingPolicyRule?, limit?} "
        "(or the AIOS envelope {body: {values}}). Answers {matchType, count, results}.",
    )
    def post(self, request: Request) -> Response:
        return Response(services.search_for_server(request.data))
