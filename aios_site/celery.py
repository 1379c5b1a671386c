"""The Celery application: Redis broker, results in PostgreSQL (django-celery-results)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aios_site.settings")

app = Celery("aios")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
