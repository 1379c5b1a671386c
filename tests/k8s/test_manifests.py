"""The manifest builders: every object the driver can create is valid Kubernetes (strict
schemas of a current version and of 1.29), and carries what operators rely on."""

from __future__ import annotations

import itertools

import kubernetes_validate
import pytest

from apps.clusters.choices import DesiredState, RestartPolicy, WorkloadKind
from apps.clusters.drivers.k8s import config as k8s_config
from apps.clusters.drivers.k8s import manifests, names
from apps.clusters.drivers.k8s.manifests import WorkloadView
from apps.core.errors import ValidationFailed

K8S_LATEST = kubernetes_validate.latest_version()
K8S_OLDEST = "1.29.0"
LONG_RUNNING = [k for k in WorkloadKind.values if k != WorkloadKind.JOB]


def cfg(**kubernetes) -> k8s_config.K8sConfig:
    return k8s_config.parse("gpu-east", {"kubernetes": kubernetes})


def view(kind: str = WorkloadKind.EXECUTOR, **fields) -> WorkloadView:
    base = {
        "id": "b1-executor",
        "kind": kind,
        "cluster_id": "gpu-east",
        "node_id": "node-1",
        "entry_point": "block_sdk.executor",
        "args": ["--block-id", "b1"],
        "ports": {"grpc": 50051, "http": 18000},
        "block_id": "b1",
    }
    if kind == WorkloadKind.INSTANCE:
        base.update(
            id="b1-i0",
            instance_id="b1-i0",
            entry_point="block_sdk.instance",
            ports={"http": 18001},
            image="registry.example.com/echo:1.0.0",
        )
    if kind in (WorkloadKind.JOB, WorkloadKind.THIRD_PARTY_INIT):
        base.update(ports={}, block_id="" if kind == WorkloadKind.JOB else "b1")
    base.update(fields)
    return WorkloadView(**base)


def validate(doc: dict, version: str = K8S_LATEST) -> None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def containers(doc: dict) -> list[dict]:
    spec = doc["spec"]
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return template["spec"]["containers"] if template else []


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


GPU_MODES = {
    "no-gpu": {},
    "exclusive-gpu": {"gpu_ids": [0, 1]},
    "shared-gpu": {"gpu_ids": [1], "gpu_shared": True, "gpu_uuids": ["GPU-aaaa"]},
}


def test_kubernetes_validate_knows_a_current_kubernetes() -> None:
    major, minor = (int(x) for x in K8S_LATEST.split(".")[:2])
    assert (major, minor) >= (1, 33)


@pytest.mark.parametrize("version", [K8S_LATEST, K8S_OLDEST])
@pytest.mark.parametrize(
    ("kind", "gpu_mode", "state", "security"),
    [
        *itertools.product(
            WorkloadKind.values, ["no-gpu"], [DesiredState.RUNNING], ["restricted"]
        ),
        *itertools.product(
            [WorkloadKind.INSTANCE], ["exclusive-gpu", "shared-gpu"], [DesiredState.RUNNING],
            ["restricted", "baseline"],
        ),
        *itertools.product(
            [WorkloadKind.FUNCTION, WorkloadKind.JOB, WorkloadKind.EXECUTOR],
            ["no-gpu"], [DesiredState.STOPPED], ["baseline"],
        ),
    ],
)  # fmt: skip
def test_every_workload_manifest_is_valid_kubernetes_in_strict_mode(
    version, kind, gpu_mode, state, security
) -> None:
    docs = manifests.workload_manifests(
        view(kind, desired_state=state, **GPU_MODES[gpu_mode]),
        cfg(podSecurity=security, gpuRuntimeClassName="nvidia"),
    )
    assert docs
    for doc in docs:
        validate(doc, version)


@pytest.mark.parametrize("version", [K8S_LATEST, K8S_OLDEST])
@pytest.mark.parametrize(
    "kubernetes",
    [
        {},
        {"redis": {"mode": "in-cluster"}, "gateway": {"cidrs": ["10.8.0.0/16"]}},
        {"redis": {"mode": "external", "url": "rediss://redis.example.com:6380/0"}},
        {"nodeMetrics": False, "podSecurity": "baseline", "imagePullSecrets": ["regcred"]},
    ],
    ids=["defaults", "in-cluster-redis", "external-redis", "no-metrics-baseline"],
)
def test_every_cluster_manifest_is_valid_kubernetes_in_strict_mode(version, kubernetes) -> None:
    docs = manifests.cluster_manifests(cfg(**kubernetes), {"worker-1": "node-1"})
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy"} <= kinds
    for doc in docs:
        validate(doc, version)


def test_the_kind_table_is_what_the_driver_creates() -> None:
    made = {
        kind: [d["kind"] for d in manifests.workload_manifests(view(kind), cfg())]
        for kind in WorkloadKind.values
    }
    assert made[WorkloadKind.EXECUTOR] == ["Deployment", "Service"]
    assert made[WorkloadKind.INSTANCE] == ["Deployment"]
    assert made[WorkloadKind.VDAG_CONTROLLER] == ["Deployment", "Service"]
    assert made[WorkloadKind.INFERENCE_SERVER] == ["Deployment", "Service"]
    assert made[WorkloadKind.SERVICE] == ["Deployment", "Service"]
    assert made[WorkloadKind.FUNCTION] == ["Deployment", "HorizontalPodAutoscaler", "Service"]
    assert made[WorkloadKind.THIRD_PARTY_INIT] == ["Deployment"]
    assert made[WorkloadKind.JOB] == ["Job"]


@pytest.mark.parametrize("kind", WorkloadKind.values)
def test_every_container_has_requests_limits_and_probes(kind) -> None:
    for doc in manifests.workload_manifests(view(kind), cfg()):
        for container in containers(doc):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"])
            assert {"cpu", "memory"} <= set(resources["limits"])
            assert "livenessProbe" in container and "readinessProbe" in container
            if kind != WorkloadKind.JOB:
                assert "startupProbe" in container


def test_cluster_containers_have_requests_limits_and_probes() -> None:
    docs = manifests.cluster_manifests(cfg(redis={"mode": "in-cluster"}), {})
    seen = 0
    for doc in docs:
        for container in containers(doc) if doc["kind"] in ("Deployment", "DaemonSet") else []:
            seen += 1
            assert container["resources"]["requests"] and container["resources"]["limits"]
            assert "livenessProbe" in container and "readinessProbe" in container
    assert seen == 2  # node metrics and Redis


@pytest.mark.parametrize("kind", WorkloadKind.values)
def test_every_object_carries_the_ownership_and_workload_labels(kind) -> None:
    v = view(kind)
    for doc in manifests.workload_manifests(v, cfg()):
        labels = doc["metadata"]["labels"]
        assert labels[names.MANAGED_BY] == "aios"
        assert labels[names.CLUSTER_ID] == "gpu-east"
        assert labels[names.WORKLOAD_ID] == v.id
        assert labels[names.NODE_ID] == "node-1"
        assert labels[names.KIND] == kind
        if v.block_id:
            assert labels[names.BLOCK_ID] == "b1"
        if v.instance_id:
            assert labels[names.INSTANCE_ID] == "b1-i0"
        assert doc["metadata"]["annotations"][names.SPEC_HASH]
        template = doc["spec"].get("template")
        if template:  # pods carry the same labels: status and removal find them
            assert template["metadata"]["labels"] == labels


def test_an_instance_is_pinned_to_its_node_with_exclusive_gpus_as_device_plugin_limits() -> None:
    (deployment,) = manifests.workload_manifests(
        view(WorkloadKind.INSTANCE, gpu_ids=[0, 3]), cfg(gpuRuntimeClassName="nvidia")
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["nodeSelector"] == {names.NODE_ID: "node-1"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert "NVIDIA_VISIBLE_DEVICES" not in env_of(container)  # the device plugin sets it
    assert env_of(container)["AIOS_GPU_IDS"] == "0,3"
    assert pod["runtimeClassName"] == "nvidia"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two on one GPU


def test_a_declared_shared_gpu_is_exposed_through_nvidia_visible_devices() -> None:
    (deployment,) = manifests.workload_manifests(
        view(WorkloadKind.INSTANCE, gpu_ids=[1], gpu_shared=True, gpu_uuids=["GPU-1234"]), cfg()
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert env_of(container)["NVIDIA_VISIBLE_DEVICES"] == "GPU-1234"
    # Without UUIDs, the indices.
    (deployment,) = manifests.workload_manifests(
        view(WorkloadKind.INSTANCE, gpu_ids=[0, 1], gpu_shared=True), cfg()
    )
    assert (
        env_of(deployment["spec"]["template"]["spec"]["containers"][0])["NVIDIA_VISIBLE_DEVICES"]
        == "0,1"
    )


def test_a_cpu_workload_sees_no_gpu_even_from_a_cuda_image() -> None:
    (deployment, _service) = manifests.workload_manifests(view(), cfg())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["NVIDIA_VISIBLE_DEVICES"] == "none"
    assert "tolerations" not in deployment["spec"]["template"]["spec"]


def test_user_workloads_run_unprivileged_without_an_api_token() -> None:
    for kind in WorkloadKind.values:
        for doc in manifests.workload_manifests(view(kind), cfg()):
            template = doc["spec"].get("template")
            if not template:
                continue
            pod = template["spec"]
            assert pod["serviceAccountName"] == manifests.WORKLOAD_SERVICE_ACCOUNT
            assert pod["automountServiceAccountToken"] is False
            assert pod["securityContext"]["runAsNonRoot"] is True
            sc = pod["containers"][0]["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}


def test_no_cluster_admin_and_no_rights_for_the_workload_identity() -> None:
    docs = manifests.cluster_manifests(cfg(redis={"mode": "in-cluster"}), {})
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert bindings
    for binding in bindings:
        assert binding["roleRef"]["name"] != "cluster-admin"
        assert all(s["name"] != manifests.WORKLOAD_SERVICE_ACCOUNT for s in binding["subjects"])
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]}
    ]
    for role in (d for d in docs if d["kind"] == "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"]
            assert "secrets" not in rule["resources"]
    for account in (d for d in docs if d["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_network_policies_keep_redis_and_executors_inside_the_cluster_and_the_gateway() -> None:
    config = cfg(redis={"mode": "in-cluster"}, gateway={"cidrs": ["10.8.0.0/16"]})
    docs = {
        (d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in manifests.cluster_manifests(config, {})
        if d["kind"] == "NetworkPolicy"
    }
    ns, sys_ns = config.namespace, config.system_namespace
    gateway = [k8s_config.DEFAULT_GATEWAY_PEER, {"ipBlock": {"cidr": "10.8.0.0/16"}}]
    default = docs[(ns, "aios-default-ingress")]["spec"]
    assert default["podSelector"] == {}
    assert default["ingress"] == [{"from": [{"podSelector": {}}, *gateway]}]
    serving = docs[(ns, "aios-serving-ingress")]["spec"]
    assert serving["podSelector"]["matchExpressions"][0]["values"] == [
        "executor",
        "vdag_controller",
        "inference_server",
    ]
    assert serving["ingress"] == [{"from": [{"namespaceSelector": {}}]}]  # pods, not the world
    redis = docs[(sys_ns, "aios-redis-ingress")]["spec"]
    assert redis["ingress"][0]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert redis["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
        {"podSelector": {}},
        *gateway,
    ]
    assert docs[(sys_ns, "aios-default-deny-ingress")]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }


def test_redis_runs_in_the_cluster_only_when_asked() -> None:
    def redis_objects(**kw):
        return [
            d["kind"]
            for d in manifests.cluster_manifests(cfg(**kw), {})
            if d["metadata"]["name"] == manifests.REDIS_NAME
        ]

    assert redis_objects() == []
    assert redis_objects(redis={"mode": "in-cluster"}) == [
        "ServiceAccount",
        "Deployment",
        "Service",
    ]
    in_cluster = cfg(redis={"mode": "in-cluster"})
    assert in_cluster.redis_url == f"redis://aios-redis.{in_cluster.system_namespace}.svc:6379/0"
    (deployment, _svc) = manifests.workload_manifests(view(), in_cluster)
    assert env_of(deployment["spec"]["template"]["spec"]["containers"][0])["REDIS_URL"] == (
        in_cluster.redis_url
    )


def test_node_metrics_daemonset_uses_the_node_metrics_image_on_this_clusters_nodes() -> None:
    config = cfg(nodeMetricsImage="registry.example.com/aios/aios-node-metrics:0.1.0")
    docs = manifests.cluster_manifests(config, {"worker-1": "node-1"})
    (daemonset,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/aios/aios-node-metrics:0.1.0"
    assert pod["nodeSelector"] == {names.CLUSTER_ID: "gpu-east"}
    assert pod["tolerations"] == [{"operator": "Exists"}]
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert configmap["data"][manifests.NODE_IDS_FILE].replace(" ", "").replace("\n", "") == (
        '{"worker-1":"node-1"}'
    )
    namespaces = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}
    labels = namespaces[config.system_namespace]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"  # hostNetwork, hostPath
    assert (
        namespaces[config.namespace]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        == "restricted"
    )


def test_entry_points_use_the_runtime_image_commands() -> None:
    def argv(**fields):
        (deployment, *_rest) = manifests.workload_manifests(view(**fields), cfg())
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return container.get("command"), container.get("args"), container["image"]

    assert argv(entry_point="block_sdk.executor", args=["--x"]) == (
        None,
        ["executor", "--x"],
        k8s_config.default_image("runtime"),
    )
    assert argv(entry_point="block_sdk.vdag_controller", args=[])[1] == ["vdag-controller"]
    assert argv(entry_point="block_sdk.block_controller", args=[])[1] == [
        "module",
        "block_sdk.block_controller",
    ]
    assert argv(entry_point="pkg.mod:Main", args=["a"])[1] == ["entry", "pkg.mod:Main", "a"]
    # A host interpreter path (the local driver's argv) becomes the image's python.
    command, args, _ = argv(
        command=["/work/.venv/bin/python3.11", "-m", "block_sdk.third_party.init"], args=["-v"]
    )
    assert command == ["python", "-m", "block_sdk.third_party.init"] and args == ["-v"]


def test_a_job_never_restarts_its_pod_and_retries_as_its_restart_policy_says() -> None:
    def job(**fields):
        (doc,) = manifests.workload_manifests(view(WorkloadKind.JOB, **fields), cfg())
        return doc

    never = job(restart_policy=RestartPolicy.NEVER)
    assert never["spec"]["backoffLimit"] == 0
    assert never["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert never["spec"]["suspend"] is False
    assert job(restart_policy=RestartPolicy.ON_FAILURE, max_restarts=3)["spec"]["backoffLimit"] == 3
    assert job(desired_state=DesiredState.STOPPED)["spec"]["suspend"] is True
    assert job(resources={"timeout_s": 60})["spec"]["activeDeadlineSeconds"] == 60
    container = never["spec"]["template"]["spec"]["containers"][0]
    assert env_of(container)["AIOS_RESULT_PATH"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_a_function_scales_with_an_hpa_that_owns_its_replicas() -> None:
    v = view(
        WorkloadKind.FUNCTION,
        resources={"autoscaling": {"min_replicas": 2, "max_replicas": 5}},
    )
    deployment, hpa, _service = manifests.workload_manifests(v, cfg())
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 5
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    stopped = manifests.workload_manifests(
        view(WorkloadKind.FUNCTION, desired_state=DesiredState.STOPPED), cfg()
    )
    assert [d["kind"] for d in stopped] == ["Deployment", "Service"]
    assert stopped[0]["spec"]["replicas"] == 0


def test_a_stopped_workload_keeps_its_deployment_at_zero_replicas() -> None:
    deployment, _ = manifests.workload_manifests(view(desired_state=DesiredState.STOPPED), cfg())
    assert deployment["spec"]["replicas"] == 0


def test_declared_probes_and_resources_become_the_containers() -> None:
    v = view(
        probes={
            "liveness": {"http": {"path": "/live", "port": "http"}, "period_s": 7},
            "readiness": {"grpc": {"port": "grpc"}},
            "startup": {"tcp": {"port": 50051}, "failure_threshold": 100},
        },
        resources={"vcpus": 2, "memory_mb": 4096, "vcpus_limit": 3},
    )
    deployment, _ = manifests.workload_manifests(v, cfg())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": 18000}
    assert container["livenessProbe"]["periodSeconds"] == 7
    assert container["readinessProbe"]["grpc"] == {"port": 50051}
    assert container["startupProbe"]["failureThreshold"] == 100
    assert container["resources"] == {
        "requests": {"cpu": "2000m", "memory": "4096Mi"},
        "limits": {"cpu": "3000m", "memory": "4096Mi"},
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"probes": {"liveness": {"http": {"port": "nope"}}}}, "probes.liveness.http.port"),
        ({"probes": {"liveness": {"ftp": {}}}}, "probes.liveness"),
        ({"probes": {"sideways": {}}}, "unknown probe"),
        ({"resources": {"vcpus": -1}}, "resources.vcpus"),
        ({"resources": {"memory_mb": 1024, "memory_limit_mb": 512}}, "limits"),
        ({"resources": {"gpus": "two"}}, "resources.gpus"),
    ],
)
def test_a_spec_kubernetes_cannot_run_is_a_clear_400(fields, message) -> None:
    with pytest.raises(ValidationFailed) as caught:
        manifests.workload_manifests(view(**fields), cfg())
    assert caught.value.status_code == 400
    assert message in caught.value.message


def test_long_and_dotted_workload_ids_get_valid_stable_names_and_labels() -> None:
    workload_id = "9" + "a.b-" * 30 + "z"  # 122 characters, starts with a digit, dots
    v = view(id=workload_id, instance_id=workload_id, kind=WorkloadKind.EXECUTOR)
    docs = manifests.workload_manifests(v, cfg())
    for doc in docs:
        validate(doc)
        assert len(doc["metadata"]["name"]) <= 63
        assert doc["metadata"]["name"][0].isalpha()
        assert doc["metadata"]["annotations"][names.WORKLOAD_FULL_ID] == workload_id
    again = manifests.workload_manifests(v, cfg())
    assert [d["metadata"]["name"] for d in again] == [d["metadata"]["name"] for d in docs]
    other = manifests.workload_manifests(view(id=workload_id + "x"), cfg())
    assert other[0]["metadata"]["name"] != docs[0]["metadata"]["name"]


def test_the_spec_hash_is_stable_and_follows_every_change() -> None:
    first = manifests.workload_manifests(view(), cfg())[0]
    assert manifests.workload_manifests(view(), cfg())[0] == first
    bumped = manifests.workload_manifests(view(generation=2), cfg())[0]
    assert (
        bumped["metadata"]["annotations"][names.SPEC_HASH]
        != first["metadata"]["annotations"][names.SPEC_HASH]
    )
    # env order in the row (PostgreSQL jsonb reorders keys) does not matter
    a = manifests.workload_manifests(view(env={"B": "2", "A": "1"}), cfg())[0]
    b = manifests.workload_manifests(view(env={"A": "1", "B": "2"}), cfg())[0]
    assert a == b


def test_ports_asked_as_zero_get_aios_conventional_numbers() -> None:
    assert manifests.assign_ports({"grpc": 0, "http": 0}) == {"grpc": 50051, "http": 18000}
    assert manifests.assign_ports({"grpc": 7000, "metrics": 0, "admin": 0}) == {
        "grpc": 7000,
        "metrics": 8001,
        "admin": 8000,
    }


@pytest.mark.parametrize(
    ("kubernetes", "message"),
    [
        ({"namespaces": "x"}, "unknown key config.kubernetes.namespaces"),
        ({"redis": {"mode": "shared"}}, "redis.mode"),
        ({"redis": {"mode": "external"}}, "redis.url"),
        ({"redis": {"url": "http://x"}}, "redis.url"),
        ({"namespace": "Bad_NS"}, "namespace"),
        ({"gateway": {"cidrs": ["not-a-cidr"]}}, "gateway.cidrs"),
        ({"podSecurity": "privileged"}, "podSecurity"),
        ({"nodeSelector": "pool"}, "nodeSelector"),
        ({"requestTimeoutSeconds": 0}, "requestTimeoutSeconds"),
    ],
)
def test_a_bad_kubernetes_config_is_a_clear_400(kubernetes, message) -> None:
    with pytest.raises(ValidationFailed) as caught:
        cfg(**kubernetes)
    assert message in caught.value.message


def test_node_metrics_daemonset_probes_its_health_port_and_mounts_an_optional_token():
    from apps.clusters.drivers.k8s import config as k8s_config
    from apps.clusters.drivers.k8s import manifests

    cfg = k8s_config.parse("nm-cluster", {})
    docs = manifests.cluster_manifests(cfg, {"kube-node-1": "node-1"})
    daemonsets = [d for d in docs if d["kind"] == "DaemonSet"]
    assert daemonsets, "cluster provisioning renders the node-metrics DaemonSet"
    pod = daemonsets[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["AIOS_API_TOKEN_FILE"] == "/etc/aios-token/token"
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": 9109}
    token = next(v for v in pod["volumes"] if v["name"] == "token")
    assert token["secret"] == {"secretName": "aios-node-metrics-token", "optional": True}
