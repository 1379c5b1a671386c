"""Inference-server registry: CRUD, metadata validation, query by metadata, filters."""

import pytest

URL = "/api/v1/inference-servers/"


def body(name="adhoc-eu", cluster_id="cluster-123", **metadata):
    return {
        "inference_server_name": name,
        "inference_server_public_url": "10.0.0.5:31500",
        "inference_server_tags": ["adhoc"],
        "inference_server_metadata": {
            "region": "eu-west",
            "provider": "lab",
            "cluster_id": cluster_id,
            "gpu_available": True,
            "quota_management_data": {
                "requests_per_second_total": 100,
                "requests_per_second_per_session": 10,
                "requests_per_second_per_block_id": 10,
                "requests_per_session_id": 1000,
                "requests_per_block_id": 100,
            },
            **metadata,
        },
    }


@pytest.mark.django_db
def test_crud(api, client_for, other_user):
    response = api.post(URL, body(), format="json")
    assert response.status_code == 201, response.content
    server_id = response.json()["inference_server_id"]
    url = f"{URL}{server_id}/"
    got = api.get(url).json()
    assert got["inference_server_public_url"] == "10.0.0.5:31500"
    assert got["inference_server_metadata"]["quota_management_data"]["requests_per_block_id"] == 100
    assert client_for(other_user).delete(url).status_code == 403
    assert api.patch(url, {"inference_server_tags": "a,b"}, format="json").json()[
        "inference_server_tags"
    ] == ["a", "b"]
    assert api.delete(url).status_code == 204


@pytest.mark.django_db
def test_metadata_is_validated(api):
    bad = body(quota_management_data={"requests_per_block_id": -1})
    response = api.post(URL, bad, format="json")
    assert response.status_code == 400
    assert "requests_per_block_id" in response.json()["error"]["message"]
    assert api.post(URL, body(gpu_available="maybe"), format="json").status_code == 400


@pytest.mark.django_db
def test_discover_by_cluster_as_in_the_aios_flow(api, anon_client):
    api.post(URL, body(), format="json")
    api.post(URL, body(name="adhoc-us", cluster_id="cluster-9", gpu_available=False), format="json")
    # F6: POST .../inference_servers {"inference_server_metadata.cluster_id": "cluster-123"}
    query = {"query": {"inference_server_metadata.cluster_id": "cluster-123"}}
    response = api.post(f"{URL}query/", query, format="json")
    assert [r["inference_server_name"] for r in response.json()["results"]] == ["adhoc-eu"]
    assert anon_client.post(f"{URL}query/", query, format="json").status_code == 401
    assert api.get(URL, {"cluster_id": "cluster-9"}).json()["count"] == 1
    assert api.get(URL, {"gpu_available": "true"}).json()["count"] == 1
    assert api.get(URL, {"region": "eu-west"}).json()["count"] == 2
