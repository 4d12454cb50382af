"""IPv6 neighbour discovery: the firewall's own ICMPv6 traffic that IPv6 forwarding needs.

The firewall learns a host's link-layer address from the host's neighbour
advertisement (the answer to its own solicitation), and also from the
address a host puts in its own solicitations and router solicitations;
hosts learn the firewall's likewise. All of these arrive at the firewall
itself (ingress, prerouting, input). Where the ruleset certainly drops every
solicitation, advertisement and router solicitation arriving on an
interface, the firewall can learn no host there: IPv6 through it cannot
work. Where it drops only some of them, entries learned the other way work
until they must be confirmed: IPv6 there is unreliable. The lab showed both
(tests/test_kernel_trust_path.py): hosts send router solicitations when
their interface comes up, and a router takes their address from them.

ND messages are not tracked by conntrack (`ct state untracked`, tested). A
drop counts only when it holds whatever constructs fwmatrix cannot model do:
a claim that IPv6 fails must be certain (static neighbour entries would
still make it work; the finding says so).
"""

from __future__ import annotations

from dataclasses import replace

from netaddr import IPNetwork

from fwmatrix.audit.evaluate.chains import walk
from fwmatrix.audit.evaluate.prerouting import Drops, early_drops
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.ir import Match, Rule, Ruleset, Unmodelled
from fwmatrix.space import NO_PORT, V6_ALL, Interfaces, Remaining, Space, addr_interval, ct_bits

ICMPV6 = 58
ROUTER_SOLICITATION, NEIGHBOUR_SOLICITATION, NEIGHBOUR_ADVERTISEMENT = 133, 135, 136
SOLICITED_NODES = IPNetwork("ff02::1:ff00:0/104")  # where a neighbour solicitation goes
ALL_ROUTERS = IPNetwork("ff02::2/128")  # where a router solicitation goes
ND_MESSAGES = {NEIGHBOUR_SOLICITATION: "solicitations", NEIGHBOUR_ADVERTISEMENT: "advertisements", ROUTER_SOLICITATION: "router solicitations"}
DESTINATIONS = {NEIGHBOUR_SOLICITATION: (addr_interval(SOLICITED_NODES),), NEIGHBOUR_ADVERTISEMENT: V6_ALL, ROUTER_SOLICITATION: (addr_interval(ALL_ROUTERS),)}


def nd_blocked(ruleset: Ruleset, ifaces: Interfaces, interfaces: list[str]) -> dict[str, set[str]]:
    """The interfaces (of `interfaces`) where the ruleset certainly drops every ND message of
    a type arriving for the firewall itself: interface -> those types ("solicitations", ...)."""
    found: dict[str, set[str]] = {}
    if not any(t.family in ("ip6", "inet", "netdev") for t in ruleset.tables):
        return found
    for icmp_type, what in ND_MESSAGES.items():
        dropped = _certain_drops(_for_icmpv6_type(ruleset, icmp_type), ifaces)
        if not dropped:
            continue
        full = Space.full(ifaces)
        for name in interfaces:
            arriving = full.make(iif=ifaces.mask(name), src=V6_ALL, dst=DESTINATIONS[icmp_type], proto=((ICMPV6, ICMPV6),),
                                 dport=((NO_PORT, NO_PORT),), ct=ct_bits("untracked"))
            if not arriving.subtract(dropped):
                found.setdefault(name, set()).add(what)
    return found


def nd_failures(blocked: dict[str, set[str]], in_iface: str, out_iface: str) -> tuple[bool, list[str]]:
    """What dropped neighbour discovery does to forwarding from `in_iface` to `out_iface` (a
    connection needs both ways): whether it certainly fails, and why."""
    reasons, certain = [], False
    for iface in dict.fromkeys((in_iface, out_iface)):
        dropped = blocked.get(iface, set())
        if dropped == set(ND_MESSAGES.values()):
            certain = True
            reasons.append(f"it can learn the address of no host on {iface} (their solicitations, advertisements "
                           "and router solicitations are all dropped)")
        elif dropped - {"router solicitations"}:
            shown = " and ".join(sorted(dropped))
            reasons.append(f"neighbour discovery with the hosts on {iface} works only in part (their {shown} are dropped): "
                           "IPv6 through it fails whenever a neighbour entry must be learned or confirmed that way")
    return certain, reasons


def nd_dead(ifaces: Interfaces, blocked: dict[str, set[str]]) -> Space:
    """IPv6 packets in or out of an interface where the firewall can learn no neighbour."""
    full = Space.full(ifaces)
    dead = 0
    for name, dropped in blocked.items():
        if dropped == set(ND_MESSAGES.values()):
            dead |= ifaces.mask(name)
    if not dead:
        return Space.empty(ifaces)
    ipv6 = full.make(src=V6_ALL, dst=V6_ALL)
    return ipv6.intersect(full.make(iif=dead)).union(ipv6.intersect(full.make(oif=dead)))


def _certain_drops(ruleset: Ruleset, ifaces: Interfaces) -> Space:
    """What ingress, prerouting and input chains drop of the packets for the firewall, whatever
    unmodelled constructs do (its own reading: its notes are not the forward path's)."""
    reading = Reading(ruleset, ifaces, assume_unmodelled_match=True)
    drops: Drops = early_drops(reading)
    for table, chain in reading.base_chains("input", "filter"):
        seen, known = reading.scope(table, chain)
        drops.add(chain, seen, walk(reading, table, chain, Remaining(seen), depth=0), known)
    return drops.spaces(reading)[1]


def _for_icmpv6_type(ruleset: Ruleset, icmp_type: int) -> Ruleset:
    """The ruleset as it runs for ICMPv6 messages of one type: a match on the type is true
    (left out) or false (the rule decides nothing)."""
    tables = []
    for table in ruleset.tables:
        chains = tuple(replace(c, rules=tuple(_rule_for_type(r, icmp_type) for r in c.rules)) for c in table.chains)
        tables.append(replace(table, chains=chains))
    return replace(ruleset, tables=tuple(tables))


def _rule_for_type(rule: Rule, icmp_type: int) -> Rule:
    matches = []
    for m in rule.matches:
        if not (isinstance(m, Match) and "icmpv6.type" in m.fields):
            matches.append(m)
        elif m.fields != ("icmpv6.type",) or m.set_name is not None:
            matches.append(Unmodelled("an ICMPv6 type in a concatenation or a named set"))
        elif any(key[0] == icmp_type for key in m.values) == m.negate:
            return replace(rule, action=None)  # never matches this type
    return replace(rule, matches=tuple(matches))
