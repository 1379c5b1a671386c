"""REST surface of the metrics system: node and cluster live metrics with history, entity
(block/vDAG) metrics, the query endpoint and Prometheus exposition."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import HttpResponse
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.clusters.models import Cluster, Node
from apps.core.errors import NotFound, ValidationFailed
from apps.core.query import QueryError
from apps.metrics import query as metrics_query
from apps.metrics import services

RANGE_PARAMS = [
    OpenApiParameter("since", OpenApiTypes.STR, description="ISO-8601 time or epoch seconds"),
    OpenApiParameter("until", OpenApiTypes.STR, description="ISO-8601 time or epoch seconds"),
    OpenApiParameter("limit", OpenApiTypes.INT, description="at most this many points"),
    OpenApiParameter("history", OpenApiTypes.BOOL, description="include history (default on)"),
]
LIVE_DOC = inline_serializer(
    "LiveMetrics",
    {
        "healthy": serializers.BooleanField(),
        "vcpu": serializers.DictField(),
        "memory": serializers.DictField(),
        "gpus": serializers.DictField(),
        "history": serializers.ListField(child=serializers.DictField()),
    },
)

LIVE_DOC_LIST = inline_serializer(
    "LiveMetricsList",
    {
        "vcpu": serializers.DictField(),
        "memory": serializers.DictField(),
        "gpus": serializers.DictField(),
    },
    many=True,
)


def _time(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except ValueError:
        pass
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValidationFailed(f"{name} must be an ISO-8601 time or epoch seconds")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _range(request: Request) -> dict[str, Any]:
    try:
        limit = int(request.query_params.get("limit", 1000))
    except ValueError:
        raise ValidationFailed("limit must be an integer") from None
    return {
        "since": _time(request.query_params.get("since"), "since"),
        "until": _time(request.query_params.get("until"), "until"),
        "limit": limit,
    }


def _wants_history(request: Request) -> bool:
    return request.query_params.get("history", "1").lower() not in {"0", "false", "no"}


def node_payload(node: Node, live: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "node_id": node.id,
        "cluster_id": node.cluster_id,
        "healthy": bool(live) and node.is_healthy,
        "stale": live is None,
        "status": node.effective_status,
        **(live or {}),
    }


class NodeMetricsListView(APIView):
    @extend_schema(
        operation_id="v1_metrics_nodes_list",
        parameters=[OpenApiParameter("cluster", OpenApiTypes.STR)],
        responses=LIVE_DOC_LIST,
    )
    def get(self, request: Request) -> Response:
        nodes = Node.objects.order_by("id")
        if request.query_params.get("cluster"):
            nodes = nodes.filter(cluster_id=request.query_params["cluster"])
        nodes = list(nodes[:1000])
        live = services.nodes_live_metrics([n.id for n in nodes])
        return Response([node_payload(n, live.get(n.id)) for n in nodes])


class NodeMetricsView(APIView):
    """Live metrics (reference names, top level) and history of one node."""

    @extend_schema(parameters=RANGE_PARAMS, responses=LIVE_DOC)
    def get(self, request: Request, node_id: str) -> Response:
        node = Node.objects.filter(pk=node_id).first()
        if node is None:
            raise NotFound(f"node {node_id!r} does not exist")
        body = node_payload(node, services.node_live_metrics(node_id))
        if _wants_history(request):
            body["history"] = services.node_history(node_id, **_range(request))
        return Response(body)


NODE_SAMPLE_DOC = inline_serializer(
    "NodeMetricsSample",
    {
        "ts": serializers.FloatField(required=False, help_text="epoch seconds (default: now)"),
        "vcpu": serializers.DictField(required=False),
        "memory": serializers.DictField(required=False),
        "disk": serializers.DictField(required=False),
        "storage": serializers.DictField(required=False),
        "network": serializers.DictField(required=False),
        "gpus": serializers.DictField(required=False),
    },
)


class NodeMetricsReportView(APIView):
    """A node-metrics agent (``python -m block_sdk.node_metrics``) pushes its node's samples.

    The body is one sample (the node agent's document: ``ts``, ``vcpu``, ``memory``, ``disk``,
    ``storage``, ``network``, ``gpus``) or ``{"samples": [...]}`` (at most 120, what the agent
    buffered while the control plane was away). Staff or the owner of the node's cluster only.
    """

    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="v1_metrics_nodes_report",
        request=inline_serializer(
            "NodeMetricsReport",
            {
                "samples": serializers.ListField(child=NODE_SAMPLE_DOC, required=False),
                "node_id": serializers.CharField(required=False),
                "cluster_id": serializers.CharField(required=False),
                "agent": serializers.DictField(required=False),
            },
        ),
        responses={
            200: inline_serializer(
                "NodeMetricsReported",
                {
                    "node_id": serializers.CharField(),
                    "cluster_id": serializers.CharField(),
                    "accepted": serializers.IntegerField(),
                    "live": serializers.BooleanField(),
                    "history": serializers.IntegerField(),
                    "discarded": serializers.IntegerField(),
                    "ttl_s": serializers.FloatField(),
                },
            )
        },
    )
    def post(self, request: Request, node_id: str) -> Response:
        node = Node.objects.select_related("cluster").filter(pk=node_id).first()
        if node is None:
            raise NotFound(f"node {node_id!r} does not exist")
        services.check_node_reporter(request.user, node)
        return Response(services.record_node_report(node, request.data))


class ClusterMetricsListView(APIView):
    @extend_schema(operation_id="v1_metrics_clusters_list", responses=LIVE_DOC_LIST)
    def get(self, request: Request) -> Response:
        ids = list(Cluster.objects.order_by("id").values_list("id", flat=True)[:1000])
        return Response(list(services.clusters_metrics(ids).values()))


class ClusterMetricsView(APIView):
    """The cluster aggregate (sums/averages over reporting nodes) plus each node's metrics."""

    @extend_schema(responses=LIVE_DOC)
    def get(self, request: Request, cluster_id: str) -> Response:
        if not Cluster.objects.filter(pk=cluster_id).exists():
            raise NotFound(f"cluster {cluster_id!r} does not exist")
        return Response(services.cluster_metrics(cluster_id, include_nodes=True))


class EntityMetricsView(APIView):
    """Live values and history of a block, instance, vDAG, ... (``entity_type`` in the URL)."""

    entity_type = "block"

    @extend_schema(
        parameters=[*RANGE_PARAMS, OpenApiParameter("name", OpenApiTypes.STR)],
        responses=inline_serializer(
            "EntityMetrics",
            {
                "entity_type": serializers.CharField(),
                "entity_id": serializers.CharField(),
                "live": serializers.DictField(allow_null=True),
                "history": serializers.ListField(child=serializers.DictField()),
            },
        ),
    )
    def get(self, request: Request, entity_id: str) -> Response:
        body: dict[str, Any] = {
            "entity_type": self.entity_type,
            "entity_id": entity_id,
            "live": services.entity_live_metrics(self.entity_type, entity_id),
        }
        if _wants_history(request):
            body["history"] = services.entity_history(
                self.entity_type,
                entity_id,
                name=request.query_params.get("name") or None,
                **_range(request),
            )
        return Response(body)


class MetricSamplePushView(APIView):
    """Data-plane processes (or anything authenticated) push block / vDAG metrics here."""

    @extend_schema(
        request=inline_serializer(
            "MetricPush",
            {
                "entity_type": serializers.ChoiceField(choices=services.ENTITY_TYPES),
                "entity_id": serializers.CharField(),
                "values": serializers.DictField(child=serializers.FloatField()),
                "labels": serializers.DictField(required=False),
                "ts": serializers.FloatField(required=False),
            },
        ),
        responses={201: inline_serializer("MetricPushed", {"recorded": serializers.DictField()})},
    )
    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        recorded = services.record_entity_metrics(
            str(data.get("entity_type", "")),
            data.get("entity_id"),
            data.get("values"),
            labels=data.get("labels") if isinstance(data.get("labels"), dict) else None,
            ts=data.get("ts") if isinstance(data.get("ts"), int | float) else None,
        )
        return Response({"recorded": recorded}, status=status.HTTP_201_CREATED)


class MetricsQueryView(APIView):
    """``{"entity": "node"|"cluster"|"block"|"vdag"|..., "query": {...}}`` over live metrics."""

    @extend_schema(
        request=inline_serializer(
            "MetricsQuery",
            {
                "entity": serializers.CharField(default="node"),
                "query": serializers.JSONField(),
                "include_stale": serializers.BooleanField(default=False),
            },
        ),
        responses=inline_serializer(
            "MetricsQueryResult",
            {"count": serializers.IntegerField(), "results": serializers.ListField()},
        ),
    )
    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else {}
        entity = data.get("entity", "node")
        query = data.get("query", data.get("filter", {}))
        fresh = not bool(data.get("include_stale", False))
        if entity == "node":
            rows = metrics_query.query_nodes(query, fresh_only=fresh)[:1000]
            ids = [r.node_id for r in rows]
            live = services.nodes_live_metrics(ids)
            results = [
                live.get(r.node_id)
                or {"node_id": r.node_id, "cluster_id": r.cluster_id, "stale": True}
                for r in rows
            ]
        elif entity == "cluster":
            rows = metrics_query.query_clusters(query, fresh_only=fresh)[:1000]
            results = list(services.clusters_metrics([r.cluster_id for r in rows]).values())
        elif entity in services.ENTITY_TYPES:
            rows = metrics_query.query_entities(entity, query, fresh_only=fresh)[:1000]
            results = [
                {
                    "entity_type": r.entity_type,
                    "entity_id": r.entity_id,
                    "ts": r.ts.isoformat(),
                    "values": r.values,
                    "labels": r.labels,
                }
                for r in rows
            ]
        else:
            raise QueryError(
                f"unknown entity {entity!r}",
                details=[{"allowed": ["node", "cluster", *services.ENTITY_TYPES]}],
            )
        return Response({"count": len(results), "results": results})


class PrometheusView(APIView):
    """Node (and live block/vDAG) metrics in the Prometheus text format."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(
            services.prometheus_text(), content_type="text/plain; version=0.0.4; charset=utf-8"
        )
