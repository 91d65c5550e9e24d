"""Thin asyncio adapters: UDP and TCP transports, and an endpoint that drives the
sans-I/O ``TransactionLayer`` (feeding it messages, sending its output, running its timer).

Incoming requests get their top Via stamped (``received``/``rport``, RFC 3261 §18.2.1,
RFC 3581). Malformed input never raises: requests that can be answered get 400 (or 505),
anything else is dropped with a ``sip_message_dropped`` log event.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Protocol, cast

import structlog

from protocols.sip.errors import MalformedMessage, SipSyntaxError
from protocols.sip.message import (
    DEFAULT_LIMITS,
    Limits,
    Request,
    Response,
    StreamFramer,
    make_response,
    parse_message,
)
from protocols.sip.transaction import (
    ClientTransaction,
    Event,
    InviteClientTransaction,
    Peer,
    ServerTransaction,
    TransactionLayer,
    response_peer,
)

log = structlog.get_logger("telgate.sip.transport")

Message = Request | Response
MessageCallback = Callable[[Message, Peer, "Transport"], None]
ErrorCallback = Callable[[Peer, Exception], None]


class Transport(Protocol):
    """What the endpoint needs from a transport."""

    name: str

    def send(self, data: bytes, peer: Peer) -> None:
        """Send bytes to ``peer`` (for streams: its connection, opened if needed)."""

    def close(self) -> None:
        """Stop receiving and release sockets."""


def stamp_via(request: Request, source: Peer) -> None:
    """Add ``received`` when the sent-by host differs from the source, fill ``rport``."""
    try:
        via = request.top_via
        updates: dict[str, str | None] = {}
        if via.host != source.host:
            updates["received"] = source.host
        if via.wants_rport:
            updates["rport"] = str(source.port)
            updates["received"] = source.host  # RFC 3581 §4: always with rport
        if updates:
            request.headers.replace_first("Via", str(via.with_params(**updates)))
    except SipSyntaxError:
        return  # parse_message validated the top Via; this only guards hand-built requests


class _Receiver:
    """Shared receive path: parse errors, Via stamping, delivery."""

    name = "UDP"

    def __init__(self, on_message: MessageCallback, limits: Limits) -> None:
        self._on_message = on_message
        self._limits = limits

    def send(self, data: bytes, peer: Peer) -> None:
        raise NotImplementedError

    def _deliver(self, message: Message, source: Peer) -> None:
        if isinstance(message, Request):
            stamp_via(message, source)
        self._on_message(message, source, self)  # type: ignore[arg-type]

    def _reject(self, error: MalformedMessage, source: Peer) -> None:
        request = error.request
        if request is None or request.method == "ACK":
            log.info("sip_message_dropped", reason=error.reason, source=source.host,
                     port=source.port, transport=source.transport)
            return
        response = make_response(request, error.status, error.reason[:100])
        try:
            dest = response_peer(request.top_via, source)
        except SipSyntaxError:
            dest = source  # Via unusable: the source address is the best we have
        log.info("sip_message_rejected", reason=error.reason, status=error.status,
                 source=source.host, port=source.port, transport=source.transport)
        self.send(response.encode(), dest)


class UdpTransport(_Receiver, asyncio.DatagramProtocol):
    """SIP over UDP: one datagram, one message."""

    name = "UDP"

    def __init__(self, on_message: MessageCallback, limits: Limits = DEFAULT_LIMITS) -> None:
        super().__init__(on_message, limits)
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def listen(
        cls, host: str, port: int, on_message: MessageCallback, limits: Limits = DEFAULT_LIMITS
    ) -> UdpTransport:
        """Bind a UDP socket and start receiving."""
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(on_message, limits), local_addr=(host, port)
        )
        return protocol

    @property
    def local_address(self) -> tuple[str, int]:
        """(host, port) actually bound."""
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return host, port

    def set_receive_buffer(self, size: int) -> None:
        """Ask the kernel for a larger receive buffer (bursts outrun a busy event loop)."""
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio callback: keep the socket."""
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        """asyncio callback: parse one datagram, reject or deliver it."""
        source = Peer("UDP", str(addr[0]), int(addr[1]))
        if not data.strip(b"\r\n\x00"):
            return  # keep-alive
        try:
            message = parse_message(data, self._limits)
        except MalformedMessage as error:
            self._reject(error, source)
            return
        self._deliver(message, source)

    def error_received(self, exc: Exception) -> None:
        """asyncio callback: ICMP errors and the like (logged, not mapped to transactions)."""
        log.warning("sip_udp_error", error=str(exc))

    def send(self, data: bytes, peer: Peer) -> None:
        """Send one datagram."""
        if self._transport is not None:
            self._transport.sendto(data, (peer.host, peer.port))

    def close(self) -> None:
        """Close the socket."""
        if self._transport is not None:
            self._transport.close()


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: TcpTransport, peer: Peer | None = None) -> None:
        self._owner = owner
        self._framer = StreamFramer(owner._limits)
        self.peer = peer
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = transport.get_extra_info("peername")[:2]
        actual = Peer(self._owner.name, host, port)
        self._owner._connections[actual] = self
        if self.peer is not None and self.peer != actual:
            self._owner._connections[self.peer] = self
        self.peer = actual

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        for item in self._framer.feed(data):
            if isinstance(item, MalformedMessage):
                self._owner._reject(item, self.peer)
            else:
                self._owner._deliver(item, self.peer)
        if self._framer.broken and self.transport is not None:
            self.transport.close()  # framing is lost; the peer must reconnect

    def connection_lost(self, exc: Exception | None) -> None:
        connections = self._owner._connections
        for key in [k for k, v in connections.items() if v is self]:
            del connections[key]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class TcpTransport(_Receiver):
    """SIP over TCP: a listener plus client connections, keyed by peer address."""

    name = "TCP"

    def __init__(
        self,
        on_message: MessageCallback,
        limits: Limits = DEFAULT_LIMITS,
        on_error: ErrorCallback | None = None,
    ) -> None:
        super().__init__(on_message, limits)
        self._connections: dict[Peer, _TcpConnection] = {}
        self._server: asyncio.Server | None = None
        self._pending: dict[Peer, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_error = on_error

    async def listen(self, host: str, port: int) -> None:
        """Accept connections on (host, port)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _TcpConnection(self), host, port)

    @property
    def local_address(self) -> tuple[str, int]:
        """(host, port) of the listener."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    def send(self, data: bytes, peer: Peer) -> None:
        """Write to the peer's connection, connecting first when there is none."""
        connection = self._connections.get(peer)
        if connection is not None:
            connection.write(data)
            return
        queue = self._pending.get(peer)
        if queue is not None:
            queue.append(data)
            return
        self._pending[peer] = [data]
        task = asyncio.get_running_loop().create_task(self._connect(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _TcpConnection(self, peer), peer.host, peer.port
            )
        except OSError as exc:
            self._pending.pop(peer, None)
            log.warning("sip_tcp_connect_failed", host=peer.host, port=peer.port, error=str(exc))
            if self._on_error is not None:
                self._on_error(peer, exc)
            return
        for data in self._pending.pop(peer, []):
            connection.write(data)

    def close(self) -> None:
        """Close the listener and every connection."""
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections.values()):
            if connection.transport is not None:
                connection.transport.close()
        for task in self._tasks:
            task.cancel()


class SipEndpoint:
    """Glue between transports and a ``TransactionLayer``: the loop side of the stack.

    Messages from transports go into the layer; after every input the layer's datagrams
    are sent, its events handed to ``on_event`` and its next timer armed on the loop.
    """

    def __init__(
        self,
        layer: TransactionLayer,
        on_event: Callable[[Event], None],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.layer = layer
        self._on_event = on_event
        self._clock = clock
        self._transports: dict[str, Transport] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flushing = False

    def now(self) -> float:
        """The time used for the layer (loop time unless a clock was injected)."""
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def add_transport(self, transport: Transport) -> None:
        """Route messages for ``transport.name`` (UDP/TCP/...) through it."""
        self._transports[transport.name] = transport

    def on_message(self, message: Message, peer: Peer, transport: Transport) -> None:
        """Transport callback: feed the layer and flush."""
        self.layer.receive(message, peer, self.now())
        self.flush()

    def on_transport_error(self, peer: Peer, exc: Exception) -> None:
        """Transport error callback: fail the client transactions headed to ``peer``."""
        for txn in self.layer.client_transactions_to(peer):
            txn.transport_error()
        self.flush()

    def send_request(self, request: Request, peer: Peer) -> ClientTransaction:
        """Start a client transaction and send at once."""
        txn = self.layer.send_request(request, peer, self.now())
        self.flush()
        return txn

    def respond(self, transaction: ServerTransaction, response: Response) -> None:
        """Send a response in a server transaction at once."""
        transaction.respond(response, self.now())
        self.flush()

    def send_stateless(self, message: Message, peer: Peer) -> None:
        """Send outside transactions (ACK for 2xx, stateless replies)."""
        self.layer.send_stateless(message, peer)
        self.flush()

    def cancel(self, transaction: InviteClientTransaction) -> Request | None:
        """CANCEL a pending INVITE (sent once a provisional has arrived)."""
        cancel = transaction.cancel(self.now())
        self.flush()
        return cancel

    def flush(self) -> None:
        """Send queued datagrams, dispatch events, re-arm the timer.

        Call after touching the layer directly; the helpers above do it for you.
        """
        layer = self.layer
        if self._flushing:
            # Re-entered from an event handler: send now, leave event dispatch to the
            # outer call so a burst of events cannot recurse deeply.
            self._send_queued()
            return
        self._flushing = True
        try:
            while True:
                self._send_queued()
                event = layer.next_event()
                if event is None:
                    break
                self._on_event(event)  # may queue more output (e.g. a response)
        finally:
            self._flushing = False
        self._arm()

    def _send_queued(self) -> None:
        for data, peer in self.layer.datagrams_to_send():
            transport = self._transports.get(peer.transport)
            if transport is None:
                log.warning("sip_no_transport", transport=peer.transport)
                continue
            transport.send(data, peer)

    def _arm(self) -> None:
        deadline = self.layer.get_timer()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - self.now())
            self._timer = loop.call_at(loop.time() + delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self.layer.handle_timer(self.now())
        self.flush()

    def close(self) -> None:
        """Stop the timer and close every transport."""
        if self._timer is not None:
            self._timer.cancel()
        for transport in self._transports.values():
            transport.close()
