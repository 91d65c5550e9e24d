"""What a real peer received, seen from outside it: a packet socket on the loopback interface
(root only) collecting the RTP sent to one UDP port. SIPp cannot say how much audio it got;
the kernel can."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # each loopback packet is seen twice: going out and coming in


@dataclass(slots=True)
class RtpSeen:
    """RTP datagrams to one port: (payload type, marker, sequence, timestamp, payload)."""

    port: int
    packets: list[tuple[int, bool, int, int, bytes]] = field(default_factory=list)

    def audio(self, payload_types: tuple[int, ...] = (0, 8)) -> bytes:
        """Every audio payload, in arrival order."""
        return b"".join(p[4] for p in self.packets if p[0] in payload_types)

    def seconds(self, payload_types: tuple[int, ...] = (0, 8)) -> float:
        """Seconds of G.711 audio received (8,000 bytes a second)."""
        return len(self.audio(payload_types)) / 8000


def can_sniff() -> bool:
    return hasattr(socket, "AF_PACKET") and os.geteuid() == 0


@contextlib.contextmanager
def rtp_to(port: int) -> Iterator[RtpSeen]:
    """Collect the RTP sent to UDP `port` on 127.0.0.0/8 while the block runs."""
    seen = RtpSeen(port)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind(("lo", 0))
    # Every loopback packet of the machine comes through here and is filtered in Python: with
    # other traffic on lo (a benchmark, a parallel test) a default buffer overflows and the
    # count comes out short. Root (which a packet socket needs anyway) may force a large one.
    sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 32 * 1024 * 1024)
    sock.settimeout(0.1)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                frame, address = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == PACKET_OUTGOING or len(frame) < 14 + 20 + 8 + 12:
                continue
            if struct.unpack_from("!H", frame, 12)[0] != 0x0800:  # IPv4
                continue
            ihl = (frame[14] & 0x0F) * 4
            if frame[14 + 9] != 17:  # UDP
                continue
            udp = 14 + ihl
            dport = struct.unpack_from("!H", frame, udp + 2)[0]
            if dport != port:
                continue
            rtp = frame[udp + 8:]
            if rtp[0] & 0xC0 != 0x80:
                continue
            start = 12 + 4 * (rtp[0] & 0x0F)
            seq, ts = struct.unpack_from("!HI", rtp, 2)
            seen.packets.append((rtp[1] & 0x7F, bool(rtp[1] & 0x80), seq, ts, rtp[start:]))

    thread = threading.Thread(target=run, name=f"sniff-{port}", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(2)
        sock.close()
