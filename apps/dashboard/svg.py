"""Inline SVG drawn on the server: vDAG graphs (layered by topological depth) and sparklines.

Everything here is a pure function of its arguments (no database, no Redis), so the layout
can be tested on its own. Every piece of text that reaches the markup goes through
``format_html`` (labels and block ids are user input).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

# -- graph layout ---------------------------------------------------------------------------
NODE_H = 46
LAYER_GAP = 70  # horizontal space between two layers (edges run through it)
ROW_GAP = 22
MARGIN = 24
CHAR_W = 7.2  # average glyph width of the 12px sans-serif the stylesheet uses
MIN_NODE_W = 110
MAX_NODE_W = 240
MAX_TEXT = 30  # longer labels are cut with an ellipsis; the <title> keeps the whole text


@dataclass(slots=True)
class PlacedNode:
    label: str
    layer: int
    row: int
    x: float = 0.0
    y: float = 0.0
    width: float = MIN_NODE_W
    block_id: str = ""
    status: str = ""
    href: str = ""


@dataclass(slots=True)
class GraphLayout:
    nodes: dict[str, PlacedNode]
    edges: list[tuple[str, str]]
    layers: list[list[str]]
    width: float
    height: float
    # Nodes on or behind a cycle (only a broken, uncompiled spec has one), drawn last.
    cyclic: list[str] = field(default_factory=list)


def layer_of(
    labels: Sequence[str], edges: Sequence[tuple[str, str]]
) -> tuple[dict[str, int], list[str]]:
    """Topological depth: a head is 0, every other node one more than its deepest input.

    Kahn's algorithm in the given node order, so the drawing is stable. Nodes that never
    become ready (on or behind a cycle) get one layer past the deepest acyclic one and are
    returned second."""
    preds: dict[str, list[str]] = {label: [] for label in labels}
    succs: dict[str, list[str]] = {label: [] for label in labels}
    for src, dst in edges:
        if src in preds and dst in preds:
            succs[src].append(dst)
            preds[dst].append(src)
    indegree = {label: len(preds[label]) for label in labels}
    ready = [label for label in labels if indegree[label] == 0]
    depth: dict[str, int] = {}
    while ready:
        label = ready.pop(0)
        depth[label] = max((depth[p] + 1 for p in preds[label] if p in depth), default=0)
        for succ in succs[label]:
            indegree[succ] -= 1
            if indegree[succ] == 0:
                ready.append(succ)
    last = max(depth.values(), default=-1) + 1
    stuck = [label for label in labels if label not in depth]
    for label in stuck:
        depth[label] = last
    return depth, stuck


def _text_width(*texts: str) -> float:
    longest = max((min(len(t), MAX_TEXT) for t in texts), default=0)
    return max(MIN_NODE_W, min(MAX_NODE_W, longest * CHAR_W + 24))


def layout_graph(
    labels: Sequence[str],
    edges: Sequence[tuple[str, str]],
    *,
    block_ids: Mapping[str, str] | None = None,
) -> GraphLayout:
    """Place nodes left to right by depth, top to bottom in the given order per layer."""
    block_ids = block_ids or {}
    known = set(labels)
    edges = [(s, d) for s, d in edges if s in known and d in known]
    depth, stuck = layer_of(labels, edges)
    count = max(depth.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(count)]
    for label in labels:
        layers[depth[label]].append(label)
    widths = [
        max((_text_width(lbl, block_ids.get(lbl, "")) for lbl in layer), default=MIN_NODE_W)
        for layer in layers
    ]
    tallest = max((len(layer) for layer in layers), default=0)
    height = 2 * MARGIN + tallest * NODE_H + max(0, tallest - 1) * ROW_GAP
    nodes: dict[str, PlacedNode] = {}
    x = float(MARGIN)
    for index, layer in enumerate(layers):
        column_h = len(layer) * NODE_H + max(0, len(layer) - 1) * ROW_GAP
        top = (height - column_h) / 2  # centre short layers against the tallest one
        for row, label in enumerate(layer):
            nodes[label] = PlacedNode(
                label=label,
                layer=index,
                row=row,
                x=x,
                y=top + row * (NODE_H + ROW_GAP),
                width=widths[index],
                block_id=block_ids.get(label, ""),
            )
        x += widths[index] + LAYER_GAP
    width = x - LAYER_GAP + MARGIN if layers else 2 * MARGIN
    return GraphLayout(nodes, list(edges), layers, width, height, cyclic=stuck)


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _edge_path(src: PlacedNode, dst: PlacedNode) -> str:
    x1, y1 = src.x + src.width, src.y + NODE_H / 2
    x2, y2 = dst.x - 2, dst.y + NODE_H / 2  # stop short so the arrow head stays visible
    if dst.layer <= src.layer:  # a back edge of a broken spec: loop under the boxes
        low = max(src.y, dst.y) + NODE_H + ROW_GAP / 2
        return (
            f"M{x1:.1f},{y1:.1f} C{x1 + 40:.1f},{low:.1f} {x2 - 40:.1f},{low:.1f} {x2:.1f},{y2:.1f}"
        )
    bend = max(24.0, (x2 - x1) / 2)
    return (
        f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    )


def render_graph_svg(layout: GraphLayout, *, title: str = "vDAG") -> SafeString:
    """The layout as an ``<svg>`` element: one ``g.node`` per node (label over block id,
    coloured by the block's status, linked to its page), one ``path.edge`` per connection
    with an arrow head; ``data-*`` attributes name what each element stands for."""
    edge_markup = format_html_join(
        "\n",
        '<path class="edge" data-from="{}" data-to="{}" d="{}" marker-end="url(#arrow)">'
        "<title>{} → {}</title></path>",
        (
            (src, dst, _edge_path(layout.nodes[src], layout.nodes[dst]), src, dst)
            for src, dst in layout.edges
        ),
    )
    node_parts = []
    for node in layout.nodes.values():
        box = format_html(
            '<rect x="{}" y="{}" width="{}" height="{}" rx="6"></rect>'
            '<text class="node-label" x="{}" y="{}">{}</text>'
            '<text class="node-block" x="{}" y="{}">{}</text>'
            "<title>{}{}</title>",
            f"{node.x:.1f}",
            f"{node.y:.1f}",
            f"{node.width:.1f}",
            NODE_H,
            f"{node.x + 10:.1f}",
            f"{node.y + 19:.1f}",
            _short(node.label),
            f"{node.x + 10:.1f}",
            f"{node.y + 36:.1f}",
            _short(node.block_id) if node.block_id else "(not assigned)",
            node.label,
            f" → block {node.block_id} ({node.status or 'unknown'})" if node.block_id else "",
        )
        if node.href:
            box = format_html('<a href="{}">{}</a>', node.href, box)
        node_parts.append(
            format_html(
                '<g class="node status-{}" data-label="{}" data-block="{}">{}</g>',
                node.status or "unknown",
                node.label,
                node.block_id,
                box,
            )
        )
    nodes_markup = format_html_join("\n", "{}", ((part,) for part in node_parts))
    return format_html(
        '<svg class="vdag-graph" xmlns="http://www.w3.org/2000/svg" role="img" '
        'viewBox="0 0 {w} {h}" width="{w}" height="{h}" aria-label="{t}">'
        "<title>{t}</title>"
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"></path>'
        "</marker></defs>"
        '<g class="edges">{e}</g><g class="nodes">{n}</g></svg>',
        w=f"{layout.width:.0f}",
        h=f"{layout.height:.0f}",
        t=title,
        e=edge_markup,
        n=nodes_markup,
    )


# -- sparklines -----------------------------------------------------------------------------
SPARK_W = 120
SPARK_H = 28
NO_HISTORY = SafeString('<span class="spark-empty" title="no history yet">&ndash;</span>')


@dataclass(slots=True)
class Series:
    name: str
    css_class: str
    values: list[float]
    unit: str = "%"


def _points(values: Sequence[float], lo: float, hi: float, width: int, height: int) -> str:
    span = (hi - lo) or 1.0
    if len(values) == 1:
        values = [values[0], values[0]]  # one sample: a flat line rather than a dot
    step = (width - 2) / (len(values) - 1)
    return " ".join(
        f"{1 + i * step:.1f},{height - 1 - (min(max(v, lo), hi) - lo) / span * (height - 2):.1f}"
        for i, v in enumerate(values)
    )


def sparkline_svg(
    series: Iterable[Series],
    *,
    lo: float = 0.0,
    hi: float | None = 100.0,
    width: int = SPARK_W,
    height: int = SPARK_H,
) -> SafeString:
    """Several series as polylines in one small chart. ``hi=None`` scales to the data
    (counts, latencies); the default is a 0-100 percent scale. Empty series are skipped; with
    nothing to draw the chart says so."""
    drawn = [s for s in series if s.values]
    if not drawn:
        return NO_HISTORY
    top = hi if hi is not None else max(max(s.values) for s in drawn) or 1.0
    lines = format_html_join(
        "",
        '<polyline class="{}" points="{}"><title>{} (last {}{})</title></polyline>',
        (
            (
                s.css_class,
                _points(s.values, lo, top, width, height),
                s.name,
                _fmt(s.values[-1]),
                s.unit,
            )
            for s in drawn
        ),
    )
    summary = ", ".join(f"{s.name} {_fmt(s.values[-1])}{s.unit}" for s in drawn)
    return format_html(
        '<svg class="spark" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" '
        'width="{w}" height="{h}" role="img" aria-label="{a}">{l}</svg>',
        w=width,
        h=height,
        a=summary,
        l=lines,
    )


def _fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"
