"""Reading pf rulesets into the IR, with netfilter's semantics: the reader's rules
(syntax.py) become IR chains.

`parse_ruleset` reads a pf.conf, or what `pfctl -sr`, `-sn` or `-sa` prints
(rules expanded, no macros, tables by name only), into the Ruleset IR, so that
the one evaluator judges pf firewalls too. pf's semantics become netfilter's:

* The last matching rule decides, unless a matching rule is `quick`; a packet no
  rule matches passes. That is first match over [quick rules in file order] +
  [the other rules in reverse order], with policy accept. (A quick anchor's rules
  go to the quick part, in their own such order; other anchors are inline.)
* A forwarded packet is filtered twice: in on its input interface, then out on
  its output interface. Two forward base chains: "in" (priority -1, `on` is the
  iif) and "out" (priority 0, `on` is the oif); a rule without in/out is in both.
  The evaluator forwards a packet only if every forward base chain passes it.
  `received-on IF` is a match on the iif; `tagged T` too, when T is set only by
  rules `in on IF` and every packet in on IF meets a block rule (else unmodelled).
* `tagged T`, where T is set by every translation rule and by translation rules only
  (rdr, `match in ... rdr-to`), is `ct status dnat`: the packet was translated. In the
  out pass that holds while no in rule replaced T; the renderer's freebsd pair of
  interface tags (fwm_in_IF_dnat set by rules that ask for `tagged fwm_dnat`, fwm_in_IF
  by their plain twins) is read as IF and translated, IF and not. See _Builder._tag.
* pf looks packets up in its state table before any rule, and pass rules keep
  state unless `no state`: both chains start with `ct state established,related
  accept`. Replies that meet the rules instead (those of `no state` rules, and of
  packets passed by default, which keeps no state) are judged both ways. tcp
  creates state on a SYN only (`flags S/SA`, the default): flags are not
  modelled, a connection is a connection.
* Translation becomes a prerouting nat chain of first-match DNAT rules, and the
  filter chains see translated packets, as pf.conf(5) says for old-style `rdr`
  (FreeBSD; evaluated before the filter, binat first) and for rules after a
  `match ... rdr-to` (OpenBSD). OpenBSD applies every matching `match ... rdr-to`
  at once and later rules see the new packet, so a later one can translate it
  again (the last that matches the packet as it then is wins): the nat chain gets
  the composed translation first. A `pass ... rdr-to` translates only when it is
  the rule that decides: the filter's own first-match order, mirrored in the nat
  chain. Filter rules before a `match ... rdr-to` judged the packet untranslated:
  where that can differ, their verdict on translated packets is left open.
* `rdr pass` and `pass ... rdr-to` pass the translated packet without the rest of
  the in rules (pf.conf(5): "passed without inspecting the filter rules"); the
  out pass is a separate evaluation and still filters it. The nat chain translates
  exactly the packets such a rule decides, so the in chain accepts its image with
  `ct status dnat` (a packet sent to the target's own address is not translated and
  meets the rules). `ct status dnat` says translated, not by which rule: where a
  translation that leaves its packets to the filter rules (`match ... rdr-to`, plain
  `rdr`, an anchor's) can make the same packet, that accept is judged both ways.
* Source NAT (`nat`, `nat-to`, binat's outbound half) does not change what is
  forwarded and is skipped; `nat pass` lets the packet out without the out rules.
  binat's inbound half is a DNAT (one address to one address; else unmodelled).

What cannot be modelled is kept as ir.Unmodelled / ir.UnmodelledAction, never
dropped: the package's docstring (__init__.py) lists it.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Iterable, Iterator, Mapping, Sequence

from netaddr import IPAddress, IPNetwork, IPSet

from fwmatrix.backends.pf.include import Includes
from fwmatrix.backends.pf.names import _DIALECT_RE, DIALECTS
from fwmatrix.backends.pf.own import OwnAddresses
from fwmatrix.backends.pf.overlap import _LOOPBACK_RE, _NEVER_FORWARDED, _PORTS_ALL, _port_set, _ports_contain
from fwmatrix.backends.pf.reader import _Reader
from fwmatrix.backends.pf.readlocal import input_chain
from fwmatrix.backends.pf.natout import out_rule
from fwmatrix.backends.pf.readnat import source_nat_chain
from fwmatrix.backends.pf.tags import (
    _TRANSLATED, Alts, _aside, _applies, _is_pass_rdr, _passes_in, _TagInfo, _Tags, _translates_and_passes, _verdict,
)
from fwmatrix.backends.pf.syntax import _Group, _Host, _If, _Item, _Opaque, _Ports, _Route, _Rule, _Seen, _Target
from fwmatrix.errors import BackendError
from fwmatrix.targets import include_directory
from fwmatrix.ir import (
    PRIORITY_DSTNAT, PRIORITY_FILTER, PRIORITY_SRCNAT, Action, Chain, Dnat, Match, Rule, Ruleset, Table, Unmodelled, UnmodelledAction, Verdict, addr_field,
    packet_copies,
)

PARSED_TABLE = "pf"
PRIORITY_IN, PRIORITY_OUT = -1, 0  # the in pass judges a packet before the out pass
_ESTABLISHED = Match(("ct.state",), (("established",), ("related",)))
_OLD_TRANSLATION_RE = re.compile(r"^\s*(@\d+\s+)?(no\s+)?(rdr|nat|binat)(\s+pass)?(\s+log)?\s+on\b", re.MULTILINE)


# -- the builder: items -> IR chains -----------------------------------------------------


def _opened(items: Iterable[_Item]) -> Iterator[_Seen]:
    """Rules and opaque items in file order, anchors opened."""
    for item in items:
        if isinstance(item, _Group):
            yield from _opened(item.items)
        else:
            yield item



def _compose(first: _Target, then: _Target) -> _Target:
    return _Target(then.address, then.port if then.port is not None else first.port, then.text)


def _translated_by(rule: _Rule, other: str) -> Unmodelled:
    # `ct status dnat` says translated, not by which rule: exact only when no translation that
    # leaves the packet to the filter rules can make the same packet (see _Builder._translated_rules).
    return Unmodelled(f"packets translated by {rule.origin}: pf passes them without the rest of the in rules, "
                      f"and fwmatrix cannot tell them from the packets {other} translates to the same header")


def _finish_matches(matches: Sequence[Match | Unmodelled], family: int | None) -> tuple[Match | Unmodelled, ...]:
    """Matches first, every unmodelled part joined into one at the end; the family when no
    address field implies it."""
    known = list(dict.fromkeys(m for m in matches if isinstance(m, Match)))
    texts = list(dict.fromkeys(m.text for m in matches if isinstance(m, Unmodelled)))
    if family is not None and not any(f.startswith("ip") for m in known for f in m.fields):
        known.insert(0, Match(("nfproto",), ((family,),)))
    return tuple(known) + ((Unmodelled("; ".join(texts)),) if texts else ())




class _Builder(_Tags):
    def __init__(self, reader: _Reader, items: list[_Item]) -> None:
        super().__init__(reader)
        self.items = items
        self.flat = list(_opened(items))
        self.rules = [r for r in self.flat if isinstance(r, _Rule)]
        self._tags: dict[str, _TagInfo] = {}
        self._translation_tags: dict[tuple[str, str], bool] = {}
        # tags set where no rule of self.rules shows it (see _Reader.hidden; an anchor's or a
        # binat's conditions). The rules of anchors not given are assumed to set no tag: what
        # they do is unmodelled already.
        self._hidden = reader.hidden + [o.cond for o in self.flat if isinstance(o, _Opaque) and o.cond.tag is not None]
        # OpenBSD: where each in-pass rule stands among the rules translation sees, and the
        # translations match rules make (from the position of the first one): rules before
        # that position judged those packets untranslated
        self._position: dict[int, int] = {}
        self._file_position = {id(r): k for k, r in enumerate(self.flat)}
        self._images: list[tuple[int, list[_Rule], _Target]] = []
        self._decided_by: dict[int, _Rule] = {}
        self._own_chains: list[Chain] = []  # out rules that see a translated source (natout.py)
        self._local = False  # reading the in rules for the firewall itself (readlocal.py): its addresses are destinations

    def ruleset(self) -> Ruleset:
        chains = []
        nat = self._nat_chain()  # first: it finds the translations the in chain must know about
        if nat:
            chains.append(Chain("rdr", tuple(nat), hook="prerouting", type="nat", priority=PRIORITY_DSTNAT, policy="accept"))
        for name, priority in (("in", PRIORITY_IN), ("out", PRIORITY_OUT)):
            chains.append(Chain(name, tuple(self._filter_chain(name)), hook="forward", priority=priority, policy="accept"))
        local = input_chain(self)
        if local is not None:
            chains.append(Chain("local", tuple(local), hook="input", priority=PRIORITY_FILTER, policy="accept"))
        postrouting = source_nat_chain(self, list(chains[-1 if local is None else -2].rules))
        if postrouting:
            chains.append(Chain("snat", tuple(postrouting), hook="postrouting", type="nat", priority=PRIORITY_SRCNAT, policy="accept"))
        chains += self._own_chains
        return Ruleset((Table("inet", PARSED_TABLE, tuple(chains)),))

    # -- emitting IR rules ---------------------------------------------------------------

    def _emit(self, parts: Sequence[_Rule], chain: str, action: Action, origin: str, *,
              extra: tuple[Match | Unmodelled, ...] = (), comment: str = "") -> list[Rule]:
        """IR rules (their union) for what every part matches, as `chain` sees the packet."""
        if not _applies(parts, chain):
            return []
        families: tuple[int | None, ...] = (None,)
        if isinstance(action, Dnat):
            families = (action.family,)
        elif any(p.af is not None or p.src is not None or p.dst is not None for p in parts):
            families = (4, 6)
        comment = comment or next((p.label for p in reversed(parts) if p.label), "")
        out: list[Rule] = []
        for family in families:
            if any(p.af not in (None, family) for p in parts):
                continue
            alts: Alts = [extra]
            for part in parts:
                for dim in self._dims(part, chain, family):
                    alts = [a + b for a in alts for b in dim]
            out += [Rule(_finish_matches(a, family), action, comment, origin) for a in alts]
        return out

    def _dims(self, rule: _Rule, chain: str, family: int | None) -> Iterator[Alts]:
        if rule.on is not None:
            yield self._if_alts(rule.on, "oif" if chain == "out" else "iif")
        if rule.received_on is not None:
            yield self._if_alts(rule.received_on, "iif")
        if rule.tagged is not None:
            yield self._tagged_alts(rule, chain)
        if rule.protos is not None:
            known = tuple((p,) for p in rule.protos if isinstance(p, int))
            yield ([(Match(("l4proto",), known),)] if known else []) + [
                (Unmodelled(f"protocol '{p}' (not a name fwmatrix knows)"),) for p in rule.protos if isinstance(p, str)]
        if rule.icmp is not None:  # (pfctl asks for `proto icmp` / `proto icmp6` with it)
            field_name, keys = rule.icmp
            fields = (field_name, field_name.replace(".type", ".code"))  # a type with its code is one key
            yield [(Match(fields[:size], tuple(k for k in keys if len(k) == size)),) for size in (1, 2) if any(len(k) == size for k in keys)]
        if family is not None:
            for side, hosts in (("saddr", rule.src), ("daddr", rule.dst)):
                if hosts is not None:
                    yield self._host_alts(hosts, side, family, chain)
        for field_name, ports in (("dport", rule.dport), ("sport", rule.sport)):
            if ports is not None:
                yield ([(Match((field_name,), tuple((r,) for r in ports.ranges)),)] if ports.ranges else []) + [
                    (Unmodelled(text),) for text in ports.unknown]
        if rule.route is not None:
            yield self._route_alts(rule, rule.route, chain)
        if rule.unknown:
            yield [(Unmodelled("; ".join(rule.unknown)),)]

    def _route_alts(self, rule: _Rule, route: _Route, chain: str) -> Alts:
        """What route-to, reply-to and fastroute leave exact (pf.conf(5), ROUTING; docs/backend-pf.md).
        `reply-to` routes only the replies of the rule's state, which the state table passes
        (a floating state matches on any interface; a block rule keeps none). `fastroute`
        routes by the routing table, as forwarding does. `route-to IF` on a pass rule sends the
        packets it passes out of IF, where the out rules judge them: exact for packets whose
        route leaves by IF, both ways for the others (they leave by IF, not by their route).
        `dup-to` on a pass rule sends the packet as its route leads and a copy by the target's
        interface: the rule's match and verdict are exact, the copy is _copy_rules'. Routing on
        block or match rules stays unmodelled (whether pf routes a packet it blocks is not modelled)."""
        unknown: Alts = [(Unmodelled(route.text),)]
        if route.kind == "reply-to" and rule.action in ("pass", "block"):
            bound = rule.action == "pass" and rule.keep_state and (route.if_bound or self.reader.if_bound)
            return unknown if bound else [()]  # (an if-bound state misses the replies leaving by another interface)
        if rule.action != "pass" or chain not in ("in", "out") or self._local:
            return unknown
        if route.kind in ("fastroute", "dup-to"):
            return [()]
        if route.kind != "route-to" or route.iface is None:
            return unknown
        there = Match(("oif",), ((route.iface,),))
        elsewhere = (Match(("oif",), ((route.iface,),), negate=True), Unmodelled(route.text))
        if chain == "out" and rule.on is not None and all(not i.negate and not i.group and i.name != "any" for i in rule.on):
            # `pass out on C route-to IF`: exact where C is IF (the routes already lead there)
            return ([(there,)] if any(i.name == route.iface for i in rule.on) else []) + (
                [elsewhere] if any(i.name != route.iface for i in rule.on) else [])
        return [(there,), elsewhere]

    @staticmethod
    def _if_alts(items: tuple[_If, ...], field_name: str) -> Alts:
        if any(i.name == "any" and not i.negate for i in items):
            return [()]  # `on any`: every interface (loopback aside, which forwards nothing)
        named = tuple((i.name,) for i in items if not i.negate and not i.group)
        alts: Alts = [(Match((field_name,), named),)] if named else []
        for i in items:
            if i.members is not None:  # a negated group whose members are known
                alts.append((Match((field_name,), tuple((m,) for m in i.members), negate=True),) if i.members else ())
            elif i.group:
                alts.append((Unmodelled(f"{'! ' if i.negate else ''}interface group '{i.name}' (its members are known only on the firewall)"),))
            elif i.negate and i.name != "any":
                alts.append((Match((field_name,), ((i.name,),), negate=True),))
        return alts

    def _host_alts(self, hosts: tuple[_Host, ...], side: str, family: int, chain: str) -> Alts:
        """pfctl makes one rule per list item: their union. A negated item of one family only
        makes a rule of that family."""
        context = "nat" if chain == "nat" else "local" if self._local else "filter"
        field_name = addr_field(family, side)
        positive = IPSet()
        alts: Alts = []
        tail: Alts = []
        for host in hosts:
            if host.kind == "any":
                if not host.negate:
                    return [()]
                continue
            if host.kind == "urpf-failed" and side == "saddr" and chain in ("in", "nat"):
                urpf = self._urpf_alts(host.negate, family)
                if urpf is not None:
                    tail += urpf
                    continue
            known, unknown = self._resolve(host, family, side, context)
            if known is None and unknown is None:
                continue
            if host.negate:
                parts: list[Match | Unmodelled] = []
                if known:
                    parts.append(Match((field_name,), tuple((n,) for n in known.iter_cidrs()), negate=True))
                if unknown:
                    parts.append(Unmodelled(f"! {unknown}"))
                tail.append(tuple(parts))
                continue
            if known:
                positive |= known
            if unknown:
                tail.append((Unmodelled(unknown),))
        if context == "filter":
            positive -= _NEVER_FORWARDED[(side, family)]
        if positive:
            alts.append((Match((field_name,), tuple((n,) for n in positive.iter_cidrs())),))
        return alts + tail

    def _urpf_alts(self, negate: bool, family: int) -> Alts | None:
        """`from urpf-failed`, in: the packets whose source's route leaves by another interface
        than the one they came in on, or by none (pf.conf(5), PARAMETERS); None when the routes
        are not known. An interface no route leaves by fails every source."""
        routed = self.reader.own.routed(family)
        if routed is None:
            return None
        field_name = addr_field(family, "saddr")
        alts: Alts = []
        for iface, back in sorted(routed.items()):
            if negate:  # the source's route leaves by this interface
                alts += [(Match(("iif",), ((iface,),)), Match((field_name,), tuple((n,) for n in back.iter_cidrs())))] if back else []
            else:
                failed = IPSet([IPNetwork("0.0.0.0/0" if family == 4 else "::/0")]) - back
                alts += [(Match(("iif",), ((iface,),)), Match((field_name,), tuple((n,) for n in failed.iter_cidrs())))] if failed else []
        if not negate:
            alts.append((Match(("iif",), tuple((i,) for i in sorted(routed)), negate=True),) if routed else ())
        return alts

    # -- rules and translated packets -------------------------------------------------------

    def _on_image(self, parts: Sequence[_Rule], target: _Target) -> list[_Rule] | None:
        """The rule as it judges a packet translated to `target`, or None when it cannot match it."""
        assert target.address is not None
        out = []
        for p in parts:
            if p.tagged is not None and self._translation_tag(p.tagged[0], "in"):
                # every translation rule sets the tag: the translated packet carries it
                if p.tagged[1]:
                    return None
                p = replace(p, tagged=None)
            dst = True if p.dst is None else self._contains(p.dst, target.address)
            port = True if p.dport is None or target.port is None else _ports_contain(p.dport, target.port.low)
            if dst is False or port is False:
                return None
            unknown = p.unknown + ((f"whether {p.origin} matches the translated destination",) if dst is None or port is None else ())
            out.append(replace(p, dst=None, dport=p.dport if target.port is None else None, unknown=unknown, parents=()))
        return out

    @staticmethod
    def _image(parts: Sequence[_Rule], target: _Target) -> list[_Rule]:
        """What the packets the parts match look like once translated to `target`."""
        assert target.address is not None
        moved = [replace(p, dst=None, dport=None if target.port is not None else p.dport, parents=()) for p in parts]
        return moved + [_Rule(parts[-1].origin, "pass", dst=(_Host(False, "net", target.address),),
                              dport=_Ports((target.port,)) if target.port is not None else None)]

    # -- the filter chains -----------------------------------------------------------------

    def _decision_order(self, items: Sequence[_Item], chain: str) -> list[_Seen]:
        """pf's last match as netfilter's first: quick rules in order, then the rest reversed."""
        quick: list[_Seen] = []
        rest: list[_Rule] = []
        for item in items:
            if isinstance(item, _Group):
                quick += self._decision_order(item.items, chain)
            elif isinstance(item, _Opaque):
                if chain in item.chains:
                    quick.append(item)  # unseen rules may be quick: nothing after them is certain
            elif item.action in ("pass", "block") and _applies(item.parts, chain):
                (quick if item.quick else rest).append(item)
        return quick + rest[::-1]

    def _filter_chain(self, chain: str) -> list[Rule]:
        out = self._skip_rules(chain)
        out += self._reply_rules(chain)
        out.append(Rule((_ESTABLISHED,), Verdict("accept"), "pf's state table: pass rules keep state",
                        f"{self.reader.source}: state table"))
        out += self._translated_rules() if chain == "in" else self._out_translation_rules()
        for item in self._decision_order(self.items, chain):
            if isinstance(item, _Opaque):
                out += self._emit(item.cond.parts, chain, UnmodelledAction(item.text), item.origin)
            elif chain == "in" and _is_pass_rdr(item):
                # The packets this rule decides are translated: they are forwarded as their
                # image (the accept above), never as they arrived.
                out += self._untranslated_unknowns(item, chain)
                out += self._emit(item.parts, chain, Verdict("drop"), item.origin, comment="translated by this rule (see its image above)")
            else:
                rules = self._tagged_unknowns(item, chain) + self._untranslated_unknowns(item, chain) + self._snat_unknowns(item, chain)
                rules += self._copy_rules(item, chain)
                own, own_chain = out_rule(self, item, chain, f"{chain}-{len(self._own_chains)}")
                self._decided_by.update((id(r), item) for r in own)  # (source_nat_chain: which rule passed them)
                rules += own
                inner = list(own_chain.rules) if own_chain is not None else []
                # (a translated source may be any: what reaches it is judged without its source)
                seen = item if own_chain is None else replace(item, src=None, sport=None, parents=tuple(
                    replace(p, src=None, sport=None) for p in item.parents))
                if chain == "out" and any(_is_unmodelled(r) for r in rules + inner) and not self._reaches_out(seen):
                    continue  # no packet it could judge passed in: what it cannot tell decides nothing
                if own_chain is not None:
                    self._own_chains.append(own_chain)
                out += rules
        return out

    def _copy_rules(self, rule: _Rule, chain: str) -> list[Rule]:
        """`dup-to` on a pass rule (pf.conf(5), ROUTING): pf duplicates each packet it routes and
        sends the copy towards the target, the packet itself as it would go; with state, every
        packet of the connection. What the rule passes is exact; where the copies end up the
        audit cannot say: an action before the rule, on what it matches, that lets the chain go
        on (its packets stay uncertain, and an `unmodelled` finding names the copy)."""
        route = rule.route
        if route is None or route.kind != "dup-to" or rule.action != "pass" or chain not in ("in", "out") or self._local:
            return []
        copy = packet_copies(route.spec, f"each packet {rule.origin} passes (of its connections too, with state)")
        return self._emit(rule.parts, chain, copy, _aside(rule.origin, "copies"))

    def _reaches_out(self, rule: _Rule) -> bool:
        """May a packet that the in pass passes meet this out rule? False only when the in pass
        blocks by default (every family), skips no interface, holds no rules not seen, and no
        rule that passes in (nor the image of one that translates and passes) can match a
        packet this rule matches."""
        if self._passed_by_default("in") or any(not _LOOPBACK_RE.fullmatch(i.name) or i.negate for i, _ in self.reader.skip):
            return True
        if any(isinstance(o, _Opaque) and "in" in o.chains for o in self.flat):
            return True
        bare = [replace(p, on=None, received_on=None) for p in rule.parts]
        for p in self.rules:
            if not (_passes_in(p) and _applies(p.parts, "in")):
                continue
            if _translates_and_passes(p):
                if p.rdr is None or p.rdr.address is None:
                    return True
                seen = self._image(p.parts, p.rdr)
            elif any(first > self._position.get(id(p), first) for first, _, _ in self._images):
                # a rule before a `match ... rdr-to` may pass what it saw untranslated (_untranslated_unknowns)
                seen = [replace(q, dst=None, dport=None) for q in p.parts]
            else:
                seen = list(p.parts)
            if self._may_overlap(bare, [replace(q, on=None, received_on=None) for q in seen]):
                return True
        return False

    def _skip_rules(self, chain: str) -> list[Rule]:
        out: list[Rule] = []
        for iface, origin in self.reader.skip:
            if _LOOPBACK_RE.fullmatch(iface.name) and not iface.negate:
                continue  # nothing is forwarded in or out of a loopback interface
            out += self._emit([_Rule(origin, "pass", on=(iface,))], chain, Verdict("accept"), origin, comment="set skip: pf does not filter here")
        return out

    def _passed_by_default(self, chain: str, iface: str | None = None) -> list[int]:
        """The families whose packets may match no rule of the pass (and pass by default): those
        without a block or pass rule that every packet of the family matches (`block all`, `block
        in inet`, `pass`; `block on { em0 em1 }` when those are all the firewall's interfaces).
        (The replies of a `no state` pass rule are _reply_rules' other part.)"""
        bare = _Rule("", "block")
        covered: set[int] = set()
        for r in self.rules:
            if r.action in ("block", "pass") and all(_unconditional(p) for p in r.parents) and _applies([r], chain) and self._on_every_interface(r.on, iface) \
                    and replace(r, origin="", action="block", reject=False, direction=None, quick=False, on=None, af=None, label="",
                                keep_state=True, parents=()) == bare:
                covered |= {r.af} if r.af else {4, 6}
        return [f for f in (4, 6) if f not in covered]

    def _on_every_interface(self, on: tuple[_If, ...] | None, iface: str | None) -> bool:
        """Does `on` take every packet (of `iface` when given)? A list of plain names does when it
        holds every interface of the firewall (the matrix's: loopback forwards nothing)."""
        if on is None or on == ((_If(iface),) if iface else None):
            return True
        names = {i.name for i in on if not i.negate and not i.group}
        known = self.reader.interfaces
        return iface is None and bool(known) and known <= names and self.reader.firewall_interfaces() <= names

    def _reply_rules(self, chain: str) -> list[Rule]:
        """Established packets that pf filters by the rules, not by the state table: replies of
        `no state` pass rules, and (without a block rule for every packet) replies of packets
        passed by default, which keeps no state. Their verdict is left open."""
        out: list[Rule] = []
        for r in self.rules:
            if r.action == "pass" and not r.keep_state and not r.parents:
                # the replies leave by the interface the requests came in by: the other pass
                flipped = {"in": "out", "out": "in", None: None}[r.direction]
                back = _Rule(r.origin, "pass", direction=flipped, on=r.on, af=r.af, protos=r.protos, src=r.dst, dst=r.src,
                             dport=r.sport, sport=r.dport)
                out += self._emit([back], chain, UnmodelledAction(f"replies of the 'no state' rule {r.origin}: pf filters them by the rules"),
                                  _aside(r.origin, "replies"), extra=(_ESTABLISHED,))
        for family in self._passed_by_default(chain):
            for r in self.rules:
                if r.action == "block" and _applies(r.parts, chain):
                    out += self._emit(list(r.parts) + [_Rule(r.origin, "block", af=family)], chain, UnmodelledAction(
                        "replies of packets that no rule passed (pf's default pass keeps no state) meet this block rule"),
                        _aside(r.origin, "replies"), extra=(_ESTABLISHED,))
        return out

    def _translated_rules(self) -> list[Rule]:
        """`rdr pass`, `pass ... rdr-to`: the packets such a rule translates are passed at once.
        Translated packets carry `ct status dnat` and the nat chain translates them exactly when
        the rule decides, so their image with `ct status dnat` is exactly what it passes, unless
        a translation that leaves its packets to the filter rules makes the same image."""
        out: list[Rule] = []
        for r in self.rules:
            if _translates_and_passes(r) and r.rdr is not None and r.rdr.address is not None:
                other = self._other_translation(r)
                parts = r.parts if other is None else replace(r, unknown=r.unknown + (_translated_by(r, other).text,)).parts
                out += self._emit(self._image(parts, r.rdr), "in", Verdict("accept"), _aside(r.origin, "translated"),
                                  extra=(_TRANSLATED,), comment="translated and passed at once")
        return out

    def _other_translation(self, passing: _Rule) -> str | None:
        """The origin of a translation that does not pass its packets at once (`match ... rdr-to`,
        plain `rdr`, an anchor's) and may make a packet like those `passing` translates; None if none."""
        assert passing.rdr is not None and passing.rdr.address is not None
        image = self._image(passing.parts, passing.rdr)
        for t in self.flat:
            if isinstance(t, _Opaque):
                if "nat" in t.chains and self._ifaces_may_meet(passing.parts, t.cond.parts):
                    return t.origin
            elif t.rdr is not None and not _translates_and_passes(t) and _applies(t.parts, "in") and self._ifaces_may_meet(passing.parts, t.parts):
                if t.rdr.address is None or self._may_overlap(image, self._image(t.parts, t.rdr), "nat"):
                    return t.origin
        return None

    def _out_translation_rules(self) -> list[Rule]:
        out: list[Rule] = []
        for r in self.rules:
            if r.action == "nat" and r.passes:
                out += self._emit(r.parts, "out", Verdict("accept"), r.origin, comment="nat pass: out without the out rules")
            elif r.rdr is not None and r.action in ("pass", "match") and _applies(r.parts, "out"):
                out += self._emit(r.parts, "out", UnmodelledAction(f"rdr-to on the way out ({r.origin}): the destination changes after routing"),
                                  _aside(r.origin, "out"))
        return out

    def _untranslated_unknowns(self, rule: _Rule, chain: str) -> list[Rule]:
        """OpenBSD: a rule before a `match ... rdr-to` judged the packet untranslated, while the
        in chain sees it translated. Where that can change whether the rule matches, its
        verdict on the translated packets is left open (the rule itself stays exact for the
        others)."""
        position = self._position.get(id(rule))
        if chain != "in" or position is None:
            return []
        out: list[Rule] = []
        for first, parts, target in self._images:
            if first > position and not self._commutes(rule, parts, target):
                unconstrained = [replace(p, dst=None, dport=None) for p in rule.parts]
                out += self._emit(unconstrained + self._image(parts, target), chain, UnmodelledAction(
                    f"{rule.origin} judged these packets before the translation at {parts[0].origin}, untranslated"), _aside(rule.origin, "untranslated"))
        return out

    def _snat_unknowns(self, rule: _Rule, chain: str) -> list[Rule]:
        """A rule that matches the source (address or port) sees it as a source translation
        before it left it: old-style `nat` (before every filter rule), or a `match ... nat-to`
        earlier in the file. The audit knows packets by their source as they arrived, so for
        the packets such a translation may take, the rule's verdict is left open (it stays
        exact for the others, after this)."""
        sees_source = any(p.src is not None or p.sport is not None for p in rule.parts)
        if chain == "out" and sees_source:
            return []  # natout.py follows them
        if not sees_source and rule.tagged is None:
            return []
        at = self._file_position.get(id(rule), 0)
        out: list[Rule] = []
        for nat in self.reader.source_nats + [r for r in self.rules if r.snat and r.action == "match" and self._file_position[id(r)] < at]:
            if not nat.snat or not _applies(nat.parts, chain) or not self._ifaces_may_meet(rule.parts, nat.parts):
                continue
            # a nat rule's `tag` replaces the tag the rule asks for, on the packets it translates
            if not sees_source and (nat.tag is None or rule.tagged is None or rule.tagged[0] == nat.tag
                                    or self._nat_tag_alts(rule.tagged[0]) is not None):  # (a nat rule's tag: exact, tags.py)
                continue
            unconstrained = [replace(p, src=None, sport=None) for p in rule.parts]
            condition = [replace(p, action="match", snat=False, tag=None, rdr=None) for p in nat.parts]
            if self._may_overlap(unconstrained, condition):
                out += self._emit(unconstrained + condition, chain, UnmodelledAction(
                    f"{rule.origin} sees the source as {nat.origin} translated it (nat-to), not as it arrived"), _aside(rule.origin, "translated source"))
        return out

    def _commutes(self, f: _Rule, parts: list[_Rule], target: _Target) -> bool:
        """Does rule f judge every packet these parts translate as it judges its image?"""
        first = parts[0]  # what rules before the translation saw: its destination and port
        assert target.address is not None
        if first.action == "rdr":
            return False  # an old-style rdr translated the packet before them: not followed here
        if not self._ifaces_may_meet(f.parts, parts) or (
                not self._may_overlap(f.parts, parts, "nat") and not self._may_overlap(f.parts, self._image(parts, target), "nat")):
            return True
        if any(p.dst is not None or p.dport is not None or p.tagged is not None for p in f.parts[:-1]) or f.tagged is not None:
            return False  # (the translation sets its tag, which the rule did not see)
        family = target.address.version
        if f.dst is not None:
            inside = self._contains(f.dst, target.address)
            before = self._addr_set(first.dst, family, "daddr", "nat")
            judged = self._addr_set(f.dst, family, "daddr", "nat")
            if inside is None or before is None or judged is None:
                return False
            if (inside and before - judged) or (not inside and before & judged):
                return False
        if f.dport is not None and target.port is not None:
            inside_port = _ports_contain(f.dport, target.port.low)
            if inside_port is None:
                return False
            before_ports = _port_set(first.dport.ranges if first.dport is not None else _PORTS_ALL)
            judged_ports = _port_set(f.dport.ranges)
            if (inside_port and before_ports - judged_ports) or (not inside_port and before_ports & judged_ports):
                return False
        return True

    # -- the nat chain -------------------------------------------------------------------

    def _nat_chain(self) -> list[Rule]:
        """Translation as first-match DNAT on the untranslated packet. Each entry is
        (translates, its parts or None when unknown, its IR rules); an entry that only ends
        translation is kept when a later translation could have matched the same packets."""
        entries: list[tuple[bool, Sequence[_Rule] | None, list[Rule]]] = [(False, None, self._skip_rules("nat"))]

        def stop(parts: Sequence[_Rule], origin: str) -> None:
            entries.append((False, parts, self._emit(parts, "nat", Verdict("accept"), origin)))

        def translate(parts: Sequence[_Rule] | None, rules: list[Rule]) -> None:
            entries.append((True, parts, rules))

        sequence = self._nat_sequence()
        # FreeBSD: binat, then rdr, first match, all before the filter rules
        old = [r for r in self.flat if (isinstance(r, _Rule) and r.action in ("rdr", "no-rdr"))
               or (isinstance(r, _Opaque) and r.chains == frozenset({"nat"}))]
        old.sort(key=lambda r: not (isinstance(r, _Rule) and r.binat))
        for r in old:
            if isinstance(r, _Opaque):
                translate(None, self._emit(r.cond.parts, "nat", UnmodelledAction(r.text), r.origin))
            elif r.action == "no-rdr":
                stop(r.parts, r.origin)
            else:
                translate(r.parts, self._translation(list(r.parts), r.rdr, r.origin, 0, sequence))  # type: ignore[arg-type]
        # OpenBSD: match rules translate where they stand; a pass rule when it decides
        tail: list[_Rule] = []
        for k, item in enumerate(sequence):
            if isinstance(item, _Opaque):
                translate(None, self._emit(item.cond.parts, "nat", UnmodelledAction(item.text), item.origin))
            elif item.action == "match":
                if item.rdr is not None:
                    translate(item.parts, self._conflicts(item, sequence[:k])
                              + self._translation(list(item.parts), item.rdr, item.origin, k + 1, sequence, first=k))
            elif not item.quick:
                tail.append(item)
            elif _is_pass_rdr(item):
                translate(item.parts, self._translation(list(item.parts), item.rdr, item.origin, None, sequence))  # type: ignore[arg-type]
            else:
                stop(item.parts, item.origin)
        for item in reversed(tail):  # the last match decides
            if _is_pass_rdr(item):
                translate(item.parts, self._translation(list(item.parts), item.rdr, item.origin, None, sequence))  # type: ignore[arg-type]
            else:
                stop(item.parts, item.origin)
        kept: list[Rule] = []
        for i, (translates, parts, rules) in enumerate(entries):
            later = [p for t, p, _ in entries[i + 1:] if t]
            if translates or (parts is None and later) or any(
                    p is None or (self._ifaces_may_meet(parts, p) and self._may_overlap(parts, p, "nat")) for p in later):  # type: ignore[arg-type]
                kept += rules
        return kept

    def _nat_sequence(self) -> list[_Seen]:
        """The in pass's rules in file order, as translation sees them: a quick anchor's rules
        all end the evaluation when they match."""
        out: list[_Seen] = []

        def walk(items: Sequence[_Item], quick: bool) -> None:
            for item in items:
                if isinstance(item, _Group):
                    walk(item.items, True)
                elif isinstance(item, _Opaque):
                    if "nat" in item.chains and item.chains != frozenset({"nat"}):
                        out.append(item)
                elif item.action in ("pass", "block", "match") and _applies(item.parts, "in"):
                    self._position[id(item)] = len(out)
                    out.append(replace(item, quick=True) if quick and item.action != "match" else item)

        walk(self.items, False)
        return out

    def _conflicts(self, match: _Rule, earlier: Sequence[_Seen]) -> list[Rule]:
        """An earlier non-quick `pass ... rdr-to` that may also match: if it decides, it translates
        the packet again after this match rule did. Left open."""
        out: list[Rule] = []
        for p in earlier:
            if isinstance(p, _Rule) and _is_pass_rdr(p) and not p.quick and self._may_overlap(match.parts, p.parts, "nat"):
                out += self._emit(list(match.parts) + list(p.parts), "nat", UnmodelledAction(
                    f"translated by {match.origin}, then again by {p.origin} if that rule decides"), _aside(match.origin, "again"))
        return out

    def _translation(self, parts: list[_Rule], target: _Target, origin: str, start: int | None,
                     sequence: Sequence[_Seen], depth: int = 0, first: int | None = None) -> list[Rule]:
        """DNAT for what `parts` match, composed with the translations that the rules from
        `start` on apply to the translated packet (OpenBSD's match rules apply at once).
        `first`: the position of the first match rule in the composition."""
        if target.address is not None and first is not None:
            self._images.append((first, parts, target))
        if target.address is None:
            return self._emit(parts, "nat", UnmodelledAction(f"translation to {target.text} (not one address and port)"), origin)
        final = Dnat(target.address.version, target.address, target.port)
        composed: list[tuple[bool, list[Rule]]] = []  # (changes the target, rules)
        for k in range(start if start is not None else len(sequence), len(sequence)):
            item = sequence[k]
            if isinstance(item, _Opaque):
                composed.append((True, self._emit(parts, "nat", UnmodelledAction(f"{item.text}, after the translation at {origin}"), _aside(origin, "then"))))
                break
            if (item.action in ("pass", "block") and not item.quick and not _is_pass_rdr(item)) or not self._ifaces_may_meet(parts, item.parts):
                continue  # decides nothing about translation, or never sees these packets
            image = self._on_image(item.parts, target)
            if image is None or not self._may_overlap(parts, image, "nat"):
                continue
            if item.action == "match" and item.rdr is not None:
                if depth >= 8:
                    composed.append((True, self._emit(parts + image, "nat", UnmodelledAction("translated again more than 8 times"), _aside(origin, "again"))))
                    continue
                composed.append((True, self._translation(parts + image, _compose(target, item.rdr), item.origin, k + 1, sequence, depth + 1,
                                                         k if first is None else first)))
            elif _is_pass_rdr(item) and item.quick:
                composed.append((True, self._translation(parts + image, _compose(target, item.rdr), item.origin, None, sequence,  # type: ignore[arg-type]
                                                         first=first)))
            elif _is_pass_rdr(item):
                composed.append((True, self._emit(parts + image, "nat", UnmodelledAction(
                    f"translated by {origin}, then again by {item.origin} if that rule decides"), _aside(origin, "again"))))
            elif item.quick and item.action != "match":
                composed.append((False, self._emit(parts + image, "nat", final, origin)))  # evaluation ends: stays translated
                if self._covers(image, parts):
                    break  # ... for every packet translated here: nothing after it is reached
        while composed and not composed[-1][0]:
            composed.pop()  # the final rule below says the same
        return [rule for _, rules in composed for rule in rules] + self._emit(parts, "nat", final, origin)


def _unconditional(anchor: _Rule) -> bool:
    """An anchor rule every packet meets (`anchor "x"`, quick or not): its rules see them all."""
    return replace(anchor, origin="", quick=False, label="") == _Rule("", "anchor")


def _is_unmodelled(rule: Rule) -> bool:
    return isinstance(rule.action, UnmodelledAction) or any(isinstance(m, Unmodelled) for m in rule.matches)


def detect_dialect(text: str) -> str:
    """'freebsd' for the renderer's FreeBSD header or old-style translation rules, else 'openbsd'."""
    found = _DIALECT_RE.search(text)
    if found and found.group(1) in DIALECTS:
        return found.group(1)
    return "freebsd" if _OLD_TRANSLATION_RE.search(text) else "openbsd"


def parse_ruleset(text: str, source: str = "", dialect: str | None = None, *,
                  tables: Mapping[str, str] | None = None, anchors: Mapping[str, str] | None = None,
                  interfaces: Iterable[str] = (), groups: Mapping[str, Sequence[str]] | None = None,
                  addresses: Mapping[str, Sequence[IPNetwork | str]] | None = None,
                  self_addresses: Iterable[IPNetwork | IPAddress | str] = (),
                  routes: Mapping[str, Sequence[IPNetwork | str]] | None = None, default_route: Sequence[str] = (),
                  all_addresses: Iterable[IPNetwork | str] | None = None,
                  references: dict[str, set[str]] | None = None) -> Ruleset:
    """A pf ruleset (a pf.conf, or a `pfctl -sr` / `-sn` / `-sa` listing) as the Ruleset IR,
    with netfilter's semantics (see this module's docstring).

    `tables` gives the addresses of tables the text only names (as `pfctl -t NAME -T show`
    prints them); `anchors` the rules of anchors the text only names (as `pfctl -a NAME -sr`
    prints them; "" for an empty anchor). Others are unmodelled. `interfaces` names the
    firewall's interfaces (none is a group, unit number or not), `groups` the members of
    interface groups (`egress`): `on GROUP` is `on` its members; other groups are unmodelled.
    `addresses` gives interfaces' addresses with their prefix (`{"em0": ["192.0.2.1/24"]}`):
    then `(em0)`, `em0:network`, `em0:broadcast`, `em0:0` and antispoof are exact, and `self`
    too once every interface has them (an address without a prefix, an IPAddress or a string
    without '/', is the interface's but says nothing of its network) (`self_addresses`: the firewall's addresses on no
    named interface, such as the matrix's public ones). `routes` (interface -> the networks
    routed out of it) and `default_route` (the interfaces of the default route) make
    `no-route` and `urpf-failed` exact. `all_addresses`, when given, are all the firewall's
    addresses (the audit's --local-address): `self` is them, loopback and `self_addresses`
    included, whatever `addresses` holds. `dialect` decides whether a
    name without a unit number is an interface group (OpenBSD) or may be an interface
    (FreeBSD, which can rename interfaces); it is detected when not given.

    `references`, when given, receives the names of the anchors and tables the text (and the
    anchors given) reads: `anchors`, `tables`.

    When `source` names a file, its `include "FILE"` statements are read in place, a relative
    name from the file's directory, as `cd DIR && pfctl -nf FILE` reads it (include.py).

    Invalid text raises BackendError("SOURCE:LINE: message")."""
    if dialect is not None and dialect not in DIALECTS:
        raise BackendError(f"unknown pf dialect {dialect!r} (known: {', '.join(DIALECTS)})")
    where = source or "pf.conf"
    given = dict(addresses or {})
    own = OwnAddresses({name: tuple(IPNetwork(a) for a in values) for name, values in given.items()},
                       tuple(IPNetwork(a) for a in self_addresses),
                       None if routes is None else {name: tuple(IPNetwork(n) for n in nets) for name, nets in routes.items()},
                       tuple(default_route), None if all_addresses is None else tuple(IPNetwork(a) for a in all_addresses),
                       frozenset(name for name, values in given.items() if any(not isinstance(a, IPNetwork) and "/" not in str(a) for a in values)))
    directory = include_directory(source)
    includes = None if directory is None else Includes(directory, where)
    if dialect is None:  # the included files' rules tell it too
        dialect = detect_dialect("\n".join([text] + (includes.texts(text) if includes else [])))
    reader = _Reader(where, dialect, tables, anchors, interfaces, groups, own, includes)
    items = reader.read(text, where)
    if references is not None:
        references.update(anchors=reader.referenced_anchors, tables=reader.referenced_tables)
    return _Builder(reader, items).ruleset()
