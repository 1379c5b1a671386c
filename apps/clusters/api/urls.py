"""Routes of the clusters app under /api/v1/."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from apps.clusters.api.views import (
    ClusterViewSet,
    GatewayConfigView,
    GatewayPreCheckUpdateView,
    GPUViewSet,
    NodeViewSet,
    WorkloadViewSet,
)

router = DefaultRouter()
router.register("clusters", ClusterViewSet, basename="cluster")
router.register("nodes", NodeViewSet, basename="node")
router.register("gpus", GPUViewSet, basename="gpu")
router.register("workloads", WorkloadViewSet, basename="workload")

urlpatterns = [
    path("gateway/config/", GatewayConfigView.as_view(), name="gateway-config"),
    path(
        "gateway/pre-check-policies/update/",
        GatewayPreCheckUpdateView.as_view(),
        name="gateway-pre-check-update",
    ),
    *router.urls,
]
