"""Request logs (written by adhoc servers into ``inference_request_log``) read through the
REST API, the block -> executor map the servers resolve block ids with, and the read-only
search they resolve ``query_parameters`` with. No processes here."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from apps.inference import services
from apps.inference.models import RequestLog
from tests.vdags.support import make_block, uid

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def log_row(session: str, block: str, seq: int, **extra) -> RequestLog:
    return RequestLog.objects.create(
        request_id=uuid.uuid4(),
        session_id=session,
        block_id=block,
        seq_no=seq,
        ts=T0 + timedelta(seconds=seq),
        data=json.dumps({"x": seq}),
        **extra,
    )


@pytest.fixture
def logs():
    s1, s2 = uid("sess"), uid("sess")
    rows = [
        log_row(s1, "blk-a", 1),
        log_row(s1, "blk-b", 2, query_parameters='{"matchType": "block"}'),
        log_row(s2, "blk-a", 3, output_ptr='{"graph": {"blk-a": []}}'),
    ]
    return s1, s2, rows


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [r["request_id"] for r in response.json()["results"]]


def test_logs_are_read_by_session_request_block_and_session_block(api, logs):
    s1, _, (r1, r2, r3) = logs
    assert ids(api.get(f"/api/v1/inference/logs/session/{s1}/")) == [str(r1.pk), str(r2.pk)]
    assert ids(api.get(f"/api/v1/inference/logs/request/{r3.pk}/")) == [str(r3.pk)]
    assert ids(api.get("/api/v1/inference/logs/block/blk-a/")) == [str(r1.pk), str(r3.pk)]
    both = api.get("/api/v1/inference/logs/session_block/", {"session_id": s1, "block_id": "blk-b"})
    assert ids(both) == [str(r2.pk)]
    row = api.get(f"/api/v1/inference/logs/request/{r2.pk}/").json()["results"][0]
    assert row == {
        "request_id": str(r2.pk),
        "session_id": s1,
        "block_id": "blk-b",
        "seq_no": 2,
        "ts": "2026-01-01T00:00:02Z",
        "data": '{"x": 2}',
        "query_parameters": '{"matchType": "block"}',
        "output_ptr": "",
    }


def test_logs_are_listed_filtered_and_queried(api, logs):
    s1, _, (_, r2, r3) = logs
    assert ids(api.get("/api/v1/inference/logs/", {"since": "2026-01-01T00:00:02Z"})) == [
        str(r2.pk),
        str(r3.pk),
    ]
    queried = api.post(
        "/api/v1/inference/logs/query/",
        {"query": {"$and": [{"session_id": s1}, {"seq_no": {"$gte": 2}}]}},
        format="json",
    )
    assert ids(queried) == [str(r2.pk)]


def test_session_block_needs_both_ids(api, logs):
    response = api.get("/api/v1/inference/logs/session_block/", {"session_id": logs[0]})
    assert response.status_code == 400
    assert response.json()["error"]["details"] == [{"field": "block_id"}]


def test_logs_need_an_authenticated_reader(anon_client, logs):
    assert anon_client.get(f"/api/v1/inference/logs/session/{logs[0]}/").status_code == 401


def test_rows_written_as_the_data_plane_writes_them_are_read_back(api):
    """The server writes with COPY and leaves optional columns to their defaults."""
    request_id = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO inference_request_log (request_id, session_id, ts) VALUES (%s, %s, %s)",
            [request_id, "raw-session", T0],
        )
    row = api.get(f"/api/v1/inference/logs/request/{request_id}/").json()["results"][0]
    assert row["block_id"] == "" and row["seq_no"] == 0 and row["data"] == ""


def test_old_logs_are_pruned_by_the_command(logs):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("aios_prune_request_logs", "--days", "1", stdout=out)
    assert "deleted 3 request log row(s)" in out.getvalue()
    assert not RequestLog.objects.exists()


# -- the executor map --------------------------------------------------------------------------
def test_the_executor_map_holds_exactly_the_running_blocks(cluster, executor_map_key):
    running, failed = uid("run"), uid("fail")
    make_block(running, cluster, grpc="10.0.0.1:5001")
    make_block(failed, cluster, status="failed")
    services._redis().hset(executor_map_key, "gone-block", "{}")  # a leftover
    assert services.sync_executor_map() == 1
    stored = services._redis().hgetall(executor_map_key)
    assert set(stored) == {running.encode()}
    address = json.loads(stored[running.encode()])
    assert address == {"grpc": "10.0.0.1:5001", "cluster_id": cluster.id}
    assert services._redis().ttl(executor_map_key) > 0


def test_saving_and_deleting_a_block_updates_the_map(cluster, executor_map_key):
    block = make_block(uid("sig"), cluster, grpc="10.0.0.2:5002")
    assert services._redis().hexists(executor_map_key, block.pk)
    block.status = "removing"
    block.save()
    assert not services._redis().hexists(executor_map_key, block.pk)
    block.status = "running"
    block.save()
    block_id = block.pk
    assert services._redis().hexists(executor_map_key, block_id)
    block.delete()
    assert not services._redis().hexists(executor_map_key, block_id)


# -- the servers' search -----------------------------------------------------------------------
def test_servers_search_blocks_without_a_credential(anon_client, cluster):
    wanted = uid("wanted")
    make_block(wanted, cluster, metadata={"role": wanted})
    make_block(uid("other"), cluster)
    body = {"matchType": "block", "filter": {"blockQuery": {"blockMetadata.role": wanted}}}
    response = anon_client.post("/api/v1/inference/search/", body, format="json")
    assert response.status_code == 200, response.content
    assert [r["id"] for r in response.json()["results"]] == [wanted]
    # The AIOS envelope is accepted too; a bad query is a 400 in the error shape.
    enveloped = anon_client.post(
        "/api/v1/inference/search/", {"body": {"values": body}}, format="json"
    )
    assert enveloped.json()["count"] == 1
    bad = anon_client.post(
        "/api/v1/inference/search/",
        {"matchType": "block", "filter": {"blockQuery": {"nope": 1}}},
        format="json",
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_query"


def test_the_log_dsn_is_explicit_or_the_control_planes_database(monkeypatch):
    from types import SimpleNamespace

    from apps.inference import conf

    monkeypatch.setattr(conf, "REQUEST_LOG_DATABASE_URL", "")
    db = {"USER": "aios", "PASSWORD": "p@ss/word", "HOST": "db.local", "PORT": "5433"}
    fake = SimpleNamespace(DATABASES={"default": {**db, "NAME": "aios"}})
    monkeypatch.setattr(services, "settings", fake)
    assert services.request_log_dsn() == "postgresql://aios:p%40ss%2Fword@db.local:5433/aios"
    monkeypatch.setattr(conf, "REQUEST_LOG_DATABASE_URL", "postgresql://logger@db/aios")
    assert services.request_log_dsn() == "postgresql://logger@db/aios"
