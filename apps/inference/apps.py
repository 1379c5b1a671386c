from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "apps.inference"
    verbose_name = "inference"

    def ready(self) -> None:
        from apps.inference import signals

        signals.connect()
