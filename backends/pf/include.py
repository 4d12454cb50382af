"""pf.conf's `include "FILE"`: where pfctl finds the file, and its text.

pfctl opens an include's name as it is written (pf.conf(5); parse.y's pushfile): an
absolute path as it is, a relative one from the directory pfctl runs in, in nested
includes too. fwmatrix reads a ruleset file as `cd DIR && pfctl -nf FILE` would, DIR
being the file's own directory (`targets.include_directory`), so `include "./x.conf"` is read from
beside the ruleset wherever fwmatrix is started.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field

from fwmatrix.backends.pf.lexer import _Bad
from fwmatrix.targets import MAX_RULESET_BYTES

MAX_INCLUDE_BYTES = MAX_RULESET_BYTES  # as for the ruleset itself
MAX_INCLUDE_DEPTH = 32  # far beyond any real pf.conf; deeper is refused before Python's stack is
_INCLUDE_LINE_RE = re.compile(r"""^[ \t]*include[ \t]+(["'])([^\n]*?)\1""", re.MULTILINE)  # pfctl quotes either way


@dataclass
class Includes:
    """The resolution of includes for one read: pfctl's directory, how the top file was named
    (included files are named the same way: relative to where fwmatrix runs, or absolute), and
    the files being read now, outermost first, for loops."""

    directory: str
    top: str
    files: set[str] = field(default_factory=set)  # the names of the files read (the top one, included ones)
    reading: list[str] = field(default_factory=list)  # real paths of the files open now
    trail: list[str] = field(default_factory=list)  # FILE:LINE of the include statements open now

    def __post_init__(self) -> None:
        self.files.add(self.top)
        self.reading.append(os.path.realpath(self.top))

    def path(self, name: str) -> str:
        return os.path.normpath(os.path.join(self.directory, name))  # an absolute name stays as it is

    def shown(self, name: str) -> str:
        """An included file as the user would reach it (the top file's way of being named)."""
        if os.path.isabs(name) or os.path.isabs(self.top):
            return self.path(name)
        return os.path.normpath(os.path.join(os.path.dirname(self.top), name))

    def enter(self, name: str, origin: str) -> str:
        """Check that reading `name` (included at `origin`) ends, and give its text."""
        path = self.path(name)
        chain = " -> ".join(self.trail + [origin])
        if os.path.realpath(path) in self.reading:
            raise _Bad(f'include "{name}": an include loop ({chain} -> {self.shown(name)})')
        if len(self.trail) >= MAX_INCLUDE_DEPTH:
            raise _Bad(f'include "{name}": includes nested more than {MAX_INCLUDE_DEPTH} deep ({self.trail[0]} -> ... -> {origin})')
        text = read_included(name, path)
        self.reading.append(os.path.realpath(path))
        self.trail.append(origin)
        return text

    def leave(self) -> None:
        self.reading.pop()
        self.trail.pop()

    def texts(self, text: str) -> list[str]:
        """The text of every file `text` includes, nested too, as far as each can be read: what
        tells the dialect when the ruleset file holds none of its rules (the reading itself
        refuses what cannot be read, at its place)."""
        out: list[str] = []
        seen: set[str] = set(self.reading)
        todo = [(text, 0)]
        while todo:
            current, depth = todo.pop()
            for _, name in _INCLUDE_LINE_RE.findall(current):
                path = os.path.realpath(self.path(name))
                if path in seen or depth >= MAX_INCLUDE_DEPTH:
                    continue
                seen.add(path)
                try:
                    out.append(read_included(name, path))
                except _Bad:
                    continue
                todo.append((out[-1], depth + 1))
        return out


def read_included(name: str, path: str) -> str:
    """An included file's text, or one sentence saying why it cannot be (never a traceback:
    a directory, a device or a FIFO, a binary file, a file too large)."""
    what = f'include "{name}"'
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise _Bad(f"{what}: is a directory ({path}); pfctl includes one file")
        if not stat.S_ISREG(info.st_mode):
            raise _Bad(f"{what}: not a regular file ({path})")
        if info.st_size > MAX_INCLUDE_BYTES:
            raise _Bad(f"{what}: {info.st_size} bytes, more than the {MAX_INCLUDE_BYTES} fwmatrix reads ({path})")
        with open(path, "rb") as handle:
            data = handle.read(MAX_INCLUDE_BYTES + 1)
    except FileNotFoundError:
        raise _Bad(f"{what}: no such file (looked for {path})") from None
    except OSError as exc:
        raise _Bad(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if b"\0" in data:
        raise _Bad(f"{what}: not a text file ({path} holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad(f"{what}: not UTF-8 text ({path})") from None
