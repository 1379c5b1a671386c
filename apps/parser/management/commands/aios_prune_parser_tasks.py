"""``manage.py aios_prune_parser_tasks --days N``: bound the parser task log."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.parser.services import prune_parser_tasks


class Command(BaseCommand):
    help = "Delete parser task log records older than --days (default 90)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, default=90.0)

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = prune_parser_tasks(older_than_days=options["days"])
        self.stdout.write(f"deleted {deleted} parser task record(s)")
