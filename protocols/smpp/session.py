"""ESME side of an SMPP 3.4 session, sans-I/O (the aioquic shape).

The session owns no socket and no clock: feed it ``receive_data(data, now)``, send what
``data_to_send()`` returns, drain ``next_event()``, and call ``handle_timer(now)`` when
``get_timer()`` falls due. Times are seconds on any monotonic clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from protocols.smpp.codec import DEFAULT_MAX_COMMAND_LENGTH, DecodeError, PduDecoder
from protocols.smpp.constants import RESPONSE_BIT, CommandStatus
from protocols.smpp.pdu import (
    AlertNotification,
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
    CancelSm,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    QuerySm,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
)
from protocols.smpp.receipt import DeliveryReceipt, receipt_from_deliver_sm
from protocols.values import quick_init

_MAX_SEQUENCE = 0x7FFFFFFF


class BindMode(Enum):
    """Which bind the ESME asks for."""

    TRANSMITTER = "transmitter"
    RECEIVER = "receiver"
    TRANSCEIVER = "transceiver"


class SessionState(Enum):
    """Where the session is in its life."""

    OPEN = "open"  # transport up, no bind sent yet
    BINDING = "binding"
    BOUND = "bound"
    UNBINDING = "unbinding"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """Bind credentials and the session's flow-control and timer settings (seconds)."""

    system_id: str
    password: str
    system_type: str = ""
    bind_mode: BindMode = BindMode.TRANSCEIVER
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    window: int = 10
    response_timeout: float = 30.0
    bind_timeout: float = 10.0
    enquire_link_interval: float = 30.0
    # False lets the caller persist a receipt before acknowledging it (ack_deliver_sm).
    auto_ack_deliver_sm: bool = True
    max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be at least 1")
        if min(self.response_timeout, self.bind_timeout, self.enquire_link_interval) <= 0:
            raise ValueError("timeouts and the enquire_link interval must be positive")


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BindSucceeded:
    """The SMSC accepted the bind."""

    system_id: str
    sc_interface_version: int | None


@dataclass(frozen=True, slots=True)
class BindFailed:
    """The SMSC refused the bind (ESME_RINVPASWD, ...); SessionClosed follows."""

    command_status: int


@quick_init
@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response (or generic_nack) to one of our requests, with the caller's token."""

    token: object
    request: Pdu
    response: Pdu

    @property
    def command_status(self) -> int:
        """The response's command_status."""
        return self.response.command_status

    @property
    def ok(self) -> bool:
        """True when the SMSC answered ESME_ROK."""
        return self.response.command_status == 0

    @property
    def message_id(self) -> str | None:
        """The SMSC message id of a successful submit_sm/data_sm."""
        if isinstance(self.response, SubmitSmResp | DataSmResp) and self.ok:
            return self.response.message_id
        return None


@dataclass(frozen=True, slots=True)
class RequestTimedOut:
    """No response came within response_timeout; the request is in doubt."""

    token: object
    request: Pdu


@quick_init
@dataclass(frozen=True, slots=True)
class DeliverSmReceived:
    """A deliver_sm: a delivery receipt (``receipt`` set) or a mobile-originated message."""

    pdu: DeliverSm
    receipt: DeliveryReceipt | None

    @property
    def is_receipt(self) -> bool:
        """True for a delivery receipt, False for an MO message."""
        return self.receipt is not None


@dataclass(frozen=True, slots=True)
class DataSmReceived:
    """A data_sm from the SMSC (answered ESME_ROK)."""

    pdu: DataSm
    receipt: DeliveryReceipt | None


@dataclass(frozen=True, slots=True)
class AlertReceived:
    """An alert_notification (needs no answer)."""

    pdu: AlertNotification


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The SMSC sent something undecodable; it was answered with generic_nack if a request."""

    error: DecodeError


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session is over; ``unanswered`` lists requests whose fate is unknown (in doubt)."""

    reason: str
    unanswered: tuple[tuple[object, Pdu], ...]


Event = (
    BindSucceeded
    | BindFailed
    | ResponseReceived
    | RequestTimedOut
    | DeliverSmReceived
    | DataSmReceived
    | AlertReceived
    | ProtocolError
    | SessionClosed
)


class SessionError(Exception):
    """A request the session cannot take now; ``code`` is stable for callers."""

    code = "session_error"


class WindowFullError(SessionError):
    """``window`` requests are already waiting for their responses."""

    code = "window_full"


class NotBoundError(SessionError):
    """Requests need a bound session."""

    code = "not_bound"


class _Control(Enum):
    BIND = "bind"
    ENQUIRE_LINK = "enquire_link"
    UNBIND = "unbind"


_BIND_PDU: dict[BindMode, type[BindTransmitter | BindReceiver | BindTransceiver]] = {
    BindMode.TRANSMITTER: BindTransmitter,
    BindMode.RECEIVER: BindReceiver,
    BindMode.TRANSCEIVER: BindTransceiver,
}
_USER_REQUESTS = (SubmitSm, DataSm, QuerySm, CancelSm)


class EsmeSession:
    """One SMPP connection as seen by the ESME: bind, window, keep-alive, answers."""

    def __init__(self, config: SessionConfig) -> None:
        self.config = config
        self.state = SessionState.OPEN
        self._decoder = PduDecoder(config.max_command_length)
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._seq = 0
        # seq -> (token, request, deadline). Insertion order is deadline order because the
        # timeout is the same for all, so the earliest deadline is always the first entry.
        self._inflight: dict[int, tuple[object, Pdu, float]] = {}
        self._control: dict[int, tuple[_Control, float]] = {}
        self._last_rx = 0.0
        self.late_responses = 0

    # --- what the caller drives -------------------------------------------------------

    def bind(self, now: float) -> None:
        """Send the bind request (call once the transport is up)."""
        if self.state is not SessionState.OPEN:
            raise SessionError(f"bind in state {self.state.value}")
        c = self.config
        pdu = _BIND_PDU[c.bind_mode](
            system_id=c.system_id,
            password=c.password,
            system_type=c.system_type,
            addr_ton=c.addr_ton,
            addr_npi=c.addr_npi,
            address_range=c.address_range,
        )
        seq = self._next_seq()
        self._out.append(pdu.encode(seq))
        self._control[seq] = (_Control.BIND, now + c.bind_timeout)
        self._last_rx = now
        self.state = SessionState.BINDING

    @property
    def closed(self) -> bool:
        """True once SessionClosed has been emitted."""
        return self.state is SessionState.CLOSED

    @property
    def window_available(self) -> int:
        """How many more requests may be sent before the window is full."""
        return self.config.window - len(self._inflight)

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered or timed out."""
        return len(self._inflight)

    def send_request(self, pdu: Pdu, token: object, now: float) -> int:
        """Send submit_sm/data_sm/query_sm/cancel_sm; returns the sequence number used.

        Raises NotBoundError or WindowFullError instead of queueing: the caller owns the queue.
        """
        if self.state is not SessionState.BOUND:
            raise NotBoundError(f"state {self.state.value}")
        if len(self._inflight) >= self.config.window:
            raise WindowFullError(f"{self.config.window} requests in flight")
        if not isinstance(pdu, _USER_REQUESTS):
            raise SessionError(f"{type(pdu).__name__} is not a request the caller may send")
        seq = self._next_seq()
        self._out.append(pdu.encode(seq))
        self._inflight[seq] = (token, pdu, now + self.config.response_timeout)
        return seq

    def submit(self, pdu: SubmitSm, token: object, now: float) -> int:
        """Send a submit_sm; ResponseReceived or RequestTimedOut carries ``token`` back."""
        return self.send_request(pdu, token, now)

    def ack_deliver_sm(self, sequence_number: int, status: int = CommandStatus.ESME_ROK) -> None:
        """Answer a deliver_sm (only needed with auto_ack_deliver_sm=False)."""
        if self.state is not SessionState.CLOSED:
            resp = DeliverSmResp(sequence_number=sequence_number, command_status=status)
            self._out.append(resp.encode())

    def unbind(self, now: float) -> None:
        """Start an orderly close; SessionClosed("unbound") follows the SMSC's unbind_resp."""
        if self.state is SessionState.BOUND:
            seq = self._next_seq()
            self._out.append(Unbind().encode(seq))
            self._control[seq] = (_Control.UNBIND, now + self.config.response_timeout)
            self.state = SessionState.UNBINDING
        elif self.state in (SessionState.OPEN, SessionState.BINDING):
            self._close("unbound")

    def connection_lost(self, now: float) -> None:
        """The transport went away under us."""
        if self.state is not SessionState.CLOSED:
            self._close("connection_lost")

    def receive_data(self, data: bytes, now: float) -> None:
        """Octets from the SMSC."""
        if self.state is SessionState.CLOSED:
            return
        self._last_rx = now
        for item in self._decoder.feed(data):
            if self.closed:  # e.g. the peer's unbind came before the rest of this chunk
                return
            if isinstance(item, DecodeError):
                self._on_decode_error(item)
            elif item.command_id & RESPONSE_BIT:
                self._on_response(item)
            else:
                self._on_request(item)

    def data_to_send(self) -> bytes:
        """Octets to write to the transport (empty when there is nothing)."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def next_event(self) -> Event | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When handle_timer should next be called, or None."""
        if self.state is SessionState.CLOSED:
            return None
        deadlines = [d for _kind, d in self._control.values()]
        if self._inflight:
            deadlines.append(next(iter(self._inflight.values()))[2])
        if self.state is SessionState.BOUND and not self._enquire_pending():
            deadlines.append(self._last_rx + self.config.enquire_link_interval)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Expire requests, detect a dead link, send keep-alives."""
        if self.state is SessionState.CLOSED:
            return
        for seq, (kind, deadline) in list(self._control.items()):
            if deadline <= now:
                del self._control[seq]
                self._close(f"{kind.value}_timeout")
                return
        inflight = self._inflight
        while inflight:
            seq = next(iter(inflight))
            token, request, deadline = inflight[seq]
            if deadline > now:
                break
            del inflight[seq]
            self._events.append(RequestTimedOut(token, request))
        if (
            self.state is SessionState.BOUND
            and not self._enquire_pending()
            and now >= self._last_rx + self.config.enquire_link_interval
        ):
            seq = self._next_seq()
            self._out.append(EnquireLink().encode(seq))
            self._control[seq] = (_Control.ENQUIRE_LINK, now + self.config.response_timeout)

    # --- internals ---------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < _MAX_SEQUENCE else 1
        return self._seq

    def _enquire_pending(self) -> bool:
        return any(kind is _Control.ENQUIRE_LINK for kind, _d in self._control.values())

    def _close(self, reason: str) -> None:
        unanswered = tuple((token, req) for token, req, _d in self._inflight.values())
        self._inflight.clear()
        self._control.clear()
        self.state = SessionState.CLOSED
        self._events.append(SessionClosed(reason, unanswered))

    def _on_response(self, pdu: Pdu) -> None:
        seq = pdu.sequence_number
        pending = self._inflight.pop(seq, None)
        if pending is not None:
            self._events.append(ResponseReceived(pending[0], pending[1], pdu))
            return
        control = self._control.pop(seq, None)
        if control is None:
            # Answer to a request we already timed out (or never sent): nothing to wake.
            self.late_responses += 1
            return
        kind = control[0]
        if kind is _Control.BIND:
            if pdu.command_status == 0 and not isinstance(pdu, GenericNack):
                self.state = SessionState.BOUND
                version = getattr(pdu, "sc_interface_version", None)
                self._events.append(BindSucceeded(getattr(pdu, "system_id", ""), version))
            else:
                self._events.append(BindFailed(pdu.command_status))
                self._close("bind_failed")
        elif kind is _Control.UNBIND:
            self._close("unbound")
        # An enquire_link_resp needs nothing beyond having refreshed _last_rx.

    def _on_request(self, pdu: Pdu) -> None:
        seq = pdu.sequence_number
        if isinstance(pdu, DeliverSm):
            bound = self.state is SessionState.BOUND
            if not bound or self.config.bind_mode is BindMode.TRANSMITTER:
                status = CommandStatus.ESME_RINVBNDSTS
                self._out.append(DeliverSmResp(sequence_number=seq, command_status=status).encode())
                return
            self._events.append(DeliverSmReceived(pdu, receipt_from_deliver_sm(pdu)))
            if self.config.auto_ack_deliver_sm:
                self._out.append(DeliverSmResp(sequence_number=seq).encode())
        elif isinstance(pdu, EnquireLink):
            self._out.append(EnquireLinkResp(sequence_number=seq).encode())
        elif isinstance(pdu, Unbind):
            self._out.append(UnbindResp(sequence_number=seq).encode())
            self._close("peer_unbind")
        elif isinstance(pdu, DataSm):
            if self.state is not SessionState.BOUND:
                status = CommandStatus.ESME_RINVBNDSTS
                self._out.append(DataSmResp(sequence_number=seq, command_status=status).encode())
                return
            self._events.append(DataSmReceived(pdu, receipt_from_deliver_sm(pdu)))
            self._out.append(DataSmResp(sequence_number=seq).encode())
        elif isinstance(pdu, AlertNotification):
            self._events.append(AlertReceived(pdu))
        else:
            status = CommandStatus.ESME_RINVCMDID
            self._out.append(GenericNack(sequence_number=seq, command_status=status).encode())

    def _on_decode_error(self, error: DecodeError) -> None:
        if not error.was_response:
            nack = GenericNack(
                sequence_number=error.sequence_number or 0, command_status=error.command_status
            )
            self._out.append(nack.encode())
        self._events.append(ProtocolError(error))
        if error.fatal:
            self._close("framing_error")
