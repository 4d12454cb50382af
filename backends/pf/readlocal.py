"""Reading the firewall's own services back from pf: an input chain (fwmatrix/audit/local.py
judges it as it judges nftables' and iptables').

pf has no input hook: a packet for the firewall meets the same in rules as a forwarded one,
and there is no out pass after them. So the input chain is the in chain read again, with the
firewall's own addresses as a destination (`self`, `(IF)`, an interface's name) standing for
those addresses instead of for nothing (a forwarded packet is never addressed to them), and
with first rules that drop what is not addressed to the firewall: such a packet never
reaches netfilter's input hook (it is forwarded). ICMPv6 to link-scope multicast (ff02::/16:
neighbour discovery) is for the firewall too; other multicast and broadcast is taken as not
for it (neither missing nor excess: not judged as the firewall's own traffic). It is read only when `self` is known (every
interface's addresses given, or all of the firewall's: docs/backend-pf.md) and some in rule
names the firewall's addresses as its destination (fwmatrix's own output always does: `block
drop in quick from any to self`); else there is no input chain, and the audit says the
firewall's own services are not audited. (With an input chain, the evaluator also sees
whether pf lets the firewall's neighbour discovery in, as it does for netfilter.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from netaddr import IPSet

from fwmatrix.backends.pf.syntax import _Rule
from fwmatrix.backends.pf.tags import _applies
from fwmatrix.ir import NOT_LOCAL, Match, Rule, Verdict, addr_field

if TYPE_CHECKING:
    from fwmatrix.backends.pf.convert import _Builder

LINK_MULTICAST = IPSet(["ff02::/16"])
ICMPV6 = 58


def input_chain(builder: _Builder) -> list[Rule] | None:
    """The input chain's rules, or None when the firewall's addresses are not all known or no
    in rule names them as its destination."""
    if not any(_names_the_firewall(rule) for rule in builder.rules):
        return None
    own = builder.reader.own.all(builder.reader.firewall_interfaces())
    if own is None:
        return None
    origin = f"{builder.reader.source}: not for the firewall itself (pf: not `self`)"
    head = []
    for family in (4, 6):
        mine = IPSet(n for n in own.iter_cidrs() if n.version == family) | (LINK_MULTICAST if family == 6 else IPSet())
        matches = (Match(("nfproto",), ((family,),)),) + ((Match((addr_field(family, "daddr"),), tuple((n,) for n in mine.iter_cidrs()), negate=True),)
                                                          if mine else ())
        head.append(Rule(matches, Verdict("drop"), NOT_LOCAL, origin))
    # neighbour discovery goes to link-scope multicast, and the firewall takes it (netfilter: its input hook)
    head.append(Rule((Match(("ip6.daddr",), tuple((n,) for n in LINK_MULTICAST.iter_cidrs())), Match(("l4proto",), ((ICMPV6,),), negate=True)),
                     Verdict("drop"), NOT_LOCAL, origin))
    builder._local = True
    try:
        return head + builder._filter_chain("in")
    finally:
        builder._local = False


def _names_the_firewall(rule: _Rule) -> bool:
    """A pass or block rule on the way in to `self` or an interface's own addresses."""
    return rule.action in ("pass", "block") and _applies(rule.parts, "in") and any(
        host.kind == "self" or (host.kind == "iface" and host.modifier in ("", "0")) for host in rule.dst or ())


__all__ = ["input_chain"]
