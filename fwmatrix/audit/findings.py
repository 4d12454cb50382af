"""Audit: a firewall's intent (from the matrix) against its effective policy (from a live ruleset).

Findings, each naming the opening (name, row, note) and the live rule:
  missing          an opening, or the part of it, that is not forwarded;
  excess           forwarded traffic that no opening asks for, with the rule granting it;
  dmz-to-internet  an explicit opening from an inside zone towards the internet: never
                   needed, replies to the internet's requests pass by connection tracking;
  nat              a port forward missing, going to the wrong host or port, or extra;
  reply-blocked    an opening whose replies cannot come back (no established path);
  shadowed         a rule that can never match;
  unmodelled       a construct fwmatrix cannot model, judged both ways;
  nd-blocked       openings whose IPv6 part cannot work (or not reliably): the firewall drops neighbour discovery;
  not-audited      an address family the input does not cover (an iptables-save without its ip6tables-save).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Callable, Iterable, Protocol

from netaddr import IPNetwork

from fwmatrix.severity import SEVERITIES, any_reaches
from fwmatrix.audit.evaluate import DEFAULT_ACCEPT, Effective, Grant, OwnAddresses, evaluate, interfaces_of, within_families
from fwmatrix.audit.evaluate.neighbours import nd_failures
from fwmatrix.audit.evaluate.scopes import as_ruled
from fwmatrix.audit.local import input_findings
from fwmatrix.audit.snat import snat_findings
from fwmatrix.audit.within import Within
from fwmatrix.compile.intent import Dnat, FirewallIntent, Flow, Intent
from fwmatrix.ir import Ruleset
from fwmatrix.matrix.model import PROTOCOLS, Acceptance, Opening, ServicePart
from fwmatrix.space import (
    PORTLESS_ALL, PORTS_ALL, Box, BoxIndex, Interfaces, Intervals, Region, Space, addr_interval, addr_text, addrs, ct_bits, ct_translated,
    iv_norm, physical,
)

KINDS = ("missing", "excess", "dmz-to-internet", "nat", "reply-blocked", "shadowed", "unmodelled", "nd-blocked", "not-audited")
SEVERITY_OF = {
    "missing": "high",
    "excess": "high",
    "nat": "high",
    "reply-blocked": "high",
    "dmz-to-internet": "medium",
    "unmodelled": "medium",
    "shadowed": "low",
    "nd-blocked": "high",
    "not-audited": "info",
}
CT_NEW = ct_bits("new", translated=False)
CT_ESTABLISHED = ct_bits("established", translated=False)
CT_NEW_DNAT = ct_bits("new", translated=True)
UNCERTAIN_SEVERITY = "medium"  # the least a consequence of an unmodelled construct is reported at
UNCERTAIN_NAT = " (if rules fwmatrix cannot model match: see 'unmodelled')"


@dataclass(frozen=True)
class Finding:
    kind: str
    message: str
    opening: Opening | None = None
    rule: str = ""
    regions: tuple[str, ...] = ()  # Regions (fwmatrix/space): each line with its box's fields
    severity: str = ""
    accepted: Acceptance | None = None  # accepted with a reason: shown, counts for no threshold (audit/waivers.py)
    expired: Acceptance | None = None  # its acceptance has lapsed: a finding again

    @property
    def level(self) -> str:
        return self.severity or SEVERITY_OF[self.kind]

    def to_json(self) -> dict:
        out: dict = {"kind": self.kind, "severity": self.level, "message": self.message}
        if self.opening is not None:
            out["opening"] = self.opening.to_json()
        if self.rule:
            out["rule"] = self.rule
        if self.regions:
            out["regions"] = list(self.regions)
            if all(isinstance(r, Region) for r in self.regions):  # the same regions as data, line for line
                out["packets"] = [r.fields for r in self.regions]
        return out | acceptance_json(self)


def acceptance_json(finding: Finding | object) -> dict:
    """`accepted` or `expired_acceptance`, for findings that have one (audit and lint)."""
    accepted, expired = getattr(finding, "accepted", None), getattr(finding, "expired", None)
    if accepted is not None:
        return {"accepted": accepted.to_json()}
    return {"expired_acceptance": expired.to_json()} if expired is not None else {}


class _Kinded(Protocol):
    @property
    def kind(self) -> str: ...


def count_kinds(findings: Iterable[_Kinded], kinds: tuple[str, ...]) -> dict[str, int]:
    """How many findings of each kind: every kind, in `kinds`' order, zero when none (a report's `counts`)."""
    counts = {kind: 0 for kind in kinds}
    for f in findings:
        counts[f.kind] += 1
    return counts


@dataclass
class AuditReport:
    matrix: str
    firewall: str
    source: str  # where the live ruleset came from
    findings: list[Finding] = field(default_factory=list)
    openings_checked: int = 0

    @property
    def standing(self) -> list[Finding]:
        """The findings not accepted: what counts and fails."""
        return [f for f in self.findings if f.accepted is None]

    def counts(self) -> dict[str, int]:
        return count_kinds(self.standing, KINDS)

    def verdict(self) -> str:
        accepted = len(self.findings) - len(self.standing)
        but = f" ({accepted} accepted finding{'s' if accepted != 1 else ''} not counted)" if accepted else ""
        if not self.findings:
            return f"firewall '{self.firewall}' matches the matrix: {self.openings_checked} openings checked, nothing missing, nothing in excess"
        if not self.standing:
            return f"firewall '{self.firewall}' differs from the matrix only by accepted findings: {accepted} not counted"
        parts = [f"{n} {kind}" for kind, n in self.counts().items() if n]
        return f"firewall '{self.firewall}' differs from the matrix: " + ", ".join(parts) + but

    def worst(self) -> str | None:
        levels = [SEVERITIES.index(f.level) for f in self.standing]
        return SEVERITIES[max(levels)] if levels else None

    def to_json(self) -> dict:
        return {
            "schema": "fwmatrix.audit/1",
            "matrix": self.matrix,
            "firewall": self.firewall,
            "source": self.source,
            "verdict": self.verdict(),
            "counts": self.counts(),
            "accepted": len(self.findings) - len(self.standing),
            "findings": [f.to_json() for f in self.findings],
        }


def audit(intent: Intent, firewall: str, ruleset: Ruleset, source: str, local_addresses: Iterable[IPNetwork] = ()) -> AuditReport:
    """`local_addresses`: all the firewall's own addresses (`--local-address`); without them
    only the matrix's public addresses are known to be its own (see evaluate/addrtype.py)."""
    fw_intent = intent.firewalls[firewall]
    fw = fw_intent.firewall
    ifaces = interfaces_of(ruleset, list(fw.interfaces))
    given = tuple(local_addresses)
    own = OwnAddresses(tuple(IPNetwork(address) for address in fw.public.values()) + given, complete=bool(given))
    effective = evaluate(ruleset, ifaces, own=own, as_ruled=True)
    # what the kernel never forwards (a link-local source leaving its link) matters neither way:
    # the regions read as the rules have them, and nothing of it alone is missing or blocked
    never, effective = effective.never, as_ruled(effective)
    not_given = _not_given(ruleset)
    if not_given:  # what was not given was not audited: judge the rest, and say so
        effective = within_families(effective, frozenset({4, 6}) - not_given)
        fw_intent = replace(fw_intent, flows=tuple(f for f in fw_intent.flows if f.family not in not_given),
                            dnats=tuple(d for d in fw_intent.dnats if d.family not in not_given))
    report = AuditReport(intent.matrix.name, firewall, source, openings_checked=len({f.opening.index for f in fw_intent.flows}))
    full = Space.full(ifaces)

    flows_by_opening: dict[int, list[Flow]] = {}
    for flow in fw_intent.flows:
        flows_by_opening.setdefault(flow.opening.index, []).append(flow)
    sides = _Addresses()  # the flows of one opening share their tuples of networks: each converted once
    opening_spaces = {index: _union(full, [flow_space(full, f, CT_NEW, sides) for f in flows]) for index, flows in flows_by_opening.items()}
    intended = _union(full, list(opening_spaces.values()))

    forwarded = _union(full, [g.space for g in effective.forwarded])

    @cache
    def forwarded_new() -> Space:  # asked only of an opening the cheap tests below do not show forwarded
        return forwarded.intersect(full.make(ct=CT_NEW | CT_NEW_DNAT))

    uncertain = _union(full, [g.space for g in effective.uncertain])
    # the new connections that can reach the forward hook: untranslated ones, and
    # translated ones only as the live port forwards translate them
    translated = _translated(full, effective)
    arriving_new = full.make(ct=CT_NEW).union(translated)
    # port forwards' targets sent to directly: what a forward rule without `ct status dnat` opens
    direct = _union(full, [flow_space(full, replace(f, translated=False), CT_NEW) for f in fw_intent.flows if f.translated])
    # IPv6 where the firewall drops all neighbour discovery: said once, by 'nd-blocked'
    nd_dead = effective.nd_dead or Space.empty(ifaces)

    # The comparison asks first of the same sets in fewer boxes (coalesced: a chain's walk leaves
    # each rule's packets cut by the earlier rules'), each opening (grant, reply) by a cheap test
    # that is exact when it says "within" (audit/within.py), then by subtraction; only what is not
    # covered there is worked out again against the sets as evaluated, so that findings read the
    # same whatever the shortcut.
    forwarded_few = effective.forwarded_cover().coalesced()  # the same set: each accept's whole match where it can
    forwarded_new_few = _in_states(forwarded_few, CT_NEW | CT_NEW_DNAT)
    intended_few = intended.coalesced()

    # missing: what an opening asks for and no rule forwards
    forwarded_or_dead = Within(forwarded_new_few.union(nd_dead))
    for index, space in sorted(opening_spaces.items()):
        if forwarded_or_dead.holds_all(space.boxes) or not space.subtract(forwarded_new_few).subtract(nd_dead):
            continue
        opening = flows_by_opening[index][0].opening
        lost = space.subtract(forwarded_new()).subtract(nd_dead)
        if not lost or (never and not lost.subtract(never)):
            continue
        maybe = lost.intersect(uncertain)
        whole = lost.equals(space.subtract(nd_dead))
        what = ("is not forwarded at all" if whole else "is forwarded only from some MAC addresses; not forwarded"
                if _by_mac_only(lost) else "is only partly forwarded; not forwarded")
        message = f"opening '{opening.name}' (row {opening.index}) {what}"
        if maybe:
            message += " (part of it depends on rules fwmatrix cannot model: see 'unmodelled')"
        report.findings.append(Finding("missing", message, opening, "", lost.regions()))

    # excess: what rules forward beyond the openings, by rule
    inside_to_internet = _inside_to_internet(intent, firewall, ifaces)
    reported = Space.empty(ifaces)
    asked = Within(intended_few)
    arrivals = _Arrivals(translated)
    for grant in effective.forwarded:
        if asked.holds_all(arrivals.around(grant.space)):
            continue
        arriving = grant.space.intersect(arriving_new)
        if asked.holds_all(arriving.boxes) or not arriving.subtract(intended_few):
            continue
        extra = arriving.subtract(intended).subtract(reported)
        if not extra:
            continue
        reported = reported.union(extra)
        to_internet = extra.intersect(inside_to_internet) if inside_to_internet else inside_to_internet
        rest = extra.subtract(to_internet) if to_internet else extra
        rule = "" if grant.origin == DEFAULT_ACCEPT else grant.origin
        untranslated = rest.intersect(direct) if direct else direct
        if untranslated:
            rest = rest.subtract(untranslated)
            report.findings.append(Finding(
                "excess",
                "a port forward's target is reachable directly, not only through the translation "
                "(the rule does not ask for it: nft `ct status dnat`, iptables `--ctstate DNAT`, pf `tagged`)",
                None, rule, untranslated.regions(),
            ))
        if to_internet:
            report.findings.append(Finding(
                "dmz-to-internet",
                "explicit opening from an inside zone towards the internet: not needed, replies to "
                "the internet's requests pass by connection tracking (established/related)",
                None, rule, to_internet.regions(),
            ))
        if rest:
            why = grant.origin if grant.origin == DEFAULT_ACCEPT else f"granted by {grant.origin}"
            report.findings.append(Finding("excess", f"forwarded, but no opening asks for it ({why})", None, rule, rest.regions()))

    # what may be forwarded in excess, depending on rules fwmatrix cannot model: the
    # invariant (docs/audit.md, "Judged both ways") says it is never only an 'unmodelled' line
    doubtful = _Doubtful(effective.doubtful)
    for grant in effective.uncertain:
        extra = grant.space.intersect(arriving_new).subtract(intended).subtract(reported)
        if not extra:
            continue
        reported = reported.union(extra)
        why = (f"only static neighbour entries would forward it: the firewall drops neighbour discovery ({grant.origin})"
               if nd_dead and not extra.subtract(nd_dead) else
               f"it depends on rules fwmatrix cannot model (see 'unmodelled'; {doubtful.depends_on(grant, extra)})")
        report.findings.append(Finding(
            "excess",
            f"may be forwarded, but no opening asks for it: {why}",
            None, grant.origin, extra.regions(), severity=UNCERTAIN_SEVERITY,
        ))

    # replies: every opening's answers must come back (each reply space holds its conntrack states)
    returning = Within(forwarded_few.union(nd_dead))
    for index, flows in sorted(flows_by_opening.items()):
        replies = _union(full, [reply_space(full, f, sides) for f in flows])
        if returning.holds_all(replies.boxes) or not replies.subtract(forwarded_few).subtract(nd_dead):
            continue
        opening = flows[0].opening
        blocked = replies.subtract(forwarded).subtract(nd_dead)
        if blocked and not (never and not blocked.subtract(never)):
            report.findings.append(Finding(
                "reply-blocked",
                f"replies of opening '{opening.name}' (row {opening.index}) cannot come back: no rule accepts them as established connections",
                opening, "", blocked.regions(),
            ))

    report.findings.extend(_nat_findings(full, fw_intent.dnats, effective))
    report.findings.extend(input_findings(fw_intent, ruleset))  # the firewall's own services (audit/local.py)
    report.findings.extend(snat_findings(fw_intent, ruleset, ifaces, effective))  # source NAT (audit/snat.py)
    report.findings.extend(_nd_findings(full, effective, fw_intent))
    if not_given:
        report.findings.append(_not_audited(intent.firewalls[firewall], not_given))
    for note in effective.shadowed:
        report.findings.append(Finding("shadowed", f"rule can never match: {note.text}", None, note.origin))
    for note in effective.unmodelled:
        report.findings.append(Finding("unmodelled", f"fwmatrix cannot model {note.text}; judged both ways (it may match, or not)", None, note.origin))
    return report


class _Doubtful:
    """The rules with unmodelled constructs (`Effective.doubtful`), asked which of them can reach
    an uncertain finding's packets: their packets filed in one index when first asked (a
    kube-proxy ruleset has a statistic match per service: a pass over every such rule for each
    finding, each an intersection with the finding's packets, was quadratic)."""

    def __init__(self, doubtful: list[Grant]):
        self.doubtful = doubtful
        self.index: BoxIndex | None = None
        self.owners: dict[int, list[int]] = {}  # id of a filed box -> the positions of the rules it is of

    def depends_on(self, grant: Grant, extra: Space) -> str:
        """The rule that may forward `extra`, and the rules with unmodelled constructs that can reach it."""
        if self.index is None:
            self.index = BoxIndex()
            for position, d in enumerate(self.doubtful):
                for box in d.space.boxes:
                    owners = self.owners.get(id(box))
                    if owners is None:
                        self.owners[id(box)] = owners = []
                        self.index.add(box)
                    owners.append(position)
        reaching: set[int] = set()
        for a in extra.boxes:
            for b in self.index.overlapping(a):
                if a.intersect(b) is not None:
                    reaching.update(self.owners[id(b)])
        names = [grant.origin] + [self.doubtful[at].origin for at in sorted(reaching) if self.doubtful[at].origin != grant.origin]
        return ", ".join(dict.fromkeys(names))


SAVE_TOOLS = {4: "iptables-save", 6: "ip6tables-save"}


def _not_given(ruleset: Ruleset) -> frozenset[int]:
    return frozenset() if ruleset.families is None else frozenset({4, 6}) - ruleset.families


def _not_audited(fw_intent: FirewallIntent, not_given: frozenset[int]) -> Finding:
    """What was not audited: the families not given, and the openings (or their parts) in them."""
    families = " and ".join(f"IPv{v}" for v in sorted(not_given))
    tools = " and ".join(f"{SAVE_TOOLS[v]} output" for v in sorted(not_given))
    message = f"no {families} ruleset was given ({tools}): {families} was not audited; pass it with a second -r"
    unchecked = sorted({f.opening.name for f in fw_intent.flows if f.family in not_given})
    if unchecked:
        message += f". Openings with {families} addresses were not checked for them: {', '.join(unchecked)}"
    return Finding("not-audited", message)


def _nd_findings(full: Space, effective: Effective, fw_intent: FirewallIntent) -> list[Finding]:
    """Openings whose IPv6 flows need neighbour discovery that the firewall drops (see nd_failures)."""
    blocked = effective.nd_blocked
    by_opening: dict[int, tuple[list[Flow], set[str], list[bool]]] = {}
    for f in fw_intent.flows:
        certain, reasons = nd_failures(blocked, f.in_iface, f.out_iface) if f.family == 6 else (False, [])
        if reasons:
            flows, why, certainty = by_opening.setdefault(f.opening.index, ([], set(), []))
            flows.append(f)
            why.update(reasons)
            certainty.append(certain)
    findings = []
    for index, (flows, why, certainty) in sorted(by_opening.items()):
        opening = flows[0].opening
        findings.append(Finding(
            "nd-blocked",
            f"IPv6 of opening '{opening.name}' (row {opening.index}) {'cannot work' if any(certainty) else 'is unreliable'}: "
            f"the firewall drops ICMPv6 neighbour discovery, so {'; '.join(sorted(why))} (unless static neighbour entries stand in for it)",
            opening, "", _union(full, [flow_space(full, f, CT_NEW) for f in flows]).regions(),
            severity="" if any(certainty) else "medium",
        ))
    return findings


def _union(full: Space, spaces: list[Space]) -> Space:
    return Space(full.ifaces, [b for s in spaces for b in s.boxes])


def _service_bounds(part: ServicePart, family: int) -> tuple[tuple, tuple]:
    proto = PROTOCOLS[part.protocol_for_family(family)]
    if part.ports is None:
        return ((proto, proto),), PORTLESS_ALL
    return ((proto, proto),), ((part.ports.low, part.ports.high),)


def _translated(full: Space, effective: Effective) -> Space:
    """New connections as the live port forwards hand them to the forward hook: their
    destination (and port) translated, marked `ct status dnat`."""
    boxes: list[Box] = []
    for region in effective.dnats:
        for box in region.space.boxes:
            dport = box.dport if region.port is None else ((region.port.low, region.port.high),)
            boxes += physical(box.iif, full.ifaces.all, box.src, region.target, box.proto, dport, CT_NEW_DNAT)
    return Space(full.ifaces, boxes)


def _in_states(space: Space, ct: int) -> Space:
    """`space` in these conntrack states only: each box's states cut to them (what intersecting
    with Space.full in those states gives, a box being physical), the boxes left without one dropped."""
    return Space(space.ifaces, [Box(b.iif, b.oif, b.src, b.dst, b.proto, b.dport, b.ct & ct) for b in space.boxes if b.ct & ct])


class _Arrivals:
    """Boxes around what of a space arrives at the forward hook as a new connection (`arriving_new`
    in `audit`: untranslated new packets, and the live port forwards' translated boxes): each box in
    its untranslated new states, and its meets with the translated boxes. They hold every such
    packet (a test that they lie within a space is a test of those packets), and they are found
    without indexing the space: a grant of a set's thousands of elements is one index built and
    thrown away for each grant otherwise."""

    def __init__(self, translated: Space):
        self.translated = translated.index() if translated else None
        self.iif = self.oif = 0
        for box in translated.boxes:
            self.iif |= box.iif
            self.oif |= box.oif
        self.targets = iv_norm(span for box in translated.boxes for span in box.dst)
        self.target_ends = [high for _, high in self.targets]

    def around(self, space: Space) -> list[Box]:
        out = _in_states(space, CT_NEW).boxes
        if self.translated is not None:
            for b in space.boxes:
                if b.ct & CT_NEW_DNAT and b.iif & self.iif and b.oif & self.oif and self._meets_targets(b.dst):
                    out.extend(common for t in self.translated.overlapping(b) if (common := b.intersect(t)) is not None)
        return out

    def _meets_targets(self, dst: Intervals) -> bool:
        targets, ends = self.targets, self.target_ends
        for low, high in dst:
            at = bisect_left(ends, low)  # the first target interval that ends at or after low
            if at < len(ends) and targets[at][0] <= high:
                return True
        return False


def _flow_ct(flow: Flow, ct: int) -> int:
    """The conntrack bits of a flow's packets: a translated flow's are its states' dnat bits."""
    return ct_translated(ct) if flow.translated else ct


class _Addresses:
    """Tuples of networks as address intervals, each tuple converted once (`addrs`)."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[tuple[IPNetwork, ...], Intervals]] = {}  # the tuple kept: its id stays its own

    def __call__(self, nets: tuple[IPNetwork, ...]) -> Intervals:
        known = self._by_id.get(id(nets))
        if known is None:
            known = self._by_id[id(nets)] = (nets, addrs(nets))
        return known[1]


def flow_space(full: Space, flow: Flow, ct: int, sides: Callable[[tuple[IPNetwork, ...]], Intervals] = addrs) -> Space:
    """A flow's packets in the given untranslated conntrack states (CT_NEW ...); those of a
    port forward this firewall translates carry the same states as translated. `sides`: how
    its networks become intervals (`addrs`, or an `_Addresses` that remembers them)."""
    ifaces = full.ifaces
    ct = _flow_ct(flow, ct)
    boxes: list[Box] = []
    src, dst = sides(flow.sources), sides(flow.destinations)
    for part in flow.parts:
        proto, dport = _service_bounds(part, flow.family)
        boxes += physical(ifaces.mask(flow.in_iface), ifaces.mask(flow.out_iface), src, dst, proto, dport, ct)
    return Space(ifaces, boxes)


def reply_space(full: Space, flow: Flow, sides: Callable[[tuple[IPNetwork, ...]], Intervals] = addrs) -> Space:
    """The answers: back the other way, from any port of the server to the client."""
    ifaces = full.ifaces
    boxes: list[Box] = []
    src, dst = sides(flow.destinations), sides(flow.sources)
    for part in flow.parts:
        proto, dport = _service_bounds(part, flow.family)
        answer_ports = PORTLESS_ALL if part.ports is None else PORTS_ALL
        boxes += physical(ifaces.mask(flow.out_iface), ifaces.mask(flow.in_iface), src, dst, proto, answer_ports, _flow_ct(flow, CT_ESTABLISHED))
    return Space(ifaces, boxes)


def _by_mac_only(lost: Space) -> bool:
    """Whether what an opening lacks is every packet of some MAC sources only (a ruleset that
    binds hosts to their MACs, `-m mac --mac-source`): the rest of each interface is forwarded."""
    return bool(lost.ifaces.macs) and all(lost.ifaces.mac_sources(box.iif) for box in lost.boxes)


def _inside_to_internet(intent: Intent, firewall: str, ifaces: Interfaces) -> Space:
    """Traffic that starts in an inside zone which the internet reaches through this
    firewall (a DMZ) and leaves by an interface facing the internet (the `any` zone)."""
    matrix = intent.matrix
    fw = matrix.firewalls[firewall]
    internet = {name for name, zone in fw.interfaces.items() if matrix.zones[zone].is_any}
    if not internet:
        return Space.empty(ifaces)
    reached = {f.out_iface for f in intent.firewalls[firewall].flows if f.in_iface in internet}
    dmz = reached - internet
    if not dmz:
        return Space.empty(ifaces)
    iif = 0
    for name in dmz:
        iif |= ifaces.mask(name)
    oif = 0
    for name in internet:
        oif |= ifaces.mask(name)
    return Space.full(ifaces).make(iif=iif, oif=oif, ct=CT_NEW)


def _nat_findings(full: Space, dnats: tuple[Dnat, ...], effective: Effective) -> list[Finding]:
    findings: list[Finding] = []
    ifaces = full.ifaces
    live = effective.dnats
    # which live port forwards may meet a wanted one: found through an index, not pairwise
    region_of: dict[int, int] = {}
    live_index = BoxIndex()
    for position, region in enumerate(live):
        for box in region.space.boxes:
            region_of[id(box)] = position
            live_index.add(box)
    wanted_all = Space.empty(ifaces)
    for dnat in dnats:
        wanted = Space.empty(ifaces)
        src = addrs(dnat.sources)
        dst = addrs([IPNetwork(dnat.public)])
        for part in dnat.parts:
            proto, dport = _service_bounds(part, dnat.family)
            wanted = wanted.union(Space(ifaces, physical(ifaces.mask(dnat.in_iface), ifaces.all, src, dst, proto, dport, CT_NEW)))
        wanted_all = wanted_all.union(wanted)
        target = (addr_interval(IPNetwork(dnat.target)),)
        covered = Space.empty(ifaces)
        near = sorted({region_of[id(b)] for box in wanted.boxes for b in live_index.overlapping(box)})
        for region in (live[position] for position in near):
            common = region.space.intersect(wanted)
            if not common:
                continue
            covered = covered.union(common)
            port_ok = (region.port is None and dnat.target_port is None) or (
                region.port is not None and dnat.target_port is not None and (region.port.low, region.port.high) == (dnat.target_port, dnat.target_port)
            )
            if region.target != target or not port_ok:
                got = ", ".join(addr_text(region.target)) + (f" port {region.port}" if region.port else "")
                want = str(dnat.target) + (f" port {dnat.target_port}" if dnat.target_port else "")
                findings.append(Finding(
                    "nat",
                    f"port forward of opening '{dnat.opening.name}' (row {dnat.opening.index}) "
                    f"{'may go' if region.uncertain else 'goes'} to {got}, the matrix says {want}{UNCERTAIN_NAT if region.uncertain else ''}",
                    dnat.opening, region.origin, common.regions(), severity=UNCERTAIN_SEVERITY if region.uncertain else "",
                ))
        missing = wanted.subtract(Space(ifaces, [b for b in covered.boxes]))
        certain = Space(ifaces, [b for r in (live[p] for p in near) if not r.uncertain for b in r.space.intersect(wanted).boxes])
        maybe_missing = wanted.subtract(certain).subtract(missing)
        if maybe_missing:
            findings.append(Finding(
                "nat",
                f"port forward of opening '{dnat.opening.name}' (row {dnat.opening.index}) to {dnat.target} depends on rules fwmatrix cannot model",
                dnat.opening, "", maybe_missing.regions(), severity=UNCERTAIN_SEVERITY,
            ))
        if missing:
            findings.append(Finding(
                "nat",
                f"port forward of opening '{dnat.opening.name}' (row {dnat.opening.index}) to {dnat.target} is missing",
                dnat.opening, "", missing.regions(),
            ))
    for region in live:
        extra = region.space.subtract(wanted_all)
        if extra:
            to = ", ".join(addr_text(region.target)) + (f" port {region.port}" if region.port else "")
            findings.append(Finding(
                "nat", f"port forward to {to} that no opening asks for{UNCERTAIN_NAT if region.uncertain else ''}",
                None, region.origin, extra.regions(), severity=UNCERTAIN_SEVERITY if region.uncertain else "",
            ))
    return findings


def fail(report: AuditReport, threshold: str) -> bool:
    """Whether the report has a finding at or above the threshold."""
    return any_reaches((f.level for f in report.standing), threshold)


__all__ = ["Finding", "AuditReport", "audit", "fail", "KINDS", "flow_space", "reply_space", "Grant", "Opening"]
