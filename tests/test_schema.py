"""docs/matrix.schema.json (for editors) agrees with the loader on real and broken matrices."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from hypothesis import given, settings

from conftest import ROOT, SEED
from strategies import matrix_yaml
from test_loader import BASE

SCHEMA = json.loads((ROOT / "docs" / "matrix.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def test_schema_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", [SEED, *sorted((ROOT / "examples").glob("*/matrix.yaml"))], ids=lambda p: p.parent.name)
def test_shipped_matrices_follow_the_schema(path) -> None:
    VALIDATOR.validate(yaml.safe_load(path.read_text()))


@settings(max_examples=40, deadline=None)
@given(text=matrix_yaml())
def test_generated_matrices_follow_the_schema(text: str) -> None:
    VALIDATOR.validate(yaml.safe_load(text))


@pytest.mark.parametrize(
    "change",
    [
        ("fwmatrix: 1", "fwmatrix: 2"),
        ("zones:", "zonez:"),
        ("  nginx: 172.16.10.10", "  nginx: {addresses: 172.16.10.10, colour: red}"),
        ("    service: tcp/80", "    service: tcp/80\n    nat: {to: nginx, port: 70000}"),
        ("    interfaces: {wan0: internet, dmz0: dmz, lan0: lan}", "    interfaces: {'wan0\"': internet, dmz0: dmz}"),
        ("  https: tcp/443", "  https: http/443"),
    ],
)
def test_schema_refuses_what_the_loader_refuses(change: tuple[str, str]) -> None:
    doc = yaml.safe_load(BASE.replace(*change))
    assert not VALIDATOR.is_valid(doc)
