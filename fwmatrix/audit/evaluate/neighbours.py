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
from fwmatrix.audit.evaluate.scopes import LINK_LOCAL
from fwmatrix.ir import Match, Rule, Ruleset, Unmodelled
from fwmatrix.space import OTHER, V4_ALL, V6_ALL, Interfaces, Remaining, Space, addr_interval, ct_bits, icmp_values, iv_and, iv_norm

ICMPV6 = 58
ND_HOP_LIMIT = 255
ROUTER_SOLICITATION, NEIGHBOUR_SOLICITATION, NEIGHBOUR_ADVERTISEMENT = 133, 135, 136
SOLICITED_NODES = IPNetwork("ff02::1:ff00:0/104")  # where a neighbour solicitation goes
ALL_ROUTERS = IPNetwork("ff02::2/128")  # where a router solicitation goes
ND_MESSAGES = {NEIGHBOUR_SOLICITATION: "solicitations", NEIGHBOUR_ADVERTISEMENT: "advertisements", ROUTER_SOLICITATION: "router solicitations"}
# Where each message goes: an advertisement answers the firewall's own solicitation, which
# it sends from its link-local address (the packet that needs the neighbour is not its own)
DESTINATIONS = {NEIGHBOUR_SOLICITATION: (addr_interval(SOLICITED_NODES),), NEIGHBOUR_ADVERTISEMENT: LINK_LOCAL,
                ROUTER_SOLICITATION: (addr_interval(ALL_ROUTERS),)}
# A message type counts as dropped on an interface when every one of them from a link-local
# address is: router solicitations and the answers of link-local next hops come from there.
# A host also solicits the firewall from the address of the packet it wants to send (Linux
# does), and an on-link host answers from the address solicited: drops of those sources
# make IPv6 from (solicitations) or to (advertisements) those addresses uncertain (`nd_doubtful`).


def nd_blocked(ruleset: Ruleset, ifaces: Interfaces, interfaces: list[str]) -> dict[str, set[str]]:
    """The interfaces (of `interfaces`) where the ruleset certainly drops every ND message of
    a type arriving for the firewall itself: interface -> those types ("solicitations", ...)."""
    found: dict[str, set[str]] = {}
    if not any(t.family in ("ip6", "inet", "netdev") for t in ruleset.tables):
        return found
    dropped = _certain_drops(_for_nd(ruleset), ifaces)  # the same for every message type: walked once
    if not dropped:
        return found
    for icmp_type, what in ND_MESSAGES.items():
        for name in interfaces:
            if not _arriving(ifaces, name, icmp_type, LINK_LOCAL).subtract(dropped):
                found.setdefault(name, set()).add(what)
    return found


def _arriving(ifaces: Interfaces, name: str, icmp_type: int, sources: tuple) -> Space:
    """ND messages of a type arriving on an interface from `sources`, for the firewall itself."""
    return Space.full(ifaces).make(iif=ifaces.mask(name), src=sources, dst=DESTINATIONS[icmp_type], proto=((ICMPV6, ICMPV6),),
                                   dport=icmp_values(icmp_type), ct=ct_bits("untracked"))


def nd_doubtful(ruleset: Ruleset, ifaces: Interfaces, blocked: dict[str, set[str]], interfaces: list[str]) -> list[tuple[str, str, Space]]:
    """IPv6 that neighbour discovery dropped from some addresses may stop, by interface (why, packets):
    from a host whose solicitations (sent from the packet's source) the firewall drops, and
    to an on-link host whose advertisements (sent from its own address) it drops. A message type
    already dropped on the whole interface is said by `nd_blocked`, not here."""
    if not any(t.family in ("ip6", "inet", "netdev") for t in ruleset.tables):
        return []
    full = Space.full(ifaces)
    out: list[tuple[str, str, Space]] = []
    dropped = _certain_drops(_for_nd(ruleset), ifaces)
    if not dropped:
        return out
    for icmp_type, field in ((NEIGHBOUR_SOLICITATION, "src"), (NEIGHBOUR_ADVERTISEMENT, "dst")):
        where, region = [], Space.empty(ifaces)
        for name in interfaces:
            if ND_MESSAGES[icmp_type] in blocked.get(name, set()):
                continue
            sources = _dropped_whatever(_arriving(ifaces, name, icmp_type, V6_ALL).intersect(dropped), "src", "dst", DESTINATIONS[icmp_type])
            if not sources:
                continue
            side = "iif" if field == "src" else "oif"
            if iv_and(sources, LINK_LOCAL):  # a next hop's own address: any packet through it
                sources = V6_ALL
            where.append(name)
            region = region.union(full.make(**{side: ifaces.mask(name), "src": V6_ALL, "dst": V6_ALL}).intersect(full.make(**{field: sources})))
        if where:
            direction = "from" if field == "src" else "to"
            out.append((f"neighbour {ND_MESSAGES[icmp_type]} arriving on {', '.join(where)}",
                        f"static neighbour entries, which IPv6 {direction} some addresses through {', '.join(where)} needs: the "
                        f"ruleset drops the ICMPv6 neighbour {ND_MESSAGES[icmp_type]} they send", region))
    return out


def nd_output_doubtful(ruleset: Ruleset, ifaces: Interfaces, interfaces: list[str]) -> list[tuple[str, str, Space]]:
    """IPv6 that the firewall's own neighbour discovery, dropped on its way out (output,
    postrouting, egress), may stop: its solicitations (from its link-local address to a
    solicited-node address) dropped on an interface leave it unable to learn the hosts there,
    so IPv6 out of it is uncertain; its advertisements dropped towards some addresses leave
    the hosts with those addresses unable to learn it, so IPv6 from them is uncertain (from
    every host when a link-local address is among them)."""
    if not any(t.family in ("ip6", "inet", "netdev") for t in ruleset.tables):
        return []
    full = Space.full(ifaces)
    out: list[tuple[str, str, Space]] = []
    dropped = _certain_output_drops(_for_nd(ruleset), ifaces)
    if not dropped:
        return out
    for icmp_type in (NEIGHBOUR_SOLICITATION, NEIGHBOUR_ADVERTISEMENT):
        where, region = [], Space.empty(ifaces)
        for name in interfaces:
            sent = full.make(iif=ifaces.sender(OTHER, None), oif=ifaces.mask(name), src=LINK_LOCAL, proto=((ICMPV6, ICMPV6),),
                             dport=icmp_values(icmp_type), ct=ct_bits("untracked"),
                             dst=(addr_interval(SOLICITED_NODES),) if icmp_type == NEIGHBOUR_SOLICITATION else V6_ALL)
            if icmp_type == NEIGHBOUR_SOLICITATION:
                if sent.subtract(dropped):
                    continue
                packets = full.make(oif=ifaces.mask(name), src=V6_ALL, dst=V6_ALL)
            else:
                hosts = _dropped_whatever(sent.intersect(dropped), "dst", "src", LINK_LOCAL)
                if not hosts:
                    continue
                packets = full.make(iif=ifaces.mask(name), src=V6_ALL if iv_and(hosts, LINK_LOCAL) else hosts, dst=V6_ALL)
            where.append(name)
            region = region.union(packets)
        if where:
            what, direction = ND_MESSAGES[icmp_type], "to" if icmp_type == NEIGHBOUR_SOLICITATION else "from"
            out.append((f"the firewall's neighbour {what} sent on {', '.join(where)}",
                        f"static neighbour entries, which IPv6 {direction} hosts through {', '.join(where)} needs: the ruleset "
                        f"drops the firewall's own ICMPv6 neighbour {what} there", region))
    return out


def _certain_output_drops(ruleset: Ruleset, ifaces: Interfaces) -> Space:
    """What output, postrouting and egress chains certainly drop of the firewall's own packets
    (they come from no interface, without a MAC: `OTHER` stands for that)."""
    reading = Reading(ruleset, ifaces, assume_unmodelled_match=True)
    drops = Drops()
    for hook in ("output", "postrouting", "egress"):
        for table, chain in reading.base_chains(hook, "filter"):
            seen, known = reading.scope(table, chain)
            drops.add(chain, seen, walk(reading, table, chain, Remaining(seen), depth=0), known)
    return drops.spaces(reading)[1]


def arp_dead(ruleset: Ruleset, ifaces: Interfaces, interfaces: list[str]) -> list[tuple[str, str, Space]]:
    """IPv4 through an interface where a netdev chain certainly drops ARP (only netdev tables
    see it: at ingress the hosts' requests and answers, at egress the firewall's): the firewall
    and the hosts there cannot learn each other's link-layer address. A rule matches ARP when
    it names nothing but interfaces (anything of IP, a protocol or a port fails on ARP)."""
    if not any(t.family == "netdev" for t in ruleset.tables):
        return []
    reading = Reading(_for_arp(ruleset), ifaces, assume_unmodelled_match=True)
    full = Space.full(ifaces)
    ipv4 = full.make(src=V4_ALL, dst=V4_ALL)
    out = []
    for hook, field in (("ingress", "iif"), ("egress", "oif")):
        drops = Drops()
        for table, chain in reading.base_chains(hook, "filter"):
            if table.family == "netdev":
                seen, known = reading.scope(table, chain)
                drops.add(chain, seen, walk(reading, table, chain, Remaining(seen), depth=0), known)
        dropped = drops.spaces(reading)[1]
        for name in interfaces:
            if dropped and not full.make(**{field: ifaces.mask(name)}).subtract(dropped):
                packets = ipv4.intersect(full.make(iif=ifaces.mask(name)).union(full.make(oif=ifaces.mask(name))))
                out.append((f"ARP on {name}", f"static ARP entries, which IPv4 through {name} needs: a netdev {hook} chain drops ARP there", packets))
    return out


def _for_arp(ruleset: Ruleset) -> Ruleset:
    """The netdev tables as they run for ARP: a rule or map that needs anything but interface
    names never matches."""
    def arp_rule(rule: Rule) -> Rule:
        keys = [f for m in rule.matches if isinstance(m, Match) for f in m.fields]
        keys += list(getattr(rule.action, "fields", ()) or ())
        if any(f not in ("iif", "oif") for f in keys):
            return replace(rule, action=None)
        return rule

    tables = [replace(t, chains=tuple(replace(c, rules=tuple(arp_rule(r) for r in c.rules)) for c in t.chains))
              for t in ruleset.tables if t.family == "netdev"]
    return replace(ruleset, tables=tuple(tables))


def _dropped_whatever(dropped: Space, field: str, other: str, others: tuple) -> tuple:
    """The addresses (`field`: src or dst) whose messages are dropped whatever their `other`
    address (of `others`)."""
    found = []
    for box in dropped.boxes:
        if iv_and(getattr(box, other), others) == iv_norm(others):
            found += list(getattr(box, field))
    return iv_norm(found) if found else ()


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


def _for_nd(ruleset: Ruleset) -> Ruleset:
    """The ruleset as it runs for ICMPv6 messages of one type: a match on the hop limit is
    true (left out) or false (the rule decides nothing); the type itself is a packet
    space's dimension, which the messages (`_arriving`) fix."""
    tables = []
    for table in ruleset.tables:
        chains = tuple(replace(c, rules=tuple(_rule_for_nd(r) for r in c.rules)) for c in table.chains)
        tables.append(replace(table, chains=chains))
    return replace(ruleset, tables=tuple(tables))


def _rule_for_nd(rule: Rule) -> Rule:
    """Also the hop limit: an ND message carries 255 (RFC 4861; the kernel discards the
    others), and no IPv4 TTL."""
    if not any(isinstance(m, Match) and ("hoplimit" in m.fields or "ttl" in m.fields) for m in rule.matches):
        return rule  # most rules: nothing to change
    matches = []
    for m in rule.matches:
        field = next((f for f in ("hoplimit", "ttl") if isinstance(m, Match) and f in m.fields), None)
        if field is None:
            matches.append(m)
        elif m.fields != (field,) or m.set_name is not None:
            matches.append(Unmodelled("a hop limit in a concatenation or a named set"))
        elif field == "ttl" or _holds(m, ND_HOP_LIMIT) == m.negate:
            return replace(rule, action=None)  # never matches this message
    return replace(rule, matches=tuple(matches))


def _holds(match: Match, value: int) -> bool:
    """Whether a plain match's values (numbers, or ranges of them) hold `value`."""
    return any(key[0] == value if isinstance(key[0], int) else key[0].low <= value <= key[0].high for key in match.values)
