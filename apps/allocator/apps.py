from django.apps import AppConfig


class AllocatorConfig(AppConfig):
    name = "apps.allocator"
