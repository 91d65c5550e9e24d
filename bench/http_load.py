"""A lean HTTP/1.1 load generator for the single-send benchmark.

The benchmark's load generator shares the machine's two cores with the daemon, PostgreSQL and
the simulator. aiohttp's client spent 0.4-0.6 ms of CPU per request (building headers,
cookie jars, response objects, JSON), as much as PostgreSQL spends on a send: a load generator
that heavy takes from the thing it measures. This one keeps persistent connections, writes
prepared request bytes and reads only the status line and Content-Length, as wrk does; its
CPU is still measured and printed (the "bench" part of the CPU record).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[:end + 4 + length]
        waiter.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection"))

    async def request(self, data: bytes, timeout: float) -> int:
        if self.closed or self.transport is None:
            raise ConnectionError("the connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        async with asyncio.timeout(timeout):  # a lost answer is an error, never a hang
            return await self.waiter


class LeanClient:
    """POSTs prepared bodies over a pool of keep-alive connections; returns HTTP statuses."""

    def __init__(self, base: str, headers: dict[str, str], limit: int = 256,
                 timeout: float = 30.0) -> None:
        self.timeout = timeout
        url = urlsplit(base)
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.idle: list[_Connection] = []
        self.slots = asyncio.Semaphore(limit)
        self.open: list[_Connection] = []

    async def post(self, path: str, body: bytes) -> int:
        data = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.extra}"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode() + body
        async with self.slots:
            while self.idle and self.idle[-1].closed:  # closed by the server while idle
                self.idle.pop()
            conn = self.idle.pop() if self.idle else await self._connect()
            try:
                status = await conn.request(data, self.timeout)
            except BaseException:
                conn.closed = True
                if conn.transport is not None:
                    conn.transport.close()
                raise
            if not conn.closed:
                self.idle.append(conn)
            return status

    async def _connect(self) -> _Connection:
        _, conn = await asyncio.get_running_loop().create_connection(
            _Connection, self.host, self.port)
        self.open.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.open:
            if conn.transport is not None:
                conn.transport.close()
