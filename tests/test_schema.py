"""docs/matrix.schema.json (for editors) agrees with the loader on real and broken matrices."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml
from hypothesis import given, settings

from conftest import ROOT, SEED
from fwmatrix.errors import MatrixError
from fwmatrix.matrix.loader import load_matrix
from strategies import matrix_yaml
from test_loader import BASE, PUBLIC_LINE

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


MANAGEMENT = PUBLIC_LINE + "    management:\n      - {from: [lan, bal], to: edge.public, service: tcp/22, note: admins}\n      - {from: dmz, services: [tcp/22, https]}\n"


def test_schema_takes_management_accesses(write_matrix) -> None:
    text = BASE.replace(PUBLIC_LINE, MANAGEMENT)
    VALIDATOR.validate(yaml.safe_load(text))
    assert len(load_matrix(write_matrix(text)).firewalls["edge"].management) == 2


@pytest.mark.parametrize(
    "change",
    [
        ("{from: dmz, services: [tcp/22, https]}", "{from: dmz, services: [tcp/22], service: https}"),
        ("{from: dmz, services: [tcp/22, https]}", "{from: dmz}"),
        ("{from: dmz, services: [tcp/22, https]}", "{services: [tcp/22, https]}"),
        ("{from: dmz, services: [tcp/22, https]}", "{from: dmz, port: 22, service: tcp/22}"),
        ("{from: dmz, services: [tcp/22, https]}", "dmz"),
        ("management:\n      - {from: [lan, bal], to: edge.public, service: tcp/22, note: admins}\n      - {from: dmz, services: [tcp/22, https]}\n",
         "management: []\n"),
    ],
)
def test_schema_refuses_bad_management(write_matrix, change: tuple[str, str]) -> None:
    text = BASE.replace(PUBLIC_LINE, MANAGEMENT).replace(*change)
    assert change[0] in BASE.replace(PUBLIC_LINE, MANAGEMENT)
    assert not VALIDATOR.is_valid(yaml.safe_load(text))
    with pytest.raises(MatrixError):
        load_matrix(write_matrix(text))
