"""The parser task log under /api/v1/parser-tasks/ (mounted by apps/parser/urls.py)."""

from rest_framework.routers import SimpleRouter

from apps.parser.api.views import ParserTaskViewSet

router = SimpleRouter()
router.register("parser-tasks", ParserTaskViewSet, basename="parser-task")
urlpatterns = router.urls
