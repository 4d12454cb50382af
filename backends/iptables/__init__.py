"""iptables backend: Ruleset IR -> iptables-restore, ip6tables-restore and ipset restore input,
and iptables-save / ip6tables-save text -> Ruleset IR for the audit.

Files, by suffix: `.ipt4` (iptables-restore), `.ipt6` (ip6tables-restore),
`.ipset` (ipset restore; only when some address group became an ipset).
A family's file is emitted whenever an IR table covers that family (an
`inet` table covers both), even without openings for it: the forward
policy and the connection-tracking rules must hold for IPv6 too, or IPv6
would be forwarded wide open. Two modes: own-chains (the default; only
fwmatrix's FWM-* chains are replaced) and full (the whole nat and filter
tables); see modes.py and docs/backend-iptables.md.

What it cannot model:
  Writing, iptables has no exact form for, so RenderError and no file: chains on other
      hooks or priorities than nat's and filter's built-in chains, or two on one hook;
      policies other than accept and drop (no drop in nat); verdicts other than accept,
      drop, reject, return (no drop or reject in nat); DNAT outside nat; ports, or DNAT to
      a port, without tcp, udp or sctp; match fields other than interfaces, protocol,
      ports, addresses, ct state, ct status and nfproto; negated lookups on several fields;
      several excluded values of one field in one rule, or an interface wildcard with part
      of it excluded; Unmodelled matches and actions. A match is never dropped: the rule
      would accept more.
  Reading, kept in the IR as Unmodelled (judged both ways) or UnmodelledAction: matches
      other than ports (tcp, udp, sctp, dccp, multiport), conntrack/state (state, status),
      iprange, set and comment, and the other options of those (tcp flags, ctorigdst...);
      -f; masks that are not prefixes; -m set without the `ipset save` text, or on sets
      with a netmask, nomatch members or other types; targets that may change the packet's
      fate (TPROXY, NFQUEUE, CT, NETMAP... and unknown ones; REDIRECT only with ports not read); DNAT with
      no address, a base port or several targets. Targets that change the packet, not its
      fate (SNAT, MARK), keep the rule with no action; LOG rules are skipped. A table that
      holds native nftables rules cannot be read here at all.

The modules, in the order data flows:
  names     the words both directions share: tools, suffixes, tables, built-in chains
  safe      RenderError, and the checks that keep every written string harmless
  clauses   the exact set algebra of per-field values the lowering works in
  lower     IR -> iptables tables of rules, one address family at a time
  ipset     the sets fwmatrix writes, and `ipset save` read back
  modes     own-chains and full: the marker line, and what own-chains adds on apply
  render    lowered tables -> the restore files (render_files)
  reader    iptables-save text -> sections, words, options, blocks and values
  parse     those -> the Ruleset IR (parse_save): table sections, rule lines, core options
  terms     what a rule reads as: IR conditions and the disjunctions of one rule
  matches   the match extensions (-m) as terms, and the values iptables-restore refuses
  targets   the targets (-j) as the IR's actions
  tool      the tools at work: check_files, apply, read_live
"""

from importlib import import_module

from fwmatrix.backends.iptables.modes import DEFAULT_MODE, MODE_MARKER, MODES, Mode, file_mode, own_chains_plan
from fwmatrix.backends.iptables.modes import _sections
from fwmatrix.backends.iptables.names import (
    BUILTINS,
    CHAIN_MAX,
    CHAIN_PREFIX,
    FAMILY_SUFFIX,
    NAME,
    RESTORE_TOOL,
    SAVE_TOOL,
    SET_MAX,
    SET_PREFIX,
    SUFFIX_IPSET,
    SUFFIX_V4,
    SUFFIX_V6,
)
from fwmatrix.backends.iptables.safe import COMMENT_MAX, RenderError

# Each side is imported when first used: reading an iptables-save file for the audit needs
# neither the lowering (lower, clauses, render) nor subprocess and netns (tool), and compiling
# needs no parser (parse, commands).
_LAZY = {
    "parse_save": "parse",
    "extraposed": "reader",
    "render_family": "render",
    "render_files": "render",
    "rule_count": "render",
    "apply": "tool",
    "check_files": "tool",
    "read_live": "tool",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # looked up once
    return value


__all__ = [
    "_sections",  # private, but fwmatrix.ops.apply reads restore/save sections with it
    "BUILTINS",
    "CHAIN_MAX",
    "CHAIN_PREFIX",
    "COMMENT_MAX",
    "DEFAULT_MODE",
    "FAMILY_SUFFIX",
    "MODES",
    "MODE_MARKER",
    "NAME",
    "RESTORE_TOOL",
    "SAVE_TOOL",
    "SET_MAX",
    "SET_PREFIX",
    "SUFFIX_IPSET",
    "SUFFIX_V4",
    "SUFFIX_V6",
    "Mode",
    "RenderError",
    "apply",
    "check_files",
    "extraposed",
    "file_mode",
    "own_chains_plan",
    "parse_save",
    "read_live",
    "render_family",
    "render_files",
    "rule_count",
]
