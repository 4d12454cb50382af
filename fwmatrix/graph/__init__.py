"""The matrix as a picture: `diagram` builds zones, hosts, firewalls and arrows; `render`
writes them as Graphviz DOT or Mermaid and has Graphviz draw SVG and PNG.

Large matrices are drawn by zone pair (`--group zone-pair`, chosen by itself
above GROUP_ABOVE openings): a picture of a thousand arrows helps nobody.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fwmatrix.graph.diagram import Diagram, by_zone_pair, detailed
from fwmatrix.graph.render import draw, to_dot, to_mermaid
from fwmatrix.matrix.model import Matrix

if TYPE_CHECKING:  # only its shape: `fwmatrix graph` need not import the review
    from fwmatrix.review.diff import Review

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


def changed_part_mermaid(after: Matrix, review: Review) -> str:
    """A Markdown block for `fwmatrix diff --diagram`: the openings a change adds or changes,
    drawn in Mermaid from the new matrix (removed openings are in the review's table)."""
    names = {c.name for fw in review.firewalls for c in fw.openings if c.kind != "removed"}
    if not names:
        return ""
    built = detailed(after, only=names, title=f"{after.name}: the openings this change adds or changes")
    return f"\n<details><summary>diagram of the change</summary>\n\n```mermaid\n{to_mermaid(built)}```\n\n</details>\n"


__all__ = ["GRAPH_FORMATS", "GROUPINGS", "changed_part_mermaid", "diagram", "graph", "to_dot"]
