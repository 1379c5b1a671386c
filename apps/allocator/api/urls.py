"""Routes of the allocator under /api/v1/allocator/."""

from django.urls import path
from rest_framework.routers import DefaultRouter

from apps.allocator.api.views import AllocationViewSet, DryRunView

router = DefaultRouter()
router.register("allocator/allocations", AllocationViewSet, basename="allocation")

urlpatterns = [
    path("allocator/dry-run/", DryRunView.as_view(), name="allocator-dry-run"),
    *router.urls,
]
