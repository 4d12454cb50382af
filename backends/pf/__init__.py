"""pf backend: Ruleset IR -> a pf.conf for OpenBSD (default) or FreeBSD, and pf rulesets
(a pf.conf, or what `pfctl -sr`, `-sn` or `-sa` prints) -> Ruleset IR, read with
netfilter's semantics so that the one evaluator judges pf firewalls too.

pfctl does not exist on Linux: check_files reads the output back against the subset
of pf.conf(5) the renderer writes and reports structural problems; on a BSD host,
`pfctl -nf FILE` is the real check. docs/backend-pf.md says more.

What it cannot model:
  Writing, pf has no exact form for, so RenderError and no file: anything the
      renderer cannot write exactly (a negated match, goto, a policy accept, a port on
      sctp, ...): a match silently dropped from a rule would make the rule accept more
      than the IR says (fail-open). lower.py's docstring says what it does write.
  Reading, kept in the IR as Unmodelled (judged both ways) or UnmodelledAction, never
      dropped: interface groups whose members are not given (parse_ruleset's `groups`;
      the audit gives `egress` from the matrix), addresses of interfaces not given (`addresses`) other than as a
      destination, host names, `self` as a source, tables filled at run time or from files, `no-route`, `urpf-failed` (routes not given), icmp
      type or code names not known, user/group/os/tos/prio/probability, state limits,
      route-to where the routes lead out of another interface, dup-to's copies, divert, af-to, rdr-to on the way out, translation to
      several addresses, anchors and includes whose rules are not given. Source ports
      become the IR's `sport` (which the evaluator judges both ways). `to self` (and
      `to (IF)`, `to IF:0`) never matches a forwarded packet (its destination is not the
      firewall), nor do link-local scopes and loopback (RFC 4291, 3927): such rules
      vanish from the filter chains.

The modules, in the order data flows:
  names    what both directions share: the dialects, pf's limits and keywords,
           RenderError, and what pf may be told as a name or as free text
  lower    IR -> cells -> products: the IR's netfilter chains (DNAT in prerouting,
           one forward chain) as pf's in and out passes; the lowering, explained there
  writer   products -> pf.conf text in either dialect (render)
  checker  a rendered pf.conf read back: its structural problems (check)
  lexer    pf text -> tokens and statements, and the one cursor the checker and the
           reader walk a statement with
  syntax   the pf rule model: what a rule says
  values   pf's words as values: addresses, ports and services, protocols, icmp types, tables
  reader   pf text -> syntax: macros expanded, anchors given read in place
  own      the firewall's own addresses and routes, when given: `self`, `(IF)`, `IF:network`, `urpf-failed`, ...
  overlap  the address sets of host specs, and what two rules can share
  tags     what `tagged T` stands for (a translation, an input interface), and the
           predicates on rules the converter shares with it
  convert  syntax -> IR: pf's last-match-wins in and out passes as netfilter's
           first-match chains (parse_ruleset); the semantics, explained there
"""

from __future__ import annotations

from typing import Iterable

from fwmatrix.backends.pf.checker import PfConf, PfRule, check, parse, rule_counts
from fwmatrix.backends.pf.convert import detect_dialect, parse_ruleset
from fwmatrix.backends.pf.names import DEFAULT_DIALECT, DIALECTS, IFACE_RE, LABEL_MAX, PROTO_NUMBERS, RenderError, wildcard_child
from fwmatrix.backends.pf.own import interface_addresses
from fwmatrix.backends.pf.writer import LOCAL_ANCHOR, render
from fwmatrix.errors import FwmatrixError
from fwmatrix.ir import Ruleset
from fwmatrix.matrix.model import Firewall, Matrix

__all__ = [
    "NAME", "SUFFIX", "DIALECTS", "DEFAULT_DIALECT", "LOCAL_ANCHOR", "LABEL_MAX", "PROTO_NUMBERS", "RenderError",
    "render", "render_files", "check", "check_files", "parse", "rule_counts", "PfConf", "PfRule",
    "detect_dialect", "parse_ruleset", "firewall_facts", "interface_options", "wildcard_child",
]

NAME = "pf"
SUFFIX = ".pf.conf"


# -- the backend interface (see fwmatrix/targets.py) ------------------------------


def render_files(ruleset: Ruleset, *, dialect: str = DEFAULT_DIALECT) -> dict[str, str]:
    """File suffix -> contents, for one firewall."""
    return {SUFFIX: render(ruleset, dialect)}


def firewall_facts(matrix: Matrix, firewall: str) -> dict[str, object]:
    """What the matrix says of a firewall that its pf ruleset may name, as parse_ruleset's
    `interfaces` and `groups`: its interfaces (none is a group, whatever its name), and the
    group `egress`, the interfaces facing the matrix's `any` zone (where the default route
    leads, which is how OpenBSD fills the group); its public addresses (part of `self`), its
    interfaces' own addresses where declared (no prefix: `(IF)`, not `IF:network`); and its
    routes (`no-route`, `urpf-failed`)."""
    fw = matrix.firewalls[firewall]
    facing_any = {name for name, zone in fw.interfaces.items() if matrix.zones[zone].is_any}
    return {"interfaces": tuple(fw.interfaces), "groups": {"egress": tuple(sorted(facing_any))},
            "self_addresses": tuple(fw.public.values()),
            # the interfaces' own addresses the matrix declares (`lan0: {zone: lan, address: ...}`): no prefix
            "addresses": {name: tuple(addresses) for name, addresses in fw.addresses.items()},
            "routes": _routes(matrix, fw), "default_route": tuple(sorted(facing_any))}


def _routes(matrix: Matrix, fw: Firewall) -> dict[str, tuple] | None:
    """The firewall's routes as the audit routes packets, each zone's networks out of the
    interface facing it and the default route out of the one facing the `any` zone; known
    only when every zone of the matrix faces this firewall and one interface faces `any`
    (else some zone lies behind another firewall, or the default route is not known)."""
    facing_any = [name for name, zone in fw.interfaces.items() if matrix.zones[zone].is_any]
    if set(matrix.zones) - set(fw.interfaces.values()) or len(facing_any) != 1:
        return None
    return {name: matrix.zones[zone].networks for name, zone in fw.interfaces.items()}


def interface_options(addresses: Iterable[str], groups: Iterable[str]) -> dict[str, object]:
    """The CLI's `--pf-interface IF=ADDR/PREFIX[,...]` and `--pf-group NAME=IF[,IF...]` as
    parse_ruleset's `addresses` and `groups` (a bad value: FwmatrixError, one line)."""
    given = dict(interface_addresses(text) for text in addresses)
    members: dict[str, tuple[str, ...]] = {}
    for text in groups:
        name, _, listed = text.partition("=")
        names = tuple(n.strip() for n in listed.split(",") if n.strip())
        if not IFACE_RE.match(name) or not names or not all(IFACE_RE.match(n) for n in names):
            raise FwmatrixError(f"expected --pf-group NAME=IF[,IF...], not {text!r}")
        members[name] = names
    return {"addresses": given, "groups": members}


def check_files(files: dict[str, str], *, dialect: str | None = None) -> list[str]:
    """Structural problems in rendered files ('suffix:line: message'); [] when none.

    No pfctl here: this re-parses the subset of pf.conf(5) the renderer writes.
    The dialect comes from the header comment unless given."""
    problems: list[str] = []
    for suffix, text in sorted(files.items()):
        problems += [f"{suffix}:{p}" for p in check(text, dialect)]
    return problems
