"""Parser routes live at /api/<action> (registered by apps.parser)."""

urlpatterns: list = []
