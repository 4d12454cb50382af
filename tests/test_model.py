"""The matrix's model: quick_init's constructors behave as dataclasses' do, and the resolver's
memos belong to one matrix."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import SEED
from fwmatrix.compile.intent import Flow
from fwmatrix.matrix.loader import load_matrix
from fwmatrix.matrix.model import Opening, Where, quick_init
from fwmatrix.matrix.resolve import Endpoint, Resolver


def test_quick_init_takes_what_the_dataclass_takes() -> None:
    where = Where("m.yaml", 3)
    row = Opening(1, "web", ("lan",), ("dmz",), ("https",), None, "", where)
    assert (row.index, row.name, row.where, row.snat, row.meta, row.log) == (1, "web", where, None, None, False)
    assert row.field_lines == {}
    assert row.field_lines is not Opening(1, "web", ("lan",), ("dmz",), ("https",), None, "", where).field_lines
    named = Opening(index=2, name="x", sources=("a",), destinations=("b",), services=("c",), nat=None, note="n",
                    where=where, field_lines={"from": 4}, log=True)
    assert named.field_lines == {"from": 4} and named.log
    with pytest.raises(TypeError):
        Opening(1, "web")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Where("m.yaml", 3, 4)  # type: ignore[call-arg]


def test_quick_init_keeps_the_class_frozen_and_its_equality() -> None:
    where = Where("m.yaml", 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        where.line = 4  # type: ignore[misc]
    assert where == Where("m.yaml", 3) and hash(where) == hash(Where("m.yaml", 3)) and where != Where("m.yaml", 4)
    assert repr(where) == "Where(file='m.yaml', line=3)"
    assert dataclasses.replace(where, line=9) == Where("m.yaml", 9)
    assert list(vars(Endpoint(()))) == [f.name for f in dataclasses.fields(Endpoint)]
    assert Flow.__init__.__qualname__ == "Flow.__init__"


def test_quick_init_refuses_what_it_does_not_write() -> None:
    @dataclasses.dataclass(frozen=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            assert self.value > 0

    with pytest.raises(TypeError, match="needs the dataclass's own __init__"):
        quick_init(Checked)


def test_resolvers_of_one_matrix_share_what_they_resolved() -> None:
    matrix = load_matrix(str(SEED))  # load resolves every name of every row
    ref = matrix.openings[0].sources[0]
    first = Resolver(matrix).endpoint(ref, matrix.openings[0].where)
    assert Resolver(matrix).endpoint(ref, matrix.openings[0].where) is first
    fresh = dataclasses.replace(matrix)  # a new matrix starts with nothing resolved
    assert fresh.resolved == {} and fresh == matrix
    assert Resolver(fresh).endpoint(ref, matrix.openings[0].where) == first
    assert Resolver(fresh).endpoint(ref, matrix.openings[0].where) is not first
