"""Reading YAML as a tree of nodes that remember their line.

PyYAML's composer gives every node a start mark; the loader walks the nodes
itself instead of building plain dicts, so each error can name its line.
Anchors and aliases are refused: a walker would expand them, and a small
file of nested aliases would then blow up into billions of nodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml

from fwmatrix.errors import MatrixError

try:  # the C composer is about 3x faster on large matrices
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass
class Source:
    path: str
    data: bytes


def read_source(path: str) -> Source:
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise MatrixError(f"file is {size} bytes, more than the {MAX_FILE_BYTES} a matrix may have", path)
        with open(path, "rb") as handle:
            return Source(path, handle.read())
    except OSError as exc:
        raise MatrixError(f"cannot read: {exc.strerror or exc}", path) from None


def compose(source: Source) -> yaml.Node:
    try:
        text = source.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = source.data[: exc.start].count(b"\n") + 1
        raise MatrixError("not UTF-8 text", source.path, line) from None
    if not text.strip():
        raise MatrixError("the file is empty", source.path, 1)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise MatrixError(f"YAML syntax error: {problem}", source.path, line) from None
    except yaml.YAMLError as exc:  # e.g. several documents
        raise MatrixError(f"YAML error: {exc}", source.path, 1) from None
    if node is None:
        raise MatrixError("the file is empty", source.path, 1)
    if "&" in text or "*" in text:  # without either character the file can hold no alias
        _refuse_aliases(node, source.path)
    return node


def _refuse_aliases(root: yaml.Node, path: str) -> None:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise MatrixError("YAML anchors and aliases (&name / *name) are not supported", path, line_of(node))
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append(key)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def kind_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag.endswith(":null"):
        return "nothing (null)"
    if node.tag.endswith(":bool"):
        return "true/false"
    if node.tag.endswith(":int") or node.tag.endswith(":float"):
        return "a number"
    return "a string"
