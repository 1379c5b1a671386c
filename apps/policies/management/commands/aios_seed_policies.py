"""``manage.py aios_seed_policies``: register or update the built-in policies (idempotent)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from apps.policies import runtime
from apps.policies.builtins import seed_builtin_policies


class Command(BaseCommand):
    help = "Package block_sdk/builtin_policies/<name>/ and register each as aios.<name>:1.0-stable."

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="*", help="only these built-ins (default: all)")

    def handle(self, *args, **options) -> None:
        results = seed_builtin_policies(only=options["names"] or None)
        runtime.forget_evaluators()
        for result in results:
            self.stdout.write(f"{result.action:9} {result.uri} sha256={result.sha256[:12]}")
        changed = sum(1 for r in results if r.action != "unchanged")
        self.stdout.write(
            self.style.SUCCESS(f"{len(results)} built-in policies, {changed} changed")
        )
