"""The instance SDK without processes: BlockTester, both return styles, muxing and batching,
sessions, metrics, load-balancer policies and configuration parsing."""

from __future__ import annotations

import json
import time

import pytest

from block_sdk.executor.config import ExecutorConfigError, load_config
from block_sdk.executor.lb_policies import (
    LeastQueuePolicy,
    NoInstanceAvailable,
    RoundRobinPolicy,
    StickySessions,
    load_policy,
)
from block_sdk.instance.config import ConfigError, InstanceConfig
from block_sdk.packet import DataPlaneError, Packet
from block_sdk.sdk import (
    AIOSMetrics,
    Batcher,
    BlockTester,
    BlockTestError,
    Muxer,
    OnDataResult,
    PreProcessResult,
    SessionsManager,
    TestContext,
    TimeBasedBatcher,
)
from examples.echo.block import EchoBlock
from tests.block_sdk.dataplane.aios_style_block import SimpleBlock


# -- BlockTester and return styles ---------------------------------------------------------
def test_echo_adds_echo_true_and_keeps_files():
    tester = BlockTester(EchoBlock)
    assert tester.run({"a": 1, "b": [1, 2]}) == [{"a": 1, "b": [1, 2], "echo": True}]
    out = tester.run_packet(tester.packet({"x": 1}, files=[({"name": "f.bin"}, b"\x00\x01")]))
    assert json.loads(out.data) == {"x": 1, "echo": True}
    assert [(f.metadata, f.file_data) for f in out.files] == [('{"name": "f.bin"}', b"\x00\x01")]


def test_blocktester_passes_init_data_settings_and_parameters():
    class Cfg:
        def __init__(self, context):
            self.context = context

        def on_data(self, entry):
            c = self.context
            return OnDataResult(
                {"init": c.init_data, "settings": c.settings, "params": c.parameters}
            )

    out = BlockTester(Cfg, init_data={"i": 1}, settings={"s": 2}, parameters={"p": 3}).run_one()
    assert out == {"init": {"i": 1}, "settings": {"s": 2}, "params": {"p": 3}}


def test_aios_documented_sample_block_runs_unchanged():
    tester = BlockTester(SimpleBlock, parameters={"threshold": 0.7})
    assert tester.run({"value": 0.9}) == [{"value": 0.9, "passed": True}]
    assert tester.run({"value": 0.6}) == [{"value": 0.6, "passed": False}]
    assert tester.update({"threshold": 0.5}) == (True, {"threshold": 0.5})
    assert tester.run({"value": 0.6}) == [{"value": 0.6, "passed": True}]
    assert tester.management("get_threshold", {}) == {"threshold": 0.5}
    assert tester.health() == {"status": "healthy"}


def test_aios_init_with_context_and_star_import_names():
    import aios_instance

    for name in ("Block", "PreProcessResult", "OnDataResult", "BlockTester", "Muxer", "Batcher",
                 "TimeBasedBatcher", "TestContext", "AIOSMetrics", "SessionsManager",
                 "BlockEvents", "BlockSideCars", "AIOSPacket", "FileInfo"):  # fmt: skip
        assert name in aios_instance.__all__ and hasattr(aios_instance, name), name
    context = TestContext()
    context.block_init_parameters = {"threshold": 0.95}
    tester = BlockTester.init_with_context(SimpleBlock, context)
    assert tester.run({"value": 0.9}) == [{"value": 0.9, "passed": False}]


class Styles:
    """on_data behaviour chosen by the input, to exercise every accepted return style."""

    def __init__(self, context):
        pass

    def on_preprocess(self, packet):
        data = packet.json()
        style = data.get("pre", "plain")
        entries = [PreProcessResult(packet, {"data": data})] * data.get("fan", 1)
        if style == "tuple":
            return True, entries
        if style == "refuse":
            return False, "not today"
        if style == "raise":
            raise KeyError("missing-key")
        if style == "junk":
            return 42
        return entries

    def on_data(self, entry):
        data = entry.extra_data["data"]
        style = data.get("on_data", "plain")
        if style == "tuple":
            return True, OnDataResult(output={"ok": "tuple"})
        if style == "none":
            return True, None
        if style == "refuse":
            return False, "bad input"
        if style == "raise":
            raise ValueError("boom 42")
        if style == "dict":
            return {"ok": "dict"}
        if style == "junk":
            return "a string"
        return OnDataResult(output={"ok": "plain"})


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, [{"ok": "plain"}]),
        ({"pre": "tuple", "on_data": "tuple"}, [{"ok": "tuple"}]),
        ({"on_data": "dict"}, [{"ok": "dict"}]),
        ({"on_data": "none"}, []),
        ({"fan": 3}, [{"ok": "plain"}] * 3),
    ],
)
def test_both_return_styles_are_accepted(data, expected):
    assert BlockTester(Styles).run(data) == expected


@pytest.mark.parametrize(
    ("data", "code", "stage", "text"),
    [
        ({"pre": "refuse"}, "ABORTED", "on_preprocess", "not today"),
        ({"pre": "raise"}, "INTERNAL", "on_preprocess", "KeyError"),
        ({"pre": "junk"}, "INTERNAL", "on_preprocess", "expected a list"),
        ({"on_data": "refuse"}, "ABORTED", "on_data", "bad input"),
        ({"on_data": "raise"}, "INTERNAL", "on_data", "ValueError: boom 42"),
        ({"on_data": "junk"}, "INTERNAL", "on_data", "returned str"),
    ],
)
def test_block_failures_raise_a_clear_error(data, code, stage, text):
    with pytest.raises(BlockTestError) as info:
        BlockTester(Styles).run(data)
    err = info.value
    assert err.code == code and err.stage == stage and text in err.message
    doc = json.loads(err.to_json())
    assert doc["error"]["code"] == code and text in doc["error"]["message"]


def test_output_that_is_not_json_is_reported():
    class Bad:
        def __init__(self, context):
            pass

        def on_data(self, entry):
            return OnDataResult(output={"obj": object()})

    with pytest.raises(BlockTestError, match="JSON"):
        BlockTester(Bad).run({})


def test_numpy_outputs_are_serialised():
    np = pytest.importorskip("numpy")

    class Np:
        def __init__(self, context):
            pass

        def on_data(self, entry):
            return OnDataResult(output={"v": np.arange(3), "s": np.float32(1.5)})

    assert BlockTester(Np).run_one() == {"v": [0, 1, 2], "s": 1.5}


def test_events_and_sidecars_are_recorded_in_the_test_context():
    class Pusher:
        def __init__(self, context):
            self.c = context

        def on_data(self, entry):
            self.c.events.push_event("done", {"n": 1})
            self.c.side_cars.push_to_all_sidecars(entry.packet)
            return OnDataResult({})

    tester = BlockTester(Pusher, sidecars={"saver": {}, "auditor": {}})
    tester.run({"q": 1})
    assert [e["event_name"] for e in tester.context.events.pushed] == ["done"]
    assert sorted(n for n, _ in tester.context.side_cars.pushed) == ["auditor", "saver"]


# -- muxer and batchers --------------------------------------------------------------------
def _pkt(sid: str, seq: int, data: dict, files=()) -> Packet:
    return Packet(session_id=sid, seq_no=seq, data=json.dumps(data), files=list(files))


def test_muxer_merges_n_packets_of_the_same_session_and_seq():
    mux = Muxer(N=2)
    assert mux.process_packet(_pkt("s", 1, {"a": 1}, ["f1"])) is None
    assert mux.process_packet(_pkt("s", 2, {"b": 2})) is None  # another group
    merged = mux.process_packet(_pkt("s", 1, {"c": 3}, ["f2"]))
    assert merged.data == {"inputs": [{"a": 1}, {"c": 3}]}
    assert merged.files == ["f1", "f2"]
    assert mux.pending() == 1


def test_muxer_of_one_passes_through_and_groups_expire_and_are_bounded():
    p = _pkt("s", 1, {})
    assert Muxer(N=1).process_packet(p) is p
    mux = Muxer(N=3, timeout_s=0.05, max_groups=2)
    for seq in (1, 2, 3):  # third group evicts the oldest
        mux.process_packet(_pkt("s", seq, {}))
    assert mux.pending() == 2
    time.sleep(0.06)
    expired = mux.expire()
    assert sorted(k for k, _ in expired) == [("s", 1), ("s", 2), ("s", 3)]
    assert mux.pending() == 0


def test_muxed_block_in_the_tester():
    from tests.block_sdk.dataplane.dp_blocks import MuxBlock

    tester = BlockTester(MuxBlock)
    assert tester.run({"left": 1}, seq_no=5) == []
    assert tester.run({"right": 2}, seq_no=5) == [
        {"merged": {"inputs": [{"left": 1}, {"right": 2}]}}
    ]


def test_batchers():
    b = Batcher(N=3)
    assert b.add_to_batch(1) is None and b.add_to_batch(2) is None
    assert b.add_to_batch(3) == [1, 2, 3] and len(b) == 0
    tb = TimeBasedBatcher(N=10, T=0.05)
    assert tb.add_to_batch("a") is None
    assert tb.flush_if_due() is None
    time.sleep(0.06)
    assert tb.flush_if_due() == ["a"]
    assert tb.add_to_batch("b") is None
    time.sleep(0.06)
    assert tb.add_to_batch("c") == ["b", "c"]


# -- sessions and metrics ------------------------------------------------------------------
def test_sessions_have_ttl_and_bound():
    s = SessionsManager(ttl_s=0.05, max_sessions=2)
    s.update("a", x=1)
    s.session("b")["y"] = 2
    assert s.get("a") == {"x": 1} and s.get("b") == {"y": 2}
    s.set("c", {"z": 3})  # evicts the least recently used
    assert s.get("a") is None and len(s) == 2
    time.sleep(0.06)
    assert s.get("b") is None and "c" not in s
    s.update("d", {"k": 1})
    s.clear()
    assert len(s) == 0


def test_metrics_api_and_per_process_registry():
    m1, m2 = AIOSMetrics("blk", "i1"), AIOSMetrics("blk", "i2")
    for m in (m1, m2):  # same names in two registries: no collision
        m.register_counter("images_total", "Images")
        m.register_gauge("queue_len", "Queue")
        m.register_histogram("latency_s", "Latency", buckets=[0.1, 1])
    m1.increment_counter("images_total")
    m1.increment_counter("images_total", 2)
    m1.set_gauge("queue_len", 7)
    m1.observe_histogram("latency_s", 0.5)
    text = m1.exposition().decode()
    assert 'images_total{block_id="blk",instance_id="i1"} 3.0' in text
    assert 'queue_len{block_id="blk",instance_id="i1"} 7.0' in text
    assert 'latency_s_bucket{block_id="blk",instance_id="i1",le="1.0"} 1.0' in text
    assert "i1" not in m2.exposition().decode()
    with pytest.raises(KeyError):
        m1.increment_counter("never_registered")


# -- load-balancer policies ----------------------------------------------------------------
def _ctx(ids, inflight=None, queued=None):
    return {
        "instances": ids,
        "alive": frozenset(ids),
        "inflight": inflight or {},
        "queue_lengths": queued or {},
    }


def test_round_robin_cycles_and_sticks_sessions():
    p = RoundRobinPolicy("lb", {}, {})
    ctx = _ctx(["a", "b", "c"])
    picks = [p.eval({}, {"session_id": ""}, ctx) for _ in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]
    first = p.eval({}, {"session_id": "s1"}, ctx)
    assert {p.eval({}, {"session_id": "s1"}, ctx) for _ in range(5)} == {first}
    # The sticky instance leaves: the session is placed again on a live one.
    ctx2 = _ctx([i for i in ["a", "b", "c"] if i != first])
    assert p.eval({}, {"session_id": "s1"}, ctx2) in ctx2["instances"]
    assert p.management("get_sessions", {})["count"] == 1


def test_least_queue_prefers_the_emptiest_instance():
    p = LeastQueuePolicy("lb", {}, {"session_stickiness": False})
    ctx = _ctx(["a", "b", "c"], inflight={"a": 5, "b": 1, "c": 3})
    assert {p.eval({}, {}, ctx) for _ in range(5)} == {"b"}
    ctx = _ctx(["a", "b"], inflight={"a": 0, "b": 0}, queued={"a": 4})
    assert p.eval({}, {}, ctx) == "b"
    tie = _ctx(["a", "b"])
    assert {p.eval({}, {}, tie) for _ in range(4)} == {"a", "b"}


def test_policy_errors_and_loading():
    with pytest.raises(NoInstanceAvailable):
        RoundRobinPolicy().eval({}, {}, _ctx([]))
    assert isinstance(load_policy("least-queue"), LeastQueuePolicy)
    assert isinstance(
        load_policy("block_sdk.executor.lb_policies:RoundRobinPolicy"), RoundRobinPolicy
    )
    with pytest.raises(ValueError):
        load_policy("no_such_module_xyz:Policy")


def test_sticky_sessions_are_bounded_and_expire():
    s = StickySessions(ttl_s=0.05, max_sessions=2)
    for sid in ("a", "b", "c"):
        s.put(sid, "i1")
    assert len(s) == 2 and s.get("a", {"i1"}) is None
    time.sleep(0.06)
    assert s.get("c", {"i1"}) is None


# -- configuration -------------------------------------------------------------------------
def test_instance_config_from_env():
    cfg = InstanceConfig.from_env(
        {
            "BLOCK_ID": "b1",
            "INSTANCE_ID": "i9",
            "REDIS_URL": "redis://h:1/2",
            "BLOCK_INIT_PARAMETERS": '{"k": 1}',
            "BLOCK_INIT_DATA": '{"sidecars": [{"name": "saver", "external": false}]}',
            "AIOS_INSTANCE_CONCURRENCY": "3",
        }
    )
    assert (cfg.block_id, cfg.instance_id, cfg.redis_url) == ("b1", "i9", "redis://h:1/2")
    assert cfg.parameters == {"k": 1} and cfg.concurrency == 3
    assert cfg.sidecars == {"saver": {"external": False}}
    with pytest.raises(ConfigError, match="BLOCK_INIT_SETTINGS"):
        InstanceConfig.from_env({"BLOCK_INIT_SETTINGS": "{nope"})


def test_executor_config_layers():
    cfg = load_config(
        '{"block_id": "b", "instances": ["i1"], "lb_policy": "least_queue"}',
        env={"AIOS_MAX_QUEUE_LENGTH": "5", "REDIS_URL": "redis://x:1/0"},
        request_timeout_s=2.5,
        lb_parameters='{"session_stickiness": false}',
    )
    assert cfg.block_id == "b" and cfg.instances == ["i1"] and cfg.lb_policy == "least_queue"
    assert cfg.max_queue_length == 5 and cfg.redis_url == "redis://x:1/0"
    assert cfg.request_timeout_s == 2.5 and cfg.lb_parameters == {"session_stickiness": False}
    with pytest.raises(ExecutorConfigError):
        load_config('{"block_id": "b", "bogus": 1}', env={})
    with pytest.raises(ExecutorConfigError):
        load_config("{}", env={})


def test_error_document_round_trip():
    err = DataPlaneError("RESOURCE_EXHAUSTED", "full", instance_id="i1")
    back = DataPlaneError.from_json("RESOURCE_EXHAUSTED", err.to_json())
    assert (back.code, back.message, back.details) == (
        "RESOURCE_EXHAUSTED",
        "full",
        {"instance_id": "i1"},
    )
    assert DataPlaneError.from_json("INTERNAL", "plain text").message == "plain text"
