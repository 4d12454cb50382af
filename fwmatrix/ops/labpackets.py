"""The bytes of the lab's probes (fwmatrix/ops/lab.py): an ICMP echo request and an SCTP INIT
made by hand, and a probe's first packet as a packet socket sees it, read back."""

from __future__ import annotations

import socket
import struct


def _echo_request(family: int, ident: int) -> bytes:
    echo_type = 128 if family == socket.AF_INET6 else 8
    body = b"fwmatrix-lab"
    checksum = 0  # the kernel sums ICMPv6 itself, not ICMP
    if family == socket.AF_INET:
        checksum = _inet_checksum(struct.pack("!BBHHH", echo_type, 0, 0, ident, 1) + body)
    return struct.pack("!BBHHH", echo_type, 0, checksum, ident, 1) + body


def _parse(data: bytes) -> tuple[tuple[str, int], str, str, int | None] | None:
    """A probe's first packet: (its key, source, destination, destination port); None for others."""
    if len(data) < 20:
        return None
    version = data[0] >> 4
    if version == 4:
        proto, start = data[9], (data[0] & 0x0F) * 4
        src, dst = socket.inet_ntop(socket.AF_INET, data[12:16]), socket.inet_ntop(socket.AF_INET, data[16:20])
    elif version == 6 and len(data) >= 40:
        proto, start = data[6], 40
        src, dst = socket.inet_ntop(socket.AF_INET6, data[8:24]), socket.inet_ntop(socket.AF_INET6, data[24:40])
    else:
        return None
    l4 = data[start:]
    if proto in (6, 17, 132) and len(l4) >= 4:
        sport, dport = struct.unpack("!HH", l4[:4])
        if proto == 6 and (len(l4) < 14 or l4[13] & 0x12 != 0x02):
            return None  # only the SYN opens a connection; later segments and answers are not the probe
        name = {6: "tcp", 17: "udp", 132: "sctp"}[proto]
        return (name, sport), src, dst, dport
    if (proto, version) in ((1, 4), (58, 6)) and len(l4) >= 8 and l4[0] == (8 if version == 4 else 128):
        return ("echo", struct.unpack("!H", l4[4:6])[0]), src, dst, None
    return None


def _inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _sctp_init(sport: int, dport: int) -> bytes:
    """An SCTP INIT (RFC 9260 §3.3.2) that connection tracking takes for a new association."""
    chunk = struct.pack("!BBHIIHHI", 1, 0, 20, sport or 1, 65535, 1, 1, 1)  # type, flags, length, tag, a_rwnd, streams, TSN
    common = struct.pack("!HHII", sport, dport, 0, 0)  # verification tag 0 in an INIT
    checksum = _crc32c(common + chunk)
    return common[:8] + struct.pack("<I", checksum) + chunk
