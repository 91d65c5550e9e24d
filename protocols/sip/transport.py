"""Thin asyncio adapters: UDP and TCP transports that move bytes, and an endpoint that drives
the sans-I/O ``SipCore`` (feeding it bytes, sending its output, running its timer).

Parsing, Via stamping and 400/505 answers live in ``protocols.sip.core``; nothing here looks
inside a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, cast

import structlog

from protocols.sip.core import SipCore, StreamStatus, stamp_via
from protocols.sip.message import Request, Response
from protocols.sip.transaction import (
    ClientTransaction,
    Event,
    InviteClientTransaction,
    Peer,
    ServerTransaction,
    TransactionLayer,
)

__all__ = ["SipEndpoint", "StreamTimeouts", "TcpTransport", "Transport", "UdpTransport",
           "stamp_via"]

log = structlog.get_logger("telgate.sip.transport")

Message = Request | Response
# Bytes received from a peer; False asks a stream transport to close the connection.
DataCallback = Callable[[bytes, Peer, "Transport"], bool]
ErrorCallback = Callable[[Peer, Exception], None]
ClosedCallback = Callable[[Peer], None]
StatusCallback = Callable[[Peer], StreamStatus]
Silence = Literal["first_message", "idle"]  # why a stream connection was closed


class Transport(Protocol):
    """What the endpoint needs from a transport."""

    name: str

    def send(self, data: bytes, peer: Peer) -> None:
        """Send bytes to ``peer`` (for streams: its connection, opened if needed)."""

    def close(self) -> None:
        """Stop receiving and release sockets."""


class UdpTransport(asyncio.DatagramProtocol):
    """SIP over UDP: hands every datagram to ``on_data``."""

    name = "UDP"

    def __init__(self, on_data: DataCallback) -> None:
        self._on_data = on_data
        self._transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def listen(cls, host: str, port: int, on_data: DataCallback) -> UdpTransport:
        """Bind a UDP socket and start receiving."""
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: cls(on_data), local_addr=(host, port))
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
        """asyncio callback: pass the datagram on."""
        self._on_data(data, Peer("UDP", str(addr[0]), int(addr[1])), self)

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


@dataclass(frozen=True, slots=True)
class StreamTimeouts:
    """When a TCP connection is closed for silence; 0 turns a bound off.

    ``idle``: seconds without a byte from the peer (a CRLF keep-alive counts) while no
    transaction with it is in progress. ``first_message``: seconds a connection we accepted
    has to deliver its first complete message, so one that never speaks SIP is not kept
    for ``idle``.
    """

    idle: float = 0.0
    first_message: float = 0.0

    def first_check(self, opened_at: float, *, accepted: bool) -> float | None:
        """When to first look at a connection opened at ``opened_at`` (None: never)."""
        bounds = (self.first_message if accepted else 0.0, self.idle)
        return min((opened_at + bound for bound in bounds if bound > 0), default=None)

    def check(self, now: float, *, opened_at: float, received_at: float, accepted: bool,
              status: StreamStatus) -> tuple[Silence | None, float | None]:
        """(why to close the connection at ``now``, or None; when to look again, or None)."""
        first_at = opened_at + self.first_message
        waits_first = accepted and self.first_message > 0 and not status.spoken
        if waits_first and now >= first_at:
            return "first_message", None
        idle_at = received_at + self.idle
        if self.idle > 0 and now >= idle_at and not status.busy:
            return "idle", None
        checks = [first_at] if waits_first else []
        if self.idle > 0:
            # Busy past its idle time: look again a full period on, not in a loop.
            checks.append(idle_at if idle_at > now else now + self.idle)
        return None, min(checks, default=None)


class _TcpConnection(asyncio.Protocol):
    def __init__(self, owner: TcpTransport, peer: Peer | None = None) -> None:
        self._owner = owner
        self.peer = peer
        self._peers: tuple[Peer, ...] = ()  # its keys: the actual address, then the one asked for
        self.accepted = peer is None
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._opened_at = self._received_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = transport.get_extra_info("peername")[:2]
        actual = Peer(self._owner.name, host, port)
        self._owner._connections[actual] = self
        self._peers = (actual,)
        if self.peer is not None and self.peer != actual:
            self._owner._connections[self.peer] = self
            self._peers += (self.peer,)
        self.peer = actual
        self._opened_at = self._received_at = self._loop.time()
        self._arm(self._owner.timeouts.first_check(self._opened_at, accepted=self.accepted))

    def data_received(self, data: bytes) -> None:
        assert self.peer is not None
        # The timer is not moved here (a message must not churn the loop's heap): when it
        # fires it finds the connection active and looks again later.
        self._received_at = self._loop.time()
        if not self._owner._on_data(data, self.peer, self._owner) and \
                self.transport is not None:
            self.transport.close()  # framing is lost; the peer must reconnect

    def _check(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        assert self.peer is not None
        status = self._owner._status(self._peers)
        now = self._loop.time()
        reason, again = self._owner.timeouts.check(
            now, opened_at=self._opened_at, received_at=self._received_at,
            accepted=self.accepted, status=status)
        if reason is not None:
            log.info("sip_tcp_silent_closed", reason=reason, host=self.peer.host,
                     port=self.peer.port, silent=round(now - self._received_at, 3))
            self.transport.close()
        else:
            self._arm(again)

    def _arm(self, at: float | None) -> None:
        if at is not None:
            self._timer = self._loop.call_at(at, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        connections = self._owner._connections
        for key in self._peers:
            if connections.get(key) is self:
                del connections[key]
        if self.peer is not None and self._owner._on_closed is not None:
            self._owner._on_closed(self.peer)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class TcpTransport:
    """SIP over TCP: a listener plus client connections, keyed by peer address.

    Connections we open leave from ``source_host`` when given (a multi-homed host choosing
    the address its carrier allows). A connection silent for ``idle_seconds``, or accepted
    and without a complete message after ``first_message_seconds``, is closed (0: never);
    ``status`` tells whether a message has arrived and whether work is in progress (without
    it every connection counts as spoken and free).
    """

    name = "TCP"

    def __init__(self, on_data: DataCallback, *, on_error: ErrorCallback | None = None,
                 on_closed: ClosedCallback | None = None, status: StatusCallback | None = None,
                 idle_seconds: float = 0.0, first_message_seconds: float = 0.0,
                 source_host: str | None = None) -> None:
        self._on_data = on_data
        self._on_error = on_error
        self._on_closed = on_closed
        self._on_status = status
        self.timeouts = StreamTimeouts(idle=idle_seconds, first_message=first_message_seconds)
        self.source_host = source_host
        self._connections: dict[Peer, _TcpConnection] = {}
        self._server: asyncio.Server | None = None
        self._pending: dict[Peer, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

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
        local = (self.source_host, 0) if self.source_host else None
        try:
            _, connection = await loop.create_connection(
                lambda: _TcpConnection(self, peer), peer.host, peer.port, local_addr=local)
        except OSError as exc:
            self._pending.pop(peer, None)
            log.warning("sip_tcp_connect_failed", host=peer.host, port=peer.port, error=str(exc))
            if self._on_error is not None:
                self._on_error(peer, exc)
            return
        for data in self._pending.pop(peer, []):
            connection.write(data)

    def _status(self, peers: tuple[Peer, ...]) -> StreamStatus:
        if self._on_status is None:
            return StreamStatus(spoken=True, busy=False)
        # Bytes arrive under the actual address (first); requests may go to the asked-for one.
        found = [self._on_status(peer) for peer in peers]
        return StreamStatus(spoken=found[0].spoken, busy=any(s.busy for s in found))

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
    """The loop side of the stack: transports' bytes go into a ``SipCore``; whenever the
    core has output (after an input, a timer, or a transaction answered from anywhere, e.g.
    a task that awaited the database) it is sent, events go to ``on_event`` and the next
    timer is armed. Nobody has to remember a flush.
    """

    def __init__(
        self,
        layer: TransactionLayer | SipCore,
        on_event: Callable[[Event], None],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.core = layer if isinstance(layer, SipCore) else SipCore(layer)
        self.layer = self.core.layer
        self._on_event = on_event
        self._clock = clock
        self._transports: dict[str, Transport] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flushing = False
        self._flush_soon = False
        self.extra_timer: Callable[[], float | None] | None = None  # the TU's own deadline
        self.on_timer: Callable[[float], None] | None = None
        self.layer.on_output = self._wake

    def now(self) -> float:
        """The time used for the core (loop time unless a clock was injected)."""
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def add_transport(self, transport: Transport) -> None:
        """Route messages for ``transport.name`` (UDP/TCP/...) through it."""
        self._transports[transport.name] = transport

    def on_message(self, data: bytes, peer: Peer, transport: Transport) -> bool:
        """Transport callback: feed the core and flush; False closes a broken stream."""
        self._flush_soon = True  # flushed right below: no wake-up needed
        if peer.reliable:
            keep = self.core.receive_stream(data, peer, self.now())
        else:
            self.core.receive_datagram(data, peer, self.now())
            keep = True
        self.flush()
        return keep

    def on_stream_closed(self, peer: Peer) -> None:
        """Transport callback: a stream connection went away."""
        self.core.stream_closed(peer)

    def stream_status(self, peer: Peer) -> StreamStatus:
        """Transport callback: has the stream ``peer`` spoken, is work with it in progress."""
        return self.core.stream_status(peer)

    def on_transport_error(self, peer: Peer, exc: Exception) -> None:
        """Transport error callback: fail the client transactions headed to ``peer``."""
        self._flush_soon = True
        self.core.transport_error(peer)
        self.flush()

    def send_request(self, request: Request, peer: Peer) -> ClientTransaction:
        """Start a client transaction (sent at once)."""
        txn = self.layer.send_request(request, peer, self.now())
        self.flush()
        return txn

    def respond(self, transaction: ServerTransaction, response: Response) -> None:
        """Send a response in a server transaction (sent at once)."""
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

    def _wake(self) -> None:
        if self._flushing or self._flush_soon:
            return
        self._flush_soon = True
        with contextlib.suppress(RuntimeError):  # no loop: a synchronous caller flushes
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send queued datagrams, dispatch events, re-arm the timer."""
        self._flush_soon = False
        core = self.core
        if self._flushing:
            # Re-entered from an event handler: send now, leave event dispatch to the
            # outer call so a burst of events cannot recurse deeply.
            self._send_queued()
            return
        self._flushing = True
        try:
            while True:
                self._send_queued()
                event = core.next_event()
                if event is None:
                    break
                self._on_event(event)  # may queue more output (e.g. a response)
        finally:
            self._flushing = False
        self._arm()

    def _send_queued(self) -> None:
        for data, peer in self.core.datagrams_to_send():
            transport = self._transports.get(peer.transport)
            if transport is None:
                log.warning("sip_no_transport", transport=peer.transport)
                continue
            transport.send(data, peer)

    def _arm(self) -> None:
        deadline = self.core.get_timer()
        if self.extra_timer is not None:
            extra = self.extra_timer()
            if extra is not None and (deadline is None or extra < deadline):
                deadline = extra
        # A loop timer already due no later stays: it fires, finds nothing due and re-arms.
        # Re-arming on every later deadline would churn the loop's heap at each message.
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - self.now())
        self._timer = loop.call_at(loop.time() + delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        self._flush_soon = True
        now = self.now()
        self.core.handle_timer(now)
        if self.on_timer is not None:
            self.on_timer(now)
        self.flush()

    def close(self) -> None:
        """Stop the timer and close every transport."""
        if self._timer is not None:
            self._timer.cancel()
        for transport in self._transports.values():
            transport.close()
