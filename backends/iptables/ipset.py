"""ipset, both ways: the sets fwmatrix writes (a large address group becomes a hash:net set
named after a hash of its members, filled by `ipset restore`), and `ipset save` output read
back, so that the audit can resolve `-m set --match-set NAME src,dst` lookups."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field


from fwmatrix.backends.iptables.names import SET_MAX, SET_PREFIX
from fwmatrix.backends.iptables.reader import PROTO_NUMBERS, _Malformed, _network, _NotModelled, _port, _range, _split_words
from fwmatrix.backends.iptables.safe import RenderError, _header
from fwmatrix.errors import BackendError
from fwmatrix.ir import Element, Ruleset, SetDef, addr_field
from fwmatrix.matrix.model import PortRange

# -- writing --------------------------------------------------------------------------


@dataclass
class _SetBook:
    """ipsets by name; a name carries a hash of the contents, so changed contents get a new set
    and the switch to it happens atomically with the iptables-restore that references it."""

    sets: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)  # name -> family, members' CIDRs

    def name_for(self, family: int, hint: str, members: tuple[str, ...]) -> str:
        """The set of these CIDRs (as text, in their numeric order)."""
        digest = hashlib.sha256(f"{family}|{','.join(members)}".encode()).hexdigest()[:8]
        prefix = SET_PREFIX[family]
        hint = re.sub(r"[^A-Za-z0-9_-]", "_", hint)[: SET_MAX - len(prefix) - 9]
        name = f"{prefix}{hint}-{digest}"
        if self.sets.setdefault(name, (family, members)) != (family, members):
            raise RenderError(f"ipset name clash for {name}")  # a 32-bit hash collision; practically never
        return name


def render_ipsets(ruleset: Ruleset, book: _SetBook) -> str:
    """`ipset restore` input: each set is filled under a temporary name and swapped in, so a set
    in use never shows half its members."""
    out = _header(ruleset, ["Load with `ipset restore` before the iptables files that use these sets."])
    for name in sorted(book.sets):
        family, members = book.sets[name]
        options = f"hash:net family {'inet' if family == 4 else 'inet6'} hashsize 1024 maxelem {max(65536, len(members))}"
        tmp = f"{SET_PREFIX[family]}tmp-{name[-8:]}"
        out += [f"create {name} {options} -exist", f"create {tmp} {options} -exist", f"flush {tmp}"]
        host = "/32" if family == 4 else "/128"  # a single address is written without its prefix length
        out += [f"add {tmp} {n.removesuffix(host)}" for n in members]
        out += [f"swap {tmp} {name}", f"destroy {tmp}"]
    return "\n".join(out) + "\n"


# -- reading `ipset save` ---------------------------------------------------------------

# ipset types by dimension: ip/net are addresses, port is [proto:]port, iface an interface
IPSET_DIMENSIONS = {"ip", "net", "port", "iface"}


@dataclass
class _Ipset:
    name: str
    type: str
    options: tuple[str, ...]
    line: int
    members: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # (element, its options)

    @property
    def family(self) -> int | None:
        options = list(self.options)
        if "family" in options[:-1]:
            return {"inet": 4, "inet6": 6}.get(options[options.index("family") + 1])
        return None


def _parse_ipsets(text: str, source: str) -> dict[str, _Ipset]:
    """`ipset save` output: `create NAME TYPE OPTIONS` and `add NAME ELEMENT OPTIONS` lines."""
    sets: dict[str, _Ipset] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            words = [w.text for w in _split_words(line)]
        except _Malformed as exc:
            raise BackendError(str(exc), file=source, line=lineno) from None
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "create" and len(words) >= 3:
            sets[words[1]] = _Ipset(words[1], words[2], tuple(words[3:]), lineno)
        elif words[0] == "add" and len(words) >= 3 and words[1] in sets:
            sets[words[1]].members.append((words[2], tuple(words[3:])))
        else:
            raise BackendError(f"not a line of `ipset save` output: {line.strip()[:80]!r}", file=source, line=lineno)
    return sets


def _ipset_def(ipset: _Ipset, directions: list[str], set_id: str) -> SetDef:
    """The IR set an ipset lookup `--match-set NAME src,dst` tests; _NotModelled when it has none."""
    kind, _, dims_text = ipset.type.partition(":")
    dims = dims_text.split(",")
    if kind not in ("hash", "bitmap") or not set(dims) <= IPSET_DIMENSIONS or ipset.type == "bitmap:port":
        raise _NotModelled(f"ipset {ipset.name} of type {ipset.type}")
    if len(directions) != len(dims):
        raise _NotModelled(f"ipset {ipset.name} ({ipset.type}) looked up with {len(directions)} direction(s)")
    if "netmask" in ipset.options or "bitmask" in ipset.options:
        raise _NotModelled(f"ipset {ipset.name} with a netmask: members stand for whole networks")
    version = ipset.family or 4
    fields: list[str] = []
    for dim, direction in zip(dims, directions):
        if dim in ("ip", "net"):
            fields.append(addr_field(version, "saddr" if direction == "src" else "daddr"))
        elif dim == "port":
            fields += ["l4proto", "sport" if direction == "src" else "dport"]
        else:
            fields.append("iif" if direction == "src" else "oif")
    elements = []
    for member, options in ipset.members:
        if "nomatch" in options:
            raise _NotModelled(f"ipset {ipset.name} with nomatch members (exceptions inside its networks)")
        parts = member.split(",")
        if len(parts) != len(dims):
            raise _NotModelled(f"ipset {ipset.name} member {member!r}")
        key: list = []
        for dim, part in zip(dims, parts):
            if dim in ("ip", "net"):
                address = _range(part) if "-" in part else _network(part)
                if address.version != version:
                    raise _NotModelled(f"ipset {ipset.name}: member {member!r} of the other address family")
                key.append(address)
            elif dim == "port":
                proto, _, port = part.rpartition(":") if ":" in part else ("tcp", "", part)
                if proto not in ("tcp", "udp", "sctp", "udplite"):
                    raise _NotModelled(f"ipset {ipset.name} member {member!r} (not a port protocol)")
                low, _, high = port.partition("-")
                key += [PROTO_NUMBERS[proto], PortRange(_port(low, proto), _port(high or low, proto))]
            elif part.startswith("physdev:"):
                raise _NotModelled(f"ipset {ipset.name} member {member!r} (a bridge port)")
            else:
                key.append(part)
        comment = options[options.index("comment") + 1] if "comment" in options[:-1] else ""
        elements.append(Element(tuple(key), comment=comment))
    return SetDef(set_id, tuple(fields), tuple(elements))
