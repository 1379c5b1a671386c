from django.apps import AppConfig


class VdagsConfig(AppConfig):
    name = "apps.vdags"
