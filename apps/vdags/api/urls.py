"""Routes of the vdags app under /api/v1/."""

from rest_framework.routers import DefaultRouter

from apps.vdags.api import views

router = DefaultRouter()
router.register("vdags", views.VDagViewSet, basename="vdag")
router.register("vdag-controllers", views.VDagControllerViewSet, basename="vdag-controller")
router.register("vdag-quality-samples", views.QualitySampleViewSet, basename="vdag-quality-sample")
urlpatterns = router.urls
