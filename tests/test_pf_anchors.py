"""Anchors given to the reader (--pf-anchor): a wildcard anchor `X/*` is its children, in the
order of their names, and an anchor every packet meets counts for pf's default pass."""

from __future__ import annotations

from test_pf_parse import TCP, ESTABLISHED_MATCH, Judge, chain, parse

from fwmatrix.ir import UnmodelledAction

IFACES = ("em0", "em1")
MAIN = 'anchor "filter/*"\nanchor "policy"\n'


def test_a_wildcard_anchor_is_its_children_in_name_order() -> None:
    # filter/a blocks ssh, filter/b (evaluated after it) passes it: the last match decides
    anchors = {"filter/b": "pass in proto tcp to port 22\n", "filter/a": "block in proto tcp to port 22\n", "policy": ""}
    j = Judge(parse(MAIN, interfaces=IFACES, anchors=anchors), IFACES)
    assert j.fate("em0", "em1", "192.0.2.1", "10.0.0.5", TCP, 22) == "pass"
    anchors |= {"filter/c": "block in proto tcp to port 22\n"}  # a later child blocks it again
    assert Judge(parse(MAIN, interfaces=IFACES, anchors=anchors), IFACES).fate("em0", "em1", "192.0.2.1", "10.0.0.5", TCP, 22) == "block"


def test_a_wildcard_anchor_reads_only_its_direct_children() -> None:
    anchors = {"filter/a": "pass in proto tcp to port 22\n", "filter/a/deep": "block in all\n", "policy": ""}
    rs = parse(MAIN, interfaces=IFACES, anchors=anchors)
    assert not [r for r in chain(rs, "in").rules if "filter/a/deep" in r.origin]


def test_a_wildcard_anchor_without_children_given_stays_unmodelled() -> None:
    rs = parse(MAIN, interfaces=IFACES, anchors={"policy": "", "other/a": "pass\n"})
    assert any(r.action == UnmodelledAction("anchor 'filter/*' (its rules are not in the file)") for r in chain(rs, "in").rules)


def test_a_block_in_an_anchor_every_packet_meets_ends_the_default_pass() -> None:
    # `block` in an unconditional anchor matches every packet: no reply is left to the rules
    given = {"filter/a": "block\npass in on em0 proto tcp to port 443\npass out\n", "policy": ""}
    rs = parse(MAIN, interfaces=IFACES, anchors=given)
    assert not [r for r in chain(rs, "in").rules if ESTABLISHED_MATCH in r.matches and isinstance(r.action, UnmodelledAction)]
    # the same block under an anchor on em0 only: packets in on em1 match no rule and pass without state
    rs = parse('anchor "filter/*" on em0\nanchor "policy"\n', interfaces=IFACES, anchors=given)
    assert [r for r in chain(rs, "in").rules if ESTABLISHED_MATCH in r.matches and isinstance(r.action, UnmodelledAction)]
    j = Judge(parse(MAIN, interfaces=IFACES, anchors=given), IFACES)
    assert j.fate("em0", "em1", "192.0.2.1", "10.0.0.5", TCP, 443) == "pass"
    assert j.fate("em0", "em1", "192.0.2.1", "10.0.0.5", TCP, 444) == "block"
