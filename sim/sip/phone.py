"""Simulated SIP phones and a carrier trunk caller, scriptable from tests, bench and the demo.

A `SimPhone` registers an extension with digest auth and answers incoming calls according to
its `Script` (answer after a delay, busy, no answer, reject, hang up after N seconds); it can
also place calls (answering 407 challenges). A `TrunkCaller` is the same user agent without
registration, sending calls from a carrier's address. Both run our own SIP stack over real
loopback UDP or TCP.

Media is off unless a script asks for it: with `Script(audio=None)` (the default, what the
signalling tests and bench/b2bua.py use) the SDP names a port nobody listens on and a call costs
no socket. With `Script(audio=Audio())` every call gets its own RTP endpoint, advertised in its
SDP, which streams a tone (or a WAV, or given bytes) to the far end once the call is
established and keeps what arrives: `SimCall.rtp`, `.codec`, `.received_payload()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from dataclasses import dataclass, field

from protocols.rtp.g711 import Codec
from protocols.sip.auth import DigestClient, DigestServer
from protocols.sip.dialog import Dialog
from protocols.sip.headers import NameAddr
from protocols.sip.message import IdGenerator, Request, Response, make_request, make_response
from protocols.sip.transaction import (
    AckReceived,
    CancelReceived,
    ClientTransaction,
    Event,
    InviteClientTransaction,
    InviteServerTransaction,
    Peer,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TransactionLayer,
    TransactionTimedOut,
    TransportFailed,
)
from protocols.sip.transport import SipEndpoint, TcpTransport, UdpTransport
from protocols.sip.uri import URI
from sim.media import Address, Audio, CallMedia, RtpPeer, answer_direction, sdp_body


class Behaviour(enum.Enum):
    """How a phone treats an incoming call."""

    ANSWER = "answer"
    BUSY = "busy"  # 486 at once
    NO_ANSWER = "no_answer"  # rings until cancelled
    REJECT = "reject"  # 603 after ringing


@dataclass(slots=True)
class Script:
    """A phone's behaviour for incoming calls, and the audio it sends on every call."""

    behaviour: Behaviour = Behaviour.ANSWER
    answer_after: float = 0.0
    hangup_after: float | None = None  # None: stay until the other side hangs up
    early_media: bool = False  # 183 Session Progress with SDP instead of 180
    # A carrier that challenges incoming INVITEs (407) for this (user, password).
    challenge: tuple[str, str] | None = None
    # None: signalling only (no RTP socket, a made-up port in the SDP).
    audio: Audio | None = None


class CallState(enum.Enum):
    """A simulated call's progress."""

    CALLING = "calling"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(eq=False)
class SimCall:
    """One call seen by a simulated UA; await its events from tests."""

    call_id: str
    incoming: bool
    request: Request
    state: CallState = CallState.CALLING
    final_status: int | None = None
    dialog: Dialog | None = None
    ended_by: str | None = None  # "local" | "remote"
    reinvites: int = 0
    remote_sdp: bytes = b""
    early_sdp: bytes = b""  # SDP of a 183 (early media)
    ringing: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    server_txn: InviteServerTransaction | None = None
    client_txn: ClientTransaction | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    media: CallMedia | None = None  # with Script.audio: the call's RTP side
    ack_body: bytes = b""  # our answer in the ACK, when the 200 carried the offer

    @property
    def rtp(self) -> RtpPeer | None:
        """The call's RTP endpoint (packets sent and received), if the UA has audio."""
        return self.media.peer if self.media is not None else None

    @property
    def codec(self) -> Codec | None:
        """The negotiated G.711 law (the first the answer lists)."""
        return self.media.codec if self.media is not None else None

    @property
    def sending_to(self) -> Address | None:
        """Where the call's audio goes now (None: no audio yet, on hold, or ended)."""
        return self.media.sending_to if self.media is not None else None

    def received_payload(self) -> bytes:
        """The audio received in the negotiated codec, in arrival order, duplicates removed."""
        if self.media is None:
            return b""
        codec = self.media.codec
        return self.media.peer.received_payload(codec.payload_type if codec else None)

    def sent_payload(self) -> bytes:
        """The audio sent, in order."""
        if self.media is None:
            return b""
        codec = self.media.codec
        return self.media.peer.sent_payload(codec.payload_type if codec else None)

    def _finish(self, status: int | None, by: str) -> None:
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        if self.final_status is None:
            self.final_status = status
        self.ended_by = by
        self.ended.set()
        self._release()

    def _release(self) -> None:
        """Cancel the call's tasks (but the running one) and close its media."""
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        if self.media is not None:
            self.media.close()


class SimUA:
    """A user agent on our SIP stack bound to 127.0.0.1 (UDP or TCP)."""

    def __init__(self, user: str, *, gateway: tuple[str, int], transport: str = "UDP",
                 domain: str | None = None, password: str | None = None,
                 script: Script | None = None, bind_host: str = "127.0.0.1") -> None:
        self.user = user
        self.bind_host = bind_host
        self.gateway = Peer(transport, gateway[0], gateway[1])
        self.transport = transport
        self.domain = domain or gateway[0]
        self.auth = DigestClient(user, password) if password else None
        self.script = script or Script()
        self.ids = IdGenerator()
        self.layer = TransactionLayer()
        self.endpoint = SipEndpoint(self.layer, self._on_event)
        self.calls: dict[str, SimCall] = {}
        self.incoming: asyncio.Queue[SimCall] = asyncio.Queue()
        self._waiters: dict[ClientTransaction, asyncio.Future[Response | None]] = {}
        self._udp: UdpTransport | None = None
        self._tcp: TcpTransport | None = None
        self.port = 0
        self.registered_status: int | None = None
        self._challenge: Response | None = None
        self._digest: DigestServer | None = None

    # -- life -------------------------------------------------------------------------------

    async def start(self) -> SimUA:
        """Bind a socket on a free loopback port."""
        if self.transport == "UDP":
            self._udp = await UdpTransport.listen(self.bind_host, 0, self.endpoint.on_message)
            self.port = self._udp.local_address[1]
            self.endpoint.add_transport(self._udp)
        else:
            self._tcp = TcpTransport(self.endpoint.on_message,
                                     on_error=self.endpoint.on_transport_error,
                                     on_closed=self.endpoint.on_stream_closed)
            await self._tcp.listen(self.bind_host, 0)
            self.port = self._tcp.local_address[1]
            self.endpoint.add_transport(self._tcp)
        return self

    async def close(self) -> None:
        """Stop (calls are dropped without signalling)."""
        for call in self.calls.values():
            call._release()
        self.endpoint.close()
        await asyncio.sleep(0)

    @property
    def contact(self) -> str:
        suffix = ";transport=tcp" if self.transport == "TCP" else ""
        return f"<sip:{self.user}@{self.bind_host}:{self.port}{suffix}>"

    def _via(self) -> str:
        return f"SIP/2.0/{self.transport} {self.bind_host}:{self.port};branch={self.ids.branch()};rport"

    def _sdp(self, direction: str = "sendrecv") -> bytes:
        """The signalling-only SDP: a port derived from ours, nobody listening on it."""
        return sdp_body("127.0.0.1", 20000 + self.port % 10000, direction=direction)

    def _answer_sdp(self, call: SimCall, offer: bytes) -> bytes:
        """Our SDP answering `offer`; our own offer when it is empty (a late offer)."""
        if call.media is None:
            return self._sdp(answer_direction(offer) if offer else "sendrecv")
        return call.media.answer(offer) if offer else call.media.offer()

    def forget(self, call: SimCall) -> None:
        """Drop an ended call (and the packets it kept); a long-running phone's housekeeping."""
        if call.state is CallState.ENDED:
            self.calls.pop(call.call_id, None)

    async def _request(self, request: Request, peer: Peer | None = None,
                       ) -> Response | None:
        """Send in a transaction; the final response (None on timeout), answering 401/407."""
        for _ in range(2):
            txn = self.layer.send_request(request, peer or self.gateway, self.endpoint.now())
            future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
            self._waiters[txn] = future
            response = await future
            if response is None or response.status not in (401, 407) or self.auth is None:
                return response
            if request.method == "REGISTER":
                self._challenge = response  # reused for the next REGISTER, as phones do
            retry = self.auth.retry(request, response, branch=self.ids.branch())
            if retry is None:
                return response
            request = retry
        return response

    # -- registration -----------------------------------------------------------------------

    async def register(self, expires: int = 300, *, contact: str | None = None) -> int:
        """REGISTER our contact (or another one, e.g. a SIPp UAS); return the final status."""
        aor = URI("sip", user=self.user, host=self.domain)
        request = make_request(
            "REGISTER", URI("sip", host=self.domain), via=self._via(),
            from_=NameAddr(aor, params=(("tag", self.ids.tag()),)), to=NameAddr(aor),
            call_id=self.ids.call_id(), cseq=1, contact=contact or self.contact,
            headers=[("Expires", str(expires))])
        if self.auth is not None and self._challenge is not None:
            self.auth.authorize(request, self._challenge)
        response = await self._request(request)
        self.registered_status = response.status if response else 408
        return self.registered_status

    # -- placing calls ----------------------------------------------------------------------

    def call(self, number: str, *, from_user: str | None = None,
             hangup_after: float | None = None, cancel_after: float | None = None,
             with_sdp: bool = True) -> SimCall:
        """Start a call to `number` at the gateway; follow it through the returned SimCall.
        With `with_sdp=False` the INVITE carries no offer (the answer then goes in the ACK)."""
        tag = self.ids.tag()
        me = URI("sip", user=from_user or self.user, host=self.domain)
        headers = [("Content-Type", "application/sdp")] if with_sdp else []
        request = make_request(
            "INVITE", URI("sip", user=number, host=self.domain), via=self._via(),
            from_=NameAddr(me, params=(("tag", tag),)),
            to=NameAddr(URI("sip", user=number, host=self.domain)),
            call_id=self.ids.call_id(), cseq=1, contact=self.contact, headers=headers,
            body=self._sdp() if with_sdp else b"")
        call = SimCall(request.call_id, False, request)
        self.calls[call.call_id] = call
        call.tasks.append(asyncio.create_task(self._run_outgoing(call, hangup_after,
                                                                 cancel_after)))
        return call

    async def _run_outgoing(self, call: SimCall, hangup_after: float | None,
                            cancel_after: float | None) -> None:
        request = call.request
        if self.script.audio is not None:
            call.media = await CallMedia.open(self.bind_host, self.script.audio)
            if request.body:
                request.body = call.media.offer()
        for _attempt in range(2):
            txn = self.layer.send_request(request, self.gateway, self.endpoint.now())
            call.client_txn = txn
            future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()
            self._waiters[txn] = future
            if cancel_after is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(cancel_after):
                        await asyncio.shield(future)
                if not future.done() and isinstance(txn, InviteClientTransaction):
                    txn.cancel(self.endpoint.now())
                    call.ended_by = "local"
            response = await future
            if response is not None and response.status in (401, 407) and self.auth is not None:
                retry = self.auth.retry(request, response, branch=self.ids.branch())
                if retry is not None:
                    request = call.request = retry
                    continue
            break
        if response is None:
            call._finish(408, "remote")
            return
        if response.status >= 300:
            call._finish(response.status, call.ended_by or "remote")
            return
        if call.state is CallState.ENDED:
            return
        if hangup_after is not None:
            await asyncio.sleep(hangup_after)
            await self.hangup(call)

    # -- events -----------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            self._on_response(event.response, event.transaction)
        elif isinstance(event, RequestReceived):
            self._on_request(event.request, event.peer, event.transaction)
        elif isinstance(event, AckReceived):
            call = self.calls.get(event.ack.call_id)
            if call is not None and call.dialog is not None:
                call.dialog.receive_request(event.ack)
                if call.media is not None and event.ack.body:
                    call.media.answered(event.ack.body)  # we offered in the 200
        elif isinstance(event, CancelReceived):
            call = self.calls.get(event.invite.request.call_id)
            if call is not None and call.dialog is not None and call.server_txn is not None:
                call.server_txn.respond(call.dialog.create_response(call.request, 487),
                                        self.endpoint.now())
                call._finish(487, "remote")
        elif isinstance(event, TransactionTimedOut | TransportFailed):
            txn = event.transaction
            waiter = self._waiters.pop(txn, None) if isinstance(txn, ClientTransaction) else None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _on_response(self, response: Response, txn: ClientTransaction | None) -> None:
        call = self.calls.get(response.call_id)
        is_invite = response.cseq.method == "INVITE"
        if is_invite and call is not None and not call.incoming:
            if txn is not None and txn.request.cseq.seq == call.request.cseq.seq:
                self._outgoing_progress(call, response, txn)
            elif 200 <= response.status < 300 and call.dialog is not None:
                self._ack(call, response)  # re-INVITE answer or retransmission
        if txn is None or response.status < 200:
            return
        waiter = self._waiters.pop(txn, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _outgoing_progress(self, call: SimCall, response: Response,
                           txn: ClientTransaction) -> None:
        status = response.status
        if 100 < status < 200:
            if response.body:
                call.early_sdp = response.body
                if call.media is not None and txn.request.body:
                    call.media.answered(response.body)  # we send only once answered
            if call.state is CallState.CALLING:
                call.state = CallState.RINGING
                call.ringing.set()
        elif 200 <= status < 300:
            first = call.dialog is None
            if first:
                call.dialog = Dialog.from_uac_response(txn.request, response)
                call.remote_sdp = response.body
                if call.media is not None and response.body:
                    if txn.request.body:
                        call.media.answered(response.body)
                    else:
                        call.ack_body = call.media.answer(response.body)
            self._ack(call, response, call.ack_body)
            if call.ended_by == "local" and first:
                # Our CANCEL lost the race with the answer: hang up at once.
                call.state = CallState.ANSWERED
                call.answered.set()
                call.tasks.append(asyncio.create_task(self._hangup_quietly(call)))
                return
            if first:
                call.state = CallState.ANSWERED
                call.final_status = status
                call.answered.set()
                if call.media is not None:
                    call.media.start()

    def _ack(self, call: SimCall, response: Response, body: bytes = b"") -> None:
        assert call.dialog is not None
        headers = [("Content-Type", "application/sdp")] if body else None
        ack = call.dialog.create_ack(response.cseq.seq, branch=self.ids.branch(),
                                     headers=headers, body=body)
        self.layer.send_stateless(ack, self.gateway)

    def _on_request(self, request: Request, peer: Peer, txn: ServerTransaction) -> None:
        now = self.endpoint.now()
        call = self.calls.get(request.call_id)
        if request.method == "INVITE" and request.to_tag is None:
            assert isinstance(txn, InviteServerTransaction)
            self._incoming(request, peer, txn)
            return
        if call is None or call.dialog is None:
            txn.respond(make_response(request, 481), now)
            return
        error = call.dialog.receive_request(request)
        if error is not None:
            txn.respond(error, now)
            return
        if request.method == "BYE":
            txn.respond(call.dialog.create_response(request, 200), now)
            call._finish(call.final_status, "remote")
        elif request.method == "INVITE":
            call.reinvites += 1
            txn.respond(call.dialog.create_response(
                request, 200, headers=[("Content-Type", "application/sdp")],
                body=self._answer_sdp(call, request.body)), now)
        else:
            txn.respond(call.dialog.create_response(request, 200), now)

    def _incoming(self, request: Request, peer: Peer, txn: InviteServerTransaction) -> None:
        if self.script.challenge is not None:
            user, password = self.script.challenge
            if self._digest is None:
                self._digest = DigestServer("carrier", self.ids.token(16).encode())
            now = self.endpoint.now()
            result = self._digest.verify(
                request, lambda name: password if name == user else None, now, proxy=True)
            if not result.ok:
                txn.respond(self._digest.challenge_response(request, now, proxy=True,
                                                            to_tag=self.ids.tag()), now)
                return
        dialog = Dialog.from_uas_request(
            request, local_tag=self.ids.tag(), local_contact=self.contact,
            via_transport=self.transport, via_sent_by=f"{self.bind_host}:{self.port}")
        call = SimCall(request.call_id, True, request, dialog=dialog, server_txn=txn,
                       remote_sdp=request.body)
        self.calls[call.call_id] = call
        self.incoming.put_nowait(call)
        script = self.script
        if script.behaviour is Behaviour.BUSY:
            txn.respond(dialog.create_response(request, 486), self.endpoint.now())
            call._finish(486, "local")
            return
        call.tasks.append(asyncio.create_task(self._ring(call, script, txn, dialog)))

    async def _ring(self, call: SimCall, script: Script, txn: InviteServerTransaction,
                    dialog: Dialog) -> None:
        """Ring (180, or 183 with SDP for early media), then answer or reject as scripted."""
        if script.audio is not None:
            call.media = await CallMedia.open(self.bind_host, script.audio)
        sdp = self._answer_sdp(call, call.request.body)  # the 183's and the 200's alike
        with_sdp = [("Content-Type", "application/sdp")]
        if script.early_media:
            txn.respond(dialog.create_response(call.request, 183, headers=with_sdp, body=sdp),
                        self.endpoint.now())
        else:
            txn.respond(dialog.create_response(call.request, 180), self.endpoint.now())
        call.state = CallState.RINGING
        call.ringing.set()
        if script.behaviour is Behaviour.NO_ANSWER:
            return
        await asyncio.sleep(script.answer_after)
        if call.state is not CallState.RINGING:
            return
        now = self.endpoint.now()
        if script.behaviour is Behaviour.REJECT:
            txn.respond(dialog.create_response(call.request, 603), now)
            call._finish(603, "local")
            return
        txn.respond(dialog.create_response(call.request, 200, headers=with_sdp, body=sdp), now)
        dialog.confirm()
        call.state = CallState.ANSWERED
        call.final_status = 200
        call.answered.set()
        if call.media is not None:
            call.media.start()
        if script.hangup_after is not None:
            await asyncio.sleep(script.hangup_after)
            await self.hangup(call)

    # -- commands ---------------------------------------------------------------------------

    async def hangup(self, call: SimCall) -> int | None:
        """Send BYE on an answered call; the status of its response."""
        if call.dialog is None or call.state is CallState.ENDED:
            return None
        call._finish(call.final_status, "local")
        bye = call.dialog.create_request("BYE", branch=self.ids.branch())
        response = await self._request(bye)
        return response.status if response else None

    async def _hangup_quietly(self, call: SimCall) -> None:
        await self.hangup(call)

    async def reinvite(self, call: SimCall, *, direction: str = "sendrecv",
                       body: bytes | None = None) -> int | None:
        """Send a re-INVITE offering our SDP with `direction` (sendonly or inactive: hold), or
        `body` (e.g. media pointed elsewhere, as an anchoring B2BUA does on a transfer); the
        final status. Our audio follows the answer."""
        assert call.dialog is not None
        if call.media is not None:
            offer = call.media.offer(direction, body=body)
        else:
            offer = body if body is not None else self._sdp(direction)
        request = call.dialog.create_request(
            "INVITE", branch=self.ids.branch(), headers=[("Content-Type", "application/sdp")],
            body=offer)
        response = await self._request(request)
        if response is not None and 200 <= response.status < 300 and call.media is not None:
            call.media.answered(response.body)
        return response.status if response else None


class SimPhone(SimUA):
    """A phone registered as one extension."""


class TrunkCaller(SimUA):
    """A carrier sending calls to the gateway's trunk from its own address."""

    def __init__(self, *, gateway: tuple[str, int], transport: str = "UDP",
                 script: Script | None = None, bind_host: str = "127.0.0.2",
                 username: str = "carrier", password: str | None = None) -> None:
        super().__init__(username, gateway=gateway, transport=transport, script=script,
                         bind_host=bind_host, password=password)

    def dial(self, did: str, caller: str, *, hangup_after: float | None = None,
             cancel_after: float | None = None) -> SimCall:
        """Call `did` presenting `caller`."""
        return self.call(did, from_user=caller, hangup_after=hangup_after,
                         cancel_after=cancel_after)
