"""The naive rulesets of bench/naive_ruleset.py as the kernel lists them, written
directly: no namespace, no load. Loading 100,000 naive rules into a kernel takes
hours (one anonymous set per address list), so the audit benchmark audits these.

  nft_listing(fw_intent)   what `nft -j list ruleset` prints after `nft -f` of
                           naive_ruleset.nft_text(fw_intent) (a dict);
  save_listing(fw_intent)  what `iptables-save` + `ip6tables-save` print after
                           iptables-restore of naive_ruleset.iptables_texts(fw_intent).

What the kernel does to the text and these reproduce: anonymous address sets are
interval sets, sorted, with overlapping elements merged (adjacent ones not), each listed
as an address, a prefix or a range; handles count up per table, an anonymous set
taking one before its rule; iptables-restore expands `-s a,b -d c,d` into one
rule per source and destination, and iptables-save puts `-s`/`-d` before
`-i`/`-o`, addresses with their prefix length, the tables filter before nat.
One quirk is not reproduced: nft 1.0.6 sometimes joins two adjacent elements of
an anonymous set into one range, depending on the order they were written in
(8 of 14,886 rules at 10,000 openings); the set is the same. bench/naive_ruleset.py
--verify compares both listings with the kernel's: equal, or equal but for that
(`same_sets`); tests/test_bench_listing.py does it for a small matrix.
"""

from __future__ import annotations

from netaddr import IPAddress, IPNetwork, IPRange

NFT_META = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}


def _whole_family(nets) -> bool:
    return any(isinstance(n, IPNetwork) and n.prefixlen == 0 for n in nets)


def _intervals(nets) -> list[tuple[int, int]]:
    """The addresses as intervals, sorted, overlapping ones joined (adjacent ones stay apart)."""
    out: list[list[int]] = []
    for low, high in sorted((n.first, n.last) for n in nets):
        if out and low <= out[-1][1]:
            out[-1][1] = max(out[-1][1], high)
        else:
            out.append([low, high])
    return [(low, high) for low, high in out]


def _interval_value(low: int, high: int, version: int):
    """An interval as nft lists it: an address, a prefix, or a range."""
    if low == high:
        return str(IPAddress(low, version))
    size = high - low + 1
    if size & (size - 1) == 0 and low % size == 0:
        bits = 32 if version == 4 else 128
        return {"prefix": {"addr": str(IPAddress(low, version)), "len": bits - size.bit_length() + 1}}
    return {"range": [str(IPAddress(low, version)), str(IPAddress(high, version))]}


def _match(left: dict, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> dict:
    return {"payload": {"protocol": protocol, "field": field}}


class _Table:
    """One table's listing: its objects, and its handle counter (chains, sets and rules share it)."""

    def __init__(self, family: str, name: str, handle: int):
        self.family, self.name = family, name
        self.items: list[dict] = [{"table": {"family": family, "name": name, "handle": handle}}]
        self.next_handle = 1

    def take(self) -> int:
        handle = self.next_handle
        self.next_handle += 1
        return handle

    def chain(self, name: str, kind: str, hook: str, prio: int, policy: str) -> None:
        self.items.append({"chain": {"family": self.family, "table": self.name, "name": name, "handle": self.take(),
                                     "type": kind, "hook": hook, "prio": prio, "policy": policy}})

    def addr_match(self, version: int, field: str, nets) -> dict:
        """`ip saddr X` or `ip saddr { ... }` (an anonymous set, which takes a handle)."""
        left = _payload("ip" if version == 4 else "ip6", field)
        if len(nets) == 1:
            net = nets[0]
            low, high = (net.first, net.last)
            return _match(left, _interval_value(low, high, version))
        self.take()
        return _match(left, {"set": [_interval_value(low, high, version) for low, high in _intervals(nets)]})

    def rule(self, chain: str, expr: list[dict]) -> None:
        self.items.append({"rule": {"family": self.family, "table": self.name, "chain": chain, "handle": self.take(), "expr": expr}})


def _nft_service(part, version: int) -> dict:
    proto = part.protocol_for_family(version)
    if part.ports is None or (part.ports.low, part.ports.high) == (0, 65535):
        return _match(_meta("l4proto"), "ipv6-icmp" if proto == "icmpv6" else proto)
    port = part.ports.low if part.ports.low == part.ports.high else {"range": [part.ports.low, part.ports.high]}
    return _match(_payload(proto, "dport"), port)


def nft_listing(fw_intent) -> dict:
    """`nft -j list ruleset` of the naive nftables ruleset (see naive_ruleset.nft_text)."""
    handles = iter(range(1, 4))
    filt = _Table("inet", "filter", next(handles))
    filt.chain("forward", "filter", "forward", 0, "drop")
    filt.rule("forward", [_match({"ct": {"key": "state"}}, ["established", "related"], "in"), {"accept": None}])
    for flow in fw_intent.flows:
        head = [_match(_meta("iifname"), flow.in_iface), _match(_meta("oifname"), flow.out_iface)]
        src_full, dst_full = _whole_family(flow.sources), _whole_family(flow.destinations)
        for part in flow.parts:  # the text's head is shared, but each rule has sets of its own
            expr = list(head)
            if not src_full:
                expr.append(filt.addr_match(flow.family, "saddr", list(flow.sources)))
            if not dst_full:
                expr.append(filt.addr_match(flow.family, "daddr", list(flow.destinations)))
            if src_full and dst_full:
                expr.append(_match(_meta("nfproto"), "ipv4" if flow.family == 4 else "ipv6"))
            if flow.translated:
                expr.append(_match({"ct": {"key": "status"}}, "dnat", "in"))
            filt.rule("forward", expr + [_nft_service(part, flow.family), {"accept": None}])
    items = [NFT_META] + filt.items
    for version in (4, 6):
        dnats = [d for d in fw_intent.dnats if d.family == version]
        if not dnats:
            continue
        nat = _Table("ip" if version == 4 else "ip6", "nat", next(handles))
        nat.chain("prerouting", "nat", "prerouting", -100, "accept")
        for d in dnats:
            for part in d.parts:
                expr = [_match(_meta("iifname"), d.in_iface)]
                if not _whole_family(d.sources):
                    expr.append(nat.addr_match(version, "saddr", list(d.sources)))
                public = IPAddress(str(d.public))
                expr.append(_match(_payload(nat.family, "daddr"), str(public)))
                target: dict = {"addr": str(IPAddress(str(d.target)))}
                if d.target_port is not None:
                    target["port"] = d.target_port
                nat.rule("prerouting", expr + [_nft_service(part, version), {"dnat": target}])
        items += nat.items
    return {"nftables": items}


def _save_addr(low: int, high: int, version: int) -> list[str]:
    """An address list element as iptables-save prints it: CIDRs with their length."""
    bits = 32 if version == 4 else 128
    if low == high:
        return [f"{IPAddress(low, version)}/{bits}"]
    return [f"{c.ip}/{c.prefixlen}" for c in IPRange(IPAddress(low, version), IPAddress(high, version)).cidrs()]


def _save_nets(nets, version: int) -> list[str]:
    """The elements of `-s a,b,c` in order (iptables-restore keeps the order it was given)."""
    out = []
    for net in nets:
        out += _save_addr(net.first, net.last, version)
    return out


def _save_service(part, version: int) -> str:
    proto = part.protocol_for_family(version)
    if proto == "icmpv6":
        proto = "ipv6-icmp"
    if part.ports is None or (part.ports.low, part.ports.high) == (0, 65535):
        return f"-p {proto}"
    ports = str(part.ports.low) if part.ports.low == part.ports.high else f"{part.ports.low}:{part.ports.high}"
    return f"-p {proto} -m {proto} --dport {ports}"


def _save_family(fw_intent, version: int, stamp: str) -> list[str]:
    tool = "iptables-save" if version == 4 else "ip6tables-save"
    lines = [f"# Generated by {tool} v1.8.9 on {stamp}", "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]",
             ":OUTPUT ACCEPT [0:0]", "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    for flow in fw_intent.flows:
        if flow.family != version:
            continue
        sources = [None] if _whole_family(flow.sources) else _save_nets(flow.sources, version)
        destinations = [None] if _whole_family(flow.destinations) else _save_nets(flow.destinations, version)
        tail = " -m conntrack --ctstate DNAT -j ACCEPT" if flow.translated else " -j ACCEPT"
        for part in flow.parts:
            service = _save_service(part, version)
            for src in sources:
                for dst in destinations:
                    addr = (f" -s {src}" if src else "") + (f" -d {dst}" if dst else "")
                    lines.append(f"-A FORWARD{addr} -i {flow.in_iface} -o {flow.out_iface} {service}{tail}")
    lines += ["COMMIT", f"# Completed on {stamp}", f"# Generated by {tool} v1.8.9 on {stamp}", "*nat",
              ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
    bits = 32 if version == 4 else 128
    for d in fw_intent.dnats:
        if d.family != version:
            continue
        sources = [None] if _whole_family(d.sources) else _save_nets(d.sources, version)
        target = str(IPAddress(str(d.target)))
        if d.target_port is not None:
            target = f"{target}:{d.target_port}" if version == 4 else f"[{target}]:{d.target_port}"
        for part in d.parts:
            for src in sources:
                addr = (f" -s {src}" if src else "") + f" -d {IPAddress(str(d.public))}/{bits}"
                lines.append(f"-A PREROUTING{addr} -i {d.in_iface} {_save_service(part, version)} -j DNAT --to-destination {target}")
    lines += ["COMMIT", f"# Completed on {stamp}"]
    return lines


def save_listing(fw_intent, stamp: str = "Thu Jan  1 00:00:00 1970") -> str:
    """`iptables-save` + `ip6tables-save` of the naive iptables rules (see naive_ruleset.iptables_texts)."""
    return "\n".join(_save_family(fw_intent, 4, stamp) + _save_family(fw_intent, 6, stamp)) + "\n"


def same_sets(listing: dict) -> dict:
    """The listing with every anonymous address set as its merged intervals (adjacent
    elements joined): what stays when nft's joining quirk is taken out."""

    def normal(value):
        if isinstance(value, dict) and "set" in value and all(isinstance(e, (str, dict)) for e in value["set"]):
            try:
                nets = [_as_range(e) for e in value["set"]]
            except (ValueError, KeyError, TypeError):
                return value
            merged: list[list[int]] = []
            for low, high in sorted(nets):
                if merged and low <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], high)
                else:
                    merged.append([low, high])
            return {"set": merged}
        if isinstance(value, dict):
            return {k: normal(v) for k, v in value.items()}
        if isinstance(value, list):
            return [normal(v) for v in value]
        return value

    return normal(listing)


def _as_range(element) -> tuple[int, int]:
    if isinstance(element, str):
        address = IPAddress(element)
        return (int(address), int(address))
    if "prefix" in element:
        net = IPNetwork(f"{element['prefix']['addr']}/{element['prefix']['len']}")
        return (net.first, net.last)
    low, high = element["range"]
    return (int(IPAddress(low)), int(IPAddress(high)))
