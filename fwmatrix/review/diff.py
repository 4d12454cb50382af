"""Review: what a change of the matrix opens and closes, per firewall.

Both matrices are placed (the same intent the compiler uses) and compared as
packet spaces, so the review says what changes in traffic, not in text: a
rename or a reordering opens and closes nothing, a host's new address moves
every opening that names it. Each opened or closed region is named by the
openings that grant (or granted) it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fwmatrix.audit.findings import CT_NEW, flow_space
from fwmatrix.compile.ruleset import Memo, compile_firewall
from fwmatrix.compile.intent import Dnat, Intent
from fwmatrix.matrix.model import Matrix, Opening
from fwmatrix.review.textdiff import unified
from fwmatrix.ir import Ruleset
from fwmatrix.space import Box, Interfaces, Space
from fwmatrix.targets import backend


@dataclass(frozen=True)
class OpeningChange:
    firewall: str
    kind: str  # 'added', 'removed', 'widened', 'narrowed', 'changed', 'renamed'
    name: str
    old_name: str = ""
    opened: tuple[str, ...] = ()
    closed: tuple[str, ...] = ()
    note: str = ""
    line: int = 0  # in the new matrix (0 when removed)


@dataclass(frozen=True)
class NatChange:
    firewall: str
    kind: str  # 'added', 'removed', 'changed'
    what: str  # "tcp/443 of 203.0.113.10 (from wan0)"
    old: str = ""
    new: str = ""
    opening: str = ""


@dataclass(frozen=True)
class DefinitionChange:
    kind: str  # 'host', 'service', 'zone', 'group', 'firewall', 'management'
    name: str
    old: str
    new: str
    moves: tuple[str, ...] = ()  # openings whose traffic this change moves


@dataclass
class FirewallReview:
    name: str
    opened: list[str] = field(default_factory=list)  # readable regions
    closed: list[str] = field(default_factory=list)
    before: Space | None = None  # what the old matrix opens on this firewall (NEW connections)
    after: Space | None = None
    opened_space: Space | None = None
    closed_space: Space | None = None
    openings: list[OpeningChange] = field(default_factory=list)
    nat: list[NatChange] = field(default_factory=list)
    ruleset_diffs: dict[str, str] = field(default_factory=dict)  # file name -> unified diff

    @property
    def changed(self) -> bool:
        return bool(self.opened or self.closed or self.nat)


@dataclass
class Review:
    old_label: str
    new_label: str
    firewalls: list[FirewallReview]
    definitions: list[DefinitionChange]
    renames: list[tuple[str, str]]

    @property
    def changed(self) -> bool:
        return any(fw.changed for fw in self.firewalls)

    def summary(self) -> str:
        parts = []
        for fw in self.firewalls:
            if not fw.changed:
                continue
            bits = []
            if fw.opened:
                bits.append(f"opens {len(fw.opened)} flow{'s' if len(fw.opened) != 1 else ''}")
            if fw.closed:
                bits.append(f"closes {len(fw.closed)}")
            if fw.nat:
                bits.append(f"changes {len(fw.nat)} NAT")
            parts.append(f"{', '.join(bits)} on firewall {fw.name}")
        if not parts:
            if any(d.kind == "management" for d in self.definitions):
                return "no change in what is open; management access to a firewall changed"
            if self.renames or self.definitions:
                return "no change in what is open (names, order or notes only)"
            return "no change in what is open"
        return "; ".join(parts)

    def to_json(self) -> dict:
        return {
            "schema": "fwmatrix.diff/1",
            "old": self.old_label,
            "new": self.new_label,
            "summary": self.summary(),
            "changed": self.changed,
            "renames": [{"old": a, "new": b} for a, b in self.renames],
            "definitions": [vars(d) | {"moves": list(d.moves)} for d in self.definitions],
            "firewalls": [
                {
                    "name": fw.name,
                    "opened": fw.opened,
                    "closed": fw.closed,
                    "openings": [vars(c) | {"opened": list(c.opened), "closed": list(c.closed)} for c in fw.openings],
                    "nat": [vars(n) for n in fw.nat],
                    "rulesets": fw.ruleset_diffs,
                }
                for fw in self.firewalls
            ],
        }


def review(old: Intent, new: Intent, old_label: str, new_label: str, backends: tuple[str, ...] = ("nftables",),
           firewall: str | None = None) -> Review:
    """The change from `old` to `new` on every firewall of either, or on `firewall` alone."""
    names = sorted(set(old.firewalls) | set(new.firewalls)) if firewall is None else [firewall]
    old_rulesets, new_rulesets = _compiled(old, new, names)
    renames = _renames(old, new)
    firewalls = []
    for name in names:
        ifaces = Interfaces.of(_interfaces(old, name) | _interfaces(new, name))
        fw = FirewallReview(name)
        made = _FlowBoxes()  # a flow's boxes, for the flows alike in both (most)
        old_spaces = _opening_spaces(old, name, ifaces, made)
        new_spaces = _opening_spaces(new, name, ifaces, made)
        old_all = _union(ifaces, old_spaces.values())
        new_all = _union(ifaces, new_spaces.values())
        opened = _changed(new_all, old_all)
        closed = _changed(old_all, new_all)
        fw.before, fw.after, fw.opened_space, fw.closed_space = old_all, new_all, opened, closed
        fw.opened = opened.lines() if opened else []
        fw.closed = closed.lines() if closed else []
        fw.openings = _opening_changes(name, old, new, old_spaces, new_spaces, opened, closed, dict(renames))
        fw.nat = _nat_changes(name, old, new)
        for backend_name in backends:
            module = backend(backend_name)
            before = module.render_files(old_rulesets[name]) if name in old_rulesets else {}
            after = module.render_files(new_rulesets[name]) if name in new_rulesets else {}
            for suffix in sorted(set(before) | set(after)):
                text = _unified(before.get(suffix, ""), after.get(suffix, ""), f"{name}{suffix}")
                if text:
                    fw.ruleset_diffs[f"{name}{suffix}"] = text
        firewalls.append(fw)
    return Review(old_label, new_label, firewalls, _definition_changes(old.matrix, new.matrix, firewalls), renames)


def _interfaces(intent: Intent, firewall: str) -> set[str]:
    fw = intent.matrix.firewalls.get(firewall)
    return set(fw.interfaces) if fw else set()


def _compiled(old: Intent, new: Intent, names: list[str]) -> tuple[dict[str, Ruleset], dict[str, Ruleset]]:
    """The rulesets of the firewalls under review (not the others of the matrices), old and new: the
    new compile takes what the old one made alike (its memo, freed once both are made)."""
    memos = {name: Memo() for name in names}
    before, after = ({name: compile_firewall(intent, intent.firewalls[name], memos[name]) for name in names if name in intent.firewalls}
                     for intent in (old, new))
    return before, after


def _opening_spaces(intent: Intent, firewall: str, ifaces: Interfaces, made: _FlowBoxes) -> dict[str, Space]:
    """Each opening's NEW connections on the firewall. The boxes of a flow are taken from
    `made` when a flow alike was placed before (in the other matrix): the same objects, which
    `_changed` and `_opening_changes` then find equal without comparing them."""
    fw = intent.firewalls.get(firewall)
    out: dict[str, list] = {}
    if fw is None:
        return {}
    full = Space.full(ifaces)
    boxes_of, networks, services = made.boxes.get, made.networks, made.services
    for flow in fw.flows:
        key = (flow.in_iface, flow.out_iface, flow.family, flow.translated, services(flow.parts), networks(flow.sources), networks(flow.destinations))
        boxes = boxes_of(key)
        if boxes is None:
            boxes = made.boxes[key] = flow_space(full, flow, CT_NEW).boxes
        out.setdefault(flow.opening.name, []).extend(boxes)
    return {name: Space(ifaces, boxes) for name, boxes in out.items()}


class _FlowBoxes:
    """Flows' boxes by everything of a flow its packets depend on (all but its opening). The flows'
    tuples of networks and of services (the flows of one endpoint share theirs) are numbered by value
    over both matrices, each tuple read once: a key is then a few strings and small integers, cheap
    to hash. Networks by their number and prefix length, cheaper to read than netaddr's own key."""

    def __init__(self) -> None:
        self.boxes: dict[tuple, list[Box]] = {}
        self.numbers: dict[tuple, int] = {}  # a tuple's value -> its number
        self.of_tuple: dict[int, tuple[tuple, int]] = {}  # id(a flow's tuple) -> (the tuple, its number)

    def networks(self, networks: tuple) -> int:
        found = self.of_tuple.get(id(networks))
        if found is None or found[0] is not networks:
            value = tuple([(n.version, n.value, n.prefixlen) for n in networks])
            found = self.of_tuple[id(networks)] = (networks, self.numbers.setdefault(value, len(self.numbers)))
        return found[1]

    def services(self, parts: tuple) -> int:
        found = self.of_tuple.get(id(parts))
        if found is None or found[0] is not parts:
            found = self.of_tuple[id(parts)] = (parts, self.numbers.setdefault(parts, len(self.numbers)))
        return found[1]


def _union(ifaces: Interfaces, spaces) -> Space:
    return Space(ifaces, [b for s in spaces for b in s.boxes])


def _changed(space: Space, base: Space) -> Space:
    """`space` minus `base`. A box that `base` holds itself (the boxes of the flows alike in both
    matrices: most, a change moves few openings) is dropped before the subtraction, which would
    only find it covered (as it finds any box equal to one of `base`), one by one."""
    kept = {id(box) for box in base.boxes}
    return Space(space.ifaces, [box for box in space.boxes if id(box) not in kept]).subtract(base)


def _opening_changes(firewall: str, old: Intent, new: Intent, old_spaces: dict[str, Space], new_spaces: dict[str, Space],
                     opened: Space, closed: Space, renames: dict[str, str]) -> list[OpeningChange]:
    """Per opening: what of the firewall's opened and closed traffic it grants or granted."""
    new_by_name = {o.name: o for o in new.matrix.openings}
    old_by_name = {o.name: o for o in old.matrix.openings}
    pairs: list[tuple[str | None, str | None]] = []
    for name in old_spaces:
        target = renames.get(name, name)
        pairs.append((name, target if target in new_spaces else None))
    matched = {b for _, b in pairs if b}
    pairs += [(None, name) for name in new_spaces if name not in matched]
    pairs.sort(key=lambda p: (new_by_name[p[1]].index if p[1] in new_by_name else old_by_name[p[0]].index if p[0] else 0, p[0] or ""))

    changes = []
    for old_name, new_name in pairs:
        before = old_spaces.get(old_name) if old_name else None
        after = new_spaces.get(new_name) if new_name else None
        if before is not None and after is not None and before.boxes == after.boxes:
            # the same packets before and after (most openings): inside what the other matrix opens,
            # so none of them is opened or closed
            gained = lost = None
        else:
            gained = after.intersect(opened) if after is not None and opened else None
            lost = before.intersect(closed) if before is not None and closed else None
        if before is None:
            kind = "added"
        elif after is None:
            kind = "removed"
        elif gained and lost:
            kind = "changed"
        elif gained:
            kind = "widened"
        elif lost:
            kind = "narrowed"
        elif new_name != old_name:
            kind = "renamed"
        else:
            continue
        opening = new_by_name.get(new_name or "") or old_by_name[old_name or ""]
        changes.append(OpeningChange(
            firewall, kind, new_name or old_name or "", old_name if old_name and new_name and old_name != new_name else "",
            tuple(gained.lines()) if gained else (), tuple(lost.lines()) if lost else (),
            opening.note, opening.where.line if new_name else 0,
        ))
    return changes


def _renames(old: Intent, new: Intent) -> list[tuple[str, str]]:
    """Openings that only changed name: same rows of traffic, on every firewall."""
    old_names = {o.name for o in old.matrix.openings}
    new_names = {o.name for o in new.matrix.openings}
    gone, came = old_names - new_names, new_names - old_names
    if not gone or not came:
        return []
    fingerprint_old = _fingerprints(old, gone)
    fingerprint_new = _fingerprints(new, came)
    unpaired: dict[tuple, list[str]] = {}  # fingerprint -> new names not paired yet, in order
    for b in sorted(came, reverse=True):
        unpaired.setdefault(fingerprint_new[b], []).append(b)
    out = []
    for a in sorted(gone):  # each old name takes the first free new name with its traffic
        candidates = unpaired.get(fingerprint_old[a])
        if candidates:
            out.append((a, candidates.pop()))
    return out


def _fingerprints(intent: Intent, names: set[str]) -> dict[str, tuple]:
    """Each named opening's traffic on every firewall, in one pass over the flows (not one per name)."""
    rows: dict[str, list[tuple]] = {name: [] for name in names}
    for fw_name, fw in intent.firewalls.items():
        for f in fw.flows:
            found = rows.get(f.opening.name)
            if found is not None:
                found.append((fw_name, f.in_iface, f.out_iface, f.family, tuple(sorted(map(str, f.sources))), tuple(sorted(map(str, f.destinations))), tuple(sorted(map(str, f.parts)))))
        for d in fw.dnats:
            found = rows.get(d.opening.name)
            if found is not None:
                found.append((fw_name, "dnat", d.in_iface, str(d.public), str(d.target), d.target_port, tuple(sorted(map(str, d.parts)))))
    return {name: tuple(sorted(flows)) for name, flows in rows.items()}


def _nat_key(d: Dnat) -> list[tuple[str, str]]:
    return [(f"{part} of {d.public} (from {d.in_iface}, sources {', '.join(map(str, d.sources))})", f"{d.target}" + (f" port {d.target_port}" if d.target_port else "")) for part in d.parts]


def _nat_changes(firewall: str, old: Intent, new: Intent) -> list[NatChange]:
    def table(intent: Intent) -> dict[str, tuple[str, str]]:
        fw = intent.firewalls.get(firewall)
        out: dict[str, tuple[str, str]] = {}
        for d in fw.dnats if fw else ():
            for what, to in _nat_key(d):
                out[what] = (to, d.opening.name)
        return out

    before, after = table(old), table(new)
    changes = []
    for what in sorted(set(before) | set(after)):
        if what not in before:
            changes.append(NatChange(firewall, "added", what, "", after[what][0], after[what][1]))
        elif what not in after:
            changes.append(NatChange(firewall, "removed", what, before[what][0], "", before[what][1]))
        elif before[what][0] != after[what][0]:
            changes.append(NatChange(firewall, "changed", what, before[what][0], after[what][0], after[what][1]))
    return changes


def _definition_changes(old: Matrix, new: Matrix, firewalls: list[FirewallReview]) -> list[DefinitionChange]:
    """Hosts, services, zones and groups whose definition changed, with the openings it moves."""
    moved = {c.name for fw in firewalls for c in fw.openings if c.kind in ("widened", "narrowed", "changed")}
    out = []

    def compare(kind: str, before: dict, after: dict, show) -> None:
        for name in sorted(set(before) & set(after)):
            a, b = show(before[name]), show(after[name])
            if a != b:
                users = tuple(o.name for o in new.openings if o.name in moved and _uses(new, o, name))
                out.append(DefinitionChange(kind, name, a, b, users))

    compare("host", old.hosts, new.hosts, lambda h: "; ".join(f"{k + ': ' if k else ''}{', '.join(map(str, v))}" for k, v in sorted(h.addresses.items())))
    compare("service", old.services, new.services, lambda s: ", ".join(map(str, s.parts)))
    compare("zone", old.zones, new.zones, lambda z: "any" if z.is_any else ", ".join(map(str, z.networks)))
    compare("group", old.groups, new.groups, lambda g: ", ".join(g.members))
    compare("firewall", old.firewalls, new.firewalls, lambda f: "; ".join(f"{i}: {z}" for i, z in sorted(f.interfaces.items())) + " | " + ", ".join(f"{k}: {v}" for k, v in sorted(f.public.items())))
    # what `fwmatrix apply` keeps reachable on the firewall itself (the compiled rulesets do not change)
    compare("management", old.firewalls, new.firewalls, lambda f: "; ".join(a.label(f.name) for a in f.management) or "(none)")
    return out


def _uses(matrix: Matrix, opening: Opening, name: str) -> bool:
    """Whether an opening names `name`, directly or through a group or a role."""
    refs = list(opening.sources + opening.destinations + opening.services) + ([opening.nat.target] if opening.nat else [])
    seen: set[str] = set()
    while refs:
        ref = refs.pop()
        if ref in seen:
            continue
        seen.add(ref)
        base = ref.partition(".")[0]
        if name in (ref, base, matrix.roles.get(base)):
            return True
        if ref in matrix.groups:
            refs.extend(matrix.groups[ref].members)
    return False


def _unified(before: str, after: str, name: str) -> str:
    if before == after:
        return ""
    return unified(before, after, f"a/{name}", f"b/{name}")


__all__ = ["Review", "FirewallReview", "OpeningChange", "NatChange", "DefinitionChange", "review"]
