"""`fwmatrix graph`: the seed drawn as its source document's picture, large matrices by zone pair,
hostile text kept as text."""

from __future__ import annotations

import html
import json
from xml.etree import ElementTree
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from conftest import ROOT, SEED, require_tool
from fwmatrix.cli import main
from fwmatrix.graph import diagram, graph
from fwmatrix.graph.render import _mermaid_text, to_dot
from fwmatrix.matrix.loader import load_matrix

TWO_FIREWALLS = ROOT / "examples" / "two-firewalls" / "matrix.yaml"


def svg_texts(svg: bytes) -> list[str]:
    """The text lines an SVG shows (Graphviz writes one <text> element a label line)."""
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg.decode())
    return [t.replace("&#45;", "-").replace("&gt;", ">").replace("&lt;", "<").replace("&quot;", '"').replace("&amp;", "&") for t in texts]


def test_the_seed_has_zones_hosts_firewall_openings_and_nat() -> None:
    seed = load_matrix(str(SEED))
    d = diagram(seed)
    assert {label for area, label in d.areas.items()} == {"internet", "dmz-ext", "dmz-int", "lan", "firewall edge"}
    sipproxy = {n.area: n.lines for n in d.nodes.values() if n.lines[0] == "sipproxy"}
    assert sipproxy == {"zone:dmz-ext": ["sipproxy", "EXT 172.16.10.21"], "zone:dmz-int": ["sipproxy", "INT 172.16.20.21"]}
    nat = sorted((d.nodes[e.source].lines[0], d.nodes[e.target].lines[-1], e.labels[0]) for e in d.edges.values() if e.kind == "nat")
    assert nat == [("edge.public", "172.16.10.10", "⇒ https"), ("edge.public", "EXT 172.16.10.21", "⇒ sip-and-tls"),
                   ("edge.public", "EXT 172.16.10.22", "⇒ rtp-ext")]
    interfaces = sorted((e.labels[0], d.nodes[e.target].area) for e in d.edges.values() if e.kind == "interface")
    assert interfaces == [("dmz0", "zone:dmz-ext"), ("dmz1", "zone:dmz-int"), ("lan0", "zone:lan"), ("wan0", "zone:internet")]
    openings = [e for e in d.edges.values() if e.kind == "opening"]
    # every opening is one arrow, but the three from the internet to the public address share it
    assert sum(len(e.tooltip) for e in openings) == len(seed.openings)
    assert {label for e in openings for label in e.labels} >= {"https tcp/443", "rtp-int udp/4000-9999", "http tcp/80"}


def test_the_seed_drawn_by_graphviz(tmp_path: Path) -> None:
    require_tool("dot", "graphviz")
    out = tmp_path / "seed.svg"
    result = CliRunner().invoke(main, ["graph", str(SEED), "--format", "svg", "-o", str(out)])
    assert result.exit_code == 0, result.output
    texts = svg_texts(out.read_bytes())
    for shown in ("dmz-ext", "sipproxy", "EXT 172.16.10.21", "INT 172.16.20.21", "edge.public", "203.0.113.10", "⇒ https", "wan0", "firewall edge"):
        assert shown in texts, shown
    png = graph(load_matrix(str(SEED)), "png")
    assert isinstance(png, bytes) and png.startswith(b"\x89PNG\r\n\x1a\n")


def test_mermaid_of_the_seed() -> None:
    text = graph(load_matrix(str(SEED)), "mermaid")
    assert isinstance(text, str)
    assert text.count("  subgraph ") == 5 and text.count("\n  end") == 5
    assert len(re.findall(r" ==>\|", text)) == 3  # the port forwards
    assert '"sipproxy<br>EXT 172.16.10.21"' in text


def test_one_firewall_only(tmp_path: Path) -> None:
    matrix = load_matrix(str(TWO_FIREWALLS))
    whole, perimeter = diagram(matrix), diagram(matrix, "perimeter")
    assert {a for a in whole.areas if a.startswith("firewall:")} == {"firewall:perimeter", "firewall:internal"}
    assert {a for a in perimeter.areas if a.startswith("firewall:")} == {"firewall:perimeter"}
    drawn = {tip.partition(":")[0] for e in perimeter.edges.values() for tip in e.tooltip}
    every = {tip.partition(":")[0] for e in whole.edges.values() for tip in e.tooltip}
    assert drawn < every  # some openings do not cross the perimeter
    result = CliRunner().invoke(main, ["graph", str(TWO_FIREWALLS), "--firewall", "nope", "--format", "dot", "-o", str(tmp_path / "x.dot")])
    assert result.exit_code == 2 and "no firewall named 'nope'" in result.output


def test_hostile_text_stays_text(write_matrix, tmp_path: Path) -> None:
    hostile = '"];\\ evil [label="pwned"]; x -> y [label="<b>'
    text = SEED.read_text().replace("title: Operator access from the internet (ContaCT Highway 7)", f"title: '{hostile}'")
    text = text.replace("note: forwards the web traffic (HTTP/S)", "note: \"# x ;\\\"]; `<script>alert(1)</script>`| \\e[31m\"")
    matrix = load_matrix(write_matrix(text))
    mermaid = graph(matrix, "mermaid")
    assert isinstance(mermaid, str)
    assert mermaid.splitlines()[1] == f"title: {json.dumps(hostile + ' — contact-highway-7', ensure_ascii=False)}"  # YAML text
    labels = re.findall(r'"([^"\n]*)"', mermaid.split("flowchart LR\n", 1)[1])
    assert labels and all("<" not in label.replace("<br>", "") and "#" not in label for label in labels)
    # label text: HTML's entities, which Mermaid shows as written (its own #name; would not be)
    label = _mermaid_text('"];\\ <img src=x> #quot; & `x` | \x1b')
    assert not set('"<>#') & set(label) and html.unescape(label) == '"];\\ <img src=x> #quot; & `x` | \\x1b'
    require_tool("dot", "graphviz")
    d = diagram(matrix)
    parsed = json.loads(subprocess.run(["dot", "-Tjson"], input=to_dot(d), capture_output=True, text=True, check=True).stdout)
    assert len(parsed["edges"]) == len(d.edges)  # no node or arrow smuggled in
    assert len([o for o in parsed["objects"] if "nodes" not in o]) == len(d.nodes)
    svg = graph(matrix, "svg")
    assert isinstance(svg, bytes)
    assert hostile in svg_texts(svg)[0]  # the title, shown as written
    assert b"<script>" not in svg and b"<b>" not in svg
    ElementTree.fromstring(svg)  # well-formed XML: the note's escape character is written as \x1b, not as itself


def test_a_thousand_openings_are_drawn_by_zone_pair(tmp_path: Path) -> None:
    require_tool("dot", "graphviz")
    bench = tmp_path / "bench.yaml"
    subprocess.run([sys.executable, str(ROOT / "bench" / "gen_matrix.py"), "1000", "--seed", "1", "-o", str(bench)], check=True)
    matrix = load_matrix(str(bench))
    d = diagram(matrix)
    zones = [a for a in d.areas if a.startswith("zone:")]
    assert len(zones) == len(matrix.zones)
    pairs = [e for e in d.edges.values() if e.kind == "zone-pair"]
    assert 0 < len(pairs) <= len(zones) ** 2
    assert sum(int(e.labels[0].split()[0]) for e in pairs) >= len(matrix.openings)  # every opening counted
    assert all(len(label) < 80 for e in pairs for label in e.labels)  # legible: no label lists them all
    svg = graph(matrix, "svg")
    assert isinstance(svg, bytes) and b"</svg>" in svg


def test_diff_markdown_embeds_the_changed_part(tmp_path: Path) -> None:
    changed = tmp_path / "changed.yaml"
    changed.write_text(SEED.read_text().replace("    service: http\n", "    service: [http, https]\n"))
    result = CliRunner().invoke(main, ["diff", str(SEED), str(changed), "--format", "markdown", "--diagram"])
    assert result.exit_code == 0, result.output
    block = result.output[result.output.index("```mermaid"):]
    arrows = re.findall(r"^  n\d+ -->\|\"([^\"]*)\"\| n\d+$", block, re.MULTILINE)
    assert arrows == ["http tcp/80, https tcp/443"]  # nginx-to-bal, the one opening changed
    plain = CliRunner().invoke(main, ["diff", str(SEED), str(changed), "--format", "markdown"])
    assert "```mermaid" not in plain.output and result.output.startswith(plain.output)


def test_the_firewalls_own_services_go_to_the_firewall() -> None:
    matrix = load_matrix(str(ROOT / "examples" / "perimeter" / "matrix.yaml"))
    own = [o for o in matrix.openings if any(ref.partition(".")[0] in matrix.firewalls and ref.partition(".")[2] not in
                                             matrix.firewalls[ref.partition(".")[0]].public for ref in o.destinations)]
    assert own  # the example has some: DNS and NTP of the internal firewall, NTP of the perimeter's transit address
    for built in (diagram(matrix, group="host"), diagram(matrix, group="zone-pair")):
        targets = {e.target for e in built.edges.values() if e.kind in ("opening", "zone-pair")}
        assert "fw:internal" in targets
        assert all(target in built.nodes for e in built.edges.values() for target in (e.source, e.target))
    detailed_targets = {e.target for e in diagram(matrix, group="host").edges.values() if e.kind == "opening"}
    assert "own:perimeter.transit0" in detailed_targets
