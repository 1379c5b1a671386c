from django.urls import path

from apps.tasks.consumers import TaskProgressConsumer

websocket_urlpatterns = [
    path("ws/tasks/<uuid:task_id>/", TaskProgressConsumer.as_asgi()),
]
