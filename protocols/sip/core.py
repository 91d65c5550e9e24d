"""The sans-I/O SIP core: bytes in, events and bytes out (RFC 3261 §18 on top of §17).

``SipCore`` takes datagrams and stream bytes with the current time, parses them, stamps the
top Via of requests (``received``/``rport``, §18.2.1, RFC 3581), answers what cannot be
accepted (400, or 505 for another SIP version) and feeds the rest to its
``TransactionLayer``. Everything it and the layer want sent waits in ``datagrams_to_send()``;
the asyncio transports only move those bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from protocols.sip.transaction import Event, Peer, TransactionLayer, response_peer

log = structlog.get_logger("telgate.sip.core")


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


@dataclass(frozen=True, slots=True)
class StreamStatus:
    """What the core knows of one stream connection, for the transport's silence timeouts."""

    spoken: bool  # a complete message has arrived on it
    busy: bool  # a transaction with its peer is in progress


class SipCore:
    """Transport-independent receive path plus the transaction layer it feeds."""

    def __init__(self, layer: TransactionLayer | None = None,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        self.layer = layer if layer is not None else TransactionLayer()
        self._limits = limits
        self._framers: dict[Peer, StreamFramer] = {}

    # - inputs -

    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None:
        """One UDP datagram from ``peer``: one message, a keep-alive, or junk."""
        if not data.strip(b"\r\n\x00"):
            return  # keep-alive
        try:
            message = parse_message(data, self._limits)
        except MalformedMessage as error:
            self._reject(error, peer)
            return
        self.receive_message(message, peer, now)

    def receive_stream(self, data: bytes, peer: Peer, now: float) -> bool:
        """Bytes read from the stream connection ``peer``; False when framing is lost and
        the connection must be closed (the peer reconnects)."""
        framer = self._framers.get(peer)
        if framer is None:
            framer = self._framers[peer] = StreamFramer(self._limits)
        for item in framer.feed(data):
            if isinstance(item, MalformedMessage):
                self._reject(item, peer)
            else:
                self.receive_message(item, peer, now)
        if framer.broken:
            del self._framers[peer]
            return False
        return True

    def stream_closed(self, peer: Peer) -> None:
        """The stream connection ``peer`` is gone: forget its partial message."""
        self._framers.pop(peer, None)

    def stream_status(self, peer: Peer) -> StreamStatus:
        """Whether the stream ``peer`` has sent a message yet, and whether work with it is
        in progress (a silent connection is then waiting on us or we on it, not idle)."""
        framer = self._framers.get(peer)
        return StreamStatus(spoken=framer is not None and framer.messages > 0,
                            busy=self.layer.has_transactions_with(peer))

    def receive_message(self, message: Request | Response, peer: Peer, now: float) -> None:
        """An already parsed message (the datagram and stream paths end here)."""
        if isinstance(message, Request):
            stamp_via(message, peer)
        self.layer.receive(message, peer, now)

    def transport_error(self, peer: Peer) -> None:
        """Sending to ``peer`` failed (e.g. TCP connect refused): fail its transactions."""
        for txn in self.layer.client_transactions_to(peer):
            txn.transport_error()

    # - outputs (the layer's) -

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        """Take the queued (bytes, destination) pairs."""
        return self.layer.datagrams_to_send()

    def next_event(self) -> Event | None:
        """Pop the next event for the transaction user."""
        return self.layer.next_event()

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next run."""
        return self.layer.get_timer()

    def handle_timer(self, now: float) -> None:
        """Fire the timers due at ``now``."""
        self.layer.handle_timer(now)

    # - internal -

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
        self.layer.send_stateless(response, dest)
