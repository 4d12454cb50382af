"""`fwmatrix compile` of one opening with a huge service or group, per backend: the
iptables lowering must stay near nftables (issue 11: 10,000 single ports or 20,000
/32 hosts took over 120 s with iptables, under 2 s with nftables).

    .venv/bin/python bench/iptables_scale.py [--ports 10000] [--hosts 20000] [--timeout 300]

Prints a Markdown table of wall-clock seconds (one run each; the machine is shared,
so compare backends within a run). Standard library only; matrices in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

BASE = """\
fwmatrix: 1
name: scale
zones:
  internet: any
  lan: 10.0.0.0/8
{extra}firewalls:
  edge:
    interfaces:
      wan0: internet
      lan0: lan
openings:
  - from: {source}
    to: internet
    service: {service}
"""


def many_ports(count: int) -> str:
    """A service of `count` single ports, none adjacent (nothing merges into a range)."""
    ports = ", ".join(f"tcp/{port}" for port in range(1, 2 * count, 2))
    return BASE.format(extra=f"services:\n  many: [{ports}]\n", source="lan", service="many")


def many_hosts(count: int) -> str:
    """A group of `count` /32 hosts, none adjacent (nothing merges into a shorter prefix)."""
    def address(i: int) -> str:
        n = 2 * i
        return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    hosts = "".join(f"  h{i}: {address(i)}\n" for i in range(count))
    members = ", ".join(f"h{i}" for i in range(count))
    return BASE.format(extra=f"hosts:\n{hosts}groups:\n  many: [{members}]\n", source="many", service="tcp/443")


def timed(matrix: str, backend: str, timeout: float) -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "fwmatrix")
    start = time.monotonic()
    try:
        proc = subprocess.run([exe, "compile", matrix, "-b", backend], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"> {timeout:g}"
    elapsed = time.monotonic() - start
    return f"{elapsed:.2f}" if proc.returncode == 0 else f"failed ({proc.returncode})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=20_000)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    cases = {f"service of {args.ports} single ports": many_ports(args.ports), f"group of {args.hosts} /32 hosts": many_hosts(args.hosts)}
    print("| case | iptables s | nftables s |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for label, text in cases.items():
            path = os.path.join(folder, "matrix.yaml")
            with open(path, "w", encoding="utf-8") as out:
                out.write(text)
            print(f"| {label} | {timed(path, 'iptables', args.timeout)} | {timed(path, 'nftables', args.timeout)} |", flush=True)


if __name__ == "__main__":
    main()
