"""The UDP payloads of a classic libpcap file (Ethernet/IPv4), read with fixed offsets so the
tests do not trust our own RTP parser to find them."""

from __future__ import annotations

import struct
from pathlib import Path

SIPP_PCAPS = Path("/usr/share/sip-tester")


def udp_payloads(path: Path) -> list[bytes]:
    blob = path.read_bytes()
    magic = blob[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack_from(endian + "I", blob, 20)[0]
    link = {1: 14, 113: 16, 0: 4}[linktype]
    out: list[bytes] = []
    offset = 24
    while offset + 16 <= len(blob):
        incl = struct.unpack_from(endian + "I", blob, offset + 8)[0]
        frame = blob[offset + 16:offset + 16 + incl]
        offset += 16 + incl
        ip = frame[link:]
        if not ip or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        udp_len = struct.unpack_from("!H", ip, ihl + 4)[0]
        out.append(bytes(ip[ihl + 8:ihl + udp_len]))
    return out
