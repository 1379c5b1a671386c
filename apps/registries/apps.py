from django.apps import AppConfig


class RegistriesConfig(AppConfig):
    name = "apps.registries"

    def ready(self) -> None:
        from apps.registries.search import register_search_entities

        register_search_entities()
