"""Registries under /api/v1/."""

from rest_framework.routers import DefaultRouter

from apps.registries.api import views

router = DefaultRouter()
router.register("specs", views.SpecViewSet, basename="spec")
router.register("templates", views.TemplateViewSet, basename="template")
router.register("components", views.ComponentViewSet, basename="component")
router.register(
    "container-registries", views.ContainerRegistryViewSet, basename="container-registry"
)
router.register("asset-registries", views.AssetRegistryViewSet, basename="asset-registry")
router.register("assets", views.AssetViewSet, basename="asset")
router.register("inference-servers", views.InferenceServerViewSet, basename="inference-server")
urlpatterns = router.urls
