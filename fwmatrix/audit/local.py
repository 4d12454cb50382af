"""The firewall's own services: its input chain judged as the forward chain is.

A firewall with openings to itself (`to: edge`, `to: edge.lan0`) is compiled with an input
chain, policy drop. The evaluator walks the forward hook, so the ruleset is handed to it with
its input chains standing on that hook (`as_forward`), and the firewall itself as the output
interface (`LOCAL`, a name no rule can match). What the intent asks for there is the
firewall's inputs (its own services and management accesses) and the essentials the compiled
chain accepts for any firewall: its loopback, and ICMPv6 (neighbour discovery, packet too
big). Findings, as for forwarding: `missing` (an own service, or the part of it, the input
chain does not accept) and `excess` (new connections to the firewall that no opening asks
for, with the rule accepting them). A firewall without own services is not judged here: its
input is not fwmatrix's (the anti-lockout check of `apply` still reads it, ops/management.py).
pf's `pass in ... to self` rules are read back into an input chain (backends/pf/readlocal.py)
when the firewall's addresses are known; else `not-audited`.
"""

from __future__ import annotations

from dataclasses import replace

from fwmatrix.audit.evaluate import DEFAULT_ACCEPT, evaluate, interfaces_of
from fwmatrix.audit.evaluate.effective import LOCAL
from fwmatrix.compile.intent import FirewallIntent, Flow, Input
from fwmatrix.audit.evaluate.matches import rule_space
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.audit.evaluate.sockets import unknown_socket
from fwmatrix.ir import NOT_LOCAL, Chain, Ruleset, Table
from fwmatrix.matrix.model import PROTOCOLS
from fwmatrix.space import V4_ALL, V6_ALL, Space, ct_bits

LOOPBACK = "lo"
PF_TABLE = "pf"  # the table backends/pf/convert.py reads a pf ruleset into
CT_NEW = ct_bits("new", translated=False)


def as_forward(ruleset: Ruleset, hook: str) -> Ruleset:
    """The ruleset with the filtering chains of `hook` standing on the forward hook, and the
    forward chains taken off it. Prerouting stays for packets that arrive (input); locally
    made packets (output) do not cross it."""
    kinds = ("filter",) if hook == "input" else ("filter", "route")
    keep_prerouting = hook == "input"

    def moved(chain: Chain) -> Chain:
        if chain.hook == hook and chain.type in kinds:
            return replace(chain, hook="forward", type="filter")
        if chain.hook == "forward" or (chain.hook == "prerouting" and not keep_prerouting):
            return replace(chain, hook=None)
        return chain

    def own(chain: Chain) -> Chain:  # the firewall's own packets may have a socket (sockets.py)
        return replace(chain, rules=tuple(unknown_socket(r) for r in chain.rules))

    return Ruleset(tuple(Table(t.family, t.name, tuple(own(moved(c)) for c in t.chains), t.sets) for t in ruleset.tables), ruleset.header)


def pf_input_unread(ruleset: Ruleset) -> bool:
    """A pf ruleset whose `pass in ... to self` rules could not be read back into an input
    chain (the firewall's addresses are not all known, readlocal.py)."""
    return any(t.name == PF_TABLE and not any(c.hook == "input" for c in t.chains) for t in ruleset.tables)


def input_findings(fw_intent: FirewallIntent, ruleset: Ruleset) -> list:
    """`missing` and `excess` findings on the firewall's own addresses (see the module's docstring)."""
    from fwmatrix.audit.findings import Finding, flow_space  # findings imports this module

    if not fw_intent.filters_input:
        return []
    if pf_input_unread(ruleset):
        names = ", ".join(dict.fromkeys(i.opening.name for i in fw_intent.inputs))
        fw = fw_intent.firewall
        lacking = [i for i in fw.interfaces if i not in fw.addresses]
        why = (f"the matrix gives no address to {', '.join(lacking)} (declare it, `{lacking[0]}: {{zone: {fw.interfaces[lacking[0]]}, "
               f"address: ...}}`, or give it with --pf-interface {lacking[0]}=ADDR/PREFIX)" if lacking else
               "the ruleset names interfaces the matrix does not (give their addresses with --pf-interface IF=ADDR/PREFIX)")
        return [Finding("not-audited", "the firewall's own services in a pf ruleset are audited only when all its addresses are known "
                        f"(`self`), and {why}, or all of them with --local-address: not audited ({names})")]
    fw = fw_intent.firewall
    ifaces = interfaces_of(ruleset, list(fw.interfaces) + [LOCAL, LOOPBACK])
    full = Space.full(ifaces)
    given = ruleset.families if ruleset.families is not None else frozenset({4, 6})  # an iptables-save covers its family only
    families = _union(full, [full.make(dst=V4_ALL if version == 4 else V6_ALL) for version in sorted(given)])
    not_local = _not_local(ruleset, ifaces)
    to_firewall = full.make(oif=ifaces.mask(LOCAL), ct=CT_NEW).intersect(families).subtract(not_local)
    inbound = evaluate(as_forward(ruleset, "input"), ifaces)
    accepted = Space(ifaces, [b for g in inbound.forwarded for b in g.space.boxes]).intersect(to_firewall)
    icmpv6 = PROTOCOLS["icmpv6"]
    essentials = full.make(iif=ifaces.mask(LOOPBACK)).union(full.make(dst=V6_ALL, proto=((icmpv6, icmpv6),))).union(
        full.make(dst=V4_ALL, proto=((icmpv6, icmpv6),)))  # `meta l4proto ipv6-icmp` takes protocol 58 in IPv4 too
    by_opening: dict[int, list[Input]] = {}
    for item in fw_intent.inputs:
        by_opening.setdefault(item.opening.index, []).append(item)
    spaces = {index: _union(full, [flow_space(full, _as_flow(i), CT_NEW) for i in items]).subtract(not_local) for index, items in by_opening.items()}
    intended = _union(full, list(spaces.values())).union(essentials.intersect(to_firewall))
    findings = []
    for index, space in sorted(spaces.items(), key=lambda kv: (kv[0] < 0, abs(kv[0]))):
        opening = by_opening[index][0].opening
        lost = space.subtract(accepted)
        if lost:
            what = "management access" if by_opening[index][0].management else "own service"
            whole = "is not accepted at all" if lost.equals(space) else "is only partly accepted; not accepted"
            findings.append(Finding("missing", f"the firewall's {what} '{opening.name}' {whole} by its input chain",
                                    opening if index > 0 else None, "", lost.regions()))
    reported = Space.empty(ifaces)
    for grant in inbound.forwarded + inbound.uncertain:
        extra = grant.space.intersect(to_firewall).subtract(intended).subtract(reported)
        if not extra:
            continue
        reported = reported.union(extra)
        rule = "" if grant.origin == DEFAULT_ACCEPT else grant.origin
        why = grant.origin if grant.origin == DEFAULT_ACCEPT else f"accepted by {grant.origin}"
        findings.append(Finding("excess", f"taken by the firewall itself, but no opening asks for it ({why})", None, rule, extra.regions()))
    return findings


def _not_local(ruleset: Ruleset, ifaces) -> Space:
    """What a pf ruleset's input chain says is not addressed to the firewall (readlocal.py):
    forwarded, it never reaches the input hook, so it is neither missing nor excess here."""
    reading = Reading(ruleset, ifaces, assume_unmodelled_match=True)
    out = Space.empty(ifaces)
    for table in ruleset.tables:
        for chain in table.chains:
            for rule in chain.rules if chain.hook == "input" else ():
                found = rule.comment == NOT_LOCAL and rule_space(reading, table, rule, rule.origin)
                if found and not found[1]:
                    out = out.union(found[0])
    return out


def _as_flow(item: Input) -> Flow:
    return Flow(item.opening, item.in_iface, LOCAL, item.family, item.sources, item.destinations, item.parts)


def _union(full: Space, spaces: list[Space]) -> Space:
    out = Space.empty(full.ifaces)
    for space in spaces:
        out = out.union(space)
    return out


__all__ = ["LOCAL", "as_forward", "input_findings"]
