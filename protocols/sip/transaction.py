"""RFC 3261 §17 transactions (with the RFC 6026 Accepted state), sans-I/O.

The ``TransactionLayer`` takes parsed messages plus the current time and queues events for
the transaction user (TU) and datagrams for the transport. It never reads a clock: the
caller drives it with ``get_timer()`` / ``handle_timer(now)``.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from protocols.sip.errors import SipSyntaxError
from protocols.sip.headers import Via
from protocols.sip.message import (
    MAGIC_COOKIE,
    Request,
    Response,
    make_cancel,
    make_non2xx_ack,
    make_response,
)
from protocols.sip.uri import URI


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to; for TCP/TLS it names the connection."""

    transport: str  # "UDP", "TCP", "TLS"
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """Stream transports deliver reliably, so retransmission timers are not used."""
        return self.transport != "UDP"

    @classmethod
    def from_uri(cls, uri: URI, default_transport: str = "UDP") -> Peer:
        """Next hop for a URI without DNS (RFC 3263 §4 numeric/explicit-port case)."""
        transport = (uri.transport or default_transport).upper()
        if uri.scheme == "sips" and transport != "TLS":
            transport = "TLS"
        host = uri.param("maddr") or uri.host
        port = uri.port or (5061 if transport == "TLS" else 5060)
        return cls(transport, host.strip("[]"), port)


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 timer base values in seconds (T1 RTT estimate, T2 cap, T4 network lifetime)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0


class State(enum.Enum):
    """Transaction states across the four machines (RFC 3261 figs. 5-8, RFC 6026)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# --- events for the TU -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (not a retransmission, not ACK) for the TU to answer via ``transaction``."""

    request: Request
    peer: Peer
    transaction: ServerTransaction


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx (end-to-end, new branch); ``transaction`` is the INVITE it confirms."""

    ack: Request
    peer: Peer
    transaction: InviteServerTransaction | None


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL matched ``invite``; 200 to the CANCEL was sent, the TU should send 487."""

    cancel: Request
    invite: InviteServerTransaction


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for ``transaction``; None only for a 2xx to INVITE after it ended."""

    response: Response
    transaction: ClientTransaction | None


@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B/F (no final response: treat as 408) or Timer H (no ACK for a non-2xx)."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class AckTimedOut:
    """No ACK came for our 2xx within 64*T1 (§13.3.1.4): the TU should send BYE."""

    transaction: InviteServerTransaction


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport could not send for ``transaction`` (treat as 503 on the client side)."""

    transaction: Transaction


Event = (
    RequestReceived
    | AckReceived
    | CancelReceived
    | ResponseReceived
    | TransactionTimedOut
    | AckTimedOut
    | TransportFailed
)

ClientKey = tuple[str, str]
ServerKey = tuple[str, str, int | None, str]


# --- transactions ------------------------------------------------------------------------


class Transaction:
    """State, timers and the last message shared by all four machines."""

    __slots__ = ("_last", "_layer", "_scheduled", "_timers", "key", "peer", "request", "state")

    key: ClientKey | ServerKey

    def __init__(self, layer: TransactionLayer, request: Request, peer: Peer, state: State):
        self._layer = layer
        self.request = request
        self.peer = peer
        self.state = state
        self._timers: dict[str, float] = {}
        self._last: bytes | None = None  # last message sent, for retransmission
        self._scheduled: float | None = None  # deadline of this transaction's live heap entry

    @property
    def reliable(self) -> bool:
        """Whether this transaction runs over a reliable transport."""
        return self.peer.reliable

    def get_timer(self) -> float | None:
        """Earliest pending timer deadline, or None."""
        return min(self._timers.values()) if self._timers else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer whose deadline has passed."""
        for name, deadline in sorted(self._timers.items(), key=lambda item: item[1]):
            if deadline <= now and self._timers.get(name) == deadline:
                del self._timers[name]
                self._fire(name, now)
        self._layer._schedule(self)

    def _fire(self, name: str, now: float) -> None:
        raise NotImplementedError

    def _start(self, name: str, at: float) -> None:
        self._timers[name] = at

    def _send(self, data: bytes) -> None:
        self._last = data
        self._layer._emit(data, self.peer)

    def _resend(self) -> None:
        if self._last is not None:
            self._layer._emit(self._last, self.peer)

    def _terminate(self) -> None:
        self.state = State.TERMINATED
        self._timers.clear()
        self._layer._forget(self)

    def transport_error(self) -> None:
        """Report that the transport failed to deliver for this transaction (§17.1.4)."""
        if self.state is not State.TERMINATED:
            self._layer._events.append(TransportFailed(self))
            self._terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key} {self.state.name}>"


class ClientTransaction(Transaction):
    """Base of client transactions; ``key`` is (branch, method)."""

    __slots__ = ()

    key: ClientKey

    def receive(self, response: Response, now: float) -> None:
        """Process a response matched to this transaction."""
        raise NotImplementedError


class InviteClientTransaction(ClientTransaction):
    """INVITE client transaction (§17.1.1, fig. 5; RFC 6026 Accepted state)."""

    __slots__ = ("_cancel", "_interval")

    def __init__(self, layer: TransactionLayer, request: Request, peer: Peer, now: float):
        super().__init__(layer, request, peer, State.CALLING)
        self._interval = layer.timers.t1
        self._cancel: Request | None = None  # CANCEL waiting for a provisional (§9.1)
        self._send(request.encode())
        if not self.reliable:
            self._start("A", now + self._interval)
        self._start("B", now + 64 * layer.timers.t1)

    def _fire(self, name: str, now: float) -> None:
        if name == "A" and self.state is State.CALLING:
            self._resend()
            self._interval *= 2  # Timer A doubles without the T2 cap
            self._start("A", now + self._interval)
        elif name == "B" and self.state is State.CALLING:
            self._layer._events.append(TransactionTimedOut(self))
            self._terminate()
        elif name in ("D", "M"):
            self._terminate()

    def receive(self, response: Response, now: float) -> None:
        """Handle a 1xx/2xx/3xx-6xx according to the current state."""
        state = self.state
        status = response.status
        events = self._layer._events
        if state in (State.CALLING, State.PROCEEDING):
            if status < 200:
                self.state = State.PROCEEDING
                self._timers.pop("A", None)
                self._timers.pop("B", None)
                events.append(ResponseReceived(response, self))
                if self._cancel is not None:
                    cancel, self._cancel = self._cancel, None
                    self._layer.send_request(cancel, self.peer, now)
            elif status < 300:
                self.state = State.ACCEPTED
                self._timers.clear()
                self._start("M", now + 64 * self._layer.timers.t1)
                events.append(ResponseReceived(response, self))
            else:
                self.state = State.COMPLETED
                self._timers.clear()
                self._send(make_non2xx_ack(self.request, response).encode())
                self._start("D", now + (0.0 if self.reliable else self._layer.timers.timer_d))
                events.append(ResponseReceived(response, self))
        elif state is State.ACCEPTED:
            if 200 <= status < 300:
                # Retransmitted/forked 2xx: the TU (dialog) must ACK each one.
                events.append(ResponseReceived(response, self))
        elif state is State.COMPLETED and status >= 300:
            self._resend()  # the ACK
        self._layer._schedule(self)

    def cancel(self, now: float) -> Request | None:
        """Build and send CANCEL (once a provisional arrived, else when it does; §9.1)."""
        if self.state is State.PROCEEDING:
            cancel = make_cancel(self.request)
            self._layer.send_request(cancel, self.peer, now)
            return cancel
        if self.state is State.CALLING and self._cancel is None:
            self._cancel = make_cancel(self.request)
            return self._cancel
        return None


class NonInviteClientTransaction(ClientTransaction):
    """Non-INVITE client transaction (§17.1.2, fig. 6)."""

    __slots__ = ("_interval",)

    def __init__(self, layer: TransactionLayer, request: Request, peer: Peer, now: float):
        super().__init__(layer, request, peer, State.TRYING)
        self._interval = layer.timers.t1
        self._send(request.encode())
        if not self.reliable:
            self._start("E", now + self._interval)
        self._start("F", now + 64 * layer.timers.t1)

    def _fire(self, name: str, now: float) -> None:
        t2 = self._layer.timers.t2
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            self._resend()
            # In Trying the interval doubles up to T2; in Proceeding it is T2 (§17.1.2.2).
            self._interval = min(2 * self._interval, t2) if self.state is State.TRYING else t2
            self._start("E", now + self._interval)
        elif name == "F" and self.state in (State.TRYING, State.PROCEEDING):
            self._layer._events.append(TransactionTimedOut(self))
            self._terminate()
        elif name == "K":
            self._terminate()

    def receive(self, response: Response, now: float) -> None:
        """Handle a response according to the current state."""
        if self.state not in (State.TRYING, State.PROCEEDING):
            return  # Completed absorbs retransmitted finals
        self._layer._events.append(ResponseReceived(response, self))
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._timers.clear()
            if self.reliable:
                self._terminate()
                return
            self._start("K", now + self._layer.timers.t4)
        self._layer._schedule(self)


class ServerTransaction(Transaction):
    """Base of server transactions; ``key`` is (branch, sent-by host, port, method)."""

    __slots__ = ()

    key: ServerKey

    def respond(self, response: Response, now: float) -> None:
        """Send a response built by the TU (e.g. with ``make_response``)."""
        raise NotImplementedError

    def reply(
        self,
        status: int,
        reason: str = "",
        *,
        to_tag: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        now: float,
    ) -> Response:
        """Build a response to ``request`` with ``make_response`` and send it."""
        response = make_response(
            self.request, status, reason, to_tag=to_tag, headers=headers, body=body
        )
        self.respond(response, now)
        return response

    def retransmission(self, request: Request, now: float) -> None:
        """A retransmitted request matched this transaction."""
        raise NotImplementedError


class InviteServerTransaction(ServerTransaction):
    """INVITE server transaction (§17.2.1, fig. 7) with RFC 6026 Accepted.

    In Accepted it also retransmits the 2xx (T1 doubling to T2) until the ACK arrives; RFC
    3261 §13.3.1.4 gives that job to the UAS core, and keeping it here spares every TU.
    """

    __slots__ = ("_interval", "acked", "final")

    def __init__(self, layer: TransactionLayer, request: Request, peer: Peer):
        super().__init__(layer, request, peer, State.PROCEEDING)
        self._interval = layer.timers.t1
        self.final: Response | None = None
        self.acked = False

    def respond(self, response: Response, now: float) -> None:
        """Send a provisional, 2xx or failure response."""
        status = response.status
        timers = self._layer.timers
        if self.state is State.PROCEEDING:
            self._send(response.encode())
            if status < 200:
                return
            self.final = response
            if status < 300:
                self.state = State.ACCEPTED
                self._start("L", now + 64 * timers.t1)
                if not self.reliable:
                    self._start("2xx", now + self._interval)
                self._layer._accepted_index(self, add=True)
            else:
                self.state = State.COMPLETED
                if not self.reliable:
                    self._start("G", now + self._interval)
                self._start("H", now + 64 * timers.t1)
            self._layer._schedule(self)
        elif self.state is State.ACCEPTED and 200 <= status < 300:
            self._send(response.encode())  # TU-driven 2xx retransmission is allowed

    def _fire(self, name: str, now: float) -> None:
        t2 = self._layer.timers.t2
        if name in ("G", "2xx") and self.state in (State.COMPLETED, State.ACCEPTED):
            self._resend()
            self._interval = min(2 * self._interval, t2)
            self._start(name, now + self._interval)
        elif name == "H" and self.state is State.COMPLETED:
            self._layer._events.append(TransactionTimedOut(self))
            self._terminate()
        elif name == "I":
            self._terminate()
        elif name == "L":
            if not self.acked:
                self._layer._events.append(AckTimedOut(self))
            self._layer._accepted_index(self, add=False)
            self._terminate()

    def retransmission(self, request: Request, now: float) -> None:
        """INVITE retransmission: resend the last response; ACK for a non-2xx: confirm."""
        if request.method == "ACK":
            if self.state is State.ACCEPTED:
                # An ACK for our 2xx that (wrongly, but commonly) reuses the INVITE branch.
                self.ack_2xx(request)
                self._layer._events.append(AckReceived(request, self.peer, self))
            elif self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._timers.clear()
                self._start("I", now + (0.0 if self.reliable else self._layer.timers.t4))
                self._layer._schedule(self)
            return
        if self.state in (State.PROCEEDING, State.COMPLETED, State.ACCEPTED):
            self._resend()

    def ack_2xx(self, ack: Request) -> None:
        """The end-to-end ACK for our 2xx arrived: stop retransmitting it."""
        self.acked = True
        self._timers.pop("2xx", None)


class NonInviteServerTransaction(ServerTransaction):
    """Non-INVITE server transaction (§17.2.2, fig. 8)."""

    __slots__ = ()

    def __init__(self, layer: TransactionLayer, request: Request, peer: Peer):
        super().__init__(layer, request, peer, State.TRYING)

    def respond(self, response: Response, now: float) -> None:
        """Send a provisional or final response."""
        if self.state not in (State.TRYING, State.PROCEEDING):
            return
        self._send(response.encode())
        if response.status < 200:
            self.state = State.PROCEEDING
            return
        self.state = State.COMPLETED
        if self.reliable:
            self._terminate()
            return
        self._start("J", now + 64 * self._layer.timers.t1)
        self._layer._schedule(self)

    def _fire(self, name: str, now: float) -> None:
        if name == "J":
            self._terminate()

    def retransmission(self, request: Request, now: float) -> None:
        """Resend the last response (nothing yet in Trying)."""
        if self.state in (State.PROCEEDING, State.COMPLETED):
            self._resend()


# --- the layer ---------------------------------------------------------------------------


def response_peer(via: Via, source: Peer) -> Peer:
    """Where responses to a request go (§18.2.2, RFC 3581): same connection when reliable."""
    if source.reliable:
        return source
    maddr = via.maddr
    if maddr:
        return Peer(source.transport, maddr, via.port or 5060)
    port = source.port if via.wants_rport else (via.port or 5060)
    return Peer(source.transport, source.host, port)


def _server_key(via: Via, request: Request) -> ServerKey:
    method = request.method
    branch = via.branch or ""
    if not branch.startswith(MAGIC_COOKIE):
        # RFC 2543 peer: no unique branch, so add the dialog/CSeq identifiers to keep
        # distinct requests apart (a simplification of the full §17.2.3 fallback).
        branch = f"{branch}|{request.call_id}|{request.cseq.seq}|{request.from_tag or ''}"
    return (branch, via.host, via.port, "INVITE" if method == "ACK" else method)


class TransactionLayer:
    """Matches messages to transactions, runs their timers and queues events and output."""

    def __init__(self, timers: TimerConfig | None = None, *, auto_trying: bool = True) -> None:
        self.timers = timers or TimerConfig()
        self.auto_trying = auto_trying  # send 100 Trying at once for every new INVITE
        self._clients: dict[ClientKey, ClientTransaction] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._accepted: dict[tuple[str, int, str], InviteServerTransaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._seq = itertools.count()
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Peer]] = []
        # Called when output becomes pending, so that whoever owns the sockets sends it
        # without every caller having to remember a flush (the asyncio driver sets it).
        self.on_output: Callable[[], None] | None = None

    # - outputs -

    def next_event(self) -> Event | None:
        """Pop the next event for the TU, or None."""
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        """Take the queued (bytes, destination) pairs for the transport."""
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """When ``handle_timer`` should next be called, or None."""
        heap = self._heap
        while heap:
            deadline, _, txn = heap[0]
            if txn._scheduled == deadline:
                return deadline
            heapq.heappop(heap)  # superseded entry
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every transaction timer due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, txn = heapq.heappop(heap)
            if txn._scheduled != deadline:
                continue
            txn._scheduled = None
            due = txn.get_timer()
            if due is not None and due <= now:
                txn.handle_timer(now)
            else:
                self._schedule(txn)  # its earliest timer was cancelled; track the next one

    # - inputs -

    def send_request(self, request: Request, peer: Peer, now: float) -> ClientTransaction:
        """Start a client transaction for ``request`` (top Via with a fresh branch required)."""
        via = request.top_via
        branch = via.branch
        if not branch or not branch.startswith(MAGIC_COOKIE):
            raise ValueError("request needs a top Via with an RFC 3261 branch")
        if request.method == "ACK":
            raise ValueError("ACK is not sent in a transaction; use send_stateless")
        txn: ClientTransaction
        if request.method == "INVITE":
            txn = InviteClientTransaction(self, request, peer, now)
        else:
            txn = NonInviteClientTransaction(self, request, peer, now)
        txn.key = (branch, request.method)
        self._clients[txn.key] = txn
        self._schedule(txn)
        return txn

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        """Queue a message outside any transaction (ACK for 2xx, stateless replies)."""
        self._emit(message.encode(), peer)

    def receive(self, message: Request | Response, peer: Peer, now: float) -> None:
        """Feed a parsed message (Via already stamped by the transport)."""
        if isinstance(message, Response):
            self._receive_response(message, now)
        else:
            self._receive_request(message, peer, now)

    def _receive_response(self, response: Response, now: float) -> None:
        try:
            key = (response.top_via.branch or "", response.cseq.method)
        except SipSyntaxError:
            return
        txn = self._clients.get(key)
        if txn is not None:
            txn.receive(response, now)
        elif key[1] == "INVITE" and 200 <= response.status < 300:
            # 2xx retransmission after the transaction ended: the dialog must re-ACK.
            self._events.append(ResponseReceived(response, None))

    def _receive_request(self, request: Request, peer: Peer, now: float) -> None:
        via = request.top_via
        method = request.method
        key = _server_key(via, request)
        txn = self._servers.get(key)
        if txn is not None:
            txn.retransmission(request, now)
            return
        if method == "ACK":
            # ACK for a 2xx has its own branch; match it by dialog identifiers instead.
            acked = self._accepted.get((request.call_id, request.cseq.seq, request.from_tag or ""))
            if acked is not None:
                acked.ack_2xx(request)
            self._events.append(AckReceived(request, peer, acked))
            return
        reply_to = response_peer(via, peer)
        new: ServerTransaction
        if method == "INVITE":
            new = InviteServerTransaction(self, request, reply_to)
        else:
            new = NonInviteServerTransaction(self, request, reply_to)
        new.key = key
        self._servers[key] = new
        if method == "CANCEL":
            invite = self._servers.get((key[0], key[1], key[2], "INVITE"))
            if isinstance(invite, InviteServerTransaction):
                new.reply(200, now=now)
                if invite.state is State.PROCEEDING:
                    self._events.append(CancelReceived(request, invite))
            else:
                new.reply(481, now=now)
            return
        if method == "INVITE" and self.auto_trying:
            new.reply(100, now=now)
        self._events.append(RequestReceived(request, peer, new))

    # - internal -

    def _emit(self, data: bytes, peer: Peer) -> None:
        if not self._out and self.on_output is not None:
            self.on_output()
        self._out.append((data, peer))

    def _schedule(self, txn: Transaction) -> None:
        # One live heap entry per transaction; a cancelled timer leaves its entry in place
        # and handle_timer re-tracks the transaction when that entry comes due.
        deadline = txn.get_timer()
        if deadline is not None and (txn._scheduled is None or deadline < txn._scheduled):
            txn._scheduled = deadline
            heapq.heappush(self._heap, (deadline, next(self._seq), txn))

    def _forget(self, txn: Transaction) -> None:
        if isinstance(txn, ClientTransaction):
            if self._clients.get(txn.key) is txn:
                del self._clients[txn.key]
        elif isinstance(txn, ServerTransaction) and self._servers.get(txn.key) is txn:
            del self._servers[txn.key]
            if isinstance(txn, InviteServerTransaction) and txn.final is not None:
                self._accepted_index(txn, add=False)

    def _accepted_index(self, txn: InviteServerTransaction, *, add: bool) -> None:
        request = txn.request
        key = (request.call_id, request.cseq.seq, request.from_tag or "")
        if add:
            self._accepted[key] = txn
        elif self._accepted.get(key) is txn:
            del self._accepted[key]

    def client_transactions_to(self, peer: Peer) -> list[ClientTransaction]:
        """Live client transactions sending to ``peer`` (to fail them on a transport error)."""
        return [txn for txn in self._clients.values() if txn.peer == peer]

    def has_transactions_with(self, peer: Peer) -> bool:
        """Whether a client or server transaction with ``peer`` is still live."""
        return any(txn.peer == peer for txns in (self._clients, self._servers)
                   for txn in txns.values())

    def __len__(self) -> int:
        return len(self._clients) + len(self._servers)
