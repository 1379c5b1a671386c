"""The policy registry over REST: create (multipart / code_url), read by URI, update, delete,
query, filters, permissions, archive download and code preview, and bad archives (400)."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
import zipfile

import pytest

from tests.policies.policies_support import (
    ECHO_POLICY,
    policy_archive,
    tar_gz,
    unique_source,
    upload,
)

pytestmark = pytest.mark.django_db


def test_create_multipart_answers_201_with_the_uri(api):
    response = upload(
        api,
        "ip_allowlist",
        ECHO_POLICY,
        version="1.0",
        tag="beta",
        description="allow listed IPs",
        tags="net,security",
        policy_parameters={"local_allowlist": ["10.0.0.1"]},
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["policy_rule_uri"] == "ip_allowlist:1.0-beta"
    assert body["tags"] == ["net", "security"]
    assert body["type"] == "python_class_v1"
    assert body["class_name"] == "AIOSv1PolicyRule"
    assert len(body["sha256"]) == 64 and body["code_size"] > 0 and body["code_format"] == "tar.gz"
    assert body["owner"] == "alice"


def test_get_by_uri_accepts_colon_dot_and_dash(api, anon_client):
    upload(api, "policy.autoscaler.gpu-based", ECHO_POLICY, version="v0.0.1", tag="rc-1")
    response = anon_client.get("/api/v1/policies/policy.autoscaler.gpu-based:v0.0.1-rc-1/")
    assert response.status_code == 200
    assert response.json()["release_tag"] == "rc-1"
    missing = anon_client.get("/api/v1/policies/nope:1.0-x/")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_zip_and_tar_xz_archives_are_accepted(api):
    zipped = upload(api, "zipped", archive=policy_archive(ECHO_POLICY, "zip"), filename="p.zip")
    assert zipped.status_code == 201 and zipped.json()["code_format"] == "zip"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tf:
        data = unique_source(ECHO_POLICY).encode()
        info = tarfile.TarInfo("code/function.py")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    xz = upload(api, "xzed", archive=buf.getvalue(), filename="p.tar.xz")
    assert xz.status_code == 201 and xz.json()["code_format"] == "tar.xz"


def test_duplicate_uri_is_409(api):
    assert upload(api, "dup", ECHO_POLICY).status_code == 201
    again = upload(api, "dup", ECHO_POLICY)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"


def test_writes_need_authentication(anon_client):
    response = upload(anon_client, "anon", ECHO_POLICY)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_only_owner_or_staff_change_a_policy(api, client_for, other_user, staff_api):
    upload(api, "mine", ECHO_POLICY)
    other = client_for(other_user)
    assert other.patch("/api/v1/policies/mine:1.0-test/", {"description": "x"}).status_code == 403
    assert other.delete("/api/v1/policies/mine:1.0-test/").status_code == 403
    assert (
        staff_api.patch(
            "/api/v1/policies/mine:1.0-test/", {"description": "by staff"}, format="json"
        ).json()["description"]
        == "by staff"
    )


def test_update_changes_fields_and_code_but_never_the_uri(api):
    first = upload(api, "upd", ECHO_POLICY).json()
    patched = api.patch(
        "/api/v1/policies/upd:1.0-test/",
        {"description": "new", "policy_settings": {"a": 1}},
        format="json",
    )
    assert patched.status_code == 200
    assert patched.json()["description"] == "new" and patched.json()["policy_settings"] == {"a": 1}
    renamed = api.patch("/api/v1/policies/upd:1.0-test/", {"version": "2.0"}, format="json")
    assert renamed.status_code == 400 and "immutable" in renamed.json()["error"]["message"]
    from django.core.files.uploadedfile import SimpleUploadedFile

    new_code = SimpleUploadedFile("p.tar.gz", policy_archive(ECHO_POLICY))
    replaced = api.patch("/api/v1/policies/upd:1.0-test/", {"code": new_code}, format="multipart")
    assert replaced.status_code == 200
    assert replaced.json()["sha256"] != first["sha256"]


def test_delete_removes_the_record(api):
    upload(api, "gone", ECHO_POLICY)
    assert api.delete("/api/v1/policies/gone:1.0-test/").status_code == 204
    assert api.get("/api/v1/policies/gone:1.0-test/").status_code == 404


def test_list_filters_and_query(api):
    upload(api, "alpha", ECHO_POLICY, tags=["x"], metadata={"team": "net"})
    upload(api, "beta", ECHO_POLICY, version="2.0", tags=["y"])
    names = {p["name"] for p in api.get("/api/v1/policies/?tag=x").json()["results"]}
    assert names == {"alpha"}
    assert api.get("/api/v1/policies/?version=2.0").json()["results"][0]["name"] == "beta"
    query = api.post(
        "/api/v1/policies/query/",
        {"query": {"$and": [{"metadata.team": "net"}, {"name": {"$regex": "^al"}}]}},
        format="json",
    )
    assert query.status_code == 200
    assert [p["policy_rule_uri"] for p in query.json()["results"]] == ["alpha:1.0-test"]
    aios = api.post(
        "/api/v1/policies/query/",
        {"query": {"variable": "version", "operator": "==", "value": "2.0"}},
        format="json",
    )
    assert [p["name"] for p in aios.json()["results"]] == ["beta"]
    bad = api.post("/api/v1/policies/query/", {"query": {"code": "x"}}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_query"


def test_archive_download_and_code_preview(api):
    source = unique_source(ECHO_POLICY)
    created = upload(api, "preview", archive=tar_gz({"code/function.py": source})).json()
    archive = api.get("/api/v1/policies/preview:1.0-test/archive/")
    assert archive.status_code == 200
    import hashlib

    assert hashlib.sha256(archive.content).hexdigest() == created["sha256"]
    preview = api.get("/api/v1/policies/preview:1.0-test/code-preview/").json()
    assert [f["path"] for f in preview["files"]] == ["code/function.py"]
    assert preview["function_py"] == source


def test_schemas_must_be_valid_and_defaults_must_match_them(api):
    bad_schema = upload(api, "s1", ECHO_POLICY, policy_input_schema={"type": "no-such-type"})
    assert bad_schema.status_code == 400
    assert "policy_input_schema" in bad_schema.json()["error"]["message"]
    mismatch = upload(
        api,
        "s2",
        ECHO_POLICY,
        policy_parameters_schema={"type": "object", "properties": {"n": {"type": "int"}}},
        policy_parameters={"n": "three"},
    )
    assert mismatch.status_code == 400
    assert "policy_parameters" in mismatch.json()["error"]["message"]


@pytest.fixture
def archive_server():
    """A real HTTP server handing out whatever bytes the test puts in ``files``."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files
    server.shutdown()
    server.server_close()


def test_create_from_code_url_fetches_the_archive_once(api, archive_server):
    base, files = archive_server
    files["/p.tar.gz"] = policy_archive(ECHO_POLICY)
    body = {
        "name": "fetched",
        "version": "1.0",
        "release_tag": "url",
        "code_url": f"{base}/p.tar.gz",
    }
    response = api.post("/api/v1/policies/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["code_url"] == f"{base}/p.tar.gz"
    files.clear()  # the registry keeps its own copy
    result = api.post(
        "/api/v1/policies/fetched:1.0-url/execute/", {"input_data": {"a": 1}}, format="json"
    )
    assert result.status_code == 200 and result.json()["result"]["input"] == {"a": 1}


def test_code_url_failures_are_400(api, archive_server):
    base, files = archive_server
    missing = api.post(
        "/api/v1/policies/",
        {"name": "u1", "version": "1", "release_tag": "x", "code_url": f"{base}/none"},
        format="json",
    )
    assert missing.status_code == 400 and "404" in missing.json()["error"]["message"]
    files["/junk"] = b"not an archive at all"
    junk = api.post(
        "/api/v1/policies/",
        {"name": "u2", "version": "1", "release_tag": "x", "code_url": f"{base}/junk"},
        format="json",
    )
    assert junk.status_code == 400 and junk.json()["error"]["code"] == "invalid_archive"
    no_code = api.post("/api/v1/policies/", {"name": "u3", "version": "1", "release_tag": "x"})
    assert no_code.status_code == 400 and no_code.json()["error"]["details"][0]["field"] == "code"


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("code/function.py", ECHO_POLICY)
        zf.writestr("code/data.bin", b"\0" * (20 * 1024 * 1024))
    return buf.getvalue()


@pytest.mark.parametrize(
    "archive,reason",
    [
        (tar_gz({"code/function.py": ECHO_POLICY, "../evil.py": "x"}), "'..'"),
        (tar_gz({"code/function.py": ECHO_POLICY, "/etc/evil.py": "x"}), "absolute path"),
        (
            tar_gz({"code/function.py": ECHO_POLICY}, [_link("code/passwd", "../../etc/passwd")]),
            "link",
        ),
        (tar_gz({"code/function.py": ECHO_POLICY}, [_link("code/h", "/etc/passwd", b"1")]), "link"),
        (_zip_bomb(), "zip bomb"),
        (tar_gz({"code/other.py": "x = 1"}), "code/function.py"),
        (b"definitely not an archive", "unsupported archive format"),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "zip-bomb", "no-function-py", "garbage"],
)
def test_bad_archives_are_refused_at_upload(api, archive, reason):
    response = upload(api, "bad", archive=archive)
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid_archive"
    assert reason in error["message"]
    from apps.policies.models import PolicyRule

    assert not PolicyRule.objects.filter(name="bad").exists()


@pytest.mark.parametrize(
    "name,version,tag,reason",
    [("", "1", "x", "name"), ("a/b", "1", "x", "'/'"), ("ok", "1-2", "x", "version")],
)
def test_bad_names_are_400(api, name, version, tag, reason):
    response = upload(api, name, ECHO_POLICY, version=version, tag=tag)
    assert response.status_code == 400
    assert reason in response.json()["error"]["message"]
