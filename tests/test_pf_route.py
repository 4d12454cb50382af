"""pf's routing options (pf.conf(5), ROUTING) as the reader models them: `reply-to` routes
only the replies of a state, `fastroute` routes by the routing table, `route-to IF` on a
pass rule is exact for packets whose route leaves by IF and both ways for the others;
`dup-to` on a pass rule passes exactly what it matches and its copies are named as unmodelled;
routing on block rules stays judged both ways (docs/backend-pf.md)."""

from __future__ import annotations

from test_pf_parse import TCP, Judge, chain, m, parse, rules_at, unmodelled_texts

from fwmatrix.ir import UnmodelledAction, Verdict
from fwmatrix.matrix.model import PortRange

IFACES = ("em0", "em1", "em2")


def judge(text: str, **kw) -> Judge:
    return Judge(parse(text, interfaces=IFACES, **kw), IFACES)


def test_route_to_is_exact_where_the_route_already_leads() -> None:
    # a second uplink: the web server's connections leave by em2 whatever the routes say
    text = ("block all\n"
            "pass in on em0 route-to (em2 198.51.100.1) proto tcp from 10.0.0.0/24 to any port 443\n"
            "pass out on { em1 em2 } proto tcp\n")
    rules = rules_at(parse(text, interfaces=IFACES), "in", 2)
    exact = [r for r in rules if not unmodelled_texts(r)]
    assert len(exact) == 1 and {m("iif", "em0"), m("oif", "em2")} <= set(exact[0].matches)
    (other,) = [r for r in rules if unmodelled_texts(r)]
    assert m("oif", "em2", negate=True) in other.matches
    assert unmodelled_texts(other) == ["route-to ( em2 198.51.100.1 ) (the packet may leave by another route)"]
    j = judge(text)
    assert j.fate("em0", "em2", "10.0.0.5", "203.0.113.9", TCP, 443) == "pass"
    assert j.fate("em0", "em1", "10.0.0.5", "203.0.113.9", TCP, 443) == "maybe"  # sent out em2 instead
    assert j.fate("em0", "em2", "10.0.0.5", "203.0.113.9", TCP, 80) == "block"  # the rule does not match


def test_route_to_a_list_of_one_is_that_target() -> None:
    # fwbuilder writes its single gateway as a list: `route-to { ( em2 198.51.100.1 ) }`
    rules = rules_at(parse("pass in on em0 route-to { ( em2 198.51.100.1 ) } proto tcp\n", interfaces=IFACES), "in", 1)
    assert sorted(bool(unmodelled_texts(r)) for r in rules) == [False, True]


def test_route_to_out_on_its_own_interface_changes_nothing() -> None:
    text = ("block all\n"
            "pass in on em0 proto tcp\n"
            "pass out on em1 route-to em1 proto tcp to port 22\n"
            "pass out on em2 route-to em1 proto tcp to port 25\n")
    assert not any(unmodelled_texts(r) for r in rules_at(parse(text, interfaces=IFACES), "out", 3))
    assert all(unmodelled_texts(r) for r in rules_at(parse(text, interfaces=IFACES), "out", 4))
    j = judge(text)
    assert j.fate("em0", "em1", "10.0.0.5", "203.0.113.9", TCP, 22) == "pass"
    assert j.fate("em0", "em2", "10.0.0.5", "203.0.113.9", TCP, 25) == "maybe"  # leaves by em1, not em2


def test_route_to_a_pool_a_group_or_an_address_stays_unmodelled() -> None:
    for target in ("{ (em1 192.0.2.1), (em2 198.51.100.1) } round-robin", "(em2 198.51.100.1) round-robin",
                   "198.51.100.1", "(egress 198.51.100.1)", "{ em1 em2 }"):
        rules = rules_at(parse(f"pass in on em0 route-to {target} proto tcp\n", interfaces=IFACES), "in", 1)
        assert rules and all(unmodelled_texts(r) for r in rules), target


def test_reply_to_routes_only_replies_which_the_state_passes() -> None:
    text = ("block all\n"
            "pass in on em2 reply-to (em2 198.51.100.1) proto tcp to 10.0.0.10 port 443\n"
            "pass out on em0 proto tcp to 10.0.0.10 port 443\n"
            "block in on em2 reply-to (em2 198.51.100.1) proto tcp to 10.0.0.10 port 22\n")
    rs = parse(text, interfaces=IFACES)
    assert rules_at(rs, "in", 2) and not any(unmodelled_texts(r) for r in rules_at(rs, "in", 2))
    assert rules_at(rs, "in", 4) and not any(unmodelled_texts(r) for r in rules_at(rs, "in", 4))  # a block keeps no state
    j = judge(text)
    assert j.fate("em2", "em0", "203.0.113.9", "10.0.0.10", TCP, 443) == "pass"
    assert j.fate("em2", "em0", "203.0.113.9", "10.0.0.10", TCP, 22) == "block"


def test_reply_to_with_if_bound_states_stays_unmodelled() -> None:
    # the replies leave by em2 while their state is bound to em0's ... the rules judge them there
    rule = "pass in on em2 reply-to (em2 198.51.100.1) proto tcp to 10.0.0.10 port 443"
    for text in (f"set state-policy if-bound\nblock all\n{rule}\n", f"block all\n{rule} keep state (if-bound)\n",
                 f"set state-defaults pflow, if-bound\nblock all\n{rule}\n"):
        line = text.splitlines().index(next(x for x in text.splitlines() if x.startswith("pass"))) + 1
        rules = rules_at(parse(text, interfaces=IFACES), "in", line)
        assert rules and all("reply-to" in unmodelled_texts(r)[0] for r in rules), text
    rules = rules_at(parse(f"set state-defaults floating\nblock all\n{rule}\n", interfaces=IFACES), "in", 3)
    assert rules and not any(unmodelled_texts(r) for r in rules)
    rules = rules_at(parse(f"set state-policy floating\nblock all\n{rule} no state\n", interfaces=IFACES), "in", 3)
    assert rules and not any(unmodelled_texts(r) for r in rules)  # no state, no replies routed


def test_fastroute_is_forwarding_by_the_routes() -> None:
    rs = parse("block all\npass in quick on em0 inet from 10.0.0.0/24 fastroute\nblock in quick on em1 fastroute\n",
               interfaces=IFACES)
    assert rules_at(rs, "in", 2) and not any(unmodelled_texts(r) for r in rules_at(rs, "in", 2))
    assert all(unmodelled_texts(r) for r in rules_at(rs, "in", 3))  # routing a blocked packet: not modelled


def test_dup_to_passes_exactly_and_names_its_copies() -> None:
    """pf.conf(5), ROUTING: dup-to duplicates the packet and routes the copy like route-to; the
    original is routed as it would be. The rule's match and verdict are exact; the copies leave
    towards the collector, where the audit cannot follow them: a rule before it, on what it
    matches, that lets the chain go on, and an `unmodelled` note that names the copies."""
    text = ("block all\n"
            "pass in quick on em0 dup-to (em2 192.0.2.99) proto tcp to port 80\n"
            "pass in on em0 dup-to (em2 192.0.2.99) proto tcp to port 81\n"
            "block in on em0 proto tcp to port 81\n"
            "pass out quick on em1\n")
    rs = parse(text, interfaces=IFACES)
    (rule,) = [r for r in rules_at(rs, "in", 2) if r.origin == "t.conf:2"]
    assert rule.action == Verdict("accept") and not unmodelled_texts(rule)
    assert {m("iif", "em0"), m("dport", PortRange(80, 80))} <= set(rule.matches)
    (copies,) = [r for r in chain(rs, "in").rules if r.origin == "t.conf:2 (copies)"]
    assert copies.matches == rule.matches and isinstance(copies.action, UnmodelledAction) and not copies.action.terminal
    assert copies.action.text.startswith("dup-to ( em2 192.0.2.99 ): a copy of each packet t.conf:2 passes")
    j = judge(text)
    assert "t.conf:2 (copies)" in {n.origin for n in j.effective.unmodelled}
    # the copies keep the packet uncertain (fail closed); what the rule does not match is exact
    assert j.fate("em0", "em1", "10.0.0.5", "203.0.113.9", TCP, 80) == "maybe"
    assert j.fate("em0", "em1", "10.0.0.5", "203.0.113.9", TCP, 81) == "block"  # pf's last match: line 4
    assert j.fate("em0", "em1", "10.0.0.5", "203.0.113.9", TCP, 82) == "block"


def test_routing_on_block_and_match_rules_stays_unmodelled() -> None:
    text = ("block in on em0 route-to (em2 192.0.2.99) proto tcp to port 81\n"
            "block in on em0 dup-to (em2 192.0.2.99) proto tcp to port 80\n"
            "match in on em0 route-to (em2 192.0.2.99) proto tcp to port 82\n"
            "pass in on em0 proto tcp to port 82\n")
    rs = parse(text, interfaces=IFACES)
    for line, word in ((1, "route-to"), (2, "dup-to")):
        rules = rules_at(rs, "in", line)
        assert rules and all(word in unmodelled_texts(r)[0] for r in rules), line


def test_route_to_in_the_firewalls_own_input_stays_unmodelled() -> None:
    # a packet to the firewall that route-to sends away is not delivered: judged both ways there
    text = "block all\npass in on em0 route-to (em2 192.0.2.1) proto tcp to self port 22\n"
    rs = parse(text, interfaces=IFACES, addresses={"em0": ["10.0.0.1/24"], "em1": ["10.1.0.1/24"], "em2": ["192.0.2.2/24"]})
    local = rules_at(rs, "local", 2)
    assert local and all("route-to" in unmodelled_texts(r)[0] for r in local)


def test_query_says_may_match_only_where_the_route_may_lead_elsewhere(write_matrix, tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from fwmatrix.cli import main

    matrix = write_matrix("fwmatrix: 1\nname: small\nzones: {internet: any, lan: 10.0.0.0/24}\nhosts: {web: 10.0.0.10}\n"
                          "services: {https: tcp/443}\nfirewalls:\n  gw:\n    interfaces:\n"
                          "      wan0: {zone: internet, address: 203.0.113.2}\n      lan0: {zone: lan, address: 10.0.0.1}\n"
                          "openings:\n  - {name: www, from: internet, to: web, service: https}\n")
    pf = tmp_path / "pf.conf"
    pf.write_text("set skip on lo\nblock drop all\n"
                  "pass in quick on wan0 inet proto tcp to 10.0.0.10 port 443 route-to (wan0 203.0.113.1)\n"
                  "pass out quick on lan0 inet proto tcp to 10.0.0.10 port 443\n"
                  "pass in quick on lan0 inet proto tcp to 198.51.100.0/24 port 22 route-to (wan0 203.0.113.1)\n"
                  "pass out quick on wan0 inet proto tcp to 198.51.100.0/24 port 22\n")

    def first_step(src: str, dst: str, service: str) -> tuple[str, dict]:
        result = CliRunner().invoke(main, ["query", str(matrix), "--from", src, "--to", dst, "--service", service,
                                           "-r", str(pf), "--format", "json"])
        (answer,) = json.loads(result.output)["answers"]
        return answer["verdict"], answer["trace"][0]

    verdict, step = first_step("10.0.0.5", "198.51.100.9", "tcp/22")  # leaves by wan0, where route-to sends it
    assert (verdict, step["rule"].endswith("pf.conf:5"), step["may_match"]) == ("allowed", True, None)
    verdict, step = first_step("198.51.100.9", "web", "https")  # leaves by lan0: route-to sends it out wan0 instead
    assert verdict == "uncertain" and step["rule"].endswith("pf.conf:3") and "route-to" in step["may_match"]
