"""Print the Kubernetes manifests the ``kubernetes`` driver would apply, as multi-document
YAML, without contacting any cluster.

    manage.py aios_k8s_render --kind cluster --cluster gpu-east
    manage.py aios_k8s_render --kind block --spec block.json --node node-1 [--component c.json]
    manage.py aios_k8s_render --kind vdag-controller --id ctl-1 --node node-1 \
        [--vdag-uri pose:1.0.0-stable] [--replicas 2]

``--config FILE`` replaces the cluster's ``config.kubernetes`` (JSON or YAML object) for the
render; ``--cluster`` names the cluster when the node is not registered.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.errors import ApiError

KINDS = ("block", "vdag-controller", "cluster")


def _gpu_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"--gpus takes GPU indices like 0,1 (got {text!r})") from None


class Command(BaseCommand):
    help = "Print the manifests the kubernetes driver would apply (multi-document YAML)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--kind", required=True, choices=KINDS)
        parser.add_argument("--spec", help="createBlock spec file (JSON or YAML) for --kind block")
        parser.add_argument("--node", help="AIOS node id the workloads are placed on")
        parser.add_argument("--cluster", help="cluster id (default: the node's cluster)")
        parser.add_argument("--config", help="file with a config.kubernetes object to use")
        parser.add_argument(
            "--component", help="component spec file, when blockComponentURI is not registered"
        )
        parser.add_argument("--gpus", help="GPU indices for every instance, e.g. 0,1")
        parser.add_argument("--id", dest="controller_id", help="vDAG controller id")
        parser.add_argument("--vdag-uri", help="vDAG URI the controller serves")
        parser.add_argument("--replicas", type=int, default=1)

    def handle(self, *args, **options) -> None:
        from apps.clusters.drivers.k8s import render

        kind = options["kind"]
        try:
            kubernetes = render.load_document(options["config"]) if options.get("config") else None
            if kind == "cluster":
                cluster, _node = render.resolve(
                    cluster_id=options.get("cluster"),
                    node_id=options.get("node"),
                    kubernetes=kubernetes,
                )
                docs = render.render_cluster(cluster)
            else:
                if not options.get("node"):
                    raise CommandError(f"--kind {kind} needs --node <node id>")
                cluster, node = render.resolve(
                    node_id=options["node"],
                    cluster_id=options.get("cluster"),
                    kubernetes=kubernetes,
                )
                if kind == "block":
                    if not options.get("spec"):
                        raise CommandError("--kind block needs --spec <createBlock spec file>")
                    docs = render.render_block(
                        options["spec"],
                        cluster,
                        node,
                        component_path=options.get("component"),
                        gpu_ids=_gpu_list(options["gpus"]) if options.get("gpus") else None,
                    )
                else:
                    if not options.get("controller_id"):
                        raise CommandError("--kind vdag-controller needs --id <controller id>")
                    docs = render.render_vdag_controller(
                        options["controller_id"],
                        cluster,
                        node,
                        vdag_uri=options.get("vdag_uri"),
                        replicas=options["replicas"],
                    )
        except ApiError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(render.to_yaml(docs), ending="")
