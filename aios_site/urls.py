"""Top-level URLs: admin, the REST API under /api/v1/, OpenAPI, metrics."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from apps.core.api.views import HealthView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/health/", HealthView.as_view(), name="health"),
    path("api/v1/", include("apps.tasks.api.urls")),
    path("api/v1/", include("apps.policies.api.urls")),
    path("api/v1/", include("apps.registries.api.urls")),
    path("api/v1/", include("apps.search.api.urls")),
    path("api/v1/", include("apps.clusters.api.urls")),
    path("api/v1/", include("apps.allocator.api.urls")),
    path("api/v1/", include("apps.blocks.api.urls")),
    path("api/v1/", include("apps.vdags.api.urls")),
    path("api/v1/", include("apps.inference.api.urls")),
    path("api/v1/", include("apps.metrics.api.urls")),
    path("api/v1/", include("apps.llm.api.urls")),
    # Parser actions keep AIOS's paths: /api/<action>, /api/with-spec/<action>.
    path("api/", include("apps.parser.urls")),
    path("", include("django_prometheus.urls")),
    path("", include("apps.dashboard.urls")),
]
