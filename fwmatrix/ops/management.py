"""Management access to a firewall itself, and the anti-lockout check of `fwmatrix apply`.

A matrix says how administrators reach each firewall, under the firewall
(docs/matrix-format.md, "management"):

    firewalls:
      edge:
        interfaces: {wan0: internet, lan0: lan}
        management:
          - from: admins          # references, as in an opening's `from`
            service: ssh          # service names or literals (or `services:`)
            to: 10.20.0.1         # optional: the firewall's address they use (default: any)
            note: the jump hosts

The loader reads the key into `Firewall.management` (`model.Management`) and
refuses, with their line, names that do not resolve and sources whose zones
have no path to the firewall.

The check judges a ruleset (IR) the way the audit judges forwarding, with
the same evaluator: a management connection is kept when every packet of
it that arrives on the interface facing the administrators (new and
established) is accepted by the chains on the input hook, none of it is
translated away by a DNAT in prerouting, and the firewall's answers pass
the chains on the output hook. The evaluator walks the forward hook, so the
ruleset is handed to it with its input (or output) chains in the place of
the forward ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from netaddr import IPNetwork

from fwmatrix.audit.findings import CT_ESTABLISHED, CT_NEW, flow_space, reply_space
from fwmatrix.audit.local import LOCAL, as_forward
from fwmatrix.errors import MatrixError
from fwmatrix.audit.evaluate import Effective, evaluate, interfaces_of
from fwmatrix.compile.intent import Flow, management_arrivals
from fwmatrix.ir import Ruleset
from fwmatrix.matrix.model import Management, Matrix
from fwmatrix.matrix.resolve import ANY4, ANY6, Resolver
from fwmatrix.space import Space



@dataclass(frozen=True)
class AccessVerdict:
    """Whether one management access survives a ruleset, and what of it is lost."""

    access: Management
    label: str
    kept: bool
    lost: tuple[str, ...] = ()  # the packets that no longer pass, readable

    def __str__(self) -> str:
        return f"{self.label}: {'kept' if self.kept else 'CUT'}" + ("" if self.kept else f" ({'; '.join(self.lost[:3])})")


# -- management accesses as flows into the firewall --------------------------------------------


def access_flows(matrix: Matrix, firewall: str, access: Management) -> tuple[Flow, ...]:
    """The access as flows from the interface facing its sources to the firewall itself (LOCAL).

    The interfaces are those the openings would use: the last hop of every shortest
    path from the sources' zones to the firewall (`intent.management_arrivals`)."""
    resolver = Resolver(matrix)
    opening = access.as_opening()
    parts = resolver.services(opening)
    destinations: list[IPNetwork] = []
    for ref in access.destinations:
        destinations.extend(resolver.endpoint(ref, opening.where_of("to")).networks)
    flows: list[Flow] = []
    for ifaces, nets in management_arrivals(matrix, firewall, access, resolver):
        for family in (4, 6):
            src = tuple(n for n in nets if n.version == family)
            dst = tuple(n for n in destinations if n.version == family) if destinations else ((ANY4,) if family == 4 else (ANY6,))
            if src and dst:
                flows += [Flow(opening, iface, LOCAL, family, src, dst, parts) for iface in ifaces]
    if not flows:
        where = access.where_of("from")
        raise MatrixError(f"management of firewall '{firewall}': its sources and destinations have no address family in common", where.file, where.line)
    return tuple(flows)


# -- judging a ruleset ------------------------------------------------------------------------


def check(ruleset: Ruleset, matrix: Matrix, firewall: str, accesses: Sequence[Management]) -> list[AccessVerdict]:
    """Each access: kept or cut by `ruleset` (the firewall's whole ruleset, as IR)."""
    if not accesses:
        return []
    flows = {a.index: access_flows(matrix, firewall, a) for a in accesses}
    ifaces = interfaces_of(ruleset, list(matrix.firewalls[firewall].interfaces) + [LOCAL])
    full = Space.full(ifaces)
    inbound = evaluate(as_forward(ruleset, "input"), ifaces)
    outbound = evaluate(as_forward(ruleset, "output"), ifaces)
    passed_in, passed_out = _passed(full, inbound), _passed(full, outbound)
    verdicts = []
    for access in accesses:
        lost: list[str] = []
        for flow in flows[access.index]:
            arriving = flow_space(full, flow, CT_NEW | CT_ESTABLISHED)
            lost += [f"in on {flow.in_iface}: {line}" for line in arriving.subtract(passed_in).lines()]
            for region in inbound.dnats:
                if region.space.intersect(arriving):
                    lost.append(f"translated away by {region.origin}")
            lost += [f"answers out: {line}" for line in reply_space(full, flow).subtract(passed_out).lines()]
        verdicts.append(AccessVerdict(access, access.label(firewall), not lost, tuple(dict.fromkeys(lost))))
    return verdicts


def _passed(full: Space, effective: Effective) -> Space:
    """What passes whatever unmodelled constructs do (uncertain regions count as cut)."""
    return Space(full.ifaces, [b for g in effective.forwarded for b in g.space.boxes])


__all__ = ["LOCAL", "AccessVerdict", "Management", "access_flows", "as_forward", "check"]
