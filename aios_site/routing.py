"""Websocket routes of every app, gathered in one list for asgi.py.

An app with websockets adds a ``routing.py`` holding ``websocket_urlpatterns``; it is
picked up here without editing this file.
"""

from importlib import import_module

from django.conf import settings

websocket_urlpatterns: list = []
for _app in settings.INSTALLED_APPS:
    if _app.startswith("apps."):
        try:
            _module = import_module(f"{_app}.routing")
        except ModuleNotFoundError as exc:
            if exc.name != f"{_app}.routing":
                raise
            continue
        websocket_urlpatterns.extend(getattr(_module, "websocket_urlpatterns", []))
