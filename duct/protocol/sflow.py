"""sFlow version 5 datagrams, decoded with `struct`.

A datagram is XDR: a header naming the agent, then samples, each a
``(enterprise << 12 | format, length, data)`` triple, and inside each
sample a list of records framed the same way.  Only what a collector of
interface rates and traffic breakdowns needs is decoded:

- flow samples (standard and expanded) and, inside them, raw packet
  headers (Ethernet, with 802.1Q tags, or bare IPv4) down to IPv4 and its
  TCP or UDP ports, and sampled IPv4 records;
- counter samples (standard and expanded) and, inside them, generic
  interface counters.

Any sample or record whose enterprise and format are not among those is
skipped by its length, as the specification asks of a collector.  A
datagram that is not version 5, or whose lengths run past its end, raises
`Malformed`; nothing else escapes `decode`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

VERSION = 5

FLOW_SAMPLE = 1
COUNTER_SAMPLE = 2
FLOW_SAMPLE_EXPANDED = 3
COUNTER_SAMPLE_EXPANDED = 4

RAW_HEADER = 1
SAMPLED_IPV4 = 3
GENERIC_INTERFACE = 1

HEADER_ETHERNET = 1
HEADER_IPV4 = 11

PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP"}

_IF_COUNTERS = struct.Struct(">IIQIIQIIIIIIQIIIIII")


class Malformed(ValueError):
    """A datagram that is not sFlow v5, or is cut short, or whose lengths do not add up."""


@dataclass(frozen=True)
class Packet:
    """What a sampled packet's IPv4 header says: addresses, protocol, ports, length."""

    src: str
    dst: str
    protocol: int
    length: int
    """The IPv4 total length, in bytes."""
    sport: int | None = None
    dport: int | None = None


@dataclass(frozen=True)
class FlowSample:
    """One sampled packet (or none that could be read) and where it was seen."""

    sourceIndex: int
    samplingRate: int
    inputIndex: int
    outputIndex: int
    frameLength: int | None
    packet: Packet | None


@dataclass(frozen=True)
class InterfaceCounters:
    """A generic interface counter record (RFC 2233 ifTable)."""

    index: int
    type: int
    speed: int
    inOctets: int
    outOctets: int
    inErrors: int
    outErrors: int
    inDiscards: int
    outDiscards: int


@dataclass
class Datagram:
    """A decoded datagram: its agent, and the samples collected from it."""

    agent: str
    subAgent: int
    sequence: int
    uptime: int
    flows: list[FlowSample] = field(default_factory=list)
    counters: list[InterfaceCounters] = field(default_factory=list)
    skipped: int = 0
    """Samples and records skipped for an enterprise and format not decoded here."""


class _Reader:
    """A cursor over ``data[start:end]`` that raises `Malformed` instead of reading past it."""

    def __init__(self, data: bytes, start: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise Malformed(f"truncated: {n} bytes wanted at offset {self.pos}, {self.end} in all")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def opaque(self) -> bytes:
        """XDR variable-length opaque: a length, the bytes, then padding to four bytes."""
        n = self.u32()
        chunk = self.take(n)
        self.take(-n % 4)
        return chunk

    def framed(self) -> tuple[int, int, _Reader]:
        """An ``(enterprise, format, reader over its data)`` triple; the cursor moves past it."""
        kind = self.u32()
        length = self.u32()
        start = self.pos
        self.take(length)
        return kind >> 12, kind & 0xFFF, _Reader(self.data, start, start + length)


def _address(r: _Reader) -> str:
    kind = r.u32()
    if kind == 1:
        return str(ipaddress.IPv4Address(r.take(4)))
    if kind == 2:
        return str(ipaddress.IPv6Address(r.take(16)))
    if kind == 0:
        return ""
    raise Malformed(f"unknown agent address type {kind}")


def decode(data: bytes) -> Datagram:
    """Decode one sFlow v5 datagram; `Malformed` if it cannot be."""
    r = _Reader(data)
    version = r.u32()
    if version != VERSION:
        raise Malformed(f"sFlow version {version}, not {VERSION}")
    agent = _address(r)
    subAgent, sequence, uptime, count = r.u32(), r.u32(), r.u32(), r.u32()
    datagram = Datagram(agent, subAgent, sequence, uptime)
    for _ in range(count):
        enterprise, fmt, sample = r.framed()
        if enterprise != 0 or fmt not in (1, 2, 3, 4):
            datagram.skipped += 1
        elif fmt in (FLOW_SAMPLE, FLOW_SAMPLE_EXPANDED):
            _flowSample(sample, fmt == FLOW_SAMPLE_EXPANDED, datagram)
        else:
            _counterSample(sample, fmt == COUNTER_SAMPLE_EXPANDED, datagram)
    if r.pos != r.end:
        raise Malformed(f"{r.end - r.pos} bytes after the last of {count} samples")
    return datagram


def _flowSample(r: _Reader, expanded: bool, datagram: Datagram) -> None:
    r.u32()  # sequence number
    if expanded:
        r.u32()  # source id type
        sourceIndex = r.u32()
    else:
        sourceIndex = r.u32() & 0xFFFFFF
    samplingRate = r.u32()
    r.u32()  # sample pool
    r.u32()  # drops
    if expanded:
        r.u32()
        inputIndex = r.u32()
        r.u32()
        outputIndex = r.u32()
    else:
        inputIndex = r.u32() & 0x3FFFFFFF
        outputIndex = r.u32() & 0x3FFFFFFF
    frameLength: int | None = None
    packet: Packet | None = None
    for _ in range(r.u32()):
        enterprise, fmt, record = r.framed()
        if enterprise == 0 and fmt == RAW_HEADER:
            headerProtocol, frameLength = record.u32(), record.u32()
            record.u32()  # bytes stripped
            packet = _header(headerProtocol, record.opaque())
        elif enterprise == 0 and fmt == SAMPLED_IPV4:
            length, protocol = record.u32(), record.u32()
            src, dst = record.take(4), record.take(4)
            sport, dport = record.u32(), record.u32()
            ports = protocol in (6, 17)
            if packet is None:
                packet = Packet(str(ipaddress.IPv4Address(src)), str(ipaddress.IPv4Address(dst)),
                                protocol, length, sport if ports else None,
                                dport if ports else None)  # fmt: skip
        else:
            datagram.skipped += 1
    datagram.flows.append(
        FlowSample(sourceIndex, samplingRate, inputIndex, outputIndex, frameLength, packet)
    )


def _header(protocol: int, header: bytes) -> Packet | None:
    """The IPv4 packet at the start of a sampled header, or None if it carries none."""
    offset = 0
    if protocol == HEADER_ETHERNET:
        offset = 12
        ethertype = None
        while offset + 2 <= len(header):
            ethertype = int.from_bytes(header[offset : offset + 2], "big")
            offset += 2
            if ethertype not in (0x8100, 0x88A8):
                break
            offset += 2  # the tag's priority and VLAN id, then the inner ethertype
        if ethertype != 0x0800:
            return None
    elif protocol != HEADER_IPV4:
        return None
    ip = header[offset:]
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return None
    ihl = (ip[0] & 0x0F) * 4
    length = int.from_bytes(ip[2:4], "big")
    fragment = int.from_bytes(ip[6:8], "big") & 0x1FFF
    proto = ip[9]
    src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
    sport = dport = None
    if proto in (6, 17) and fragment == 0 and ihl >= 20 and len(ip) >= ihl + 4:
        sport = int.from_bytes(ip[ihl : ihl + 2], "big")
        dport = int.from_bytes(ip[ihl + 2 : ihl + 4], "big")
    return Packet(src, dst, proto, length, sport, dport)


def _counterSample(r: _Reader, expanded: bool, datagram: Datagram) -> None:
    r.u32()  # sequence number
    r.u32()  # source id (and, expanded, its index)
    if expanded:
        r.u32()
    for _ in range(r.u32()):
        enterprise, fmt, record = r.framed()
        if enterprise == 0 and fmt == GENERIC_INTERFACE:
            v = _IF_COUNTERS.unpack(record.take(_IF_COUNTERS.size))
            datagram.counters.append(InterfaceCounters(
                index=v[0], type=v[1], speed=v[2], inOctets=v[5], outOctets=v[12],
                inErrors=v[10], outErrors=v[17], inDiscards=v[9], outDiscards=v[16]))  # fmt: skip
        else:
            datagram.skipped += 1
