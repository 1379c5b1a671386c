"""Optional: one block's rendered manifests run in real containers with ``podman kube play``,
answer one inference over gRPC, and are removed.

Skipped where podman is missing or cannot run a container. Base images cannot be pulled
here, so the runtime image is a stand-in assembled from local files (``local_image.py``).
What the test changes in the rendered Deployments, and why (all of it is about running on
one machine without a Kubernetes node, none of it about the workload):

- ``hostNetwork: true`` and no ``containerPorts``: the pods reach the test's Redis on
  127.0.0.1, and the test reaches the executor there (ports are free ports of this machine);
- no ``fieldRef`` environment variables: podman 4 does not resolve ``status.podIP``;
- the instance registers itself (``AIOS_REGISTER_SELF=1``): the blocks app, which registers
  instances from the control plane, is not running the block here.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
import redis
from django.conf import settings

from apps.clusters.choices import WorkloadKind
from apps.clusters.drivers.k8s import render
from apps.clusters.drivers.kubernetes import KubernetesDriver
from block_sdk.packet import make_block_packet
from block_sdk.protos import aios_packet_pb2_grpc
from block_sdk.queues import BlockKeys
from tests.k8s import local_image

pytestmark = [
    pytest.mark.podman,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
]

SPECS = Path(__file__).parent / "specs"
IMAGE_REPO = "localhost/aios-runtime-k8stest"
# Restricted machines (no CAP_SYS_RESOURCE, cgroup v1 hybrid) need these; harmless elsewhere.
FALLBACK_FLAGS = ["--runtime", "runc", "--cgroup-manager", "cgroupfs"]
ULIMITS_CONF = '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'


def _run(cmd: list[str], env: dict | None = None, timeout: float = 120, check: bool = False):
    import os

    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ...: {result.stderr[-2000:]}")
    return result


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """(argv prefix, env) with which podman runs containers here, or a skip saying why."""
    work = tmp_path_factory.mktemp("podman-probe")
    rootfs = work / "rootfs"
    for src, dest in (
        ("/bin/dash", "bin/sh"),
        ("/lib/x86_64-linux-gnu/libc.so.6", "lib/x86_64-linux-gnu/libc.so.6"),
        ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
    ):
        if not Path(src).exists():
            pytest.skip(f"cannot assemble a probe image: {src} is missing")
        (rootfs / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, rootfs / dest)
    (work / "Containerfile").write_text(
        'FROM scratch\nCOPY rootfs/ /\nCMD ["/bin/sh", "-c", "echo ok"]\n'
    )
    conf = work / "containers.conf"
    conf.write_text(ULIMITS_CONF)
    tag = f"{IMAGE_REPO}-probe:{uuid.uuid4().hex[:8]}"
    built = _run(["podman", "build", "-q", "-t", tag, str(work)])
    if built.returncode != 0:
        pytest.skip(f"podman cannot build an image here: {built.stderr.strip()[-300:]}")
    errors = []
    try:
        for flags, env in (([], {}), (FALLBACK_FLAGS, {"CONTAINERS_CONF": str(conf)})):
            ran = _run(["podman", *flags, "run", "--rm", tag], env=env)
            if ran.returncode == 0 and "ok" in ran.stdout:
                yield ["podman", *flags], env
                return
            errors.append(ran.stderr.strip()[-300:])
        pytest.skip(f"podman cannot run a container here: {' / '.join(errors)}")
    finally:
        _run(["podman", "rmi", "-f", tag])


@pytest.fixture(scope="module")
def runtime_image(podman, tmp_path_factory):
    cmd, env = podman
    tag = f"{IMAGE_REPO}:{local_image.fingerprint()}"
    if _run([*cmd, "image", "exists", tag], env=env).returncode != 0:
        local_image.build_image(cmd, tmp_path_factory.mktemp("runtime-image"), tag)
    # Earlier builds of this stand-in (other code versions) are ours to remove.
    listed = _run([*cmd, "images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO], env=env)
    for old in listed.stdout.split():
        if old != tag and old.startswith(IMAGE_REPO + ":"):
            _run([*cmd, "rmi", old], env=env)
    return tag


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _play_documents(image: str, block_id: str, workdir: Path) -> tuple[list[dict], int]:
    spec = json.loads((SPECS / "block.json").read_text())
    values = spec["body"]["spec"]["values"]
    values.update(blockId=block_id, minInstances=1)
    values.pop("resourceRequirements")  # CPU only: no GPU here
    path = workdir / "block.json"
    path.write_text(json.dumps(spec))
    cluster, node = render.resolve(
        node_id="podman", cluster_id="podman-test", kubernetes={"runtimeImage": image}
    )
    specs = render.block_specs(
        str(path), cluster, node, component_path=str(SPECS / "component.json")
    )
    driver = KubernetesDriver(cluster)
    docs, grpc_port = [], 0
    for spec_ in specs:
        if spec_.kind == WorkloadKind.EXECUTOR:
            grpc_port, http_port = _free_port(), _free_port()
            args = spec_.args
            args[args.index("--grpc-port") + 1] = str(grpc_port)
            args[args.index("--http-port") + 1] = str(http_port)
            spec_.ports = {"grpc": grpc_port, "http": http_port}
        elif spec_.kind == WorkloadKind.INSTANCE:
            port = _free_port()
            spec_.ports = {"http": port}
            spec_.env.update(AIOS_INSTANCE_HTTP_PORT=str(port), AIOS_REGISTER_SELF="1")
            spec_.image = image
        else:
            continue  # the block controller talks to a control plane that is not running
        docs.extend(render._workload_docs(driver, spec_, node))
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for doc in deployments:
        pod = doc["spec"]["template"]["spec"]
        pod["hostNetwork"] = True
        for container in pod["containers"]:
            container.pop("ports", None)
            container["env"] = [e for e in container["env"] if "valueFrom" not in e]
    return deployments, grpc_port


def test_a_rendered_block_runs_in_podman_and_answers_an_inference(
    db, podman, runtime_image, tmp_path
) -> None:
    cmd, env = podman
    block_id = f"pm-{uuid.uuid4().hex[:8]}"
    deployments, grpc_port = _play_documents(runtime_image, block_id, tmp_path)
    assert [d["metadata"]["name"] for d in deployments] == [
        f"{block_id}-executor",
        f"{block_id}-i0",
    ]
    manifest = tmp_path / "play.yaml"
    manifest.write_text(render.to_yaml(deployments))
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    try:
        _run([*cmd, "kube", "play", str(manifest)], env=env, timeout=180, check=True)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = aios_packet_pb2_grpc.BlockInferenceServiceStub(channel)
        deadline, last = time.monotonic() + 90, None
        while time.monotonic() < deadline:
            try:
                out = stub.infer(make_block_packet({"hello": "pod"}), timeout=10)
                break
            except grpc.RpcError as exc:  # starting: no executor yet, or no instance yet
                last = exc
                time.sleep(1)
        else:
            logs = _run([*cmd, "logs", f"{block_id}-i0-pod-0-instance"], env=env)
            pytest.fail(f"no answer from the block: {last!r}\n{logs.stdout[-2000:]}")
        channel.close()
        assert json.loads(out.data) == {"hello": "pod", "echo": True}
    finally:
        down = _run([*cmd, "kube", "down", str(manifest)], env=env, timeout=180)
        pattern = f"{BlockKeys(block_id).base}*".replace("{", "\\{").replace("}", "\\}")
        for key in client.scan_iter(match=pattern, count=500):
            client.delete(key)
    assert down.returncode == 0, down.stderr
    left = _run([*cmd, "pod", "ls", "--format", "{{.Name}}"], env=env)
    assert not [name for name in left.stdout.split() if name.startswith(block_id)]
