"""Random iptables-restore input (IPv4 and IPv6), for the differential fuzzer.

The same idea as tests/fuzz_rulesets.py, in iptables' grammar: a filter
table whose FORWARD policy is ACCEPT or DROP, user chains reached by jump
(`-j`) and goto (`-g`) and left by RETURN, interface names negated and with
wildcards (`eth+`), addresses (prefixes, `-m iprange`, ipsets with `-m set
--match-set`), ports (single, ranges, `-m multiport`), `-m conntrack
--ctstate` (UNTRACKED too), REJECT; a nat table with port forwards (DNAT,
with or without a new port); sometimes a raw table that drops, accepts or
untracks (`-j CT --notrack`) in PREROUTING, and a mangle table that drops
or accepts in PREROUTING, FORWARD and POSTROUTING. Every rule records an
Aim, and probes come from fuzz_rulesets.probes.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field

from collections.abc import Iterator

from fuzz_rulesets import DNAT_NET, INTERFACES, PORTS, PUBLIC, WILDCARD_MATCHES, Aim, FuzzRuleset, _block, _blocks, _ports, port_forward_probe
from fwmatrix.backends.iptables import FAMILY_SUFFIX, SUFFIX_IPSET

STATES = ("NEW", "ESTABLISHED,RELATED", "INVALID", "NEW,ESTABLISHED", "UNTRACKED", "ESTABLISHED,RELATED,UNTRACKED")
VERDICTS = {"raw": ("-j DROP", "-j DROP", "-j ACCEPT", "-j CT --notrack", "-j CT --notrack"), "mangle": ("-j DROP", "-j DROP", "-j ACCEPT")}


@dataclass
class _Ipset:
    name: str
    family: int
    members: list[str]
    edges: list[str]

    def text(self) -> str:
        return f"create {self.name} hash:net family {'inet' if self.family == 4 else 'inet6'}\n" + "".join(f"add {self.name} {m}\n" for m in self.members)


@dataclass
class IptRuleset:
    seed: int
    files: dict[str, str]  # restore input by suffix (.ipt4, .ipt6)
    aims: list[Aim]
    constructs: set[str] = field(default_factory=set)

    def text(self) -> str:
        return "".join(f"# {suffix}\n{text}" for suffix, text in self.files.items())

    def as_probe_source(self) -> FuzzRuleset:
        return FuzzRuleset(self.seed, [], self.aims, self.constructs)


def _iface(rng: random.Random, aim: Aim, option: str, constructs: set[str]) -> str:
    negate = rng.random() < 0.25
    if rng.random() < 0.2:
        name, names = "eth+", list(WILDCARD_MATCHES) + ["wan0"]
        constructs.add("ipt-iface-wildcard")
    else:
        name = rng.choice(INTERFACES)
        names = [name, rng.choice(INTERFACES)]
    (aim.iif if option == "-i" else aim.oif).extend(names)
    constructs.add("ipt-iface" + ("-negated" if negate else ""))
    return f"{'! ' if negate else ''}{option} {name}"


def _address(rng: random.Random, aim: Aim, family: int, direction: str, constructs: set[str]) -> str:
    text, edges = _block(rng, family)
    (aim.src if direction == "s" else aim.dst)[family].extend(edges)
    bang = "! " if rng.random() < 0.25 else ""
    if "-" in text:
        constructs.add("ipt-iprange")
        return f"-m iprange {bang}--{'src' if direction == 's' else 'dst'}-range {text}"
    constructs.add("ipt-addr" + ("-negated" if bang else ""))
    return f"{bang}-{direction} {text}"


def _l4(rng: random.Random, aim: Aim, family: int, constructs: set[str]) -> str:
    if rng.random() < 0.12:
        aim.proto.append("icmp")
        constructs.add("ipt-icmp")
        # the type from a generator of its own, seeded by the state without drawing from it:
        # every seed's ruleset stays what it was but for its ICMP matches
        own = random.Random(hash(rng.getstate()))
        if own.random() < 0.25:
            return "-p icmp" if family == 4 else "-p ipv6-icmp"
        constructs.add("ipt-icmp-type")
        echo = "8" if family == 4 else "128"
        other = own.choice(("0", "3", "11") if family == 4 else ("129", "1", "3"))
        value = own.choice((echo, other, f"{echo}/0", f"{echo}/1", "echo-request", "destination-unreachable"))
        bang = "! " if own.random() < 0.3 else ""
        return f"-p icmp -m icmp {bang}--icmp-type {value}" if family == 4 else f"-p ipv6-icmp -m icmp6 {bang}--icmpv6-type {value}"
    proto = rng.choice(("tcp", "udp"))
    aim.proto += [proto, "udp" if proto == "tcp" else "tcp"]
    text, ports, construct = _ports(rng)
    aim.ports.extend(ports)
    bang = "! " if rng.random() < 0.2 else ""
    constructs.add("ipt-" + construct)
    if text.startswith("{"):
        return f"-p {proto} -m multiport {bang}--dports " + text.strip("{} ").replace(" ", "")
    return f"-p {proto} {bang}--dport {text.replace('-', ':')}"


def _rule(rng: random.Random, family: int, chain: str, targets: list[str], aims: list[Aim], constructs: set[str],
          ipsets: list[_Ipset] = (), table: str = "filter") -> str:
    aim = Aim(family=family)
    parts: list[str] = []
    # no out-interface before routing, and iptables refuses -i in POSTROUTING
    pool = {"PREROUTING": ("i", "s", "d", "l4", "ct", "set"), "POSTROUTING": ("o", "s", "d", "l4", "ct", "set")}.get(
        chain, ("i", "o", "s", "d", "l4", "ct", "set"))
    kinds = rng.sample(pool, min(len(pool), rng.choice((1, 1, 2, 2, 3))))
    sets = [s for s in ipsets if s.family == family]
    for kind in kinds:
        if kind in ("i", "o"):
            parts.append(_iface(rng, aim, f"-{kind}", constructs))
        elif kind in ("s", "d"):
            parts.append(_address(rng, aim, family, kind, constructs))
        elif kind == "l4":
            parts.append(_l4(rng, aim, family, constructs))
        elif kind == "set" and sets:
            ipset, direction = rng.choice(sets), rng.choice(("src", "dst"))
            (aim.src if direction == "src" else aim.dst)[family].extend(ipset.edges)
            parts.append(f"-m set {'! ' if rng.random() < 0.25 else ''}--match-set {ipset.name} {direction}")
            constructs.add("ipt-ipset")
        elif kind == "ct":
            state = rng.choice(STATES)
            parts.append(f"-m conntrack {'! ' if rng.random() < 0.2 else ''}--ctstate {state}")
            constructs.add("ipt-ctstate" + ("-untracked" if "UNTRACKED" in state else ""))
    if table in VERDICTS:
        verdicts = list(VERDICTS[table] if chain == "PREROUTING" else VERDICTS["mangle"])
    else:
        verdicts = ["-j ACCEPT", "-j ACCEPT", "-j DROP", "-j REJECT"]
        verdicts += [f"-j {t}" for t in targets] + [f"-g {t}" for t in targets]
        if chain != "FORWARD":
            verdicts.append("-j RETURN")
    verdict = rng.choice(verdicts)
    if not parts and verdict in ("-j DROP", "-j REJECT"):
        verdict = "-j ACCEPT"  # a drop of everything would leave nothing after it to compare
    if family == 6 and verdict == "-j DROP" and table != "filter" and not any(p.startswith(("-p tcp", "-p udp")) for p in parts):
        constructs.add("ipt-nd-drop")  # it may take neighbour discovery (for coverage)
    constructs.add(f"ipt-{table}-{chain}" if table != "filter" else "")
    constructs.add("ipt-notrack" if "notrack" in verdict else
                   "ipt" + verdict.split()[0] + ("-chain" if verdict.split()[1].startswith("c") else "-" + verdict.split()[1]))
    aims.append(aim)
    return " ".join([f"-A {chain}"] + parts + [verdict])


def _dnat(rng: random.Random, family: int, aims: list[Aim], constructs: set[str]) -> str:
    proto = rng.choice(("tcp", "udp"))
    port = rng.choice(PORTS)
    target = str(ipaddress.ip_network(DNAT_NET[family]).network_address + rng.randint(1, 250))
    if family == 6:
        target = f"[{target}]"
    if rng.random() < 0.5:
        target += f":{rng.choice(PORTS)}"
        constructs.add("ipt-dnat-port")
    aim = Aim(family=family, iif=["wan0", rng.choice(INTERFACES)], proto=[proto, "udp" if proto == "tcp" else "tcp"], ports=[port - 1, port, port + 1])
    aim.dst[family].append(PUBLIC[family])
    aim.hits.append(port_forward_probe(family, proto, port))
    aims.append(aim)
    constructs.add("ipt-dnat")
    return f"-A PREROUTING -i wan0 -d {PUBLIC[family]} -p {proto} --dport {port} -j DNAT --to-destination {target}"


def _ipsets(rng: random.Random, family: int) -> list[_Ipset]:
    out = []
    for i in range(rng.choice((0, 0, 1, 2))):
        blocks = _blocks(rng, family, rng.randint(1, 3))
        members = [b for b, _ in blocks if "-" not in b]  # hash:net takes prefixes
        if members:
            out.append(_Ipset(f"fz{family}{'ab'[i]}", family, members, [e for b, es in blocks if "-" not in b for e in es]))
    return out


def _family(rng: random.Random, family: int, aims: list[Aim], constructs: set[str], ipsets: list[_Ipset]) -> str:
    out: list[str] = []
    ipsets += _ipsets(rng, family)
    if rng.random() < 0.35:
        out += ["*raw", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
        out += [_rule(rng, family, "PREROUTING", [], aims, constructs, ipsets, "raw") for _ in range(rng.randint(1, 2))]
        out.append("COMMIT")
        constructs.add("ipt-raw")
    if rng.random() < 0.35:
        out += ["*mangle"] + [f":{c} ACCEPT [0:0]" for c in ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")]
        for chain in rng.sample(("PREROUTING", "FORWARD", "POSTROUTING"), rng.randint(1, 2)):
            out += [_rule(rng, family, chain, [], aims, constructs, ipsets, "mangle") for _ in range(rng.randint(1, 2))]
        out.append("COMMIT")
        constructs.add("ipt-mangle")
    if rng.random() < 0.5:
        out += ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
        out += [_dnat(rng, family, aims, constructs) for _ in range(rng.randint(1, 3))]
        out.append("COMMIT")
    policy = "DROP" if rng.random() < 0.5 else "ACCEPT"
    constructs.add(f"ipt-policy-{policy}")
    users = [f"c{i}" for i in range(rng.choice((0, 1, 2, 3)))]
    out += ["*filter", ":INPUT ACCEPT [0:0]", f":FORWARD {policy} [0:0]", ":OUTPUT ACCEPT [0:0]"]
    out += [f":{u} - [0:0]" for u in users]
    if rng.random() < 0.4:
        out.append("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")
    if any("notrack" in line for line in out) and rng.random() < 0.6:
        out.append(f"-A FORWARD -m conntrack --ctstate {rng.choice(('UNTRACKED', 'ESTABLISHED,RELATED,UNTRACKED'))} -j ACCEPT")
        constructs.add("ipt-ctstate-untracked")
    out += [_rule(rng, family, "FORWARD", users, aims, constructs, ipsets) for _ in range(rng.randint(1, 6))]
    for i, user in enumerate(users):  # a user chain reaches only the chains after it: no loops
        out += [_rule(rng, family, user, users[i + 1:], aims, constructs, ipsets) for _ in range(rng.randint(1, 4))]
    out.append("COMMIT")
    return "\n".join(out) + "\n"


def generate_iptables(seed: int) -> IptRuleset:
    rng = random.Random(f"iptables {seed}")
    aims: list[Aim] = []
    constructs: set[str] = set()
    families = rng.choice(((4,), (6,), (4, 6), (4, 6)))
    ipsets: list[_Ipset] = []
    files = {FAMILY_SUFFIX[f]: _family(rng, f, aims, constructs, ipsets) for f in families}
    if ipsets:
        files = {SUFFIX_IPSET: "".join(s.text() for s in ipsets), **files}
    constructs.discard("")
    return IptRuleset(seed, files, aims, constructs)


def shrink_candidates(files: dict[str, str]) -> Iterator[dict[str, str]]:
    """Smaller variants: a family's file, or one rule, less."""
    if len(files) > 1:
        for suffix in files:
            if suffix != SUFFIX_IPSET:
                yield {s: t for s, t in files.items() if s != suffix}
    for suffix, text in files.items():
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("-A "):
                yield {**files, suffix: "\n".join(lines[:i] + lines[i + 1:]) + "\n"}
