"""``manage.py aios_blocks``: what an operator does with blocks from a shell.

    manage.py aios_blocks list [--cluster C] [--status S]
    manage.py aios_blocks show BLOCK
    manage.py aios_blocks scale BLOCK (--instances N | --delta ±N) [--force]
    manage.py aios_blocks params BLOCK '{"tag": "x"}'
    manage.py aios_blocks mgmt BLOCK SERVICE COMMAND [--data JSON]
    manage.py aios_blocks remove BLOCK [--wait]

The same services as the API run (pre-checks, min/max bounds); the operator acts as the
internal user, so ownership is not checked. Output is JSON.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.blocks import services
from apps.blocks.api.serializers import block_document
from apps.blocks.models import Block
from apps.core.errors import ApiError


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CommandError(f"{what} is not JSON: {exc}") from None


class Command(BaseCommand):
    help = "List, show, scale, update, manage and remove blocks."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        listing = sub.add_parser("list", help="blocks with status and endpoints")
        listing.add_argument("--cluster")
        listing.add_argument("--status")
        show = sub.add_parser("show", help="one block's document")
        show.add_argument("block_id")
        scale = sub.add_parser("scale", help="scale a running block")
        scale.add_argument("block_id")
        group = scale.add_mutually_exclusive_group(required=True)
        group.add_argument("--instances", type=int)
        group.add_argument("--delta", type=int)
        scale.add_argument("--force", action="store_true", help="allow leaving min/max")
        params = sub.add_parser("params", help="live parameter update")
        params.add_argument("block_id")
        params.add_argument("parameters", help="a JSON object")
        mgmt = sub.add_parser("mgmt", help="a management command")
        mgmt.add_argument("block_id")
        mgmt.add_argument("service", choices=["executor", "autoscaler", "health", "instances"])
        mgmt.add_argument("command")
        mgmt.add_argument("--data", default=None, help="JSON")
        remove = sub.add_parser("remove", help="stop every process, release every GPU")
        remove.add_argument("block_id")
        remove.add_argument("--wait", action="store_true", help="return when it is gone")
        remove.add_argument("--timeout", type=float, default=120.0)

    def handle(self, *args, **options) -> None:
        try:
            result = getattr(self, f"_{options['verb']}")(options)
        except ApiError as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        self.stdout.write(json.dumps(result, indent=2, default=str))

    def _list(self, options) -> list[dict[str, Any]]:
        queryset = Block.objects.order_by("id")
        if options.get("cluster"):
            queryset = queryset.filter(cluster_id=options["cluster"])
        if options.get("status"):
            queryset = queryset.filter(status=options["status"])
        return [
            {
                "id": b.id,
                "component": b.component_uri,
                "cluster": b.cluster_id,
                "status": b.status,
                "instances": b.instances.count(),
                "grpc": (b.endpoints or {}).get("grpc"),
            }
            for b in queryset[:1000]
        ]

    def _show(self, options) -> dict[str, Any]:
        return block_document(services.get_block(options["block_id"]))

    def _scale(self, options) -> dict[str, Any]:
        return services.scale_block(
            options["block_id"],
            instances=options.get("instances"),
            delta=options.get("delta"),
            force=options["force"],
            source="manage.py",
        )

    def _params(self, options) -> dict[str, Any]:
        return services.update_parameters(
            options["block_id"], _json(options["parameters"], "parameters")
        )

    def _mgmt(self, options) -> dict[str, Any]:
        data = _json(options["data"], "--data") if options.get("data") else None
        return services.execute_mgmt(
            options["block_id"], service=options["service"], action=options["command"], data=data
        )

    def _remove(self, options) -> dict[str, Any]:
        status, body = services.remove_block(options["block_id"])
        if options["wait"] and status == 202:
            deadline = time.monotonic() + options["timeout"]
            while Block.objects.filter(pk=options["block_id"]).exists():
                if time.monotonic() > deadline:
                    raise CommandError(f"the block still exists after {options['timeout']:.0f}s")
                time.sleep(0.5)
            body["removed"] = True
        return body
