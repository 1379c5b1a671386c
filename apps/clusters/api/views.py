"""REST surface of clusters, nodes, GPUs, workloads and the gateway's pre-check map.

Views stay thin: every write goes through ``apps.clusters.gateway`` (pre-checks, tasks) or
the cluster's driver, exactly as the parser and the admin do.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.clusters import gateway, services
from apps.clusters.api.serializers import (
    ClusterMgmtCommandSerializer,
    ClusterPolicyMapSerializer,
    ClusterSerializer,
    ClusterSpecSerializer,
    ClusterTaskAcceptedSerializer,
    ClusterUpdateSerializer,
    GatewayConfigSerializer,
    GPUSerializer,
    NodeSerializer,
    NodeSpecSerializer,
    NodeUpdateSerializer,
    WorkloadCreateSerializer,
    WorkloadDesiredStateSerializer,
    WorkloadSerializer,
)
from apps.clusters.controller import ClusterController
from apps.clusters.drivers import WorkloadSpec, get_driver
from apps.clusters.filtersets import (
    ClusterFilterSet,
    GPUFilterSet,
    NodeFilterSet,
    WorkloadFilterSet,
)
from apps.clusters.models import GPU, Cluster, Node, Workload
from apps.clusters.specs import GATEWAY_MAP_KEYS
from apps.core.api.mixins import QueryMixin
from apps.core.errors import NotFound, ValidationFailed
from apps.core.permissions import IsAuthenticatedForWrites
from apps.core.query import QueryFields

SLUG_LOOKUP = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
FORCE_PARAM = OpenApiParameter(
    "force",
    OpenApiTypes.BOOL,
    description="remove even while workloads still run there (they are stopped)",
)


def spec_values(data: Any) -> dict[str, Any]:
    """The spec values of a body that is either the values themselves or the parser's
    envelope (``{"header"|"head", "body": {"spec": {"values": ...}}}``)."""
    if not isinstance(data, dict):
        raise ValidationFailed("the body must be a JSON object")
    body = data.get("body")
    if isinstance(body, dict) and ("header" in data or "head" in data or "spec" in body):
        values = (body.get("spec") or {}).get("values", body.get("values"))
        if not isinstance(values, dict):
            raise ValidationFailed("body.spec.values must be a JSON object")
        return values
    return dict(data)


def truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _user(request: Request):
    return request.user if request.user.is_authenticated else None


class ClusterViewSet(
    QueryMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Clusters of the network. Creating one is createCluster (202 + a provisioning task)."""

    queryset = Cluster.objects.select_related("owner").order_by("id")
    serializer_class = ClusterSerializer
    filterset_class = ClusterFilterSet
    permission_classes = [IsAuthenticatedForWrites]
    lookup_value_regex = SLUG_LOOKUP
    http_method_names = ["get", "post", "patch", "put", "delete", "head", "options"]
    query_fields = QueryFields(
        fields={
            "id": "id",
            "regionId": "region_id",
            "status": "status",
            "driver": "driver",
            "memory": "memory",
            "swap": "swap",
            "reputation": "reputation",
            "createdAt": "created_at",
        },
        json_fields={
            "gpus": "gpus",
            "vcpus": "vcpus",
            "storage": "storage",
            "network": "network",
            "config": "config",
            "tags": "tags",
            "clusterMetadata": "cluster_metadata",
        },
    )

    @extend_schema(request=ClusterSpecSerializer, responses={202: ClusterTaskAcceptedSerializer})
    def create(self, request: Request) -> Response:
        accepted = gateway.create_cluster(spec_values(request.data), user=_user(request))
        return Response(accepted.body(), status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=ClusterUpdateSerializer, responses=ClusterSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        cluster = gateway.update_cluster(pk, spec_values(request.data), user=_user(request))
        return Response(services.cluster_document(cluster))

    @extend_schema(parameters=[FORCE_PARAM], responses={202: ClusterTaskAcceptedSerializer})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        accepted = gateway.remove_cluster(
            pk, user=_user(request), force=truthy(request.query_params.get("force", ""))
        )
        return Response(accepted.body(), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=ClusterMgmtCommandSerializer,
        responses=inline_serializer("ClusterMgmtResult", {"result": serializers.JSONField()}),
    )
    @action(detail=True, methods=["post"])
    def mgmt(self, request: Request, pk: str | None = None) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        result = gateway.execute_cluster_mgmt(
            pk,
            service=data.get("service") or "controller",
            action=data.get("action") or data.get("mgmtCommand") or data.get("mgmt_action") or "",
            payload=data.get("payload", data.get("mgmtData", data.get("mgmt_data"))),
            user=_user(request),
        )
        return Response(result)

    @extend_schema(
        responses=inline_serializer("ClusterStatus", {"status": serializers.JSONField()})
    )
    @action(detail=True, methods=["get"], url_path="status")
    def driver_status(self, request: Request, pk: str | None = None) -> Response:
        return Response(get_driver(self.get_object()).status())

    @extend_schema(responses=NodeSerializer(many=True))
    @action(detail=True, methods=["get"])
    def nodes(self, request: Request, pk: str | None = None) -> Response:
        cluster = self.get_object()
        nodes = services.nodes_with_gpus(cluster.nodes.all())
        return Response([services.node_document(n) for n in nodes])

    @extend_schema(request=ClusterPolicyMapSerializer, responses=ClusterPolicyMapSerializer)
    @action(detail=True, methods=["get", "patch", "put"], url_path="pre-check-policies")
    def pre_check_policies(self, request: Request, pk: str | None = None) -> Response:
        """The cluster controller's pre-check map (``config.actionsPolicyMap``). PATCH/PUT
        update it like AIOS ``/pre-check-policies/update``: empty string removes a rule."""
        cluster = self.get_object()
        if request.method == "GET":
            return Response({"actionsPolicyMap": cluster.actions_policy_map})
        gateway.ensure_can_manage(cluster, _user(request))
        data = request.data if isinstance(request.data, dict) else {}
        changes = data.get("actionsPolicyMap", data)
        return Response({"actionsPolicyMap": ClusterController(cluster).update_policy_map(changes)})


class NodeViewSet(
    QueryMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Nodes of every cluster. Creating one is addNode (202 + a node_addition task)."""

    queryset = services.nodes_with_gpus(Node.objects.select_related("cluster")).order_by("id")
    serializer_class = NodeSerializer
    filterset_class = NodeFilterSet
    permission_classes = [IsAuthenticatedForWrites]
    lookup_value_regex = SLUG_LOOKUP
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    query_fields = QueryFields(
        fields={
            "id": "id",
            "clusterId": "cluster_id",
            "status": "status",
            "schedulable": "schedulable",
            "memory": "memory",
            "swap": "swap",
            "lastHeartbeat": "last_heartbeat",
        },
        json_fields={
            "vcpus": "vcpus",
            "storage": "storage",
            "network": "network",
            "tags": "tags",
            "nodeMetadata": "node_metadata",
        },
    )

    @extend_schema(request=NodeSpecSerializer, responses={202: ClusterTaskAcceptedSerializer})
    def create(self, request: Request) -> Response:
        accepted = gateway.add_node(spec_values(request.data), user=_user(request))
        return Response(accepted.body(), status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=NodeUpdateSerializer, responses=NodeSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        node = gateway.update_node(pk, data, user=_user(request))
        return Response(services.node_document(node))

    @extend_schema(parameters=[FORCE_PARAM], responses={202: ClusterTaskAcceptedSerializer})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        accepted = gateway.remove_node(
            pk, user=_user(request), force=truthy(request.query_params.get("force", ""))
        )
        return Response(accepted.body(), status=status.HTTP_202_ACCEPTED)


class GPUViewSet(viewsets.ReadOnlyModelViewSet):
    """Every GPU of the network (placement inventory)."""

    queryset = GPU.objects.select_related("node").order_by("node_id", "index")
    serializer_class = GPUSerializer
    filterset_class = GPUFilterSet


class WorkloadViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Workloads (processes on the local driver) with their observed state. Blocks, vDAG
    controllers and functions create theirs; staff may create ad-hoc ones."""

    queryset = Workload.objects.order_by("cluster_id", "node_id", "id")
    serializer_class = WorkloadSerializer
    filterset_class = WorkloadFilterSet
    permission_classes = [IsAuthenticatedForWrites]
    lookup_value_regex = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"

    def _driver_for(self, workload: Workload, request: Request):
        gateway.ensure_can_manage(workload.cluster, _user(request))
        return get_driver(workload.cluster)

    @extend_schema(request=WorkloadCreateSerializer, responses={201: WorkloadSerializer})
    def create(self, request: Request) -> Response:
        if not request.user.is_staff:
            self.permission_denied(request, message="only staff create workloads directly")
        incoming = WorkloadCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = dict(incoming.validated_data)
        cluster = services.get_cluster(data.pop("cluster_id"))
        ref = get_driver(cluster).create_workload(WorkloadSpec(**data))
        return Response(
            WorkloadSerializer(Workload.objects.get(pk=ref.id), context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(responses={202: WorkloadSerializer})
    def destroy(self, request: Request, pk: str | None = None) -> Response:
        workload = self.get_object()
        self._driver_for(workload, request).remove_workload(workload.id)
        remaining = Workload.objects.filter(pk=workload.pk).first()
        if remaining is None:  # the driver finished the removal at once (no live process)
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(
            WorkloadSerializer(remaining, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(request=None, responses=WorkloadSerializer)
    @action(detail=True, methods=["post"])
    def restart(self, request: Request, pk: str | None = None) -> Response:
        workload = self.get_object()
        self._driver_for(workload, request).restart_workload(workload.id)
        return Response(_fresh_workload(workload, request))

    @extend_schema(request=WorkloadDesiredStateSerializer, responses=WorkloadSerializer)
    @action(detail=True, methods=["post"], url_path="desired-state")
    def desired_state(self, request: Request, pk: str | None = None) -> Response:
        workload = self.get_object()
        incoming = WorkloadDesiredStateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        self._driver_for(workload, request).set_desired_state(
            workload.id, incoming.validated_data["desired_state"]
        )
        return Response(_fresh_workload(workload, request))


def _fresh_workload(workload: Workload, request: Request) -> dict:
    """The row as it is now; a driver may have finished (deleted) it meanwhile."""
    fresh = Workload.objects.filter(pk=workload.pk).first()
    if fresh is None:
        raise NotFound(f"workload {workload.pk!r} is gone")
    return WorkloadSerializer(fresh, context={"request": request}).data


class GatewayConfigView(APIView):
    """The network gateway's pre-check map and policy execution mode (staff change it)."""

    def get_permissions(self):
        if self.request.method in ("GET", "HEAD", "OPTIONS"):
            return [IsAuthenticatedForWrites()]
        return [IsAdminUser()]

    @extend_schema(responses=GatewayConfigSerializer)
    def get(self, request: Request) -> Response:
        return Response(GatewayConfigSerializer(services.gateway_config()).data)

    @extend_schema(request=GatewayConfigSerializer, responses=GatewayConfigSerializer)
    def patch(self, request: Request) -> Response:
        config = services.gateway_config()
        data = request.data if isinstance(request.data, dict) else {}
        if "actions_policy_map" in data:
            config = gateway.update_precheck_policies(data["actions_policy_map"], replace=True)
        incoming = GatewayConfigSerializer(
            config,
            data={k: v for k, v in data.items() if k != "actions_policy_map"},
            partial=True,
        )
        incoming.is_valid(raise_exception=True)
        incoming.save()
        return Response(GatewayConfigSerializer(config).data)


class GatewayPreCheckUpdateView(APIView):
    """AIOS ``POST /pre-check-policies/update``: ``{action: uri}``; "" removes a rule."""

    permission_classes = [IsAdminUser]

    @extend_schema(
        request=inline_serializer(
            "PreCheckPolicyUpdate",
            {k: serializers.CharField(required=False) for k in sorted(GATEWAY_MAP_KEYS)},
        ),
        responses=GatewayConfigSerializer,
    )
    def post(self, request: Request) -> Response:
        config = gateway.update_precheck_policies(
            request.data if isinstance(request.data, dict) else {}
        )
        return Response(GatewayConfigSerializer(config).data)
