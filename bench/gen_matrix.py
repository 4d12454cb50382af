#!/usr/bin/env python3
"""A deterministic generator of realistic fwmatrix matrices, for benchmarks.

    python bench/gen_matrix.py N [--seed S] [--firewalls 1|2] [-o FILE]

writes a matrix of exactly N openings (to standard output without -o). The
same N, seed and firewall count always give the same bytes.

What it looks like:
  - zones: `internet` (any), three DMZs (web, ext and int sides of the
    proxies), three LANs (office, servers, management); the web DMZ and the
    office LAN are dual-stack (IPv4 and IPv6); with two firewalls a transit
    zone joins them;
  - firewalls: one `edge` with an interface to every zone, or (--firewalls 2)
    `edge` (internet, DMZs) and `core` (LANs) in a row, joined by `transit`;
    `edge` owns several public IPv4 addresses and two IPv6 ones;
  - about N/4 hosts: single addresses, dual-stack address lists, named
    addresses (`web-00012.v4`/`.v6`, proxies with `ext`/`int`), a few roles,
    a few notes; external hosts on the internet;
  - about N/50 groups of 2-12 hosts of one zone (some nest an earlier group);
  - about 45 named services, and literals: single ports, ranges, lists;
  - openings between zones in realistic proportions, from/to one to three
    references (hosts, named addresses, roles, groups, literal networks, now
    and then a whole zone), named services or literals;
  - 5% DNAT rows from the internet to a public address of `edge`; each row
    gets its own public ports on its public address (a port allocator per
    address), so no two port forwards ever conflict.

Every reference stays inside one zone (groups are zone-local), which lets
bench/peer_aerleon.py translate each opening into equivalent peer terms.

Only the standard library is used; the YAML is written by hand (block style,
flow lists), IPv6 addresses and notes quoted.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
from dataclasses import dataclass, field

# -- the network --------------------------------------------------------------

# zone -> (IPv4 network, IPv6 network or None)
ZONES: dict[str, tuple[str, str | None]] = {
    "dmz-web": ("172.16.0.0/20", "2001:db8:16::/64"),
    "dmz-ext": ("172.16.16.0/20", None),
    "dmz-int": ("172.16.32.0/20", None),
    "lan-office": ("10.10.0.0/16", "2001:db8:a::/56"),
    "lan-servers": ("10.20.0.0/16", None),
    "lan-mgmt": ("10.30.0.0/20", None),
}
ZONE_NOTES = {
    "dmz-web": "DMZ of the web front ends (dual-stack)",
    "dmz-ext": "DMZ, the side of the proxies that faces the internet (EXT)",
    "dmz-int": "DMZ, the side of the proxies that faces the LANs (INT)",
    "lan-office": "office clients (dual-stack)",
    "lan-servers": "application and database servers",
    "lan-mgmt": "management and monitoring",
}
TRANSIT = "192.168.255.0/29"
SINGLE_FW_IFACES = {"wan0": "internet", "dmz0": "dmz-web", "dmz1": "dmz-ext", "dmz2": "dmz-int",
                    "lan0": "lan-office", "lan1": "lan-servers", "lan2": "lan-mgmt"}
EDGE_IFACES = {"wan0": "internet", "dmz0": "dmz-web", "dmz1": "dmz-ext", "dmz2": "dmz-int", "tr0": "transit"}
CORE_IFACES = {"tr0": "transit", "lan0": "lan-office", "lan1": "lan-servers", "lan2": "lan-mgmt"}
PUBLIC4_NETS = ("203.0.113.0/24", "198.51.100.0/24")
PUBLIC6_NET = "2001:db8:ffff::/64"
EXTERNAL_NETS = ("192.0.2.0/24", "100.64.0.0/16", "93.184.0.0/16")  # the internet's hosts in this world

# hosts per zone, as a share of all hosts; host-name prefixes
HOST_SHARE = {"dmz-web": 0.10, "dmz-ext": 0.0, "lan-office": 0.35, "lan-servers": 0.43, "lan-mgmt": 0.06}
PROXY_SHARE = 0.03  # proxies have an ext address (dmz-ext) and an int address (dmz-int)
EXTERNAL_SHARE = 0.03
PREFIX = {"dmz-web": "web", "lan-office": "pc", "lan-servers": "srv", "lan-mgmt": "mon", "internet": "ext"}

SERVICES: dict[str, list[str]] = {
    "https": ["tcp/443"],
    "http": ["tcp/80"],
    "web": ["tcp/80", "tcp/443"],
    "ssh": ["tcp/22"],
    "dns": ["udp/53", "tcp/53"],
    "ntp": ["udp/123"],
    "snmp": ["udp/161-162"],
    "syslog": ["udp/514"],
    "syslog-tls": ["tcp/6514"],
    "smtp": ["tcp/25"],
    "submission": ["tcp/587"],
    "imaps": ["tcp/993"],
    "ldap": ["tcp/389"],
    "ldaps": ["tcp/636"],
    "kerberos": ["tcp/88", "udp/88"],
    "mysql": ["tcp/3306"],
    "postgres": ["tcp/5432"],
    "mssql": ["tcp/1433"],
    "oracle": ["tcp/1521"],
    "redis": ["tcp/6379"],
    "mongodb": ["tcp/27017"],
    "amqp": ["tcp/5671-5672"],
    "kafka": ["tcp/9092-9094"],
    "elastic": ["tcp/9200", "tcp/9300"],
    "rdp": ["tcp/3389"],
    "vnc": ["tcp/5900-5910"],
    "smb": ["tcp/445"],
    "nfs": ["tcp/2049", "udp/2049"],
    "sip": ["udp/5060", "tcp/5060"],
    "sip-tls": ["tcp/5061"],
    "sip-and-tls": ["udp/5060", "tcp/5060", "tcp/5061"],
    "rtp": ["udp/10000-30000"],
    "rtp-int": ["udp/4000-9999"],
    "app-http": ["tcp/8080"],
    "app-https": ["tcp/8443"],
    "app-range": ["tcp/8000-8099"],
    "grpc": ["tcp/50051"],
    "prometheus": ["tcp/9090", "tcp/9100"],
    "zabbix": ["tcp/10050-10051"],
    "ipp": ["tcp/631"],
    "proxy": ["tcp/3128"],
    "git-ssh": ["tcp/7999"],
    "vpn-ike": ["udp/500", "udp/4500"],
    "openvpn": ["udp/1194"],
    "ping": ["icmp"],
}
SERVICE_NOTES = {"https": "web over TLS", "sip": "SIP signalling", "rtp": "media of the proxies"}

# which services each kind of traffic uses (named), and literal ports it draws from
TRAFFIC = {
    "office-web": ["https", "web", "http", "app-https"],
    "office-servers": ["https", "smb", "ldap", "ldaps", "kerberos", "dns", "rdp", "ipp", "app-http", "mssql", "imaps", "submission", "git-ssh", "ntp"],
    "web-servers": ["https", "http", "app-http", "app-https", "mysql", "postgres", "redis", "mongodb", "amqp", "kafka", "elastic", "grpc", "ldaps", "mssql", "oracle"],
    "proxy-servers": ["sip", "sip-and-tls", "rtp-int", "https", "app-range"],
    "servers-proxy": ["sip", "rtp", "https"],
    "servers-web": ["https", "syslog", "app-https", "ssh"],
    "servers-office": ["rdp", "vnc", "ssh", "ipp"],
    "mgmt": ["ssh", "snmp", "ping", "https", "prometheus", "zabbix", "syslog-tls", "rdp"],
    "to-internet": ["https", "web", "dns", "ntp", "smtp", "proxy"],
    "ext-to-internet": ["sip", "sip-and-tls", "rtp", "dns"],
    "v6-web": ["https", "web"],
}
LITERAL_PORTS_TCP = (81, 444, 3000, 4443, 5000, 5601, 6443, 7001, 8000, 8001, 8081, 8088, 8181, 8888, 9000, 9443, 10443, 15672, 27018)
LITERAL_PORTS_UDP = (69, 137, 1812, 1813, 3478, 5353, 5683, 8125, 51820)

# kind of opening: (weight, source zone(s), destination zone(s), traffic)
CATEGORIES = [
    (15, ["lan-office"], ["dmz-web"], "office-web"),
    (20, ["lan-office"], ["lan-servers"], "office-servers"),
    (15, ["dmz-web"], ["lan-servers"], "web-servers"),
    (8, ["dmz-int"], ["lan-servers"], "proxy-servers"),
    (5, ["lan-servers"], ["dmz-int"], "servers-proxy"),
    (5, ["lan-servers"], ["dmz-web"], "servers-web"),
    (5, ["lan-servers"], ["lan-office"], "servers-office"),
    (7, ["lan-mgmt"], ["dmz-web", "dmz-ext", "dmz-int", "lan-office", "lan-servers"], "mgmt"),
    (7, ["lan-servers"], ["internet"], "to-internet"),
    (3, ["lan-office"], ["internet"], "to-internet"),
    (3, ["dmz-ext"], ["internet"], "ext-to-internet"),
    (2, ["internet"], ["dmz-web"], "v6-web"),
]
DNAT_SHARE = 0.05
NOTE_WORDS = ("ticket", "change", "app", "payroll", "billing", "crm", "backup", "monitoring", "migration",
              "vendor", "temporary", "audit", "replication", "reporting", "intranet", "helpdesk")


@dataclass
class HostInfo:
    name: str
    zone: str
    v4: str
    v6: str | None = None
    style: str = "single"  # single | list (v4+v6 unnamed) | named46 (v4/v6 named) | proxy (ext/int)
    int_v4: str | None = None  # proxies: the int address (zone dmz-int)
    roles: list[str] = field(default_factory=list)
    note: str = ""


class Generator:
    def __init__(self, n: int, seed: int, firewalls: int):
        if n < 1:
            raise ValueError("N must be at least 1")
        self.n = n
        self.seed = seed
        self.firewalls = firewalls
        self.rng = random.Random(f"fwmatrix-bench/{seed}/{n}/{firewalls}")
        self.hosts: list[HostInfo] = []
        self.by_zone: dict[str, list[HostInfo]] = {}
        self.groups: dict[str, tuple[str, list[str]]] = {}  # name -> (zone, members)
        self.groups_by_zone: dict[str, list[str]] = {}
        self.public4: dict[str, str] = {}
        self.public6: dict[str, str] = {}
        self.next_port: dict[str, int] = {}  # public name -> lowest unallocated port
        self.used_ports: dict[str, set[int]] = {}

    # -- addresses --------------------------------------------------------------

    def _sample_hosts(self, cidr: str, count: int) -> list[int]:
        net = ipaddress.ip_network(cidr)
        size = net.num_addresses
        if count > size - 2:
            raise ValueError(f"{count} hosts do not fit in {cidr}")
        return sorted(self.rng.sample(range(1, size - 1), count))

    def _addr(self, cidr: str, offset: int) -> str:
        return str(ipaddress.ip_network(cidr).network_address + offset)

    def make_hosts(self) -> None:
        total = max(60, self.n // 4)
        counter = 0
        for zone, share in HOST_SHARE.items():
            count = max(6, int(total * share))
            if share == 0:
                continue
            v4net, v6net = ZONES[zone]
            offsets = self._sample_hosts(v4net, count)
            self.rng.shuffle(offsets)
            for off in offsets:
                counter += 1
                host = HostInfo(f"{PREFIX[zone]}-{counter:05d}", zone, self._addr(v4net, off))
                if v6net is not None and self.rng.random() < (0.3 if zone == "dmz-web" else 0.2):
                    host.v6 = self._addr(v6net, off)
                    host.style = "named46" if zone == "dmz-web" and self.rng.random() < 0.5 else "list"
                if self.rng.random() < 0.03:
                    host.note = self._note()
                self.hosts.append(host)
        # proxies: an EXT address in dmz-ext, an INT address in dmz-int
        count = max(4, int(total * PROXY_SHARE))
        ext_offsets = self._sample_hosts(ZONES["dmz-ext"][0], count)
        int_offsets = self._sample_hosts(ZONES["dmz-int"][0], count)
        self.rng.shuffle(int_offsets)
        for i, (e, n_) in enumerate(zip(ext_offsets, int_offsets)):
            counter += 1
            host = HostInfo(f"px-{counter:05d}", "dmz-ext", self._addr(ZONES["dmz-ext"][0], e), style="proxy",
                            int_v4=self._addr(ZONES["dmz-int"][0], n_))
            if i % 25 == 0:
                host.roles = [f"sipproxy-{i // 25 + 1}", f"rtpproxy-{i // 25 + 1}"]  # one host, two roles
                host.note = "SIP and RTP proxy on one server"
            self.hosts.append(host)
        # hosts on the internet (partners, update servers, SIP trunks)
        count = max(4, int(total * EXTERNAL_SHARE))
        for i in range(count):
            counter += 1
            net = EXTERNAL_NETS[i % len(EXTERNAL_NETS)]
            size = ipaddress.ip_network(net).num_addresses
            host = HostInfo(f"ext-{counter:05d}", "internet", self._addr(net, 1 + (i // len(EXTERNAL_NETS)) % (size - 2)))
            self.hosts.append(host)
        for host in self.hosts:
            self.by_zone.setdefault(host.zone, []).append(host)
        self.by_zone["dmz-int"] = self.by_zone["dmz-ext"]  # proxies stand in both, by their .int / .ext
        self.dual_web = [h for h in self.by_zone["dmz-web"] if h.v6]
        self.named46_web = [h for h in self.by_zone["dmz-web"] if h.style == "named46"]
        self.dual_office = [h for h in self.by_zone["lan-office"] if h.v6]

    def make_groups(self) -> None:
        total = max(10, self.n // 50)
        zones = ["dmz-web", "dmz-ext", "dmz-int", "lan-office", "lan-servers", "lan-mgmt", "internet"]
        weights = [12, 3, 3, 30, 40, 6, 6]
        for i in range(total):
            zone = self.rng.choices(zones, weights)[0]
            name = f"grp-{zone.split('-')[-1]}-{i + 1:04d}"
            pool = self.by_zone[zone]
            k = min(len(pool), self.rng.randint(2, 12))
            members = [self._host_ref(h, zone, for_group=True) for h in self.rng.sample(pool, k)]
            earlier = self.groups_by_zone.get(zone, [])
            if earlier and self.rng.random() < 0.1:
                members.append(self.rng.choice(earlier))
            self.groups[name] = (zone, list(dict.fromkeys(members)))
            self.groups_by_zone.setdefault(zone, []).append(name)

    def make_publics(self, dnat_rows: int) -> None:
        count4 = max(2, min(64, dnat_rows // 150 + 2))
        for i in range(count4):
            net = PUBLIC4_NETS[i % 2]
            self.public4[f"pub{i + 1:02d}"] = self._addr(net, 10 + i // 2)
        for i in range(2):
            self.public6[f"pub6-{i + 1}"] = self._addr(PUBLIC6_NET, 0x10 + i)

    # -- references -------------------------------------------------------------

    def _host_ref(self, host: HostInfo, zone: str, for_group: bool = False) -> str:
        if host.style == "proxy":
            suffix = "int" if zone == "dmz-int" else "ext"
            base = host.roles[0] if host.roles and not for_group and self.rng.random() < 0.5 else host.name
            return f"{base}.{suffix}"
        if host.style == "named46":
            return f"{host.name}.v4"  # `.v6` only where the other side has IPv6 (see `opening`)
        return host.name

    def _literal(self, zone: str) -> str:
        if zone == "internet":
            net = ipaddress.ip_network(self.rng.choice(EXTERNAL_NETS))
            prefix = max(net.prefixlen, self.rng.choice((24, 28)))
        else:
            net = ipaddress.ip_network(ZONES[zone][0])
            prefix = self.rng.choice((24, 26, 28, 32)) if net.prefixlen <= 24 else net.prefixlen
        subnets = 1 << (prefix - net.prefixlen)
        sub = ipaddress.ip_network((int(net.network_address) + self.rng.randrange(subnets) * (1 << (32 - prefix)), prefix))
        return str(sub.network_address) if prefix == 32 else str(sub)

    def ref(self, zone: str) -> str:
        r = self.rng.random()
        if zone == "internet":
            if r < 0.5:
                return "internet"
            if r < 0.8:
                return self._host_ref(self.rng.choice(self.by_zone["internet"]), zone)
            if r < 0.9 and self.groups_by_zone.get("internet"):
                return self.rng.choice(self.groups_by_zone["internet"])
            return self._literal(zone)
        if r < 0.68:
            return self._host_ref(self.rng.choice(self.by_zone[zone]), zone)
        if r < 0.90 and self.groups_by_zone.get(zone):
            return self.rng.choice(self.groups_by_zone[zone])
        if r < 0.97:
            return self._literal(zone)
        return zone

    def refs(self, zone: str) -> list[str]:
        k = self.rng.choices((1, 2, 3), (75, 18, 7))[0]
        return list(dict.fromkeys(self.ref(zone) for _ in range(k)))

    def services(self, traffic: str) -> list[str]:
        names = TRAFFIC[traffic]
        r = self.rng.random()
        if r < 0.65:
            return [self.rng.choice(names)]
        if r < 0.75:
            return list(dict.fromkeys(s for s in self.rng.sample(names, min(2, len(names))) if s != "ping")) or ["https"]
        # literals
        kind = self.rng.random()
        if kind < 0.45:
            return [f"tcp/{self.rng.choice(LITERAL_PORTS_TCP)}"]
        if kind < 0.6:
            return [f"udp/{self.rng.choice(LITERAL_PORTS_UDP)}"]
        if kind < 0.8:
            low = self.rng.randrange(20000, 60000, 100)
            return [f"{self.rng.choice(('tcp', 'udp'))}/{low}-{low + self.rng.choice((9, 49, 99))}"]
        return sorted({f"tcp/{p}" for p in self.rng.sample(LITERAL_PORTS_TCP, self.rng.randint(2, 4))})

    def _note(self) -> str:
        words = self.rng.sample(NOTE_WORDS, 3)
        return f"{words[0]} {self.rng.randint(1000, 99999)}: {words[1]} and {words[2]}"

    # -- DNAT -------------------------------------------------------------------

    def _take_ports(self, public: str, count: int, wanted: int | None = None) -> int:
        """`count` consecutive ports on `public` nobody forwards yet (at `wanted` if free)."""
        used = self.used_ports.setdefault(public, set())
        if wanted is not None and all(p not in used for p in range(wanted, wanted + count)):
            start = wanted
        else:
            start = self.next_port.get(public, 1024)
            while any(p in used for p in range(start, start + count)):
                start += 1
            if start + count - 1 > 65535:
                raise ValueError(f"public address {public} has no free ports left")
            self.next_port[public] = start + count + self.rng.randint(0, 3)
        used.update(range(start, start + count))
        return start

    def dnat_row(self, index: int) -> dict:
        v6 = self.rng.random() < 0.1 and self.dual_web
        if v6:
            public = self.rng.choice(sorted(self.public6))
            host = self.rng.choice(self.dual_web)
            target = f"{host.name}.v6" if host.style == "named46" else host.name
        else:
            public = self.rng.choice(sorted(self.public4))
            if self.rng.random() < 0.7:
                host = self.rng.choice(self.by_zone["dmz-web"])
                target = f"{host.name}.v4" if host.style == "named46" else host.name
            else:
                host = self.rng.choice(self.by_zone["dmz-ext"])
                base = host.roles[0] if host.roles else host.name
                target = f"{base}.ext"
        row: dict = {"name": f"dnat-{index:06d}", "from": ["internet"], "to": [f"edge.{public}"]}
        if not v6 and self.rng.random() < 0.1:  # only from a partner's network
            row["from"] = [self._literal("internet")]
        kind = self.rng.random()
        if kind < 0.3:  # the well-known port itself, if still free on this address
            service, port = self.rng.choice((("https", 443), ("http", 80), ("smtp", 25), ("imaps", 993), ("sip-tls", 5061)))
            start = self._take_ports(public, 1, port)
            if start == port:
                row["service"] = [service]
            else:
                row["service"] = [f"tcp/{start}"]
                row["nat"] = {"to": target, "port": port}
        elif kind < 0.75:  # a high public port forwarded to a well-known one
            start = self._take_ports(public, 1)
            row["service"] = [f"{self.rng.choice(('tcp', 'tcp', 'tcp', 'udp'))}/{start}"]
            row["nat"] = {"to": target, "port": self.rng.choice((22, 443, 3389, 8080, 8443, 5060))}
        elif kind < 0.9:  # a range, as it is (media ports)
            width = self.rng.choice((10, 50, 100))
            start = self._take_ports(public, width)
            row["service"] = [f"udp/{start}-{start + width - 1}"]
        else:  # one port, both protocols (SIP-like)
            start = self._take_ports(public, 1)
            row["service"] = [f"udp/{start}", f"tcp/{start}"]
        row.setdefault("nat", target)
        row["note"] = f"port forward {index}"
        return row

    # -- openings ---------------------------------------------------------------

    def opening(self, index: int) -> dict:
        weights = [c[0] for c in CATEGORIES]
        _, src_zones, dst_zones, traffic = self.rng.choices(CATEGORIES, weights)[0]
        src_zone = self.rng.choice(src_zones)
        dst_zone = self.rng.choice([z for z in dst_zones if z != src_zone])
        if traffic == "v6-web":
            host = self.rng.choice(self.named46_web or self.dual_web)
            dst = [f"{host.name}.v6" if host.style == "named46" else host.name]
            src = ["internet"]
        elif traffic == "office-web" and self.rng.random() < 0.1:  # IPv6 inside: dual-stack clients to a web host's v6
            src = [h.name for h in self.rng.sample(self.dual_office, min(len(self.dual_office), self.rng.randint(1, 2)))]
            host = self.rng.choice(self.dual_web)
            dst = [f"{host.name}.v6" if host.style == "named46" else host.name]
        else:
            src, dst = self.refs(src_zone), self.refs(dst_zone)
        row: dict = {"from": src, "to": dst, "service": self.services(traffic)}
        if self.rng.random() < 0.9:
            row["name"] = f"o{index:06d}-{src_zone.split('-')[-1]}-{dst_zone.split('-')[-1]}"
        if self.rng.random() < 0.15:
            row["note"] = self._note()
        return row

    def generate(self) -> str:
        dnat_rows = int(round(self.n * DNAT_SHARE))
        self.make_hosts()
        self.make_groups()
        self.make_publics(dnat_rows)
        dnat_at = set(self.rng.sample(range(1, self.n + 1), dnat_rows)) if dnat_rows else set()
        rows = [self.dnat_row(i) if i in dnat_at else self.opening(i) for i in range(1, self.n + 1)]
        return self.render(rows)

    # -- YAML -------------------------------------------------------------------

    def render(self, rows: list[dict]) -> str:
        out: list[str] = [
            f"# Generated by bench/gen_matrix.py {self.n} --seed {self.seed} --firewalls {self.firewalls}: do not edit.",
            "fwmatrix: 1",
            f"name: bench-{self.n}-s{self.seed}-fw{self.firewalls}",
            f'title: "Benchmark matrix: {self.n} openings, seed {self.seed}, {self.firewalls} firewall(s)"',
            "",
            "zones:",
            "  internet: any",
        ]
        for zone, (v4, v6) in ZONES.items():
            nets = f"[{v4}, {_q(v6)}]" if v6 else v4
            out += [f"  {zone}:", f"    networks: {nets}", f"    note: {_q(ZONE_NOTES[zone])}"]
        if self.firewalls == 2:
            out.append(f"  transit: {TRANSIT}")
        out += ["", "hosts:"]
        for h in self.hosts:
            if h.style == "single":
                addr = h.v4
            elif h.style == "list":
                addr = f"[{h.v4}, {_q(h.v6)}]"
            elif h.style == "named46":
                addr = f"{{v4: {h.v4}, v6: {_q(h.v6)}}}"
            else:
                addr = f"{{ext: {h.v4}, int: {h.int_v4}}}"
            if not h.roles and not h.note:
                out.append(f"  {h.name}: {addr}")
                continue
            out += [f"  {h.name}:", f"    addresses: {addr}"]
            if h.roles:
                out.append(f"    roles: [{', '.join(h.roles)}]")
            if h.note:
                out.append(f"    note: {_q(h.note)}")
        out += ["", "groups:"]
        for name, (zone, members) in self.groups.items():
            out.append(f"  {name}: [{', '.join(members)}]")
        out += ["", "services:"]
        for name, parts in SERVICES.items():
            ports = parts[0] if len(parts) == 1 else f"[{', '.join(parts)}]"
            if name in SERVICE_NOTES:
                out += [f"  {name}:", f"    ports: {ports}", f"    note: {_q(SERVICE_NOTES[name])}"]
            else:
                out.append(f"  {name}: {ports}")
        out += ["", "firewalls:"]
        ifaces = SINGLE_FW_IFACES if self.firewalls == 1 else EDGE_IFACES
        out += ["  edge:", "    interfaces:"] + [f"      {i}: {z}" for i, z in ifaces.items()]
        out.append("    public:")
        out += [f"      {k}: {v}" for k, v in self.public4.items()]
        out += [f"      {k}: {_q(v)}" for k, v in self.public6.items()]
        if self.firewalls == 2:
            out.append('    note: "perimeter: the internet and the DMZs"')
            out += ["  core:", "    interfaces:"] + [f"      {i}: {z}" for i, z in CORE_IFACES.items()]
            out.append("    note: internal firewall between the transit network and the LANs")
        out += ["", "openings:"]
        for row in rows:
            first = True
            for key in ("name", "from", "to", "service", "nat", "note"):
                if key not in row:
                    continue
                value = row[key]
                if isinstance(value, list):
                    text = value[0] if len(value) == 1 else f"[{', '.join(value)}]"
                elif isinstance(value, dict):
                    text = f"{{to: {value['to']}, port: {value['port']}}}"
                elif key == "note":
                    text = _q(value)
                else:
                    text = value
                out.append(f"  {'- ' if first else '  '}{key}: {text}")
                first = False
        return "\n".join(out) + "\n"


def _q(text: str | None) -> str:
    assert text is not None and '"' not in text and "\\" not in text
    return f'"{text}"'


def generate(n: int, seed: int = 1, firewalls: int = 1) -> str:
    return Generator(n, seed, firewalls).generate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="number of openings")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--firewalls", type=int, choices=(1, 2), default=1,
                        help="1: one firewall with every zone; 2: edge and core in a row")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    args = parser.parse_args(argv)
    text = generate(args.n, args.seed, args.firewalls)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
