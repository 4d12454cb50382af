"""The JSON Schemas of the matrix and of the reports, wherever fwmatrix is installed.

They are written once, in docs/ (matrix.schema.json, schemas/*.json), where the
docs link to them and editors find them. A wheel carries the same files as the
data package `fwmatrix.schemadata` (pyproject.toml maps docs/ onto it); an
editable install or a checkout reads docs/ itself.
"""

from __future__ import annotations

import importlib.resources
from importlib.abc import Traversable
from pathlib import Path

from fwmatrix.errors import FwmatrixError, did_you_mean

# name -> path under docs/ (and under fwmatrix/schemadata/ in a wheel)
SCHEMAS: dict[str, str] = {
    "matrix": "matrix.schema.json",
    "audit": "schemas/audit.schema.json",
    "check": "schemas/check.schema.json",
    "diff": "schemas/diff.schema.json",
    "lab": "schemas/lab.schema.json",
    "lint": "schemas/lint.schema.json",
    "query": "schemas/query.schema.json",
    "show": "schemas/show.schema.json",
    "junit": "schemas/junit-10.xsd",
}


def _root() -> Traversable:
    try:
        return importlib.resources.files("fwmatrix.schemadata")
    except ModuleNotFoundError:  # a checkout or an editable install: docs/ beside the package
        return Path(__file__).resolve().parent.parent / "docs"


def schema_text(name: str) -> str:
    """The text of the schema `name` (one of SCHEMAS)."""
    if name not in SCHEMAS:
        raise FwmatrixError(f"no schema '{name}'{did_you_mean(name, SCHEMAS)}; there are: {', '.join(SCHEMAS)}")
    return _root().joinpath(*SCHEMAS[name].split("/")).read_text(encoding="utf-8")
