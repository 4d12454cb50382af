"""IPv6 neighbour discovery: the firewall's own ICMPv6 traffic that IPv6 forwarding needs.

A host reaches its IPv6 router only after the router answered its neighbour
solicitation, and the router sends to a host only after the host answered
its own: both arrive at the firewall itself (ingress, prerouting, input).
Where the ruleset certainly drops every advertisement arriving on an
interface, the firewall cannot send to the hosts behind it (neither forward
to them nor answer them); where it drops every solicitation (to the
solicited-node multicast group), those hosts cannot send to it (unless the
firewall happened to solicit them first). Tested with real packets in
tests/test_kernel_agreement.py.

ND messages are not tracked by conntrack (`ct state untracked`). A drop counts
only when it holds whatever constructs fwmatrix cannot model do: a claim that
IPv6 is dead must be certain (static neighbour entries would still make it
work; the finding says so).
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
NEIGHBOUR_SOLICITATION, NEIGHBOUR_ADVERTISEMENT = 135, 136
SOLICITED_NODES = IPNetwork("ff02::1:ff00:0/104")  # where a solicitation goes
ND_MESSAGES = {NEIGHBOUR_SOLICITATION: "solicitations", NEIGHBOUR_ADVERTISEMENT: "advertisements"}


def nd_blocked(ruleset: Ruleset, ifaces: Interfaces, interfaces: list[str]) -> dict[str, set[str]]:
    """The interfaces (of `interfaces`) where the ruleset certainly drops every neighbour
    solicitation, or every advertisement, arriving for the firewall itself: interface ->
    what it drops ("solicitations", "advertisements")."""
    found: dict[str, set[str]] = {}
    if not any(t.family in ("ip6", "inet", "netdev") for t in ruleset.tables):
        return found
    for icmp_type, what in ND_MESSAGES.items():
        dropped = _certain_drops(_for_icmpv6_type(ruleset, icmp_type), ifaces)
        if not dropped:
            continue
        full = Space.full(ifaces)
        dst = (addr_interval(SOLICITED_NODES),) if icmp_type == NEIGHBOUR_SOLICITATION else V6_ALL
        for name in interfaces:
            arriving = full.make(iif=ifaces.mask(name), src=V6_ALL, dst=dst, proto=((ICMPV6, ICMPV6),),
                                 dport=((NO_PORT, NO_PORT),), ct=ct_bits("untracked"))
            if not arriving.subtract(dropped):
                found.setdefault(name, set()).add(what)
    return found


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
