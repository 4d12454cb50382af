"""Reading YAML as a tree of nodes that remember their line.

Every node keeps its start mark; the loader walks the nodes itself instead
of building plain dicts, so each error can name its line. The nodes are
composed here from the parser's events, without recursion, so that nesting
has a limit with a one-line error instead of a crash. Anchors and aliases
are refused: a walker would expand them, and a small file of nested aliases
would then blow up into billions of nodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import yaml
from yaml.resolver import Resolver

from fwmatrix.errors import MatrixError

try:  # the C parser is about 3x faster on large matrices
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 100  # nested lists and mappings; a matrix has about 6


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
        node = _compose_events(_events(text), source.path)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise MatrixError(f"YAML syntax error: {problem}", source.path, line) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other control bytes)
        line = source.data[: exc.position].count(b"\n") + 1  # libyaml counts bytes
        raise MatrixError(f"character U+{exc.character:04X} is not allowed in a matrix (a control character)", source.path, line) from None
    except yaml.YAMLError as exc:  # pragma: no cover - every error libyaml raises is one of the above
        raise MatrixError(f"YAML error: {exc}", source.path, 1) from None
    if node is None:
        raise MatrixError("the file is empty", source.path, 1)
    return node


def _events(text: str) -> Iterator[yaml.Event]:
    """The parser's events (what yaml.parse gives, one call a event rather than two)."""
    parser = _Loader(text)
    try:
        get_event = parser.get_event
        while (event := get_event()) is not None:
            yield event
    finally:
        parser.dispose()


def _compose_events(events: Iterable[yaml.Event], path: str) -> yaml.Node | None:
    """The one document's node tree, built from the parser's events with a stack of its own.

    PyYAML's composers recurse once a level: the C one crashes the process
    (SIGSEGV) on some tens of thousands of nested `[`. This one keeps its own
    stack, refuses nesting deeper than MAX_DEPTH where it happens, and refuses
    aliases at the alias, as fast as the C composer."""
    resolve = Resolver().resolve
    # a plain scalar whose first character starts no implicit type (most: names, hosts) is a
    # string, which is what resolve() answers for it after a dictionary lookup and a call
    implicit_starts = Resolver.yaml_implicit_resolvers
    string_tag = Resolver.DEFAULT_SCALAR_TAG
    root: yaml.Node | None = None
    documents = 0
    anchors: dict[str, int] = {}  # name -> the line of its first anchor
    open_nodes: list[tuple[yaml.Node, list[yaml.Node | None]]] = []  # collection, [its pending mapping key]

    def attach(node: yaml.Node) -> None:
        nonlocal root
        if not open_nodes:
            root = node
            return
        parent, pending = open_nodes[-1]
        if isinstance(parent, yaml.SequenceNode):
            parent.value.append(node)
        elif pending[0] is None:
            pending[0] = node
        else:
            parent.value.append((pending[0], node))
            pending[0] = None

    ScalarEvent, ScalarNode = yaml.ScalarEvent, yaml.ScalarNode
    for event in events:
        kind = event.__class__
        if kind is ScalarEvent:
            if event.anchor is not None:
                anchors.setdefault(event.anchor, event.start_mark.line + 1)
            tag, value = event.tag, event.value
            if tag is None or tag == "!":
                if value and value[0] not in implicit_starts and event.implicit[0]:
                    tag = string_tag
                else:
                    tag = resolve(ScalarNode, value, event.implicit)
            attach(ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style))
            continue
        if getattr(event, "anchor", None) is not None and kind is not yaml.AliasEvent:
            anchors.setdefault(event.anchor, event.start_mark.line + 1)
        if kind is yaml.SequenceStartEvent or kind is yaml.MappingStartEvent:
            if len(open_nodes) >= MAX_DEPTH:
                raise MatrixError(f"the YAML nests deeper than {MAX_DEPTH} levels; a matrix needs a handful", path, event.start_mark.line + 1)
            node_class = yaml.SequenceNode if kind is yaml.SequenceStartEvent else yaml.MappingNode
            tag = event.tag
            if tag is None or tag == "!":
                tag = resolve(node_class, None, event.implicit)
            node = node_class(tag, [], event.start_mark, None, flow_style=event.flow_style)
            attach(node)
            open_nodes.append((node, [None]))
        elif kind is yaml.SequenceEndEvent or kind is yaml.MappingEndEvent:
            open_nodes.pop()[0].end_mark = event.end_mark
        elif kind is yaml.AliasEvent:
            # a walker would expand aliases: a small file of nested ones would blow up into billions of nodes
            line = anchors.get(event.anchor, event.start_mark.line + 1)
            raise MatrixError(f"YAML anchors and aliases (&name / *name) are not supported (*{event.anchor} on line {event.start_mark.line + 1})", path, line)
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise MatrixError("the file holds several YAML documents (a '---' line): a matrix is one", path, event.start_mark.line + 1)
    return root


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
