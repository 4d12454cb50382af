"""The packets a rule selects: its matches, set lookups and map keys as packet spaces.

Bounds are built one field at a time in a dict, dimension → allowed values
(an interface or ct bit mask, or intervals); `_empty` marks bounds that
nothing satisfies.
"""

from __future__ import annotations

from dataclasses import replace

from netaddr import IPNetwork, IPRange

from fwmatrix.audit.evaluate.addrtype import TYPE_FIELDS, UNKNOWN, OwnAddresses, local_parts
from fwmatrix.audit.evaluate.bridged import FIELD as BRIDGED_FIELD, bridged_parts
from fwmatrix.audit.evaluate.effective import EvaluationError
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.ir import Match, Rule, SetDef, Table, TcpFlags, Unmodelled, Verdict
from fwmatrix.matrix.model import PortRange
from fwmatrix.space import (
    ADDR_ALL, PORT_DIM_ALL, PROTO_ALL, physical, CT_ALL, CT_DNAT, ICMP_TYPES_ALL, PORT_PROTOCOLS, PORTS_ALL, V4_ALL, V6_ALL, icmp_values,
    Box, Interfaces, Intervals, Space, addr_interval, ct_bits, iv_and, iv_norm,
)

# Fields the IR carries but packet spaces have no dimension for: a match on them
# is judged both ways, like any unmodelled construct, over the packets the rule's
# other matches select. Of the ct status bits only dnat is modelled (the ct dimension
# knows translated connections). The hop limit is read by the neighbour-discovery
# check (evaluate/neighbours.py). TCP flags and address types
# ('local' with the firewall's own addresses): see `exact_parts`. ICMP types are exact:
# the port dimension carries them (fwmatrix/space).
UNMODELLED_FIELDS = frozenset({"sport", "tcp.flags", "daddr.type", "saddr.type", "physdev.bridged",
                               "socket", "exthdr", "ttl", "hoplimit"})  # a socket match a hook did not settle (sockets.py): both ways
MODELLED_CT_STATUS = "dnat"
ICMP_FIELDS = ("icmp.type", "icmpv6.type", "icmp.code", "icmpv6.code")
# The flags of the first packet of a NEW TCP connection, the only one an opening is
# judged by: SYN, without FIN, RST and ACK. Its other flags (PSH, URG, ECN, CWR: an
# ECN-setup SYN carries the last two) are not known.
NEW_TCP_MASK = 0x17  # fin|syn|rst|ack
NEW_TCP_VALUE = 0x02
NOT_NEW = "a TCP flags match on packets that are not the first of a NEW connection"
# the fields one of exact_parts' part functions splits a rule by (or drops it for)
PARTED_FIELDS = frozenset({"exthdr", "tcp.flags", BRIDGED_FIELD, *TYPE_FIELDS})
# fields whose plain matches rule_space cannot narrow the bounds by at once (see `_unmodelled`)
_NOT_PLAIN = UNMODELLED_FIELDS | {"ct.status"}


def exact_parts(rule: Rule, own: OwnAddresses = UNKNOWN, interfaces: tuple[str, ...] = ()) -> list[Rule]:
    """The rule as parts with disjoint packets that the walk judges one after the other,
    with its action: itself, unless it tests whether an address is the firewall's own
    (addrtype.local_parts), whether the packet is bridged (bridged.bridged_parts, over the
    `interfaces`), TCP flags (`_flag_parts`) or an IPv6 extension header (`_exthdr_parts`)."""
    for m in rule.matches:  # a loop, not any() over a generator: asked of every rule
        if isinstance(m, Match) and not PARTED_FIELDS.isdisjoint(m.fields):
            break
    else:
        return [rule]  # none of those matches (most rules): each part function would give the rule back
    return [part for whole in _exthdr_parts(rule) for local in local_parts(whole, own) for bridged in bridged_parts(local, interfaces)
            for part in _flag_parts(bridged)]


def _exthdr_parts(rule: Rule) -> list[Rule]:
    """The rule, or no part when it drops (or rejects) only packets with an IPv6 extension
    header (`-m rt --rt-type 0 -j DROP`): the audit's packets carry none, and removing
    others opens nothing. With any other action it could let through packets the audit
    does not model: the match is judged both ways (UNMODELLED_FIELDS)."""
    needs_header = any(isinstance(m, Match) and "exthdr" in m.fields and not m.negate for m in rule.matches)
    if needs_header and isinstance(rule.action, Verdict) and rule.action.kind in ("drop", "reject"):
        return []
    return [rule]


def _flag_parts(rule: Rule) -> list[Rule]:
    """The rule as parts for TCP flags: itself, unless it matches them. The first packet of a NEW connection has known flags
    (NEW_TCP_*), so a flags match that only tests those is exact for `ct state new`:
    one part, the rule over NEW packets without the flags match (when it matches them)
    and one over the other states with the flags match left unmodelled (judged both
    ways). A flags match that tests other flags stays unmodelled for every state."""
    flags = [m for m in rule.matches if isinstance(m, Match) and m.fields == ("tcp.flags",) and m.set_name is None]
    if not flags:
        return [rule]
    outcomes = [_on_new_syn(match) for match in flags]
    if None in outcomes:
        return [rule]
    rest = tuple(m for m in rule.matches if m not in flags)
    not_new = [] if _only_new(rest) else [replace(rule, matches=rest + (Match(("ct.state",), (("new",),), negate=True), Unmodelled(NOT_NEW)))]
    if not all(outcomes):
        return not_new
    return [replace(rule, matches=rest + (Match(("ct.state",), (("new",),)),)), *not_new]


def _only_new(matches: tuple) -> bool:
    """Whether a plain `ct state` match among `matches` admits NEW packets only (`ct state new`)."""
    return any(isinstance(m, Match) and m.fields == ("ct.state",) and m.set_name is None and not m.negate
               and {key[0] for key in m.values} <= {"new"} for m in matches)


def _on_new_syn(match: Match) -> bool | None:
    """Whether a tcp.flags match holds for the first packet of a NEW connection; None when
    that depends on flags it does not fix."""
    results = set()
    for (flags,) in match.values:
        assert isinstance(flags, TcpFlags)
        if flags.mask & NEW_TCP_MASK & (flags.value ^ NEW_TCP_VALUE):
            results.add(False)
        elif flags.mask & ~NEW_TCP_MASK or flags.value & ~flags.mask:
            results.add(None)
        else:
            results.add(True)
    holds = True if True in results else None if None in results else False
    return holds if holds is None or not match.negate else not holds


def rule_space(reading: Reading, table: Table, rule: Rule, origin: str) -> tuple[Space, bool] | None:
    """The packets a rule's matches select, and whether an unmodelled match was left
    out of them; None when the rule is assumed not to match (the other reading).

    Plain matches on one field narrow one box's bounds (cheap); set lookups,
    concatenations and negations are spaces of their own, intersected last."""
    ifaces = reading.ifaces
    bounds: dict[str, object] = {}
    if table.family in ("ip", "ip6"):
        family = V4_ALL if table.family == "ip" else V6_ALL
        bounds["src"] = bounds["dst"] = family
    parts: list[Space] = []
    lookup: Match | None = None  # a set lookup whose elements take the other matches' bounds (set_space's `within`)
    uncertain = False
    pending: list[tuple[str, tuple]] = []  # plain matches on other fields than addresses, narrowed by at once
    for match in rule.matches:
        if match.__class__ is Match and match.set_name is None and not match.negate and len(match.fields) == 1 \
                and match.fields[0] not in _NOT_PLAIN:  # most matches: one field's values (`tcp dport { 22, 80 }`)
            sides = ADDRESS_FIELDS.get(match.fields[0])
            if sides is None:
                pending.append((match.fields[0], match.values))
            else:
                _narrow_by_addresses(bounds, sides, match.values)
            continue
        if pending:  # in the matches' order, before anything else: a bad value is named where it was
            _narrow_by_all(bounds, pending, ifaces)
            pending = []
        if isinstance(match, Match) and match.set_name is not None and table.set(match.set_name).dynamic:
            # the packet path adds to the set: it may hold anything of its type, or nothing
            reading.note_unmodelled(origin, f"a lookup of @{match.set_name}, a set the packet path adds to (it may hold any {' . '.join(match.fields)})")
            if not reading.assume:
                return None
            uncertain = True
            parts.append(reading.family_space(table).intersect(_implied(reading.full, match.fields)))
            continue
        if isinstance(match, Match) and _unmodelled(match):
            match = Unmodelled(_match_text(match))
        if isinstance(match, Unmodelled):
            reading.note_unmodelled(origin, match.text)
            if not reading.assume:
                return None
            uncertain = True
            continue
        if len(match.fields) == 1 and match.set_name is None and not match.negate:
            _narrow_by_values(bounds, match.fields[0], match.values, ifaces)
            continue
        if match.set_name is not None:
            if lookup is None and not match.negate:
                lookup = match
                continue
            part = set_space(reading, match.fields, table.set(match.set_name))
        else:
            part = Space(ifaces, [b for key in match.values for b in key_space(reading, match.fields, key).boxes])
        if match.negate:
            part = reading.family_space(table).intersect(_implied(reading.full, match.fields)).subtract(part)
        parts.append(part)
    if pending:
        _narrow_by_all(bounds, pending, ifaces)
    if lookup is None:
        space = _space_of(reading, bounds)
    elif bounds.pop("_empty", False):
        space = Space.empty(ifaces)
    else:  # each element's box within the bounds, not the box of the bounds intersected with each (as sets the same)
        space = set_space(reading, lookup.fields, table.set(lookup.set_name), bounds)  # type: ignore[arg-type]
    if parts:
        for part in sorted(parts, key=len):
            if not space:
                break
            space = space.intersect(part)
    return space, uncertain


def set_space(reading: Reading, fields: tuple[str, ...], set_def: SetDef, within: dict[str, object] | None = None) -> Space:
    """The packets whose `fields` are one of the set's keys (and `within` these bounds, when
    given: a rule's other matches): each element's boxes as `key_space` makes them (within the
    bounds), in the elements' order (see `_SetShape`)."""
    shape = _SetShape(reading.ifaces, fields, within)
    boxes: list[Box] = []
    for element in set_def.elements:
        boxes += shape.boxes(element.key)
    return Space(reading.ifaces, boxes)


_GENERAL = object()  # a template that puts no key's addresses into boxes of its own: each key the general way


class _SetShape:
    """How the keys of a set with these `fields` become boxes. A set of thousands of elements
    repeats a few protocols, ports and interfaces: what its other fields allow, and the boxes'
    protocols and ports, are worked out once per distinct combination of them (`_template`);
    its addresses, nearly all distinct, become each key's intervals in those boxes."""

    def __init__(self, ifaces: Interfaces, fields: tuple[str, ...], within: dict[str, object] | None = None):
        self.ifaces, self.fields = ifaces, fields
        self.common: dict[str, object] = dict(within or {})  # what every key asks: the bounds, the families of its address fields
        self.seen: list[dict[object, tuple[tuple[str, object], ...]]] = [{} for _ in fields]  # by field: value -> _allowed
        self.addresses: list[tuple[int, bool]] = []  # the address fields: position, and whether it is the source
        for position, f in enumerate(fields):
            sides = ADDRESS_FIELDS.get(f)
            if sides is not None:
                _narrow(self.common, (("src", sides[2]), ("dst", sides[2])))
                self.addresses.append((position, sides[0] == "src"))
        self.others = tuple(i for i in range(len(fields)) if i not in {position for position, _ in self.addresses})
        # keys of one address on each side at most (a key of none, or of two on one side, goes the general way)
        self.quick = 0 < len(self.addresses) == len({source for _, source in self.addresses})
        self.templates: dict[tuple, object] = {}  # the values of the other fields -> _template

    def boxes(self, key: tuple) -> list[Box]:
        """The key's boxes: physical(...) of its bounds, as `_general` makes them."""
        if not self.quick or len(key) != len(self.fields):
            return self._general(key)
        rest = tuple([key[i] for i in self.others])
        template = self.templates.get(rest, _GENERAL)
        if template is _GENERAL and rest not in self.templates:
            template = self.templates[rest] = self._template(key)
        if template is None:
            return []
        if template is _GENERAL:
            return self._general(key)
        iif, oif, src, dst, services, ct = template  # type: ignore[misc]
        for position, source in self.addresses:
            low, high = addr_interval(key[position])
            bound = src[0] if source else dst[0]
            if not bound[0] <= low <= high <= bound[1]:
                return self._general(key)  # not within the one interval that side allows
            if source:
                src = ((low, high),)
            else:
                dst = ((low, high),)
        return [Box(iif, oif, src, dst, proto, dport, ct) for proto, dport in services]

    def _template(self, key: tuple) -> object:
        """What a key's fields but its addresses allow: the interface and ct bits, each address
        side's one interval (of one family) and the protocols and ports of the boxes; None when
        no key with these values selects anything, _GENERAL when the bounds are not of that kind."""
        bounds = self.common.copy()
        for position in self.others:
            _narrow(bounds, self._allowed(position, key[position]))
        if bounds.pop("_empty", False):
            return None
        src, dst = bounds.get("src", ADDR_ALL), bounds.get("dst", ADDR_ALL)
        family = V4_ALL[0] if src[0][0] >= V4_ALL[0][0] else V6_ALL[0]  # type: ignore[index]
        if not (len(src) == len(dst) == 1 and family[0] <= src[0][0] and src[0][1] <= family[1]  # type: ignore[arg-type, index]
                and family[0] <= dst[0][0] and dst[0][1] <= family[1]):  # type: ignore[index]
            return _GENERAL
        every = self.ifaces.all
        iif, oif, ct = bounds.get("iif", every), bounds.get("oif", every), bounds.get("ct", CT_ALL)
        # within one family, physical makes one box per service, in its order
        services = [(b.proto, b.dport) for b in physical(iif, oif, src, dst, bounds.get("proto", PROTO_ALL),  # type: ignore[arg-type]
                                                          bounds.get("dport", PORT_DIM_ALL), ct)]  # type: ignore[arg-type]
        return (iif, oif, src, dst, services, ct) if services else None

    def _allowed(self, position: int, value: object) -> tuple[tuple[str, object], ...]:
        """`_allowed` of the field at `position` = value, remembered."""
        seen = self.seen[position]
        allowed = seen.get(value)
        if allowed is None:
            allowed = seen[value] = _allowed(self.fields[position], value, self.ifaces)
        return allowed

    def _general(self, key: tuple) -> list[Box]:
        """The key's boxes, field by field (an address side's value computed for the key alone)."""
        bounds = self.common.copy()
        for position, (f, value) in enumerate(zip(self.fields, key)):
            sides = ADDRESS_FIELDS.get(f)
            if sides is not None:
                _narrow(bounds, ((sides[0], (addr_interval(value),)),))  # type: ignore[arg-type]
            else:
                _narrow(bounds, self._allowed(position, value))
        if bounds.pop("_empty", False):
            return []
        get, every = bounds.get, self.ifaces.all
        return physical(get("iif", every), get("oif", every), get("src", ADDR_ALL), get("dst", ADDR_ALL),  # type: ignore[arg-type]
                        get("proto", PROTO_ALL), get("dport", PORT_DIM_ALL), get("ct", CT_ALL))  # type: ignore[arg-type]


def key_space(reading: Reading, fields: tuple[str, ...], key: tuple) -> Space:
    """The packets whose `fields` are `key` (a set element, a map key)."""
    bounds: dict[str, object] = {}
    for f, value in zip(fields, key):
        _constrain(bounds, f, value, reading.ifaces)
    return _space_of(reading, bounds)


def _space_of(reading: Reading, bounds: dict[str, object]) -> Space:
    """The box the bounds describe, whole in every dimension they leave out; empty when marked so."""
    ifaces = reading.ifaces
    if bounds.pop("_empty", False):
        return Space.empty(ifaces)
    get, every = bounds.get, ifaces.all  # Space.make's box, without its keywords
    return Space(ifaces, physical(get("iif", every), get("oif", every), get("src", ADDR_ALL), get("dst", ADDR_ALL),  # type: ignore[arg-type]
                                  get("proto", PROTO_ALL), get("dport", PORT_DIM_ALL), get("ct", CT_ALL)))  # type: ignore[arg-type]


def _constrain(bounds: dict[str, object], f: str, value: object, ifaces: Interfaces) -> None:
    """Narrow `bounds` by one field = value."""
    _narrow(bounds, _allowed(f, value, ifaces))


def _narrow(bounds: dict[str, object], allowed: tuple[tuple[str, object], ...]) -> None:
    """Narrow `bounds` by what `_allowed` gives; `_empty` when a dimension has nothing left."""
    for dim, values in allowed:
        current = bounds.get(dim)
        if current is None or current is values:
            bounds[dim] = values
        elif isinstance(values, int):
            bounds[dim] = current & values  # type: ignore[operator]
        elif current and len(values) == 1 and values[0][0] <= current[0][0] and current[-1][1] <= values[0][1]:  # type: ignore[index]
            continue  # within one interval (a family): what iv_and would give back
        else:
            bounds[dim] = iv_and(current, values)  # type: ignore[arg-type]
        if not bounds[dim]:
            bounds["_empty"] = True


def _allowed(f: str, value: object, ifaces: Interfaces) -> tuple[tuple[str, object], ...]:
    """What one field = value allows, by dimension: an interface or ct bit mask, or intervals
    (a dimension may come twice: both hold)."""
    if f in ("iif", "oif", "ether.saddr"):
        dim = "iif" if f == "ether.saddr" else f  # a MAC source is atoms of every in-interface (intervals.Interfaces)
        bits = ifaces.mask(str(value)) if dim == f else ifaces.mac(str(value))
        if bits is None:
            raise EvaluationError(f"no atoms for MAC {value}: the interface universe was not made with interfaces_of")
        return ((dim, ifaces.all & bits),)
    if f in ADDRESS_FIELDS:
        assert isinstance(value, (IPNetwork, IPRange))
        side, _, family = ADDRESS_FIELDS[f]
        return (("src", family), ("dst", family), (side, (addr_interval(value),)))
    if f == "l4proto":
        return (("proto", ((int(value), int(value)),)),)  # type: ignore[call-overload]
    if f == "dport":
        port = value if isinstance(value, PortRange) else PortRange(int(value), int(value))  # type: ignore[call-overload]
        return (("dport", ((port.low, port.high),)), ("proto", PORT_PROTOCOLS))
    if f in ICMP_FIELDS:  # ICMP's header in IPv4 only, ICMPv6's in IPv6 (nft's dependency, xt's family)
        protocol, family = (1, V4_ALL) if f.startswith("icmp.") else (58, V6_ALL)
        low, high = (value.low, value.high) if isinstance(value, PortRange) else (int(value), int(value))  # type: ignore[call-overload]
        if f.endswith(".type"):
            values = iv_norm(icmp_values(t)[0] for t in range(low, high + 1))
        else:  # the code under every type
            values = iv_norm((icmp_values(t, low)[0][0], icmp_values(t, high)[0][0]) for t in range(256))
        return (("proto", ((protocol, protocol),)), ("src", family), ("dst", family), ("dport", values))
    if f in ("ct.state", "ct.status"):
        if f == "ct.status" and value != MODELLED_CT_STATUS:
            raise EvaluationError(f"no evaluation for ct status {value!r}")
        return (("ct", CT_ALL & (ct_bits(str(value)) if f == "ct.state" else CT_DNAT)),)
    if f == "nfproto":
        family = V4_ALL if int(value) == 4 else V6_ALL  # type: ignore[call-overload]
        return (("src", family), ("dst", family))
    raise EvaluationError(f"no evaluation for field {f!r}")


ADDRESS_FIELDS = {"ip.saddr": ("src", "dst", V4_ALL), "ip.daddr": ("dst", "src", V4_ALL),
                  "ip6.saddr": ("src", "dst", V6_ALL), "ip6.daddr": ("dst", "src", V6_ALL)}


def _narrow_by_values(bounds: dict[str, object], f: str, values: tuple, ifaces: Interfaces) -> None:
    """Narrow `bounds` by `f` being one of `values`: the union of what each value allows."""
    sides = ADDRESS_FIELDS.get(f)
    if sides is not None:  # addresses (the longest lists, nearly all distinct), at once: their intervals united
        _narrow_by_addresses(bounds, sides, values)
        return
    union = _values_allowed(f, values, ifaces)
    if not union:
        bounds["_empty"] = True
        return
    _meet_bounds(bounds, union)


def _narrow_by_all(bounds: dict[str, object], matches: list[tuple[str, tuple]], ifaces: Interfaces) -> None:
    """Narrow `bounds` by each (field, values) of `matches`: what they allow together, remembered by
    the list (a ruleset written by hand names the same interfaces, protocols and ports rule after
    rule), merged into the bounds at once (the same intersection, in another order)."""
    if len(matches) == 1:
        _narrow_by_values(bounds, *matches[0], ifaces)
        return
    key: tuple | None = tuple(matches)
    try:
        known = _COMBINED.get(key)  # type: ignore[arg-type]
    except TypeError:  # a value that cannot be hashed: worked out each time
        known, key = None, None
    if known is not None and known[0] is ifaces:
        combined = known[1]
    else:
        combined = {}
        for f, values in matches:
            _narrow_by_values(combined, f, values, ifaces)
        if key is not None:
            if len(_COMBINED) >= MAX_UNIONS:
                _COMBINED.clear()
            _COMBINED[key] = (ifaces, combined)
    _meet_bounds(bounds, combined)


def _meet_bounds(bounds: dict[str, object], allowed: dict[str, object]) -> None:
    """Narrow `bounds` to what `allowed` allows too, dimension by dimension (a bitmask by AND, an
    interval set by intersection); `_empty` when a dimension is left with nothing."""
    if bounds.keys().isdisjoint(allowed):  # dimensions the bounds do not have yet (a rule's addresses, then the rest): as the loop
        bounds.update(allowed)
        if not all(allowed.values()):
            bounds["_empty"] = True
        return
    for dim, value in allowed.items():
        if dim == "_empty":
            bounds["_empty"] = True
            continue
        if dim not in bounds:
            bounds[dim] = value
        elif isinstance(value, int):
            bounds[dim] = bounds[dim] & value  # type: ignore[operator]
        else:
            bounds[dim] = iv_and(bounds[dim], value)  # type: ignore[arg-type]
        if not bounds[dim]:
            bounds["_empty"] = True


def _narrow_by_addresses(bounds: dict[str, object], sides: tuple[str, str, Intervals], values: tuple) -> None:
    """Narrow `bounds` by an address field being one of `values`: its side to their intervals within
    the field's family, the other side to the family (what `_constrain` allows of each, united)."""
    side, other, family = sides
    family_low, family_high = family[0]
    if len(values) == 1:
        low, high = addr_interval(values[0][0])
        addresses = ((low, high),) if family_low <= low <= high <= family_high else iv_and(iv_norm(((low, high),)), family)
    else:
        known = _ADDRESSES.get((id(values), family_low))
        if known is not None and known[0] is values:
            addresses = known[1]
        else:
            addresses = iv_norm([addr_interval(key[0]) for key in values])
            if not (addresses and family_low <= addresses[0][0] and addresses[-1][1] <= family_high):
                addresses = iv_and(addresses, family)
            if len(_ADDRESSES) >= MAX_UNIONS:
                _ADDRESSES.clear()
            _ADDRESSES[id(values), family_low] = (values, addresses)
    if not addresses:
        bounds["_empty"] = True
        return
    current = bounds.get(side)  # within the family now: as it, or the family it was (an ip table's)
    bounds[side] = addresses if current is None or current is family else iv_and(current, addresses)  # type: ignore[arg-type]
    current = bounds.get(other)
    if current is None:
        bounds[other] = family
    elif current is not family and not (current and family_low <= current[0][0] and current[-1][1] <= family_high):  # type: ignore[index]
        bounds[other] = iv_and(current, family)  # type: ignore[arg-type]  (within it, iv_and gives `current` back)
    if not bounds[side] or not bounds[other]:
        bounds["_empty"] = True


def _values_allowed(f: str, values: tuple, ifaces: Interfaces) -> dict[str, object]:
    """What `f` being one of `values` allows, by dimension (the union of what each allows;
    empty: nothing). Remembered by field and values: a ruleset written by hand names the same
    protocols, ports and interfaces rule after rule (14,886 rules, 840 distinct lists at 10k)."""
    key = (f, values)
    try:
        known = _UNIONS.get(key)
    except TypeError:  # a value that cannot be hashed: worked out each time
        known, key = None, None
    if known is not None and known[0] is ifaces:
        return known[1]
    union: dict[str, object] = {}
    for value in values:
        one: dict[str, object] = {}
        _constrain(one, f, value[0], ifaces)
        if one.pop("_empty", False):
            continue
        for dim, allowed in one.items():
            if dim not in union:
                union[dim] = allowed if isinstance(allowed, int) else list(allowed)
            elif isinstance(allowed, int):
                union[dim] = union[dim] | allowed  # type: ignore[operator]
            else:
                union[dim] += allowed  # type: ignore[operator]  (normalised once below: a set of n values costs n log n)
    union = {dim: allowed if isinstance(allowed, int) else iv_norm(allowed) for dim, allowed in union.items()}  # type: ignore[arg-type]
    if key is not None:
        if len(_UNIONS) >= MAX_UNIONS:
            _UNIONS.clear()
        _UNIONS[key] = (ifaces, union)
    return union


_UNIONS: dict[tuple[str, tuple], tuple[Interfaces, dict[str, object]]] = {}  # (field, values) -> (universe, what they allow)
MAX_UNIONS = 1 << 14  # more, and it starts again
_COMBINED: dict[tuple, tuple[Interfaces, dict[str, object]]] = {}  # a rule's (field, values) list -> (universe, what they allow)
# an address list's intervals within a family, by the list's identity (the list kept, so that its id stays its
# own): the nftables reader gives every rule that repeats an address list the same one (3 uses each at 10k)
_ADDRESSES: dict[tuple[int, int], tuple[tuple, Intervals]] = {}


def _implied(full: Space, fields: tuple[str, ...]) -> Space:
    """What a field's mere presence requires (`ip saddr` only exists in IPv4 packets;
    `th dport` only in port protocols): the universe of a negated match."""
    bounds: dict[str, object] = {}
    for f in fields:
        if f == "ether.saddr":  # only Ethernet packets have one: `ether saddr != X` never holds for the others
            bounds["iif"] = full.ifaces.ethernet
        elif f.startswith("ip."):
            bounds["src"] = bounds["dst"] = V4_ALL
        elif f.startswith("ip6."):
            bounds["src"] = bounds["dst"] = V6_ALL
        elif f == "dport":
            bounds["proto"] = PORT_PROTOCOLS
            bounds["dport"] = PORTS_ALL
        elif f in ICMP_FIELDS:
            protocol, family = (1, V4_ALL) if f.startswith("icmp.") else (58, V6_ALL)
            bounds["proto"] = ((protocol, protocol),)
            bounds["src"] = bounds["dst"] = family
            bounds["dport"] = ICMP_TYPES_ALL
    return full.intersect(full.make(**bounds)) if bounds else full


# why a match on these fields is judged both ways, for the finding
WHY_UNMODELLED = {
    "exthdr": "an IPv6 extension header or IPv4 options, which the audit's packets do not carry; a rule that does more than "
              "drop with it could let such packets through",
    "hoplimit": "the hop limit, which the matrix does not fix for forwarded packets",
    "ttl": "the TTL, which the matrix does not fix for forwarded packets",
}


def _match_text(match: Match) -> str:
    values = ", ".join(" . ".join(str(v) for v in key) for key in match.values) or f"@{match.set_name}"
    why = "".join(f" ({WHY_UNMODELLED[f]})" for f in match.fields if f in WHY_UNMODELLED)
    return f"a match on {' . '.join(match.fields)} {'!=' if match.negate else '=='} {values}{why}"


def _unmodelled(match: Match) -> bool:
    """A match on a field packet spaces have no dimension for (or a ct status bit but dnat)."""
    if UNMODELLED_FIELDS.intersection(match.fields):
        return True
    if "ct.status" not in match.fields:
        return False
    position = match.fields.index("ct.status")
    return match.set_name is not None or any(key[position] != MODELLED_CT_STATUS for key in match.values)
