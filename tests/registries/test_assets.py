"""Assets: the built-in store (upload, download, sha256, dedup, versions, size limit),
external URLs, and the asset registries index."""

import hashlib
import json

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.registries.models import Asset

URL = "/api/v1/assets/"
CONTENT = b"model weights \x00\x01\x02" * 1000


def upload(api, name="weights", version="1.0", tag="stable", content=CONTENT, **extra):
    data = {
        "asset": SimpleUploadedFile(
            "weights.bin", content, content_type="application/octet-stream"
        ),
        "asset_name": name,
        "asset_version": version,
        "asset_tag": tag,
        "asset_metadata": json.dumps({"framework": "onnx", "size_class": 2}),
        "asset_tags": "model,onnx",
        **extra,
    }
    return api.post(URL, data, format="multipart")


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.mark.django_db
def test_upload_download_round_trip_with_sha256(api, anon_client):
    response = upload(api)
    assert response.status_code == 201, response.content
    body = response.json()
    sha = hashlib.sha256(CONTENT).hexdigest()
    assert body["asset_uri"] == "weights:1.0-stable"
    assert body["asset_file_info"]["sha256"] == sha
    assert body["asset_file_info"]["size"] == len(CONTENT)
    assert body["asset_file_info"]["content_type"] == "application/octet-stream"
    assert body["asset_metadata"] == {"framework": "onnx", "size_class": 2}
    assert body["asset_tags"] == ["model", "onnx"]
    assert body["asset_public_url"].endswith("/api/v1/assets/weights:1.0-stable/download/")

    download = anon_client.get(f"{URL}weights:1.0-stable/download/")
    assert download.status_code == 200
    data = b"".join(download.streaming_content)
    assert hashlib.sha256(data).hexdigest() == sha
    assert download["X-Checksum-Sha256"] == sha
    assert "attachment" in download["Content-Disposition"]


@pytest.mark.django_db
def test_upload_by_uri_on_the_upload_path(api):
    data = {"asset": SimpleUploadedFile("a.txt", b"hello"), "asset_uri": "notes:2-beta"}
    response = api.post(f"{URL}upload/", data, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["asset_version"] == {"version": "2", "tag": "beta"}
    assert response.json()["asset_file_info"]["content_type"] in {
        "text/plain",
        "application/octet-stream",
    }


@pytest.mark.django_db
def test_same_content_is_stored_once_and_removed_with_the_last_asset(api):
    first = upload(api, version="1.0").json()
    upload(api, version="2.0")
    names = set(Asset.objects.values_list("storage_name", flat=True))
    assert len(names) == 1
    storage_name = names.pop()
    assert default_storage.exists(storage_name)
    assert api.delete(f"{URL}{first['asset_uri']}/").status_code == 204
    assert default_storage.exists(storage_name)
    assert api.delete(f"{URL}weights:2.0-stable/").status_code == 204
    assert not default_storage.exists(storage_name)


@pytest.mark.django_db
def test_versions_lists_every_version_of_the_name(api):
    upload(api, version="1.0")
    upload(api, version="2.0", content=b"v2")
    upload(api, name="other")
    response = api.get(f"{URL}weights:1.0-stable/versions/")
    assert response.status_code == 200
    assert sorted(r["asset_uri"] for r in response.json()["results"]) == [
        "weights:1.0-stable",
        "weights:2.0-stable",
    ]


@pytest.mark.django_db
def test_duplicate_missing_and_bad_input(api):
    assert upload(api).status_code == 201
    assert upload(api).status_code == 409
    response = api.post(URL, {"asset": SimpleUploadedFile("a", b"x")}, format="multipart")
    assert response.status_code == 400
    assert {d["field"] for d in response.json()["error"]["details"]} == {
        "asset_name",
        "asset_version",
        "asset_tag",
    }
    bad_meta = upload(api, name="m", asset_metadata="[1, 2]")
    assert bad_meta.status_code == 400
    assert upload(api, name="bad:name").status_code == 400
    assert api.get(f"{URL}nope:1-x/download/").status_code == 404


@pytest.mark.django_db
def test_upload_over_the_limit_is_413(api, settings):
    settings.AIOS_ASSET_MAX_UPLOAD_BYTES = 1000
    response = upload(api, content=b"x" * 5000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert not Asset.objects.exists()
    # Under the Content-Length margin the streaming check still refuses it.
    settings.AIOS_ASSET_MAX_UPLOAD_BYTES = 100
    response = upload(api, content=b"y" * 1000)
    assert response.status_code == 413


@pytest.mark.django_db
def test_external_asset_redirects_on_download(api, anon_client):
    body = {
        "asset_name": "llama-weights",
        "asset_version": {"version": "7b", "tag": "fp16"},
        "asset_public_url": "https://models.example.com/llama-7b.bin",
        "asset_metadata": {"framework": "pytorch"},
        "asset_tags": ["llm"],
    }
    response = api.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["asset_public_url"] == "https://models.example.com/llama-7b.bin"
    assert response.json()["asset_file_info"]["source"] == "external"
    download = anon_client.get(f"{URL}llama-weights:7b-fp16/download/")
    assert download.status_code == 302
    assert download["Location"] == "https://models.example.com/llama-7b.bin"
    bad = api.post(URL, {**body, "asset_public_url": "ftp://x"}, format="json")
    assert bad.status_code == 400


@pytest.mark.django_db
def test_metadata_update_query_and_filters(api, client_for, other_user):
    upload(api)
    url = f"{URL}weights:1.0-stable/"
    response = api.patch(url, {"asset_metadata": {"framework": "tflite"}}, format="json")
    assert response.status_code == 200
    assert response.json()["asset_metadata"] == {"framework": "tflite"}
    assert client_for(other_user).patch(url, {"asset_tags": []}, format="json").status_code == 403
    query = {"query": {"asset_metadata.framework": {"$regex": "^tf"}}}
    assert api.post(f"{URL}query/", query, format="json").json()["count"] == 1
    sha = hashlib.sha256(CONTENT).hexdigest()
    query = {"query": {"variable": "asset_file_info.sha256", "operator": "==", "value": sha}}
    assert api.post(f"{URL}query/", query, format="json").json()["count"] == 1
    assert api.get(URL, {"sha256": sha}).json()["count"] == 1
    assert api.get(URL, {"source": "external"}).json()["count"] == 0


@pytest.mark.django_db
def test_asset_registries_index_and_external_assets_link_to_it(api, client_for, other_user):
    response = api.post(
        "/api/v1/asset-registries/",
        {
            "asset_registry_name": "minio-lab",
            "asset_registry_public_url": "http://127.0.0.1:9000",
            "asset_registry_metadata": {"kind": "minio"},
            "asset_registry_tags": ["lab"],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    registry_id = response.json()["asset_registry_id"]
    query = {"query": {"asset_registry_metadata.kind": "minio"}}
    assert api.post("/api/v1/asset-registries/query/", query, format="json").json()["count"] == 1
    url = f"/api/v1/asset-registries/{registry_id}/"
    assert client_for(other_user).delete(url).status_code == 403

    asset = api.post(
        URL,
        {
            "asset_name": "cfg",
            "asset_version": {"version": "1", "tag": "a"},
            "asset_public_url": "http://127.0.0.1:9000/cfg.json",
            "assets_db_id": registry_id,
        },
        format="json",
    )
    assert asset.status_code == 201, asset.content
    assert asset.json()["assets_db_id"] == registry_id
    missing = api.post(
        URL,
        {
            "asset_name": "cfg2",
            "asset_version": {"version": "1", "tag": "a"},
            "asset_public_url": "http://x/y",
            "assets_db_id": "00000000-0000-0000-0000-000000000000",
        },
        format="json",
    )
    assert missing.status_code == 400
    assert api.delete(url).status_code == 204
