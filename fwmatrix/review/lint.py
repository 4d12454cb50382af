"""Lint: findings about the matrix itself, each pointing at a line of its YAML.

Kinds (default severity):
  dmz-to-internet      medium  an explicit opening from a DMZ (a zone the internet reaches
                               through a firewall) towards the internet: never needed,
                               replies pass by connection tracking;
  no-firewall          medium  an opening that crosses no firewall (sources and destinations
                               share a zone): it opens nothing;
  redundant            low     an opening whose traffic, and port forwards, other openings
                               already open on every firewall it crosses;
  broad-from-internet  high    every port of a protocol opened from the internet;
  zone-to-zone         medium  a whole zone opened to a whole zone (high from the internet);
  unused               info    a host, service or group that no opening (or management access) uses;
  management-dropped   high    a management access that a firewall on its way drops (it cannot be
                               placed there: no address of the managed firewall is known).

Pure: an Intent (the matrix and its placement) in, a LintReport out. The packet
spaces are the audit's (`flow_space`), so lint and audit agree on what an
opening opens and on what a DMZ is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Iterable

from netaddr import IPNetwork

from fwmatrix.severity import any_reaches
from fwmatrix.audit.findings import KINDS as AUDIT_KINDS
from fwmatrix.audit.findings import CT_NEW, _inside_to_internet, _service_bounds, acceptance_json, count_kinds, flow_space
from fwmatrix.audit.waivers import accept, check_kinds
from fwmatrix.review.expiry import DEFAULT_WITHIN_DAYS, expiry_findings
from fwmatrix.compile.intent import Dnat, Intent
from fwmatrix.matrix.model import Acceptance, Matrix, Opening, ServicePart, Where
from fwmatrix.matrix.resolve import Resolver
from fwmatrix.space import Box, BoxIndex, Interfaces, Space, addrs, iv_overlaps, may_contain, physical, subtract_boxes

KINDS = ("dmz-to-internet", "no-firewall", "redundant", "broad-from-internet", "zone-to-zone", "unused", "management-dropped", "expired", "expiring")


def check_accepted_kinds(accepts: Iterable[Acceptance]) -> None:
    """The `accept:` entries (and a baseline's) name kinds of findings the audit or lint can
    report: else `error: FILE:LINE: ...` with a did-you-mean (check, lint and audit refuse them alike)."""
    check_kinds(accepts, tuple(dict.fromkeys(AUDIT_KINDS + KINDS)), "audit and lint")


SEVERITY_OF = {
    "dmz-to-internet": "medium",
    "no-firewall": "medium",
    "redundant": "low",
    "broad-from-internet": "high",
    "zone-to-zone": "medium",
    "unused": "info",
    "management-dropped": "high",
    "expired": "medium",
    "expiring": "info",
}
# What each kind means and what to do about it: SARIF rule help, docs/reports.md.
HELP = {
    "dmz-to-internet": "An explicit opening from a DMZ (a zone the internet reaches through a firewall) towards the "
                       "internet. Replies to the internet's requests pass by connection tracking (established/related), "
                       "so such an opening is never needed for them; it lets a compromised DMZ host start connections "
                       "out. Remove it, or keep it only for connections the DMZ host really starts, and say so in its note.",
    "no-firewall": "The opening's sources and destinations share a zone, so no firewall sees its traffic and the "
                   "opening opens nothing. Check the zones of its hosts, or remove it.",
    "redundant": "Other openings already open all of this opening's traffic (and its port forwards) on every firewall "
                 "it crosses, so removing it changes nothing. All openings reported redundant can be removed together.",
    "broad-from-internet": "Every port of a protocol is open from the internet. Open the ports the service needs.",
    "zone-to-zone": "A whole zone is opened to a whole zone. Name the hosts or groups that need to talk.",
    "unused": "A host, service or group that no opening uses (directly or through groups and roles). Remove it, "
              "or add the opening it was meant for.",
    "management-dropped": "A management access crosses another firewall on its way, which cannot forward it because no "
                          "address of the managed firewall is known: that firewall drops it and the administrators are "
                          "locked out. Give the managed firewall's interfaces their addresses ({zone: ..., address: ...}), "
                          "or write the access's 'to'.",
    "expired": "An opening or a group is past the date its `expires` says it is needed until. Remove it (its owner and "
               "ticket say whom to ask), or extend the date.",
    "expiring": "An opening or a group reaches its `expires` date soon (within --expiring-within days): ask its owner "
                "whether it is still needed.",
}


@dataclass(frozen=True)
class LintFinding:
    kind: str
    message: str
    where: Where  # the offending line of the matrix
    opening: Opening | None = None
    definition: tuple[str, str] | None = None  # ('host', 'nginx') for unused definitions
    covering: tuple[str, ...] = ()  # the openings that cover a redundant one
    severity: str = ""
    accepted: Acceptance | None = None  # accepted with a reason (fwmatrix/audit/waivers.py)
    expired: Acceptance | None = None  # its acceptance has lapsed

    @property
    def level(self) -> str:
        return self.severity or SEVERITY_OF[self.kind]

    def to_json(self) -> dict:
        out: dict = {"kind": self.kind, "severity": self.level, "message": self.message, "file": self.where.file, "line": self.where.line}
        if self.opening is not None:
            out["opening"] = self.opening.to_json()
        if self.definition is not None:
            out["definition"] = {"kind": self.definition[0], "name": self.definition[1]}
        if self.covering:
            out["covering"] = list(self.covering)
        return out | acceptance_json(self)


@dataclass
class LintReport:
    matrix: str
    file: str
    findings: list[LintFinding] = field(default_factory=list)
    openings: tuple[Opening, ...] = ()  # every opening linted (a JUnit case each)
    firewall: str | None = None  # narrowed to this firewall's placement (on_firewall)

    @property
    def standing(self) -> list[LintFinding]:
        """The findings not accepted: what counts and fails."""
        return [f for f in self.findings if f.accepted is None]

    def counts(self) -> dict[str, int]:
        return count_kinds(self.standing, KINDS)

    def verdict(self) -> str:
        accepted = len(self.findings) - len(self.standing)
        but = f" ({accepted} accepted finding{'s' if accepted != 1 else ''} not counted)" if accepted else ""
        linted = f"matrix '{self.matrix}'" + (f" on firewall '{self.firewall}'" if self.firewall else "")
        if not self.findings:
            return f"{linted} is clean: {len(self.openings)} openings, nothing to report"
        if not self.standing:
            return f"{linted} has only accepted findings: {accepted} not counted"
        return f"{linted} has findings: " + ", ".join(f"{n} {kind}" for kind, n in self.counts().items() if n) + but

    def to_json(self) -> dict:
        return {
            "schema": "fwmatrix.lint/1",
            "matrix": self.matrix,
            "file": self.file,
            **({"firewall": self.firewall} if self.firewall else {}),
            "verdict": self.verdict(),
            "counts": self.counts(),
            "accepted": len(self.findings) - len(self.standing),
            "findings": [f.to_json() for f in self.findings],
        }


def lint(intent: Intent, today: date | None = None, expiring_within: int = DEFAULT_WITHIN_DAYS) -> LintReport:
    """The matrix's findings (as of `today`: expiry, acceptances); those its `accept:` list
    accepts are marked."""
    matrix = intent.matrix
    today = today or date.today()
    spaces = _flow_spaces(intent)
    findings = (
        _dmz_to_internet(intent, spaces)
        + _no_firewall(intent)
        + _redundant(intent, spaces)
        + _broad(intent)
        + _unused(matrix)
        + expiry_findings(matrix, today, expiring_within, LintFinding)
    )
    findings.sort(key=lambda f: (f.where.line, KINDS.index(f.kind)))
    check_accepted_kinds(matrix.accepts)
    findings = accept(findings, matrix.accepts, None, today)
    return LintReport(matrix.name, matrix.file, findings, matrix.openings)


def on_firewall(report: LintReport, intent: Intent, firewall: str) -> LintReport:
    """The report narrowed to one firewall's placement: the findings about the openings (and
    management accesses) placed on it. Findings about no opening (an unused name, a group's
    expiry) belong to the whole matrix and are left out."""
    fw = intent.firewalls[firewall]
    placed = {item.opening.index for items in (fw.flows, fw.dnats, fw.snats, fw.inputs) for item in items}
    findings = [f for f in report.findings if f.opening is not None and f.opening.index in placed]
    return LintReport(report.matrix, report.file, findings, tuple(o for o in report.openings if o.index in placed), firewall)


def fail(report: LintReport, threshold: str) -> bool:
    """Whether the report has a finding at or above the threshold."""
    return any_reaches((f.level for f in report.standing), threshold)


def _flow_spaces(intent: Intent) -> dict[str, list[Space]]:
    """Each firewall's flows as packet spaces (NEW connections), in the order of its flows: made
    once, for the DMZ check and the redundant one."""
    out: dict[str, list[Space]] = {}
    for fw_name, fw in intent.firewalls.items():
        full = Space.full(Interfaces.of(fw.firewall.interfaces))
        out[fw_name] = [flow_space(full, flow, CT_NEW) for flow in fw.flows]
    return out


# -- DMZ towards the internet -------------------------------------------------------


def _dmz_to_internet(intent: Intent, spaces: dict[str, list[Space]]) -> list[LintFinding]:
    found: dict[int, tuple[Opening, list[str]]] = {}
    for fw_name, fw in intent.firewalls.items():
        ifaces = Interfaces.of(fw.firewall.interfaces)
        outward = _inside_to_internet(intent, fw_name, ifaces)
        if not outward:
            continue
        for flow, space in zip(fw.flows, spaces[fw_name]):
            if space.intersect(outward):
                entry = found.setdefault(flow.opening.index, (flow.opening, []))
                hop = f"{fw_name}: {flow.in_iface} → {flow.out_iface}"
                if hop not in entry[1]:
                    entry[1].append(hop)
    return [
        LintFinding(
            "dmz-to-internet",
            f"opening '{o.name}' (row {o.index}) opens the DMZ towards the internet ({', '.join(hops)}): not needed, "
            "replies to the internet's requests pass by connection tracking (established/related)",
            o.where_of("to"), o,
        )
        for o, hops in found.values()
    ]


# -- openings that cross no firewall ---------------------------------------------------


def _no_firewall(intent: Intent) -> list[LintFinding]:
    by_where = {o.where: o for o in intent.matrix.openings}
    return [LintFinding(w.kind, w.message, w.where, by_where.get(w.where)) for w in intent.warnings]


# -- redundant openings ------------------------------------------------------------------


class _Layer:
    """Boxes of one firewall that must be covered together: its forwarded flows, or
    its port forwards to one target (a forward is only covered by forwards to the
    same place). Each box remembers the opening it comes from."""

    def __init__(self) -> None:
        self.boxes: dict[int, list[Box]] = {}  # opening index -> boxes
        self.owner: dict[int, int] = {}  # id(box) -> opening index
        # id(box) -> (owner, iif, oif, ct, and each dimension's outer bounds): add tests every
        # candidate the index returns on these, one lookup instead of a dozen attribute reads
        self.bounds: dict[int, tuple[int, ...]] = {}
        # one index per protocol (a box of one protocol meets only boxes of its protocol, and
        # those of several, filed under None): the index's windows are by address and port only
        self.indexes: dict[int | None, BoxIndex] = {}
        # opening index -> the boxes of other openings that meet its boxes: id -> (owner, box)
        self.meeting: dict[int, dict[int, tuple[int, Box]]] = {}
        # boxes of one interval in every dimension (about half): two such boxes meet where their
        # bounds do, and one holds another where its bounds hold the other's
        self.simple: set[int] = set()

    def add(self, opening: int, boxes: list[Box]) -> None:
        self.boxes.setdefault(opening, []).extend(boxes)
        mine = self.meeting.setdefault(opening, {})
        bounds, meeting = self.bounds, self.meeting
        simple = self.simple
        for box in boxes:
            self.owner[id(box)] = opening
            bounds[id(box)] = (opening, box.iif, box.oif, box.ct, box.src[0][0], box.src[-1][1], box.dst[0][0], box.dst[-1][1],
                               box.dport[0][0], box.dport[-1][1], box.proto[0][0], box.proto[-1][1])
            if len(box.src) == len(box.dst) == len(box.dport) == len(box.proto) == 1:
                simple.add(id(box))
        # meeting is symmetric: each new box is looked up among the boxes added before it only,
        # and a pair found is kept for both openings (half the candidates of a lookup among all)
        for a in boxes:
            # may_overlap(a, b) on the bounds, inline: this loop runs for every candidate the index returns
            _, iif, oif, ct, src_low, src_high, dst_low, dst_high, port_low, port_high, proto_low, proto_high = bounds[id(a)]
            a_simple = id(a) in simple
            for b in self._candidates(a, proto_low, proto_high):
                owner, b_iif, b_oif, b_ct, b_src_low, b_src_high, b_dst_low, b_dst_high, b_port_low, b_port_high, b_proto_low, b_proto_high = bounds[id(b)]
                if (owner != opening and iif & b_iif and oif & b_oif and ct & b_ct
                        and b_dst_low <= dst_high and dst_low <= b_dst_high and b_src_low <= src_high and src_low <= b_src_high
                        and b_port_low <= port_high and port_low <= b_port_high
                        and b_proto_low <= proto_high and proto_low <= b_proto_high
                        and (a_simple and id(b) in simple or _meets(a, b))):
                    mine[id(b)] = (owner, b)
                    meeting[owner][id(a)] = (opening, a)
        for box in boxes:
            proto = box.proto
            key = proto[0][0] if len(proto) == 1 and proto[0][0] == proto[0][1] else None
            index = self.indexes.get(key)
            if index is None:
                index = self.indexes[key] = BoxIndex()
            index.add(box)

    def _candidates(self, box: Box, proto_low: int, proto_high: int) -> Iterable[Box]:
        """The boxes added so far that may meet `box` (its protocols from proto_low to proto_high)."""
        indexes = self.indexes
        if proto_low == proto_high:
            one = indexes.get(proto_low)
            several = indexes.get(None)
            if several is None:
                return one.overlapping(box) if one is not None else ()
            return [*(one.overlapping(box) if one is not None else ()), *several.overlapping(box)]
        return [b for key, index in indexes.items() if key is None or proto_low <= key <= proto_high for b in index.overlapping(box)]

    def covering(self, opening: int, excluded: set[int], also: set[int] | frozenset[int] = frozenset()) -> set[int] | None:
        """The other openings (not excluded, nor `also`) whose boxes cover this opening's boxes
        here, or None when they do not cover them all."""
        mine = self.boxes[opening]
        others = {i: b for i, (owner, b) in self.meeting[opening].items() if owner not in excluded and owner not in also}
        if not _covered_whole(mine, others, self.simple):
            # most openings are not covered, and one of their boxes' first corner says so without a subtraction
            if not all(_corner_held(a, others.values()) for a in mine) or subtract_boxes(mine, BoxIndex(list(others.values()))):
                return None
        return {self.owner[i] for i in others}


def _meets(a: Box, b: Box) -> bool:
    """`a.intersect(b) is not None` for boxes that may_overlap, without making the box: with one
    interval per dimension, overlapping outer bounds are an overlap."""
    for x, y in ((a.src, b.src), (a.dst, b.dst), (a.proto, b.proto), (a.dport, b.dport)):
        if (len(x) > 1 or len(y) > 1) and not iv_overlaps(x, y):
            return False
    return True


def _corner_held(a: Box, others: Iterable[Box]) -> bool:
    """Whether one of the others holds a's first corner (its lowest interface bits, addresses,
    protocol, port and state). False proves a is not covered; True proves nothing."""
    iif, oif, ct = a.iif & -a.iif, a.oif & -a.oif, a.ct & -a.ct
    src, dst, proto, port = a.src[0][0], a.dst[0][0], a.proto[0][0], a.dport[0][0]
    return any(b.iif & iif and b.oif & oif and b.ct & ct and _holds(b.src, src) and _holds(b.dst, dst)
               and _holds(b.proto, proto) and _holds(b.dport, port) for b in others)


def _holds(intervals: tuple[tuple[int, int], ...], value: int) -> bool:
    return any(low <= value <= high for low, high in intervals)


def _covered_whole(boxes: list[Box], others: dict[int, Box], simple: set[int]) -> bool:
    """Whether each box lies whole inside one of the others (by id): the common case of a covered
    opening, told without building an index to subtract with (False: maybe not, subtract to know).
    A box of one interval in every dimension (`simple`) holds what its outer bounds hold."""
    pairs = list(others.items())
    return all(any(may_contain(b, a) and (i in simple or b.contains(a)) for i, b in pairs) for a in boxes)


def _layers(intent: Intent, spaces: dict[str, list[Space]]) -> list[_Layer]:
    layers: list[_Layer] = []
    for fw_name, fw in intent.firewalls.items():
        ifaces = Interfaces.of(fw.firewall.interfaces)
        flows = _Layer()
        for flow, space in zip(fw.flows, spaces[fw_name]):
            flows.add(flow.opening.index, space.boxes)
        forwards: dict[tuple[str, int | None], _Layer] = {}
        for dnat in fw.dnats:
            forwards.setdefault((str(dnat.target), dnat.target_port), _Layer()).add(dnat.opening.index, _dnat_boxes(ifaces, dnat))
        layers += [flows, *forwards.values()]
    return layers


def _dnat_boxes(ifaces: Interfaces, dnat: Dnat) -> list[Box]:
    """The packets a port forward translates: from its interface and sources, to the public address."""
    boxes: list[Box] = []
    src, dst = addrs(dnat.sources), addrs([IPNetwork(dnat.public)])
    for part in dnat.parts:
        proto, dport = _service_bounds(part, dnat.family)
        boxes += physical(ifaces.mask(dnat.in_iface), ifaces.all, src, dst, proto, dport, CT_NEW)
    return boxes


MINIMIZE_UP_TO = 16  # covering openings; beyond that all are named (trying each would cost too much)


def _redundant(intent: Intent, spaces: dict[str, list[Space]]) -> list[LintFinding]:
    """Openings covered by the others. Later rows are tried first, and an opening found
    redundant no longer covers the ones before it, so every reported opening can be
    removed at once without changing what is open; each is named with a few of the
    openings that stay and cover it."""
    layers = _layers(intent, spaces)
    openings = {o.index: o for o in intent.matrix.openings}
    placed: dict[int, list[_Layer]] = {index: [] for index in openings}  # opening -> the layers it has boxes in
    for layer in layers:
        for index in layer.boxes:
            if index in placed:
                placed[index].append(layer)

    def cover(index: int, excluded: set[int], also: set[int] | frozenset[int] = frozenset()) -> set[int] | None:
        found: set[int] = set()
        for layer in placed[index]:
            part = layer.covering(index, excluded, also)
            if part is None:
                return None
            found |= part
        return found

    removed: set[int] = set()
    for index in sorted(openings, reverse=True):
        if placed[index] and cover(index, removed) is not None:  # not placed: 'no-firewall' says so
            removed.add(index)
    findings: list[LintFinding] = []
    for index in sorted(removed):
        covering = cover(index, removed)
        assert covering is not None  # what stays opens what all opened (each removal was covered by what stayed then)
        if len(covering) <= MINIMIZE_UP_TO:
            # the coverers it can do without, besides the removed ones (not copied: thousands of them)
            dropped: set[int] = set()
            for other in sorted(covering, reverse=True):  # keep the earliest rows
                if cover(index, removed, dropped | {other}) is not None:
                    dropped.add(other)
            covering -= dropped
        names = tuple(openings[i].name for i in sorted(covering))
        o = openings[index]
        findings.append(LintFinding(
            "redundant",
            f"opening '{o.name}' (row {o.index}) is redundant: {_and(names)} already open{'s' if len(names) == 1 else ''} all of its traffic",
            o.where, o, covering=names,
        ))
    return findings


def _and(names: tuple[str, ...]) -> str:
    quoted = [f"'{n}'" for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


# -- overly broad openings ----------------------------------------------------------------


def _broad(intent: Intent) -> list[LintFinding]:
    matrix = intent.matrix
    resolver = Resolver(matrix)
    internet = _zone_any(matrix)
    from_internet = _from_internet(intent)
    findings: list[LintFinding] = []
    for o in matrix.openings:
        if o.index in from_internet:
            for part in resolver.services(o):
                if _every_port(part):
                    findings.append(LintFinding(
                        "broad-from-internet",
                        f"opening '{o.name}' (row {o.index}) opens every {part.protocol} port from the internet: open the ports the service needs",
                        o.where_of("service"), o,
                    ))
        sources, destinations = _zones_named(matrix, o.sources), _zones_named(matrix, o.destinations)
        if sources and destinations:
            findings.append(LintFinding(
                "zone-to-zone",
                f"opening '{o.name}' (row {o.index}) opens the whole zone {_and(tuple(sources))} to the whole zone {_and(tuple(destinations))}: "
                "name the hosts or groups that need to talk",
                o.where_of("from"), o, severity="high" if internet in sources else "",
            ))
    return findings


def _every_port(part: ServicePart) -> bool:
    return part.ports is not None and part.ports.low <= 1 and part.ports.high == 65535


def _zone_any(matrix: Matrix) -> str | None:
    return next((z.name for z in matrix.zones.values() if z.is_any), None)


def _from_internet(intent: Intent) -> set[int]:
    """Openings whose traffic enters some firewall from the internet (the `any` zone)."""
    matrix = intent.matrix
    out: set[int] = set()
    for fw in intent.firewalls.values():
        facing = {iface for iface, zone in fw.firewall.interfaces.items() if matrix.zones[zone].is_any}
        out |= {f.opening.index for f in fw.flows if f.in_iface in facing}
        out |= {d.opening.index for d in fw.dnats if d.in_iface in facing}
    return out


def _zones_named(matrix: Matrix, refs: tuple[str, ...]) -> list[str]:
    """The zones a list of references names as a whole, directly or through groups."""
    zones: list[str] = []
    for ref in _expand(matrix, refs):
        if ref in matrix.zones and ref not in zones:
            zones.append(ref)
    return zones


def _expand(matrix: Matrix, refs: tuple[str, ...] | list[str]) -> list[str]:
    """References and, for groups, their members, recursively (each once)."""
    seen: dict[str, None] = {}  # ordered, for stable messages
    pending = list(refs)
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen[ref] = None
        if ref in matrix.groups:
            pending += matrix.groups[ref].members
    return list(seen)


# -- definitions nobody uses -----------------------------------------------------------------


def _unused(matrix: Matrix) -> list[LintFinding]:
    rows = list(matrix.openings) + [access.as_opening() for fw in matrix.firewalls.values() for access in fw.management]
    refs = [r for o in rows for r in o.sources + o.destinations + ((o.nat.target,) if o.nat else ())]
    used = _names_behind(matrix, _expand(matrix, refs))
    used_services = {s for o in rows for s in o.services}
    findings: list[LintFinding] = []
    for group in matrix.groups.values():
        if group.name not in used:
            findings.append(_unused_finding("group", group.name, group.where, ""))
    for host in matrix.hosts.values():
        if host.name in used:
            continue
        holders = [g.name for g in matrix.groups.values() if host.name in _names_behind(matrix, _expand(matrix, g.members))]
        why = f" (only group{'s' if len(holders) > 1 else ''} {_and(tuple(holders))} name{'s' if len(holders) == 1 else ''} it, and no opening uses {'them' if len(holders) > 1 else 'it'})" if holders else ""
        findings.append(_unused_finding("host", host.name, host.where, why))
    for service in matrix.services.values():
        if service.name not in used_services:
            findings.append(_unused_finding("service", service.name, service.where, ""))
    return findings


def _names_behind(matrix: Matrix, refs: list[str]) -> set[str]:
    """The names references stand for: themselves, the host of `host.address`, the host of a role."""
    names: set[str] = set()
    for ref in refs:
        base = ref.partition(".")[0]
        names |= {ref, base, matrix.roles.get(base, base)}
    return names


def _unused_finding(kind: str, name: str, where: Where, why: str) -> LintFinding:
    return LintFinding("unused", f"{kind} '{name}' is defined but no opening uses it{why}", where, definition=(kind, name))


__all__ = ["KINDS", "SEVERITY_OF", "HELP", "LintFinding", "LintReport", "lint", "fail"]
