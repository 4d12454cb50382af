"""The match extensions of a rule (`-m NAME ...`) as terms, and the option values iptables-restore refuses.

Each handler (MATCH_HANDLERS) appends the terms of one option of its match and says
whether it could; the options none could read become one Unmodelled naming the
match (_read_module). VALUE_CHECKS says which of the reader's checks an option's
value must pass, as iptables-restore would; _check_values refuses a rule's first
value that fails, before the rule is read."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from itertools import product
from typing import TYPE_CHECKING

from fwmatrix.backends.iptables.names import CT_STATES, CT_STATUS
from fwmatrix.backends.iptables.reader import (
    PORT_MATCHES,
    _Block,
    _c_number,
    _Malformed,
    _network,
    _not_bits,
    _not_ct_port,
    _not_host,
    _not_mac,
    _not_mark,
    _not_nat_ports,
    _not_snat,
    _NotModelled,
    _Option,
    _port_range,
    _proto,
    _range,
)
from fwmatrix.backends.iptables.terms import Cond, Term, _AnyOf, _match
from fwmatrix.errors import did_you_mean
from fwmatrix.intervals import mac_address
from fwmatrix.ir import ADDRESS_TYPES, TCP_FLAG_BITS, Match, TcpFlags, Unmodelled, addr_field
from fwmatrix.matrix.model import PortRange

if TYPE_CHECKING:  # the handlers' first argument; parse.py imports this module
    from fwmatrix.backends.iptables.parse import _SectionParser

STATE_WORDS = {s.upper(): s for s in CT_STATES}
# --ctstate SNAT/DNAT and --ctstatus X test ct status bits
STATUS_WORDS = {option: {word: status for status, (opt, word) in CT_STATUS.items() if opt == option} for option in ("--ctstate", "--ctstatus")}
PORT_OPTIONS = {"--sport": "sport", "--source-port": "sport", "--dport": "dport", "--destination-port": "dport"}
MULTIPORT_OPTIONS = {"--sports": "sport", "--source-ports": "sport", "--dports": "dport", "--destination-ports": "dport"}
SET_NO_EFFECT = {"--return-nomatch", "--update-counters", "--update-subcounters"}  # see _set


def _read_module(parser: _SectionParser, block: _Block) -> list[Term]:
    """A match's options as terms; the options the IR cannot express (or all of them, for a
    match parsed nowhere here) become one Unmodelled naming the match and those options."""
    if block.name in EXTENSION_HEADERS:  # whatever its options test, only packets with the header match
        return [_match("exthdr", [block.name])]
    handler = MATCH_HANDLERS.get(block.name)
    if handler is None or (block.name in WHOLE_BLOCK_OPTIONS and any(o.name in WHOLE_BLOCK_OPTIONS[block.name] for o in block.options)):
        return [Unmodelled(block.shown())]
    if block.name == "conntrack":
        tuple_terms = _conntrack_tuple(parser, block)
        if tuple_terms is not None:
            return tuple_terms
    terms: list[Term] = []
    leftover = [o for o in block.options if not handler(parser, block.name, o, terms)]
    return terms + ([Unmodelled(block.shown(leftover))] if leftover else [])


# Each handler appends the terms of one option and says whether it could.


def _ports(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    terms.append(_match("l4proto", [PORT_MATCHES[name]]))  # -m tcp only matches TCP packets
    if name == "tcp" and o.name in ("--syn", "--tcp-flags"):
        terms.append(_match("tcp.flags", [SYN_ONLY if o.name == "--syn" else _tcp_flags(o.values[0].text, o.values[1].text)], o.negate))
        return True
    if o.name not in PORT_OPTIONS:
        return False
    terms.append(_match(PORT_OPTIONS[o.name], [_port_range(o.value, name)], o.negate))
    return True


def _multiport(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    ports = [_port_range(p) for p in o.value.split(",")]
    if o.name in MULTIPORT_OPTIONS:
        terms.append(_match(MULTIPORT_OPTIONS[o.name], ports, o.negate))
    elif o.negate:  # --ports: the source or the destination port; negated: neither
        terms += [_match("sport", ports, True), _match("dport", ports, True)]
    else:
        terms.append(_AnyOf(((_match("dport", ports),), (_match("sport", ports),))))
    return True


def _conntrack(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    if o.name not in ("--state", "--ctstate", "--ctstatus"):
        return False
    words = o.value.split(",")
    states = STATE_WORDS if o.name != "--ctstatus" else {}
    statuses = STATUS_WORDS.get(o.name, {})
    if o.name == "--ctstatus" and "NONE" in words:
        return False  # no status bit set: not a value of ct.status
    unknown = [w for w in words if w not in states and w not in statuses]
    if unknown:
        raise _Malformed(f"{name} {o.name}: unknown {'status' if o.name == '--ctstatus' else 'state'} {unknown[0]}")
    parts = [
        _match(f, values, o.negate)
        for f, values in (("ct.state", [states[w] for w in words if w in states]), ("ct.status", [statuses[w] for w in words if w in statuses]))
        if values
    ]
    # a state or a status bit; negated: neither
    terms += parts if o.negate or len(parts) == 1 else [_AnyOf(tuple((p,) for p in parts))]
    return True


def _iprange(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    addresses = _range(o.value)
    parser._seen(addresses.version)
    terms.append(_match(addr_field(addresses.version, "saddr" if o.name == "--src-range" else "daddr"), [addresses], o.negate))
    return True


def _set(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """--match-set NAME src,dst: a lookup in the ipset's members when the `ipset save` text is
    given, else Unmodelled. Options that only count packets have no effect; --return-nomatch
    only matters with nomatch members, which are not modelled."""
    if o.name in SET_NO_EFFECT:
        return True
    if o.name not in ("--match-set", "--set"):
        return False
    set_name, directions = o.values[0].text, o.values[1].text.split(",")
    if not set(directions) <= {"src", "dst"}:
        raise _Malformed(f"set {set_name}: directions must be src or dst, not {o.values[1].text}")
    try:
        set_id = parser._ipset(set_name, directions)
    except _NotModelled as exc:
        terms.append(Unmodelled(f"-m set {o.shown()} ({exc})"))
        return True
    terms.append(Match(parser.sets[set_id].key, set_name=set_id, negate=o.negate))
    return True


# -m conntrack options on the connection's original tuple (see _conntrack_tuple)
CT_TUPLE_OPTIONS = ("--ctproto", "--ctorigsrc", "--ctorigdst", "--ctorigsrcport", "--ctorigdstport")
PORT_TUPLE_PROTOCOLS = {6, 17, 33, 132, 136}  # their tuples hold ports (ICMP's: type, code and id)


def _conntrack_tuple(parser: _SectionParser, block: _Block) -> list[Term] | None:
    """`-m conntrack [--ctstate S] --ctproto P --ctorigdst A --ctorigdstport N ...`, as the kernel
    reads it (xt_conntrack): a packet without a connection (invalid, untracked) matches by
    its state alone when the match names states, else not at all; for the others the options
    test the connection's original tuple. For a NEW connection's first packet that tuple is the
    packet as it arrived: its protocol and source exactly, and its destination (address and
    port, for protocols whose tuples hold ports) where no DNAT translated it; on a translated
    one, and on established and related packets (replies, ICMP errors of another connection),
    they are judged both ways. None when the block is not of this kind, or has options this
    does not read."""
    names = [o.name for o in block.options]
    if not any(n in CT_TUPLE_OPTIONS for n in names) or set(names) - {*CT_TUPLE_OPTIONS, "--ctdir", "--state", "--ctstate"}:
        return None
    if len(names) != len(set(names)):
        return None
    options = {o.name: o for o in block.options}
    state = options.get("--ctstate") or options.get("--state")
    if state is not None and (state.negate or not set(state.value.split(",")) <= set(STATE_WORDS)):
        return None  # the virtual states SNAT/DNAT, or a negation: read option by option
    states = {STATE_WORDS[w] for w in state.value.split(",")} if state is not None else set(CT_STATES)
    proto = options.get("--ctproto")
    number = _proto(proto.value) if proto is not None else None
    ports_known = proto is not None and not proto.negate and number in PORT_TUPLE_PROTOCOLS
    text = f"-m conntrack {' '.join(o.shown() for o in block.options)}"
    # each entry: the alternatives (conjunctions) one option allows a NEW packet, before DNAT
    by_option: list[tuple[str, list[tuple[Cond, ...]]]] = []
    for o in block.options:
        if o.name == "--ctproto" and number is not None:
            by_option.append((o.name, [(_match("l4proto", [number], o.negate),)]))
        elif o.name in ("--ctorigsrc", "--ctorigdst"):
            net = _network(o.value)
            parser._seen(net.version)
            by_option.append((o.name, [(_match(addr_field(net.version, "saddr" if o.name == "--ctorigsrc" else "daddr"), [net], o.negate),)]))
        elif o.name == "--ctorigdstport":
            port = (_match("dport", [_port_range(o.value)], o.negate),)
            if ports_known:
                by_option.append((o.name, [port]))
            else:  # ICMP's tuple holds its type, code and id there
                in_ports = _match("l4proto", sorted(PORT_TUPLE_PROTOCOLS))
                by_option.append((o.name, [(in_ports, *port), (replace(in_ports, negate=True), Unmodelled(f"{text} (a protocol without ports)"))]))
        elif o.name == "--ctorigsrcport":
            by_option.append((o.name, [(Unmodelled(f"-m conntrack {o.shown()}"),)]))  # no source-port dimension
        elif o.name == "--ctdir" and o.value.upper() not in ("ORIGINAL", "REPLY"):
            raise _Malformed(f"conntrack --ctdir: ORIGINAL or REPLY, not {o.value}")
        elif o.name == "--ctdir" and (o.value.upper() == "REPLY") != o.negate:
            states.discard("new")  # a NEW connection's first packet goes the original way
    alternatives: list[tuple[Cond, ...]] = []
    if "new" in states:
        new = _match("ct.state", ["new"])
        untranslated = [alts for _, alts in by_option]
        kept = [alts for name, alts in by_option if name not in ("--ctorigdst", "--ctorigdstport")]  # what DNAT leaves alone
        if len(kept) < len(untranslated):  # the destination before DNAT: a translated packet's is not its own
            alternatives += [(new, _match("ct.status", ["dnat"], True), *_joined(combination)) for combination in product(*untranslated)]
            alternatives += [(new, _match("ct.status", ["dnat"]), *_joined(combination), Unmodelled(f"{text} (the destination before DNAT)"))
                             for combination in product(*kept)]
        else:
            alternatives += [(new, *_joined(combination)) for combination in product(*untranslated)]
    later = sorted(states & {"established", "related"})
    if later:
        alternatives.append((_match("ct.state", later), Unmodelled(f"{block.shown()} (on packets after a connection's first)")))
    without = sorted(states & {"invalid", "untracked"}) if state is not None else []
    if without:
        alternatives.append((_match("ct.state", without),))  # no connection: the state alone decides
    if not alternatives:
        return [_match("ct.state", [])]  # never matches
    return list(alternatives[0]) if len(alternatives) == 1 else [_AnyOf(tuple(alternatives))]


def _joined(combination: tuple[tuple[Cond, ...], ...]) -> tuple[Cond, ...]:
    return tuple(cond for part in combination for cond in part)


# --tcp-flags names (iptables' ALL is the six classic flags, as in libxt_tcp)
TCP_FLAG_NAMES = {name.upper(): bit for name, bit in TCP_FLAG_BITS.items() if name in ("fin", "syn", "rst", "psh", "ack", "urg")}
TCP_FLAG_NAMES |= {"ALL": 0x3F, "NONE": 0}
SYN_ONLY = TcpFlags(0x17, 0x02)  # --syn: --tcp-flags FIN,SYN,RST,ACK SYN


def _tcp_flags(mask: str, value: str) -> TcpFlags:
    def bits(words: str) -> int:
        total = 0
        for word in words.split(","):
            if word.upper() not in TCP_FLAG_NAMES:
                raise _Malformed(f"--tcp-flags: unknown flag {word}")
            total |= TCP_FLAG_NAMES[word.upper()]
        return total
    return TcpFlags(bits(mask), bits(value))


# --icmp-type names iptables knows (a type/code pair or a name that stands for one stays Unmodelled)
ICMP_TYPE_NAMES = {
    "echo-reply": 0, "pong": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
    "echo-request": 8, "ping": 8, "router-advertisement": 9, "router-solicitation": 10,
    "time-exceeded": 11, "ttl-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13,
    "timestamp-reply": 14, "address-mask-request": 17, "address-mask-reply": 18,
}


# --icmpv6-type names ip6tables knows (both spellings); a type/code pair stays Unmodelled
ICMPV6_TYPE_NAMES = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "ttl-exceeded": 3, "parameter-problem": 4,
    "echo-request": 128, "ping": 128, "echo-reply": 129, "pong": 129, "router-solicitation": 133, "router-advertisement": 134,
    "neighbour-solicitation": 135, "neighbor-solicitation": 135, "neighbour-advertisement": 136,
    "neighbor-advertisement": 136, "redirect": 137,
}


# names that stand for a type and a code (iptables' and ip6tables' own tables)
ICMP_CODE_NAMES = {
    "network-unreachable": (3, 0), "host-unreachable": (3, 1), "protocol-unreachable": (3, 2), "port-unreachable": (3, 3),
    "fragmentation-needed": (3, 4), "source-route-failed": (3, 5), "network-unknown": (3, 6), "host-unknown": (3, 7),
    "network-prohibited": (3, 9), "host-prohibited": (3, 10), "TOS-network-unreachable": (3, 11),
    "TOS-host-unreachable": (3, 12), "communication-prohibited": (3, 13), "host-precedence-violation": (3, 14),
    "precedence-cutoff": (3, 15), "network-redirect": (5, 0), "host-redirect": (5, 1), "TOS-network-redirect": (5, 2),
    "TOS-host-redirect": (5, 3), "ttl-zero-during-transit": (11, 0), "ttl-zero-during-reassembly": (11, 1),
    "ip-header-bad": (12, 0), "required-option-missing": (12, 1),
}
ICMPV6_CODE_NAMES = {
    "no-route": (1, 0), "communication-prohibited": (1, 1), "beyond-scope": (1, 2), "address-unreachable": (1, 3),
    "port-unreachable": (1, 4), "failed-policy": (1, 5), "reject-route": (1, 6), "ttl-zero-during-transit": (3, 0),
    "ttl-zero-during-reassembly": (3, 1), "bad-header": (4, 0), "unknown-header-type": (4, 1), "unknown-option": (4, 2),
}


# -m icmp / -m icmp6: the option, the protocol it implies, the IR fields, the type names and those with a code
ICMP_MATCHES = {
    "icmp": ("--icmp-type", 1, ("icmp.type", "icmp.code"), ICMP_TYPE_NAMES, ICMP_CODE_NAMES),
    "icmp6": ("--icmpv6-type", 58, ("icmpv6.type", "icmpv6.code"), ICMPV6_TYPE_NAMES, ICMPV6_CODE_NAMES),
}


def _icmp(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """`-m icmp --icmp-type T`, `-m icmp6 --icmpv6-type T`: the type; `T/C` or a name that
    stands for both (`port-unreachable`) is the type and code as one key (a negation is of
    both together); `any` is every ICMP packet."""
    option, protocol, fields, names, code_names = ICMP_MATCHES[name]
    terms.append(_match("l4proto", [protocol]))
    value = o.value.strip()
    if o.name == option and value == "any" and not o.negate:
        return True
    typed, slash, code = value.partition("/")
    number = int(typed) if typed.isdigit() else names.get(typed)
    pair = code_names.get(value) if not slash else (number, int(code)) if code.isdigit() and number is not None else None
    key = pair or (number,)
    if o.name != option or (slash and pair is None) or key[0] is None or not all(0 <= n <= 255 for n in key):  # type: ignore[operator]
        return False
    terms.append(Match(fields[:len(key)], (key,), negate=o.negate))
    return True


def _physdev(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """`-m physdev --physdev-is-bridged` (the evaluator judges it by the interfaces,
    evaluate/bridged.py); the bridge ports' names stay unmodelled."""
    if o.name != "--physdev-is-bridged":
        return False
    terms.append(_match("physdev.bridged", [1], o.negate))
    return True


def _mac(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """`-m mac [!] --mac-source M`: the link-layer source, judged as atoms of the in-interface
    (intervals.Interfaces). A value that is not a MAC address (published files hide theirs:
    `XX:XX:XX:XX:XX:XX`) was refused before (_check_values), as iptables-restore does."""
    if o.name != "--mac-source" or len(o.values) != 1:
        return False
    terms.append(_match("ether.saddr", [mac_address(o.value)], o.negate))
    return True


def _owner(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """`-m owner` options as tests on the packet's local socket (evaluate/sockets.py). Without
    a socket xt_owner holds when every option is negated: as the conjunction of these terms
    (`--suppl-groups`, never negated, needs a socket)."""
    terms.append(_match("socket", [" ".join(["-m owner", o.name, *(v.shown() for v in o.values)])], o.negate))
    return True


# matches on an IPv6 extension header: the kernel's never holds for a packet without it
# (ipv6_find_hdr finds none: false, negated options too)
EXTENSION_HEADERS = ("rt", "frag", "hbh", "dst")

# -m addrtype: the kernel's route types, as iptables names them
ADDRESS_TYPE_WORDS = {name.upper(): name for name in ADDRESS_TYPES}
JUDGED_TYPES = ("LOCAL", "MULTICAST", "BROADCAST")  # evaluate/addrtype.py
# options that change what a match's other options mean: the whole match is unmodelled
# (`--limit-iface-in`: the type as one interface sees it, where `! LOCAL` matches more)
WHOLE_BLOCK_OPTIONS = {"addrtype": ("--limit-iface-in", "--limit-iface-out")}


def _addrtype(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """`-m addrtype --dst-type LOCAL` as daddr.type (judged with the firewall's addresses,
    evaluate/addrtype.py), MULTICAST and BROADCAST likewise (by their fixed addresses); other
    types, or several at once, stay unmodelled."""
    words = o.value.upper().split(",")  # iptables compares the names case-insensitively
    unknown = [w for w in words if w not in ADDRESS_TYPE_WORDS]
    if unknown:
        raise _Malformed(f"addrtype {o.name}: unknown address type {unknown[0]}{did_you_mean(unknown[0], ADDRESS_TYPE_WORDS)}")
    if len(set(words)) != 1 or words[0] not in JUDGED_TYPES:
        return False  # other types, or several: the evaluator judges only these alone (unmodelled)
    terms.append(_match("daddr.type" if o.name == "--dst-type" else "saddr.type", [ADDRESS_TYPE_WORDS[words[0]]], o.negate))
    return True


# -m hl (IPv6 hop limit), -m ttl (IPv4 TTL): `--hl-eq N` (negated: not N), `--hl-lt N`, `--hl-gt N`
HOP_MATCHES = {"hl": "hoplimit", "ttl": "ttl"}


def _hop_limit(parser: _SectionParser, name: str, o: _Option, terms: list[Term]) -> bool:
    """The hop limit (TTL) as a range of values; the evaluator judges it both ways on forwarded
    packets and exactly on neighbour discovery (hop limit 255: evaluate/neighbours.py)."""
    relation = o.name.rpartition("-")[2]
    value = o.value.strip()
    if relation not in ("eq", "lt", "gt") or (o.negate and relation != "eq"):
        return False
    if not value.isdigit() or int(value) > 255:
        raise _Malformed(f"{name} {o.name}: {value!r} is not a hop limit (0-255)")
    n = int(value)
    low, high = {"eq": (n, n), "lt": (0, n - 1), "gt": (n + 1, 255)}[relation]
    terms.append(_match(HOP_MATCHES[name], [PortRange(low, high)] if low <= high else [], o.negate))
    return True


def _not_icmp_type(names: Iterable[str]) -> Callable[[str], str | None]:
    """--icmp-type as iptables reads it: `TYPE[/CODE]` (numbers to 255, as strtoul reads
    them), or a name or the start of exactly one name, in any case."""
    known = [name.lower() for name in names]

    def check(text: str) -> str | None:
        typed, slash, code = text.partition("/")
        numbers = [_c_number(typed), *([_c_number(code)] if slash else [])]
        if all(n is not None and n <= 255 for n in numbers):
            return None
        if not slash and typed and sum(name.startswith(typed.lower()) for name in known) == 1:
            return None
        return "an ICMP type (a name, TYPE or TYPE/CODE)"
    return check


# The option values iptables-restore refuses (reader's checks), by module and option.
VALUE_CHECKS: dict[tuple[str, str], Callable[[str], str | None]] = {
    ("mac", "--mac-source"): _not_mac,
    **{(module, "--mark"): _not_mark for module in ("mark", "connmark")},
    **{(target, option): _not_mark for target in ("MARK", "CONNMARK") for option in ("--set-mark", "--set-xmark")},
    **{("MARK", option): _not_bits for option in ("--and-mark", "--or-mark", "--xor-mark")},
    **{("CONNMARK", option): _not_bits for option in ("--and-mark", "--or-mark", "--xor-mark", "--nfmask", "--ctmask", "--mask")},
    **{("conntrack", f"--ct{way}{end}"): _not_host for way in ("orig", "repl") for end in ("src", "dst")},
    **{("conntrack", f"--ct{way}{end}port"): _not_ct_port for way in ("orig", "repl") for end in ("src", "dst")},
    **{(target, "--to-ports"): _not_nat_ports for target in ("MASQUERADE", "REDIRECT")},
    ("SNAT", "--to-source"): _not_snat,
    ("icmp", "--icmp-type"): _not_icmp_type(["any", *ICMP_TYPE_NAMES, *ICMP_CODE_NAMES]),  # ip6tables knows no `any`
    ("icmp6", "--icmpv6-type"): _not_icmp_type([*ICMPV6_TYPE_NAMES, *ICMPV6_CODE_NAMES]),
}


def _check_values(blocks: list[_Block]) -> None:
    """Raise _Malformed for the first option value iptables-restore would refuse."""
    for block in blocks:
        for o in block.options:
            check = VALUE_CHECKS.get((block.name, o.name))
            wanted = check(o.value) if check is not None and o.values else None
            if wanted is not None:
                raise _Malformed(f"{block.shown([o])}: not {wanted} (iptables-restore refuses it)")


MATCH_HANDLERS: dict[str, Callable[[_SectionParser, str, _Option, list[Term]], bool]] = {
    **{name: _ports for name in PORT_MATCHES},
    **{name: _icmp for name in ICMP_MATCHES},
    "multiport": _multiport,
    "conntrack": _conntrack,
    "state": _conntrack,
    "iprange": _iprange,
    "set": _set,
    "addrtype": _addrtype,
    "physdev": _physdev,
    "owner": _owner,
    "mac": _mac,
    **{name: _hop_limit for name in HOP_MATCHES},
}
