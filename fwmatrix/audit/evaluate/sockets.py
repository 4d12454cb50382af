"""Matches on the local socket of a packet: its owner (nft `meta skuid`/`skgid`, iptables
`-m owner`, pf `user`/`group`).

Only a packet the firewall sends or receives itself has a local socket. A forwarded packet
never has one, in any hook it passes (ingress, prerouting, forward, postrouting, egress):
so there such a match is exact, it never holds, and a negated one always does. The
firewall's own traffic (its input and output chains, audit/local.py) may have a socket
whose owner fwmatrix does not know: there it is judged both ways.
"""

from __future__ import annotations

from dataclasses import replace

from fwmatrix.ir import Match, Rule, Unmodelled

FIELD = "socket"
UNKNOWN_OWNER = "{text} (the owner of a local socket, which the firewall's own traffic may have)"


def _is_socket(match: object) -> bool:
    return isinstance(match, Match) and match.fields == (FIELD,)


def without_socket(rule: Rule) -> Rule:
    """The rule as a forwarded packet meets it: a socket match never holds (the rule decides
    nothing, kept so rule numbers stay), a negated one always does (left out)."""
    found = [m for m in rule.matches if _is_socket(m)]
    if not found:
        return rule
    if any(not m.negate for m in found):
        return replace(rule, action=None)
    return replace(rule, matches=tuple(m for m in rule.matches if m not in found))


def unknown_socket(rule: Rule) -> Rule:
    """The rule as the firewall's own packets meet it: each socket match judged both ways."""
    if not any(_is_socket(m) for m in rule.matches):
        return rule
    return replace(rule, matches=tuple(Unmodelled(UNKNOWN_OWNER.format(text=socket_text(m))) if _is_socket(m) else m
                                       for m in rule.matches))


def socket_text(match: Match) -> str:
    text = " ".join(str(key[0]) for key in match.values)
    return f"not ({text})" if match.negate else text
