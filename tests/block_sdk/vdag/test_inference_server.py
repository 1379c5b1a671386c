"""The adhoc inference server as a real process: by block id (addresses from Redis), by
dynamic graph, by search (a real HTTP server playing the control plane), files and frame_ptr,
quota, errors, and request logs written in batches to PostgreSQL and read back over HTTP."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import psycopg
import pytest

from block_sdk.inference_server.directory import EXECUTORS_KEY
from block_sdk.inference_server.request_log import ddl
from block_sdk.packet import make_block_packet
from tests.block_sdk.vdag.blocks import add, mul, total
from tests.block_sdk.vdag.harness import Network
from tests.support.procs import wait_until

LOG_DB = "aios_vdagdp_logs"


@pytest.fixture(scope="module")
def blocks(module_net: Network) -> Network:
    net = module_net
    for name, params in (
        ("add1", {"op": "add", "k": 1}),
        ("mul3", {"op": "mul", "k": 3}),
        ("add10", {"op": "add", "k": 10}),
        ("summer", {"op": "sum"}),
    ):
        net.add_block(name, params)
    net.wait_ready()
    # What the control plane maintains: block id -> executor address.
    client = net.redis()
    for b in net.blocks.values():
        client.hset(EXECUTORS_KEY, b.block_id, json.dumps(b.address()))
    yield net
    for b in net.blocks.values():
        client.hdel(EXECUTORS_KEY, b.block_id)


@pytest.fixture(scope="module")
def log_dsn() -> str:
    """A scratch database holding the request-log table (the control plane's migration
    creates it in the real one)."""
    base = os.environ.get("DATABASE_URL")
    if not base:
        from aios_site.embedded import ensure_database_url

        base = ensure_database_url()
    server, _, _ = base.rpartition("/")
    with psycopg.connect(f"{server}/postgres", autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [LOG_DB]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{LOG_DB}"')
    dsn = f"{server}/{LOG_DB}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ddl())
    return dsn


def ask(server, data, **kw):
    kw.setdefault("session_id", "s")
    return server.block_stub().infer(make_block_packet(data, **kw), timeout=10)


def test_by_block_id_through_the_address_map(blocks: Network):
    server = blocks.start_adhoc()
    b = blocks.blocks["mul3"]
    resp = ask(
        server,
        {"x": 4},
        block_id=b.block_id,
        session_id="s",
        seq_no=3,
        files=[({"name": "a.png"}, b"png")],
        frame_ptr=json.dumps({"framedb_id": "f", "key": "k"}).encode(),
    )
    body = json.loads(resp.data)
    assert body["x"] == mul(4, 3)
    assert body["files"] == [{"name": "a.png"}]
    assert json.loads(body["frame_ptr"]) == {"framedb_id": "f", "key": "k"}
    assert (resp.session_id, resp.seq_no) == ("s", 3)
    assert [f.file_data for f in resp.files] == [b"png"]


def test_by_dynamic_graph_in_output_ptr(blocks: Network):
    server = blocks.start_adhoc()
    a, m, p, s = (blocks.blocks[n].block_id for n in ("add1", "mul3", "add10", "summer"))
    graph = {"graph": {a: [m, p], m: [s], p: [s], s: []}}
    for x in (1, 5):
        resp = ask(
            server, {"x": x}, block_id=a, session_id="g", seq_no=x, output_ptr=json.dumps(graph)
        )
        assert json.loads(resp.data)["x"] == total([mul(add(x, 1), 3), add(add(x, 1), 10)])
    # several tails: one object keyed by tail block id
    two = {"graph": {a: [m, p]}}
    resp = json.loads(ask(server, {"x": 1}, block_id=a, output_ptr=json.dumps(two)).data)
    assert resp[m]["x"] == 6 and resp[p]["x"] == 12


def test_bad_graphs_and_unknown_blocks_are_clear_errors(blocks: Network):
    server = blocks.start_adhoc()
    a = blocks.blocks["add1"].block_id
    cases = [
        ({"block_id": "ghost-block"}, grpc.StatusCode.NOT_FOUND, "unknown to this inference"),
        (
            {"block_id": a, "output_ptr": json.dumps({"graph": {a: ["b1"], "b1": [a]}})},
            grpc.StatusCode.INVALID_ARGUMENT,
            "cycle",
        ),
        (
            {"block_id": a, "output_ptr": json.dumps({"graph": {a: ["nope-blk"]}})},
            grpc.StatusCode.NOT_FOUND,
            "nope-blk",
        ),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "say where the request goes"),
        ({"block_id": a, "session_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "session_id"),
    ]
    for kw, code, fragment in cases:
        kw.setdefault("session_id", "e")
        with pytest.raises(grpc.RpcError) as info:
            ask(server, {"x": 1}, **kw)
        assert info.value.code() == code, kw
        assert fragment in json.loads(info.value.details())["error"]["message"]


class _ControlPlane(BaseHTTPRequestHandler):
    """Plays the control plane's search endpoint: answers ranked candidates."""

    results: list = []
    calls: list = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length))
        type(self).calls.append(
            {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
        )
        if self.path != "/api/v1/search/":
            self.send_response(404)
            self.end_headers()
            return
        payload = json.dumps(
            {
                "matchType": body.get("matchType"),
                "count": len(self.results),
                "results": self.results,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def control_plane() -> Iterator[tuple[str, type]]:
    handler = type("CP", (_ControlPlane,), {"results": [], "calls": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_by_query_parameters_through_the_control_planes_search(blocks: Network, control_plane):
    url, cp = control_plane
    add10 = blocks.blocks["add10"]
    # Ranked: an unreachable block first, then one with endpoints in the result itself.
    cp.results = [
        {"id": "not-running-anywhere", "minInstances": 1},
        {"id": add10.block_id, "endpoints": {"grpc": f"127.0.0.1:{add10.grpc_port}"}},
    ]
    server = blocks.start_adhoc(api_url=url, api_token="tok-123")
    query = {
        "body": {
            "values": {
                "matchType": "block",
                "filter": {"blockQuery": {"variable": "id", "operator": "like", "value": "add10"}},
            }
        }
    }
    for seq in range(3):
        resp = ask(
            server, {"x": seq}, session_id="qs", seq_no=seq, query_parameters=json.dumps(query)
        )
        assert json.loads(resp.data)["x"] == add(seq, 10)
        assert json.loads(resp.data)["trace"][0].startswith(add10.block_id)
    # one search for the session (the choice is cached), with the server's token
    assert len(cp.calls) == 1
    assert cp.calls[0]["body"]["matchType"] == "block"
    assert cp.calls[0]["auth"] == "Token tok-123"
    ask(server, {"x": 1}, session_id="other", query_parameters=json.dumps(query))
    assert len(cp.calls) == 2
    cp.results = []
    with pytest.raises(grpc.RpcError) as info:
        ask(server, {"x": 1}, session_id="third", query_parameters=json.dumps(query))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_quota_of_the_inference_server(blocks: Network):
    server = blocks.start_adhoc(quota_policy={"parameters": {"requests_per_session": 2}})
    a = blocks.blocks["add1"].block_id
    ask(server, {"x": 1}, block_id=a, session_id="qq")
    ask(server, {"x": 1}, block_id=a, session_id="qq")
    with pytest.raises(grpc.RpcError) as info:
        ask(server, {"x": 1}, block_id=a, session_id="qq")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert server.http("GET", "/quota/qq")[1]["quota"] == 2


def test_request_logs_are_written_in_batches_and_queryable(blocks: Network, log_dsn):
    server = blocks.start_adhoc(log_dsn=log_dsn, log_flush_ms=100, log_batch_rows=50)
    a, m = blocks.blocks["add1"].block_id, blocks.blocks["mul3"].block_id
    sid = f"log-{uuid.uuid4().hex[:6]}"
    for seq in range(5):
        ask(server, {"x": seq}, block_id=a, session_id=sid, seq_no=seq, ts=1_700_000_000.0 + seq)
    graph = json.dumps({"graph": {a: [m]}})
    ask(
        server,
        {"x": 9},
        block_id=a,
        session_id=sid,
        seq_no=9,
        output_ptr=graph,
        query_parameters='{"hint": 1}',
    )

    def session_rows():
        status, body = server.http("GET", f"/logs/session/{sid}")
        return body["logs"] if status == 200 and body["count"] == 6 else None

    rows = wait_until(session_rows, 10, "six logged requests")
    assert [r["seq_no"] for r in rows] == [9, 4, 3, 2, 1, 0]  # newest first
    first = rows[-1]
    assert first["block_id"] == a and json.loads(first["data"]) == {"x": 0}
    assert first["ts"].startswith("2023-11-14T22:13:20")
    assert rows[0]["output_ptr"] == graph and rows[0]["query_parameters"] == '{"hint": 1}'
    status, one = server.http("GET", f"/logs/request/{first['request_id']}")
    assert status == 200 and one["log"]["seq_no"] == 0
    _, by_block = server.http("GET", f"/logs/block/{a}?limit=2")
    assert by_block["count"] == 2
    _, both = server.http("GET", f"/logs/session_block?session_id={sid}&block_id={a}")
    assert both["count"] == 6
    assert server.http("GET", "/logs/request/not-a-uuid")[0] == 400
    assert server.http("GET", f"/logs/request/{uuid.uuid4()}")[0] == 404
    assert server.http("GET", "/logs/session_block?session_id=x")[0] == 400
    assert server.http("GET", f"/logs/session/{sid}?limit=0")[0] == 400
    _, health = server.http("GET", "/health")
    assert health["request_log"]["written"] >= 6 and health["request_log"]["dropped"] == 0


def test_logs_without_a_database_say_so(blocks: Network):
    server = blocks.start_adhoc()
    status, body = server.http("GET", "/logs/session/x")
    assert status == 503 and "not configured" in body["error"]["message"]
