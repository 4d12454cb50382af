"""The pf backend's shared words: its dialects, pf's limits and keywords, and what
pf may be told as a name or as free text.

Every name written is validated against a strict pattern or refused, and
free text (comments, labels) keeps only a safe set of characters, so no
name in a matrix can end a comment or a string and start a rule.
"""

from __future__ import annotations

import re

from fwmatrix.errors import BackendError

DIALECTS = ("openbsd", "freebsd")
DEFAULT_DIALECT = "openbsd"
# the header comment the renderer writes, which the checker and the reader look for
_DIALECT_RE = re.compile(r"# pf dialect: (\w+)")

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmp6", 132: "sctp"}
PROTO_NUMBERS = {name: number for number, name in PROTO_NAMES.items()}

# pf limits (PF_TABLE_NAME_SIZE, PF_RULE_LABEL_SIZE, IFNAMSIZ), minus the NUL.
TABLE_NAME_MAX = 31
LABEL_MAX = 63
TAG_MAX = 63  # PF_TAG_NAME_SIZE
COMMENT_MAX = 160

# An interface name pf reads as one plain word: it starts with a letter and
# holds no character pfctl's lexer treats specially (quotes, braces, $, #, ...).
IFACE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,14}\Z")
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
HEX_RE = re.compile(r"[0-9a-f]{64}\Z")
# Free text keeps these characters only: no quote, backslash ('\' + newline
# continues a line, even a comment), '$' (macros; label macros) or '#'.
UNSAFE_TEXT_RE = re.compile(r"[^A-Za-z0-9 _.,:;/()+=@%<>-]")
UNSAFE_COMMENT_RE = re.compile(r"[^A-Za-z0-9 _.,:;/()+=@%<>'-]")

# pfctl's keywords (OpenBSD and FreeBSD): a macro, table or interface name
# equal to one of these would be read as the keyword, so they are refused.
PF_KEYWORDS = frozenset(
    """
    af-to all allow-opts altq anchor antispoof any bandwidth binat binat-anchor binat-to bitmask block
    block-policy bridge-to buckets cbq code codelq debug default delay divert-packet divert-reply divert-to
    dnpipe dnqueue drop dup-to ether fail-policy fairq fastroute file fingerprints flags floating flush
    for fragment from global group hfsc hogs hostid icmp-type icmp6-type if-bound in include inet inet6
    interval keep keepcounters l3 label limit linkshare load log loginterface map-e-portset match max
    max-mss max-pkt-rate max-src-conn max-src-conn-rate max-src-nodes max-src-states min-ttl modulate nat
    nat-anchor nat-to no no-df no-route no-sync on once optimization os out overload pass port prio
    priority priq probability proto qlimit queue quick random random-id rdomain rdr rdr-anchor rdr-to
    realtime reassemble received-on reply-to require-order return return-icmp return-icmp6 return-rst
    ridentifier round-robin route route-to rtable rule ruleset-optimization scrub self set set-tos skip
    sloppy source-hash source-track state state-defaults state-policy static-port sticky-address syncookies
    synproxy table tag tagged target tbrsize timeout to tos ttl upperlimit urpf-failed user
    """.split()
)


class RenderError(BackendError, ValueError):
    """The IR holds something pf cannot be told exactly (an sctp port, an interface name pf
    would misread, ...): refused with one sentence, never written approximately."""


# -- names and text -------------------------------------------------------------


def wildcard_child(name: str, wildcard: str) -> bool:
    """Whether anchor `name` is one pf evaluates for `anchor "X/*"`: directly below X (X/a, not X/a/b)."""
    parent = wildcard[:-1]
    return name != wildcard and name.startswith(parent) and "/" not in name[len(parent):]


def interface_name(name: str) -> str:
    """An interface name pf reads as an interface, or RenderError."""
    if not isinstance(name, str) or not IFACE_RE.match(name) or name in PF_KEYWORDS:
        raise RenderError(f"refusing to write {name!r} as a pf interface name")
    return name


def safe_text(text: str, limit: int, unsafe: re.Pattern[str] = UNSAFE_TEXT_RE) -> str:
    """Free text with every character outside a safe set replaced, cut to `limit`."""
    clean = unsafe.sub("_", text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def comment(text: str) -> str:
    return "# " + safe_text(text, COMMENT_MAX, UNSAFE_COMMENT_RE)


def label(text: str) -> str:
    return f'label "{safe_text(text, LABEL_MAX)}"'


class _Names:
    """Identifiers made from interface names: only [A-Za-z0-9_], unique, never a keyword."""

    def __init__(self, suffix: str = "", prefix: str = "") -> None:
        self.prefix, self.suffix = prefix, suffix
        self.by_source: dict[str, str] = {}
        self.used: set[str] = set()

    def get(self, source: str) -> str:
        if source not in self.by_source:
            base = self.prefix + re.sub(r"[^A-Za-z0-9_]", "_", source) + self.suffix
            name, n = base, 2
            while name in self.used or name in PF_KEYWORDS:
                name, n = f"{base}{n}", n + 1
            self.used.add(name)
            self.by_source[source] = name
        return self.by_source[source]
