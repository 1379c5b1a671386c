"""Routes of the metrics system under /api/v1/metrics/."""

from django.urls import path, re_path

from apps.metrics.api import views

ENTITY_ID = r"(?P<entity_id>[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127})"

urlpatterns = [
    path("metrics/nodes/", views.NodeMetricsListView.as_view(), name="metrics-nodes"),
    path("metrics/nodes/<str:node_id>/", views.NodeMetricsView.as_view(), name="metrics-node"),
    path(
        "metrics/nodes/<str:node_id>/report/",
        views.NodeMetricsReportView.as_view(),
        name="metrics-node-report",
    ),
    path("metrics/clusters/", views.ClusterMetricsListView.as_view(), name="metrics-clusters"),
    path(
        "metrics/clusters/<str:cluster_id>/",
        views.ClusterMetricsView.as_view(),
        name="metrics-cluster",
    ),
    re_path(
        rf"^metrics/blocks/{ENTITY_ID}/$",
        views.EntityMetricsView.as_view(entity_type="block"),
        name="metrics-block",
    ),
    re_path(
        rf"^metrics/vdags/{ENTITY_ID}/$",
        views.EntityMetricsView.as_view(entity_type="vdag"),
        name="metrics-vdag",
    ),
    re_path(
        rf"^metrics/instances/{ENTITY_ID}/$",
        views.EntityMetricsView.as_view(entity_type="instance"),
        name="metrics-instance",
    ),
    path("metrics/samples/", views.MetricSamplePushView.as_view(), name="metrics-samples"),
    path("metrics/query/", views.MetricsQueryView.as_view(), name="metrics-query"),
    path("metrics/prometheus/", views.PrometheusView.as_view(), name="metrics-prometheus"),
]
