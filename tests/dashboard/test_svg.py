"""The server-side drawing on its own: layered layout, cycles, long labels, sparklines."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from apps.dashboard import svg

SVG_NS = "{http://www.w3.org/2000/svg}"


def test_layers_follow_the_longest_path_from_a_head():
    labels = ["src", "fast", "slow1", "slow2", "join"]
    edges = [
        ("src", "fast"),
        ("src", "slow1"),
        ("slow1", "slow2"),
        ("fast", "join"),
        ("slow2", "join"),
    ]
    depth, stuck = svg.layer_of(labels, edges)
    assert depth == {"src": 0, "fast": 1, "slow1": 1, "slow2": 2, "join": 3}
    assert stuck == []


def test_a_cycle_is_drawn_in_a_last_layer_and_reported():
    layout = svg.layout_graph(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "b")])
    assert layout.cyclic == ["b", "c"]
    assert layout.nodes["a"].layer == 0
    assert layout.nodes["b"].layer == layout.nodes["c"].layer == 1
    ET.fromstring(str(svg.render_graph_svg(layout)))  # still well-formed markup


def test_edges_to_unknown_nodes_are_dropped():
    layout = svg.layout_graph(["a"], [("a", "ghost")])
    assert layout.edges == []


def test_long_labels_are_cut_but_kept_whole_in_the_tooltip():
    label = "a-very-long-node-label-that-goes-on-and-on-forever"
    layout = svg.layout_graph([label], [], block_ids={label: "blk"})
    root = ET.fromstring(str(svg.render_graph_svg(layout)))
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert texts[0].endswith("…") and len(texts[0]) == svg.MAX_TEXT
    titles = [t.text for t in root.iter(f"{SVG_NS}title")]
    assert any(label in (t or "") for t in titles)
    assert layout.nodes[label].width <= svg.MAX_NODE_W


def test_an_empty_graph_is_an_empty_drawing():
    layout = svg.layout_graph([], [])
    assert layout.nodes == {} and layout.layers == []
    ET.fromstring(str(svg.render_graph_svg(layout)))


def test_sparkline_scales_percentages_and_says_when_there_is_no_history():
    chart = ET.fromstring(
        str(svg.sparkline_svg([svg.Series("CPU", "spark-cpu", [0.0, 50.0, 100.0])]))
    )
    points = next(chart.iter(f"{SVG_NS}polyline")).get("points").split()
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] == svg.SPARK_H - 1 and ys[2] == 1.0 and ys[1] == (svg.SPARK_H) / 2
    assert "no history" in str(svg.sparkline_svg([svg.Series("CPU", "spark-cpu", [])]))
    one = ET.fromstring(str(svg.sparkline_svg([svg.Series("x", "c", [5.0])], hi=None)))
    assert len(next(one.iter(f"{SVG_NS}polyline")).get("points").split()) == 2


def test_long_history_is_averaged_down_to_what_a_sparkline_can_show():
    from apps.dashboard.services import SPARK_POINTS, downsample

    values = [float(i) for i in range(240)]
    out = downsample(values)
    assert len(out) == SPARK_POINTS
    assert out[0] == 1.5 and out[-1] == 237.5  # averages of runs of four
    assert downsample([1.0, 2.0]) == [1.0, 2.0]
