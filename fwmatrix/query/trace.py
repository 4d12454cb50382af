"""A packet against a ruleset, by the audit's own evaluator: the packet (as a
one-point region, or one port range) is run through `fwmatrix.audit.evaluate`
with an observer that records each rule the walk finds it matching, in the
path's order, and each base chain whose policy takes it. The verdict is the
evaluation's: forwarded whatever the unmodelled constructs do (allowed), by
neither reading (denied), or depending on them (uncertain).

A port forward changes the packet on its way: a first walk finds the DNAT that
takes the arriving packet, a second walks the arriving and the translated
packet together (forward sees the translated one, `ct status dnat`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from netaddr import IPAddress, IPNetwork

from fwmatrix.audit.evaluate import evaluate, interfaces_of
from fwmatrix.audit.evaluate.addrtype import UNKNOWN, OwnAddresses
from fwmatrix.audit.evaluate.chains import ChainResult, chain_name
from fwmatrix.audit.evaluate.matches import key_space
from fwmatrix.audit.local import LOCAL, LOOPBACK, as_forward, pf_input_unread
from fwmatrix.audit.evaluate.reading import Reading
from fwmatrix.ir import Chain, Dnat, DnatMap, Jump, Notrack, Rule, Ruleset, Table, UnmodelledAction, Verdict, VerdictMap
from fwmatrix.matrix.model import PROTOCOLS
from fwmatrix.query.matrix import ALLOWED, DENIED, MAYBE, PARTLY
from fwmatrix.query.packet import Packet, endpoint_text, pieces
from fwmatrix.space import ECHO_REQUEST, PORTLESS_ALL, V4_BASE, Box, Interfaces, Space, ct_bits, physical

CT_NEW = ct_bits("new", translated=False)
CT_NEW_DNAT = ct_bits("new", translated=True)
CT_UNTRACKED = ct_bits("untracked")
BEFORE_ROUTING = ("ingress", "prerouting")


@dataclass(frozen=True)
class Step:
    """One line of the trace: a rule the packet matched, or a base chain's policy."""

    hook: str
    chain: str  # family table chain
    rule: str  # the rule's origin (handle, FILE:LINE), or "" for the policy
    action: str
    may: str = ""  # why it may match or not (a construct fwmatrix cannot model)
    only: str = ""  # the part of the packet it concerns, when not all of it

    @property
    def ends(self) -> bool:
        """A drop of all of the packet that nothing unmodelled makes doubtful: the packet goes no further."""
        return not self.may and not self.only and self.action.split(" ", 1)[0] in ("drop", "reject")

    def __str__(self) -> str:
        where = self.rule or f"{self.chain} policy"
        if self.rule and not self.rule.startswith(self.chain):  # FILE:LINE: say in which chain
            where += f" [{self.chain}]"
        text = f"{self.hook:<11} {where}: {self.action}"
        if self.only:
            text += f" ({self.only} only)"
        if self.may:
            text += " — may match" + ("" if self.may == self.action else f": {self.may}")
        return text

    def to_json(self) -> dict:
        return {"hook": self.hook, "chain": self.chain, "rule": self.rule or None, "action": self.action,
                "may_match": self.may or None, "only": self.only or None}


@dataclass
class RulesetAnswer:
    packet: Packet
    verdict: str
    source: str  # which ruleset
    in_iface: str
    out_iface: str
    nat: str = ""  # "→ 172.16.10.10:443 by RULE"
    trace: list[Step] = field(default_factory=list)
    otherwise: list[Step] = field(default_factory=list)  # the trace if unmodelled constructs do not match
    reason: str = ""

    def to_json(self) -> dict:
        return {"packet": self.packet.to_json(), "verdict": self.verdict, "source": self.source, "in": self.in_iface,
                "out": self.out_iface, "nat": self.nat or None, "reason": self.reason,
                "trace": [s.to_json() for s in self.trace], "trace_if_unmodelled_do_not_match": [s.to_json() for s in self.otherwise]}


class Observer:
    """What the walk saw, per reading (assume_unmodelled_match True / False), in its order."""

    def __init__(self) -> None:
        self.events: dict[bool, list[tuple]] = {True: [], False: []}

    def matched(self, reading: Reading, table: Table, chain: Chain, origin: str, rule: Rule, hit: Space) -> None:
        self.events[reading.assume].append(("rule", reading, table, chain, origin, rule, hit))

    def walked(self, reading: Reading, table: Table, chain: Chain, entry: Space, result: ChainResult) -> None:
        undecided = entry.subtract(result.decided_space(reading.ifaces))
        self.events[reading.assume].append(("policy", reading, table, chain, "", None, undecided))


def _point(address: IPAddress) -> tuple[tuple[int, int], ...]:
    value = int(address) + (V4_BASE if address.version == 4 else 0)
    return ((value, value),)


def packet_region(ifaces: Interfaces, packet: Packet, iif: str, oif: str, ct: int, dst: IPAddress | None = None,
                  ports: tuple[int, int] | None = None) -> Space:
    number = PROTOCOLS[packet.part.protocol]
    if packet.part.ports is None:
        dport = ECHO_REQUEST.get(number, PORTLESS_ALL)  # a ping, the ICMP packet one sends to try
    else:
        dport = (ports or (packet.part.ports.low, packet.part.ports.high),)
    return Space(ifaces, physical(ifaces.mask(iif), ifaces.mask(oif), _point(packet.src), _point(dst or packet.dst),
                                  ((number, number),), dport, ct))


def dnat_pieces(ruleset: Ruleset, known_ifaces: list[str], packet: Packet, iif: str, oif: str, own: OwnAddresses = UNKNOWN) -> list[Packet]:
    """The packet's port range cut where the DNAT that takes it changes (the first walk's, in
    its order): each piece is then queried on its own, with its own NAT and verdict."""
    if packet.part.ports is None:
        return [packet]
    ifaces = interfaces_of(ruleset, known_ifaces)
    arriving = packet_region(ifaces, packet, iif, oif, CT_NEW)
    takers = []
    for region in evaluate(ruleset, ifaces, within=arriving, own=own).dnats:
        hit = region.space.intersect(arriving)
        if hit:
            takers.append((region, tuple(sorted({r for b in hit.boxes for r in b.dport}))))
    return pieces(packet, takers)


def query_ruleset(ruleset: Ruleset, known_ifaces: list[str], packet: Packet, iif: str, oif: str,
                  route: Callable[[IPAddress], str], local: bool, source: str = "", own: OwnAddresses = UNKNOWN) -> RulesetAnswer:
    """The packet arriving on `iif`, leaving by `oif` unless a DNAT sends it elsewhere
    (`route` gives the out-interface towards an address). `local`: the destination is the
    firewall's own address, so what no DNAT takes goes to its input chain, walked as the
    audit walks it (audit/local.py). `own`: the firewall's addresses as far as they are
    known (`fib daddr type local`), as the audit has them."""
    ifaces = interfaces_of(ruleset, known_ifaces + ([LOCAL, LOOPBACK] if local else []))
    arriving = packet_region(ifaces, packet, iif, oif, CT_NEW | CT_UNTRACKED)
    arriving_new = arriving.intersect(Space.full(ifaces).make(ct=CT_NEW))
    first = evaluate(ruleset, ifaces, within=arriving, own=own)
    translated, nats, dnat_uncertain = _translations(ifaces, packet, arriving_new, first, iif, route)
    observer = Observer()
    effective = evaluate(ruleset, ifaces, within=arriving.union(translated) if translated else arriving, observer=observer, own=own)
    taken = Space(ifaces, [b for d in effective.dnats for b in d.space.boxes])
    untaken = arriving_new.subtract(taken)
    plain = Space.empty(ifaces) if local else untaken
    through = translated.union(plain)
    forwarded = _granted(ifaces, effective.forwarded, through)
    maybe = _granted(ifaces, effective.uncertain, through)
    answer = RulesetAnswer(packet, "", source, iif, oif, nat=", ".join(nats))
    noted = {note.origin: note.text for note in effective.unmodelled}
    answer.trace = _steps(observer.events[True], (arriving_new, through), noted, packet, observer.events[False])
    if observer.events[False]:
        otherwise = _steps(observer.events[False], (arriving_new, through), noted, packet, observer.events[True])
        answer.otherwise = otherwise if otherwise != answer.trace else []
    wanted = through
    if local and untaken:
        to_self = Space(ifaces, [b for box in untaken.boxes for b in physical(box.iif, ifaces.mask(LOCAL), box.src, box.dst, box.proto, box.dport, CT_NEW)])
        wanted = wanted.union(to_self)
        accepted, doubtful, reason = _to_the_firewall(answer, ruleset, ifaces, to_self, own, packet)
        forwarded, maybe = forwarded.union(accepted), maybe.union(doubtful)
        answer.reason = f"{packet.dst} is the firewall's own address: {'what no DNAT takes' if translated else 'no DNAT takes it, it'} goes to its input chain" + reason
    if not wanted:
        verdict = DENIED
    elif forwarded.equals(wanted):
        verdict = MAYBE if dnat_uncertain else ALLOWED
    elif not forwarded and not maybe:
        verdict = DENIED
    elif forwarded.union(maybe).equals(wanted):
        verdict = MAYBE
    else:
        verdict = PARTLY
    answer.verdict = verdict
    return answer


def _granted(ifaces: Interfaces, grants: list, within: Space) -> Space:
    return Space(ifaces, [b for g in grants for b in g.space.boxes]).intersect(within)


def _to_the_firewall(answer: RulesetAnswer, ruleset: Ruleset, ifaces: Interfaces, to_self: Space, own: OwnAddresses,
                     packet: Packet) -> tuple[Space, Space, str]:
    """The packet in the firewall's input chain: what it accepts, what it may accept, and what
    to add to the reason; the input walk's steps join the trace (its hook named `input`)."""
    if pf_input_unread(ruleset):  # pf's `to self` rules were not read back: judged both ways
        return Space.empty(ifaces), to_self, (": pf's in rules are read as the firewall's input only when all its addresses are known "
                                              "(--pf-interface IF=ADDR/PREFIX for each interface, or --local-address) and a rule names them "
                                              "as its destination (`to self`): judged both ways")
    observer = Observer()
    inbound = evaluate(as_forward(ruleset, "input"), ifaces, within=to_self, observer=observer, own=own)
    noted = {note.origin: note.text for note in inbound.unmodelled}
    for reading, steps in ((True, answer.trace), (False, answer.otherwise)):
        if reading is False and not observer.events[False]:
            continue
        walked = _steps(observer.events[reading], (to_self, to_self), noted, packet, observer.events[not reading])
        steps += [replace(step, hook="input") for step in walked if step.hook == "forward"]  # the input chains, moved there
    has_input = any(c.hook == "input" and c.type == "filter" for t in ruleset.tables for c in t.chains)
    return (_granted(ifaces, inbound.forwarded, to_self), _granted(ifaces, inbound.uncertain, to_self),
            "" if has_input else " — there is none: the kernel takes it (whether a service listens is the host's)")


def _translations(ifaces: Interfaces, packet: Packet, arriving_new: Space, first, iif: str,
                  route: Callable[[IPAddress], str]) -> tuple[Space, list[str], bool]:
    """The packet as the DNAT rules of the first walk hand it to forward (ct status dnat)."""
    translated = Space.empty(ifaces)
    nats: list[str] = []
    uncertain = False
    for region in first.dnats:
        hit = region.space.intersect(arriving_new)
        if not hit:
            continue
        low, high = region.target[0]
        target = IPAddress(low - V4_BASE if low >= V4_BASE else low, 4 if low >= V4_BASE else 6)
        uncertain |= region.uncertain or len(region.target) > 1 or low != high
        port = region.port if region.port is not None else packet.part.ports
        for box in hit.boxes:
            dport = box.dport if region.port is None else ((region.port.low, region.port.high),)
            translated = translated.union(Space(ifaces, physical(ifaces.mask(iif), ifaces.mask(route(target)), box.src, region.target,
                                                                 box.proto, dport, CT_NEW_DNAT)))
        nats.append(f"{'→'} {endpoint_text(target, port)}{' (may)' if region.uncertain else ''} by {region.origin}")
    return translated, nats, uncertain


def _steps(events: list[tuple], relevant: tuple[Space, Space], noted: dict[str, str], packet: Packet,
           other: list[tuple]) -> list[Step]:
    """The steps of one reading's walk. A rule that takes the same part of the packet in the
    other reading (`other`: its events) takes it whatever its unmodelled matches do: it is
    exact for this packet (`route-to IF` for a packet that leaves by IF), not "may match".
    (A rule whose action is unmodelled, a pf anchor not given, takes the same part in both.)"""
    steps: list[Step] = []
    for hook, (kind, reading, table, chain, origin, rule, space) in _with_hooks(events):
        concerned = relevant[0] if hook in BEFORE_ROUTING else relevant[1]
        part = space.intersect(concerned)
        if not part:
            continue
        may = noted.get(origin, "")
        if may and isinstance(rule, Rule) and isinstance(rule.action, (Verdict, Jump)) and any(h == hook and e[0] == "rule" and e[4] == origin and e[6].intersect(concerned).equals(part)
                       for h, e in _with_hooks(other)):
            may = ""
        only = "" if part.equals(concerned) else _ports_of(part, packet)
        name = chain_name(table, chain)
        if kind == "policy":
            if chain.policy is None:
                continue
            step = Step(hook, name, "", f"{chain.policy} (no rule decided)", only=only)
        else:
            step = Step(hook, name, origin, _action_text(reading, table, rule, part), may, only)
        if step not in steps:
            steps.append(step)
        if step.ends:
            break
    return steps


def _with_hooks(events: list[tuple]) -> list[tuple[str, tuple]]:
    """Each event with the hook of its base chain: a chain jumped to has none of its own; its
    rules are seen before the base chain's walk ends (its `policy` event)."""
    out: list[tuple[str, tuple]] = []
    pending: list[tuple] = []
    for event in events:
        pending.append(event)
        if event[0] == "policy":
            out += [(event[3].hook or "", e) for e in pending]
            pending = []
    return out


def _ports_of(part: Space, packet: Packet) -> str:
    ifaces = part.ifaces
    by_mac = {text for b in part.boxes if ifaces.mac_sources(b.iif) for text in ifaces.text(b.iif)}
    if by_mac:  # the ruleset tells the packet's senders apart by MAC (`lan0 from 02:00:00:00:00:05`)
        return "/".join(sorted(by_mac))
    if packet.part.ports is None:
        return "part"
    ranges = sorted({r for b in part.boxes for r in b.dport})
    return "ports " + ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def _action_text(reading: Reading, table: Table, rule: Rule, hit: Space) -> str:
    action = rule.action
    comment = f' "{rule.comment}"' if rule.comment else ""
    if isinstance(action, Verdict):
        return action.kind + comment
    if isinstance(action, Jump):
        return f"{'goto' if action.goto else 'jump'} {action.chain}{comment}"
    if isinstance(action, VerdictMap):
        entries = action.entries if action.map_name is None else tuple((e.key, e.data[0]) for e in table.set(action.map_name).elements)
        data = _entry(reading, action.fields, entries, hit)
        if isinstance(data, Jump):
            return f"verdict map: {'goto' if data.goto else 'jump'} {data.chain}{comment}"
        return f"verdict map: {data.kind if isinstance(data, Verdict) else 'no entry'}{comment}"
    if isinstance(action, Dnat):
        return f"dnat to {_address(action.address)}{'' if action.port is None else f' port {action.port}'}{comment}"
    if isinstance(action, DnatMap):
        entries = action.entries if action.map_name is None else tuple((e.key, e.data) for e in table.set(action.map_name).elements)
        data = _entry(reading, action.fields, entries, hit)
        to = "no entry matches" if data is None else "to " + " port ".join(_address(d) for d in data)
        return f"dnat map{f' @{action.map_name}' if action.map_name else ''}: {to}{comment}"
    if isinstance(action, Notrack):
        return "notrack" + comment
    if isinstance(action, UnmodelledAction):
        return action.text + comment
    return repr(action)


def _address(value: object) -> str:
    """An address as written (a one-address network without its /32 or /128)."""
    if isinstance(value, IPNetwork) and value.size == 1:
        return str(value.ip)
    return str(value)


def _entry(reading: Reading, fields: tuple[str, ...], entries: tuple, hit: Space) -> object:
    """The data of the first map entry whose key holds (part of) the packet."""
    for key, data in entries:
        if key_space(reading, fields, key).intersect(hit):
            return data
    return None
