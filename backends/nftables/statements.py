"""A rule's statements as IR rules: its matches and one action (verdict, jump, map, NAT, notrack).

The IR has one action per rule, so a statement of unknown effect before the verdict
makes the whole action UnmodelledAction, naming both; statements that never change a
verdict (counter, log) are skipped, and `notrack` or `dup` before a verdict make a
rule of their own in front of it."""

from __future__ import annotations

from typing import Any, cast

from netaddr import AddrFormatError, IPNetwork

from fwmatrix.backends.nftables.describe import describe
from fwmatrix.backends.nftables.matches import _SHAPE_ERRORS, FAMILY_VERSION, _fields, _implied, _TableContext, _why
from fwmatrix.backends.nftables.values import _address, _items, _key, _Unknown, _value, _verdict
from fwmatrix.ir import Action, Dnat, DnatMap, Masquerade, Match, Notrack, Redirect, Rule, Snat, Unmodelled, UnmodelledAction, Verdict, VerdictMap
from fwmatrix.ir import distinct, packet_copies
from fwmatrix.matrix.model import PortRange

XT_TEXT = "iptables-nft (xt) expression: audit this table from iptables-save instead"
NAT_FLAGS = {"random", "fully-random", "persistent"}  # change which port is picked, not where the packet goes
# Statements that let a packet through or stop the rule by state fwmatrix does not see.
STATEFUL_MATCHES = {"limit", "quota", "ct count", "meter", "set"}
# Statements with no effect on any verdict. `flow add @ft` offloads a connection only
# once it is established; the NEW packets the audit judges still traverse the chain.
NO_EFFECT = {"counter", "log", "flow"}
# Statements after which the chain goes on, whose effect is not modelled: `ct helper set`
# never accepts (a helper may drop a packet it cannot parse; what it expects is `related`).
GOES_ON = {"ct helper"}
# Source NAT statements: nft ends the nat chain's walk with an accept once the mapping is
# set up (nf_nat_setup_info; a masquerade out of an interface without an address drops).
# They run after the forward decision (postrouting, input) and the audit does not walk
# those nat chains; `snat ip to` in an inet table only translates its family.
SOURCE_NAT = {"snat", "masquerade"}


def _vmap(arg: Any, ctx: _TableContext) -> tuple[list[Match], VerdictMap]:
    fields = _fields(arg["key"], lookup=True)
    names = tuple(f.name for f in fields)
    data = arg["data"]
    if isinstance(data, str) and data.startswith("@"):
        ctx.use(data[1:], fields, "vmap")
        action = VerdictMap(names, map_name=data[1:])
    else:
        entries = []
        for item in _items(data):
            key, verdict = item
            target = _verdict(verdict)
            if target is not None:  # a `continue` entry falls through exactly like a miss
                entries.append((_key(tuple(f.kind for f in fields), key), target))
        action = VerdictMap(names, tuple(entries))
    return _implied(arg["key"], exact=True), action


def _dnat(arg: Any, ctx: _TableContext) -> tuple[list[Match], Dnat | DnatMap]:
    if set(arg) - {"family", "addr", "port", "flags"}:
        raise _Unknown("options fwmatrix does not model")
    flags = arg.get("flags", [])
    if set([flags] if isinstance(flags, str) else flags) - NAT_FLAGS:
        raise _Unknown(f"flags {describe(flags)}")
    if arg.get("family", ctx.family) not in FAMILY_VERSION:
        raise _Unknown("no address family")
    family = FAMILY_VERSION[arg.get("family", ctx.family)]
    addr_kind = "ip" if family == 4 else "ip6"
    addr = arg["addr"]
    if not (isinstance(addr, dict) and "map" in addr):
        port = _value("port", arg["port"]) if "port" in arg else None
        return [], Dnat(family, _address(family, addr), cast("PortRange | None", port))
    lookup = addr["map"]
    if "port" in arg:
        return _paired_dnat(family, addr_kind, lookup, arg["port"])
    if isinstance(lookup["key"], dict) and len(lookup["key"]) == 1 and next(iter(lookup["key"])) in DRAWN_KEYS:
        return [], _drawn_dnat(family, lookup, ctx)
    fields = _fields(lookup["key"], lookup=True)
    names = tuple(f.name for f in fields)
    data = lookup["data"]
    implied = _implied(lookup["key"], exact=True)
    if isinstance(data, str) and data.startswith("@"):
        ctx.use(data[1:], fields, "dnat")
        return implied, DnatMap(family, names, map_name=data[1:])
    entries = []
    for key, target in (item for item in _items(data)):
        target_kinds = (addr_kind, "port") if isinstance(target, dict) and "concat" in target else (addr_kind,)
        entries.append((_key(tuple(f.kind for f in fields), key), _key(target_kinds, target)))
    return implied, DnatMap(family, names, entries=tuple(entries))


def _paired_dnat(family: int, addr_kind: str, lookup: dict, port: Any) -> tuple[list[Match], DnatMap]:
    """`dnat to tcp dport map { 1000 : 1.1.1.1 } : tcp dport map { 1000 : 1234 }` (nftables'
    own example of iptables' DNAT rules in one): two literal maps looked up with one key are one
    map to (address, port), exact when both hold the same keys (a key missing from one breaks
    the rule in the kernel: no translation, which a shared key set never meets)."""
    pmap = port.get("map") if isinstance(port, dict) else None
    if not isinstance(pmap, dict) or pmap.get("key") != lookup["key"] or any(isinstance(m["data"], str) for m in (lookup, pmap)):
        raise _Unknown("an address map with a separate port")
    fields = _fields(lookup["key"], lookup=True)
    kinds = tuple(f.kind for f in fields)
    ports = {_key(kinds, key): _key(("port",), value) for key, value in _items(pmap["data"])}
    addrs = {_key(kinds, key): _key((addr_kind,), value) for key, value in _items(lookup["data"])}
    if set(ports) != set(addrs):
        raise _Unknown("address and port maps with different keys")
    entries = tuple((key, addrs[key] + ports[key]) for key in addrs)
    return _implied(lookup["key"], exact=True), DnatMap(family, tuple(f.name for f in fields), entries=entries)


# `dnat to numgen inc mod 2 map @targets`: a number drawn per connection (a counter, a random
# number, a hash of the packet) picks the target; a number the map lacks translates nothing
DRAWN_KEYS = ("numgen", "jhash", "symhash")


def _drawn_dnat(family: int, lookup: dict, ctx: _TableContext) -> DnatMap:
    """A DNAT map keyed on a drawn number: exact when the map is empty (no number finds a
    target: the rule never translates, the packet goes on), else which target a connection
    gets is not modelled. (A map the packet path fills is judged both ways by the evaluator.)"""
    data = lookup["data"]
    info = ctx.sets.get(data[1:]) if isinstance(data, str) and data.startswith("@") else None
    if info is None or info.elements or info.dynamic or info.data_kinds in ((), ("verdict",)):
        raise _Unknown("a map keyed on a number drawn per connection: which target a connection gets is not modelled")
    ctx.uses[info.name] = ()
    return DnatMap(family, (), map_name=info.name)


SNAT_DETAILS = {"port", "flags"}  # which ports, how they are picked: the address stays


def _source_nat(kind: str, arg: Any, family: str | None, ctx: _TableContext) -> Action:
    """`masquerade`, `snat ip to A` (any ports and flags: the audit judges the address,
    audit/snat.py) as the IR says them; other forms (ranges, prefixes, maps) end the chain as
    accept does (forward._nat_passes), with a translation the audit cannot tell and says so."""
    if kind == "masquerade" and (not arg or (isinstance(arg, dict) and set(arg) <= SNAT_DETAILS)):
        return Masquerade()
    unread = UnmodelledAction(f"{describe({kind: arg})} (source NAT to a range or a map: the address it picks is not read)")
    version = FAMILY_VERSION.get(family or "", {"ip": 4, "ip6": 6}.get(ctx.family))
    if kind == "snat" and isinstance(arg, dict) and set(arg) <= {"family", "addr", *SNAT_DETAILS} and isinstance(arg.get("addr"), str) and version:
        try:
            address = IPNetwork(arg["addr"])
        except (AddrFormatError, ValueError):
            return unread
        if address.size == 1 and address.version == version:
            return Snat(version, address)
    return unread


REJECT_FAMILY = {"icmp": 4, "icmpv6": 6}  # `icmpx` and `tcp reset` answer either family
PLAIN_VERDICTS = {kind: Verdict(kind) for kind in ("accept", "drop", "return")}  # what _verdict reads them as, whatever their argument


def _listed(value: Any) -> list:
    return [value] if isinstance(value, str) else list(value)


def _terminal(kind: str, arg: Any, ctx: _TableContext) -> tuple[list[Match], Action] | None:
    """A statement that decides the packet's fate in this chain, or None when it is not one of those."""
    if kind == "reject" and isinstance(arg, dict) and arg.get("type") in REJECT_FAMILY:
        # nft lists `meta nfproto ipv6 reject` of an inet table as `reject with icmpv6 ...`:
        # the family the reject implies is only in the type of its answer
        return [Match(("nfproto",), ((REJECT_FAMILY[arg["type"]],),))], Verdict("reject")
    if kind in PLAIN_VERDICTS:
        return [], PLAIN_VERDICTS[kind]
    if kind in ("reject", "jump", "goto"):
        return [], _verdict({kind: arg})
    if kind in SOURCE_NAT:
        family = arg.get("family") if isinstance(arg, dict) else None
        implied = [Match(("nfproto",), ((FAMILY_VERSION[family],),))] if ctx.family == "inet" and family in FAMILY_VERSION else []
        return implied, _source_nat(kind, arg, family, ctx)
    if kind == "redirect":  # to the firewall itself, never forwarded (the audit: prerouting.delivered_locally)
        if arg and not (isinstance(arg, dict) and set(arg) <= {"port", "flags"} and not set(_listed(arg.get("flags", []))) - NAT_FLAGS):
            return [], UnmodelledAction(f"{describe({kind: arg})} (sends the packet to the firewall itself, with options not read)")
        try:
            port = _value("port", arg["port"]) if arg and "port" in arg else None
        except _SHAPE_ERRORS as exc:
            return [], UnmodelledAction(describe({kind: arg}) + _why(exc))
        return [], Redirect(PortRange(port, port) if isinstance(port, int) else port)
    if kind in ("vmap", "dnat"):
        try:
            return _vmap(arg, ctx) if kind == "vmap" else _dnat(arg, ctx)
        except _SHAPE_ERRORS as exc:
            return [], UnmodelledAction(describe({kind: arg}) + _why(exc))
    return None


def _parse_rule(body: dict, ctx: _TableContext, chain: str) -> list[Rule]:
    """A rule: its matches (with the protocols they imply) and one action. The IR has
    one action per rule, so a statement of unknown effect before the verdict makes
    the whole action unknown, naming both. `notrack` before a verdict makes two IR
    rules with the same matches: the notrack, then the verdict."""
    matches: list[Match | Unmodelled] = []
    notrack = False
    copies: list[str] = []  # `dup to G`: packet_copies
    effects: list[str] = []  # statements that may change the packet's fate, in order
    quiet: list[str] = []  # statements that change the packet, not its fate, but may stop the rule
    going_on = 0  # how many of them let the chain go on (GOES_ON)
    action: Action = None
    for stmt in body.get("expr") or []:
        if not isinstance(stmt, dict) or len(stmt) != 1:  # values._single, inline: it runs for every statement
            ctx.fill_text(stmt)
            effects.append(describe(stmt))
            continue
        ((kind, arg),) = stmt.items()
        if kind == "set" or kind == "map":
            ctx.fill(kind, arg)
        if kind == "match":
            matches += ctx.match(arg)
        elif kind == "xt":  # iptables-nft: the parameters are not in the listing
            matches.append(Unmodelled(XT_TEXT))
            if not (isinstance(arg, dict) and arg.get("type") == "match"):
                effects.append(XT_TEXT)
        elif _fills_without_limit(kind, arg):
            quiet.append(describe(stmt))  # fills a set (ctx.fill): decides nothing unless a verdict follows
        elif kind in STATEFUL_MATCHES:
            matches.append(Unmodelled(describe(stmt)))
        elif kind == "notrack" and not effects:
            notrack = True
        elif kind == "dup" and not effects:
            copies.append(describe(stmt))  # the original goes on, exact: a rule of its own before this one
        elif kind in NO_EFFECT or kind == "continue" or _is_nftrace(kind, arg):
            continue
        elif _sets_tcp_option(kind, arg):
            quiet.append(describe(stmt))
        else:
            decided = _terminal(kind, arg, ctx)
            if decided is None:
                effects.append(describe(stmt))
                going_on += kind in GOES_ON
                continue
            implied, action = decided
            matches += implied
            effects += quiet  # the verdict runs only when they did not stop the rule
            if effects:
                effects.append(describe(stmt))
            break  # nothing after a verdict runs
    if effects:
        # only statements after which the chain goes on, and no verdict: the chain goes on
        goes_on = action is None and len(effects) == going_on
        action = UnmodelledAction("; ".join(dict.fromkeys(effects)), terminal=not goes_on)
    origin = f"{ctx.family} {ctx.name} {chain} handle {body.get('handle', '?')}"
    rule = Rule(distinct(matches), action, comment=str(body.get("comment", "")), origin=origin)
    out = [Rule(rule.matches, Notrack(), rule.comment, origin)] if notrack else []
    if copies:
        out.append(Rule(rule.matches, packet_copies("; ".join(copies), "each packet the rule matches"), rule.comment, f"{origin} (copies)"))
    return out + [rule] if action is not None or not out else out


def _fills_without_limit(kind: str, arg: Any) -> bool:
    """`add @knock { ip saddr }`: adds to a set and matches unless the set is full (the rule
    then stops there: NFT_BREAK); with a stateful statement inside (`update @s { ip saddr limit
    rate 1/second }`) it is a rate limit, which stays an unmodelled match."""
    return kind in ("set", "map") and isinstance(arg, dict) and not arg.get("stmt")


def _sets_tcp_option(kind: str, arg: Any) -> bool:
    """`tcp option maxseg size set rt mtu` (an MSS clamp) rewrites an option of the packet;
    a packet without the option stops the rule there (NFT_BREAK), so it only matters to
    a verdict after it."""
    return kind == "mangle" and isinstance(arg, dict) and isinstance(arg.get("key"), dict) and "tcp option" in arg["key"]


def _is_nftrace(kind: str, arg: Any) -> bool:
    """`meta nftrace set 1` only turns on tracing."""
    return kind == "mangle" and isinstance(arg, dict) and arg.get("key") == {"meta": {"key": "nftrace"}}

