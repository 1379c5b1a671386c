from django.apps import AppConfig


class BlocksConfig(AppConfig):
    name = "apps.blocks"
    verbose_name = "blocks"

    def ready(self) -> None:
        from apps.blocks import search

        search.register()
