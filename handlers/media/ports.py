"""RTP/RTCP port pairs from a configured range (even RTP port, RTCP on the next odd one)."""

from __future__ import annotations

import collections
import errno
import socket


class PortsExhausted(Exception):
    """Every pair of the range is in use (by us or by other programs)."""


class PortPool:
    """Hands out bound UDP socket pairs; released pairs go to the back of the queue so a port
    is not reused at once (late packets of the old call would land in the new one)."""

    def __init__(self, address: str, low: int, high: int, *, rcvbuf: int = 1 << 20) -> None:
        first = low + (low & 1)
        self.address = address
        self._free: collections.deque[int] = collections.deque(range(first, high, 2))
        self._size = len(self._free)
        self._rcvbuf = rcvbuf
        self.in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        return self._size

    def allocate(self) -> tuple[socket.socket, socket.socket]:
        """Two non-blocking bound sockets (RTP, RTCP); ports taken by others are skipped."""
        for _ in range(len(self._free)):
            port = self._free.popleft()
            pair = self._bind(port)
            if pair is not None:
                self.in_use.add(port)
                return pair
            self._free.append(port)
        raise PortsExhausted(f"no free RTP port pair in {self.address} range")

    def release(self, rtp: socket.socket, rtcp: socket.socket) -> None:
        """Close the pair and put its port back."""
        port = rtp.getsockname()[1]
        rtp.close()
        rtcp.close()
        if port in self.in_use:
            self.in_use.discard(port)
            self._free.append(port)

    def _bind(self, port: int) -> tuple[socket.socket, socket.socket] | None:
        socks: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
                s.setblocking(False)
                s.bind((self.address, p))
        except OSError as exc:
            for s in socks:
                s.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return None
            raise
        return socks[0], socks[1]
