"""Search under /api/v1/search/."""

from rest_framework.routers import DefaultRouter

from apps.search.api.views import SearchViewSet

router = DefaultRouter()
router.register("search", SearchViewSet, basename="search")
urlpatterns = router.urls
