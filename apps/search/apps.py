from django.apps import AppConfig


class SearchConfig(AppConfig):
    name = "apps.search"

    def ready(self) -> None:
        # Default adapters only fill gaps: an app's own registration always wins, whether
        # its ready() ran before or after this one.
        from apps.search.adapters import register_defaults

        register_defaults()
