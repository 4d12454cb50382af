"""`include:` of other matrix files: shared zones, hosts, groups and services kept
once and used by several matrices. Paths are relative to the including file; an
included file may include others. Every definition keeps its own file and line,
so errors point into the file that holds them; a cycle is refused at the
`include` line that closes it; a file reached twice (a diamond) is read once."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from fwmatrix.errors import MatrixError
from fwmatrix.matrix.yamlnodes import Source, compose

# what an included file may hold: the shared definitions (its own `fwmatrix` version too)
INCLUDED_KEYS = ("fwmatrix", "include", "zones", "hosts", "groups", "services")
MAX_INCLUDES = 64  # files one matrix may include, all levels together


@dataclass
class Part:
    """One file of a matrix: its typed node reader and its top-level sections."""

    reader: Any  # the loader's _Reader for this file
    sections: dict[str, tuple[yaml.Node, yaml.Node]]
    data: bytes

    def section(self, key: str) -> yaml.Node | None:
        return self.sections[key][1] if key in self.sections else None


def included_parts(part: Part, path: str, read: Callable[[str], Source], make_reader: Callable[[str], Any],
                   version: int) -> list[Part]:
    """The files `part` includes, each after the files it includes (so definitions come
    in the order they are included), each once."""
    seen: set[str] = set()
    out: list[Part] = []
    _walk(part, path, read, make_reader, version, (os.path.realpath(path),), seen, out)
    return out


def _walk(part: Part, path: str, read: Callable[[str], Source], make_reader: Callable[[str], Any], version: int,
          stack: tuple[str, ...], seen: set[str], out: list[Part]) -> None:
    node = part.section("include")
    if node is None:
        return
    reader = part.reader
    for text, item in reader.scalars(node, "'include'"):
        target = os.path.normpath(os.path.join(os.path.dirname(path), text))
        key = os.path.realpath(target)
        if key in stack:
            chain = " → ".join(os.path.relpath(p) for p in stack[stack.index(key):] + (key,))
            raise reader.fail(item, f"include cycle: {chain}")
        if key in seen:
            continue
        if len(seen) >= MAX_INCLUDES:
            raise reader.fail(item, f"more than {MAX_INCLUDES} included files")
        seen.add(key)
        try:
            source = read(target)
        except MatrixError as exc:
            raise reader.fail(item, f"cannot include '{text}': {exc.message}") from None
        sub_reader = make_reader(source.path)
        sub = Part(sub_reader, sub_reader.mapping(compose(source), f"the included file {text}", INCLUDED_KEYS), source.data)
        if "fwmatrix" in sub.sections:
            found = sub_reader.integer(sub.sections["fwmatrix"][1], "'fwmatrix' (the format version)")
            if found != version:
                raise sub_reader.fail(sub.sections["fwmatrix"][1], f"format version {found} is not supported (this fwmatrix reads version {version})")
        _walk(sub, target, read, make_reader, version, stack + (key,), seen, out)
        out.append(sub)
