"""pf's `icmp-type T code C` and `icmp6-type T code C` (pf.conf(5), PARAMETERS): a type with
its code is one key, as iptables' `--icmp-type T/C` and nft's `icmp type . icmp code`; code
names are pfctl's, which depend on the type (`unreach code port-unr` is 3/3, `icmp6-type
unreach code port-unr` is 1/4)."""

from __future__ import annotations

from test_pf_parse import Judge, m, parse, rules_at, unmodelled_texts

from fwmatrix.intervals import icmp_values
from fwmatrix.ir import Match

IFACES = ("em0", "em1")
ICMP, ICMP6 = 1, 58


def icmp(kind: int, code: int) -> int:
    ((low, _),) = icmp_values(kind, code)
    return low


def test_icmp_codes_by_name_and_number() -> None:
    text = ("block all\n"
            "pass in quick on em0 inet proto icmp icmp-type { unreach code needfrag, 3 code 13, echoreq } keep state\n"
            "pass out quick on em1 inet proto icmp\n")
    rules = rules_at(parse(text, interfaces=IFACES), "in", 2)  # (one rule for the types, one for the pairs)
    assert len(rules) == 2 and not any(unmodelled_texts(r) for r in rules)
    j = Judge(parse(text, interfaces=IFACES), IFACES)
    fate = lambda kind, code: j.fate("em0", "em1", "192.0.2.1", "10.0.0.5", ICMP, icmp(kind, code))  # noqa: E731
    assert fate(3, 4) == "pass"   # fragmentation needed: path MTU discovery
    assert fate(3, 13) == "pass"  # administratively prohibited
    assert fate(8, 0) == "pass" and fate(8, 5) == "pass"  # echoreq: any code
    assert fate(3, 3) == "block"  # port unreachable: not listed
    assert fate(11, 0) == "block"


def test_icmp6_code_names_are_not_icmp_ones() -> None:
    text = "block all\npass quick inet6 proto icmp6 icmp6-type { unreach code port-unr, timex code transit }\n"
    (rule,) = rules_at(parse(text, interfaces=IFACES), "in", 2)
    assert Match(("icmpv6.type", "icmpv6.code"), ((1, 4), (3, 0))) in rule.matches
    j = Judge(parse(text, interfaces=IFACES), IFACES)
    assert j.fate("em0", "em1", "2001:db8::1", "2001:db8:1::5", ICMP6, icmp(1, 4)) == "pass"
    assert j.fate("em0", "em1", "2001:db8::1", "2001:db8:1::5", ICMP6, icmp(1, 3)) == "block"


def test_a_code_name_of_another_type_stays_unmodelled() -> None:
    # `needfrag` is a code of unreach only; pfctl refuses it under echoreq, fwmatrix does not guess
    for text in ("pass in proto icmp icmp-type echoreq code needfrag\n", "pass in proto icmp icmp-type unreach code bogus\n"):
        (rule,) = rules_at(parse(text), "in", 1)
        assert unmodelled_texts(rule) and "icmp type or code name" in unmodelled_texts(rule)[0], text


def test_a_drifted_code_is_seen() -> None:
    # the twin that opens port-unr (3/3) instead of needfrag (3/4) forwards other packets
    base = "block all\npass quick inet proto icmp icmp-type unreach code {}\n"
    first, drifted = (Judge(parse(base.format(code), interfaces=IFACES), IFACES) for code in ("needfrag", "port-unr"))
    for judge, passed, blocked in ((first, 4, 3), (drifted, 3, 4)):
        assert judge.fate("em0", "em1", "192.0.2.1", "10.0.0.5", ICMP, icmp(3, passed)) != "block"
        assert judge.fate("em0", "em1", "192.0.2.1", "10.0.0.5", ICMP, icmp(3, blocked)) == "block"
    assert m("l4proto", 1) in rules_at(parse(base.format("needfrag")), "in", 2)[0].matches
