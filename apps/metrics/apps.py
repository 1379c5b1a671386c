from django.apps import AppConfig


class MetricsConfig(AppConfig):
    name = "apps.metrics"

    def ready(self) -> None:
        from apps.metrics import search

        search.register()
        # Periodic upkeep for Celery beat: downsampling/retention of the metric history, and
        # storing not_ready on nodes whose agents went quiet.
        from aios_site.celery import app

        app.add_periodic_task(
            300.0, app.signature("aios.metrics.downsample"), name="aios.metrics.downsample"
        )
        app.add_periodic_task(
            30.0,
            app.signature("aios.clusters.mark_stale_nodes"),
            name="aios.clusters.mark_stale_nodes",
        )
