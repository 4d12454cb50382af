"""`fwmatrix schema`: the JSON Schema of the matrix or of a report, for editors and for
tools that validate fwmatrix's JSON output (the same files as docs/)."""

from __future__ import annotations

import click

from fwmatrix.cli.common import user_errors
from fwmatrix.schemas import SCHEMAS, schema_text


@click.command("schema")
@click.argument("name", required=False, type=click.Choice(list(SCHEMAS)))
@user_errors
def schema(name: str | None) -> None:
    """Print the schema NAME (matrix, or a report: audit, lint, diff, ...); without NAME,
    list them. E.g. `fwmatrix schema matrix > matrix.schema.json` for an editor."""
    if name is None:
        for known, path in SCHEMAS.items():
            click.echo(f"{known:8} {path}")
        return
    click.echo(schema_text(name), nl=False)


COMMANDS = (schema,)
