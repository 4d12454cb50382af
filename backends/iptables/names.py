"""The words both directions share: the tools and fwmatrix's file suffixes, iptables' tables
and built-in chains with the netfilter hooks they run on, protocol, conntrack and verdict
words, and fwmatrix's own chain and set prefixes with the kernel's limits on names."""

from __future__ import annotations

NAME = "iptables"
SUFFIX_V4 = ".ipt4"
SUFFIX_V6 = ".ipt6"
SUFFIX_IPSET = ".ipset"
FAMILY_SUFFIX = {4: SUFFIX_V4, 6: SUFFIX_V6}
RESTORE_TOOL = {4: "iptables-restore", 6: "ip6tables-restore"}
SAVE_TOOL = {4: "iptables-save", 6: "ip6tables-save"}

CHAIN_PREFIX = "FWM-"
CHAIN_MAX = 28  # iptables: XT_EXTENSION_MAXNAMELEN - 1
SET_PREFIX = {4: "fwm4-", 6: "fwm6-"}
SET_MAX = 31  # ipset: IPSET_MAXNAMELEN - 1

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}
# conntrack states in the order iptables-save prints them, so our lines read back verbatim.
CT_STATES = ("invalid", "new", "related", "established", "untracked")
# ct status bits: iptables tests SNAT/DNAT as virtual states, the others with --ctstatus.
CT_STATUS = {
    "snat": ("--ctstate", "SNAT"),
    "dnat": ("--ctstate", "DNAT"),
    "expected": ("--ctstatus", "EXPECTED"),
    "seen-reply": ("--ctstatus", "SEEN_REPLY"),
    "assured": ("--ctstatus", "ASSURED"),
    "confirmed": ("--ctstatus", "CONFIRMED"),
}
VERDICTS = {"accept": "ACCEPT", "drop": "DROP", "reject": "REJECT", "return": "RETURN"}

# iptables table -> built-in chain -> (hook, IR chain type, priority): netfilter's NF_IP_PRI_*
# values. The parser reads every table; the renderer writes nat and filter (TABLES).
BUILTIN_CHAINS: dict[str, dict[str, tuple[str, str, int]]] = {
    "raw": {"PREROUTING": ("prerouting", "filter", -300), "OUTPUT": ("output", "filter", -300)},
    "mangle": {
        "PREROUTING": ("prerouting", "filter", -150),
        "INPUT": ("input", "filter", -150),
        "FORWARD": ("forward", "filter", -150),
        "OUTPUT": ("output", "route", -150),  # re-routes when the mark or addresses change
        "POSTROUTING": ("postrouting", "filter", -150),
    },
    "nat": {
        "PREROUTING": ("prerouting", "nat", -100),
        "INPUT": ("input", "nat", 100),
        "OUTPUT": ("output", "nat", -100),
        "POSTROUTING": ("postrouting", "nat", 100),
    },
    "filter": {"INPUT": ("input", "filter", 0), "FORWARD": ("forward", "filter", 0), "OUTPUT": ("output", "filter", 0)},
    "security": {"INPUT": ("input", "filter", 50), "FORWARD": ("forward", "filter", 50), "OUTPUT": ("output", "filter", 50)},
}
TABLES = ("nat", "filter")  # file order: DNAT happens before filtering
BUILTINS = {table: tuple(BUILTIN_CHAINS[table]) for table in TABLES}
# (chain type, hook, priority) -> (iptables table, built-in chain): where iptables runs that hook.
HOOKS = {(kind, hook, priority): (table, chain) for table in TABLES for chain, (hook, kind, priority) in BUILTIN_CHAINS[table].items()}
