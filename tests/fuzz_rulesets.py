"""Random nftables rulesets from a grammar, and the probes that aim at their edges.

The differential fuzzer (tests/test_differential.py) loads each ruleset into a
namespace lab, sends the probes as real NEW connections and compares what the
kernel forwards with what the evaluator says. Everything here is pure: one
seed gives one ruleset and one list of probes, on any machine.

The grammar: one to three tables (inet, ip, ip6), each with one or two
forward base chains at different priorities and policies, regular chains
reached by jump, goto and verdict maps (and left by return), sometimes a
filter chain on prerouting (raw or mangle priority) that drops, accepts or
untracks (`notrack`, with `ct state untracked` accepts in forward), a filter
chain on postrouting, and a nat prerouting chain with port forwards (single
DNATs, with or without a new port, DNAT maps, and in inet tables `dnat ip
to` without an address match, which leaves IPv6 packets to later rules);
sometimes a netdev table with an ingress chain on one device. Rule matches:
interface names (negated, wildcards, anonymous sets, `iifname . oifname`
pairs), addresses (prefixes, ranges, anonymous and named interval sets,
negated), ports (single, ranges, sets, negated, `th dport`), protocols,
concatenations (`ip daddr . tcp dport`), `ct state` variations and `ct
status dnat`, and lookups of sets the packet path fills (`update @d0 { ip
saddr }` elsewhere in the table).

Productions that found evaluator bugs are kept out of the default grammar
until the bug is fixed: KNOWN_BUGS names them, `generate(seed, extra=...)`
(and FWMATRIX_FUZZ_CONSTRUCTS in the test) switches them on.

Every rule records an `Aim`: the interfaces, addresses, protocols and ports
it names, each with its neighbours just outside (the address before a
prefix, the port after a range, an interface not named). Probes are drawn
from the aims, so they fall on both sides of every rule's edges.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from fwmatrix.ops.lab import Probe

INTERFACES = ("wan0", "lan0", "dmz0", "eth1", "eth2")
WILDCARD, WILDCARD_MATCHES = "eth*", ("eth1", "eth2")
NETS = {
    4: ("10.1.0.0/24", "10.2.0.0/24", "198.51.100.0/24"),
    6: ("fd00:1::/64", "fd00:2::/64", "2001:db8:1::/64"),
}
PREFIXES = {4: (32, 31, 30, 28, 27, 24), 6: (128, 127, 126, 120, 64)}
PUBLIC = {4: "203.0.113.10", 6: "2001:db8:ff::10"}  # the address port forwards are aimed at
DNAT_NET = {4: "10.2.0.0/24", 6: "fd00:2::/64"}
PORTS = (22, 23, 53, 80, 443, 1000, 1010, 8080)
DEFAULT_HOSTS = {4: ("10.1.0.7", "10.2.0.7", "198.51.100.7", "10.9.0.9"), 6: ("fd00:1::7", "fd00:2::7", "2001:db8:1::7", "fd00:9::9")}
FORWARD_PRIORITIES = (-10, 0, 5, 10)
POSTROUTING_PRIORITIES = (-150, 0, 50, 300)  # mangle, filter, before and after srcnat
# forward matches that take untracked packets (what notrack in raw prerouting makes)
BEFORE_ROUTING = ("ingress", "prerouting")  # hooks without an out-interface
EARLY_OR_LATE = ("ingress", "prerouting", "postrouting")  # filter hooks around forward: drops and accepts only
UNTRACKED_ACCEPTS = ("ct state untracked", "ct state { established, related, untracked }", "ct state != { new, invalid }")
PROBES_PER_RULESET = 64
AIMED_PER_RULE = 3


# -- what a ruleset is made of ------------------------------------------------------------------


@dataclass
class Aim:
    """What one rule names, with neighbours: probes drawn from it test the rule's edges."""

    family: int | None = None
    l4: str | None = None  # the rule's protocol once one match names it: tcp, udp, th (tcp or udp), icmp
    iif: list[str] = field(default_factory=list)
    oif: list[str] = field(default_factory=list)
    src: dict[int, list[str]] = field(default_factory=lambda: {4: [], 6: []})
    dst: dict[int, list[str]] = field(default_factory=lambda: {4: [], 6: []})
    proto: list[str] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    hits: list[Probe] = field(default_factory=list)  # probes the rule surely matches (a port forward's own)


@dataclass
class FuzzRule:
    matches: list[str]
    action: str

    def text(self) -> str:
        return " ".join(self.matches + [self.action])


@dataclass
class FuzzChain:
    name: str
    header: str  # "" for a regular chain, else "type ... hook ... priority ...; policy ...;"
    rules: list[FuzzRule] = field(default_factory=list)


@dataclass
class FuzzTable:
    family: str  # inet, ip, ip6, netdev
    name: str
    sets: list[tuple[str, str]] = field(default_factory=list)  # (name, body lines)
    chains: list[FuzzChain] = field(default_factory=list)


@dataclass
class FuzzRuleset:
    seed: int
    tables: list[FuzzTable]
    aims: list[Aim]
    constructs: set[str]  # the grammar's productions this ruleset uses (for coverage)

    def text(self) -> str:
        return render(self.tables)


def render(tables: Sequence[FuzzTable]) -> str:
    out: list[str] = []
    for t in tables:
        out.append(f"table {t.family} {t.name} {{")
        for name, body in t.sets:
            out.append(f"\tset {name} {{\n{body}\n\t}}")
        for c in t.chains:
            out.append(f"\tchain {c.name} {{")
            if c.header:
                out.append(f"\t\t{c.header}")
            out += [f"\t\t{r.text()}" for r in c.rules]
            out.append("\t}")
        out.append("}")
    return "\n".join(out) + "\n"


# -- values and their edges ------------------------------------------------------------------------


def _edges(first: int, last: int, family: int) -> list[str]:
    """The first and last addresses of a block, one inside, and the neighbours just outside."""
    kind = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    points = {first - 1, first, (first + last) // 2, last, last + 1}
    return [str(kind(p)) for p in sorted(points) if 0 < p < (1 << (32 if family == 4 else 128)) - 1]


def _block(rng: random.Random, family: int) -> tuple[str, list[str]]:
    """A prefix, a single address or a range inside one of the nets: (nft text, edge addresses)."""
    text, edges, _ = _span(rng, family)
    return text, edges


def _blocks(rng: random.Random, family: int, count: int) -> list[tuple[str, list[str]]]:
    """Up to `count` blocks that do not overlap (nft refuses overlapping set elements)."""
    out: list[tuple[str, list[str]]] = []
    taken: list[tuple[int, int]] = []
    for _ in range(count):
        text, edges, (first, last) = _span(rng, family)
        if all(last < a or first > b for a, b in taken):
            taken.append((first, last))
            out.append((text, edges))
    return out


def _span(rng: random.Random, family: int) -> tuple[str, list[str], tuple[int, int]]:
    net = ipaddress.ip_network(rng.choice(NETS[family]))
    shape = rng.random()
    if shape < 0.25:  # a range
        a, b = sorted(rng.sample(range(1, 250), 2))
        first, last = int(net.network_address) + a, int(net.network_address) + b
        kind = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
        return f"{kind(first)}-{kind(last)}", _edges(first, last, family), (first, last)
    plen = rng.choice([p for p in PREFIXES[family] if p >= net.prefixlen])
    size = 1 << ((32 if family == 4 else 128) - plen)
    span = min(net.num_addresses // size, 256)
    first = int(net.network_address) + size * rng.randrange(span)
    block = ipaddress.ip_network((first, plen))
    text = str(block.network_address) if plen == block.max_prefixlen else str(block)
    return text, _edges(first, first + size - 1, family), (first, first + size - 1)


def _ports(rng: random.Random) -> tuple[str, list[int], str]:
    """A port, a range or a set: (nft text, edge ports, construct name)."""
    shape = rng.random()
    if shape < 0.45:
        p = rng.choice(PORTS)
        return str(p), [q for q in (p - 1, p, p + 1) if 0 < q < 65536], "port"
    if shape < 0.7:
        low = rng.choice(PORTS)
        high = low + rng.choice((1, 5, 10, 100))
        return f"{low}-{high}", [low - 1, low, high, high + 1], "port-range"
    chosen = sorted(rng.sample(PORTS, rng.randint(2, 3)))
    return "{ " + ", ".join(map(str, chosen)) + " }", chosen + [chosen[0] + 1], "port-set"


def _ifname(rng: random.Random) -> tuple[str, list[str], str]:
    """An interface match's right side: (text, interfaces to probe, construct)."""
    shape = rng.random()
    if shape < 0.2:
        return f'"{WILDCARD}"', list(WILDCARD_MATCHES) + ["wan0"], "iface-wildcard"
    if shape < 0.35:
        two = sorted(rng.sample(INTERFACES, 2))
        return "{ " + ", ".join(f'"{n}"' for n in two) + " }", two + [rng.choice(INTERFACES)], "iface-set"
    name = rng.choice(INTERFACES)
    return f'"{name}"', [name, rng.choice(INTERFACES)], "iface"


# -- the grammar -------------------------------------------------------------------------------------


@dataclass
class _TableContext:
    rng: random.Random
    table: FuzzTable
    families: tuple[int, ...]  # address families this table's rules see
    constructs: set[str]
    enabled: frozenset[str] = frozenset()  # KNOWN_BUGS productions switched on
    before_conntrack: bool = False  # generating a chain at raw priority: conntrack has not run yet
    notrack: bool = False  # a raw prerouting chain of this table untracks packets
    dynamic_sets: list[tuple[str, int]] = field(default_factory=list)  # (name, family): sets the packet path fills
    regular: list[str] = field(default_factory=list)  # regular chains, in the order they may be reached
    named_sets: list[tuple[str, str, Aim]] = field(default_factory=list)  # (name, kind, aim of its elements)

    def family_prefix(self, family: int) -> str:
        return "ip" if family == 4 else "ip6"


def _match(ctx: _TableContext, aim: Aim, hook: str) -> str | None:
    """One match of a rule, recorded in its aim; None when the chosen kind does not fit."""
    rng = ctx.rng
    kind = rng.choice(("iif", "oif", "saddr", "daddr", "saddr", "daddr", "l4", "l4", "ct", "set", "set", "pair", "dynamic"))
    negate = rng.random() < 0.25
    bang = "!= " if negate else ""
    if kind in ("iif", "oif"):
        if kind == "oif" and hook in BEFORE_ROUTING:
            return None  # no output interface before routing
        text, names, construct = _ifname(rng)
        getattr(aim, kind).extend(names)
        ctx.constructs.add(construct + ("-negated" if negate else ""))
        return f"{kind}name {bang}{text}"
    if kind in ("saddr", "daddr"):
        family = aim.family or rng.choice(ctx.families)
        if aim.family is None and len(ctx.families) > 1:
            ctx.constructs.add("family-match-in-inet")
        aim.family = family
        if rng.random() < 0.3:
            blocks = _blocks(rng, family, rng.randint(2, 3))
            text = "{ " + ", ".join(b for b, _ in blocks) + " }"
            edges = [e for _, es in blocks for e in es]
            ctx.constructs.add("addr-set")
        else:
            text, edges = _block(rng, family)
            ctx.constructs.add("addr-range" if "-" in text else "addr-prefix")
        getattr(aim, "src" if kind == "saddr" else "dst")[family].extend(edges)
        if negate:
            ctx.constructs.add("addr-negated")
        return f"{ctx.family_prefix(family)} {kind} {bang}{text}"
    if kind == "l4":
        shape = rng.random()
        if aim.l4 == "icmp":
            return None
        if aim.l4 is not None:  # one protocol per rule
            shape = 0.2 if aim.l4 == "th" else 0.5
        if shape < 0.12:
            aim.l4 = "icmp"
            family = aim.family or rng.choice(ctx.families)
            aim.family = family
            aim.proto.append("icmp")
            ctx.constructs.add("icmp")
            # the type from a generator of its own, seeded by the state without drawing from it:
            # every seed's ruleset stays what it was but for its ICMP matches
            own = random.Random(hash(rng.getstate()))
            if own.random() < 0.25:
                return f"meta l4proto {'icmp' if family == 4 else 'ipv6-icmp'}"
            return _icmp_type(own, "icmp" if family == 4 else "icmpv6", ctx.constructs)
        text, ports, construct = _ports(rng)
        aim.ports.extend(ports)
        ctx.constructs.add(construct + ("-negated" if negate else ""))
        if shape < 0.3:
            aim.proto += ["tcp", "udp", "sctp"]
            ctx.constructs.add("th-dport")
            prefix = "" if aim.l4 else "meta l4proto { tcp, udp } "
            aim.l4 = "th"
            return f"{prefix}th dport {bang}{text}"
        proto = aim.l4 or rng.choice(("tcp", "udp"))
        aim.l4 = proto
        aim.proto += [proto, "udp" if proto == "tcp" else "tcp"]
        return f"{proto} dport {bang}{text}"
    if kind == "ct" and hook != "ingress":  # the kernel refuses ct expressions in netdev tables
        choice = rng.choice(("ct state new", "ct state != established", "ct state { new, related }",
                             "ct state established,related", "ct state invalid", "ct status dnat", *UNTRACKED_ACCEPTS))
        ctx.constructs.add("ct-state-untracked" if choice in UNTRACKED_ACCEPTS else choice.replace(" ", "-"))
        return choice
    if kind == "dynamic" and ctx.dynamic_sets:
        name, family = rng.choice(ctx.dynamic_sets)
        if aim.family not in (None, family):
            return None
        aim.family = family
        ctx.constructs.add("dynamic-set-lookup")
        return f"{ctx.family_prefix(family)} {rng.choice(('saddr', 'daddr'))} {bang}@{name}"
    if kind == "set" and ctx.named_sets:
        name, set_kind, set_aim = rng.choice(ctx.named_sets)
        if set_kind.startswith("addr"):
            family = int(set_kind[-1])
            if aim.family not in (None, family):
                return None
            aim.family = family
            direction = rng.choice(("saddr", "daddr"))
            getattr(aim, "src" if direction == "saddr" else "dst")[family].extend(set_aim.dst[family])
            ctx.constructs.add("named-interval-set")
            return f"{ctx.family_prefix(family)} {direction} {bang}@{name}"
        if set_kind.startswith("svc"):
            family = int(set_kind[-1])
            if aim.family not in (None, family) or aim.l4 not in (None, "tcp"):
                return None
            aim.family, aim.l4 = family, "tcp"
            aim.dst[family].extend(set_aim.dst[family])
            aim.ports.extend(set_aim.ports)
            aim.proto.append("tcp")
            ctx.constructs.add("named-concat-set")
            return f"{ctx.family_prefix(family)} daddr . tcp dport @{name}"
        if hook in BEFORE_ROUTING:
            return None
        aim.iif.extend(set_aim.iif)
        aim.oif.extend(set_aim.oif)
        ctx.constructs.add("named-iface-pair-set")
        return f"iifname . oifname @{name}"
    if kind == "pair" and hook not in BEFORE_ROUTING:
        a, b = rng.sample(INTERFACES, 2)
        aim.iif += [a, b]
        aim.oif += [b, a]
        ctx.constructs.add("iface-pair")
        return f'iifname . oifname {{ "{a}" . "{b}", "{b}" . "{a}" }}'
    return None


def _action(ctx: _TableContext, aim: Aim, chain_index: int | None) -> str:
    """A rule's verdict. `chain_index`: None in a base chain, else the regular chain's position
    (a regular chain only reaches chains after it, so there are no loops)."""
    rng = ctx.rng
    targets = ctx.regular if chain_index is None else ctx.regular[chain_index + 1:]
    choices = ["accept", "accept", "drop", "drop", "reject"]
    if targets:
        choices += ["jump", "goto"] + (["vmap"] if aim.l4 != "icmp" else [])
    if chain_index is not None:
        choices += ["return"]
    if ctx.dynamic_sets:
        choices += ["update"]
    choice = rng.choice(choices)
    ctx.constructs.add(choice)
    if choice == "update":
        return _update(ctx, aim)
    if choice in ("jump", "goto"):
        return f"{choice} {rng.choice(targets)}"
    if choice == "vmap":
        ports = sorted(rng.sample(PORTS, 3))
        verdicts = ["accept", "drop", f"jump {rng.choice(targets)}"]
        if chain_index is not None:
            verdicts.append("return")
        rng.shuffle(verdicts)
        proto = aim.l4 or rng.choice(("tcp", "udp"))
        aim.proto += ["tcp", "udp"] if proto == "th" else [proto]
        aim.ports += ports + [ports[-1] + 1]
        return f"{proto} dport vmap {{ " + ", ".join(f"{p} : {v}" for p, v in zip(ports, verdicts)) + " }"
    return "counter " + choice if rng.random() < 0.1 else choice


def _update(ctx: _TableContext, aim: Aim) -> str:
    """A statement that fills a dynamic set from the packet path (the chain goes on)."""
    fitting = [(n, f) for n, f in ctx.dynamic_sets if aim.family in (None, f)]
    if not fitting or aim.l4 == "icmp":
        return "accept"
    name, family = ctx.rng.choice(fitting)
    aim.family = family
    ctx.constructs.add("dynamic-set-update")
    return f"{ctx.rng.choice(('update', 'add'))} @{name} {{ {ctx.family_prefix(family)} {ctx.rng.choice(('saddr', 'daddr'))} }}"


def _icmp_type(rng: random.Random, header: str, constructs: set[str]) -> str:
    """A type match (and at times a code) that holds for the probes' pings (echo request,
    code 0) or not: both sides of the type and code in the port dimension."""
    other = rng.choice(("echo-reply", "destination-unreachable", "time-exceeded"))  # the same names in both families
    types = rng.choice(("echo-request", other, f"{{ echo-request, {other} }}", "!= echo-request", f"!= {other}"))
    constructs.add("icmp-type")
    if rng.random() < 0.7:
        constructs.add("icmp-code")
        return f"{header} type {types} {header} code {rng.choice(('0', '1', '!= 0'))}"
    return f"{header} type {types}"


def _spares_icmpv6(aim: Aim, matches: list[str]) -> bool:
    """Whether a rule surely matches no ICMPv6 (and so no neighbour discovery)."""
    return aim.family == 4 or aim.l4 in ("tcp", "udp", "th")


def _rules(ctx: _TableContext, count: int, hook: str, chain_index: int | None, aims: list[Aim]) -> list[FuzzRule]:
    out = []
    for _ in range(count):
        aim = Aim()
        matches = [m for m in (_match(ctx, aim, hook) for _ in range(ctx.rng.choice((0, 1, 1, 2, 2, 3)))) if m]
        if ctx.table.family == "inet" and aim.family is None and ctx.rng.random() < 0.2:
            aim.family = ctx.rng.choice(ctx.families)
            matches.insert(0, f"meta nfproto {'ipv4' if aim.family == 4 else 'ipv6'}")
            ctx.constructs.add("meta-nfproto")
        if hook in EARLY_OR_LATE:
            action = ctx.rng.choice(("drop", "drop", "accept") + (("notrack",) * 3 if ctx.before_conntrack and hook == "prerouting" else ()))
            if action == "drop":  # for coverage: drops that may take neighbour discovery (ICMPv6) or ARP (netdev)
                if not _spares_icmpv6(aim, matches):
                    ctx.constructs.add("nd-drop")
                if hook == "ingress" and all(m.startswith(("iifname", "oifname")) for m in matches):
                    ctx.constructs.add("arp-drop")
            if action == "notrack":
                ctx.notrack = True
                ctx.constructs.add("notrack")
            elif ctx.dynamic_sets and ctx.rng.random() < 0.1:
                action = _update(ctx, aim)
            ctx.constructs.add(f"{hook}-{action.split()[0]}")
        elif ctx.rng.random() < 0.08 and hook == "forward":
            # an iifname verdict map
            targets = ctx.regular if chain_index is None else ctx.regular[chain_index + 1:]
            verdicts = ["accept", "drop"] + [f"jump {t}" for t in targets[:2]]
            names = ctx.rng.sample(INTERFACES, min(len(verdicts), 3))
            aim.iif += names
            action = "iifname vmap { " + ", ".join(f'"{n}" : {ctx.rng.choice(verdicts)}' for n in names) + " }"
            ctx.constructs.add("iface-vmap")
        else:
            action = _action(ctx, aim, chain_index)
        if not matches and action.endswith(("drop", "reject")):
            action = "accept"  # a drop of everything would leave nothing after it to compare
        out.append(FuzzRule(matches, action))
        aims.append(aim)
    return out


def _named_sets(ctx: _TableContext) -> None:
    rng = ctx.rng
    for i in range(rng.choice((0, 1, 1, 2))):
        name = f"s{i}"
        aim = Aim()
        kind = rng.choice(("addr", "svc", "pair"))
        if kind in ("addr", "svc"):
            family = rng.choice(ctx.families)
            blocks = _blocks(rng, family, rng.randint(1, 3))
            for _, edges in blocks:
                aim.dst[family].extend(edges)
            addr_type = "ipv4_addr" if family == 4 else "ipv6_addr"
            if kind == "addr":
                elements = [b for b, _ in blocks]
                body = f"\t\ttype {addr_type}\n\t\tflags interval\n\t\telements = {{ {', '.join(elements)} }}"
            else:
                elements = []
                for b, _ in blocks:
                    text, ports, _ = _ports(rng)
                    if text.startswith("{"):
                        text = text.strip("{} ").split(",")[0]
                    aim.ports.extend(ports)
                    elements.append(f"{b} . {text}")
                body = f"\t\ttype {addr_type} . inet_service\n\t\tflags interval\n\t\telements = {{ {', '.join(elements)} }}"
            kind = f"{kind}{family}"
        else:
            pairs = {tuple(rng.sample(INTERFACES, 2)) for _ in range(rng.randint(1, 3))}
            for a, b in pairs:
                aim.iif.append(a)
                aim.oif.append(b)
            body = "\t\ttype ifname . ifname\n\t\telements = { " + ", ".join(f'"{a}" . "{b}"' for a, b in sorted(pairs)) + " }"
        ctx.table.sets.append((name, body))
        ctx.named_sets.append((name, kind, aim))
    if ctx.table.family != "netdev" and rng.random() < 0.3:  # a set the packet path fills (`update @d0 { ip saddr }`)
        family = rng.choice(ctx.families)
        ctx.table.sets.append(("d0", f"\t\ttype {'ipv4_addr' if family == 4 else 'ipv6_addr'}\n\t\tflags dynamic"))
        ctx.dynamic_sets.append(("d0", family))


def port_forward_probe(family: int, proto: str, port: int) -> Probe:
    """A packet a port forward translates: from the internet side to the public address
    (its own random choices, so that adding it does not change the grammar's draws)."""
    rng = random.Random(f"{family} {proto} {port}")
    oif = rng.choice([i for i in INTERFACES if i != "wan0"])
    return Probe("wan0", oif, rng.choice(DEFAULT_HOSTS[family]), PUBLIC[family], proto, port)


def _port_forwards(ctx: _TableContext, aims: list[Aim]) -> list[FuzzRule]:
    """DNAT rules: iifname "wan0" <public address> <port> dnat to <target>[:port], and maps."""
    rng = ctx.rng
    out = []
    for _ in range(rng.randint(1, 3)):
        family = rng.choice(ctx.families)
        fam = ctx.family_prefix(family)
        aim = Aim(family=family, iif=["wan0", rng.choice(INTERFACES)], proto=[])
        aim.dst[family].append(PUBLIC[family])
        net = ipaddress.ip_network(DNAT_NET[family])
        targets = [str(net.network_address + rng.randint(1, 250)) for _ in range(3)]
        via = f" {fam}" if ctx.table.family == "inet" else ""  # `dnat ip to` in inet tables
        matches = [f'iifname "wan0"', f"{fam} daddr {PUBLIC[family]}"]
        cross = ctx.table.family == "inet" and rng.random() < 0.5
        if cross:  # no address match: `dnat ip to` meets IPv6 packets too, and leaves them to later rules
            matches = matches[:1]
            aim.family = None
            aim.dst[6 if family == 4 else 4].append(PUBLIC[6 if family == 4 else 4])
            ctx.constructs.add("dnat-cross-family")
        proto = rng.choice(("tcp", "udp"))
        aim.proto += [proto, "udp" if proto == "tcp" else "tcp"]
        if rng.random() < 0.35:  # a map from the port to the target
            ports = sorted(rng.sample(PORTS, 3))
            aim.ports += ports + [ports[0] + 1]
            mapping = ", ".join(f"{p} : {t}" for p, t in zip(ports, targets))
            out.append(FuzzRule(matches, f"dnat{via} to {proto} dport map {{ {mapping} }}"))
            port = rng.choice(ports)
            aim.hits += [port_forward_probe(f, proto, port) for f in ((4, 6) if cross else (family,))]
            ctx.constructs.add("dnat-map")
        else:
            port = rng.choice(PORTS)
            aim.ports += [port - 1, port, port + 1]
            target = targets[0] if family == 4 else f"[{targets[0]}]"
            if rng.random() < 0.5:
                target += f":{rng.choice(PORTS)}"
                ctx.constructs.add("dnat-port")
            out.append(FuzzRule(matches + [f"{proto} dport {port}"], f"dnat{via} to {target}"))
            aim.hits += [port_forward_probe(f, proto, port) for f in ((4, 6) if cross else (family,))]
            ctx.constructs.add("dnat")
        aims.append(aim)
    return out


def _table(rng: random.Random, index: int, family: str, aims: list[Aim], constructs: set[str], enabled: frozenset[str]) -> FuzzTable:
    table = FuzzTable(family, f"t{index}")
    families = {"inet": (4, 6), "ip": (4,), "ip6": (6,)}[family]
    ctx = _TableContext(rng, table, families, constructs, enabled)
    constructs.add(f"table-{family}")
    _named_sets(ctx)
    ctx.regular = [f"c{i}" for i in range(rng.choice((0, 1, 2, 3)))]
    chains: list[FuzzChain] = []
    if rng.random() < 0.35:
        priority = rng.choice(("raw", "mangle"))
        chain = FuzzChain("pre", f"type filter hook prerouting priority {priority}; policy accept;")
        ctx.before_conntrack = priority == "raw"
        chain.rules = _rules(ctx, rng.randint(1, 2), "prerouting", None, aims)
        ctx.before_conntrack = False
        chains.append(chain)
        constructs.add(f"prerouting-{priority}")
    if rng.random() < 0.5:
        # tables' nat chains at one priority or at their own: of two at one priority the
        # kernel runs the one loaded last first
        priority = "dstnat" if rng.random() < 0.5 else str(-100 + index)
        chain = FuzzChain("nat", f"type nat hook prerouting priority {priority}; policy accept;")
        chain.rules = _port_forwards(ctx, aims)
        chains.append(chain)
    for i, priority in enumerate(sorted(rng.sample(FORWARD_PRIORITIES, rng.choice((1, 1, 2))))):
        # a drop policy in every chain would leave little forwarded to compare
        policy = "drop" if rng.random() < (0.5 if index == i == 0 else 0.25) else "accept"
        chain = FuzzChain(f"fwd{i}", f"type filter hook forward priority {priority}; policy {policy};")
        constructs.add(f"policy-{policy}")
        if rng.random() < 0.4:
            chain.rules.append(FuzzRule(["ct state established,related"], "accept"))
        if ctx.notrack and rng.random() < 0.6:
            chain.rules.append(FuzzRule([rng.choice(UNTRACKED_ACCEPTS)], "accept"))
            constructs.add("ct-state-untracked")
        chain.rules += _rules(ctx, rng.randint(1, 5), "forward", None, aims)
        chains.append(chain)
    if rng.random() < 0.3:
        priority = rng.choice(POSTROUTING_PRIORITIES)
        chain = FuzzChain("post", f"type filter hook postrouting priority {priority}; policy accept;")
        chain.rules = _rules(ctx, rng.randint(1, 3), "postrouting", None, aims)
        chains.append(chain)
        constructs.add("postrouting-filter")
    if 4 in families and rng.random() < 0.2:  # source NAT; IPv4 only: the lab's firewall has no IPv6 address to masquerade with
        chain = FuzzChain("pnat", "type nat hook postrouting priority srcnat; policy accept;")
        chain.rules = _rules(ctx, rng.randint(0, 2), "postrouting", None, aims)
        chain.rules.append(FuzzRule((["meta nfproto ipv4"] if family == "inet" else []) + [f'oifname "{rng.choice(INTERFACES)}"'], "masquerade"))
        chains.append(chain)
        constructs.add("postrouting-nat")
    if sum(c.header.startswith("type filter hook forward") for c in chains) > 1:
        constructs.add("several-forward-chains")
    for i, name in enumerate(ctx.regular):
        chains.append(FuzzChain(name, "", _rules(ctx, rng.randint(1, 4), "forward", i, aims)))
    table.chains = chains
    return table


def _netdev_table(rng: random.Random, index: int, aims: list[Aim], constructs: set[str], enabled: frozenset[str]) -> FuzzTable:
    """A netdev table: an ingress chain bound to one device, before conntrack and routing."""
    table = FuzzTable("netdev", f"t{index}")
    ctx = _TableContext(rng, table, (4, 6), constructs, enabled, before_conntrack=True)
    _named_sets(ctx)
    device = rng.choice(INTERFACES)
    chain = FuzzChain("ingress", f'type filter hook ingress device "{device}" priority {rng.choice((-10, 0, 10))}; policy accept;')
    first = len(aims)
    chain.rules = _rules(ctx, rng.randint(1, 3), "ingress", None, aims)
    for aim in aims[first:]:
        aim.iif = [device] * 3 + aim.iif  # its packets arrive on the device
    table.chains = [chain]
    constructs.add("table-netdev")
    return table


# -- rulesets and probes -----------------------------------------------------------------------------


# productions of the default grammar that found evaluator bugs, switched off until they are fixed
# (tests/test_differential.py keeps each bug's minimal ruleset as a strict xfail)
KNOWN_BUGS: dict[str, str] = {}  # none today


def generate(seed: int, extra: Sequence[str] = ()) -> FuzzRuleset:
    """The ruleset of one seed; `extra` switches on productions of KNOWN_BUGS."""
    rng = random.Random(seed)
    aims: list[Aim] = []
    constructs: set[str] = set()
    enabled = frozenset(extra)
    tables = [_table(rng, i, rng.choice(("inet", "inet", "ip", "ip6")), aims, constructs, enabled) for i in range(rng.choice((1, 1, 2, 3)))]
    if rng.random() < 0.3:
        tables.append(_netdev_table(rng, len(tables), aims, constructs, enabled))
    constructs.update(extra)
    return FuzzRuleset(seed, tables, aims, constructs)


def _pick(rng: random.Random, named: Sequence[str], fallback: Sequence[str]) -> str:
    return rng.choice(list(named)) if named and rng.random() < 0.85 else rng.choice(list(fallback))


def _probe(rng: random.Random, aim: Aim) -> Probe | None:
    family = aim.family or rng.choice([f for f in (4, 6) if aim.src[f] or aim.dst[f]] or [4, 6])
    iif = _pick(rng, aim.iif, INTERFACES)
    oif = _pick(rng, [o for o in aim.oif if o != iif], [o for o in INTERFACES if o != iif])
    src = _pick(rng, aim.src[family], DEFAULT_HOSTS[family])
    dst = _pick(rng, aim.dst[family], DEFAULT_HOSTS[family])
    if src == dst or iif == oif:
        return None
    proto = _pick(rng, aim.proto, ("tcp", "udp", "tcp", "udp", "sctp", "icmp"))
    port = None if proto == "icmp" else int(_pick(rng, [str(p) for p in aim.ports if 0 < p < 65536], [str(p) for p in PORTS]))
    return Probe(iif, oif, src, dst, proto, port)


def probes(ruleset: FuzzRuleset, limit: int = PROBES_PER_RULESET) -> list[Probe]:
    """Up to `limit` probes: a few aimed at each rule's edges, the rest random over all the
    values the ruleset names (deterministic for the ruleset's seed)."""
    rng = random.Random(f"probes {ruleset.seed}")
    out: list[Probe] = []
    for aim in ruleset.aims:
        out += aim.hits + [p for p in (_probe(rng, aim) for _ in range(AIMED_PER_RULE)) if p]
    out = list(dict.fromkeys(out))
    if len(out) > limit:
        out = rng.sample(out, limit)
    everything = Aim(iif=list(INTERFACES), oif=list(INTERFACES), proto=["tcp", "udp", "sctp", "icmp"])
    for aim in ruleset.aims:
        for f in (4, 6):
            everything.src[f] += aim.src[f] + aim.dst[f]
            everything.dst[f] += aim.src[f] + aim.dst[f]
        everything.ports += aim.ports
    for _ in range(limit * 3):
        if len(out) >= limit:
            break
        p = _probe(rng, everything)
        if p and p not in out:
            out.append(p)
    return out


def shrink_candidates(tables: list[FuzzTable]) -> Iterator[list[FuzzTable]]:
    """Smaller variants of a ruleset: a table, a chain, a set, a rule or one match less
    (some do not load, e.g. a chain a jump still names: the caller skips those)."""
    def copy(ts: list[FuzzTable]) -> list[FuzzTable]:
        return [FuzzTable(t.family, t.name, list(t.sets), [FuzzChain(c.name, c.header, [FuzzRule(list(r.matches), r.action) for r in c.rules]) for c in t.chains]) for t in ts]

    for ti in range(len(tables)):
        yield [t for i, t in enumerate(copy(tables)) if i != ti]
    for ti, t in enumerate(tables):
        for ci in range(len(t.chains)):
            ts = copy(tables)
            del ts[ti].chains[ci]
            yield ts
        for si in range(len(t.sets)):
            ts = copy(tables)
            del ts[ti].sets[si]
            yield ts
    for ti, t in enumerate(tables):
        for ci, c in enumerate(t.chains):
            for ri, r in enumerate(c.rules):
                ts = copy(tables)
                del ts[ti].chains[ci].rules[ri]
                yield ts
                for mi in range(len(r.matches)):
                    ts = copy(tables)
                    del ts[ti].chains[ci].rules[ri].matches[mi]
                    yield ts
