""""The destination is the firewall's own address": `fib daddr type local` (nftables) and
`-m addrtype --dst-type LOCAL` (iptables), as Docker and kube-proxy gate their DNAT chains.

Read by both parsers as a `daddr.type` (or `saddr.type`) match; judged by the evaluator
with the firewall's own addresses: loopback, the matrix's public addresses, and those
given with `audit --local-address` (then taken as all of them). What is not known is
judged both ways. Real packets: tests/test_kernel_agreement.py
(test_destination_is_local_with_the_firewalls_addresses).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from netaddr import IPNetwork

from conftest import ROOT, SEED
from fwmatrix.audit.evaluate import OwnAddresses, evaluate, interfaces_of
from fwmatrix.audit.evaluate.addrtype import UNKNOWN, local_parts
from fwmatrix.backends import iptables, nftables
from fwmatrix.errors import BackendError
from fwmatrix.ir import Match, Rule, Unmodelled, Verdict
from fwmatrix.space import Space, addr_interval

GOLDEN = ROOT / "tests" / "golden" / "contact-highway-7"
PUBLIC = IPNetwork("203.0.113.10")

DOCKER_LIKE = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m conntrack --ctstate DNAT -j ACCEPT
-A FORWARD -p tcp -m addrtype ! --dst-type local -m tcp --dport 22 -j ACCEPT
COMMIT
"""


def rules_of(text: str) -> list[Rule]:
    ruleset = iptables.parse_save(text, 4, "t.ipt")
    return [rule for table in ruleset.tables for chain in table.chains for rule in chain.rules]


def test_iptables_addrtype_is_read() -> None:
    local = Match(("daddr.type",), (("local",),))
    jump, dnat, by_state, not_local = rules_of(DOCKER_LIKE)
    assert jump.matches == (local,)
    assert Match(("daddr.type",), (("local",),), negate=True) in not_local.matches  # `local`: any case, as iptables
    text = DOCKER_LIKE.replace("--dst-type LOCAL -j", "--src-type LOCAL,BROADCAST -j")
    assert rules_of(text)[0].matches == (Unmodelled("-m addrtype --src-type LOCAL,BROADCAST"),)  # one type alone is judged
    for word, kind in (("MULTICAST", "multicast"), ("broadcast", "broadcast")):
        assert rules_of(DOCKER_LIKE.replace("--dst-type LOCAL -j", f"--dst-type {word} -j"))[0].matches == (Match(("daddr.type",), ((kind,),)),)
    assert rules_of(DOCKER_LIKE.replace("--dst-type LOCAL -j", "--dst-type UNICAST -j"))[0].matches == (Unmodelled("-m addrtype --dst-type UNICAST"),)
    assert rules_of(DOCKER_LIKE.replace("--dst-type LOCAL -j", "--src-type local -j"))[0].matches == (Match(("saddr.type",), (("local",),)),)
    # limited to an interface, `! LOCAL` matches more than "not the firewall's": the whole match is unmodelled
    limited = rules_of(DOCKER_LIKE.replace("--dst-type LOCAL -j", "--dst-type LOCAL --limit-iface-in -j"))[0]
    assert limited.matches == (Unmodelled("-m addrtype --dst-type LOCAL --limit-iface-in"),)


def test_iptables_unknown_address_type_is_one_line_naming_the_file() -> None:
    with pytest.raises(BackendError) as caught:
        iptables.parse_save(DOCKER_LIKE.replace("--dst-type LOCAL", "--dst-type LOKAL"), 4, "t.ipt")
    assert str(caught.value).startswith("t.ipt:7: ") and "LOKAL" in str(caught.value) and "\n" not in str(caught.value)


def _fib(flags: list[str], right: object, op: str = "==") -> list[dict]:
    return [{"match": {"op": op, "left": {"fib": {"result": "type", "flags": flags}}, "right": right}}, {"accept": None}]


def test_nftables_fib_type_is_read() -> None:
    listing = {"nftables": [
        {"table": {"family": "inet", "name": "t", "handle": 1}},
        {"chain": {"family": "inet", "table": "t", "name": "c", "handle": 1, "type": "filter", "hook": "prerouting", "prio": 0, "policy": "accept"}},
    ] + [{"rule": {"family": "inet", "table": "t", "chain": "c", "handle": 2 + i, "expr": expr}} for i, expr in enumerate([
        _fib(["daddr"], "local"),
        _fib(["daddr"], "local", "!="),
        _fib(["saddr"], {"set": ["local", "broadcast"]}),
        _fib(["daddr", "iif"], "local"),  # the type on the in-interface only
        _fib(["daddr"], "bogus"),
    ])]}
    local, not_local, several, on_iif, bogus = nftables.parse_json(listing).tables[0].chains[0].rules
    assert local.matches == (Match(("daddr.type",), (("local",),)),)
    assert not_local.matches == (Match(("daddr.type",), (("local",),), negate=True),)
    assert [type(m) for m in several.matches + on_iif.matches + bogus.matches] == [Unmodelled, Unmodelled, Unmodelled]


# -- the evaluator: parts over known and unknown addresses ----------------------------------


def test_local_parts_split_known_and_unknown_addresses() -> None:
    rule = Rule((Match(("daddr.type",), (("local",),)),), Verdict("accept"))
    own = OwnAddresses((PUBLIC,))
    parts = local_parts(rule, own)
    # per family: the known addresses exactly, the others with the test judged both ways
    assert [p.matches[0] for p in parts] == [
        Match(("ip.daddr",), ((IPNetwork("127.0.0.0/8"),), (PUBLIC,))),
        Match(("ip.daddr",), ((IPNetwork("127.0.0.0/8"),), (PUBLIC,)), negate=True),
        Match(("ip6.daddr",), ((IPNetwork("::1/128"),),)),
        Match(("ip6.daddr",), ((IPNetwork("::1/128"),),), negate=True),
    ]
    assert [any(isinstance(m, Unmodelled) for m in p.matches) for p in parts] == [False, True, False, True]
    complete = local_parts(rule, OwnAddresses((PUBLIC,), complete=True))
    assert complete == [parts[0], parts[2]]  # nothing else is local
    negated = Rule((Match(("daddr.type",), (("local",),), negate=True),), Verdict("drop"))
    assert [p.matches for p in local_parts(negated, OwnAddresses((PUBLIC,), complete=True))] == [
        (parts[1].matches[0],), (parts[3].matches[0],)]
    unicast = Rule((Match(("daddr.type",), (("unicast",),)),), Verdict("drop"))
    assert local_parts(unicast, own) == [unicast]  # left to be judged both ways (matches._unmodelled)


def test_multicast_and_broadcast_parts_by_their_fixed_addresses() -> None:
    """Multicast is a fixed range in both families: exact whatever the firewall's addresses.
    Broadcast: 255.255.255.255 and 0.0.0.0/8 certainly, no IPv6 address, the other IPv4
    addresses both ways (a directed broadcast of a network the firewall is in)."""
    v4m, v6m = Match(("ip.daddr",), ((IPNetwork("224.0.0.0/4"),),)), Match(("ip6.daddr",), ((IPNetwork("ff00::/8"),),))
    multicast = Rule((Match(("daddr.type",), (("multicast",),)),), Verdict("accept"))
    assert [p.matches for p in local_parts(multicast, UNKNOWN)] == [(v4m,), (v6m,)]
    not_multicast = Rule((Match(("daddr.type",), (("multicast",),), negate=True),), Verdict("accept"))
    assert [p.matches for p in local_parts(not_multicast, UNKNOWN)] == [(replace(v4m, negate=True),), (replace(v6m, negate=True),)]
    limited = Match(("ip.saddr",), ((IPNetwork("255.255.255.255/32"),), (IPNetwork("0.0.0.0/8"),)))
    broadcast = Rule((Match(("saddr.type",), (("broadcast",),)),), Verdict("drop"))
    certain, rest = local_parts(broadcast, UNKNOWN)  # nothing of IPv6
    assert certain.matches == (limited,)
    assert rest.matches[0] == replace(limited, negate=True) and isinstance(rest.matches[1], Unmodelled) and "directed broadcast" in rest.matches[1].text
    not_broadcast = Rule((Match(("daddr.type",), (("broadcast",),), negate=True),), Verdict("accept"))
    assert [p.matches[0] for p in local_parts(not_broadcast, UNKNOWN)] == [
        Match(("ip.daddr",), limited.values, negate=True), Match(("nfproto",), ((6,),))]  # every IPv6 address is not
    assert isinstance(local_parts(not_broadcast, UNKNOWN)[0].matches[1], Unmodelled)


def _dnat_spaces(own: OwnAddresses) -> tuple[list[Space], list[Space]]:
    ruleset = iptables.parse_save(DOCKER_LIKE, 4, "t.ipt")
    effective = evaluate(ruleset, interfaces_of(ruleset, ["wan0", "docker0"]), own=own)
    return [d.space for d in effective.dnats if not d.uncertain], [d.space for d in effective.dnats if d.uncertain]


def _to(space_list: list[Space], address: str) -> bool:
    return any(s.intersect(Space.full(s.ifaces).make(dst=(addr_interval(IPNetwork(address)),))) for s in space_list)


@pytest.mark.parametrize("own, public, inside", [
    (UNKNOWN, "uncertain", "uncertain"),
    (OwnAddresses((PUBLIC,)), "certain", "uncertain"),
    (OwnAddresses((PUBLIC,), complete=True), "certain", "none"),
])
def test_docker_like_dnat_is_certain_where_the_address_is_known(own: OwnAddresses, public: str, inside: str) -> None:
    certain, uncertain = _dnat_spaces(own)
    for address, expected in (("203.0.113.10", public), ("10.20.0.5", inside)):
        found = "certain" if _to(certain, address) else "uncertain" if _to(uncertain, address) else "none"
        assert found == expected, address
    assert _to(certain, "127.0.0.1")  # loopback is always local, and known


# -- through the CLI ---------------------------------------------------------------------------


def _docker_style_seed(tmp_path: Path) -> Path:
    """The compiled seed (iptables, full mode) with its port forwards gated Docker's way."""
    text = (GOLDEN / "edge.iptables.full.ipt4").read_text().replace("-d 203.0.113.10/32 -i wan0", "-i wan0 -m addrtype --dst-type LOCAL")
    assert "--dst-type LOCAL" in text
    path = tmp_path / "edge.ipt4"
    path.write_text(text)
    return path


def _audit(*args: str) -> tuple[int, dict]:
    import json

    from click.testing import CliRunner

    from fwmatrix.cli import main

    result = CliRunner().invoke(main, ["audit", str(SEED), "-f", "edge", "--format", "json", *args])
    return result.exit_code, json.loads(result.output) if result.output.startswith("{") else {"error": result.output}


def test_cli_local_address_makes_the_gate_exact(tmp_path: Path) -> None:
    v4, v6 = str(_docker_style_seed(tmp_path)), str(GOLDEN / "edge.iptables.full.ipt6")
    _, unknown = _audit("-r", v4, "-r", v6)
    assert unknown["counts"]["unmodelled"] > 0 and "--local-address" in str(unknown["findings"])
    _, known = _audit("-r", v4, "-r", v6, "--local-address", "203.0.113.10")
    assert known["counts"]["unmodelled"] == 0 and known["counts"]["missing"] == 0
    # what remains is true: packets to 127.0.0.0/8 are local too, and Docker's gate translates them
    assert known["findings"] and all(f["kind"] == "nat" and "127.0.0.0/8" in " ".join(f["regions"]) for f in known["findings"])


@pytest.mark.parametrize("value, words", [("10.0.0.1/24", "host bits"), ("lan", "not an address")])
def test_cli_local_address_refuses_what_is_not_one(tmp_path: Path, value: str, words: str) -> None:
    code, out = _audit("-r", str(_docker_style_seed(tmp_path)), "--local-address", value)
    assert code == 2 and words in out["error"]
