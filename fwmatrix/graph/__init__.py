"""The matrix as a picture: `diagram` builds zones, hosts, firewalls and arrows; `render`
writes them as Graphviz DOT or Mermaid and has Graphviz draw SVG and PNG.

Large matrices are drawn by zone pair (`--group zone-pair`, chosen by itself
above GROUP_ABOVE openings): a picture of a thousand arrows helps nobody.
"""

from __future__ import annotations

from fwmatrix.graph.diagram import Diagram, by_zone_pair, detailed
from fwmatrix.graph.render import draw, to_dot, to_mermaid
from fwmatrix.matrix.model import Matrix

GRAPH_FORMATS = ("svg", "png", "dot", "mermaid")
GROUPINGS = ("auto", "host", "zone-pair")
GROUP_ABOVE = 40  # openings; more are drawn by zone pair unless --group host


def diagram(matrix: Matrix, firewall: str | None = None, group: str = "auto") -> Diagram:
    if group == "zone-pair" or (group == "auto" and len(matrix.openings) > GROUP_ABOVE):
        return by_zone_pair(matrix, firewall)
    return detailed(matrix, firewall)


def graph(matrix: Matrix, fmt: str, firewall: str | None = None, group: str = "auto") -> str | bytes:
    """The matrix's picture in `fmt`: DOT or Mermaid text, SVG or PNG bytes."""
    built = diagram(matrix, firewall, group)
    if fmt == "mermaid":
        return to_mermaid(built)
    dot_text = to_dot(built)
    return dot_text if fmt == "dot" else draw(dot_text, fmt)


__all__ = ["GRAPH_FORMATS", "GROUPINGS", "diagram", "graph", "to_dot"]
