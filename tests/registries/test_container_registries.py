"""Container registry index: CRUD, query, filters, and a real HTTP health check."""

import http.server
import threading
import uuid

import pytest

from tests.support.procs import free_port

URL = "/api/v1/container-registries/"


def body(public_url="http://127.0.0.1:5000", name="lab-registry", **extra):
    return {
        "container_registry_name": name,
        "container_registry_public_url": public_url,
        "container_registry_image_prefix": "registry.lab/aios",
        "container_registry_metadata": {"region": "eu", "owner": {"team": "infra"}},
        "container_registry_tags": ["lab"],
        "container_registry_config": {"auth_required": False, "max_layer_size_mb": 500},
        **extra,
    }


@pytest.fixture
def http_server():
    """A real local HTTP server answering 200 on / and 503 on /down."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503 if self.path.startswith("/down") else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_crud_and_storage_info_defaults(api):
    response = api.post(URL, body(), format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    registry_id = created["container_registry_id"]
    uuid.UUID(registry_id)
    assert created["container_registry_storage_info"] == {
        "storage_type": "unknown",
        "storage_size": -1,
        "memory_size": -1,
        "registry_type": "external",
    }
    url = f"{URL}{registry_id}/"
    assert api.get(url).json()["container_registry_name"] == "lab-registry"
    patched = api.patch(
        url,
        {"container_registry_storage_info": {"storage_type": "s3", "storage_size": 10240}},
        format="json",
    )
    assert patched.status_code == 200
    assert patched.json()["container_registry_storage_info"]["storage_type"] == "s3"
    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404


@pytest.mark.django_db
def test_invalid_input_is_400(api):
    bad_storage = body(container_registry_storage_info={"storage_type": "tape"})
    response = api.post(URL, bad_storage, format="json")
    assert response.status_code == 400
    assert "storage_type" in response.json()["error"]["message"]
    assert api.post(URL, body(public_url="not a url"), format="json").status_code == 400
    assert api.post(URL, body(container_registry_metadata=[1]), format="json").status_code == 400


@pytest.mark.django_db
def test_malformed_id_is_404(api):
    assert api.get(f"{URL}not-a-uuid/").status_code == 404
    assert api.get(f"{URL}{uuid.uuid4()}/").status_code == 404


@pytest.mark.django_db
def test_query_json_paths_and_filters(api):
    api.post(URL, body(), format="json")
    api.post(
        URL,
        body(
            name="other",
            container_registry_metadata={"region": "us"},
            container_registry_storage_info={"storage_type": "fs"},
        ),
        format="json",
    )
    query = {"query": {"container_registry_metadata.owner.team": "infra"}}
    response = api.post(f"{URL}query/", query, format="json")
    assert [r["container_registry_name"] for r in response.json()["results"]] == ["lab-registry"]
    query = {
        "query": {
            "variable": "container_registry_storage_info.storage_type",
            "operator": "==",
            "value": "fs",
        }
    }
    response = api.post(f"{URL}query/", query, format="json")
    assert [r["container_registry_name"] for r in response.json()["results"]] == ["other"]
    assert api.get(URL, {"storage_type": "fs"}).json()["count"] == 1
    assert api.get(URL, {"container_registry_name": "other"}).json()["count"] == 1


@pytest.mark.django_db
def test_owner_rules(api, client_for, other_user, anon_client):
    registry_id = api.post(URL, body(), format="json").json()["container_registry_id"]
    url = f"{URL}{registry_id}/"
    assert (
        client_for(other_user)
        .patch(url, {"container_registry_tags": []}, format="json")
        .status_code
        == 403
    )
    assert anon_client.post(URL, body(), format="json").status_code == 401


@pytest.mark.django_db
def test_health_check_up_and_down(api, anon_client, http_server):
    up = api.post(URL, body(public_url=http_server), format="json").json()["container_registry_id"]
    response = api.get(f"{URL}{up}/health/")
    assert response.status_code == 200
    result = response.json()
    assert result["healthy"] is True
    assert result["status_code"] == 200
    assert result["latency_ms"] >= 0

    server_error = api.post(
        URL, body(public_url=f"{http_server}/down", name="err"), format="json"
    ).json()["container_registry_id"]
    result = api.get(f"{URL}{server_error}/health/").json()
    assert result == {**result, "healthy": False, "status_code": 503}

    closed_port = free_port()
    down = api.post(
        URL, body(public_url=f"http://127.0.0.1:{closed_port}", name="down"), format="json"
    ).json()["container_registry_id"]
    result = api.get(f"{URL}{down}/health/").json()
    assert result["healthy"] is False
    assert "status_code" not in result
    assert "ConnectError" in result["error"]

    assert anon_client.get(f"{URL}{up}/health/").status_code == 401
