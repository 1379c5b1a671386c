"""``manage.py aios_demo``: a small AIOS network from nothing, and a vDAG served over it.

It makes (or reuses) a local cluster with two nodes (starting their node agents unless
agents already report for them, e.g. those of a running ``make up``), registers the example
components (echo, numpy-mlp, slow), creates three blocks, a vDAG with a fan-out and a
fan-in (``examples/specs/vdag_demo.json``) and a vDAG controller, runs inferences through it
over gRPC and prints the outputs and where to look. ``--teardown`` removes what it made.

Long steps are the same Celery tasks the API queues: a running worker (``make up``) does
them; without one (or with ``--inline``) they run in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

ROOT = Path(settings.BASE_DIR)
COMPONENT_SPECS = {
    "echo": ROOT / "examples" / "echo" / "component.json",
    "mlp": ROOT / "examples" / "numpy_model" / "component.json",
    "slow": ROOT / "examples" / "slow" / "component.json",
}
VDAG_SPEC = ROOT / "examples" / "specs" / "vdag_demo.json"
# The demo's blocks by role: component, parameters.
BLOCKS = {
    "echo": ("echo", {"tag": "demo"}),
    "mlp": ("mlp", {"temperature": 1.0}),
    "slow": ("slow", {"delay_s": 0.05}),
}
SAMPLES = [
    [5.1, 3.5, 1.4, 0.2],
    [6.2, 2.9, 4.3, 1.3],
    [7.7, 3.0, 6.1, 2.3],
    [5.0, 3.4, 1.5, 0.2],
    [6.0, 2.2, 5.0, 1.5],
]


class DemoError(CommandError):
    pass


def in_parallel(fn, items: list[Any]) -> None:
    """``fn(item)`` for every item in threads (blocks start concurrently); the first error
    is raised once all are done. Each thread closes its database connection."""
    from django.db import connection

    def run(item: Any) -> None:
        try:
            fn(item)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        futures = [pool.submit(run, item) for item in items]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


class Command(BaseCommand):
    help = (
        "Build a demo network (a local cluster with two nodes, three blocks, a fan-out/fan-in "
        "vDAG and its controller), run inferences through it and print where to look; "
        "--teardown removes it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--prefix", default="demo", help="ids of everything it creates")
        parser.add_argument("--requests", type=int, default=len(SAMPLES))
        parser.add_argument("--timeout", type=float, default=240.0, help="per step (s)")
        parser.add_argument("--inline", action="store_true", help="run tasks in this process")
        parser.add_argument("--teardown", action="store_true", help="remove the demo")
        parser.add_argument(
            "--agent-args",
            default="",
            help="extra arguments for the node agents it starts (e.g. '--tick 0.2')",
        )

    # -- plumbing ---------------------------------------------------------------------------
    def handle(self, *args: Any, **options: Any) -> None:
        self.prefix = options["prefix"]
        self.started = time.monotonic()
        self.timeout = options["timeout"]
        self.state_path = Path(settings.AIOS_DATA_DIR) / "demo" / f"{self.prefix}.json"
        self.state = self._load_state()
        self._lock = threading.Lock()
        self._choose_task_mode(options["inline"])
        if options["teardown"]:
            self.teardown()
            return
        self.build(options)

    def say(self, message: str = "", style=None) -> None:
        self.stdout.write(style(message) if style else message)

    def step(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        self.say(f"\n== {message}  (t+{elapsed:.1f}s)", self.style.MIGRATE_HEADING)

    def _load_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {"created": {}, "agents": []}

    def _save_state(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps(self.state, indent=2))

    def _created(self, kind: str, value: str) -> None:
        with self._lock:
            items = self.state["created"].setdefault(kind, [])
            if value not in items:
                items.append(value)
            self._save_state()

    def _choose_task_mode(self, inline: bool) -> None:
        from aios_site.celery import app

        if not inline:
            try:
                inline = not app.control.ping(timeout=1.0)
            except Exception:  # no broker answer: nobody would run the tasks
                inline = True
        self.inline = inline
        app.conf.task_always_eager = inline

    def _user(self):
        from django.contrib.auth import get_user_model

        return get_user_model().objects.filter(username="admin").first()

    @property
    def ids(self) -> dict[str, str]:
        p = self.prefix
        return {
            "cluster": f"{p}-cluster",
            "nodes": [f"{p}-node-1", f"{p}-node-2"],
            "echo": f"{p}-echo",
            "mlp": f"{p}-mlp",
            "slow": f"{p}-slow",
            "vdag": f"{p}-pipeline:1.0-stable",
            "controller": f"{p}-controller",
        }

    # -- build ------------------------------------------------------------------------------
    def build(self, options: dict[str, Any]) -> None:
        ids = self.ids
        user = self._user()
        self.say(
            f"AIOS demo '{self.prefix}' — tasks run "
            + ("in this process" if self.inline else "on the running Celery worker")
        )
        self.step("1/6 cluster and nodes")
        self.ensure_cluster(ids["cluster"], ids["nodes"], user, options["agent_args"])
        self.step("2/6 components")
        uris = {role: self.ensure_component(path, user) for role, path in COMPONENT_SPECS.items()}
        self.step("3/6 blocks")
        self.ensure_blocks(ids, uris, user)
        self.step("4/6 vDAG (fan-out prepare -> classify + delay, fan-in -> merge)")
        vdag = self.ensure_vdag(ids, user)
        self.step("5/6 vDAG controller")
        controller = self.ensure_controller(ids, vdag, user)
        self.step("6/6 inference over gRPC /vDAGInferenceService/infer")
        self.run_requests(controller.public_url, options["requests"])
        self.where_to_look(vdag, controller)

    def ensure_cluster(self, cluster_id: str, node_ids: list[str], user, agent_args: str) -> None:
        from apps.clusters import gateway
        from apps.clusters.models import Cluster, Node

        if not Cluster.objects.filter(pk=cluster_id).exists():
            gateway.create_cluster(
                {
                    "id": cluster_id,
                    "regionId": "local",
                    "config": {"driver": "local"},
                    "clusterMetadata": {"name": cluster_id, "createdBy": "aios_demo"},
                },
                user=user,
                run_async=False,
            )
            self._created("cluster", cluster_id)
            self.say(f"cluster {cluster_id} created")
        else:
            self.say(f"cluster {cluster_id} exists")
        for node_id in node_ids:
            node = Node.objects.filter(pk=node_id).first()
            if node is not None and node.is_healthy:
                self.say(f"node {node_id}: its agent is reporting (reused)")
                continue
            pid = self.start_agent(cluster_id, node_id, agent_args)
            self.say(f"node {node_id}: started its agent (pid {pid})")
        for node_id in node_ids:
            wait_for(
                lambda n=node_id: (node := Node.objects.filter(pk=n).first()) and node.is_healthy,
                self.timeout,
                f"node {node_id} to be ready (agent log: {self.agent_log(node_id)})",
            )
        self.say(f"nodes ready: {', '.join(node_ids)}", self.style.SUCCESS)

    def agent_log(self, node_id: str) -> Path:
        return Path(settings.AIOS_DATA_DIR) / "logs" / f"demo-agent-{node_id}.log"

    def start_agent(self, cluster_id: str, node_id: str, agent_args: str) -> int:
        log_path = self.agent_log(node_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "manage.py",
            "aios_node",
            "--cluster",
            cluster_id,
            "--node",
            node_id,
            "--create",
            *agent_args.split(),
        ]
        with open(log_path, "ab") as log_file:
            # Its own session: the agent (and the blocks it runs) outlive this command.
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=dict(os.environ),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.state["agents"].append({"node_id": node_id, "pid": proc.pid})
        self._save_state()
        return proc.pid

    def ensure_component(self, path: Path, user) -> str:
        from apps.registries import services as registries
        from apps.registries.models import Component

        values = json.loads(path.read_text())["body"]["spec"]["values"]
        cid = values["componentId"]
        uri = f"{values['componentType']}.{cid['name']}:{cid['version']}-{cid['releaseTag']}"
        if Component.objects.filter(component_uri=uri).exists():
            self.say(f"component {uri} exists")
            return uri
        component = registries.register_component(values, owner=user)
        self._created("components", component.component_uri)
        self.say(f"component {component.component_uri} registered")
        return component.component_uri

    def ensure_blocks(self, ids: dict[str, Any], uris: dict[str, str], user) -> None:
        from apps.blocks import services as blocks
        from apps.blocks.models import Block

        def create(role: str) -> None:
            component_role, parameters = BLOCKS[role]
            block_id = ids[role]
            block = Block.objects.filter(pk=block_id).first()
            if block is not None and block.status == "failed":
                self.say(f"block {block_id} had failed ({block.status_reason}); replacing it")
                blocks.remove_block(block_id, user=None)
                wait_for(
                    lambda: not Block.objects.filter(pk=block_id).exists(),
                    self.timeout,
                    f"failed block {block_id} to go",
                )
                block = None
            if block is not None:
                return
            values = {
                "blockComponentURI": uris[component_role],
                "blockId": block_id,
                "minInstances": 1,
                "maxInstances": 2,
                "parameters": parameters,
                "policyRulesSpec": [
                    {
                        "values": {
                            "name": "clusterAllocator",
                            "policyRuleURI": "aios.allocator_best_fit:1.0-stable",
                            "parameters": {"filter": {"clusterQuery": {"id": ids["cluster"]}}},
                        }
                    }
                ],
            }
            self._created("blocks", block_id)
            self.say(f"block {block_id} ({uris[component_role]}) requested")
            # Inline, this runs the block_alloc task to its end (the block running).
            status, body = blocks.create_block(values, user=user)
            if status >= 400:
                raise DemoError(f"createBlock {block_id}: {body}")

        in_parallel(create, list(BLOCKS))
        for role in BLOCKS:
            block_id = ids[role]

            def running(b=block_id):
                row = Block.objects.filter(pk=b).first()
                if row is None or row.status == "failed":
                    reason = row.status_reason if row else "it disappeared"
                    raise DemoError(f"block {b} failed: {reason}")
                return row if row.status == "running" else None

            row = wait_for(running, self.timeout, f"block {block_id} to run")
            self.say(
                f"block {block_id}: running on {row.cluster_id}, executor {row.endpoints['grpc']}",
                self.style.SUCCESS,
            )

    def ensure_vdag(self, ids: dict[str, Any], user):
        from apps.parser import services as parser
        from apps.vdags.models import VDag

        existing = VDag.objects.filter(pk=ids["vdag"]).first()
        if existing is not None and existing.status == "active":
            self.say(f"vDAG {existing.pk} exists (active)")
            return existing
        envelope = json.loads(VDAG_SPEC.read_text())
        values = envelope["body"]["spec"]["values"]
        values["vdagName"] = ids["vdag"].split(":")[0]
        for node in values["nodes"]:
            role = node["manualBlockId"].removeprefix("demo-")
            node["manualBlockId"] = ids[role]
        outcome = parser.execute("createvDAG", envelope, user=user)
        if not outcome.ok:
            raise DemoError(f"createvDAG answered {outcome.status}: {outcome.body}")
        self._created("vdags", ids["vdag"])
        self.say(f"createvDAG: {outcome.status} task {outcome.body.get('task_id')}")

        def active():
            row = VDag.objects.filter(pk=ids["vdag"]).first()
            if row is not None and row.status == "failed":
                raise DemoError(f"vDAG failed: {row.status_reason}")
            return row if row is not None and row.status == "active" else None

        vdag = wait_for(active, self.timeout, "the vDAG to be active")
        for label in vdag.compiled_graph.get("order", []):
            successors = vdag.compiled_graph["edges"].get(label) or ["(result)"]
            block_id = vdag.compiled_graph["nodes"][label]["block_id"]
            self.say(f"  {label:9} [{block_id}] -> {', '.join(successors)}")
        self.say(f"vDAG {vdag.pk} active", self.style.SUCCESS)
        return vdag

    def ensure_controller(self, ids: dict[str, Any], vdag, user):
        from apps.vdags.models import VDagController
        from apps.vdags.services import controllers

        controller = VDagController.objects.filter(pk=ids["controller"]).first()
        if controller is None:
            controller, _task = controllers.create_controller(
                vdag_controller_id=ids["controller"],
                vdag_uri=vdag.pk,
                cluster_id=ids["cluster"],
                config={"policy_execution_mode": "local", "replicas": 1},
                user=user,
            )
            self._created("controllers", controller.pk)
            self.say(f"controller {controller.pk} created; waiting for its gRPC port")
        controller = wait_for(
            lambda: (
                (c := controllers.observe(controllers.get_controller(ids["controller"])))
                and c.status == "running"
                and c
            ),
            self.timeout,
            f"controller {ids['controller']} to run",
        )
        self.say(
            f"controller {controller.pk} running at {controller.public_url}", self.style.SUCCESS
        )
        return controller

    def run_requests(self, address: str, count: int) -> None:
        import grpc

        from block_sdk.protos import vdag_packet_pb2 as vpb
        from block_sdk.protos import vdag_packet_pb2_grpc as vpb_grpc

        session = f"{self.prefix}-session-{int(time.time())}"
        with grpc.insecure_channel(address) as channel:
            stub = vpb_grpc.vDAGInferenceServiceStub(channel)
            for seq in range(1, count + 1):
                x = SAMPLES[(seq - 1) % len(SAMPLES)]
                packet = vpb.vDAGInferencePacket(
                    session_id=session, seq_no=seq, data=json.dumps({"x": x}), ts=time.time()
                )
                started = time.perf_counter()
                try:
                    reply = stub.infer(packet, timeout=30)
                except grpc.RpcError as exc:
                    raise DemoError(
                        f"request {seq} failed: {exc.code().name}: {exc.details()}"
                    ) from None
                ms = (time.perf_counter() - started) * 1000
                out = json.loads(reply.data)
                classified, delayed = out["inputs"]
                self.say(
                    f"request {seq}: x={x} -> class {classified.get('class')} "
                    f"p={[round(p, 3) for p in classified['probabilities'][0]]} "
                    f"| slept {delayed['slept_s']:.3f}s | merged by {out.get('tag')!r} "
                    f"| {ms:.1f} ms"
                )
        self.say(f"{count} inference(s) answered (session {session})", self.style.SUCCESS)

    def where_to_look(self, vdag, controller) -> None:
        base = settings.AIOS_PUBLIC_URL.rstrip("/")
        http = controller.management_url
        lines = [
            "",
            "Where to look:",
            f"  admin       {base}/admin/vdags/vdag/  (route, assignment, compiled graph)",
            f"              {base}/admin/vdags/vdagcontroller/  {base}/admin/blocks/block/",
            f"  API         {base}/api/v1/vdags/{vdag.pk}/",
            f"              {base}/api/v1/vdag-controllers/{controller.pk}/",
            f"              {base}/api/v1/blocks/?cluster={controller.cluster_id}",
            f"              {base}/api/v1/vdag-quality-samples/?controller={controller.pk}",
            f"  metrics     {base}/api/v1/metrics/vdags/{vdag.pk}/   (history, live)",
            f"              {http}/metrics   (the controller's Prometheus)",
            f"              {http}/health  {http}/quota/<session_id>  {http}/graph",
            f"  gRPC        {controller.public_url}  /vDAGInferenceService/infer",
            f"  remove it   python manage.py aios_demo --prefix {self.prefix} --teardown",
        ]
        self.say("\n".join(lines))

    # -- teardown -------------------------------------------------------------------------
    def teardown(self) -> None:
        from apps.blocks import services as blocks
        from apps.blocks.models import Block
        from apps.clusters import gateway
        from apps.clusters.models import Cluster, Workload
        from apps.registries.models import Component
        from apps.vdags.models import VDag, VDagController
        from apps.vdags.services import controllers, vdags

        ids = self.ids
        created = self.state.get("created", {})
        self.step(f"removing demo '{self.prefix}'")
        controller = VDagController.objects.filter(pk=ids["controller"]).first()
        if controller is not None:
            controllers.remove_controller(controller, user=None, wait=True)
            self.say(f"controller {controller.pk} removed")
        for uri in [*created.get("vdags", []), ids["vdag"]]:
            vdag = VDag.objects.filter(pk=uri).first()
            if vdag is not None:
                vdags.delete_vdag(vdag)
                self.say(f"vDAG {uri} deleted")
        block_ids = [ids[role] for role in BLOCKS]

        def remove(block_id: str) -> None:
            if Block.objects.filter(pk=block_id).exists():
                self.say(f"block {block_id}: removing")
                blocks.remove_block(block_id, user=None)

        in_parallel(remove, block_ids)
        wait_for(
            lambda: not Block.objects.filter(pk__in=block_ids).exists(),
            self.timeout,
            "the blocks to be removed",
        )
        self.say("blocks removed")
        for uri in created.get("components", []):
            if not Block.objects.filter(component_uri=uri).exists():
                Component.objects.filter(component_uri=uri).delete()
                self.say(f"component {uri} unregistered")
        cluster_id = ids["cluster"]
        ours = cluster_id in created.get("cluster", [])
        if ours and Cluster.objects.filter(pk=cluster_id).exists():
            if Workload.objects.filter(cluster_id=cluster_id).exclude(block_id="").exists():
                self.say(f"cluster {cluster_id} still runs other workloads; kept")
            else:
                gateway.remove_cluster(cluster_id, user=None, force=True, run_async=False)
                self.say(f"cluster {cluster_id} removed")
        for agent in self.state.get("agents", []):
            self.stop_agent(agent["pid"], agent["node_id"])
        with contextlib.suppress(OSError):
            self.state_path.unlink()
        self.say("demo removed", self.style.SUCCESS)

    def stop_agent(self, pid: int, node_id: str) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.say(f"agent of {node_id} (pid {pid}) stopped")
