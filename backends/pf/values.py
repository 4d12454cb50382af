"""pf's words as values: addresses and networks, ports and services, protocols, icmp types,
interfaces' addresses as hosts, and a table's contents. The reader (reader.py) reads rules
with them; `--pf-table` files are read with them too.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

from netaddr import AddrFormatError, IPNetwork, IPSet

from fwmatrix.backends.pf.lexer import _Bad
from fwmatrix.backends.pf.syntax import _Host, _TableValue
from fwmatrix.matrix.model import PortRange

PF_PROTOCOLS: dict[str, int] = {
    "ip": 0, "hopopt": 0, "icmp": 1, "igmp": 2, "ggp": 3, "ipencap": 4, "ipip": 4, "tcp": 6, "egp": 8, "udp": 17,
    "ipv6": 41, "ipv6-route": 43, "ipv6-frag": 44, "rsvp": 46, "gre": 47, "esp": 50, "ah": 51, "ipv6-icmp": 58,
    "icmp6": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "eigrp": 88, "ospf": 89, "etherip": 97, "pim": 103, "ipcomp": 108,
    "vrrp": 112, "carp": 112, "l2tp": 115, "sctp": 132, "udplite": 136, "pfsync": 240, "dccp": 33,
}
# Service names as /etc/services gives them, for the ports pfctl prints by name. A name is here only
# where every BSD that lists it gives the same port: `mdns` is 5353 in FreeBSD's etc/services and in
# IANA's registry (macOS's list), absent from OpenBSD's (pfctl refuses it there). Not `imap4-ssl`
# (585 in IANA's list, 993 in others) nor `privoxy` (only in IANA's): the firewall's file decides.
PF_SERVICES: dict[str, int] = {
    "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "bootps": 67, "bootpc": 68,
    "tftp": 69, "www": 80, "http": 80, "kerberos": 88, "pop3": 110, "sunrpc": 111, "auth": 113, "ident": 113,
    "nntp": 119, "ntp": 123, "netbios-ns": 137, "netbios-dgm": 138, "netbios-ssn": 139, "imap": 143, "snmp": 161,
    "snmptrap": 162, "snmp-trap": 162, "bgp": 179, "ldap": 389, "https": 443, "microsoft-ds": 445, "isakmp": 500,
    "syslog": 514, "submission": 587, "ldaps": 636, "imaps": 993, "pop3s": 995, "openvpn": 1194, "ms-sql-s": 1433,
    "radius": 1812, "radius-acct": 1813, "nfs": 2049, "mysql": 3306, "ms-wbt-server": 3389, "ipsec-nat-t": 4500,
    "sip": 5060, "sip-tls": 5061, "mdns": 5353, "postgresql": 5432, "spamd": 8025, "http-alt": 8080,
}
# icmp-type and icmp6-type names as pfctl reads them (pfctl/pf_print_state.c's tables, after
# the ICMP and ICMPv6 registries)
PF_ICMP_TYPES: dict[str, int] = {
    "echorep": 0, "unreach": 3, "squench": 4, "redir": 5, "althost": 6, "echoreq": 8, "routeradv": 9, "routersol": 10,
    "timex": 11, "paramprob": 12, "timereq": 13, "timerep": 14, "inforeq": 15, "inforep": 16, "maskreq": 17,
    "maskrep": 18, "trace": 30, "dataconv": 31, "mobredir": 32, "ipv6-where": 33, "ipv6-here": 34, "mobregreq": 35,
    "mobregrep": 36, "skip": 39, "photuris": 40,
}
PF_ICMP6_TYPES: dict[str, int] = {
    "unreach": 1, "toobig": 2, "timex": 3, "paramprob": 4, "echoreq": 128, "echorep": 129, "groupqry": 130,
    "listqry": 130, "grouprep": 131, "listenrep": 131, "groupterm": 132, "listendone": 132, "routersol": 133,
    "routeradv": 134, "neighbrsol": 135, "neighbradv": 136, "redir": 137, "routrrenum": 138, "wrureq": 139,
    "fqdnreq": 139, "niqry": 139, "wrurep": 140, "fqdnrep": 140, "nirep": 140, "listenrepv2": 143, "mtraceresp": 200,
    "mtrace": 201,
}
# icmp-type's `code NAME` (pfctl's tables): the same name is a different code under each type
PF_ICMP_CODES: dict[tuple[int, str], int] = {
    **{(3, name): code for code, name in enumerate(
        ("net-unr", "host-unr", "proto-unr", "port-unr", "needfrag", "srcfail", "net-unk", "host-unk", "isolate",
         "net-prohib", "host-prohib", "net-tos", "host-tos", "filter-prohib", "host-preced", "cutoff-preced"))},
    (5, "redir-net"): 0, (5, "redir-host"): 1, (5, "redir-tos-net"): 2, (5, "redir-tos-host"): 3,
    (9, "normal-adv"): 0, (9, "common-adv"): 16, (11, "transit"): 0, (11, "reassemb"): 1,
    (12, "badhead"): 0, (12, "optmiss"): 1, (12, "badlen"): 2,
    (40, "unknown-ind"): 1, (40, "auth-fail"): 2, (40, "decrypt-fail"): 3,
}
PF_ICMP6_CODES: dict[tuple[int, str], int] = {
    (1, "noroute-unr"): 0, (1, "admin-unr"): 1, (1, "notnbr-unr"): 2, (1, "beyond-unr"): 2, (1, "addr-unr"): 3,
    (1, "port-unr"): 4, (3, "transit"): 0, (3, "reassemb"): 1, (4, "badhead"): 0, (4, "nxthdr"): 1,
    (137, "redironlink"): 0, (137, "redirrouter"): 1,
}
# An interface's (or group's) addresses as a host: `em0`, `em0:network`, `egress:0`, `em0:network:0`.
_IF_ADDRESS_RE = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)(?::(network|broadcast|peer|0))?(:0)?")

# -- values ---------------------------------------------------------------------------


def _net(word: str) -> IPNetwork | None:
    """An address or network as pf writes it (`10/8` is 10.0.0.0/8; host bits are masked)."""
    addr, _, bits = word.partition("/")
    if re.fullmatch(r"\d+(\.\d+){0,3}", addr):
        parts = addr.split(".")
        if len(parts) < 4:
            if not bits:
                return None
            addr = ".".join(parts + ["0"] * (4 - len(parts)))
    elif ":" not in addr or "%" in addr:
        return None
    try:
        net = IPNetwork(f"{addr}/{bits}" if bits else addr)
    except (AddrFormatError, ValueError, TypeError):
        return None
    return net.cidr


def _port_number(word: str) -> int | None:
    if word.isdigit():
        port = int(word)
        if port > 65535:
            raise _Bad(f"port {word} is out of range")
        return port
    return PF_SERVICES.get(word)


def _merge_ports(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    merged: list[PortRange] = []
    for rng in sorted(ranges, key=lambda r: (r.low, r.high)):
        if merged and rng.low <= merged[-1].high + 1:
            merged[-1] = PortRange(merged[-1].low, max(merged[-1].high, rng.high))
        else:
            merged.append(rng)
    return tuple(merged)


def _port_op(op: str, a: int, b: int | None = None) -> list[PortRange]:
    """pf.conf(5)'s port operators as ranges (as the kernel compares: port 0 included)."""
    spans = {
        "=": [(a, a)], "!=": [(0, a - 1), (a + 1, 65535)], "<": [(0, a - 1)], "<=": [(0, a)],
        ">": [(a + 1, 65535)], ">=": [(a, 65535)],
    }
    if b is not None:
        spans = {":": [(a, b)], "><": [(a + 1, b - 1)], "<>": [(0, a - 1), (b + 1, 65535)]}
    return [PortRange(low, high) for low, high in spans[op] if low <= high]


def _table_value(entries: Sequence[tuple[bool, str]]) -> _TableValue:
    """A table's addresses: the longest matching prefix decides, so a `!` entry cuts a hole.
    Interfaces and `self` among them are kept as hosts, resolved where the firewall's
    addresses are known (own.py); not under a `!` entry's hole, which is left unknown."""
    known: list[tuple[bool, IPNetwork]] = []
    unknown: list[str] = []
    hosts: list[_Host] = []
    negated = any(negate for negate, _ in entries)
    for negate, word in entries:
        net = _net(word)
        found = _IF_ADDRESS_RE.fullmatch(word) if net is None else None
        if net is not None:
            known.append((negate, net))
        elif (word == "self" or found is not None) and not negated:
            hosts.append(_Host(False, "self") if word == "self" else _iface_host(False, word, found, parenthesised=False))
        else:
            unknown.append(f"{'!' if negate else ''}{word} (an interface, host name or 'self': resolved on the firewall)")
    nets = {4: IPSet(), 6: IPSet()}
    for negate, net in sorted(known, key=lambda item: item[1].prefixlen):
        if negate:
            nets[net.version] -= IPSet([net])
        else:
            nets[net.version] |= IPSet([net])
    return _TableValue(nets, tuple(unknown), tuple(hosts))


def _iface_host(negate: bool, word: str, found: re.Match[str], parenthesised: bool) -> _Host:
    """`IF`, `IF:network`, `(IF:0)`, ...: an interface's (or group's) addresses. A bare name
    may also be a host name (`certain` False) unless the ruleset filters on it."""
    modifier = found.group(2) or ""
    if found.group(3) and modifier not in ("", "0"):
        modifier += ":0"
    elif found.group(3):
        modifier = "0"
    if parenthesised:
        what = "the addresses of an interface"
    else:
        what = "the addresses of an interface" if modifier else "an interface's addresses or a host name: resolved on the firewall"
    return _Host(negate, "iface", name=f"{'(' + word + ')' if parenthesised else word} ({what})", iface=found.group(1),
                 modifier=modifier, certain=parenthesised or bool(modifier))


def _icmp_types(names: Mapping[str, int], codes: Mapping[tuple[int, str], int], tokens: Sequence[str]) -> tuple[tuple[int, ...], ...] | None:
    """icmp-type's list (`echoreq`, `{ 1 2 echorep }`, `{ unreach code needfrag, 3 code 13 }`)
    as keys: (type,) or (type, code); None when a name is not known."""
    keys: list[tuple[int, ...]] = []
    at = 0
    while at < len(tokens):
        token = tokens[at]
        number = int(token) if token.isdigit() else names.get(token)
        if number is None or number > 255:
            return None
        at += 1
        if at < len(tokens) and tokens[at] == "code":
            if at + 1 == len(tokens):
                return None
            word = tokens[at + 1]
            code = int(word) if word.isdigit() else codes.get((number, word))
            if code is None or code > 255:
                return None
            keys.append((number, code))
            at += 2
        else:
            keys.append((number,))
    return tuple(dict.fromkeys(keys))


def _table_words(text: str) -> list[str]:
    """The words of a table's contents as `pfctl -T show` prints them, or a table file
    (`#` comments; `!10.0.1.0/24` is '!' and the address)."""
    words: list[str] = []
    for line in text.splitlines():
        for word in line.split("#", 1)[0].split():
            words += ["!", word[1:]] if word.startswith("!") and len(word) > 1 else [word]
    return words


def _table_entries(words: Sequence[str]) -> list[tuple[bool, str]]:
    entries: list[tuple[bool, str]] = []
    negate = False
    for word in words:
        if word == "!":
            negate = True
        elif word not in (",", "(", ")"):  # `(em0)` in a table: em0's addresses
            entries.append((negate, word))
            negate = False
    return entries
