"""The management-plane Helm chart, rendered without a cluster.

Every value set renders; every object is valid for a current Kubernetes version in
kubernetes-validate's strict mode (unknown fields are errors); and what an operator relies on
holds: non-root everywhere, probes and resources on every container, secrets only ever
referenced, migrations as hooks, selectors that select.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet

from tests.deploy.support import (
    CHART,
    FIXED_SECRETS,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    by_kind,
    containers,
    named,
    pod_spec,
    render,
    renderer,
    workloads,
)

# The newest schema kubernetes-validate ships, and the oldest version Chart.yaml accepts.
K8S_LATEST = kubernetes_validate.latest_version()
K8S_OLDEST = "1.29.0"
HOOK = "helm.sh/hook"
# Values that are Kubernetes objects passed through as they are: their key is documented,
# their fields are Kubernetes' own.
K8S_OBJECT_KEYS = {
    "resources",
    "initResources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "podSecurityContext",
    "containerSecurityContext",
    "hosts",
}
SENSITIVE_ENV = re.compile(r"(SECRET|PASSWORD|FERNET|TOKEN|_KEY$|DATABASE_URL|REDIS_URL|AUTH)")


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(VALUE_SETS[request.param])


def test_kubernetes_validate_knows_a_current_kubernetes() -> None:
    major, minor = (int(x) for x in K8S_LATEST.split(".")[:2])
    assert (major, minor) >= (1, 33)


@pytest.mark.parametrize("version", [K8S_LATEST, K8S_OLDEST])
def test_every_manifest_is_valid_kubernetes_in_strict_mode(rendered, version) -> None:
    name, objects = rendered
    assert objects, f"{name}: nothing rendered"
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {exc.message}")


def test_default_install_has_every_management_plane_part() -> None:
    objects = render({})
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for kind, name in [
        ("Deployment", f"{RELEASE}-aios-web"),
        ("Service", f"{RELEASE}-aios-web"),
        ("PodDisruptionBudget", f"{RELEASE}-aios-web"),
        ("Deployment", f"{RELEASE}-aios-worker"),
        ("Deployment", f"{RELEASE}-aios-beat"),
        ("Deployment", f"{RELEASE}-aios-flower"),
        ("Service", f"{RELEASE}-aios-flower"),
        ("Job", f"{RELEASE}-aios-migrations"),
        ("Job", f"{RELEASE}-aios-setup"),
        ("Secret", f"{RELEASE}-aios"),
        ("ServiceAccount", f"{RELEASE}-aios"),
        ("PersistentVolumeClaim", f"{RELEASE}-aios-media"),
        ("StatefulSet", f"{RELEASE}-postgresql"),
        ("Service", f"{RELEASE}-postgresql"),
        ("StatefulSet", f"{RELEASE}-redis"),
        ("Service", f"{RELEASE}-redis"),
    ]:
        assert (kind, name) in kinds, f"{kind} {name} missing"
    assert not by_kind(objects, "Ingress")
    assert not by_kind(objects, "NetworkPolicy")


def test_every_pod_runs_as_non_root_with_no_capabilities(rendered) -> None:
    name, objects = rendered
    for obj in workloads(objects):
        spec = pod_spec(obj)
        pod_ctx = spec.get("securityContext") or {}
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        assert pod_ctx.get("runAsNonRoot") is True, where
        assert pod_ctx.get("runAsUser", 0) != 0, where
        assert pod_ctx.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for container in containers(obj):
            ctx = container.get("securityContext") or {}
            assert ctx.get("allowPrivilegeEscalation") is False, f"{where} {container['name']}"
            assert ctx.get("capabilities", {}).get("drop") == ["ALL"], where
            assert ctx.get("readOnlyRootFilesystem") is True, f"{where} {container['name']}"
            assert ctx.get("privileged") is not True, where


def test_every_container_has_resources_and_long_running_ones_have_probes(rendered) -> None:
    name, objects = rendered
    for obj in workloads(objects):
        for container in containers(obj):
            where = f"{name}: {obj['metadata']['name']}/{container['name']}"
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound) or {}), f"{where} {bound}"
        if obj["kind"] == "Job":
            continue  # a Job's container runs to completion; the Job's deadline bounds it
        for container in containers(obj, init=False):
            where = f"{name}: {obj['metadata']['name']}/{container['name']}"
            assert container.get("livenessProbe"), f"{where}: no liveness probe"
            assert container.get("readinessProbe"), f"{where}: no readiness probe"


def test_web_probes_ask_health_with_an_allowed_host_and_liveness_ignores_the_database() -> None:
    web = named(render({}), "Deployment", "-web")
    container = web["spec"]["template"]["spec"]["containers"][0]
    readiness = container["readinessProbe"]["httpGet"]
    assert readiness["path"] == "/api/health/"
    assert {"name": "Host", "value": "localhost"} in readiness["httpHeaders"]
    assert "localhost" in _env(container)["ALLOWED_HOSTS"]["value"].split(",")
    # A database outage makes pods unready, it must not restart them all.
    assert "tcpSocket" in container["livenessProbe"]
    assert container["ports"][0]["containerPort"] == 8000


def test_selectors_select_their_own_pods_and_only_them(rendered) -> None:
    name, objects = rendered
    pods = {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet"}
    }
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            selector = obj["spec"]["selector"]["matchLabels"]
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), f"{name}: {obj['metadata']['name']}"
            others = [p for p, lab in pods.items() if p != obj["metadata"]["name"]]
            assert not [p for p in others if selector.items() <= pods[p].items()], (
                f"{name}: {obj['metadata']['name']} selects another workload's pods"
            )
        elif obj["kind"] == "Service":
            selector = obj["spec"]["selector"]
            hits = [p for p, lab in pods.items() if selector.items() <= lab.items()]
            assert len(hits) == 1, f"{name}: Service {obj['metadata']['name']} selects {hits}"
            port_names = {
                p["name"] for c in containers(_owner(objects, hits[0])) for p in c.get("ports", [])
            }
            for port in obj["spec"]["ports"]:
                assert port["targetPort"] in port_names, f"{name}: {obj['metadata']['name']}"
        elif obj["kind"] == "PodDisruptionBudget":
            selector = obj["spec"]["selector"]["matchLabels"]
            hits = [p for p, lab in pods.items() if selector.items() <= lab.items()]
            assert hits == [f"{RELEASE}-aios-web"], name


def test_network_policies_select_existing_pods() -> None:
    objects = render(VALUE_SETS["hardened"])
    labels = [
        o["spec"]["template"]["metadata"]["labels"] for o in objects if pod_spec(o) is not None
    ]
    policies = by_kind(objects, "NetworkPolicy")
    assert len(policies) == 5  # web, deny-ingress, flower, postgresql, redis
    for policy in policies:
        selector = policy["spec"]["podSelector"]
        matched = [lab for lab in labels if _selects(selector, lab)]
        assert matched, f"NetworkPolicy {policy['metadata']['name']} selects no pod"
    postgres = named(objects, "NetworkPolicy", "-postgresql")
    allowed = postgres["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    web_labels = named(objects, "Deployment", "-web")["spec"]["template"]["metadata"]["labels"]
    assert allowed.items() <= web_labels.items()
    redis = named(objects, "NetworkPolicy", "-redis")
    assert len(redis["spec"]["ingress"][0]["from"]) == 2  # the release's pods + redisFrom


def test_migrations_job_runs_before_install_and_upgrade_with_an_external_database() -> None:
    objects = render(VALUE_SETS["external-urls"])
    job = named(objects, "Job", "-migrations")
    annotations = job["metadata"]["annotations"]
    assert annotations[HOOK] == "pre-install,pre-upgrade"
    assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["activeDeadlineSeconds"] > 0
    # The Secret the Job reads is itself a hook that comes first.
    secret = named(objects, "Secret", f"{RELEASE}-aios")
    assert "pre-install" in secret["metadata"]["annotations"][HOOK]
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_with_the_bundled_database_the_first_migration_runs_after_install() -> None:
    job = named(render({}), "Job", "-migrations")
    assert job["metadata"]["annotations"][HOOK] == "post-install,pre-upgrade"


def test_setup_job_runs_after_install_and_upgrade_with_the_media_volume() -> None:
    objects = render({})
    job = named(objects, "Job", "-setup")
    assert job["metadata"]["annotations"][HOOK] == "post-install,post-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = _env(container)
    assert env["AIOS_SETUP_COMMANDS"]["value"] == "aios_seed_policies"
    assert "secretKeyRef" in env["AIOS_ADMIN_PASSWORD"]["valueFrom"]
    assert {"name": "media", "mountPath": "/var/lib/aios-media"} in container["volumeMounts"]


def test_pods_wait_for_migrations_in_an_init_container() -> None:
    objects = render({})
    for suffix in ("-web", "-worker", "-beat"):
        spec = named(objects, "Deployment", suffix)["spec"]["template"]["spec"]
        init = spec["initContainers"]
        assert [c["args"] for c in init] == [["wait-migrations"]], suffix
        assert "AIOS_WAIT_TIMEOUT" in _env(init[0])


def test_existing_secrets_mean_no_secret_value_is_rendered() -> None:
    objects = render(VALUE_SETS["existing-secrets"])
    assert not by_kind(objects, "Secret")
    for obj in workloads(objects):
        for container in containers(obj):
            env = _env(container)
            assert env["SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "aios-app"
            assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
                "name": "aios-db",
                "key": "url",
            }
            assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "aios-redis"
            assert env["AIOS_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "aios-s3"


def test_sensitive_environment_is_never_inlined(rendered) -> None:
    name, objects = rendered
    for obj in workloads(objects):
        for container in containers(obj):
            for var in container.get("env", []):
                if not SENSITIVE_ENV.search(var["name"]) or "valueFrom" in var:
                    continue
                # Only the bundled servers' URLs are built in the pod spec, and only from
                # a reference to their password: $(VAR) is expanded by the kubelet.
                assert re.fullmatch(r"(postgresql|redis)://[^@]*\$\([A-Z_]+\)@.+", var["value"]), (
                    f"{name}: {obj['metadata']['name']}/{container['name']} inlines {var['name']}"
                )
    text = yaml.safe_dump_all(objects)
    assert "pw@db.example.com" not in text.replace(
        base64.b64encode(b"postgresql://aios:pw@db.example.com:5432/aios").decode(), ""
    )


def test_inline_external_urls_are_stored_in_the_chart_secret() -> None:
    objects = render(VALUE_SETS["external-urls"])
    secret = named(objects, "Secret", f"{RELEASE}-aios")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["DATABASE_URL"] == "postgresql://aios:pw@db.example.com:5432/aios"
    assert data["REDIS_URL"] == "rediss://:pw@redis.example.com:6380/0"
    web = named(objects, "Deployment", "-web")["spec"]["template"]["spec"]["containers"][0]
    assert _env(web)["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-aios",
        "key": "DATABASE_URL",
    }


def test_generated_secrets_are_usable_and_given_ones_are_kept() -> None:
    secret = named(render({}), "Secret", f"{RELEASE}-aios")
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    Fernet(data["AIOS_FERNET_KEY"].encode())  # raises when it is not a Fernet key
    assert len(data["SECRET_KEY"]) == 50 and len(data["AIOS_ADMIN_PASSWORD"]) >= 16
    given = named(render(FIXED_SECRETS), "Secret", f"{RELEASE}-aios")
    data = {k: base64.b64decode(v).decode() for k, v in given["data"].items()}
    assert data["AIOS_FERNET_KEY"] == FIXED_SECRETS["secrets"]["fernetKey"]
    Fernet(data["AIOS_FERNET_KEY"].encode())
    pg = named(render(FIXED_SECRETS), "Secret", f"{RELEASE}-postgresql")
    assert base64.b64decode(pg["data"]["password"]).decode() == "pgpassword"
    assert pg["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_bundled_servers_are_reached_through_their_own_secrets() -> None:
    objects = render({})
    web = named(objects, "Deployment", "-web")["spec"]["template"]["spec"]["containers"][0]
    env = _env(web)
    assert env["AIOS_POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{RELEASE}-postgresql",
        "key": "password",
    }
    assert env["DATABASE_URL"]["value"] == (
        f"postgresql://aios:$(AIOS_POSTGRES_PASSWORD)@{RELEASE}-postgresql:5432/aios"
    )
    assert env["REDIS_URL"]["value"] == f"redis://:$(AIOS_REDIS_PASSWORD)@{RELEASE}-redis:6379/0"
    # $(VAR) only expands when VAR is defined earlier in the list.
    names = [v["name"] for v in web["env"]]
    assert names.index("AIOS_POSTGRES_PASSWORD") < names.index("DATABASE_URL")
    assert names.index("AIOS_REDIS_PASSWORD") < names.index("REDIS_URL")
    named(objects, "Service", f"{RELEASE}-postgresql")
    named(objects, "Service", f"{RELEASE}-redis")


def test_ingress_routes_to_web_with_tls_and_its_host_is_trusted() -> None:
    objects = render(VALUE_SETS["ingress-tls"])
    ingress = named(objects, "Ingress", f"{RELEASE}-aios")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "aios-tls", "hosts": ["aios.example.com"]}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{RELEASE}-aios-web", "port": {"name": "http"}}
    env = _env(named(objects, "Deployment", "-web")["spec"]["template"]["spec"]["containers"][0])
    hosts = env["ALLOWED_HOSTS"]["value"].split(",")
    assert {"aios.example.com", "aios.internal", f"{RELEASE}-aios-web.{NAMESPACE}.svc"} <= set(
        hosts
    )
    origins = env["CSRF_TRUSTED_ORIGINS"]["value"].split(",")
    assert {"https://aios.example.com", "https://ui.x"} <= set(origins)
    assert env["AIOS_PUBLIC_URL"]["value"] == "https://aios.example.com"


def test_flower_and_beat_can_be_turned_off() -> None:
    objects = render(VALUE_SETS["minimal"])
    names = {o["metadata"]["name"] for o in objects}
    assert f"{RELEASE}-aios-flower" not in names and f"{RELEASE}-aios-beat" not in names
    assert not by_kind(objects, "PodDisruptionBudget")
    assert not by_kind(objects, "PersistentVolumeClaim")
    assert not any("volumeClaimTemplates" in o["spec"] for o in by_kind(objects, "StatefulSet"))


def test_beat_is_a_singleton_replaced_by_recreate() -> None:
    beat = named(render({"web": {"replicaCount": 5}}), "Deployment", "-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}


def test_image_reference_uses_the_digest_when_given() -> None:
    web = named(render(VALUE_SETS["hardened"]), "Deployment", "-web")
    image = web["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/aios/aios-control-plane@sha256:" + "ab" * 32
    default = named(render({}), "Deployment", "-web")["spec"]["template"]["spec"]
    assert default["containers"][0]["image"] == "aios-control-plane:0.1.0"


def test_missing_external_database_is_a_clear_error() -> None:
    with pytest.raises(renderer().RenderError, match=r"set externalDatabase\.url"):
        render({"postgresql": {"enabled": False}})
    with pytest.raises(renderer().RenderError, match=r"set externalRedis\.url"):
        render({"redis": {"enabled": False}})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"web": {"replicaCount": -1}}, "/web/replicaCount"),
        ({"secrets": {"fernetKey": "not-a-fernet-key"}}, "/secrets/fernetKey"),
        ({"wbe": {"replicaCount": 2}}, "'wbe' was unexpected"),
        ({"externalDatabase": {"url": "mysql://x"}}, "/externalDatabase/url"),
        ({"postgresql": {"auth": {"password": "p@ss"}}}, "/postgresql/auth/password"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
    ],
)
def test_values_schema_rejects_bad_values(values, message) -> None:
    with pytest.raises(renderer().RenderError, match=re.escape(message)):
        render(values)


def test_every_value_is_documented() -> None:
    """Each key of values.yaml has a comment above it, or is inside a documented
    Kubernetes object (resources, probes, security contexts) whose key has one."""
    undocumented: list[str] = []
    stack: list[tuple[int, str, bool]] = []
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        match = re.match(r"^(\s*)(?:- )?([A-Za-z][\w.-]*):", line)
        if match and not stripped.startswith("#"):
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            commented = previous.startswith("#")
            inherited = any(doc and key in K8S_OBJECT_KEYS for _, key, doc in stack)
            if not commented and not inherited:
                undocumented.append(".".join([k for _, k, _ in stack] + [match.group(2)]))
            stack.append((indent, match.group(2), commented))
        if stripped:
            previous = stripped
    assert not undocumented, f"values without a comment: {undocumented}"


def test_chart_metadata_declares_the_dependencies_with_conditions() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    deps = {d["name"]: d for d in chart["dependencies"]}
    assert deps["postgresql"]["condition"] == "postgresql.enabled"
    assert deps["redis"]["condition"] == "redis.enabled"
    for name in deps:
        assert (CHART / "charts" / name / "Chart.yaml").is_file()
    assert chart["appVersion"] == _project_version()


def test_notes_tell_how_to_reach_the_api() -> None:
    notes = renderer().render_chart(CHART, {}, release_name=RELEASE, include_notes=True)
    text = notes["aios/templates/NOTES.txt"]
    assert f"port-forward svc/{RELEASE}-aios-web" in text
    assert "AIOS_ADMIN_PASSWORD" in text
    with_ingress = renderer().render_chart(
        CHART, VALUE_SETS["ingress-tls"], release_name=RELEASE, include_notes=True
    )
    assert "https://aios.example.com/api/docs/" in with_ingress["aios/templates/NOTES.txt"]


# --------------------------------------------------------------------------- helpers ----
def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}


def _owner(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["metadata"]["name"] == name and pod_spec(o))


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not (selector.get("matchLabels") or {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions") or []:
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def _project_version() -> str:
    text = (CHART.parents[2] / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.M).group(1)
