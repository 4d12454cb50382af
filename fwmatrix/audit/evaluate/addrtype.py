"""Whether an address is the firewall's own: `fib daddr type local`, `-m addrtype --dst-type LOCAL`.

The kernel answers from its local routing table: the firewall's own addresses, and
loopback (127.0.0.0/8, ::1). Docker and kube-proxy send every packet to a local address
through their DNAT chains this way. The audit knows the addresses the matrix gives the
firewall (its public addresses) and those the user names (`--local-address`); with the
latter the list is taken as complete.

A rule with such a match is judged as parts with disjoint packets (as TCP flags are, see
matches.exact_parts): over the known local addresses exactly; over the other addresses
exactly when the list is complete, else with the match judged both ways. Other address
types (broadcast, multicast, ...), several at once, or a type limited to an interface
stay unmodelled (matches._unmodelled).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from netaddr import IPNetwork

from fwmatrix.ir import Match, Rule, Unmodelled, addr_field

TYPE_FIELDS = {"daddr.type": "daddr", "saddr.type": "saddr"}
LOOPBACK = (IPNetwork("127.0.0.0/8"), IPNetwork("::1/128"))
NOT_KNOWN = ("whether the {what} address is one of the firewall's own (`{field} local`): the matrix names only "
             "some of them; give them all with --local-address")


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
    """The rule as parts with disjoint packets, each without its `... type local`
    matches (see the module docstring); the rule itself when it has none."""
    index = next((i for i, m in enumerate(rule.matches) if _is_local_test(m)), None)
    if index is None:
        return [rule]
    match = rule.matches[index]
    assert isinstance(match, Match)
    rest = rule.matches[:index] + rule.matches[index + 1:]
    which = TYPE_FIELDS[match.fields[0]]
    parts: list[Rule] = []
    for version in (4, 6):
        known = tuple((net,) for net in own.of(version))
        field = addr_field(version, which)
        if not match.negate:  # the known addresses are local
            parts.append(replace(rule, matches=rest + (Match((field,), known),)))
        outside = Match((field,), known, negate=True)  # of this family, not known to be local
        if not own.complete:
            what = "destination" if which == "daddr" else "source"
            parts.append(replace(rule, matches=rest + (outside, Unmodelled(NOT_KNOWN.format(what=what, field=match.fields[0])))))
        elif match.negate:  # a complete list: every other address is not local
            parts.append(replace(rule, matches=rest + (outside,)))
    return [part for p in parts for part in local_parts(p, own)]  # a second such match


def _is_local_test(match: object) -> bool:
    """A plain `daddr.type`/`saddr.type` match on 'local' alone."""
    return (isinstance(match, Match) and len(match.fields) == 1 and match.fields[0] in TYPE_FIELDS
            and match.set_name is None and match.values == (("local",),))
