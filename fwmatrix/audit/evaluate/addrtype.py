"""Whether an address is the firewall's own: `fib daddr type local`, `-m addrtype --dst-type LOCAL`.

The kernel answers from its local routing table: the firewall's own addresses, and
loopback (127.0.0.0/8, ::1). Docker and kube-proxy send every packet to a local address
through their DNAT chains this way. The audit knows the addresses the matrix gives the
firewall (its public addresses) and those the user names (`--local-address`); with the
latter the list is taken as complete.

Two other types need no routing table: the kernel calls every multicast address
(224.0.0.0/4, ff00::/8) 'multicast' and nothing else, and 255.255.255.255 and 0.0.0.0/8
'broadcast' before it looks anything up (inet_dev_addr_type); no IPv6 address is
'broadcast' (ip6tables refuses `--dst-type BROADCAST`). A directed broadcast
(192.0.2.255 of 192.0.2.0/24) is 'broadcast' only on a firewall with an address in that
network, which the audit does not know: such addresses stay both ways.

A rule with such a match is judged as parts with disjoint packets (as TCP flags are, see
matches.exact_parts): over the addresses certainly of the type, and those certainly not,
exactly; over the rest with the match judged both ways. Other address types
(unicast, ...), several at once, or a type limited to an interface stay unmodelled
(matches._unmodelled).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from netaddr import IPNetwork

from fwmatrix.ir import Match, Rule, Unmodelled, addr_field

TYPE_FIELDS = {"daddr.type": "daddr", "saddr.type": "saddr"}
LOOPBACK = (IPNetwork("127.0.0.0/8"), IPNetwork("::1/128"))
MULTICAST = (IPNetwork("224.0.0.0/4"), IPNetwork("ff00::/8"))
BROADCAST = (IPNetwork("255.255.255.255/32"), IPNetwork("0.0.0.0/8"))  # without a lookup; IPv6 has none
NOT_KNOWN = {
    "local": ("whether the {what} address is one of the firewall's own (`{field} local`): the matrix names only "
              "some of them; give them all with --local-address"),
    "broadcast": ("whether the {what} address is a directed broadcast of a network the firewall has an address in "
                  "(`{field} broadcast`): fwmatrix does not know the firewall's networks"),
}


@dataclass(frozen=True)
class OwnAddresses:
    """The firewall's own addresses as far as the audit knows them, loopback always
    included; `complete` when they are all (the user listed them)."""

    networks: tuple[IPNetwork, ...] = ()
    complete: bool = False

    def of(self, version: int) -> tuple[IPNetwork, ...]:
        return tuple(net for net in LOOPBACK + self.networks if net.version == version)


UNKNOWN = OwnAddresses()


def local_parts(rule: Rule, own: OwnAddresses) -> list[Rule]:
    """The rule as parts with disjoint packets, each without its `... type local`,
    `multicast` or `broadcast` matches (see the module docstring); the rule itself when it
    has none."""
    index = next((i for i, m in enumerate(rule.matches) if _is_type_test(m)), None)
    if index is None:
        return [rule]
    match = rule.matches[index]
    assert isinstance(match, Match)
    rest = rule.matches[:index] + rule.matches[index + 1:]
    which = TYPE_FIELDS[match.fields[0]]
    kind = match.values[0][0]
    parts: list[Rule] = []
    for version in (4, 6):
        known, complete = _of_type(kind, version, own)
        field = addr_field(version, which)
        if not match.negate and known:  # the addresses certainly of the type
            parts.append(replace(rule, matches=rest + (Match((field,), known),)))
        outside = Match((field,), known, negate=True) if known else Match(("nfproto",), ((version,),))  # of this family, not known to be
        if not complete:
            what = "destination" if which == "daddr" else "source"
            parts.append(replace(rule, matches=rest + (outside, Unmodelled(NOT_KNOWN[kind].format(what=what, field=match.fields[0])))))
        elif match.negate:  # every other address is certainly not of the type
            parts.append(replace(rule, matches=rest + (outside,)))
    return [part for p in parts for part in local_parts(p, own)]  # a second such match


def _of_type(kind: str, version: int, own: OwnAddresses) -> tuple[tuple[tuple[IPNetwork], ...], bool]:
    """The addresses of a family certainly of the type (as match values), and whether
    every other address certainly is not."""
    if kind == "local":
        return tuple((net,) for net in own.of(version)), own.complete
    nets = MULTICAST if kind == "multicast" else BROADCAST
    return tuple((net,) for net in nets if net.version == version), kind == "multicast" or version == 6


def _is_type_test(match: object) -> bool:
    """A plain `daddr.type`/`saddr.type` match on 'local', 'multicast' or 'broadcast' alone."""
    return (isinstance(match, Match) and len(match.fields) == 1 and match.fields[0] in TYPE_FIELDS
            and match.set_name is None and match.values in ((("local",),), (("multicast",),), (("broadcast",),)))
