"""``manage.py aios_prune_request_logs --days N``: bound the adhoc servers' request log."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.inference.services import prune_request_logs


class Command(BaseCommand):
    help = "Delete inference request logs older than --days (default 30)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, default=30.0)

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = prune_request_logs(older_than_days=options["days"])
        self.stdout.write(f"deleted {deleted} request log row(s)")
