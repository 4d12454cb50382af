"""pf.conf text from the lowered ruleset (lower.py), in the OpenBSD or the FreeBSD dialect:
steps 3 to 5 of the lowering (see lower.py's docstring), and the file around them.

Every rule is `quick`, so the first matching rule decides, like a netfilter
chain; the only non-quick rule is the default `block drop all`, which pf
applies to whatever no quick rule matched (the forward policy drop).
"""

from __future__ import annotations


from itertools import chain
from operator import attrgetter
from typing import Any, Callable

from netaddr import IPAddress, IPNetwork

from fwmatrix.backends.pf.lower import _Cell, _cell_within, _check_no_rematch, _Lowered, _lower, _targets_overlap
from fwmatrix.backends.pf.merge import Dims, _Merger, _plain_sort_key
from fwmatrix.backends.pf.names import (
    DEFAULT_DIALECT, DIALECTS, HEX_RE, PROTO_NAMES, RenderError, _Names, comment, interface_name, label, safe_text,
)
from fwmatrix.ir import Ruleset

LOCAL_ANCHOR = "local"
# `ct status dnat`: the tag every translation rule sets (see 5. in lower.py)
DNAT_TAG = "fwm_dnat"


# -- 4. writing ------------------------------------------------------------------


class _Writer:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.macros = _Names(suffix="_if")
        self.tags = _Names(prefix="fwm_in_")
        # freebsd, on an input interface with translated cells: in on it and translated
        self.dnat_tags = _Names(prefix="fwm_in_", suffix="_dnat")
        self.dnat_tags.used = self.tags.used  # one namespace: an interface 'x_dnat' gets another name
        self.tables: dict[tuple[tuple[int, int, int], ...], str] = {}  # networks as plain keys, sorted -> the table's name
        self.texts: dict[frozenset, str] = {}  # a product's set -> how a rule writes it (products repeat their sets)
        self.key_texts: dict[tuple[int, int, int], str] = {}  # a network's plain key -> its text
        self.table_notes: dict[str, str] = {}
        self.nat_lines: list[str] = []  # freebsd: source NAT as translation rules (snat.py)
        self.products = _Merger()  # cells -> products, for every rule list of this file

    def iface(self, name: str) -> str:
        return "$" + self.macros.get(interface_name(name))

    def addresses(self, values: frozenset, notes: list[str]) -> str:
        text = self.texts.get(values)
        if text is None:
            text = self.texts[values] = self._addresses(values, notes)
        return text

    def _addresses(self, values: frozenset, notes: list[str]) -> str:
        if values == ANY:
            return "any"
        nets = tuple(sorted(values, key=_plain_sort_key))
        if len(nets) == 1:
            return self.key_text(nets[0])
        if nets not in self.tables:
            name = f"fwm_{len(self.tables) + 1}"
            self.tables[nets] = name
            self.table_notes[name] = ", ".join(notes)
        return f"<{self.tables[nets]}>"

    def key_text(self, key: tuple[int, int, int]) -> str:
        text = self.key_texts.get(key)
        if text is None:
            text = self.key_texts[key] = _key_address(key)
        return text

    def hosts(self, dims: Dims, notes: list[str], to_self: bool = False) -> str:
        src, dst, _, ports = dims
        to = "self" if to_self and dst == ANY else self.addresses(dst, notes)
        text = f"from {self.addresses(src, notes)} to {to}"
        if ports != ANY:
            text += " port " + self.listed(ports, _port)
        return text

    def rule(self, head: str, family: int | None, dims: Dims, notes: list[str], opts: list[str], to_self: bool = False) -> str:
        parts = [head]
        if family is not None:
            parts.append("inet" if family == 4 else "inet6")
        protos = dims[2]
        if protos != ANY:
            parts.append("proto " + self.listed(protos, _proto))
        parts.append(self.hosts(dims, notes, to_self))
        parts.extend(opts)
        return " ".join(parts)

    def listed(self, values: frozenset, text: Callable[[Any], str]) -> str:
        """Ports or protocols, sorted, as one item or a { list } (a set of ports is never one of protocols)."""
        found = self.texts.get(values)
        if found is None:
            found = self.texts[values] = _list([text(v) for v in sorted(values)])
        return found


ANY = frozenset([None])  # a product's dimension that matches anything


def _address(net: IPNetwork) -> str:
    return str(net.ip) if net.size == 1 else str(net.cidr)


def _key_address(key: tuple[int, int, int]) -> str:
    """A network's plain key (version, first, prefix length) as _address writes the network."""
    version, first, length = key
    if version == 4:
        text = f"{first >> 24}.{first >> 16 & 255}.{first >> 8 & 255}.{first & 255}"
    else:
        text = str(IPAddress(first, 6))
    return text if length == (32 if version == 4 else 128) else f"{text}/{length}"


def _port(rng: tuple[int, int]) -> str:
    low, high = rng
    return str(low) if low == high else f"{low}:{high}"


def _proto(number: int) -> str:
    return PROTO_NAMES.get(number, str(number))


def _list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + " ".join(items) + " }"


_VERDICT_HEAD = {"accept": "pass", "drop": "block drop", "reject": "block return"}


def _runs(rules: list[tuple[str, str, list[_Cell]]]) -> list[tuple[str, list[tuple[str, list[_Cell]]]]]:
    """Consecutive rules with one verdict, merged: within a run order does not matter. A run is its
    rules' (comment, cells), in order."""
    runs: list[tuple[str, list[tuple[str, list[_Cell]]]]] = []
    for verdict, note, cells in rules:
        if not cells:
            continue
        if runs and runs[-1][0] == verdict:
            runs[-1][1].append((note, cells))
        else:
            runs.append((verdict, [(note, cells)]))
    return runs


_IN_GROUP = attrgetter("iif", "family", "dnat")  # an in rule's group: (input interface, family, translated)
_OUT_GROUP = attrgetter("oif", "iif", "family", "dnat", "snat")


def _grouped(chunks: list[tuple[str, list[_Cell]]], group_of: Callable[[_Cell], tuple]) -> dict[tuple, list[tuple[str, list[_Cell]]]]:
    """A run's cells by group (group_of), each group its rules' (comment, cells) in order. The cells of
    one rule are mostly of one group (a verdict map's branch): each rule's groups are found by a loop
    in C, and only a rule of several is split cell by cell."""
    groups: dict[tuple, list[tuple[str, list[_Cell]]]] = {}
    for note, cells in chunks:
        keys = list(map(group_of, cells))
        if keys.count(keys[0]) == len(keys):
            parts: dict[tuple, list[_Cell]] = {keys[0]: cells}
        else:
            parts = {}
            for key, cell in zip(keys, cells):
                parts.setdefault(key, []).append(cell)
        for key, part in parts.items():
            groups.setdefault(key, []).append((note, part))
    return groups


def _filter_lines(w: _Writer, low: _Lowered, direction: str) -> list[str]:
    """The in-list (pre-filter, out-interface dropped) or the out-list (exact)."""
    freebsd = w.dialect == "freebsd"
    translated_in = low.translated_ifaces  # freebsd: these interfaces' in rules set one of two tags (see 5. in lower.py)
    projected: list[tuple[str, str, list[_Cell]]] = []
    if freebsd and direction == "out" and any(c.snat is not None for _, _, cells in low.filter_rules for c in cells) and any(
            verdict != "accept" and any(c.oif is not None for c in cells) for verdict, _, cells in low.filter_rules):
        raise RenderError("source NAT beside a drop among the out rules: FreeBSD's nat rules translate before the out rules "
                          "filter, so a drop of the inside source would miss the translated packet; fwmatrix writes this for "
                          "the openbsd dialect only")
    for verdict, note, cells in low.filter_rules:
        if freebsd and any(c.dnat and c.iif is None for c in cells):
            raise RenderError("a rule for translated connections (ct status dnat) without an input interface: the freebsd "
                              "dialect carries the translation to the out rules in the input interface's tag, which needs the interface")
        if direction == "in":
            if verdict != "accept" and any(c.oif is not None for c in cells):
                # A drop that depends on the out-interface cannot be decided on the way
                # in; the exact out-list applies it. Skipping it here only widens the
                # pre-filter, never the result.
                cells = [c for c in cells if c.oif is None]
            # the out-interface and source NAT are dropped from the in-list by its group key
            # (interface, family, translated) and products (addresses, protocol, ports): the
            # cells need no copies without them (75k dataclass copies at 10,000 openings)
            if freebsd and verdict == "accept" and any(c.iif is None for c in cells):
                raise RenderError("an accept rule without an input interface: the freebsd dialect carries the input "
                                  "interface to the out rules as a tag, and a tag needs the interface")
        projected.append((verdict, note, cells))
    logs = _freebsd_logs(low, to_self=False) if freebsd and direction == "in" else None
    lines: list[str] = []
    for verdict, chunks in _runs(projected):
        # a group's key: (on, received, family, translated, source NAT, logged)
        groups: dict[tuple, list[tuple[str, list[_Cell]]]] = {}
        if direction == "out":
            for (oif, iif, family, dnat, snat), members in _grouped(chunks, _OUT_GROUP).items():
                groups[(oif, iif, family, dnat, snat, False)] = members
        elif logs is None or verdict != "accept":
            for (iif, family, dnat), members in _grouped(chunks, _IN_GROUP).items():
                groups[(iif, None, family, dnat, None, False)] = members
        else:
            for note, cells in chunks:  # freebsd: whether a cell is logged is asked of each
                for cell in cells:
                    key = (cell.iif, None, cell.family, cell.dnat, None, logs.holds(cell))
                    members = groups.setdefault(key, [])
                    if members and members[-1][0] is note:
                        members[-1][1].append(cell)
                    else:
                        members.append((note, [cell]))
        # Each group is written in one or two variants: 'dnat' (a translated cell), 'plain', and
        # on freebsd 'twin' (a plain cell on an interface with translated cells, for translated
        # packets: in, before the plain variant, so that they get the _dnat tag; out, for the
        # packets carrying that tag).
        order: list[tuple[tuple, tuple, str]] = []
        for key, members in groups.items():
            on, received, family, dnat, _, _ = key
            iif = on if direction == "in" else received
            if dnat:
                variants = ["dnat"]
            elif freebsd and iif is not None and iif in translated_in and (direction == "out" or verdict == "accept"):
                variants = ["twin", "plain"]
            else:
                variants = ["plain"]
            for variant in variants:
                rank = {"dnat": 0, "twin": 1, "plain": 2}[variant]
                # in: per input interface, the variants that set the _dnat tag first (the order
                # within a run of one verdict changes only the tag); out: the order is free
                sort = (on or "", rank, family or 0, key[5]) if direction == "in" else (on or "", received or "", family or 0, rank, _snat_key(key[4]))
                order.append((sort, key, variant))
        order.sort(key=lambda item: item[0])
        products: dict[tuple, list[tuple[Dims, list[str]]]] = {}
        last_notes = None
        for _, key, variant in order:
            on, received, family, dnat, snat, logged = key
            members = groups[key]
            notes = list(dict.fromkeys(n for n, _ in members if n))
            if notes and notes != last_notes:
                lines.append(comment("; ".join(notes)))
            last_notes = notes
            head = f"{_VERDICT_HEAD[verdict]} {direction}{' log' if logged else ''} quick" + (f" on {w.iface(on)}" if on else "")
            if key not in products:
                products[key] = w.products(chain.from_iterable(cells for _, cells in members))  # a twin and its plain rule: the same products
            for dims, labels in products[key]:
                if snat is not None and freebsd:
                    lines.append(_freebsd_snat(w, head, family, dims, labels, on, snat, _filter_opts(w, direction, verdict, on, received, variant, [])))
                    continue
                nat = [f"nat-to {_snat_target(w, snat)}"] if snat is not None else []
                lines.append(w.rule(head, family, dims, labels, nat + _filter_opts(w, direction, verdict, on, received, variant, labels)))
    if logs is not None:
        logs.all_held()
    return lines


class _FreebsdLogs:
    """FreeBSD's pf has no match rules: an opening's log is `log` on the pass in rules of its
    cells (pf logs the packet that creates the state: its new connections, as the IR's log rule
    before the accepts). Every log cell must hold a pass in cell, or the log is refused."""

    def __init__(self, cells: list[_Cell]) -> None:
        self.cells = cells
        self.used: set[int] = set()

    def holds(self, cell: _Cell) -> bool:
        found = [i for i, c in enumerate(self.cells)
                 if (c.iif, c.family, c.dnat, c.proto) == (cell.iif, cell.family, cell.dnat, cell.proto) and _cell_within(cell, c)]
        self.used.update(found)
        return bool(found)

    def all_held(self) -> None:
        lost = [c for i, c in enumerate(self.cells) if i not in self.used]
        if lost:
            raise RenderError(f"an opening's log ('{lost[0].note}'): FreeBSD's pf has no match rules, and no pass in rule of the "
                              "freebsd dialect holds these packets to carry `log`")


def _freebsd_logs(low: _Lowered, to_self: bool) -> _FreebsdLogs:
    return _FreebsdLogs([c for _, cells, local in low.log_rules if local == to_self for c in cells])


def _snat_target(w: _Writer, snat: IPNetwork | str) -> str:
    return _address(snat) if not isinstance(snat, str) else "(" + w.iface(snat) + ")"


def _freebsd_snat(w: _Writer, head: str, family: int | None, dims: Dims, labels: list[str], on: str, snat: IPNetwork | str,
                  received: list[str]) -> str:
    """FreeBSD's pf translates by `nat` rules, before the out rules filter, which then see the new
    source. So the translation rule matches what the pass out rule would (its input interface by
    that interface's tag, `received`) and sets a tag of its own; the pass out rule passes what
    carries that tag, from any source: exactly the packets the nat rule translated."""
    tag = f"fwm_snat_{len(w.nat_lines) + 1}"
    w.nat_lines.append(w.rule(f"nat on {w.iface(on)}", family, dims, labels, [f"tag {tag}"] + received + [f"-> {_snat_target(w, snat)}"]))
    return w.rule(head, family, (ANY,) + dims[1:], labels, [f"tagged {tag}"] + ([label(", ".join(labels))] if labels else []))


def _snat_key(snat: IPNetwork | str | None) -> tuple:
    return (0,) if snat is None else (1, str(snat)) if isinstance(snat, str) else (2, snat.version, snat.first)


def _filter_opts(w: _Writer, direction: str, verdict: str, on: str | None, received: str | None, variant: str,
                 labels: list[str]) -> list[str]:
    """What a filter rule says after its hosts: the input interface and the translation (see 4. and 5. in lower.py)."""
    opts: list[str] = []
    translated = variant in ("dnat", "twin")
    if w.dialect == "openbsd":
        if received is not None:
            opts.append(f"received-on {w.iface(received)}")
        if translated:
            opts.append(f"tagged {DNAT_TAG}")
    elif direction == "in":
        if translated:
            opts.append(f"tagged {DNAT_TAG}")
        if verdict == "accept" and on is not None:
            iface = interface_name(on)
            opts.append(f"tag {w.dnat_tags.get(iface) if translated else w.tags.get(iface)}")
    elif received is not None:
        iface = interface_name(received)
        opts.append(f"tagged {w.dnat_tags.get(iface) if translated else w.tags.get(iface)}")
    if labels:
        opts.append(label(", ".join(labels)))
    return opts


def _input_lines(w: _Writer, low: _Lowered) -> list[str]:
    """The firewall's own services (see local.py): pass in to self, then the rest to self dropped."""
    if not low.input_rules:
        return []
    freebsd = w.dialect == "freebsd"
    logs = _freebsd_logs(low, to_self=True) if freebsd else None
    lines: list[str] = []
    for note, cells in low.input_rules:
        if note:
            lines.append(comment(note))
        groups: dict[tuple, list[_Cell]] = {}
        for cell in cells:
            groups.setdefault((cell.iif, cell.family, logs is not None and logs.holds(cell)), []).append(cell)
        for (on, family, logged), group in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or 0, kv[0][2])):
            head = f"pass in{' log' if logged else ''} quick" + (f" on {w.iface(on)}" if on else "")
            for dims, labels in w.products(group):
                # freebsd's out rules read the input interface from a tag: these packets never go out
                opts = ([f"tag {w.tags.get(interface_name(on))}"] if freebsd and on else []) + ([label(", ".join(labels))] if labels else [])
                line = w.rule(head, family, dims, labels, opts, to_self=True)
                if family == 6 and dims[2] == frozenset([58]) and dims[1] == ANY:
                    line = line.replace(" to self", " to { self ff02::/16 }")  # neighbour solicitations go to multicast
                lines.append(line)
    if logs is not None:
        logs.all_held()
    lines.append("# anything else for the firewall itself (netfilter: the input chain's policy drop)")
    lines.append(f"block drop in {'log ' if 'input' in low.log_drops else ''}quick from any to self")
    return lines


def _log_lines(w: _Writer, low: _Lowered) -> list[str]:
    """Openings with `log: true`: match rules that log their new connections (see pflog.py)."""
    if w.dialect != "openbsd":
        return []  # FreeBSD: `log` on the pass in rules (_FreebsdLogs)
    lines: list[str] = []
    for note, cells, to_self in low.log_rules:
        if note:
            lines.append(comment(note))
        groups: dict[tuple, list[_Cell]] = {}
        for cell in cells:
            groups.setdefault((cell.iif, cell.family, cell.dnat), []).append(cell)
        for (on, family, dnat), group in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or 0, kv[0][2])):
            head = "match in log" + (f" on {w.iface(on)}" if on else "")
            for dims, labels in w.products(group):
                opts = ([f"tagged {DNAT_TAG}"] if dnat else []) + ([label(", ".join(labels))] if labels else [])
                lines.append(w.rule(head, family, dims, labels, opts, to_self=to_self))
    return lines


def _translation_lines(w: _Writer, low: _Lowered) -> list[str]:
    items = [(note, cell) for note, cells in low.dnat_rules for cell in cells]
    cells = [cell for _, cell in items]
    if w.dialect == "openbsd":
        _check_no_rematch(cells)
    # netfilter, FreeBSD's rdr and (given the check above) OpenBSD's match rules all let the
    # first translation that matches win. When no two targets overlap, order is free and each
    # target's entries merge; otherwise only neighbours with one target merge.
    runs: list[tuple[tuple, list[tuple[str, _Cell]]]] = []
    if _targets_overlap(cells):
        for note, cell in items:
            if runs and runs[-1][0] == cell.target:
                runs[-1][1].append((note, cell))
            else:
                runs.append((cell.target, [(note, cell)]))  # type: ignore[arg-type]
    else:
        by_target: dict[tuple, list[tuple[str, _Cell]]] = {}
        for note, cell in items:
            by_target.setdefault(cell.target, []).append((note, cell))  # type: ignore[arg-type]
        runs = list(by_target.items())
    # `tag fwm_dnat` on every translation rule when a filter rule asks for translated packets
    tag = [f"tag {DNAT_TAG}"] if low.translated_ifaces else []
    lines: list[str] = []
    for (addr, port), members in runs:
        notes = comment("; ".join(dict.fromkeys(note for note, _ in members if note)))
        if notes != "# " and notes not in lines:
            lines.append(notes)
        to = _address(addr) + (f" port {port}" if port is not None else "")
        groups: dict[tuple, list[_Cell]] = {}
        for _, cell in members:
            groups.setdefault((cell.iif, cell.family), []).append(cell)
        for (on, family), group in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or 0)):
            for dims, labels in w.products(group):
                if w.dialect == "openbsd":
                    head = "match in" + (f" on {w.iface(on)}" if on else "")
                    opts = [f"rdr-to {to}"] + tag + ([label(", ".join(labels))] if labels else [])
                    lines.append(w.rule(head, family, dims, labels, opts))
                else:
                    if labels:
                        lines.append(comment(", ".join(labels)))  # rdr rules take no label
                    head = "rdr" + (f" on {w.iface(on)}" if on else "")
                    lines.append(w.rule(head, family, dims, labels, tag + [f"-> {to}"]))  # pf.conf(5): tag before ->
    return lines


def render(ruleset: Ruleset, dialect: str = DEFAULT_DIALECT) -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown pf dialect {dialect!r} (known: {', '.join(DIALECTS)})")
    w = _Writer(dialect)
    try:
        low = _lower(ruleset)
        translation = _translation_lines(w, low)
        local = _input_lines(w, low)
        logs = _log_lines(w, low)
        ins = _filter_lines(w, low, "in")
        outs = _filter_lines(w, low, "out")
    except RenderError as exc:
        firewall = f"firewall '{ruleset.header.firewall}', " if ruleset.header else ""
        raise RenderError(f"pf ({firewall}{dialect}): {exc.message}") from None

    out: list[str] = []
    h = ruleset.header
    if h is not None:
        digest = h.content_hash if HEX_RE.match(h.content_hash) else safe_text(h.content_hash, 64)
        out += [
            comment(f"Generated by {h.generator} from matrix '{h.matrix}' for firewall '{h.firewall}'."),
            f"# matrix sha256: {digest}",
        ]
    if dialect == "openbsd":
        out.append("# pf dialect: openbsd (OpenBSD 4.7 or later: match ... rdr-to, received-on)")
    else:
        out.append("# pf dialect: freebsd (FreeBSD pf, pfSense, OPNsense: rdr ... ->, tags)")
    out += [
        "# Do not edit: change the matrix and compile again. Check it on the firewall with: pfctl -nf FILE",
        "# Every rule is 'quick': the first rule that matches decides, as in a netfilter chain.",
        "# Every pass rule keeps state (pf's default): replies pass by the state table.",
    ]
    if w.macros.by_source:
        out += ["", "# interfaces"]
        out += [f'{macro} = "{iface}"' for iface, macro in sorted(w.macros.by_source.items())]
    if w.tables:
        out += ["", "# address groups"]
        for nets, name in sorted(w.tables.items(), key=lambda kv: int(kv[1].split("_")[1])):
            if w.table_notes[name]:
                out.append(comment(f"{name}: {w.table_notes[name]}"))
            out.append(f"table <{name}> const {{ {' '.join(w.key_text(n) for n in nets)} }}")
    out += ["", f"set skip on {'lo' if dialect == 'openbsd' else 'lo0'}"]
    tagged = [f"# tag {DNAT_TAG}: translated by these rules (netfilter: ct status dnat); a port forward's filter rules pass only such packets"] \
        if translation and low.translated_ifaces else []
    if dialect == "freebsd" and (translation or w.nat_lines):
        # FreeBSD's pfctl wants translation rules before filter rules (require-order).
        if translation:
            out += ["", "# translation (netfilter: prerouting DNAT); the filter rules below see the translated packet"]
            out += tagged + translation
        if w.nat_lines:
            out += ["", "# source NAT (netfilter: postrouting snat/masquerade), each rule tagging what it translates:",
                    "# the out rules below see the new source, and pass what carries the tag"]
            out += w.nat_lines
    out += [
        "",
        "# default: block what no rule passes (netfilter: forward policy drop). This blocks the",
        f"# firewall's own traffic too: rules for it go in anchor \"{LOCAL_ANCHOR}\" (at the end).",
        f"block drop {'log ' if 'forward' in low.log_drops else ''}all",
    ]
    if dialect == "openbsd" and translation:
        out += ["", "# translation (netfilter: prerouting DNAT); the rules after a match rule see the translated packet"]
        out += tagged + translation
    if logs:
        out += ["", "# openings with log: true, their new connections logged to pflog (netfilter: a counted, rate-limited log rule)"]
        out += logs
    if low.state_rules:
        out += ["", "# replies and state, as the forward chain begins:"]
        out += [comment(text) for text in low.state_rules]
    if low.has_ipv6:
        out += [
            "",
            "# IPv6 neighbour discovery of the firewall itself: without it no IPv6 packet is forwarded",
            "pass in quick inet6 proto icmp6 from any to { self ff02::/16 } icmp6-type { neighbrsol neighbradv }",
            "pass out quick inet6 proto icmp6 from self to any icmp6-type { neighbrsol neighbradv }",
        ]
    if local:
        out += ["", "# the firewall's own services (netfilter: the input chain, policy drop); replies pass by state"]
        out += local
    if ins:
        out += [
            "",
            "# forwarded traffic, in on the input interface: a pre-filter, the out rules below decide exactly",
            "# (a packet for the firewall itself that fits one of these passes in, as netfilter's input would take it)"
            if not local else "# (a packet for the firewall itself never gets here: the rules above decide it, as netfilter's input chain)",
        ]
        out += ins
    if outs:
        via = "received-on" if dialect == "openbsd" else "the tag its pass in rule set"
        out += ["", f"# forwarded traffic, out on the output interface, with the input interface ({via})"]
        if dialect == "freebsd" and low.translated_ifaces:
            out.append("# fwm_in_IF_dnat: in on IF and translated; fwm_in_IF: in on IF and not (rules for both kinds say both)")
        out += outs
    out += [
        "",
        f"# the firewall's own traffic (management, DNS, NTP): load rules with pfctl -a {LOCAL_ANCHOR} -f FILE",
        f'anchor "{LOCAL_ANCHOR}"',
    ]
    return "\n".join(out) + "\n"
