"""A rule's target (`-j NAME ...`) as the IR's action: verdicts, jumps, NAT, notrack, or unmodelled.

A target that may change the packet's fate in ways the IR cannot say becomes an
UnmodelledAction; one that changes the packet but not its fate (MARK, TCPMSS) keeps
the rule with no action; LOG and its kin make no rule at all."""

from __future__ import annotations

from typing import TYPE_CHECKING

from netaddr import AddrFormatError, IPNetwork

from fwmatrix.backends.iptables.names import BUILTIN_CHAINS
from fwmatrix.backends.iptables.reader import VERDICT_TARGETS, _Block, _is_service, _Malformed, _NotModelled, _port, _port_range, _range
from fwmatrix.ir import Action, Dnat, Jump, Masquerade, Notrack, Redirect, Snat, UnmodelledAction, Verdict, packet_copies
from fwmatrix.matrix.model import PortRange

if TYPE_CHECKING:  # _read_target's first argument; parse.py imports this module
    from fwmatrix.backends.iptables.parse import _SectionParser

LOG_TARGETS = {"LOG", "NFLOG", "ULOG", "TRACE", "AUDIT"}  # a rule with one of these decides and changes nothing
# Targets that change the packet or its connection but never whether it is forwarded
# (source NAT happens after the forward decision; marks only matter to -m mark, which is Unmodelled).
NO_VERDICT_TARGETS = {
    "SNAT", "MASQUERADE", "SNPT", "MARK", "CONNMARK", "TCPMSS", "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "ECN",
    "SECMARK", "CONNSECMARK", "CHECKSUM", "SET", "IDLETIMER", "LED", "RATEEST", "HMARK", "TCPOPTSTRIP",
}
# Targets that may change the packet's fate in ways the IR cannot say.
FATE_TARGETS = {
    "REDIRECT": "sends the packet to the firewall itself",
    "TPROXY": "sends the packet to a local socket",
    "NFQUEUE": "a userspace program decides the verdict",
    "QUEUE": "a userspace program decides the verdict",
    "CT": "changes connection tracking (a helper, a zone; alone, --notrack is modelled)",
    "SYNPROXY": "answers the TCP handshake itself",
    "NETMAP": "maps addresses prefix to prefix",
    "DNPT": "translates the destination prefix",
    "CLUSTERIP": "answers for a cluster address",
}


def _read_target(parser: _SectionParser, block: _Block | None) -> tuple[Action, str] | None:
    """The rule's action and a note for its comment; None for a rule with no effect."""
    if block is None:
        return None  # counts packets, nothing else
    name = block.name
    builtins = BUILTIN_CHAINS[parser.section.table]
    if name in parser.state.chains and name not in builtins:
        if block.options:
            raise _Malformed(f"jump to chain {name} with options")
        return Jump(name, goto=block.goto), ""
    if block.goto or name in builtins:
        raise _Malformed(f"{'-g' if block.goto else '-j'} {name}: not a user chain of table {parser.section.table}")
    if name in VERDICT_TARGETS:
        for o in block.options:  # only REJECT --reject-with: which ICMP error says the family
            kind = o.value
            if kind.startswith("icmp6-") or kind in ("no-route", "adm-prohibited", "addr-unreach", "port-unreach"):
                parser._seen(6, f"reject type {kind}")
            elif kind.startswith("icmp-"):
                parser._seen(4, f"reject type {kind}")
        return Verdict(VERDICT_TARGETS[name]), ""
    if name == "DNAT":
        targets = [o for o in block.options if o.name == "--to-destination"]
        if len(targets) != 1:
            return UnmodelledAction(f"{block.shown()}: DNAT with {len(targets)} targets"), ""
        try:
            dnat = _dnat(targets[0].value)
        except _NotModelled as exc:
            return UnmodelledAction(f"{block.shown()}: {exc}"), ""
        parser._seen(dnat.family)
        return dnat, ""
    if name == "REDIRECT" and parser.section.table == "nat" and {o.name for o in block.options} <= {"--to-ports", "--random"}:
        return _redirect(block), ""
    if name == "NOTRACK" or (name == "CT" and [o.name for o in block.options] == ["--notrack"]):
        return Notrack(), ""
    if name in LOG_TARGETS:
        return None
    if name in ("SNAT", "MASQUERADE") and parser.section.table == "nat":
        translation = _source_nat(name, block)
        if isinstance(translation, Snat):
            parser._seen(translation.family)
        if translation is None:  # ends the nat chain as accept does, to an address not read (audit/snat.py says so)
            return UnmodelledAction(f"{block.shown()} (source NAT to a range: the address it picks is not read)"), ""
        return translation, ""  # ends the nat chain as accept does; audit/snat.py judges the address
    if name == "TEE":  # the original goes on, exact; the copy leaves towards the gateway
        return packet_copies(block.shown(), "each packet the rule matches"), ""
    if name in NO_VERDICT_TARGETS:
        return None, f"-j {name}: changes the packet, not its fate"
    why = FATE_TARGETS.get(name, "a target fwmatrix does not know")
    return UnmodelledAction(f"{block.shown()} ({why})"), ""


def _dnat(text: str) -> Dnat:
    """--to-destination A[-B][:P[-Q]]; IPv6 with a port: [A[-B]]:P[-Q]."""
    if text.startswith("["):
        addr, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise _Malformed(f"DNAT target {text!r} is not [address]:port")
        ports = rest[1:] if rest else ""
    elif text.count(":") > 1:  # IPv6 without a port
        addr, ports = text, ""
    else:
        addr, _, ports = text.partition(":")
    if not addr:
        raise _NotModelled(f"DNAT to port {ports} of the original destination")
    if "/" in ports:
        raise _NotModelled(f"DNAT with a base port ({text})")
    address = _range(addr)
    port = None
    if ports:
        low, _, high = ports.partition("-")
        port = PortRange(_port(low), _port(high or low))
        if port.low > port.high:
            raise _Malformed(f"DNAT target {text!r}: port range the wrong way round")
    target = IPNetwork(address[0]) if address.size == 1 else address
    return Dnat(address.version, target, port)


def _redirect(block: _Block) -> Redirect | UnmodelledAction:
    """`-j REDIRECT [--to-ports P[-Q]] [--random]`: to the firewall itself, never forwarded
    (the audit: prerouting.delivered_locally); ports written as strtoul reads them (`0x50`)
    are left unmodelled."""
    ports = [o.value for o in block.options if o.name == "--to-ports"]
    try:
        return Redirect(_port_range(ports[0] if _is_service(ports[0]) else ports[0].replace("-", ":")) if ports else None)
    except _Malformed:
        return UnmodelledAction(f"{block.shown()} (sends the packet to the firewall itself, to ports not read)")


SNAT_FLAGS = {"--random", "--random-fully", "--persistent"}  # how ports are picked: the address stays


def _source_nat(name: str, block: object) -> Snat | Masquerade | None:
    """`-j MASQUERADE`, `-j SNAT --to-source A` (one address, any ports and flags: the audit
    judges the address, audit/snat.py): the IR's source NAT; None for other forms (a range
    of addresses: which one a connection gets is not read)."""
    options = getattr(block, "options", ())
    if name == "MASQUERADE":
        return Masquerade() if all(o.name in ("--to-ports", *SNAT_FLAGS) for o in options) else None
    targets = [o for o in options if o.name == "--to-source"]
    if len(targets) != 1 or any(o.name not in SNAT_FLAGS for o in options if o is not targets[0]):
        return None
    text = targets[0].value
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with ports
    try:
        address = IPNetwork(text)
    except (AddrFormatError, ValueError):
        return None
    return Snat(address.version, address) if address.size == 1 and "/" not in text else None
