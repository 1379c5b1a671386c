"""REST surface of the vdags app: ``/api/v1/vdags/`` and ``/api/v1/vdag-controllers/``.

Views stay thin: creation of a vDAG is the parser's ``createvDAG``; everything else calls
``apps.vdags.services``.
"""

from __future__ import annotations

import logging

import redis
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from apps.core.api.mixins import QueryMixin
from apps.core.errors import Forbidden, ValidationFailed
from apps.core.permissions import IsOwnerOrStaffForWrites
from apps.core.query import QueryFields
from apps.vdags.api.serializers import (
    ControllerAcceptedSerializer,
    QualitySampleSerializer,
    RemovedSerializer,
    VDagControllerCreateSerializer,
    VDagControllerSerializer,
    VDagListSerializer,
    VDagSerializer,
)
from apps.vdags.filtersets import (
    QualitySampleFilterSet,
    VDagControllerFilterSet,
    VDagFilterSet,
)
from apps.vdags.models import QualitySample, VDag, VDagController
from apps.vdags.services import controllers, telemetry, vdags

log = logging.getLogger("aios.vdags.api")

# vdagName:version-release-tag: letters, digits, '_', '.', '-', ':' and '+'.
URI_LOOKUP = r"[A-Za-z0-9_][A-Za-z0-9_.:+\-]{0,299}"
SLUG_LOOKUP = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"


def _user(request: Request):
    return request.user if request.user.is_authenticated else None


class VDagViewSet(
    QueryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """vDAGs by URI (``name:version-release-tag``). Create one with ``POST
    /api/createvDAG``; this shows its ``status`` and compiled graph."""

    queryset = VDag.objects.select_related("owner").prefetch_related("controllers")
    serializer_class = VDagSerializer
    filterset_class = VDagFilterSet
    permission_classes = [IsOwnerOrStaffForWrites]
    lookup_field = "vdag_uri"
    lookup_url_kwarg = "vdag_uri"
    lookup_value_regex = URI_LOOKUP
    query_fields: QueryFields = vdags.VDAG_QUERY_FIELDS

    def get_serializer_class(self):
        if self.action in ("list", "query"):
            return VDagListSerializer
        return VDagSerializer

    def perform_destroy(self, instance: VDag) -> None:
        vdags.delete_vdag(instance)


class VDagControllerViewSet(
    QueryMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """vDAG controllers: the deployed gRPC gateways of vDAGs (``vDAGInferenceService``)."""

    queryset = VDagController.objects.select_related("vdag", "cluster", "owner")
    serializer_class = VDagControllerSerializer
    filterset_class = VDagControllerFilterSet
    permission_classes = [IsOwnerOrStaffForWrites]
    lookup_value_regex = SLUG_LOOKUP
    query_fields = QueryFields(
        fields={
            "vdag_controller_id": "vdag_controller_id",
            "id": "vdag_controller_id",
            "vdag_uri": "vdag_id",
            "vdagURI": "vdag_id",
            "cluster_id": "cluster_id",
            "status": "status",
            "public_url": "public_url",
            "owner": "owner__username",
            "createdAt": "created_at",
        },
        json_fields={"config": "config", "metadata": "metadata", "search_tags": "search_tags"},
    )

    @extend_schema(
        request=VDagControllerCreateSerializer,
        responses={202: ControllerAcceptedSerializer},
        description="Runs the cluster's add_vdag_controller pre-check, starts the controller "
        "as a workload and answers 202 with a vdag_controller_creation task; the controller "
        "is 'running' once its gRPC port (public_url) answers.",
    )
    def create(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ValidationFailed("the body must be a JSON object")
        data = request.data
        controller, _task = controllers.create_controller(
            vdag_controller_id=data.get("vdag_controller_id"),
            vdag_uri=data.get("vdag_uri"),
            cluster_id=data.get("cluster_id"),
            config=data.get("config"),
            metadata=data.get("metadata"),
            search_tags=data.get("search_tags"),
            user=_user(request),
        )
        return Response(
            ControllerAcceptedSerializer(controller).data, status=status.HTTP_202_ACCEPTED
        )

    def retrieve(self, request: Request, *args, **kwargs) -> Response:
        # Status is observed, not remembered: is the gRPC port answering now?
        controller = controllers.observe(self.get_object())
        return Response(self.get_serializer(controller).data)

    @extend_schema(
        responses={200: RemovedSerializer},
        parameters=[
            OpenApiParameter(
                "wait", OpenApiTypes.BOOL, description="answer once its processes are gone"
            )
        ],
    )
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        controller = self.get_object()
        if not request.user.is_authenticated:
            raise Forbidden("authentication is required")
        wait = str(request.query_params.get("wait", "")).lower() in {"1", "true", "yes"}
        result = controllers.remove_controller(controller, user=_user(request), wait=wait)
        return Response(result, status=status.HTTP_200_OK)

    @extend_schema(responses={200: VDagControllerSerializer(many=True)})
    @action(
        detail=False,
        methods=["get"],
        url_path=rf"by-vdag-uri/(?P<vdag_uri>{URI_LOOKUP})",
        filterset_class=None,
        pagination_class=None,
    )
    def by_vdag_uri(self, request: Request, vdag_uri: str) -> Response:
        """The controllers serving a vDAG (reference: ``GET /vdag-controllers/by-vdag-uri/``)."""
        vdags.get_vdag(vdag_uri)  # 404 for an unknown vDAG
        found = [controllers.observe(c) for c in controllers.controllers_of(vdag_uri)]
        return Response(VDagControllerSerializer(found, many=True).data)


class QualitySampleViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """Request/response pairs recorded by vDAG controllers' quality checkers (audit). Filtering
    by ``controller`` or ``vdag_uri`` first copies what those controllers recorded since the
    last collection (the beat task does it for all every few seconds)."""

    queryset = QualitySample.objects.order_by("ts", "id")
    serializer_class = QualitySampleSerializer
    filterset_class = QualitySampleFilterSet
    permission_classes = [IsAuthenticated]

    def list(self, request: Request, *args, **kwargs) -> Response:
        wanted = VDagController.objects.none()
        if request.query_params.get("controller"):
            wanted = VDagController.objects.filter(pk=request.query_params["controller"])
        elif request.query_params.get("vdag_uri"):
            wanted = VDagController.objects.filter(vdag_id=request.query_params["vdag_uri"])
        for controller in wanted[:20]:
            try:
                telemetry.collect_quality(controller)
            except redis.RedisError:  # stale data is better than none; the beat catches up
                log.warning("event=quality_collect_failed controller=%s", controller.pk)
        return super().list(request, *args, **kwargs)
