"""Outgoing TCP connections leave from the configured source address (multi-homed hosts)."""

from __future__ import annotations

import asyncio

from protocols.sip.transaction import Peer
from protocols.sip.transport import TcpTransport


async def test_outgoing_tcp_connections_leave_from_the_chosen_source_address() -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.put_nowait(writer.get_extra_info("peername")[0])
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tcp = TcpTransport(lambda data, peer, transport: True, source_host="127.0.0.2")
    try:
        tcp.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n", Peer("TCP", "127.0.0.1", port))
        assert await asyncio.wait_for(seen.get(), 5) == "127.0.0.2"
    finally:
        tcp.close()
        server.close()
        await server.wait_closed()
