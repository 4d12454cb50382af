"""The differential fuzzer: random rulesets, real packets, the evaluator's verdict.

Each seed makes a random nftables ruleset from the grammar in
tests/fuzz_rulesets.py, loads it into a namespace lab, reads it back as the
audit does, and sends a bounded number of NEW connections aimed at the
edges of its rules. Every probe is judged by the evaluator too (the same
judgement as tests/test_kernel_agreement.py: DNAT first, then whether the
translated packet lies in a forwarded region; packets that only unmodelled
constructs decide are not compared). A disagreement fails the test with the
seed, the ruleset, the probe, both verdicts and a minimised ruleset:

- fail-open: the kernel forwards a packet the evaluator calls closed (the
  severe kind: an audit that says clean while packets pass);
- fail-closed: the evaluator says forwarded, the kernel drops it;
- translation: both forward it, to different destinations.

CI runs FUZZ_RULESETS seeds from FWMATRIX_FUZZ_SEED (default 0);
FWMATRIX_FUZZ_RULESETS=500 runs more, FWMATRIX_FUZZ_SEED=N other ones, and
FWMATRIX_FUZZ_CONSTRUCTS=NAME,... (or `all`) switches on productions of
fuzz_rulesets.KNOWN_BUGS, kept out while the evaluator gets them wrong (none today).
Seeds that found a bug are kept in REGRESSION_SEEDS, with the bug.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

import pytest

import fuzz_iptables
import fuzz_rulesets as fuzz
from conftest import require_kernel
from fwmatrix.audit.evaluate import evaluate, interfaces_of
from fwmatrix.errors import BackendError
from fwmatrix.ir import Ruleset
from fwmatrix.space import Space
from fwmatrix.ops.lab import Lab, Probe, ProbeResult
from test_kernel_agreement import Judgement, disagrees, explain, judge

FUZZ_RULESETS = 8  # per CI run, beside REGRESSION_SEEDS: about 6 s each on a loaded 2-core machine
TIMEOUT = 0.5
SHRINK_SECONDS = 60.0  # at most this long minimising one disagreement


def _seeds(default: int, variable: str = "FWMATRIX_FUZZ_RULESETS") -> list[int]:
    count = int(os.environ.get(variable, default))
    first = int(os.environ.get("FWMATRIX_FUZZ_SEED", 0))
    return list(range(first, first + count))


def _constructs() -> list[str]:
    wanted = os.environ.get("FWMATRIX_FUZZ_CONSTRUCTS", "")
    known = list(fuzz.KNOWN_BUGS)
    names = known if wanted.strip() == "all" else [w.strip() for w in wanted.split(",") if w.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"FWMATRIX_FUZZ_CONSTRUCTS: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return names


# seed -> the bug it found (fixed since); run on every CI run beside the fresh seeds.
# Bugs still open are kept below as minimal rulesets (KNOWN_BUG_CASES), not as seeds:
# a seed's ruleset changes with the grammar, a minimal ruleset does not.
REGRESSION_SEEDS: dict[int, str] = {
    2140: "a mangle prerouting chain (after conntrack) judged on the states packets would have had, not on the "
          "`untracked` a raw notrack gave them (`ct state { established, related, untracked } drop`): 12 fail-closed of 64",
    3095: "a notrack rule's own ct match (`ct state invalid notrack`) judged both ways, as if its packets could be "
          "untracked already: every probe uncertain, none compared",
    4171: "a source match after source NAT (judged both ways) lost the family it implies: `ip saddr` there made "
          "IPv6 uncertain too, no probe compared",
}
IPT_REGRESSION_SEEDS: dict[int, str] = {
    1083: "ct matches before conntrack judged both ways wherever a notrack exists, even on packets it never "
          "untracks (a raw drop of ICMPv6 by state took all neighbour discovery): 25 fail-closed of 64",
}


# -- comparing -----------------------------------------------------------------------------------


@dataclass
class Disagreement:
    kind: str  # fail-open, fail-closed, translation
    probe: Probe
    judgement: Judgement
    result: ProbeResult

    def __str__(self) -> str:
        return f"[{self.kind}] {explain(self.judgement, self.result)}"


def _kind(j: Judgement, r: ProbeResult) -> str:
    if r.delivered and not j.forwarded:
        return "fail-open"
    if j.forwarded and not r.delivered:
        return "fail-closed"
    return "translation"


@dataclass
class Outcome:
    probes: int
    forwarded: int  # by the evaluator's judgement
    translated: int
    uncompared: int
    disagreements: list[Disagreement]


Loader = Callable[[Lab], Ruleset]  # loads a ruleset into the lab, returns it as the kernel lists it


def nft(text: str) -> Loader:
    def load(lab: Lab) -> Ruleset:
        lab.load_raw_nft(text)
        return lab.read_nft()

    return load


def iptables_restore(files: dict[str, str]) -> Loader:
    def load(lab: Lab) -> Ruleset:
        lab.load_raw_nft("")  # nothing of an earlier ruleset stays (iptables here is iptables-nft)
        lab.fw.run(["ipset", "destroy"], check=False)  # nor its ipsets (none is in use any more)
        lab.load_iptables(files)
        return lab.read_iptables()

    return load


def forget_neighbours(lab: Lab) -> None:
    """Empty every neighbour cache of the lab (ARP and IPv6 neighbour discovery): what the
    kernel does with a ruleset that drops them depends on what it learnt under the last one."""
    for ns in [lab.fw] + [lab.side(iface) for iface in lab.links]:
        ns.run(["ip", "neigh", "flush", "all"])


def differential(lab: Lab, load: Loader, probes: list[Probe], live: Ruleset | None = None) -> Outcome:
    """Load a ruleset, judge every probe by the evaluator (on `live`, default: what the kernel
    lists back) and by real packets; a disagreement is sent once more before it counts."""
    listed = load(lab)
    forget_neighbours(lab)
    live = live if live is not None else listed
    effective = evaluate(live, interfaces_of(live, list(lab.links)))
    # the cover the audit asks "is it forwarded?" of is the forwarded set itself (chains.py's proof)
    assert effective.forwarded_cover().equals(Space(effective.ifaces, [b for g in effective.forwarded for b in g.space.boxes]))
    judged: list[tuple[Probe, Judgement]] = []
    cross: set[int] = set()  # translated by the evaluator to another family: the kernel never does
    for p in probes:
        j = judge(effective, p)
        if j.dnat and ipaddress.ip_address(j.dst).version != p.family:
            cross.add(len(judged))
        elif j.dnat:  # the lab routes and listens where the evaluator says the packet goes
            if ipaddress.ip_address(j.dst) == ipaddress.ip_address(p.src):
                continue
            p = replace(p, expect_dst=j.dst, expect_dport=j.dport)
        judged.append((p, j))
    results = lab.run([p for p, _ in judged])

    def differs(i: int) -> bool:
        return i in cross or disagrees(judged[i][1], results[i])

    suspect = [i for i in range(len(judged)) if differs(i)]
    if suspect:  # a slow moment of the machine is not a disagreement
        for i, r in zip(suspect, lab.run([judged[i][0] for i in suspect], retries=1)):
            results[i] = r
    found = [Disagreement(_kind(j, r), p, j, r) for i, ((p, j), r) in enumerate(zip(judged, results)) if differs(i)]
    return Outcome(len(judged), sum(j.forwarded is True for _, j in judged), sum(bool(j.dnat) for _, j in judged),
                   sum(j.forwarded is None for _, j in judged), found)


T = TypeVar("T")


# how to make a ruleset smaller, load it and show it: nft tables, iptables-restore files
NFT_SHRINK = (fuzz.shrink_candidates, lambda tables: nft(fuzz.render(tables)), fuzz.render)
IPT_SHRINK = (fuzz_iptables.shrink_candidates, iptables_restore, lambda files: "".join(f"# {s}\n{t}" for s, t in files.items()))


def _still_disagrees(lab: Lab, load: Loader, probe: Probe, kind: str) -> bool:
    """Whether the probe still disagrees on this ruleset: fail-open as fail-open; the other two
    kinds count as one (a translation to an address the lab happens to route is seen, else not)."""
    try:
        outcome = differential(lab, load, [probe])
    except BackendError:  # the variant does not load (a jump to a chain it removed, say)
        return False
    return any((d.kind == "fail-open") == (kind == "fail-open") for d in outcome.disagreements)


def minimise(lab: Lab, ruleset: T, how: tuple, d: Disagreement) -> str:
    """The smallest ruleset (one element less at a time) on which the probe still disagrees the same way."""
    candidates, loader, text = how
    probe = replace(d.probe, expect_dst=None, expect_dport=None)
    deadline = time.monotonic() + SHRINK_SECONDS
    smaller = True
    while smaller and time.monotonic() < deadline:
        smaller = False
        for candidate in candidates(ruleset):
            if time.monotonic() > deadline:
                break
            if _still_disagrees(lab, loader(candidate), probe, d.kind):
                ruleset, smaller = candidate, True
                break
    return text(ruleset)


def report(case: str, text: str, outcome: Outcome, minimal: Callable[[Disagreement], str], again: str) -> str:
    ranked = sorted(outcome.disagreements, key=lambda d: d.kind != "fail-open")
    first = ranked[0]
    kinds = ", ".join(f"{sum(d.kind == k for d in ranked)} {k}" for k in ("fail-open", "fail-closed", "translation"))
    return (
        f"{case}: the kernel and the evaluator disagree on {len(ranked)} of {outcome.probes} probes ({kinds})\n"
        f"--- ruleset ({case}) ---\n{text}"
        + "".join(f"{d}\n" for d in ranked[:12])
        + f"--- minimised for the first ({first.kind}): {first.probe} ---\n{minimal(first)}"
        + f"reproduce: {again} pytest tests/test_differential.py"
    )


# -- the tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab():  # one lab for every ruleset: probes never reuse a source port, so each is a new connection
    require_kernel()  # before the lab: module fixtures come before the per-test `kernel` one
    with Lab(fuzz.INTERFACES, timeout=TIMEOUT) as lab:
        yield lab


CONSTRUCTS = _constructs()


@pytest.mark.kernel
@pytest.mark.parametrize("seed", sorted(set(_seeds(FUZZ_RULESETS)) | set(REGRESSION_SEEDS)))
def test_random_ruleset(lab: Lab, seed: int) -> None:
    ruleset = fuzz.generate(seed, CONSTRUCTS)
    outcome = differential(lab, nft(ruleset.text()), fuzz.probes(ruleset))
    _summary(f"seed {seed}", outcome)
    assert not outcome.disagreements, report(
        f"seed {seed}", ruleset.text(), outcome, lambda d: minimise(lab, ruleset.tables, NFT_SHRINK, d),
        f"FWMATRIX_FUZZ_SEED={seed} FWMATRIX_FUZZ_RULESETS=1")
    assert outcome.uncompared < outcome.probes, f"seed {seed}: no probe was compared"


def _summary(case: str, outcome: Outcome) -> None:
    print(f"{case}: {outcome.probes} probes, {outcome.forwarded} forwarded by the evaluator, "
          f"{outcome.translated} translated, {outcome.uncompared} not compared, {len(outcome.disagreements)} disagreements")


IPT_RULESETS = 3  # per CI run, beside the nftables ones and IPT_REGRESSION_SEEDS


@pytest.mark.kernel
@pytest.mark.parametrize("seed", sorted(set(_seeds(IPT_RULESETS, "FWMATRIX_FUZZ_IPT_RULESETS")) | set(IPT_REGRESSION_SEEDS)))
def test_random_iptables_ruleset(lab: Lab, seed: int) -> None:
    ruleset = fuzz_iptables.generate_iptables(seed)
    outcome = differential(lab, iptables_restore(ruleset.files), fuzz.probes(ruleset.as_probe_source()))
    _summary(f"iptables seed {seed}", outcome)
    assert not outcome.disagreements, report(
        f"iptables seed {seed}", ruleset.text(), outcome, lambda d: minimise(lab, ruleset.files, IPT_SHRINK, d),
        f"FWMATRIX_FUZZ_SEED={seed} FWMATRIX_FUZZ_IPT_RULESETS=1")
    assert outcome.uncompared < outcome.probes, f"iptables seed {seed}: no probe was compared"


@pytest.mark.kernel
def test_the_harness_reports_both_kinds(lab: Lab) -> None:
    """Judged on the wrong ruleset, every probe is a disagreement of the right kind:
    the comparison can fail, and names fail-open and fail-closed apart."""
    closed = "table inet t {\n chain f {\n  type filter hook forward priority 0; policy drop;\n }\n}\n"
    opened = closed.replace("policy drop", "policy accept")
    probes = [Probe("wan0", "dmz0", "198.51.100.7", "10.2.0.5", "tcp", 443), Probe("eth1", "lan0", "fd00:2::5", "fd00:1::7", "udp", 53)]
    lab.load_raw_nft(closed)
    outcome = differential(lab, nft(opened), probes, live=lab.read_nft())
    assert [d.kind for d in outcome.disagreements] == ["fail-open", "fail-open"], [str(d) for d in outcome.disagreements]
    lab.load_raw_nft(opened)
    outcome = differential(lab, nft(closed), probes, live=lab.read_nft())
    assert [d.kind for d in outcome.disagreements] == ["fail-closed", "fail-closed"], [str(d) for d in outcome.disagreements]


# -- evaluator bugs the fuzzer found, minimised: fixed ones pass, open ones are strict xfails ---------

FORWARD_ACCEPT = "table inet t {\n chain f {\n  type filter hook forward priority 0; policy drop;\n  %s\n  accept\n }\n}\n"
RAW = "table inet t {\n chain pre {\n  type filter hook prerouting priority raw; policy accept;\n  %s\n }\n}\n"
POST = "table inet t {\n chain post {\n  type filter hook postrouting priority 0; policy accept;\n  %s\n }\n}\n"
V4 = Probe("lan0", "wan0", "10.9.0.9", "10.1.0.9", "tcp", 80)
V6 = Probe("lan0", "wan0", "fd00:9::9", "fd00:1::9", "tcp", 80)


NAT = (
    "table %s %s {\n chain nat {\n  type nat hook prerouting priority dstnat; policy accept;\n"
    "  iifname \"wan0\" ip daddr 203.0.113.10 tcp dport 53 dnat to %s\n }\n}\n"
)

KNOWN_BUG_CASES = [
    # found by seed 2140: chains after conntrack in prerouting see what notrack took as untracked. Fixed
    pytest.param(RAW % "notrack" + "table ip m {\n chain pre {\n  type filter hook prerouting priority mangle; policy accept;\n"
                 "  ct state untracked drop\n }\n}\n", V4, id="mangle-drop-of-untracked"),
    pytest.param(RAW % "notrack" + "table ip m {\n chain pre {\n  type filter hook prerouting priority mangle; policy drop;\n"
                 "  ct state untracked accept\n }\n}\n", V4, id="mangle-accept-of-untracked"),
    # found by seed 104 (grammar of commit d87f1e7): 14 fail-open of 64 probes. Fixed: nft lists
    # `meta nfproto ipv6 reject` of an inet table as `reject with icmpv6 ...`, the family only in the answer
    pytest.param(FORWARD_ACCEPT % "meta nfproto ipv6 reject", V4, id="reject-icmpv6-in-inet-drops-ipv4"),
    pytest.param(FORWARD_ACCEPT % "meta nfproto ipv4 reject with icmp host-unreachable", V6, id="reject-icmp-in-inet-drops-ipv6"),
    # (seeds 106 and 137 found ct matches in raw prerouting read as after conntrack: kept in BEFORE_CONNTRACK)
    # found by seed 535 (with the port forwards' own probes): the raw chain never sees 10.2.0.5, only
    # 203.0.113.10. Fixed: a drop before DNAT takes no new connection that DNAT translated
    pytest.param("table ip t {\n chain pre {\n  type filter hook prerouting priority raw; policy accept;\n  ip daddr 10.2.0.5 drop\n }\n"
                 " chain nat {\n  type nat hook prerouting priority dstnat; policy accept;\n  tcp dport 80 dnat to 10.2.0.5\n }\n}\n",
                 Probe("wan0", "dmz0", "198.51.100.7", "203.0.113.10", "tcp", 80), id="raw-drop-of-a-port-forward-target"),
    # found by seed 248: two port forwards of one port in tables whose nat chains share a priority.
    # Fixed: of chains at one priority the kernel runs the one loaded last first
    pytest.param(NAT % ("ip", "a", "10.2.0.48:8080") + NAT % ("ip", "b", "10.2.0.58:8080"),
                 Probe("wan0", "eth1", "198.51.100.7", "203.0.113.10", "tcp", 53), id="nat-chains-of-one-priority"),
]


BEFORE_CONNTRACK = [  # (raw prerouting rules, whether the kernel forwards the probe: the evaluator must say the same)
    # found by seeds 106 (the kernel forwarded what the evaluator had the raw chain drop) and 137 (the kernel
    # dropped everything, the evaluator nothing): before conntrack the packet has no connection, `ct state` is invalid
    ("ct state new drop", True), ("ct state invalid drop", False),
    ("ct status dnat drop", True),
    ("notrack\n  ct state untracked drop", None),  # untracked by then: judged both ways (not compared)
    ("ct state invalid notrack", True),  # found by seed 3095: a rule's own notrack comes after its match
    # found by iptables seed 1083: a notrack of other packets (UDP) leaves the state of a rule on TCP exact
    ('iifname "eth2" udp dport 53 notrack\n  meta l4proto tcp ct state invalid drop', False),
]


@pytest.mark.kernel
@pytest.mark.parametrize(("rules", "forwarded"), BEFORE_CONNTRACK, ids=[r.replace("\n ", ";") for r, _ in BEFORE_CONNTRACK])
def test_ct_matches_before_conntrack_are_exact(lab: Lab, rules: str, forwarded: bool | None) -> None:
    """Before conntrack a packet has no connection: `ct state` reads invalid, other ct keys fail."""
    lab.load_raw_nft(RAW % rules)
    live = lab.read_nft()
    verdict = judge(evaluate(live, interfaces_of(live, list(lab.links))), V4)
    assert verdict.forwarded is forwarded, str(verdict)
    if forwarded is not None:
        assert lab.run([V4], retries=1)[0].delivered is forwarded


NEIGHBOURS_DROPPED = [
    # found by seed 0 (with the port forwards' own probes): the drop takes the neighbour advertisements from fe80::, so the firewall learns no
    # next hop and IPv6 stops on every interface. Fixed: ND from link-local addresses is what an interface needs
    # (and the lab forgets its neighbours before each ruleset, so the kernel's answer no longer depends on the last one)
    pytest.param(RAW % "ip6 saddr != fd00:1::/64 drop", Probe("wan0", "dmz0", "fd00:1::7", "fd00:2::7", "tcp", 80),
                 id="raw-drop-of-neighbour-discovery"),
    # the same class: solicitations from a host's own address (Linux solicits from the packet's source)
    pytest.param(RAW % "meta l4proto ipv6-icmp ip6 saddr fd00:1::/64 drop", Probe("wan0", "dmz0", "fd00:1::7", "fd00:2::7", "tcp", 80),
                 id="raw-drop-of-solicitations-from-a-host-address"),
    # the same from a site-local host (public corpus nn-synology-nas-ip6tables: its input takes ND from fe80::/10
    # only): the host solicits its router from fec0::, unanswered; the lab sends from fec0:: (test_kernel_model.py)
    pytest.param("table ip6 t {\n chain i {\n  type filter hook input priority 0; policy drop;\n"
                 "  ip6 saddr fe80::/10 icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept\n }\n}\n",
                 Probe("wan0", "dmz0", "fec0::", "fd00:2::7", "tcp", 80), id="input-takes-solicitations-from-link-local-only"),
    # ARP dropped at netdev ingress: IPv4 through that interface is dead
    pytest.param('table netdev t {\n chain i {\n  type filter hook ingress device "dmz0" priority 0; policy accept;\n  iifname "dmz0" drop\n }\n}\n',
                 Probe("wan0", "dmz0", "10.1.0.7", "10.2.0.7", "tcp", 80), id="netdev-ingress-drop-of-arp"),
    # the firewall's own solicitations dropped on their way out: it learns no host on dmz0
    pytest.param(POST % 'oifname "dmz0" meta l4proto ipv6-icmp drop', Probe("wan0", "dmz0", "fd00:1::7", "fd00:2::7", "tcp", 80),
                 id="postrouting-drop-of-own-solicitations"),
    # its advertisements to a host's address dropped: that host cannot learn the firewall
    pytest.param(POST % "meta l4proto ipv6-icmp ip6 daddr fd00:1::/64 drop", Probe("wan0", "dmz0", "fd00:1::7", "fd00:2::7", "tcp", 80),
                 id="postrouting-drop-of-own-advertisements"),
]


@pytest.mark.kernel
@pytest.mark.parametrize(("text", "probe"), NEIGHBOURS_DROPPED)
def test_dropped_neighbour_discovery_or_arp(lab: Lab, text: str, probe: Probe) -> None:
    """The kernel drops the probe once it must learn its neighbours anew (a warm cache would
    hide it: the same probe passes first under an empty ruleset); the evaluator calls it
    uncertain (static neighbour entries would forward it) and says why."""
    lab.load_raw_nft("")
    forget_neighbours(lab)
    assert lab.run([probe], retries=1)[0].delivered, "the lab forwards the probe under an empty ruleset"
    lab.load_raw_nft(text)
    # A solicitation the host sends itself (a retransmitted answer to the probe above) teaches
    # the firewall its neighbour again, and Linux uses such a stale entry at once: on a loaded
    # machine one try is a race. The kernel must show the drop within three fresh starts; the
    # evaluator's answer, uncertain, holds for both outcomes.
    tries = []
    for _ in range(3):
        forget_neighbours(lab)
        tries.append(lab.run([probe])[0])
        if not tries[-1].delivered:
            break
    result = tries[-1]
    assert not result.delivered, [str(r) for r in tries]
    live = lab.read_nft()
    effective = evaluate(live, interfaces_of(live, list(lab.links)))
    verdict = judge(effective, probe)
    assert verdict.forwarded is None, explain(verdict, result)
    assert any("static" in note.text or "neighbour" in note.text for note in effective.unmodelled) or effective.nd_dead, effective.unmodelled


SNAT_DROP = ('table ip n {\n chain post {\n  type nat hook postrouting priority srcnat; policy accept;\n'
             '  oifname "wan0" tcp dport 80 drop\n  oifname "wan0" masquerade\n }\n}\n')


@pytest.mark.kernel
def test_postrouting_nat_drops_are_judged_both_ways(lab: Lab) -> None:
    """A drop in a postrouting nat chain drops a connection's first packet (beside a masquerade);
    the kernel may not run a nat chain at all (see docs/audit.md), so the evaluator says maybe."""
    lab.load_raw_nft(SNAT_DROP)
    dropped, other_port = V4, replace(V4, dport=443)
    results = lab.run([dropped, other_port], retries=1)
    assert [r.delivered for r in results] == [False, True], [str(r) for r in results]
    live = lab.read_nft()
    effective = evaluate(live, interfaces_of(live, list(lab.links)))
    assert judge(effective, dropped).forwarded is None and judge(effective, other_port).forwarded is True
    assert any("nat chain" in note.text for note in effective.unmodelled)


PORT_FORWARD = ("table ip t {\n chain pre {\n  type filter hook prerouting priority raw; policy accept;\n  %s drop\n }\n"
                " chain nat {\n  type nat hook prerouting priority dstnat; policy accept;\n  ip daddr 203.0.113.10 tcp dport 80 dnat to 10.2.0.5\n }\n}\n")


@pytest.mark.parametrize(("drop", "doubt"), [("ip daddr 203.0.113.10", True), ("ip daddr 10.2.0.5", True), ("ip saddr 198.51.100.7", False),
                                             ("ip daddr 10.1.0.5", False)])
def test_later_packets_of_a_translated_connection(drop: str, doubt: bool) -> None:
    """A raw drop saw a translated connection's later packets with their original destination,
    forward sees the translated one: a drop by either is judged both ways for them (the lab sees
    only a connection's first packet and its answer); one by the source, or by other destinations, is exact."""
    from fwmatrix.backends.nftables.parse import parse_text
    from fwmatrix.space import Box, ct_bits
    from test_kernel_agreement import _point

    live = parse_text(PORT_FORWARD % drop)
    effective = evaluate(live, interfaces_of(live, list(fuzz.INTERFACES)))
    ifaces = effective.ifaces
    src, dst = _point("198.51.100.7"), _point("10.2.0.5")
    later = Space(ifaces, [Box(ifaces.mask("wan0"), ifaces.mask("dmz0"), ((src, src),), ((dst, dst),), ((6, 6),), ((80, 80),),
                               ct_bits("established", translated=True))])
    uncertain = any(g.space.intersect(later) for g in effective.uncertain)
    assert uncertain is doubt, [n.text for n in effective.unmodelled]
    assert any("later packets of a translated connection" in n.text for n in effective.unmodelled) is doubt


@pytest.mark.kernel
@pytest.mark.parametrize(("text", "probe"), KNOWN_BUG_CASES)
def test_known_bug(lab: Lab, text: str, probe: Probe) -> None:
    outcome = differential(lab, nft(text), [probe])
    assert outcome.probes == 1
    assert not outcome.disagreements, f"{text}" + "".join(f"{d}\n" for d in outcome.disagreements)


# what the CI run's rulesets must exercise between them, so that a change to the grammar cannot quietly drop one
COVERED = {
    "table-inet", "table-ip", "table-ip6", "policy-accept", "policy-drop", "several-forward-chains",
    "accept", "drop", "reject", "jump", "goto", "return", "vmap", "iface-vmap",
    "iface", "iface-negated", "iface-wildcard", "iface-set", "iface-pair", "named-iface-pair-set",
    "addr-prefix", "addr-range", "addr-set", "addr-negated", "named-interval-set", "named-concat-set",
    "port", "port-range", "port-set", "port-negated", "th-dport", "icmp", "icmp-type", "icmp-code", "meta-nfproto",
    "ct-state-new", "ct-state-established,related", "ct-state-invalid", "ct-status-dnat",
    "dnat", "dnat-port", "dnat-map", "prerouting-raw", "prerouting-mangle", "prerouting-drop",
    "notrack", "ct-state-untracked", "dynamic-set-update", "dynamic-set-lookup", "dnat-cross-family",
    "postrouting-filter", "postrouting-drop", "postrouting-nat", "table-netdev", "ingress-drop", "nd-drop", "arp-drop",
}


def test_the_grammar_covers_its_constructs() -> None:
    used: set[str] = set()
    for seed in set(range(FUZZ_RULESETS)) | set(REGRESSION_SEEDS):
        used |= fuzz.generate(seed).constructs
    assert COVERED <= used, f"the first {FUZZ_RULESETS} seeds never use {sorted(COVERED - used)}"


IPT_COVERED = {"ipt-icmp-type", "ipt-raw", "ipt-notrack", "ipt-ctstate-untracked", "ipt-mangle", "ipt-mangle-POSTROUTING", "ipt-ipset", "ipt-dnat", "ipt-g-chain",
               "ipt-nd-drop"}


def test_the_iptables_grammar_covers_its_constructs() -> None:
    used: set[str] = set()
    for seed in set(range(IPT_RULESETS)) | set(IPT_REGRESSION_SEEDS):
        used |= fuzz_iptables.generate_iptables(seed).constructs
    assert IPT_COVERED <= used, f"the first {IPT_RULESETS} iptables seeds never use {sorted(IPT_COVERED - used)}"


def test_a_seed_is_one_ruleset_and_one_set_of_probes() -> None:
    for seed in (0, 7, 12345):
        a, b = fuzz.generate(seed), fuzz.generate(seed)
        assert a.text() == b.text() and fuzz.probes(a) == fuzz.probes(b)
        assert len(fuzz.probes(a)) <= fuzz.PROBES_PER_RULESET
    assert fuzz.generate(1).text() != fuzz.generate(2).text()


def test_evaluation_memory_is_bounded() -> None:
    """Seed 5052's ruleset (kept as text: the grammar moves on) once took over 3 GB to evaluate:
    the two readings' forwarded spaces (3,673 and 4,409 overlapping boxes) were intersected
    pair by pair into a million boxes. Measured in bytes Python allocated, not time or RSS."""
    import tracemalloc
    from pathlib import Path

    from fwmatrix.backends.nftables.parse import parse_text

    live = parse_text((Path(__file__).parent / "fuzz_seed5052.nft").read_text())
    tracemalloc.start()
    try:
        effective = evaluate(live, interfaces_of(live, list(fuzz.INTERFACES)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert effective.unmodelled and effective.forwarded
    assert peak < 100 * 2**20, f"evaluating took {peak / 2**20:.0f} MiB at its peak"
