from django.apps import AppConfig


class ClustersConfig(AppConfig):
    name = "apps.clusters"
    verbose_name = "clusters"

    def ready(self) -> None:
        from apps.clusters import search

        search.register()
