"""`fwmatrix audit` of rulesets shaped as tools and people write them, at growing sizes: the
audit must stay linear in each. Shapes:

- kube-proxy (iptables mode): a chain per service and per endpoint, reached by jumps, a
  statistic match (unmodelled: judged both ways) per endpoint but the last. A scan of the
  table per jump and an intersection per unmodelled rule per finding made it quadratic
  (4,000 services 16.1 s, n^1.65).
- fail2ban: one chain of a REJECT per banned host before the accepts, jumped to after
  `ct state established,related accept`; the excess left is the internet minus every banned
  host (a region of as many intervals). The bans hold new connections only, and cut the
  accepts one after the other until they were swept within their states (40,000 bans 22.3 s,
  n^1.8).
- blocklist (nftables): a set of source networks dropped before the accepts; each accept is
  the internet minus all of them.

    .venv/bin/python bench/shapes_bench.py [--shape kube-proxy|fail2ban|blocklist] [--sizes 1000,2000,4000,8000] [--before TREE]

Prints a Markdown table of CPU seconds of the whole `fwmatrix audit` (one run each: compare
sizes and trees within a run) and the growth exponent between the two largest sizes.
Standard library only; the matrix and the iptables-save files go to a temporary folder.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import tempfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
MATRIX = """\
fwmatrix: 1
name: kube
zones:
  internet: any
  pods: 10.244.0.0/16
firewalls:
  node:
    interfaces:
      eth0: internet
      cni0: pods
openings:
  - from: internet
    to: pods
    service: tcp/8080
"""


def kube_proxy_save(services: int) -> str:
    """An iptables-save of `services` ClusterIP services, two endpoints each, as kube-proxy
    (iptables mode) lays them out: nat KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* (DNAT),
    filter FORWARD -> KUBE-FORWARD."""
    nat_chains, nat_rules = [], []
    for i in range(services):
        svc = f"KUBE-SVC-{i:016X}"
        cluster_ip = f"10.96.{i // 250}.{i % 250 + 1}"
        nat_chains.append(f":{svc} - [0:0]")
        nat_rules.append(f'-A KUBE-SERVICES -d {cluster_ip}/32 -p tcp -m comment --comment "ns/svc{i}:http cluster IP" '
                         f"-m tcp --dport 80 -j {svc}")
        for e in range(2):
            sep = f"KUBE-SEP-{i:015X}{e}"
            pod = f"10.244.{(2 * i + e) // 250}.{(2 * i + e) % 250 + 1}"
            nat_chains.append(f":{sep} - [0:0]")
            pick = "-m statistic --mode random --probability 0.50000000000 " if e == 0 else ""
            nat_rules.append(f'-A {svc} -m comment --comment "ns/svc{i}:http -> {pod}:8080" {pick}-j {sep}')
            nat_rules.append(f'-A {sep} -s {pod}/32 -m comment --comment "ns/svc{i}:http" -j KUBE-MARK-MASQ')
            nat_rules.append(f'-A {sep} -p tcp -m comment --comment "ns/svc{i}:http" -m tcp -j DNAT --to-destination {pod}:8080')
    return "\n".join([
        "*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]", ":POSTROUTING ACCEPT [0:0]",
        ":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]", *nat_chains,
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
        *nat_rules, "COMMIT",
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]", ":KUBE-FORWARD - [0:0]",
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
        "-A FORWARD -i eth0 -o cni0 -d 10.244.0.0/16 -p tcp -m tcp --dport 8080 -j ACCEPT",
        "COMMIT", ""])


def fail2ban_save(bans: int) -> str:
    """An iptables-save with a fail2ban chain of `bans` banned hosts (scattered, seeded) on the web
    ports, returned from before 201 accepts to the pods."""
    pick = random.Random(1)
    banned = [f"-A f2b-web -s {pick.randrange(1, 223)}.{pick.randrange(256)}.{pick.randrange(256)}.{pick.randrange(256)}/32 "
              "-j REJECT --reject-with icmp-port-unreachable" for _ in range(bans)]
    accepts = [f"-A FORWARD -i eth0 -o cni0 -d 10.244.{i}.0/24 -p tcp -m tcp --dport 8080 -j ACCEPT" for i in range(200)]
    return "\n".join([
        "*filter", ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]", ":f2b-web - [0:0]",
        "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A FORWARD -p tcp -m multiport --dports 80,443 -j f2b-web",
        *banned, "-A f2b-web -j RETURN", *accepts,
        "-A FORWARD -i eth0 -o cni0 -d 10.244.0.0/16 -p tcp -m multiport --dports 80,443 -j ACCEPT",
        "COMMIT", ""])


def blocklist_nft(networks: int) -> str:
    """An nftables ruleset (`nft list ruleset` text) that drops the sources of a blocklist set of
    `networks` scattered /24s (seeded) before 201 accepts to the pods."""
    pick = random.Random(2)
    starts = sorted({pick.randrange(1, 223) << 16 | pick.randrange(1 << 16) for _ in range(networks)})
    elements = ", ".join(f"{s >> 16}.{s >> 8 & 255}.{s & 255}.0/24" for s in starts)
    accepts = [f'\t\tiifname "eth0" oifname "cni0" ip daddr 10.244.{i}.0/24 tcp dport 8080 accept' for i in range(200)]
    return "\n".join([
        "table inet filter {", "\tset blocklist {", "\t\ttype ipv4_addr", "\t\tflags interval",
        f"\t\telements = {{ {elements} }}", "\t}", "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy drop;", "\t\tct state established,related accept",
        "\t\tip saddr @blocklist drop", *accepts,
        '\t\tiifname "eth0" oifname "cni0" ip daddr 10.244.0.0/16 tcp dport { 80, 443 } accept', "\t}", "}", ""])


SHAPES = {"kube-proxy": (kube_proxy_save, "services", lambda n: 3 * n + 8, "chains"),
          "fail2ban": (fail2ban_save, "banned hosts", lambda n: n + 204, "rules"),
          "blocklist": (blocklist_nft, "networks", lambda n: n, "set elements")}


def cpu_of(argv: list[str]) -> tuple[float, int]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime, os.waitstatus_to_exitcode(status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="kube-proxy")
    parser.add_argument("--sizes", default="1000,2000,4000,8000", help="comma-separated sizes (services, banned hosts)")
    parser.add_argument("--before", metavar="TREE", help="also audit with the code of TREE (bench/_at_tree.py)")
    args = parser.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    make, unit, count, counted = SHAPES[args.shape]
    trees = [("now", None)] + ([("before", args.before)] if args.before else [])
    rows: dict[str, list[float]] = {label: [] for label, _ in trees}
    with tempfile.TemporaryDirectory() as work:
        matrix = os.path.join(work, "kube.yaml")
        with open(matrix, "w", encoding="utf-8") as handle:
            handle.write(MATRIX)
        for n in sizes:
            ruleset = os.path.join(work, f"{args.shape}-{n}" + (".nft" if args.shape == "blocklist" else ".save"))
            with open(ruleset, "w", encoding="utf-8") as handle:
                handle.write(make(n))
            for label, tree in trees:
                command = [sys.executable, os.path.join(BENCH_DIR, "_at_tree.py"), tree] if tree else [sys.executable, "-m", "fwmatrix"]
                seconds, code = cpu_of(command + ["audit", matrix, "--firewall", "node", "--ruleset", ruleset, "--format", "json",
                                                  "-o", os.path.join(work, f"{label}-{n}.json")])
                if code not in (0, 1):
                    print(f"error: audit of {n} {unit} ({label}) exited {code}", file=sys.stderr)
                    return 2
                rows[label].append(seconds)
    print(f"{args.shape}\n\n| {unit} | {counted} | " + " | ".join(f"{label}: CPU s" for label in rows) + " |")
    print("|---:|---:|" + "---:|" * len(rows))
    for at, n in enumerate(sizes):
        print(f"| {n:,} | {count(n):,} | " + " | ".join(f"{rows[label][at]:.2f}" for label in rows) + " |")
    if len(sizes) > 1:
        growth = {label: math.log(v[-1] / v[-2]) / math.log(sizes[-1] / sizes[-2]) for label, v in rows.items()}
        print("\ngrowth exponent between the two largest sizes: " + ", ".join(f"{label} n^{g:.2f}" for label, g in growth.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
