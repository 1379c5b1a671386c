"""Routes of the blocks app under /api/v1/."""

from rest_framework.routers import DefaultRouter

from apps.blocks.api.views import BlockViewSet

router = DefaultRouter()
router.register("blocks", BlockViewSet, basename="block")
urlpatterns = router.urls
