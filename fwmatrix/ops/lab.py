"""A namespace lab: a firewall's interfaces as real links, to probe what its kernel forwards.

`Lab` builds, for one firewall, a network namespace with forwarding on and
one veth pair per interface: the firewall's end carries the name the matrix
gives it (`wan0`, `dmz0`, ...), the other end lives in a "side" namespace of
its own that stands for everything behind that interface. Rulesets are
loaded into the firewall namespace; probes are NEW connections sent from one
side and watched for on the others.

Addressing is on demand, so any address can be probed: each link has a
small fixed transfer net (169.254.0.0/16 in /30s; fe80::1 / fe80::2 for
IPv6), each side routes everything to the firewall, and before a batch of
probes every source and destination address is put on the side it belongs
to, with a /32 (/128) route to that side in the firewall namespace.
Reverse-path filtering and IPv6 duplicate address detection are off, so
these addresses work at once and from any side. An address can sit on one
side only at a time: probes that need it elsewhere run in a later round.
An IPv6 link-local address (but the links' own) may be a probe's source:
the side sends from it on its link, as a host there would.

A probe is judged by where its first packet (the TCP SYN, the UDP datagram,
the SCTP INIT, the ICMP echo request) is seen: a packet socket on every side
records which side it reached and with what destination (after any DNAT).
That is exactly what a firewall decides for a NEW connection. Whether an
answer came back (handshake, UDP echo, echo reply) is reported apart,
since it also depends on the firewall forwarding the replies.

All traffic stays inside the lab's namespaces; the host's own namespace is
never touched, and the lab deletes only the namespaces it created.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import re
import selectors
import socket
import struct
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fwmatrix.errors import BackendError
from fwmatrix.ir import Ruleset
from fwmatrix.netns import CLONE_NEWNET, NetNamespace, call_in_netns, unique_name
from fwmatrix.ops.labpackets import _echo_request, _parse, _sctp_init
from fwmatrix.ops.signals import held

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SIDE_LINK = "uplink"  # the side's end of each veth pair, in the side's own namespace
LINK_NET_V4 = ipaddress.IPv4Network("169.254.0.0/16")  # transfer nets, one /30 per interface
FW_LINK_V6 = "fe80::1"
SIDE_LINK_V6 = "fe80::2"
IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}\Z")  # Linux: at most 15 bytes
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}  # icmp: ICMPv6 (58) for IPv6 probes
PORT_PROTOCOLS = ("tcp", "udp", "sctp")
FIRST_TAG, LAST_TAG = 20000, 60999  # source ports (and echo ids) that tell probes apart
MAX_PER_ROUND = 256  # sockets per probe: up to three; stay well inside the file limit
DEFAULT_TIMEOUT = 0.8  # seconds a round waits for packets that may never come
# a probe's `oif` for a connection to the firewall itself: its destination is put on the
# firewall (on the probe's `iif`), a listener there answers, and the answer is the proof
FIREWALL = "(firewall)"

FW_SYSCTLS = ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1", "net.ipv6.conf.default.forwarding=1",
              # IPv6 source selection (masquerade's too) from the outgoing link's addresses only: its
              # one address there is FW_LINK_V6, so a masqueraded probe must arrive from it
              "net.ipv6.conf.default.use_oif_addrs_only=1")
# every lab namespace: no reverse-path filter (test sources are asymmetric on purpose),
# no duplicate address detection (addresses must work the moment they are added)
COMMON_SYSCTLS = (
    "net.ipv4.conf.all.rp_filter=0",
    "net.ipv4.conf.default.rp_filter=0",
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.default.addr_gen_mode=1",  # no link-local address of the kernel's choosing: the links have fe80::1, fe80::2
)


class LabError(BackendError):
    """The lab cannot be built, or a probe cannot be run as asked."""


@dataclass(frozen=True)
class Probe:
    """One NEW connection attempt: from the side behind `iif` to the side behind `oif`.

    `expect_dst` / `expect_dport` are where the packet should arrive after a
    destination NAT (default: `dst` / `dport`); the lab places that address on
    the `oif` side too and listens there. `expect_src` is the source it should
    arrive with after a source NAT (default: any source)."""

    iif: str
    oif: str
    src: str
    dst: str
    proto: str  # tcp, udp, sctp or icmp
    dport: int | None = None
    expect_dst: str | None = None
    expect_dport: int | None = None
    expect_src: str | None = None

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.src).version

    @property
    def arrival_dst(self) -> str:
        return str(ipaddress.ip_address(self.expect_dst or self.dst))

    @property
    def arrival_dport(self) -> int | None:
        return self.expect_dport if self.expect_dport is not None else self.dport

    def __str__(self) -> str:
        service = self.proto if self.dport is None else f"{self.proto}/{self.dport}"
        nat = ""
        if self.expect_dst is not None or self.expect_dport is not None:
            nat = f" (expected at {self.arrival_dst}" + (f":{self.arrival_dport})" if self.arrival_dport is not None else ")")
        if self.expect_src is not None:
            nat += f" (expected from {self.expect_src})"
        return f"{self.iif} → {self.oif}  {self.src} → {self.dst}  {service}{nat}"


@dataclass(frozen=True)
class Sighting:
    """The probe's first packet as a side saw it arrive."""

    side: str
    src: str
    dst: str
    dport: int | None


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    seen: tuple[Sighting, ...]  # every side (but the sender's) that saw the first packet
    answered: bool | None  # an answer came back; None where the lab cannot tell (sctp)
    error: str = ""  # what the sender's socket said (ECONNREFUSED, EHOSTUNREACH, ...)

    @property
    def at_oif(self) -> Sighting | None:
        return next((s for s in self.seen if s.side == self.probe.oif), None)

    @property
    def delivered(self) -> bool:
        """The firewall forwarded the first packet out of `oif` (to itself: it answered, or refused)."""
        if self.probe.oif == FIREWALL:
            return self.reached
        return self.at_oif is not None

    @property
    def reached(self) -> bool:
        """The first packet got past the firewall: seen on a side, or (to the firewall itself)
        answered or refused by its stack, which only packets its input chain accepts reach."""
        if self.probe.oif == FIREWALL:
            return bool(self.answered) or self.error in ("ECONNREFUSED", "ECONNRESET")
        return bool(self.seen)

    @property
    def arrived(self) -> bool:
        """Forwarded out of `oif` to the expected (post-DNAT) address and port (to the firewall
        itself: answered by the listener there)."""
        s = self.at_oif
        p = self.probe
        if p.oif == FIREWALL:
            return bool(self.answered)
        return s is not None and s.dst == p.arrival_dst and s.dport == p.arrival_dport and (
            p.expect_src is None or s.src == str(ipaddress.ip_address(p.expect_src)))

    def __str__(self) -> str:
        return f"{self.probe}: {self.outcome()}"

    def outcome(self) -> str:
        """What happened, in words: where the first packet was seen, and whether an answer came back."""
        where = "; ".join(f"seen on {s.side}: {s.src} → {s.dst}" + (f" port {s.dport}" if s.dport is not None else "") for s in self.seen)
        answer = {True: "answered", False: "no answer", None: "answer not watched"}[self.answered]
        return f"{where or 'not seen on any side'}; {answer}{f' ({self.error})' if self.error else ''}"


@dataclass
class _Link:
    index: int
    iface: str
    side: NetNamespace

    @property
    def fw_v4(self) -> ipaddress.IPv4Address:
        return LINK_NET_V4[4 * self.index + 1]

    @property
    def side_v4(self) -> ipaddress.IPv4Address:
        return LINK_NET_V4[4 * self.index + 2]


def firewall_link_address(index: int, family: int) -> str:
    """The firewall's own address on the link of its `index`-th interface (what masquerade
    gives a packet leaving by it)."""
    return str(LINK_NET_V4[4 * index + 1]) if family == 4 else FW_LINK_V6


@dataclass
class Lab:
    """A firewall namespace with one link (and one side namespace) per interface.

    Use it as a context manager: every namespace it made is deleted on the way
    out, whatever happened inside."""

    interfaces: Sequence[str] | Mapping[str, str]
    timeout: float = DEFAULT_TIMEOUT
    prefix: str = "fwmlab"
    fw: NetNamespace = field(init=False)
    links: dict[str, _Link] = field(init=False, default_factory=dict)
    _placed: dict[Address, str] = field(init=False, default_factory=dict)  # address -> side it is on
    _next_tag: int = field(init=False, default=FIRST_TAG)
    rounds: int = field(init=False, default=0)  # rounds of probes run so far (each waits up to `timeout`)

    def __post_init__(self) -> None:
        names = list(self.interfaces)
        if not names:
            raise LabError("a lab needs at least one interface")
        if len(names) > LINK_NET_V4.num_addresses // 4:
            raise LabError(f"a lab has room for {LINK_NET_V4.num_addresses // 4} interfaces, not {len(names)}")
        for name in names:
            if not IFNAME_RE.match(name) or name in ("lo", SIDE_LINK):
                raise LabError(f"cannot name a lab interface {name!r}")
        if len(set(names)) != len(names):
            raise LabError("interface names repeat")
        self.fw = NetNamespace(unique_name(f"{self.prefix}-fw"))

    # -- building and tearing down -------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        self.fw.create()
        _sysctl(self.fw, COMMON_SYSCTLS + FW_SYSCTLS)
        for index, iface in enumerate(self.interfaces):
            side = NetNamespace(unique_name(f"{self.prefix}-side"))
            self.links[iface] = link = _Link(index, iface, side)  # recorded first: close() deletes it if what follows fails
            side.create()
            _sysctl(side, COMMON_SYSCTLS)
            # the pair is made inside the firewall namespace and its peer moved straight into the side's
            self.fw.run(["ip", "link", "add", iface, "type", "veth", "peer", "name", SIDE_LINK, "netns", side.name])
            _ip_batch(self.fw, [
                f"addr add {link.fw_v4}/30 dev {iface}",
                f"addr add {FW_LINK_V6}/64 dev {iface} nodad",
                f"link set {iface} up",
            ])
            _ip_batch(side, [
                f"addr add {link.side_v4}/30 dev {SIDE_LINK}",
                f"addr add {SIDE_LINK_V6}/64 dev {SIDE_LINK} nodad",
                f"link set {SIDE_LINK} up",
                f"route add default via {link.fw_v4} dev {SIDE_LINK}",
                f"route add default via {FW_LINK_V6} dev {SIDE_LINK}",
            ])
            _sysctl(side, (_rp_filter_off(SIDE_LINK),))
        _sysctl(self.fw, tuple(_rp_filter_off(iface) for iface in self.links))

    def close(self) -> None:
        """Delete every namespace this lab made (its links vanish with them); an interrupt
        (Ctrl-C, SIGTERM) waits until they are all gone."""
        with held():
            for link in self.links.values():
                link.side.delete()
            self.fw.delete()
        self._placed.clear()

    @property
    def namespaces(self) -> list[str]:
        return [self.fw.name] + [link.side.name for link in self.links.values()]

    def side(self, iface: str) -> NetNamespace:
        return self._link(iface).side

    def _link(self, iface: str) -> _Link:
        try:
            return self.links[iface]
        except KeyError:
            raise LabError(f"the lab has no interface {iface!r} (it has {', '.join(self.links)})") from None

    # -- rulesets ----------------------------------------------------------------------

    def load_nft(self, script: str | Ruleset) -> None:
        """Load an nft script (or a Ruleset, rendered) into the firewall, as one transaction."""
        from fwmatrix.backends import nftables

        nftables.load(self.fw, script if isinstance(script, str) else nftables.render(script))

    def load_raw_nft(self, text: str, directory: str | None = None) -> None:
        """Make a hand-written nft ruleset the firewall's whole ruleset (what was there goes);
        `directory`: where its includes are read from (targets.include_directory)."""
        from fwmatrix.backends import nftables
        from fwmatrix.backends.nftables.binding import ACCOUNTS_RE, INCLUDE_RE, for_this_nft, load_with_accounts

        script = "flush ruleset\n" + for_this_nft(text)
        if ACCOUNTS_RE.search(text) or INCLUDE_RE.search(text):  # users and groups of its host: placeholders in the lab too
            load_with_accounts(self.fw, script, directory)
        else:
            nftables.load(self.fw, script, directory)

    def load_iptables(self, files: Mapping[str, str]) -> None:
        """Apply rendered iptables files (`.ipt4`, `.ipt6`, `.ipset`) to the firewall, in either
        mode: in own-chains mode the jumps from the built-in chains are added as `apply` does."""
        from fwmatrix.backends import iptables

        iptables.apply(dict(files), self.fw.run)

    def read_nft(self) -> Ruleset:
        """The firewall's ruleset as the kernel lists it (`nft -j list ruleset`), as IR."""
        from fwmatrix.backends import nftables

        return nftables.parse_json(nftables.list_ruleset_json(self.fw))

    def read_iptables(self) -> Ruleset:
        """The firewall's iptables and ip6tables rulesets (iptables-save), with its ipsets, as IR."""
        from fwmatrix.backends import iptables

        ipsets = self.fw.run(["ipset", "save"], check=False)
        sets = ipsets.stdout if ipsets.returncode == 0 else None
        tables = []
        for family, tool in iptables.SAVE_TOOL.items():
            tables += iptables.parse_save(self.fw.run([tool]).stdout, family, tool, sets).tables
        return Ruleset(tuple(tables))

    # -- probing -----------------------------------------------------------------------

    def probe(self, iif: str, oif: str, src: str, dst: str, proto: str, dport: int | None = None,
              expect_dst: str | None = None, expect_dport: int | None = None) -> bool:
        """Send one NEW connection attempt; True when it came out of `oif` at the
        expected (post-DNAT) destination."""
        (result,) = self.run([Probe(iif, oif, src, dst, proto, dport, expect_dst, expect_dport)])
        return result.arrived

    def run(self, probes: Sequence[Probe], retries: int = 0) -> list[ProbeResult]:
        """Run probes in as few rounds as their addresses allow; results in the same order.

        `retries` sends probes that were not delivered again (with fresh source
        ports), for a kernel under load that may miss a round's deadline."""
        for p in probes:
            self._validate(p)
        results: list[ProbeResult | None] = [None] * len(probes)
        pending = list(range(len(probes)))
        for _ in range(retries + 1):
            for members in _rounds([probes[i] for i in pending]):
                chosen = [pending[m] for m in members]
                for index, result in zip(chosen, self._round([probes[i] for i in chosen])):
                    results[index] = result
            pending = [i for i in pending if not results[i].delivered]  # type: ignore[union-attr]
            if not pending:
                break
        return results  # type: ignore[return-value]

    def _validate(self, p: Probe) -> None:
        for iface in (p.iif, p.oif):
            if iface != FIREWALL or iface == p.iif:
                self._link(iface)
        if p.iif == p.oif:
            raise LabError(f"{p}: a probe goes from one interface to another")
        if p.proto not in PROTOCOLS:
            raise LabError(f"{p}: the lab probes {', '.join(PROTOCOLS)}, not {p.proto!r}")
        if (p.proto in PORT_PROTOCOLS) != (p.dport is not None):
            raise LabError(f"{p}: {p.proto} probes {'need' if p.proto in PORT_PROTOCOLS else 'take no'} destination port")
        for port in (p.dport, p.expect_dport):
            if port is not None and not 1 <= port <= 65535:
                raise LabError(f"{p}: port {port} is out of range")
        if p.oif == FIREWALL and p.proto == "sctp":
            raise LabError(f"{p}: the lab cannot tell whether the firewall itself took an SCTP INIT")
        if p.expect_src is not None:
            try:
                ipaddress.ip_address(p.expect_src)
            except ValueError:
                raise LabError(f"{p}: {p.expect_src!r} is not an address") from None
        addrs = [_address(p, p.src, source=True)] + [_address(p, a) for a in (p.dst, p.expect_dst) if a is not None]
        if len({a.version for a in addrs}) != 1:
            raise LabError(f"{p}: source and destination are of different families")
        if len(set(addrs[:2])) != 2 or (p.expect_dst is not None and addrs[2] == addrs[0]):
            raise LabError(f"{p}: source and destination are the same address")

    def _tags(self, count: int, avoid: set[int]) -> list[int]:
        """Source ports / echo ids, unique for the lab's life so that no probe meets an old
        connection-tracking entry, and never a port some probe sends to (replies stay apart)."""
        out: list[int] = []
        while len(out) < count:
            tag = self._next_tag
            self._next_tag = FIRST_TAG if tag >= LAST_TAG else tag + 1
            if tag not in avoid:
                out.append(tag)
        return out

    def _round(self, probes: list[Probe]) -> list[ProbeResult]:
        self.rounds += 1
        self._place({a: side for p in probes for a, side in _needs(p).items()})
        ports = {port for p in probes for port in (p.dport, p.expect_dport) if port is not None}
        specs = [_Spec(p, tag) for p, tag in zip(probes, self._tags(len(probes), ports))]
        paths = {iface: f"/run/netns/{link.side.name}" for iface, link in self.links.items()}
        paths[FIREWALL] = f"/run/netns/{self.fw.name}"
        raw = call_in_netns(paths[FIREWALL], lambda: _probe_round(paths, specs, self.timeout))
        out = []
        for spec, (seen, answered, error) in zip(specs, raw):
            sightings = tuple(Sighting(side, *details) for side, details in seen.items() if side != spec.probe.iif)
            out.append(ProbeResult(spec.probe, sightings, answered, error))
        return out

    def _place(self, wanted: dict[Address, str]) -> None:
        """Put each address on its side (taking it off the side it was on), routed there from the
        firewall; an address wanted on `FIREWALL:IF` goes on the firewall's own interface IF."""
        side_cmds: dict[str, list[str]] = {}
        fw_cmds: list[str] = []
        for addr, iface in wanted.items():
            current = self._placed.get(addr)
            if current == iface:
                continue
            plen = 32 if addr.version == 4 else 128
            nodad = " nodad" if addr.version == 6 else ""
            if current is not None and current.startswith(FIREWALL):
                fw_cmds.append(f"addr del {addr}/{plen} dev {current.split(':', 1)[1]}")
            elif current is not None:
                side_cmds.setdefault(current, []).append(f"addr del {addr}/{plen} dev {SIDE_LINK}")
                fw_cmds.append(f"route del {addr}/{plen}")
            if iface.startswith(FIREWALL):
                fw_cmds.append(f"addr add {addr}/{plen} dev {iface.split(':', 1)[1]}{nodad}")
            else:
                side_cmds.setdefault(iface, []).append(f"addr add {addr}/{plen} dev {SIDE_LINK}{nodad}")
                link = self.links[iface]
                via = link.side_v4 if addr.version == 4 else SIDE_LINK_V6
                fw_cmds.append(f"route replace {addr}/{plen} via {via} dev {iface}")
            self._placed[addr] = iface
        for iface, cmds in side_cmds.items():
            _ip_batch(self.links[iface].side, cmds)
        if fw_cmds:
            _ip_batch(self.fw, fw_cmds)


# -- planning ----------------------------------------------------------------------------


def _address(p: Probe, text: str, source: bool = False) -> Address:
    """A probe's address, if the lab can place it: a link-local one only as the source (the
    side sends from it on its link) and never one of the links' own."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise LabError(f"{p}: {text!r} is not an address") from None
    link_local = addr.is_link_local and (not source or addr.version == 4 or str(addr) in (FW_LINK_V6, SIDE_LINK_V6))
    if addr.is_multicast or addr.is_loopback or addr.is_unspecified or link_local or addr in LINK_NET_V4:
        raise LabError(f"{p}: cannot probe with {addr} (multicast, loopback, unspecified or link-local; "
                       f"a link-local source but {FW_LINK_V6} and {SIDE_LINK_V6} may be)")
    if addr.version == 4 and addr == ipaddress.IPv4Address("255.255.255.255"):
        raise LabError(f"{p}: cannot probe with the broadcast address")
    return addr


def _needs(p: Probe) -> dict[Address, str]:
    """Which side each of a probe's addresses must be on: the source on the sender's,
    the destination (as sent and as expected after DNAT) on the receiver's."""
    oif = f"{FIREWALL}:{p.iif}" if p.oif == FIREWALL else p.oif
    need = {ipaddress.ip_address(p.src): p.iif, ipaddress.ip_address(p.dst): oif}
    if p.expect_dst is not None:
        need[ipaddress.ip_address(p.expect_dst)] = oif
    return need


def _rounds(probes: Sequence[Probe]) -> list[list[int]]:
    """Group probes (first fit) so that within a group every address belongs to one side."""
    groups: list[tuple[dict[Address, str], list[int]]] = []
    for index, p in enumerate(probes):
        need = _needs(p)
        for placed, members in groups:
            if len(members) < MAX_PER_ROUND and all(placed.get(a, side) == side for a, side in need.items()):
                placed.update(need)
                members.append(index)
                break
        else:
            groups.append((dict(need), [index]))
    return [members for _, members in groups]


# -- commands in a namespace -------------------------------------------------------------


def _sysctl(ns: NetNamespace, settings: Iterable[str]) -> None:
    ns.run(["sysctl", "-q", "-w", *settings])


def _rp_filter_off(iface: str) -> str:
    """The setting in sysctl's path form: a VLAN's name (`eth0.4`) keeps its dot there,
    where `net.ipv4.conf.eth0.4.rp_filter` would name `conf/eth0/4`."""
    return f"net/ipv4/conf/{iface}/rp_filter=0"


def _ip_batch(ns: NetNamespace, commands: list[str]) -> None:
    if commands:
        ns.run(["ip", "-batch", "-"], stdin="\n".join(commands) + "\n")


# -- one round of probes, in a forked child ---------------------------------------------------
#
# The child starts in the firewall namespace and enters each side's in turn to make
# that side's sockets: a socket stays in the namespace it was made in, so one
# process and one event loop serve every side at once.


@dataclass(frozen=True)
class _Spec:
    probe: Probe
    tag: int  # source port, or echo id for icmp


_LIBC: Any = None


def _enter(path: str) -> None:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if _LIBC.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({path})")
    finally:
        os.close(fd)


ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
IP_FREEBIND = 15
IPV6_FREEBIND = 78
RawOutcome = tuple[dict[str, tuple[str, str, int | None]], bool | None, str]


def _probe_round(paths: Mapping[str, str], specs: Sequence[_Spec], timeout: float) -> list[RawOutcome]:
    """Watch every side, send every probe, and collect until all are settled or time is up.

    A probe is settled when its first packet reached the oif side and its sender
    learnt all it will (an answer, or a refusal); probes the firewall drops
    silently settle only at the deadline."""
    sel = selectors.DefaultSelector()
    seen: list[dict[str, tuple[str, str, int | None]]] = [{} for _ in specs]
    answered: list[bool | None] = [None if s.probe.proto == "sctp" else False for s in specs]
    errors = [""] * len(specs)
    done_sending = [s.probe.proto == "sctp" for s in specs]  # the sender has nothing more to learn
    by_key = {_key(s.probe.proto, s.tag): i for i, s in enumerate(specs)}

    # packet sockets and listeners first, so nothing sent can pass unseen
    listeners: set[tuple[str, str, str, int]] = set()
    for iface, path in paths.items():
        _enter(path)
        if iface != FIREWALL:  # the firewall's own listeners answer for it: no capture there
            cap = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            cap.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            cap.bind((SIDE_LINK, ETH_P_ALL))
            cap.setblocking(False)
            sel.register(cap, selectors.EVENT_READ, ("capture", iface))
        for s in specs:
            p = s.probe
            port = p.arrival_dport
            key = (iface, p.proto, p.arrival_dst, port or 0)
            if p.oif != iface or p.proto not in ("tcp", "udp") or key in listeners:
                continue
            listeners.add(key)
            sock = _bound(p.proto, p.arrival_dst, port or 0)
            if p.proto == "tcp":
                sock.listen(64)
            sel.register(sock, selectors.EVENT_READ, (f"{p.proto}-listen", iface))

    senders = []
    for i, s in enumerate(specs):
        _enter(paths[s.probe.iif])
        sock, error = _send(s)
        senders.append(sock)
        if error:  # refused on the spot (no route, say): nothing was sent
            errors[i], answered[i], done_sending[i] = error, False, True
        elif not done_sending[i]:
            event = selectors.EVENT_WRITE if s.probe.proto == "tcp" else selectors.EVENT_READ
            sel.register(sock, event, ("sender", i))

    def settled() -> bool:
        return all(
            (done_sending[i] and (s.probe.oif == FIREWALL or seen[i].get(s.probe.oif) is not None or errors[i] != ""))
            for i, s in enumerate(specs)
        )

    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or settled():
            break
        for key, _ in sel.select(left):
            kind, who = key.data
            sock = key.fileobj
            if kind == "capture":
                _drain(sock, who, by_key, seen)  # type: ignore[arg-type]
            elif kind == "tcp-listen":
                try:
                    conn, _ = sock.accept()  # type: ignore[union-attr]
                    conn.close()
                except OSError:
                    pass
            elif kind == "udp-listen":
                try:
                    data, peer = sock.recvfrom(2048)  # type: ignore[union-attr]
                    sock.sendto(data, peer)  # type: ignore[union-attr]
                except OSError:
                    pass
            else:
                i = who
                if _answer(specs[i], sock, answered, errors, i):  # type: ignore[arg-type]
                    done_sending[i] = True
                    sel.unregister(sock)
    for key in list(sel.get_map().values()):
        if key.data[0] == "capture":
            _drain(key.fileobj, key.data[1], by_key, seen)  # type: ignore[arg-type]
        key.fileobj.close()  # type: ignore[union-attr]
    for sock in senders:
        sock.close()
    return [(seen[i], answered[i], errors[i]) for i in range(len(specs))]


def _key(proto: str, tag: int) -> tuple[str, int]:
    return ("echo" if proto == "icmp" else proto, tag)


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _freebind(sock: socket.socket, family: int) -> None:
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)


def _local(addr: str, port: int) -> tuple:
    """The socket address to bind: a link-local one names its link (the side's), in the
    namespace the caller is in."""
    if ipaddress.ip_address(addr).is_link_local and _family(addr) == socket.AF_INET6:
        return (addr, port, 0, socket.if_nametoindex(SIDE_LINK))
    return (addr, port)


def _bound(proto: str, addr: str, port: int) -> socket.socket:
    family = _family(addr)
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _freebind(sock, family)
    sock.bind(_local(addr, port))
    sock.setblocking(False)
    return sock


def _send(spec: _Spec) -> tuple[socket.socket, str]:
    """Make the sender's socket and send the first packet: (socket, error text or "")."""
    p = spec.probe
    family = _family(p.src)
    dst = str(ipaddress.ip_address(p.dst))
    if p.proto in ("tcp", "udp"):
        sock = _bound(p.proto, p.src, spec.tag)
    else:
        number = PROTOCOLS["sctp"] if p.proto == "sctp" else socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
        sock = socket.socket(family, socket.SOCK_RAW, number)
        sock.bind(_local(p.src, 0))
        sock.setblocking(False)
    try:
        if p.proto == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST: no lingering FIN states
            code = sock.connect_ex((dst, p.dport))
            if code not in (0, errno.EINPROGRESS):
                return sock, errno.errorcode.get(code, str(code))
        elif p.proto == "udp":
            sock.sendto(b"fwmatrix-lab %d" % spec.tag, (dst, p.dport))
        elif p.proto == "icmp":
            sock.sendto(_echo_request(family, spec.tag), (dst, 0))
        else:  # sctp: no SCTP stack is needed to send an INIT by hand, nor to see it arrive
            sock.sendto(_sctp_init(spec.tag, p.dport or 0), (dst, 0))
    except OSError as exc:
        return sock, errno.errorcode.get(exc.errno or 0, str(exc))
    return sock, ""


def _answer(spec: _Spec, sock: socket.socket, answered: list[bool | None], errors: list[str], i: int) -> bool:
    """Read what came back to a sender; True when nothing more will."""
    proto = spec.probe.proto
    try:
        if proto == "tcp":
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            answered[i] = code == 0
            errors[i] = "" if code == 0 else errno.errorcode.get(code, str(code))
            return True
        if proto == "udp":
            sock.recv(2048)
            answered[i] = True
            return True
        data = sock.recv(2048)
    except OSError as exc:
        errors[i] = errno.errorcode.get(exc.errno or 0, str(exc))
        answered[i] = False
        return True
    # icmp: a raw socket sees every ICMP packet to its address; only our echo reply counts
    if _family(spec.probe.src) == socket.AF_INET:
        data = data[(data[0] & 0x0F) * 4:]
        reply_type = 0
    else:
        reply_type = 129
    if len(data) >= 8 and data[0] == reply_type and struct.unpack("!H", data[4:6])[0] == spec.tag:
        answered[i] = True
        return True
    return False


def _drain(sock: socket.socket, side: str, by_key: Mapping[tuple[str, int], int], seen: list[dict]) -> None:
    while True:
        try:
            data, addr = sock.recvfrom(65535)
        except BlockingIOError:
            return
        if addr[2] == PACKET_OUTGOING:
            continue
        parsed = _parse(data)
        if parsed is None:
            continue
        key, src, dst, dport = parsed
        index = by_key.get(key)
        if index is not None:
            seen[index].setdefault(side, (src, dst, dport))


__all__ = ["DEFAULT_TIMEOUT", "FIREWALL", "Lab", "LabError", "Probe", "ProbeResult", "Sighting"]
