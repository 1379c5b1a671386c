from django.apps import AppConfig


class VdagsConfig(AppConfig):
    name = "apps.vdags"
    verbose_name = "vDAGs"

    def ready(self) -> None:
        from apps.vdags import search, signals

        search.register()
        signals.connect()
