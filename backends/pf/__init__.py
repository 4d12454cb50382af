"""pf backend: the Ruleset IR as a pf.conf, for OpenBSD (default) or FreeBSD, and pf
rulesets (a pf.conf, or what pfctl prints) read back into the IR with netfilter's
semantics, so that the one evaluator judges pf firewalls too.

Writing, IR -> pf.conf:
  lower.py    the IR's netfilter chains (DNAT in prerouting, then one forward
              chain) as pf's in and out passes: the lowering, explained there;
  writer.py   the lowered rules as pf.conf text in either dialect (render);
  checker.py  the structural checker (check_files): pfctl does not exist on Linux.
Reading, pf text -> IR:
  lexer.py    tokens and statements, and the cursor the checker and the reader share;
  reader.py   the text as the rules it says (syntax.py: the rule model);
  convert.py  those rules as IR chains: pf's last-match-wins in and out passes as
              netfilter's first-match chains (parse_ruleset), explained there;
  overlap.py  the address sets of its host specs, and what two rules can share.
names.py holds what they share: the backend's name, its dialects, pf's limits and
keywords, and what pf may be told as a name or as free text.

What it cannot write: anything the renderer cannot write exactly (a negated
match, goto, a policy accept, a port on sctp, ...) raises RenderError: a match
silently dropped from a rule would make the rule accept more than the IR says
(fail-open).

What it cannot read exactly is kept as ir.Unmodelled / ir.UnmodelledAction, never
dropped: interface groups (egress), addresses of interfaces, host names, `self`
as a source, tables filled at run time or from files, `no-route`, `urpf-failed`,
icmp types, user/group/os/tos/prio/probability, state limits, route-to/reply-to/
dup-to/divert, af-to, rdr-to on the way out, translation to several addresses,
anchors and includes whose rules are not given. Source ports become the IR's
`sport` (which the evaluator judges both ways). `to self` never matches a
forwarded packet (its destination is not the firewall), nor do link-local scopes
and loopback (RFC 4291, 3927): such rules vanish from the filter chains.

docs/backend-pf.md says more.
"""

from fwmatrix.backends.pf.checker import PfConf, PfRule, check, check_files, parse, rule_counts
from fwmatrix.backends.pf.convert import detect_dialect, parse_ruleset
from fwmatrix.backends.pf.names import DEFAULT_DIALECT, DIALECTS, LABEL_MAX, NAME, PROTO_NUMBERS, SUFFIX, RenderError
from fwmatrix.backends.pf.writer import LOCAL_ANCHOR, render, render_files

__all__ = [
    "NAME", "SUFFIX", "DIALECTS", "DEFAULT_DIALECT", "LOCAL_ANCHOR", "LABEL_MAX", "PROTO_NUMBERS", "RenderError",
    "render", "render_files", "check", "check_files", "parse", "rule_counts", "PfConf", "PfRule",
    "detect_dialect", "parse_ruleset",
]
