"""Names used by the parser."""

from django.db import models


class ParserTaskStatus(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
