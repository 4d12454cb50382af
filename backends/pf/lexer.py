"""Reading pf text: the tokens of a pf.conf (or of what pfctl prints), its statements,
and the cursor the checker and the reader walk a statement with.

Two lexers: `_tokens` reads one line of the subset of pf.conf(5) the renderer
writes (a quoted string keeps its quotes), for the checker; `_lex` reads any
pf.conf as pfctl does (`\\` + newline joins lines, comments, quoted strings), for
the reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fwmatrix.errors import BackendError


class _Bad(Exception):
    """A problem in pf text, said in one sentence: the checker collects it, the reader
    raises it as a BackendError with the file and the line."""


# -- the checker's lexer: one line of what the renderer writes ----------------------

_TOKEN_RE = re.compile(r'\s*(?:(?P<quoted>"[^"\\\n]*")|(?P<table><[^<>\s]*>)|(?P<macro>\$[A-Za-z0-9_]+)|(?P<arrow>->)'
                       r"|(?P<punct>[{}=,!()])|(?P<word>[A-Za-z0-9_.:/*%+-]+))")


def _strip_comment(line: str) -> str:
    """The line without its comment: '#' outside double quotes runs to the end of the line."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted:
            return line[:i]
    return line


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise _Bad(f"unexpected character {text[pos:].lstrip()[:1]!r}")
        out.append(m.group(m.lastgroup))  # type: ignore[arg-type]
        pos = m.end()
    return out


# -- the reader's lexer: any pf.conf, or what pfctl prints; statements ---------------


@dataclass(frozen=True)
class _Tok:
    text: str
    line: int
    quoted: bool = False


_NL = "\n"
# A macro glued to what follows it (`$ext_if:network`) is one token: pfctl expands the macro
# in its input, and reads the result as one word.
_PF_TOKEN_RE = re.compile(r"!=|<=|>=|><|<>|->|<[^<>\s=!]+>|\$[A-Za-z_][A-Za-z0-9_]*[^\s{}(),=!<>\"'#\\]*|[{}(),=!<>]"
                          r"|[^\s{}(),=!<>\"'#\\$]+")
_SECTION_RE = re.compile(r"[A-Z][A-Z0-9 /&_-]*:")
_RULE_SECTIONS = frozenset({"FILTER RULES:", "TRANSLATION RULES:", "NAT RULES:", "RDR RULES:"})
_NOISE_RE = re.compile(r"(No ALTQ support in kernel|ALTQ related functions disabled)")
_RULE_NUMBER_RE = re.compile(r"\s*@\d+(\(\d+\))?\s+")


def _listing_text(text: str) -> str:
    """pfctl's listings as pf.conf: section headers and what is not a rule blanked, `@N` dropped
    (line numbers kept)."""
    lines = text.split("\n")
    rules = True
    for i, line in enumerate(lines):
        bare = line.strip()
        if _SECTION_RE.fullmatch(bare):
            rules = " ".join(bare.split()) in _RULE_SECTIONS
            lines[i] = ""
        elif not rules or _NOISE_RE.match(bare) or bare.startswith("["):
            lines[i] = ""  # states, counters, info, timeouts, limits; `-v` counter lines
        else:
            number = _RULE_NUMBER_RE.match(line)
            if number:
                lines[i] = line[number.end():]
    return "\n".join(lines)


def _lex(text: str, where: str, first_line: int = 1) -> list[_Tok]:
    """pfctl's lexer: `\\` + newline joins lines (in a comment too), `#` comments, quoted strings
    (in double or single quotes, over several lines)."""
    toks: list[_Tok] = []
    i, line, n = 0, first_line, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and text.startswith("\n", i + 1):
            i, line = i + 2, line + 1
        elif ch == "\n":
            toks.append(_Tok(_NL, line))
            i, line = i + 1, line + 1
        elif ch in " \t\r\f\v":
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                if text[i] == "\\" and text.startswith("\n", i + 1):
                    line += 1
                    i += 1
                i += 1
        elif ch in "\"'":
            i, line = _quoted(text, i, line, toks, where)
        else:
            m = _PF_TOKEN_RE.match(text, i)
            if m is None:
                raise BackendError(f"unexpected character {ch!r}", file=where, line=line)
            toks.append(_Tok(m.group(), line))
            i = m.end()
    return toks


def _quoted(text: str, start: int, line: int, toks: list[_Tok], where: str) -> tuple[int, int]:
    """A quoted string as pfctl reads it: it may span lines (a newline inside is dropped, as is
    `\\` + newline), and `\\` before the quote, a space or a tab keeps that character. Returns
    where the text goes on, and its line."""
    quote, first_line = text[start], line
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == quote:
            toks.append(_Tok("".join(out), first_line, quoted=True))
            return i + 1, line
        if ch == "\n":
            line += 1
        elif ch == "\\" and i + 1 < len(text) and text[i + 1] in (quote, " ", "\t", "\n"):
            i += 1
            if text[i] == "\n":
                line += 1
            else:
                out.append(text[i])
        else:
            out.append(ch)
        i += 1
    raise BackendError("unterminated quoted string", file=where, line=first_line)


def _statements(toks: list[_Tok], where: str) -> list[list[_Tok]]:
    """Statements end at a newline outside braces; inside braces newlines stay (anchor bodies)."""
    out: list[list[_Tok]] = []
    current: list[_Tok] = []
    depth = 0
    for tok in toks:
        if tok.text == _NL and not tok.quoted and depth == 0:
            if current:
                out.append(current)
                current = []
            continue
        if not tok.quoted and tok.text in ("{", "}"):
            depth += 1 if tok.text == "{" else -1
            if depth < 0:
                raise BackendError("'}' without '{'", file=where, line=tok.line)
        current.append(tok)
    if depth:
        raise BackendError("'{' is never closed", file=where, line=current[0].line)
    if current:
        out.append(current)
    return out


# -- the cursor: one statement, for the checker and the reader ------------------------


class _Cursor:
    """A cursor over one statement's tokens (macros expanded, newlines gone): the reader's,
    and the checker's (its tokens keep a quoted string's quotes, so none is a keyword)."""

    def __init__(self, toks: list[_Tok]) -> None:
        self.toks, self.i = toks, 0

    def peek(self, ahead: int = 0) -> str | None:
        j = self.i + ahead
        return self.toks[j].text if j < len(self.toks) else None

    def quoted(self) -> bool:
        return self.i < len(self.toks) and self.toks[self.i].quoted

    def word(self, *words: str) -> bool:
        """Take the next token if it is one of these keywords (a quoted string is never a keyword)."""
        if self.peek() in words and not self.quoted():
            self.i += 1
            return True
        return False

    def next(self, what: str) -> str:
        tok = self.peek()
        if tok is None:
            raise _Bad(f"missing {what}")
        self.i += 1
        return tok

    def done(self) -> bool:
        return self.i >= len(self.toks)

    def group(self, opening: str, closing: str) -> list[str]:
        """The tokens inside a balanced (...) or {...} that starts here."""
        if not self.word(opening):
            raise _Bad(f"expected '{opening}'")
        depth, out = 1, []
        while True:
            tok = self.next(f"'{closing}'")
            if tok == opening:
                depth += 1
            elif tok == closing:
                depth -= 1
                if depth == 0:
                    return out
            out.append(tok)

    def arg(self, what: str) -> str:
        """One argument: a token, or a (...) / {...} group, as text."""
        if self.peek() in ("(", "{") and not self.quoted():
            opening = self.peek()
            inner = self.group(opening, ")" if opening == "(" else "}")  # type: ignore[arg-type]
            return f"{opening} {' '.join(inner)} {')' if opening == '(' else '}'}"
        return self.next(what)

    def items(self, what: str, *, strict: bool = False) -> list[str]:
        """One item or a { list } (commas optional). Strict, as the checker reads what the
        renderer writes: no '{' or '!' inside the list, and a single item is no punctuation."""
        if self.word("{"):
            out = []
            while not self.word("}"):
                tok = self.next(f"'}}' closing the {what} list")
                if strict and tok in ("{", "!"):
                    raise _Bad(f"unexpected {tok!r} in a {what} list")
                if tok != ",":
                    out.append(tok)
            if not out:
                raise _Bad(f"empty {what} list")
            return out
        tok = self.next(what)
        if strict and tok in ("{", "}", ",", "!", "="):
            raise _Bad(f"expected {what}, found {tok!r}")
        return [tok]
