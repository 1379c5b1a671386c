from django.urls import path

from apps.allocator.consumers import AllocatorConsumer

websocket_urlpatterns = [
    path("ws/allocator/", AllocatorConsumer.as_asgi()),
    path("ws/allocator/dry-run/", AllocatorConsumer.as_asgi()),
]
