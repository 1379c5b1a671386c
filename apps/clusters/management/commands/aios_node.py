"""``manage.py aios_node --cluster C --node N``: run the node agent of the local driver."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from apps.clusters.agent import AgentError, AgentOptions, NodeAgent
from apps.clusters.specs import parse_declared_gpus
from apps.core.errors import ApiError


class Command(BaseCommand):
    help = (
        "Run a node agent: heartbeat the node, report hardware metrics, and run the node's "
        "workloads as child processes. Several agents on one machine form several nodes."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--cluster", required=True, help="cluster id")
        parser.add_argument("--node", required=True, help="node id (unique in the network)")
        parser.add_argument(
            "--create",
            action="store_true",
            help="register the cluster (driver local) and the node if they do not exist",
        )
        parser.add_argument(
            "--declare-gpus",
            default=None,
            help="GPUs this node declares instead of detecting them, e.g. "
            '\'[{"model": "A100", "memory_mb": 40960}]\'',
        )
        parser.add_argument("--region", default="local", help="regionId for --create")
        parser.add_argument("--tick", type=float, default=1.0, help="reconcile period (s)")
        parser.add_argument("--heartbeat-interval", type=float, default=2.0)
        parser.add_argument("--metrics-interval", type=float, default=5.0)
        parser.add_argument("--stop-grace", type=float, default=5.0)
        parser.add_argument(
            "--keep-workloads-on-exit",
            action="store_true",
            help="leave workload processes running on SIGTERM (the next agent adopts them)",
        )

    def handle(self, *args, **options) -> None:
        declared = None
        if options["declare_gpus"]:
            try:
                declared = parse_declared_gpus(json.loads(options["declare_gpus"]))
            except (ValueError, ApiError) as exc:
                raise CommandError(f"--declare-gpus: {exc}") from None
        agent = NodeAgent(
            AgentOptions(
                cluster_id=options["cluster"],
                node_id=options["node"],
                create=options["create"],
                declare_gpus=declared,
                region_id=options["region"],
                tick_s=max(0.2, options["tick"]),
                heartbeat_s=max(0.2, options["heartbeat_interval"]),
                metrics_interval_s=max(0.5, options["metrics_interval"]),
                stop_grace_s=max(0.1, options["stop_grace"]),
                keep_workloads_on_exit=options["keep_workloads_on_exit"],
            )
        )
        try:
            agent.setup()
        except (AgentError, ApiError) as exc:
            raise CommandError(str(exc)) from None
        agent.run()
