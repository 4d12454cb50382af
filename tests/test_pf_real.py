"""What real pf rulesets say that needs the firewall itself, read exactly once it is known.

Public pf.conf files lean on the firewall's own addresses (`self`, `(em0)`, `em0:network`,
antispoof), on interface groups, on source translation before the out rules, and on icmp
types. Each is checked here on small rulesets written for the purpose, against pf.conf(5)
(no pfctl on Linux): the section a test follows is named in it. What stays unknown must be
judged both ways, never dropped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import ROOT
from test_pf_idiom import CORRECT, MATRIX, cli, pf_text
from test_pf_parse import ICMP, TCP, UDP, Judge, chain, net, parse, rules_at, unmodelled_texts

from fwmatrix.backends import pf
from fwmatrix.errors import FwmatrixError
from fwmatrix.intervals import icmp_values

ADDRESSES = {"em0": ["192.0.2.1/24", "192.0.2.9/24", "2001:db8::1/64"], "em1": ["10.0.0.1/24"]}


# -- the firewall's own addresses (pf.conf(5), PARAMETERS: interface names and modifiers) ------------


@pytest.mark.parametrize("host, inside, outside", [
    ("(em0)", ["192.0.2.1", "192.0.2.9", "2001:db8::1"], ["192.0.2.2", "10.0.0.1"]),
    ("em0:network", ["192.0.2.77", "2001:db8::99"], ["192.0.3.1", "10.0.0.5"]),
    ("em0:broadcast", ["192.0.2.255"], ["192.0.2.1", "2001:db8::1"]),
    ("(em0:0)", ["192.0.2.1", "2001:db8::1"], ["192.0.2.9"]),  # :0, no aliases: the first of each family
    ("em1", ["10.0.0.1"], ["10.0.0.2", "192.0.2.1"]),  # a bare name the ruleset filters on is the interface
])
def test_an_interface_s_addresses_are_exact_once_given(host: str, inside: list[str], outside: list[str]) -> None:
    text = f"block all\npass in quick on em1 from {host}\npass out quick on em0\n"
    judge = Judge(parse(text, addresses=ADDRESSES), ("em0", "em1"))
    for src in inside:
        assert judge.fate("em1", "em0", src, "198.51.100.1" if "." in src else "2001:db8:5::1", TCP, 80) == "pass", src
    for src in outside:
        assert judge.fate("em1", "em0", src, "198.51.100.1" if "." in src else "2001:db8:5::1", TCP, 80) == "block", src
    # not given: judged both ways, as before
    unknown = Judge(parse(text), ("em0", "em1"))
    assert unknown.fate("em1", "em0", inside[0], "198.51.100.1" if "." in inside[0] else "2001:db8:5::1", TCP, 80) == "maybe"


def test_self_needs_every_interface_s_addresses() -> None:
    text = "block all\npass in quick on em1 from self\npass out quick on em0\n"
    rules = rules_at(parse(text, addresses={"em1": ["10.0.0.1/24"]}), "in", 2)
    assert rules and all(unmodelled_texts(r) for r in rules), "em0 has no addresses given: self is not known"
    judge = Judge(parse(text, addresses=ADDRESSES, self_addresses=["203.0.113.7"]), ("em0", "em1"))
    for src in ("10.0.0.1", "192.0.2.9", "2001:db8::1", "203.0.113.7"):  # every interface's, and the matrix's public one
        assert judge.fate("em1", "em0", src, "198.51.100.1" if "." in src else "2001:db8:5::1", TCP, 22) == "pass", src
    assert judge.fate("em1", "em0", "10.0.0.2", "198.51.100.1", TCP, 22) == "block"
    # an interface the matrix names but the options do not: self is not known
    rules = rules_at(parse(text, addresses=ADDRESSES, interfaces=("em0", "em1", "em2")), "in", 2)
    assert rules and all(unmodelled_texts(r) for r in rules)


def test_a_table_holding_self_and_interfaces() -> None:
    """pf.conf(5), TABLES: a table may hold interface names and `self`."""
    text = "table <me> { self, em1:network }\nblock all\npass in quick on em1 from <me>\npass out quick on em0\n"
    judge = Judge(parse(text, addresses=ADDRESSES), ("em0", "em1"))
    assert judge.fate("em1", "em0", "10.0.0.77", "198.51.100.1", TCP, 22) == "pass"
    assert judge.fate("em1", "em0", "192.0.2.9", "198.51.100.1", TCP, 22) == "pass"
    assert judge.fate("em1", "em0", "10.0.1.1", "198.51.100.1", TCP, 22) == "block"
    assert Judge(parse(text), ("em0", "em1")).fate("em1", "em0", "10.0.1.1", "198.51.100.1", TCP, 22) == "maybe"


def test_antispoof_expands_as_pfctl_does() -> None:
    """pf.conf(5), BLOCKING SPOOFED TRAFFIC: `antispoof for fxp0 inet` is `block drop in on !
    fxp0 inet from 10.0.0.0/24 to any` and `block drop in inet from 10.0.0.1 to any`."""
    text = "block all\nantispoof quick for { em0 (em1) }\npass in quick\npass out quick\n"
    judge = Judge(parse(text, addresses=ADDRESSES), ("em0", "em1", "em2"))
    assert judge.fate("em0", "em2", "10.0.0.5", "198.51.100.1", TCP, 80) == "block"  # em1's network, in on em0
    assert judge.fate("em1", "em2", "10.0.0.5", "198.51.100.1", TCP, 80) == "pass"  # ... in on em1 itself
    assert judge.fate("em1", "em2", "10.0.0.1", "198.51.100.1", TCP, 80) == "block"  # em1's own address, even on em1
    assert judge.fate("em2", "em1", "2001:db8::7", "2001:db8:5::1", TCP, 80) == "block"
    assert judge.fate("em2", "em1", "198.51.100.9", "10.0.0.5", TCP, 80) == "pass"
    assert Judge(parse(text), ("em0", "em1", "em2")).fate("em0", "em2", "10.0.0.5", "198.51.100.1", TCP, 80) == "maybe"


def test_antispoof_for_a_group_is_the_group_s_networks_off_the_group() -> None:
    """A group stays whole: `block in on ! egress from egress:network` (pfctl looks the group up)."""
    text = "block all\nantispoof quick for egress\npass in quick\npass out quick\n"
    judge = Judge(parse(text, addresses=ADDRESSES, groups={"egress": ("em0", "em1")}), ("em0", "em1", "em2"))
    assert judge.fate("em1", "em2", "192.0.2.50", "198.51.100.1", TCP, 80) == "pass"  # em0's network, in on a member
    assert judge.fate("em2", "em1", "192.0.2.50", "10.0.0.5", TCP, 80) == "block"


# -- source translation before the out rules (pf.conf(5), TRANSLATION) ---------------------------


@pytest.mark.parametrize("nat", [
    "nat on em0 from 10.0.0.0/24 to any -> 192.0.2.1",  # FreeBSD: before every filter rule
    "match out on em0 from 10.0.0.0/24 nat-to 192.0.2.1",  # OpenBSD: the rules after it
])
def test_out_rules_see_the_translated_source(nat: str) -> None:
    """A rule matching the source after a translation sees the new source: `pass out from
    192.0.2.1` passes the translated packets, `pass out from 10.0.0.0/24` never matches them,
    so pf forwards nothing of that network — exactly what the audit says now. Packets the
    translation does not take are matched as they are."""
    passes_new = Judge(parse(f"{nat}\nblock all\npass in quick on em1\npass out quick on em0 from 192.0.2.1\n"), ("em0", "em1"))
    assert passes_new.fate("em1", "em0", "10.0.0.5", "198.51.100.1", TCP, 80) == "pass"  # translated to 192.0.2.1
    assert passes_new.fate("em1", "em0", "10.0.1.5", "198.51.100.1", TCP, 80) == "block"  # not translated, not 192.0.2.1
    assert passes_new.fate("em1", "em0", "192.0.2.1", "198.51.100.1", TCP, 80) == "pass"  # not translated, 192.0.2.1
    passes_old = Judge(parse(f"{nat}\nblock all\npass in quick on em1\npass out quick on em0 from 10.0.0.0/24\n"), ("em0", "em1"))
    assert passes_old.fate("em1", "em0", "10.0.0.5", "198.51.100.1", TCP, 80) == "block"  # pf sees 192.0.2.1: blocked
    assert passes_old.fate("em1", "em0", "10.0.1.5", "198.51.100.1", TCP, 80) == "block"
    # the block rule too: `block out from 10.0.0.0/24` never meets the translated packets
    blocks_old = Judge(parse(f"{nat}\npass\nblock out quick on em0 from 10.0.0.0/24\n"), ("em0", "em1"))
    assert blocks_old.fate("em1", "em0", "10.0.0.5", "198.51.100.1", TCP, 80) == "pass"
    # on another interface the translation does not apply
    assert passes_old.fate("em0", "em1", "10.0.0.5", "198.51.100.1", TCP, 80) == "block"


def test_the_first_matching_nat_rule_decides_and_no_nat_leaves_the_source() -> None:
    text = ("no nat on em0 from 10.0.0.7 to any\n"
            "nat on em0 from 10.0.0.0/25 to any -> 192.0.2.1\n"
            "nat on em0 from 10.0.0.0/24 to any -> 192.0.2.2\n"
            "block all\npass in quick on em1\npass out quick on em0 from { 192.0.2.2, 10.0.0.7 }\n")
    judge = Judge(parse(text), ("em0", "em1"))
    assert judge.fate("em1", "em0", "10.0.0.7", "198.51.100.1", TCP, 80) == "pass"  # no nat: 10.0.0.7 as it is
    assert judge.fate("em1", "em0", "10.0.0.5", "198.51.100.1", TCP, 80) == "block"  # the first: 192.0.2.1
    assert judge.fate("em1", "em0", "10.0.0.200", "198.51.100.1", TCP, 80) == "pass"  # the second: 192.0.2.2


@pytest.mark.parametrize("addresses, fate", [
    ({"em0": ["192.0.2.1/24"]}, "pass"),  # (em0) is 192.0.2.1
    ({"em0": ["192.0.2.3/24"]}, "block"),  # (em0) is another address
    (None, "maybe"),  # em0's address not given: judged both ways
])
def test_masquerade_is_exact_once_the_interface_s_address_is_known(addresses: dict | None, fate: str) -> None:
    text = "nat on em0 from 10.0.0.0/24 to any -> (em0)\nblock all\npass in quick on em1\npass out quick on em0 from 192.0.2.1\n"
    judge = Judge(parse(text, addresses=addresses), ("em0", "em1"))
    assert judge.fate("em1", "em0", "10.0.0.5", "198.51.100.1", TCP, 80) == fate


@pytest.mark.parametrize("options, exact", [
    ("", False),  # pf picks a new source port: a rule on the source port is left open for them
    (" static-port", True),  # the source port is kept: the rule's port holds as before
])
def test_a_source_port_after_translation_needs_static_port(options: str, exact: bool) -> None:
    """(The evaluator models no source port yet: the IR says what the rule matches.)"""
    from fwmatrix.ir import Match, UnmodelledAction, Verdict
    from fwmatrix.matrix.model import PortRange

    text = (f"nat on em0 from 10.0.0.0/24 to any -> 192.0.2.1{options}\nblock all\npass in quick on em1\n"
            "pass out quick on em0 proto tcp from 192.0.2.1 port 1000:2000\n")
    ruleset = parse(text)
    (jump,) = rules_at(ruleset, "out", 4)
    translated = [r for r in chain(ruleset, jump.action.chain).rules if r.origin == "t.conf:4 (source translated by t.conf:1)"
                  and r.action != Verdict("return")]
    assert len(translated) == 1
    if exact:
        assert translated[0].action == Verdict("accept") and Match(("sport",), ((PortRange(1000, 2000),),)) in translated[0].matches
    else:
        assert isinstance(translated[0].action, UnmodelledAction) and "static-port" in translated[0].action.text


def test_old_style_nat_rules_are_the_nat_chain_they_stand_for() -> None:
    """FreeBSD's `nat` rules translate what they match before the filter rules, the first
    matching one deciding and `no nat` excepting (pf.conf(5), TRANSLATION): the postrouting
    nat chain holds them in order — `no nat` untranslated, `-> (em0)` on em0 a masquerade,
    one address a snat — and what is not one address (a pool) stays an unknown translation."""
    from fwmatrix.ir import Masquerade, Snat, UnmodelledAction, Verdict

    text = ("no nat on em0 from 10.0.0.7 to any\n"
            "nat on em0 from 10.0.0.0/24 to any -> (em0)\n"
            "nat on em0 inet from 10.0.1.0/24 to any -> 192.0.2.9\n"
            "nat on em0 inet from 10.0.2.0/24 to any -> 192.0.2.0/28\n"
            "pass\n")
    ruleset = parse(text)
    actions = [[r.action for r in rules_at(ruleset, "snat", line)] for line in (1, 2, 3, 4)]
    assert actions[0] == [Verdict("accept")] and actions[1] == [Masquerade()]
    assert actions[2] == [Snat(4, net("192.0.2.9/32"))]
    assert len(actions[3]) == 1 and isinstance(actions[3][0], UnmodelledAction)
    heads = [r.origin for r in chain(ruleset, "snat").rules][:4]
    assert heads == ["t.conf:1", "t.conf:2", "t.conf:3", "t.conf:4"]
    # `(em0)` follows em0's address: a masquerade also where that address is known now
    known = parse(text, addresses={"em0": ["192.0.2.1/24"]})
    assert [r.action for r in rules_at(known, "snat", 2)] == [Masquerade()]


@pytest.mark.parametrize("before, after, exact", [
    ("", "", True),
    ("pass out quick on em0 from 10.0.0.7\n", "", False),  # leaves untranslated, before the match rule is seen
    ("block out quick on em0 from 10.0.0.7\n", "", True),  # never leaves
    ("", "pass out on em0 from 10.0.0.0/25 nat-to 192.0.2.9\n", False),  # may translate again
    ("", 'anchor "other"\n', False),  # its rules are not in the file: they may
])
def test_a_sole_match_nat_to_is_the_nat_chain_it_stands_for(before: str, after: str, exact: bool) -> None:
    """`match out ... nat-to` translates the packets it matches that then leave (pf.conf(5),
    TRANSLATION), when nothing else may decide their source: no other translation, no rules
    out of sight, no quick pass before it. `(em0:0)` on em0 is a masquerade."""
    from fwmatrix.ir import Masquerade, Snat, UnmodelledAction

    for target, expected in (("192.0.2.1", Snat(4, net("192.0.2.1/32"))), ("(em0:0)", Masquerade())):
        text = f"block all\n{before}match out on em0 inet from 10.0.0.0/24 nat-to {target}\n{after}pass out on em0\npass in on em1\n"
        line = 2 + before.count("\n")
        (rule,) = rules_at(parse(text), "snat", line)
        assert rule.action == expected if exact else isinstance(rule.action, UnmodelledAction), (text, rule.action)


def test_nat_to_a_group_of_one_member_is_that_interface_s_masquerade() -> None:
    """`match out on egress ... nat-to (egress)` (OpenBSD's usual NAT): with egress's one member
    known (the audit gives it from the matrix), `(egress)` is em0's address, a masquerade on em0;
    with two members it is a pool of both, and unknown members say nothing."""
    from fwmatrix.ir import Masquerade, UnmodelledAction

    for target in ("(egress)", "(egress:0)"):
        text = f"block all\nmatch out on egress inet from !(egress:network) nat-to {target}\npass out on egress\npass in on em1\n"
        for groups, exact in (({"egress": ("em0",)}, True), ({"egress": ("em0", "em2")}, False), (None, False)):
            rules = rules_at(parse(text, interfaces=("em0", "em1", "em2"), groups=groups,
                                   addresses={"em0": ["192.0.2.2/24"], "em1": ["10.0.0.1/24"], "em2": ["198.51.100.2/24"]}), "snat", 2)
            assert rules and all((r.action == Masquerade()) if exact else isinstance(r.action, UnmodelledAction) for r in rules), (target, groups)


def test_a_rule_before_the_match_nat_to_sees_the_source_as_it_arrived() -> None:
    text = "block all\npass in quick on em1\npass out on em0 from 10.0.0.0/24\nmatch out on em0 from 10.0.0.0/24 nat-to 192.0.2.1\n"
    judge = Judge(parse(text), ("em0", "em1"))
    assert judge.fate("em1", "em0", "10.0.0.5", "198.51.100.1", TCP, 80) == "pass"


# -- through the CLI ---------------------------------------------------------------------------


def test_interface_addresses_through_the_cli(tmp_path: Path) -> None:
    """The idiom behind antispoof: without em0's and em1's addresses the forwards depend on what
    fwmatrix cannot model; with them, exactly the spoofed sources (the DMZ's network and the
    firewall's own address arriving on em0) are not forwarded, as pf does."""
    ruleset = tmp_path / "gw.pf.conf"
    ruleset.write_text(pf_text(CORRECT, "openbsd pass rdr-to").replace("block all\n", "block all\nantispoof quick for { $ext_if $dmz_if }\n"))
    done = cli("audit", str(MATRIX), "-r", str(ruleset))
    assert done.returncode == 1 and "unmodelled" in done.stdout.splitlines()[0], done.stdout
    done = cli("audit", str(MATRIX), "-r", str(ruleset), "--pf-interface", "em0=203.0.113.7/24",
               "--pf-interface", "em1=192.168.10.1/24", "--format", "markdown")
    assert "3 nat" in done.stdout and "unmodelled" not in done.stdout and "excess" not in done.stdout, done.stdout
    assert done.stdout.count("`em0 → any  192.168.10.0/24, 203.0.113.7 → 203.0.113.7") == 3, done.stdout


def test_groups_through_the_cli(tmp_path: Path) -> None:
    ruleset = tmp_path / "gw.pf.conf"
    ruleset.write_text(pf_text(CORRECT, "openbsd pass rdr-to").replace("on $dmz_if", "on dmz"))
    assert "interface group 'dmz'" in cli("audit", str(MATRIX), "-r", str(ruleset)).stdout
    done = cli("audit", str(MATRIX), "-r", str(ruleset), "--pf-group", "dmz=em1")
    assert done.returncode == 0 and "matches the matrix" in done.stdout, done.stdout


@pytest.mark.parametrize("args, message", [
    (["--pf-interface", "em0"], "expected IF=ADDRESS/PREFIX"),
    (["--pf-interface", "em0=192.0.2.300/24"], "'192.0.2.300/24' is not an address"),
    (["--pf-group", "dmz="], "expected --pf-group NAME=IF"),
])
def test_bad_interface_options_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    ruleset = tmp_path / "gw.pf.conf"
    ruleset.write_text(pf_text(CORRECT, "openbsd pass rdr-to"))
    done = cli("audit", str(MATRIX), "-r", str(ruleset), *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_interface_options_parse() -> None:
    given = pf.interface_options(["em0=192.0.2.1/24,2001:db8::1/64"], ["egress=em0,em1"])
    assert [str(a) for a in given["addresses"]["em0"]] == ["192.0.2.1/24", "2001:db8::1/64"]
    assert given["groups"] == {"egress": ("em0", "em1")}
    with pytest.raises(FwmatrixError):
        pf.interface_options(["0bad=192.0.2.1/24"], [])


# -- icmp types (pf.conf(5), PARAMETERS: icmp-type, icmp6-type) -------------------------------------


@pytest.mark.parametrize("option, field_name, types", [
    ("proto icmp icmp-type echoreq", "icmp.type", (8,)),
    ("proto icmp icmp-type { echoreq, unreach 11 }", "icmp.type", (8, 3, 11)),
    ("inet6 proto icmp6 icmp6-type { neighbrsol neighbradv }", "icmpv6.type", (135, 136)),
    ("inet6 proto icmp6 icmp6-type { 1 2 3 128 129 }", "icmpv6.type", (1, 2, 3, 128, 129)),
])
def test_icmp_types_are_read_into_the_ir(option: str, field_name: str, types: tuple[int, ...]) -> None:
    (rule,) = rules_at(parse(f"pass in quick on em0 {option}\n"), "in", 1)
    assert not unmodelled_texts(rule)
    found = [mt for mt in rule.matches if getattr(mt, "fields", ()) == (field_name,)]
    assert [tuple(v for (v,) in mt.values) for mt in found] == [types]


@pytest.mark.parametrize("option", ["proto icmp icmp-type echoreq code needfrag", "proto icmp icmp-type { echoreq, unreach code nosuchcode }",
                                    "proto icmp icmp-type nosuchtype"])
def test_an_unknown_icmp_type_or_code_name_stays_unmodelled(option: str) -> None:
    # (codes themselves are read: tests/test_pf_icmp.py)
    (rule,) = rules_at(parse(f"pass in quick on em0 {option}\n"), "in", 1)
    assert "icmp" in unmodelled_texts(rule)[0]


def test_an_icmp_type_rule_passes_no_other_protocol() -> None:
    """The type implies icmp: tcp meets the block; within icmp the type is exact (packet
    spaces carry it): an echo request passes, an echo reply (type 0) is blocked."""
    judge = Judge(parse("block all\npass in quick on em1 proto icmp icmp-type echoreq\npass out quick on em0\n"), ("em0", "em1"))
    assert judge.fate("em1", "em0", "10.0.0.5", "198.51.100.1", TCP, 80) == "block"
    assert judge.fate("em1", "em0", "10.0.0.5", "198.51.100.1", ICMP) == "pass"
    assert judge.fate("em1", "em0", "10.0.0.5", "198.51.100.1", ICMP, icmp_values(0)[0][0]) == "block"


# -- what passes by default (pf.conf(5), PACKET FILTERING: a packet no rule matches passes, keeping no state)


def _reply_rules(text: str, **kw) -> list:
    return [r for c in parse(text, **kw).tables[0].chains for r in c.rules if "replies of packets that no rule passed" in str(r.action)]


@pytest.mark.parametrize("text, kw, left_open", [
    ("pass\nblock in on ! lo0 proto tcp to port 6000:6010\n", {}, False),  # OpenBSD's default pf.conf: `pass` takes every packet, with state
    ("pass no state\nblock in proto tcp to port 22\n", {}, False),  # (its replies are left open as a `no state` rule's)
    ("pass in\nblock proto tcp to port 22\n", {}, True),  # out: nothing takes every packet
    ("block on { em0, em1 } all\npass in on em0 proto tcp\n", {}, True),  # another interface may pass by default
    ("block on { em0, em1 } all\npass in on em0 proto tcp\n", {"interfaces": ("em0", "em1")}, False),  # not when those are all
    ("block on { em0, em1 } all\npass in on em0 proto tcp\n", {"interfaces": ("em0", "em1", "em2")}, True),
])
def test_replies_of_packets_passed_by_default(text: str, kw: dict, left_open: bool) -> None:
    assert bool(_reply_rules(text, **kw)) == left_open


# -- the public corpus, read as an audit reads it (tests/corpus/public/pf_share.py) --------------------

# The unmodelled share of the public pf rulesets once the firewall's interfaces, groups and
# their addresses are known (placeholders: the corpus has no matrix), rounded up. What is left
# needs more than the interfaces: anchors and tables loaded from files, routes, route-to.
# 0.25 on the first 19 files (22.9% since branch pf-corpus); 28.0% on the 25 of 27 read
# since e2380b3 added 8 (RESULTS.md).
# Without FWMATRIX_PUBLIC_CORPUS: the 10 pf files vendored in tests/corpus/public/files, 71/295 (24.1%).
# Counted by pf rules as written too (pf_share.py): 88/302 (29.1%) on the 31 read, 32/106 (30.2%) vendored.
KNOWN_FIREWALL_CEILING = 0.227  # 199/880 (22.6%) on the 31 of 35 read since caee62b (branch pfshare2, `mdns`, `prio (X, Y)`; 201/880 before, branch corpus2)
VENDORED_KNOWN_FIREWALL_CEILING = 0.241  # 71/295 (24.1%)
KNOWN_FIREWALL_WRITTEN_CEILING = 0.292
VENDORED_KNOWN_FIREWALL_WRITTEN_CEILING = 0.302


def test_public_pf_corpus_with_the_firewall_known() -> None:
    import os

    public = Path(__file__).resolve().parent / "corpus" / "public"
    corpus = os.environ.get("FWMATRIX_PUBLIC_CORPUS")
    ceiling = KNOWN_FIREWALL_CEILING if corpus else VENDORED_KNOWN_FIREWALL_CEILING
    written_ceiling = KNOWN_FIREWALL_WRITTEN_CEILING if corpus else VENDORED_KNOWN_FIREWALL_WRITTEN_CEILING
    sys.path.insert(0, str(public))
    from pf_share import measure

    bare, known, _ = measure(Path(corpus) if corpus else public / "files")
    assert known.rules and known.value < bare.value
    assert known.value <= ceiling, f"{known.unmodelled}/{known.rules} rules unmodelled ({known.value:.1%})"
    assert known.written_value <= written_ceiling, \
        f"{known.written_unmodelled}/{len(known.written)} pf rules as written unmodelled ({known.written_value:.1%})"


def test_the_share_counts_ir_rules_and_pf_rules_as_written() -> None:
    """pf_share.py's two counts: an anchor line not given is one pf rule but an IR rule in each
    chain its rules may act in (in, out and, on OpenBSD, the nat chain); the rules after it are
    not counted because of it; pf's state table (a rule of the reader's in each chain) is no
    pf rule."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "corpus" / "public"))
    from pf_share import Share

    share = Share()
    share.add(parse('block all\nanchor "relayd/*"\npass in quick on em1 proto tcp to port 22\npass out quick on em0\n'))
    assert share.written == {"t.conf:1": set(), "t.conf:2": {"anchor '…' (its rules are not in the file)"},
                             "t.conf:3": set(), "t.conf:4": set()}
    assert (share.written_unmodelled, share.written_value) == (1, 0.25)
    assert share.unmodelled == 3 and share.constructs == {"anchor '…' (its rules are not in the file)": 3}
    assert share.rules == 3 + 2 + 2 + 1 + 1  # the anchor's 3, block all and the state table in and out, the two passes


def test_a_table_filled_by_overload_stays_unknown_and_says_by_what() -> None:
    """pf.conf(5), STATEFUL TRACKING OPTIONS: `overload <T>` adds the source of a connection past
    the rule's state limits to T. Which sources those are is run-time state, the overload rule
    matches `from any`, and pfctl may add to T too: a rule on T stays judged both ways, and the
    finding names the rule that fills it."""
    text = ("table <bruteforce> persist\ntable <other> persist\nblock all\nblock in quick from <bruteforce>\n"
            "pass in on em0 proto tcp to port 22 keep state (max-src-conn 5, overload <bruteforce> flush global)\n"
            "pass in quick on em1 from <other>\npass out quick\n")
    rs = parse(text, interfaces=("em0", "em1"))
    assert {t for r in rules_at(rs, "in", 4) for t in unmodelled_texts(r)} == {
        "table <bruteforce> has no addresses in the file (they are added at run time: by overload in t.conf:5 "
        "(the sources past its state limits) or by pfctl)"}
    assert {t for r in rules_at(rs, "in", 6) for t in unmodelled_texts(r)} == {
        "table <other> has no addresses in the file (they are added at run time)"}
    judge = Judge(rs, ("em0", "em1"))
    for src, dst in (("198.51.100.7", "10.0.0.5"), ("2001:db8::7", "2001:db8:1::5")):
        assert judge.fate("em0", "em1", src, dst, TCP, 22) == "maybe", src  # blocked if the source is in it


def test_a_translation_to_an_interface_s_address() -> None:
    """`rdr-to (em0) port 22` (pf.conf(5), TRANSLATION: an interface name in parentheses is its
    address): exact for a rule of one family once em0 has one address of it."""
    text = "block all\npass in quick on em0 inet proto tcp to (em0) port 31415 rdr-to (em0) port 22\n"
    (rule,) = [r for r in chain(parse(text, addresses=ADDRESSES | {"em0": ["192.0.2.1/24"]}), "rdr").rules if r.origin == "t.conf:2"]
    assert str(rule.action.address) == "192.0.2.1/32" and rule.action.port.low == 22 and not unmodelled_texts(rule)
    for kw in ({}, {"addresses": ADDRESSES}):  # not given; two addresses of the family: a pool
        rules = [r for r in chain(parse(text, **kw), "rdr").rules if r.origin == "t.conf:2"]
        assert rules and all("translation to" in str(r.action) for r in rules)


# -- routes: no-route and urpf-failed (pf.conf(5), PARAMETERS) -----------------------------------------

ROUTES = {"em0": (), "em1": ("10.0.0.0/16",), "em2": ("10.0.5.0/24",)}


def test_urpf_failed_with_the_routes_known() -> None:
    """urpf-failed: the route back to the source leaves by another interface than the packet
    came in on, or there is none. The longest prefix decides (10.0.5.0/24 by em2 inside em1's
    10.0.0.0/16); the default route leaves by em0; an interface no route leaves by fails all."""
    text = "block in quick from urpf-failed\npass in quick\npass out quick\n"
    judge = Judge(parse(text, routes=ROUTES, default_route=("em0",)), ("em0", "em1", "em2", "em3"))
    for iif, src, fate in [("em0", "198.51.100.1", "pass"), ("em0", "10.0.1.1", "block"), ("em1", "10.0.1.1", "pass"),
                           ("em1", "10.0.5.1", "block"), ("em2", "10.0.5.1", "pass"), ("em1", "198.51.100.1", "block"),
                           ("em3", "198.51.100.1", "block"), ("em0", "2001:db8::1", "pass")]:
        oif = "em0" if iif != "em0" else "em1"
        dst = "2001:db8:9::9" if ":" in src else ("198.51.100.9" if oif == "em0" else "10.0.9.9")
        assert judge.fate(iif, oif, src, dst, TCP, 80) == fate, (iif, src)
    negated = Judge(parse("block all\npass in quick from ! urpf-failed\npass out quick\n", routes=ROUTES, default_route=("em0",)),
                    ("em0", "em1", "em2", "em3"))
    assert negated.fate("em1", "em0", "10.0.1.1", "198.51.100.9", TCP, 80) == "pass"
    assert negated.fate("em0", "em1", "10.0.1.1", "10.0.9.9", TCP, 80) == "block"
    assert Judge(parse(text), ("em0", "em1")).fate("em0", "em1", "10.0.1.1", "10.0.9.9", TCP, 80) == "maybe"


def test_no_route_with_and_without_a_default_route() -> None:
    text = "block in quick from no-route\npass in quick\npass out quick\n"
    with_default = Judge(parse(text, routes=ROUTES, default_route=("em0",)), ("em0", "em1"))
    assert with_default.fate("em0", "em1", "198.51.100.1", "10.0.9.9", TCP, 80) == "pass"
    without = Judge(parse(text, routes=ROUTES), ("em0", "em1"))
    assert without.fate("em0", "em1", "198.51.100.1", "10.0.9.9", TCP, 80) == "block"
    assert without.fate("em0", "em1", "10.0.7.1", "10.0.9.9", TCP, 80) == "pass"
    assert Judge(parse(text, routes=ROUTES, default_route=("em0", "em2")), ("em0", "em1")).fate(
        "em0", "em1", "198.51.100.1", "10.0.9.9", TCP, 80) == "maybe"  # two default routes: which one is not known


def test_the_matrix_gives_routes_only_when_every_zone_faces_the_firewall() -> None:
    from fwmatrix.matrix.loader import load_matrix

    seed = load_matrix(str(ROOT / "matrices" / "contact-highway-7.yaml"))
    facts = pf.firewall_facts(seed, "edge")
    assert facts["default_route"] == ("wan0",) and facts["routes"]["wan0"] == () and facts["routes"]["lan0"]
    two = load_matrix(str(ROOT / "examples" / "two-firewalls" / "matrix.yaml"))
    assert all(pf.firewall_facts(two, name)["routes"] is None for name in two.firewalls)


def test_urpf_failed_through_the_cli_with_the_matrix_s_routes(tmp_path: Path) -> None:
    """The idiom's matrix: every zone faces gw, the internet by em0: sources of the DMZ's network
    arriving on em0 fail uRPF, exactly; nothing is left unmodelled."""
    ruleset = tmp_path / "gw.pf.conf"
    ruleset.write_text(pf_text(CORRECT, "openbsd pass rdr-to").replace("block all\n", "block all\nblock in quick from urpf-failed\n"))
    done = cli("audit", str(MATRIX), "-r", str(ruleset), "--format", "markdown")
    assert "3 nat" in done.stdout and "unmodelled" not in done.stdout and "excess" not in done.stdout, done.stdout
    assert done.stdout.count("`em0 → any  192.168.10.0/24 → 203.0.113.7") == 3, done.stdout


def test_self_from_all_the_firewall_s_addresses(tmp_path: Path) -> None:
    """--local-address gives all the firewall's addresses (as for nftables' `fib daddr type
    local`): pf's `self` is then them, the matrix's public address and loopback."""
    text = "block all\npass in quick on em1 from self\npass out quick on em0\n"
    judge = Judge(parse(text, all_addresses=["10.0.0.1/32"], self_addresses=["203.0.113.7"]), ("em0", "em1"))
    assert judge.fate("em1", "em0", "10.0.0.1", "198.51.100.1", TCP, 22) == "pass"
    assert judge.fate("em1", "em0", "203.0.113.7", "198.51.100.1", TCP, 22) == "pass"
    assert judge.fate("em1", "em0", "10.0.0.2", "198.51.100.1", TCP, 22) == "block"
    ruleset = tmp_path / "gw.pf.conf"
    ruleset.write_text(pf_text(CORRECT, "openbsd pass rdr-to").replace("block all\n", "block all\nblock in quick on $ext_if from self\n"))
    assert "self (the firewall's own addresses)" in cli("audit", str(MATRIX), "-r", str(ruleset)).stdout
    done = cli("audit", str(MATRIX), "-r", str(ruleset), "--local-address", "192.168.10.1", "--format", "markdown")
    # (self holds loopback's 127.0.0.1 too, as pfctl expands it: the block takes it, in the translation's sight)
    assert "unmodelled" not in done.stdout and done.stdout.count("`em0 → any  127.0.0.1, 192.168.10.1, 203.0.113.7 → 203.0.113.7") == 3, done.stdout


def test_an_address_without_its_prefix_says_nothing_of_the_network() -> None:
    """The matrix declares interfaces' own addresses without a prefix (`lan0: {zone: lan,
    address: 10.40.0.1}`): `(IF)` is known, `IF:network` is not."""
    text = "block all\npass in quick on em1 from (em1)\npass in quick on em1 from em1:network\npass out quick on em0\n"
    rs = parse(text, addresses={"em1": ["10.0.0.1"]})
    assert rules_at(rs, "in", 2) and not any(unmodelled_texts(r) for r in rules_at(rs, "in", 2))
    assert rules_at(rs, "in", 3) and all(unmodelled_texts(r) for r in rules_at(rs, "in", 3))
    from fwmatrix.matrix.loader import load_matrix

    perimeter = load_matrix(str(ROOT / "examples" / "perimeter" / "matrix.yaml"))
    name = next(n for n, fw in perimeter.firewalls.items() if "lan0" in fw.addresses)
    assert [str(a) for a in pf.firewall_facts(perimeter, name)["addresses"]["lan0"]] == ["10.40.0.1"]
    with pytest.raises(FwmatrixError, match="with its prefix"):
        pf.interface_options(["em0=192.0.2.1"], [])


# -- state limits (pf.conf(5), STATEFUL TRACKING OPTIONS) ------------------------------------------------


def test_a_pass_rule_with_state_limits_passes_or_drops_never_falls_through() -> None:
    """Past max-src-conn pf drops the packet the rule passes: a later rule never sees it. So the
    rule's verdict is open between pass and drop, and a later pass does not make it certain."""
    text = "block all\npass in quick on em1 proto tcp keep state (max-src-conn 10)\npass in quick on em1 proto tcp\npass out quick\n"
    judge = Judge(parse(text), ("em0", "em1"))
    assert judge.fate("em1", "em0", "10.0.0.5", "198.51.100.1", TCP, 22) == "maybe"
    assert judge.fate("em1", "em0", "10.0.0.5", "198.51.100.1", 17, 53) == "block"
    (rule,) = rules_at(parse(text), "in", 2)
    assert "state limits (max-src-conn)" in rule.action.text and not unmodelled_texts(rule)
