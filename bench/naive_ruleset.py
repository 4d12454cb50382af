#!/usr/bin/env python3
"""The naive, hand-written ruleset of a matrix's firewall, as the kernel holds it.

    .venv/bin/python bench/naive_ruleset.py MATRIX [--firewall edge] [--kinds nft,ipt,compiled]
                                           [--cache DIR] [--fresh] [--json]

An administrator who writes a firewall's rules by hand from a connectivity
table writes one rule per row and service, in the order of the table. From
the firewall's intent (`build_intent(load_matrix(MATRIX)).firewalls[NAME]`:
its flows and port forwards) this writes that ruleset:

  nftables (`naive-<hash>.nft`): one `table inet filter` with a forward base
    chain, policy drop, `ct state established,related accept` first, then for
    each flow (opening x interface pair x family) and each of its service
    parts, in matrix order, one rule

        iifname "wan0" oifname "dmz0" ip saddr { ... } ip daddr { ... } tcp dport 443 accept

    (anonymous sets when there are several addresses, a side left out when it
    is the whole address family; `meta l4proto tcp` for every port,
    `meta l4proto icmp`/`ipv6-icmp` for ICMP); and `table ip nat` /
    `table ip6 nat` with a prerouting chain and one `dnat to` rule per port
    forward and service part.
  iptables (`naive-<hash>.v4.rules`, `.v6.rules`, iptables-restore input):
    the same rules, FORWARD policy DROP, the conntrack rule first, `-s a,b -d
    c,d` lists (iptables-restore expands them into one rule per source and
    destination: that is what the kernel then holds), DNAT in nat PREROUTING.
  compiled: what `fwmatrix compile MATRIX --firewall NAME` writes, for
    comparison.

Each text is then loaded the way a firewall would hold it, into a fresh
network namespace of its own (`fwmbench-<pid>-<random>`, deleted right after;
nothing ever goes into the host's own namespace) and read back:

  nft:  `nft -f FILE`, then `nft -j list ruleset` -> `<hash>.json`
  ipt:  `iptables-legacy-restore V4`, `ip6tables-legacy-restore V6`, then
        `iptables-legacy-save` and `ip6tables-legacy-save` concatenated ->
        `<hash>.save` (the listing audited); then the same with the system's
        default, iptables-nft, for its times (minutes from 100,000 rules up:
        `--ipt-nft-timeout`), its listing checked to hold the same lines

with the wall time of each step (the cost of holding the rules that way) and
what the kernel holds. Loads are slow for naive rulesets: nft creates one
anonymous set per address list, and the kernel's cost per new set grows with
the sets already in the table and in the transaction, so 100,000 naive rules
do not load in one transaction within an hour; past --single-timeout they are
loaded in transactions of --chunk rules (the same ruleset, listed the same).
The results are cached by the hash of the loaded text under
/tmp/fwmatrix-bench-cache (or --cache; --fresh loads again). With --json the
paths and the measurements are printed as one JSON object (what
bench/audit_bench.py reads). Needs root for the namespaces.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib as B  # noqa: E402

CACHE_DIR = os.environ.get("FWMATRIX_BENCH_CACHE", "/tmp/fwmatrix-bench-cache")
KINDS = ("nft", "ipt", "compiled")


# -- the naive texts ---------------------------------------------------------------


def _addr(net) -> str:
    return str(net.ip) if net.size == 1 else str(net.cidr)


def _whole_family(nets) -> bool:
    return any(n.prefixlen == 0 for n in nets)


def _nft_addr_match(family: int, direction: str, nets) -> str:
    key = f"{'ip' if family == 4 else 'ip6'} {direction}"
    texts = [_addr(n) for n in nets]
    return f"{key} {texts[0]}" if len(texts) == 1 else f"{key} {{ {', '.join(texts)} }}"


def _nft_service(part, family: int) -> str:
    proto = part.protocol_for_family(family)
    if part.ports is None:  # icmp and friends
        return f"meta l4proto {'ipv6-icmp' if proto == 'icmpv6' else proto}"
    if (part.ports.low, part.ports.high) == (0, 65535):
        return f"meta l4proto {proto}"
    return f"{proto} dport {part.ports}"


def nft_text(fw_intent, title: str = "") -> str:
    lines = [f"# naive hand-written ruleset of firewall '{fw_intent.firewall.name}'{': ' + title if title else ''}",
             "# (bench/naive_ruleset.py: one rule per opening, interface pair, family and service)",
             "table inet filter {", "\tchain forward {", "\t\ttype filter hook forward priority filter; policy drop;",
             "\t\tct state established,related accept"]
    for flow in fw_intent.flows:
        head = [f'iifname "{flow.in_iface}"', f'oifname "{flow.out_iface}"']
        src_full, dst_full = _whole_family(flow.sources), _whole_family(flow.destinations)
        if not src_full:
            head.append(_nft_addr_match(flow.family, "saddr", flow.sources))
        if not dst_full:
            head.append(_nft_addr_match(flow.family, "daddr", flow.destinations))
        if src_full and dst_full:
            head.append(f"meta nfproto {'ipv4' if flow.family == 4 else 'ipv6'}")
        if flow.translated:  # a port forward's target, only through the translation
            head.append("ct status dnat")
        for part in flow.parts:
            lines.append("\t\t" + " ".join(head + [_nft_service(part, flow.family), "accept"]))
    lines += ["\t}", "}"]
    for family in (4, 6):
        dnats = [d for d in fw_intent.dnats if d.family == family]
        if not dnats:
            continue
        lines += [f"table {'ip' if family == 4 else 'ip6'} nat {{", "\tchain prerouting {",
                  "\t\ttype nat hook prerouting priority dstnat; policy accept;"]
        for d in dnats:
            head = [f'iifname "{d.in_iface}"']
            if not _whole_family(d.sources):
                head.append(_nft_addr_match(family, "saddr", d.sources))
            head.append(_nft_addr_match(family, "daddr", [_host_net(d.public)]))
            target = str(d.target) if family == 4 else f"[{d.target}]"
            if d.target_port is not None:
                target += f":{d.target_port}"
            elif family == 6:
                target = str(d.target)
            for part in d.parts:
                lines.append("\t\t" + " ".join(head + [_nft_service(part, family), f"dnat to {target}"]))
        lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def _host_net(address):
    from netaddr import IPNetwork

    return IPNetwork(f"{address}/{32 if address.version == 4 else 128}")


def _ipt_service(part, family: int) -> list[str]:
    proto = part.protocol_for_family(family)
    if part.ports is None:
        return ["-p", "ipv6-icmp" if proto == "icmpv6" else proto]
    if (part.ports.low, part.ports.high) == (0, 65535):
        return ["-p", proto]
    ports = str(part.ports.low) if part.ports.low == part.ports.high else f"{part.ports.low}:{part.ports.high}"
    return ["-p", proto, "-m", proto, "--dport", ports]


def iptables_texts(fw_intent) -> dict[int, str]:
    """family -> iptables-restore input (nat then filter)."""
    out = {}
    for family in (4, 6):
        lines = [f"# naive hand-written {'iptables' if family == 4 else 'ip6tables'} rules of firewall '{fw_intent.firewall.name}'",
                 "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]"]
        for d in fw_intent.dnats:
            if d.family != family:
                continue
            head = ["-A", "PREROUTING", "-i", d.in_iface]
            if not _whole_family(d.sources):
                head += ["-s", ",".join(_addr(n) for n in d.sources)]
            head += ["-d", str(d.public)]
            target = str(d.target) if family == 4 or d.target_port is None else f"[{d.target}]"
            if d.target_port is not None:
                target += f":{d.target_port}"
            for part in d.parts:
                lines.append(" ".join(head + _ipt_service(part, family) + ["-j", "DNAT", "--to-destination", target]))
        lines += ["COMMIT", "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
                  "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
        for flow in fw_intent.flows:
            if flow.family != family:
                continue
            head = ["-A", "FORWARD", "-i", flow.in_iface, "-o", flow.out_iface]
            if not _whole_family(flow.sources):
                head += ["-s", ",".join(_addr(n) for n in flow.sources)]
            if not _whole_family(flow.destinations):
                head += ["-d", ",".join(_addr(n) for n in flow.destinations)]
            translated = ["-m", "conntrack", "--ctstate", "DNAT"] if flow.translated else []
            for part in flow.parts:
                lines.append(" ".join(head + _ipt_service(part, family) + translated + ["-j", "ACCEPT"]))
        lines.append("COMMIT")
        out[family] = "\n".join(lines) + "\n"
    return out


def compiled_text(matrix: str, firewall: str) -> str:
    proc = subprocess.run([os.path.join(B.VENV_BIN, "fwmatrix"), "compile", matrix, "--firewall", firewall],
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"fwmatrix compile failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout


# -- loading and listing -----------------------------------------------------------------


def _digest(*texts: str) -> str:
    """The cache key of what is loaded: comment lines left out (the kernel never sees them)."""
    h = hashlib.sha256()
    for text in texts:
        for line in text.splitlines():
            if not line.lstrip().startswith("#"):
                h.update(line.encode())
                h.update(b"\n")
        h.update(b"\0")
    return h.hexdigest()[:20]


def _write(path: str, text: str) -> None:
    if os.path.exists(path):
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


class TimedOut(RuntimeError):
    pass


def _delete(ns: str) -> None:
    try:
        B.delete_netns(ns)
    except ValueError:
        pass  # already deleted by benchlib's cleanup (on a signal)


def _step(argv: list[str], timeout: float) -> dict:
    run = B.measure(argv, timeout)
    if run.timed_out:
        raise TimedOut(f"{' '.join(argv[4:])[:120]}: timed out after {timeout:.0f} s")
    if not run.ok:
        raise RuntimeError(f"{' '.join(argv[4:])[:120]}: {run.error_line()}")
    return {"wall": run.wall, "maxrss_kb": run.maxrss_kb}


def nft_chunks(text: str, size: int) -> list[str]:
    """The same ruleset as several `nft -f` files (transactions): the tables with the
    first `size` forward rules, then `add rule inet filter forward ...` files of `size` rules."""
    lines = text.splitlines()
    start = lines.index("\t\tct state established,related accept")
    end = lines.index("\t}", start)
    rules = lines[start:end]
    first = lines[:start] + rules[:size] + lines[end:]
    out = ["\n".join(first) + "\n"]
    for i in range(size, len(rules), size):
        out.append("".join(f"add rule inet filter forward {rule.strip()}\n" for rule in rules[i:i + size]))
    return out


def load_nft(paths: list[str], listing: str, timeout: float) -> dict:
    """nft -f (each file in turn, one transaction each) into a fresh namespace, then
    nft -j list ruleset into `listing`."""
    ns = B.create_netns()
    try:
        load = {"wall": 0.0, "maxrss_kb": 0, "transactions": len(paths)}
        for path in paths:
            one = _step(["ip", "netns", "exec", ns, "nft", "-f", path], timeout)
            load["wall"] += one["wall"]
            load["maxrss_kb"] = max(load["maxrss_kb"], one["maxrss_kb"])
        tmp = f"{listing}.{os.getpid()}.tmp"
        lst = _step(["ip", "netns", "exec", ns, "sh", "-c", 'nft -j list ruleset > "$1"', "sh", tmp], timeout)
        os.replace(tmp, listing)
    finally:
        _delete(ns)
    rules = sets = elements = 0
    with open(listing, encoding="utf-8") as handle:
        for item in json.load(handle)["nftables"]:
            if "rule" in item:
                rules += 1
            elif "set" in item or "map" in item:
                sets += 1
                elements += len((item.get("set") or item.get("map")).get("elem", []))
    return {"load": load, "list": lst, "rules": rules, "named_sets": sets, "set_elements": elements,
            "bytes": os.path.getsize(listing)}


IPT_TOOLS = {  # variant -> (restore v4, restore v6, save v4, save v6)
    "nft": ("iptables-nft-restore", "ip6tables-nft-restore", "iptables-nft-save", "ip6tables-nft-save"),
    "legacy": ("iptables-legacy-restore", "ip6tables-legacy-restore", "iptables-legacy-save", "ip6tables-legacy-save"),
}


def load_ipt(v4: str, v6: str, saved: str, timeout: float, variant: str) -> dict:
    """iptables-restore and ip6tables-restore (of `variant`) into a fresh namespace,
    then iptables-save + ip6tables-save into `saved`."""
    restore4, restore6, save4, save6 = IPT_TOOLS[variant]
    ns = B.create_netns()
    try:
        load4 = _step(["ip", "netns", "exec", ns, restore4, v4], timeout)
        load6 = _step(["ip", "netns", "exec", ns, restore6, v6], timeout)
        tmp = f"{saved}.{os.getpid()}.tmp"
        lst = _step(["ip", "netns", "exec", ns, "sh", "-c", f'{save4} > "$1" && {save6} >> "$1"', "sh", tmp], timeout)
        os.replace(tmp, saved)
    finally:
        _delete(ns)
    rules = {4: 0, 6: 0}
    family = 4
    with open(saved, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("# Generated by"):
                family = 6 if "ip6tables" in line else 4
            elif line.startswith("-A "):
                rules[family] += 1
    return {"variant": variant,
            "load": {"wall": load4["wall"] + load6["wall"], "maxrss_kb": max(load4["maxrss_kb"], load6["maxrss_kb"]),
                     "v4": load4["wall"], "v6": load6["wall"]},
            "list": lst, "rules": rules[4] + rules[6], "rules_v4": rules[4], "rules_v6": rules[6],
            "bytes": os.path.getsize(saved)}


def _same_rules(a: str, b: str) -> bool:
    """Two iptables-save files say the same (comment lines, e.g. the tool's name and the date, aside)."""
    with open(a, encoding="utf-8") as fa, open(b, encoding="utf-8") as fb:
        la = (line for line in fa if not line.startswith("#"))
        lb = (line for line in fb if not line.startswith("#"))
        return all(x == y for x, y in zip(la, lb, strict=True))


def _cached(meta_path: str, fresh: bool) -> dict | None:
    if fresh or not os.path.exists(meta_path):
        return None
    with open(meta_path, encoding="utf-8") as handle:
        return json.load(handle)


def _save_meta(meta_path: str, meta: dict) -> None:
    tmp = f"{meta_path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(meta, handle, indent=1)
    os.replace(tmp, meta_path)


def prepare(matrix: str, firewall: str = "edge", kinds: tuple[str, ...] = KINDS, cache: str = CACHE_DIR,
            fresh: bool = False, timeout: float = 3600, single_timeout: float | None = None, chunk: int = 10_000,
            ipt_nft_timeout: float = 1800, generated: bool = False) -> dict:
    """Write the texts, load them (unless cached) and return {kind: meta} with the paths.
    With `generated`, the naive listings are written directly (naive_listing.py), not loaded."""
    from fwmatrix.compile.intent import build_intent
    from fwmatrix.matrix.loader import load_matrix

    if single_timeout is None:
        single_timeout = timeout
    os.makedirs(cache, exist_ok=True)
    out: dict[str, dict] = {}
    fw_intent = None
    if "nft" in kinds or "ipt" in kinds:
        intent = build_intent(load_matrix(matrix))
        fw_intent = intent.firewalls[firewall]
        source = {"flows": len(fw_intent.flows), "dnats": len(fw_intent.dnats),
                  "openings": len({f.opening.index for f in fw_intent.flows}),
                  "parts": sum(len(f.parts) for f in fw_intent.flows) + sum(len(d.parts) for d in fw_intent.dnats)}
    if generated and fw_intent is not None:  # only naive kinds are generated; `compiled` alone needs none
        out.update(_generated(fw_intent, [k for k in kinds if k in ("nft", "ipt")], cache, source))
        kinds = tuple(k for k in kinds if k == "compiled")
    if "nft" in kinds:
        assert fw_intent is not None
        text = nft_text(fw_intent, f"matrix '{intent.matrix.name}'")
        key = _digest(text)
        base = os.path.join(cache, f"naive-{key}")
        _write(base + ".nft", text)
        meta = _cached(base + ".meta.json", fresh)
        if meta is None:
            single: dict = {}
            meta = None
            if single_timeout > 0:
                B.log(f"  nft -f {os.path.basename(base)}.nft ({text.count(chr(10)):,} lines) into a fresh namespace ...")
                try:
                    meta = load_nft([base + ".nft"], base + ".json", single_timeout)
                except TimedOut:
                    if not chunk:
                        raise
                    single = {"timed_out_after": single_timeout, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
                    B.log(f"  one transaction timed out after {single_timeout:.0f} s: loading in transactions of {chunk:,} rules")
            else:
                single = {"skipped": True}
            if meta is None:
                paths = []
                for i, chunk_text in enumerate(nft_chunks(text, chunk or 10_000)):
                    paths.append(f"{base}.part{i:03d}.nft")
                    _write(paths[-1], chunk_text)
                B.log(f"  nft -f {os.path.basename(base)}.part*.nft ({len(paths)} transactions) into a fresh namespace ...")
                meta = load_nft(paths, base + ".json", timeout)
                meta["single_transaction"] = single
            meta.update(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), text_bytes=len(text.encode()), intent=source)
            _save_meta(base + ".meta.json", meta)
        else:
            meta["cached"] = True
        meta.update(text=base + ".nft", ruleset=base + ".json")
        out["nft"] = meta
    if "ipt" in kinds:
        assert fw_intent is not None
        texts = iptables_texts(fw_intent)
        key = _digest(texts[4], texts[6])
        base = os.path.join(cache, f"naive-{key}")
        _write(base + ".v4.rules", texts[4])
        _write(base + ".v6.rules", texts[6])
        meta = _cached(base + ".meta.json", fresh)
        if meta is None:
            # The listing audited comes from iptables-legacy (fast); the system's default
            # variant, iptables-nft, is loaded and listed too, for its times (minutes from
            # 100,000 rules up), and its listing is checked to say the same.
            B.log(f"  iptables-legacy-restore / ip6tables-legacy-restore {os.path.basename(base)}.v4/.v6.rules into a fresh namespace ...")
            meta = load_ipt(base + ".v4.rules", base + ".v6.rules", base + ".save", timeout, "legacy")
            meta.update(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), text_bytes=len(texts[4].encode()) + len(texts[6].encode()),
                        text_lines=texts[4].count("\n-A ") + texts[6].count("\n-A "), intent=source)
            if ipt_nft_timeout > 0:
                B.log(f"  iptables-nft-restore / ip6tables-nft-restore {os.path.basename(base)}.v4/.v6.rules into a fresh namespace ...")
                other = base + ".nft-variant.save"
                try:
                    nft_variant = load_ipt(base + ".v4.rules", base + ".v6.rules", other, ipt_nft_timeout, "nft")
                    nft_variant["same_listing"] = _same_rules(base + ".save", other)
                    os.unlink(other)
                except TimedOut as exc:
                    nft_variant = {"timed_out": str(exc), "timed_out_after": ipt_nft_timeout}
                meta["nft_variant"] = nft_variant
            _save_meta(base + ".meta.json", meta)
        else:
            meta["cached"] = True
        meta.update(text=base + ".v4.rules", text6=base + ".v6.rules", ruleset=base + ".save")
        out["ipt"] = meta
    if "compiled" in kinds:
        text = compiled_text(matrix, firewall)
        key = _digest(text)
        base = os.path.join(cache, f"compiled-{key}")
        _write(base + ".nft", text)
        meta = _cached(base + ".meta.json", fresh)
        if meta is None:
            B.log(f"  nft -f {os.path.basename(base)}.nft (fwmatrix compile) into a fresh namespace ...")
            meta = load_nft([base + ".nft"], base + ".json", timeout)
            meta.update(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), text_bytes=len(text.encode()))
            _save_meta(base + ".meta.json", meta)
        else:
            meta["cached"] = True
        meta.update(text=base + ".nft", ruleset=base + ".json")
        out["compiled"] = meta
    return out


def _generated(fw_intent, kinds: list[str], cache: str, source: dict) -> dict[str, dict]:
    """The naive listings written directly, as the kernel lists them (naive_listing.py): no load."""
    from naive_listing import nft_listing, save_listing  # noqa: F401 (bench/ is on the path)

    out: dict[str, dict] = {}
    for kind in kinds:
        started = time.perf_counter()
        if kind == "nft":
            listing = nft_listing(fw_intent)
            text = json.dumps(listing)
            rules = sum(1 for item in listing["nftables"] if "rule" in item)
            suffix = ".json"
        else:
            text = save_listing(fw_intent)
            rules = text.count("\n-A ")
            suffix = ".save"
        base = os.path.join(cache, f"generated-{kind}-{_digest(text)}")
        _write(base + suffix, text)
        out[kind] = {"generated": True, "rules": rules, "bytes": len(text.encode()), "intent": source,
                     "write_seconds": time.perf_counter() - started, "ruleset": base + suffix,
                     "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    return out


def verify(matrix: str, firewall: str, kinds: tuple[str, ...], cache: str, timeout: float) -> list[str]:
    """The generated listings against the kernel's own (loaded and listed): the differences, if any."""
    listed = prepare(matrix, firewall, kinds, cache, fresh=False, timeout=timeout, ipt_nft_timeout=0)
    made = prepare(matrix, firewall, kinds, cache, generated=True)
    problems = []
    for kind in kinds:
        with open(listed[kind]["ruleset"], encoding="utf-8") as a, open(made[kind]["ruleset"], encoding="utf-8") as b:
            if kind == "nft":
                from naive_listing import same_sets

                real, made_listing = json.load(a), json.load(b)
                same = real == made_listing or same_sets(real) == same_sets(made_listing)
            else:  # comment lines carry the tool's date
                same = [x for x in a if not x.startswith("#")] == [y for y in b if not y.startswith("#")]
        if not same:
            problems.append(f"{kind}: the generated listing {made[kind]['ruleset']} differs from the kernel's {listed[kind]['ruleset']}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("matrix")
    parser.add_argument("--firewall", default="edge")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    parser.add_argument("--cache", default=CACHE_DIR)
    parser.add_argument("--fresh", action="store_true", help="load again even when a cached listing exists")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per load or listing")
    parser.add_argument("--single-timeout", type=float, help="seconds for the naive nft ruleset's load in one "
                        "transaction (default: --timeout; 0: do not try); past it, it is loaded in several")
    parser.add_argument("--chunk", type=int, default=10_000, help="rules per transaction when one transaction "
                        "is too slow (0: fail instead)")
    parser.add_argument("--ipt-nft-timeout", type=float, default=1800, help="seconds for each step of the iptables-nft "
                        "load and listing, measured next to the iptables-legacy one (0: skip it)")
    parser.add_argument("--generated", action="store_true", help="write the naive listings directly, as the kernel "
                        "lists them (no load; bench/naive_listing.py)")
    parser.add_argument("--verify", action="store_true", help="load the naive rulesets and compare the kernel's "
                        "listings with the generated ones (exit 1 when they differ)")
    parser.add_argument("--json", action="store_true", help="print the paths and measurements as JSON")
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kind(s): {', '.join(sorted(unknown))}")
    why = B.kernel_available() if args.verify or not args.generated or "compiled" in kinds else None
    if why is not None:
        B.log(f"error: loading needs the kernel: {why}")
        return 2
    if args.verify:
        problems = verify(args.matrix, args.firewall, tuple(k for k in kinds if k != "compiled"), args.cache, args.timeout)
        for problem in problems:
            B.log(problem)
        print("the generated listings are the kernel's" if not problems else "the generated listings differ")
        return 1 if problems else 0
    result = prepare(args.matrix, args.firewall, kinds, args.cache, args.fresh, args.timeout, args.single_timeout, args.chunk,
                     args.ipt_nft_timeout, args.generated)
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    else:
        for kind, meta in result.items():
            how = (f"written directly in {meta['write_seconds']:.2f} s" if meta.get("generated") else
                   f"load {meta['load']['wall']:.2f} s  list {meta['list']['wall']:.2f} s{'  (cached)' if meta.get('cached') else ''}")
            print(f"{kind}: {meta['ruleset']}  rules {meta['rules']:,}  {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
