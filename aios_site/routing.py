"""Websocket routes of every app, gathered in one list for asgi.py."""

from apps.tasks.routing import websocket_urlpatterns as task_routes

websocket_urlpatterns = [*task_routes]
