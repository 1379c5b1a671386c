"""Routes of the inference app under /api/v1/inference/."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from apps.inference.api import views

router = DefaultRouter()
router.register("inference/logs", views.RequestLogViewSet, basename="inference-log")
router.register("inference/deployments", views.DeploymentViewSet, basename="inference-deployment")
urlpatterns = [
    path("inference/search/", views.InferenceSearchView.as_view(), name="inference-search"),
    *router.urls,
]
