"""`fwmatrix graph`: the matrix as a picture (SVG, PNG, Graphviz DOT, Mermaid)."""

from __future__ import annotations

import click

from fwmatrix.cli.common import file_output_option, firewall_option, load_intent, matrix_argument, user_errors, write_output
from fwmatrix.graph import GRAPH_FORMATS, GROUPINGS, graph


@click.command("graph")
@matrix_argument
@firewall_option
@click.option("--format", "fmt", type=click.Choice(GRAPH_FORMATS), default="svg", show_default=True,
              help="svg and png are drawn by Graphviz (dot); dot is its input; mermaid is for Markdown documents and pull requests.")
@click.option("--group", type=click.Choice(GROUPINGS), default="auto", show_default=True,
              help="host: every host and arrow; zone-pair: one box per zone, one arrow per zone pair; auto: zone-pair above 40 openings.")
@file_output_option()
@user_errors
def graph_command(matrix: str, firewall: str | None, fmt: str, group: str, output: str) -> None:
    """Draw MATRIX: zones as areas, hosts with their EXT and INT addresses, firewalls with
    their interfaces and public addresses, openings as arrows labelled with their services,
    and port forwards as public address ⇒ target. With --firewall, only what that firewall
    carries."""
    intent = load_intent(matrix, firewall)
    write_output(output, graph(intent.matrix, fmt, firewall, group))


COMMANDS = (graph_command,)
