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
from typing import Callable

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
        node = _compose_text(text, source.path)
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


def _compose_text(text: str, path: str) -> yaml.Node | None:
    parser = _Loader(text)
    try:
        return _compose_events(parser.get_event, path)
    finally:
        parser.dispose()


def _compose_events(get_event: Callable[[], yaml.Event | None], path: str) -> yaml.Node | None:
    """The one document's node tree, built from the parser's events with a stack of its own.

    PyYAML's composers recurse once a level: the C one crashes the process
    (SIGSEGV) on some tens of thousands of nested `[`. This one keeps its own
    stack, refuses nesting deeper than MAX_DEPTH where it happens, and refuses
    aliases at the alias, as fast as the C composer. The loop runs once an event
    (133k at 10,000 openings): what it does for a node is written out in it."""
    resolve = Resolver().resolve
    # What resolve() answers without asking it (a dictionary lookup and a call each): a quoted
    # scalar, or a plain one whose first character starts no implicit type (most: names, hosts),
    # is a string; a list or a mapping has its kind's tag (32,000 calls saved at 10,000
    # openings). True while no path resolver is added, which this module never does.
    implicit_starts = Resolver.yaml_implicit_resolvers
    assert not Resolver.yaml_path_resolvers
    string_tag, sequence_tag, mapping_tag = Resolver.DEFAULT_SCALAR_TAG, Resolver.DEFAULT_SEQUENCE_TAG, Resolver.DEFAULT_MAPPING_TAG
    plain_tags: dict[str, str] = {}  # a plain scalar's tag depends on its text alone: keys repeat on every row
    root: yaml.Node | None = None
    documents = 0
    anchors: dict[str, int] = {}  # name -> the line of its first anchor
    # the open collections: (node, and the collection outside it, as below); the innermost one's
    # value list's append, whether it is a sequence, and its pending mapping key
    open_nodes: list[tuple[yaml.Node, object, bool, yaml.Node | None]] = []
    append, in_sequence, key = None, False, None

    ScalarEvent, ScalarNode = yaml.ScalarEvent, yaml.ScalarNode
    SequenceNode, MappingNode = yaml.SequenceNode, yaml.MappingNode
    SequenceStartEvent, MappingStartEvent = yaml.SequenceStartEvent, yaml.MappingStartEvent
    SequenceEndEvent, MappingEndEvent, AliasEvent = yaml.SequenceEndEvent, yaml.MappingEndEvent, yaml.AliasEvent
    while (event := get_event()) is not None:
        kind = event.__class__
        if kind is ScalarEvent:
            if event.anchor is not None:
                anchors.setdefault(event.anchor, event.start_mark.line + 1)
            tag, value = event.tag, event.value
            if tag is None or tag == "!":
                implicit = event.implicit
                if not implicit[0] or (value and value[0] not in implicit_starts):
                    tag = string_tag
                else:
                    tag = plain_tags.get(value)
                    if tag is None:
                        tag = plain_tags[value] = resolve(ScalarNode, value, implicit)
            node = ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
        elif kind is SequenceStartEvent or kind is MappingStartEvent:
            if event.anchor is not None:
                anchors.setdefault(event.anchor, event.start_mark.line + 1)
            if len(open_nodes) >= MAX_DEPTH:
                raise MatrixError(f"the YAML nests deeper than {MAX_DEPTH} levels; a matrix needs a handful", path, event.start_mark.line + 1)
            is_sequence = kind is SequenceStartEvent
            tag = event.tag
            if tag is None or tag == "!":
                tag = sequence_tag if is_sequence else mapping_tag
            node = (SequenceNode if is_sequence else MappingNode)(tag, [], event.start_mark, None, event.flow_style)
        elif kind is SequenceEndEvent or kind is MappingEndEvent:
            closed, append, in_sequence, key = open_nodes.pop()
            closed.end_mark = event.end_mark
            continue
        elif kind is AliasEvent:
            # a walker would expand aliases: a small file of nested ones would blow up into billions of nodes
            line = anchors.get(event.anchor, event.start_mark.line + 1)
            raise MatrixError(f"YAML anchors and aliases (&name / *name) are not supported (*{event.anchor} on line {event.start_mark.line + 1})", path, line)
        else:
            if kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise MatrixError("the file holds several YAML documents (a '---' line): a matrix is one", path, event.start_mark.line + 1)
            continue
        # the node goes into the innermost open collection (a mapping takes key, then value)
        if append is None:
            root = node
        elif in_sequence:
            append(node)
        elif key is None:
            key = node
        else:
            append((key, node))
            key = None
        if kind is not ScalarEvent:  # it is the innermost open collection now
            open_nodes.append((node, append, in_sequence, key))
            append, in_sequence, key = node.value.append, is_sequence, None
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
