"""What every registry shares: open reads, 401 on anonymous writes and queries, 404 in
the error shape for unknown records, and admin pages that render."""

import pytest

from apps.parser.models import ParserTask
from apps.registries import services
from apps.registries.models import (
    Asset,
    AssetRegistry,
    Component,
    ContainerRegistry,
    InferenceServer,
    Spec,
    Template,
)
from tests.registries.factories import component_values

COLLECTIONS = {
    "specs": "missing:1-x",
    "templates": "missing:1-x",
    "components": "model.missing:1-x",
    "container-registries": "7d0c1b9e-7f53-4f0a-9a43-9d1a1e9f0000",
    "asset-registries": "7d0c1b9e-7f53-4f0a-9a43-9d1a1e9f0000",
    "assets": "missing:1-x",
    "inference-servers": "7d0c1b9e-7f53-4f0a-9a43-9d1a1e9f0000",
}


@pytest.mark.django_db
@pytest.mark.parametrize("collection,missing", sorted(COLLECTIONS.items()))
def test_shared_rules(api, anon_client, collection, missing):
    url = f"/api/v1/{collection}/"
    assert anon_client.get(url).status_code == 200
    created = anon_client.post(url, {}, format="json")
    assert created.status_code == 401
    assert created.json()["error"]["code"] == "not_authenticated"
    assert anon_client.post(f"{url}query/", {"query": {}}, format="json").status_code == 401
    assert api.post(f"{url}query/", {"query": {}}, format="json").status_code == 200
    absent = api.get(f"{url}{missing}/")
    assert absent.status_code == 404
    assert absent.json()["error"]["code"] == "not_found"
    assert api.delete(f"{url}{missing}/").status_code == 404
    assert api.post(url, [], format="json").status_code in {400, 415}


@pytest.fixture
def admin_client(client, django_user_model, user):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    component = services.register_component(component_values(), owner=user)
    spec = services.create_spec(
        name="s", version="1", tag="x", spec_type="search", spec_data={"matchType": "component"}
    )
    template = services.create_template(
        name="t", version="1", tag="x", template_policy_rule_uri="p:1-x"
    )
    registry = ContainerRegistry.objects.create(name="r", public_url="http://127.0.0.1:1")
    asset_db = AssetRegistry.objects.create(name="a", public_url="http://127.0.0.1:1")
    asset = services.register_external_asset(name="w", version="1", tag="x", url="http://x/w")
    server = InferenceServer.objects.create(
        name="i", public_url="127.0.0.1:1", metadata={"region": "eu"}
    )
    task = ParserTask.objects.create(action="filter", spec={"a": 1}, response_body={"b": 2})
    return client, {
        "spec": spec.pk,
        "template": template.pk,
        "component": component.pk,
        "containerregistry": registry.pk,
        "assetregistry": asset_db.pk,
        "asset": asset.pk,
        "inferenceserver": server.pk,
        "parser/parsertask": task.pk,
    }


@pytest.mark.django_db
def test_admin_pages_render(admin_client):
    client, objects = admin_client
    for name, pk in objects.items():
        prefix = name if "/" in name else f"registries/{name}"
        listing = client.get(f"/admin/{prefix}/?q=a")
        assert listing.status_code == 200, name
        page = client.get(f"/admin/{prefix}/{pk}/change/")
        assert page.status_code == 200, name
    assert (
        "&quot;matchType&quot;"
        in client.get(f"/admin/registries/spec/{objects['spec']}/change/").content.decode()
    )


@pytest.mark.django_db
def test_admin_actions(admin_client):
    client, objects = admin_client
    response = client.post(
        "/admin/registries/containerregistry/",
        {"action": "check_health", "_selected_action": [objects["containerregistry"]]},
        follow=True,
    )
    assert response.status_code == 200
    assert "unhealthy" in response.content.decode()
    response = client.post(
        "/admin/registries/spec/",
        {"action": "validate_specs", "_selected_action": [objects["spec"]]},
        follow=True,
    )
    assert "valid (filter)" in response.content.decode()
    response = client.post(
        "/admin/parser/parsertask/",
        {"action": "re_execute", "_selected_action": [objects["parser/parsertask"]]},
        follow=True,
    )
    assert response.status_code == 200
    assert ParserTask.objects.count() == 2
    assert Spec.objects.count() == Template.objects.count() == Component.objects.count() == 1
    assert Asset.objects.count() == 1
