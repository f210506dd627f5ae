"""sFlow v5 datagrams built by hand, for the decoder's and the collector's tests.

Written from the specification's XDR, independently of `duct.protocol.sflow`.
"""

from __future__ import annotations

import socket
import struct

# One datagram from a switch (agent 172.30.0.5): four flow samples of
# Ethernet/IPv4 headers (UDP and TCP) and a counter sample for ifIndex 12.
CAPTURED = bytes.fromhex(
    "0000000500000001ac1e0005000000000000024c013f6c440000000500000001000000c4"
    "000001ff000000100000008000281d360000039a00000003000000100000000200000001"
    "0000008400000001000000750000000400000074e4ce8f2e8ad4d4ca6d97722a08004578"
    "00634d2d000037116b682986f489ac1e004f05d8e3eb004fe39dd8d06d1542813bda98a7"
    "d00009c7be3e4b9bd5d36e15b9551c301e5d2b6932c9b54e34ca22471ffe86489bc0a0b9"
    "9d97b979484d497a49f9c8cd88ad6774788590f1fa5f982d1a000000000003e900000010"
    "000000010000000000000001000000000000000100000094000001d40000000a00000080"
    "006648290000040b000000030000000a0000000200000001000000540000000100000046"
    "00000004000000442837371b02f4d4ca6d97722a080045800034b61340002606dfa23211"
    "e011ac1e004d01bbeeae95337793226abb1d801000530fb600000101080a83e492184153"
    "761d0000000003e900000010000000010000000000000001000000000000000100000094"
    "000001d50000000a0000008000664829000004100000000a000000030000000200000001"
    "0000005400000001000000460000000400000044d4ca6d97722a28cfe95ad86108004500"
    "00341389400040067e38ac1e005a524baa3ff1feede122e897d663bf430e801120004e9c"
    "00000101080a3b8239590011a8c30000000003e900000010000000010000000000000001"
    "ffffffff00000002000000a8000000210000000c0000000200000001000000580000000c"
    "000000060000000000989680000000010000000100000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000020000003400000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000010000009400000200000000100000008000281e1a0000039b0000001000000003"
    "00000002000000010000005400000001000000460000000400000044d4ca6d97722a5c0a"
    "5be0e414080045000034040d4000400611faac1e00ae174360ae8fe001bbac203ba810c0"
    "abd780102fea0e2700000101080a004a754de0d387870000000003e90000001000000001"
    "0000000000000001ffffffff"
)


def u32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}I", *values)


def framed(enterprise: int, fmt: int, data: bytes) -> bytes:
    return u32(enterprise << 12 | fmt, len(data)) + data


def datagram(*samples: bytes, agent: str = "10.0.0.1", version: int = 5) -> bytes:
    return (u32(version, 1) + socket.inet_aton(agent) + u32(0, 1, 1000, len(samples))
            + b"".join(samples))  # fmt: skip


def ipv4(src: str, dst: str, proto: int = 17, sport: int = 1234, dport: int = 53,
         length: int = 100) -> bytes:  # fmt: skip
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, length, 1, 0, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))  # fmt: skip
    return header + struct.pack(">HH", sport, dport) + b"\0" * 4


def ethernet(payload: bytes, vlan: int | None = None) -> bytes:
    macs = b"\x02" * 6 + b"\x04" * 6
    tag = b"" if vlan is None else struct.pack(">HH", 0x8100, vlan)
    return macs + tag + b"\x08\x00" + payload


def rawHeader(header: bytes, protocol: int = 1) -> bytes:
    padded = header + b"\0" * (-len(header) % 4)
    return framed(0, 1, u32(protocol, len(header) + 4, 4, len(header)) + padded)


def flowSample(*records: bytes, rate: int = 1, input: int = 3, output: int = 4) -> bytes:
    body = u32(1, input, rate, 100, 0, input, output, len(records)) + b"".join(records)
    return framed(0, 1, body)


def ifCounters(index: int, inOctets: int, outOctets: int) -> bytes:
    body = struct.pack(">IIQIIQIIIIIIQIIIIII", index, 6, 10**9, 1, 3, inOctets,
                       0, 0, 0, 0, 0, 0, outOctets, 0, 0, 0, 0, 0, 0)  # fmt: skip
    return framed(0, 1, body)


def counterSample(*records: bytes) -> bytes:
    return framed(0, 2, u32(1, 3, len(records)) + b"".join(records))
