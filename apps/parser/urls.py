"""Parser routes, mounted at /api/ by the project: the AIOS action paths
(``/api/<action>``, ``/api/with-spec/<action>``) and the parser task log
(``/api/v1/parser-tasks/``)."""

from django.urls import include, path, re_path

from apps.parser.api.views import ParserActionView, ParserWithSpecView

# An action name, but never the project's own /api/<word>/ pages (schema, docs, health).
ACTION = r"(?P<action>(?!(?:schema|docs|health|v1)/?$)[A-Za-z][A-Za-z_]{0,63})"

urlpatterns = [
    path("v1/", include("apps.parser.api.urls")),
    re_path(rf"^with-spec/{ACTION}/?$", ParserWithSpecView.as_view(), name="parser-with-spec"),
    re_path(rf"^{ACTION}/?$", ParserActionView.as_view(), name="parser-action"),
]
