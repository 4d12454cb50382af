"""A diagram written as Graphviz DOT or Mermaid, and DOT drawn as SVG or PNG by Graphviz's `dot`.

Every label comes from the matrix and is escaped for the language it is
written in: names, notes and addresses are text, never DOT or Mermaid
syntax (nor HTML, which Mermaid would render: an <img> in a label would
even be fetched).
"""

from __future__ import annotations

import json
import shutil
import subprocess

from fwmatrix.errors import FwmatrixError, one_line
from fwmatrix.graph.diagram import Diagram, Edge, Node

DOT = "dot"  # Graphviz's layout program, found on PATH
DOT_TIMEOUT = 120  # seconds; the 1,000-opening bench matrix grouped by zone pair takes under one
# how each kind of node and arrow looks, in DOT attributes
NODE_STYLE = {
    "zone": 'shape=plaintext fontcolor="#555555"',
    "host": 'shape=box style="rounded,filled" fillcolor="#ffffff"',
    "group": 'shape=folder style=filled fillcolor="#f3f3f3"',
    "network": 'shape=box style="dashed,rounded"',
    "firewall": 'shape=box3d style=filled fillcolor="#f4b183" fontname="Helvetica-Bold"',
    "public": 'shape=box style="rounded,filled" fillcolor="#fde9d9"',
    "own": 'shape=box style="rounded,filled,dashed" fillcolor="#fff2e6"',
}
EDGE_STYLE = {
    "opening": 'color="#1f4e79" fontcolor="#1f4e79"',
    "nat": 'color="#c00000" fontcolor="#c00000" style=bold arrowhead=normal',
    "interface": 'dir=none color="#7f7f7f" fontcolor="#7f7f7f" style=dashed',
    "same-host": 'dir=none style=dotted color="#7f7f7f" constraint=false',
    "zone-pair": 'color="#1f4e79" fontcolor="#1f4e79" penwidth=1.5',
}
AREA_STYLE = {
    "zone": 'style="rounded,filled" fillcolor="#eaf1fb" color="#9dc3e6"',
    "firewall": 'style="rounded,filled" fillcolor="#fff2e6" color="#f4b183"',
}


def _dot_text(text: str) -> str:
    """Text inside a DOT double-quoted string: quotes and backslashes escaped, one line
    (control characters written as escapes: an SVG, being XML, cannot hold them)."""
    return one_line(text).replace("\\", "\\\\").replace('"', '\\"')


def _dot_label(lines: list[str]) -> str:
    return "\\n".join(_dot_text(line) for line in lines if line)


def to_dot(diagram: Diagram) -> str:
    ids = {node_id: f"n{index}" for index, node_id in enumerate(diagram.nodes)}
    out = [
        "digraph fwmatrix {",
        f'  graph [label="{_dot_text(diagram.title)}" labelloc=t fontname="Helvetica" fontsize=16 rankdir=LR compound=true nodesep=0.3 ranksep=0.9];',
        '  node [fontname="Helvetica" fontsize=11];',
        '  edge [fontname="Helvetica" fontsize=9];',
    ]
    in_area: dict[str | None, list[Node]] = {}
    for node in diagram.nodes.values():
        in_area.setdefault(node.area if node.area in diagram.areas else None, []).append(node)

    def node_line(node: Node, indent: str) -> str:
        tooltip = f' tooltip="{_dot_text(node.tooltip)}"' if node.tooltip else ""
        return f'{indent}{ids[node.id]} [label="{_dot_label(node.lines)}" {NODE_STYLE[node.kind]}{tooltip}];'

    for number, (area, label) in enumerate(diagram.areas.items()):
        kind = area.partition(":")[0]
        out.append(f"  subgraph cluster_{number} {{")
        out.append(f'    label="{_dot_text(label)}" fontname="Helvetica-Bold" {AREA_STYLE[kind]};')
        out += [node_line(node, "    ") for node in in_area.get(area, [])]
        out.append("  }")
    out += [node_line(node, "  ") for node in in_area.get(None, [])]
    for edge in diagram.edges.values():
        out.append(f"  {ids[edge.source]} -> {ids[edge.target]} [{_edge_attributes(edge)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def _edge_attributes(edge: Edge) -> str:
    attributes = EDGE_STYLE[edge.kind]
    if edge.labels:
        attributes += f' label="{_dot_label(edge.labels)}"'
    if edge.tooltip:
        attributes += f' tooltip="{_dot_text("; ".join(edge.tooltip))}"'
    return attributes


def _mermaid_text(text: str) -> str:
    """Text inside a Mermaid quoted label. Mermaid renders labels as HTML and reads `#name;` as
    its own entities: HTML's entities keep every character literal (checked with Mermaid 11.17
    in Chromium: no element, no fetch, the text as written), '#' included (as &num;)."""
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;"), ("#", "&num;")):
        text = text.replace(char, entity)
    return one_line(text)


def _mermaid_label(lines: list[str]) -> str:
    return "<br>".join(_mermaid_text(line) for line in lines if line)


MERMAID_SHAPES = {"zone": ("[/", "/]"), "host": ("(", ")"), "group": ("[[", "]]"), "network": ("[", "]"), "firewall": ("{{", "}}"), "public": ("([", "])"), "own": ("([", "])")}
MERMAID_ARROWS = {"opening": "-->", "nat": "==>", "interface": "---", "same-host": "-.-", "zone-pair": "-->"}


def to_mermaid(diagram: Diagram) -> str:
    ids = {node_id: f"n{index}" for index, node_id in enumerate(diagram.nodes)}
    # the title is YAML front matter, shown as text: a JSON string is a YAML double-quoted one
    out = ["---", f"title: {json.dumps(one_line(diagram.title), ensure_ascii=False)}", "---", "flowchart LR"]

    def node_line(node: Node, indent: str) -> str:
        start, end = MERMAID_SHAPES[node.kind]
        return f'{indent}{ids[node.id]}{start}"{_mermaid_label(node.lines)}"{end}'

    for number, (area, label) in enumerate(diagram.areas.items()):
        out.append(f'  subgraph a{number}["{_mermaid_text(label)}"]')
        out += [node_line(node, "    ") for node in diagram.nodes.values() if node.area == area]
        out.append("  end")
    out += [node_line(node, "  ") for node in diagram.nodes.values() if node.area not in diagram.areas]
    for edge in diagram.edges.values():
        arrow = MERMAID_ARROWS[edge.kind]
        label = f'|"{_mermaid_label(edge.labels)}"|' if edge.labels else ""
        out.append(f"  {ids[edge.source]} {arrow}{label} {ids[edge.target]}")
    return "\n".join(out) + "\n"


def draw(dot_text: str, fmt: str) -> bytes:
    """DOT text drawn by Graphviz as `svg` or `png`."""
    dot = shutil.which(DOT)
    if dot is None:
        raise FwmatrixError("drawing SVG or PNG needs Graphviz's 'dot' (Debian: apt install graphviz); --format dot or mermaid need nothing")
    try:
        done = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True, timeout=DOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise FwmatrixError(f"Graphviz took more than {DOT_TIMEOUT} s: try --group zone-pair, or --firewall") from None
    if done.returncode != 0:
        raise FwmatrixError(f"Graphviz failed: {done.stderr.decode('utf-8', 'replace').strip()[:500]}")
    return done.stdout
