"""Shell completion from the matrix on the command line (click's `_FWMATRIX_COMPLETE`,
docs/install.md#shell-completion): firewall, opening, host and service names.

While an option's value is completed, click may not have parsed the arguments yet:
the matrix is then the first word that is not an option."""

from __future__ import annotations

from typing import Callable

import click

from fwmatrix.matrix.loader import load_matrix
from fwmatrix.matrix.model import Matrix

KINDS: dict[str, Callable[[Matrix], list[str]]] = {
    "firewalls": lambda m: list(m.firewalls),
    "openings": lambda m: [o.name for o in m.openings],
    "names": lambda m: list(m.all_names()),
    "services": lambda m: list(m.services),
}


def _matrix_on_the_line(ctx: click.Context) -> Matrix | None:
    given = [ctx.params.get(key) for key in ("matrix", "old", "new")] + list(ctx.params.get("matrices") or ())
    for path in [p for p in given if p] + [a for a in ctx.args if not a.startswith("-")]:
        try:
            return load_matrix(path)
        except Exception:  # noqa: BLE001 - not a matrix (yet), or a broken one: try the next word
            continue
    return None


def from_matrix(kind: str) -> Callable[[click.Context, click.Parameter, str], list[str]]:
    """A shell_complete callback offering the matrix's names of `kind` that start as typed."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        matrix = _matrix_on_the_line(ctx)
        if matrix is None:
            return []
        return sorted(name for name in KINDS[kind](matrix) if name.startswith(incomplete))

    return complete
