from django.apps import AppConfig


class ParserConfig(AppConfig):
    name = "apps.parser"
