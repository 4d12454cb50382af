"""How a command reads a firewall's ruleset, saved or live: one set of options (`--live`,
`--ruleset`, `--backend`, the pf facts, `--local-address`) shared by `audit` and `query`,
gathered into one `RulesetInput`, so both judge a ruleset from the same facts."""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import click
from netaddr import AddrFormatError, IPNetwork

from fwmatrix.audit.evaluate import OwnAddresses
from fwmatrix.cli.common import F
from fwmatrix.compile.intent import Intent
from fwmatrix.errors import FwmatrixError
from fwmatrix.ir import Ruleset
from fwmatrix.targets import BACKENDS, read_live, read_ruleset


@dataclass(frozen=True)
class RulesetInput:
    """The options as given: which ruleset, and what only the firewall knows about itself."""

    live: bool = False
    paths: tuple[str, ...] = ()
    backend: str = "auto"
    pf_tables: tuple[str, ...] = ()
    pf_anchors: tuple[str, ...] = ()
    pf_interfaces: tuple[str, ...] = ()
    pf_groups: tuple[str, ...] = ()
    local_addresses: tuple[IPNetwork, ...] = ()

    @property
    def given(self) -> bool:
        return self.live or bool(self.paths)

    def read(self, intent: Intent, firewall: str) -> tuple[Ruleset, str]:
        return read_input(intent, firewall, self.live, self.paths, self.backend, self.pf_tables, self.pf_anchors,
                          self.pf_interfaces, self.pf_groups, self.local_addresses or None)

    def own(self, intent: Intent, firewall: str) -> OwnAddresses:
        """The firewall's own addresses: the matrix's public ones and --local-address (then all of them)."""
        public = tuple(IPNetwork(address) for address in intent.matrix.firewalls[firewall].public.values())
        return OwnAddresses(public + self.local_addresses, complete=bool(self.local_addresses))


_OPTIONS = (
    click.option("--live", is_flag=True, help="Read the running kernel's ruleset (on the firewall itself; needs root)."),
    click.option("--ruleset", "-r", "paths", metavar="FILE", multiple=True, type=click.Path(dir_okay=False),
                 help="A saved ruleset: nft -j list ruleset, a .nft file, iptables-save output, or pf.conf. Repeat it for rulesets that run together (e.g. iptables-save and ip6tables-save)."),
    click.option("--backend", "-b", "backend", type=click.Choice(("auto",) + BACKENDS), default="auto", show_default=True, help="What wrote the ruleset (auto: guess from its text)."),
    click.option("--pf-table", "pf_tables", metavar="NAME=FILE", multiple=True,
                 help="pf: the addresses of table <NAME>, as `pfctl -t NAME -T show` prints them (else a table the ruleset only names is unmodelled). Repeatable."),
    click.option("--pf-anchor", "pf_anchors", metavar="NAME=FILE", multiple=True,
                 help="pf: the rules of anchor NAME, as `pfctl -a NAME -sr` prints them (an empty file: an empty anchor, such as fwmatrix's 'local' without rules). Repeatable."),
    click.option("--pf-interface", "pf_interfaces", metavar="IF=ADDR/PREFIX[,...]", multiple=True,
                 help="pf: the addresses of interface IF with their prefix, as ifconfig shows them (192.0.2.1/24): then `(IF)`, `IF:network`, antispoof and, once every interface has them, `self` are exact. Repeatable."),
    click.option("--pf-group", "pf_groups", metavar="NAME=IF[,IF...]", multiple=True,
                 help="pf: the members of interface group NAME (egress defaults to the interfaces facing the matrix's internet zone). Repeatable."),
    click.option("--local-address", "local_addresses", metavar="CIDR", multiple=True,
                 help="An address (or network) of the firewall itself; give them all: with the matrix's public addresses they are "
                      "what `fib daddr type local` and `-m addrtype --dst-type LOCAL` match (else only the public ones are known). Repeatable."),
)
_NAMES = ("live", "paths", "backend", "pf_tables", "pf_anchors", "pf_interfaces", "pf_groups", "local_addresses")


def ruleset_options(fn: F) -> F:
    """The options above; the command receives them as one `ruleset_input: RulesetInput`."""

    @functools.wraps(fn)
    def gathered(**kwargs: object) -> object:
        given = {name: kwargs.pop(name) for name in _NAMES}
        given["local_addresses"] = tuple(_network(text) for text in given["local_addresses"])  # type: ignore[union-attr]
        return fn(ruleset_input=RulesetInput(**given), **kwargs)  # type: ignore[arg-type]

    for option in reversed(_OPTIONS):
        gathered = option(gathered)
    return gathered  # type: ignore[return-value]


def read_input(intent: Intent, firewall: str, live: bool, ruleset_paths: tuple[str, ...], backend_name: str,
               pf_tables: tuple[str, ...], pf_anchors: tuple[str, ...], pf_interfaces: tuple[str, ...] = (),
               pf_groups: tuple[str, ...] = (), local_addresses: tuple | None = None) -> tuple[Ruleset, str]:
    """The firewall's ruleset, live or from the files (read together), and how to name its source."""
    if live:
        _refuse_pf_facts_with_live(pf_tables=pf_tables, pf_anchors=pf_anchors, pf_interfaces=pf_interfaces, pf_groups=pf_groups)
        return read_live(backend_name), f"live ({'nftables' if backend_name == 'auto' else backend_name})"
    tables, anchors = _named_files(pf_tables), _named_files(pf_anchors)
    # the pf backend is imported when a pf ruleset or a pf option needs it: an nftables or
    # iptables audit does not pay for it (a bad --pf-interface is refused either way)
    given = _pf().interface_options(pf_interfaces, pf_groups) if pf_interfaces or pf_groups else {"addresses": {}, "groups": {}}

    @functools.cache
    def pf_context() -> dict:
        facts = _pf().firewall_facts(intent.matrix, firewall)
        return dict(facts, tables=tables, anchors=anchors, addresses={**facts["addresses"], **given["addresses"]},
                    groups={**facts["groups"], **given["groups"]}, all_addresses=local_addresses)

    references: dict[str, set[str]] = {"anchors": set(), "tables": set()}
    read = [(path,) + _read(path, backend_name, pf_context, references) for path in ruleset_paths]
    _check_referenced("--pf-anchor", "anchor", pf_anchors, references["anchors"])
    _check_referenced("--pf-table", "table", pf_tables, references["tables"])
    # rulesets that run together on one firewall: their tables side by side
    # (an iptables-save file covers its family only: together they cover what each covers)
    families = [parsed.families for _, parsed, _ in read]
    covered = None if None in families else frozenset().union(*families)
    ruleset = Ruleset(tuple(table for _, parsed, _ in read for table in parsed.tables), families=covered)
    return ruleset, ", ".join(f"{path} ({used})" for path, _, used in read)


def _pf() -> ModuleType:
    from fwmatrix.backends import pf

    return pf


def _read(path: str, backend_name: str, pf_context: Callable[[], dict], references: dict[str, set[str]]) -> tuple[Ruleset, str]:
    """One file's ruleset; of a pf.conf, the anchors and tables it reads go to `references`."""
    ruleset, used = read_ruleset(path, backend_name)
    if used == "pf":  # read again, knowing the firewall (checked and decoded by the first read)
        found: dict[str, set[str]] = {}
        with open(path, encoding="utf-8") as handle:
            ruleset = _pf().parse_ruleset(handle.read(), source=path, references=found, **pf_context())
        for kind, names in found.items():
            references[kind] |= names
    return ruleset, used


def _refuse_pf_facts_with_live(**given: tuple[str, ...]) -> None:
    """pf is never read live (targets.read_live), so a pf option beside --live would be ignored:
    the user would believe an anchor or table was audited that was not read at all."""
    for name, values in given.items():
        if values:
            option = "--" + name.replace("_", "-").rstrip("s")
            raise FwmatrixError(f"{option} {values[0].partition('=')[0]}: pf facts describe a saved pf ruleset (--ruleset); "
                                "--live reads the kernel's nftables or iptables ruleset, so it would be ignored")


def _check_referenced(option: str, what: str, pairs: tuple[str, ...], referenced: set[str]) -> None:
    """A NAME=FILE for an anchor or table the rulesets never read would be ignored, and a typo
    would leave the user believing it audited: refused, naming what they do read (the closest
    first). A child of a wildcard anchor `X/*` they hold (X/a, as pf.reader takes them) is read."""
    wildcards = [ref for ref in referenced if ref.endswith("/*")]
    for pair in pairs:
        name = pair.partition("=")[0]
        if name in referenced or any(_pf().wildcard_child(name, wildcard) for wildcard in wildcards):
            continue
        close = difflib.get_close_matches(name, sorted(referenced), n=max(1, len(referenced)), cutoff=0.6)
        listed = close + sorted(referenced - set(close))
        shown = ", ".join(f"'{ref}'" for ref in listed[:12]) + (f" and {len(listed) - 12} more" if len(listed) > 12 else "")
        reads = f"it reads {what}{'s' if len(listed) > 1 else ''} {shown}" if listed else f"it reads no {what}"
        raise FwmatrixError(f"{option} {name}: the ruleset never reads {what} '{name}' (the file would be ignored); {reads}")


def _network(text: str) -> IPNetwork:
    """An address or a network; `10.0.0.1/24` (as `ip addr` prints an address) is refused:
    it may mean the address or its whole network, and only the address is the firewall's."""
    try:
        net = IPNetwork(text)
    except (AddrFormatError, ValueError):
        raise click.UsageError(f"--local-address {text!r} is not an address or a network (CIDR)") from None
    if net.ip != net.network:
        raise click.UsageError(f"--local-address {text}: host bits are set; give the address ({net.ip}) or the network ({net.cidr})")
    return net


def _named_files(pairs: tuple[str, ...]) -> dict[str, str]:
    """NAME=FILE options as {NAME: the file's text}."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, _, path = pair.partition("=")
        if not name or not path:
            raise click.UsageError(f"expected NAME=FILE, not {pair!r}")
        try:
            with open(path, encoding="utf-8") as handle:
                out[name] = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise FwmatrixError(f"cannot read: {getattr(exc, 'strerror', None) or exc}", path) from None
    return out
