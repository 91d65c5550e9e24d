"""RFC 3261 §12 dialogs: creation, route sets, CSeq rules and in-dialog request building.

Sans-I/O: a ``Dialog`` builds ``Request`` objects and checks incoming ones; sending them
(through ``TransactionLayer.send_request`` or, for ACK, ``send_stateless``) is the caller's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from protocols.sip.errors import SipSyntaxError
from protocols.sip.headers import NameAddr
from protocols.sip.message import (
    REASON_PHRASES,
    Headers,
    Request,
    Response,
    make_cancel,
    make_non2xx_ack,
    make_response,
)
from protocols.sip.uri import URI

__all__ = [
    "Dialog",
    "DialogId",
    "DialogState",
    "DialogTable",
    "make_cancel",
    "make_non2xx_ack",
]

# Requests whose 2xx (and, for INVITE, 1xx with To tag) establish a dialog in this stack.
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER"})
# Requests that refresh the remote target from their Contact (§12.2, RFC 3311).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


class DialogState(enum.Enum):
    """Early (provisional with To tag) or confirmed (2xx) or over."""

    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """Call-ID plus local and remote tags, from our point of view."""

    call_id: str
    local_tag: str
    remote_tag: str


class Dialog:
    """One dialog as seen by this UA (a B2BUA leg)."""

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        remote_tag: str,
        local_uri: NameAddr,
        remote_uri: NameAddr,
        remote_target: URI,
        route_set: list[NameAddr],
        local_seq: int,
        remote_seq: int | None,
        local_contact: str,
        via_transport: str,
        via_sent_by: str,
        state: DialogState,
        is_uac: bool,
        secure: bool = False,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri.without_tag() if local_uri.tag else local_uri
        self.remote_uri = remote_uri.without_tag() if remote_uri.tag else remote_uri
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.local_contact = local_contact
        self.via_transport = via_transport
        self.via_sent_by = via_sent_by
        self.state = state
        self.is_uac = is_uac
        self.secure = secure

    # - creation -

    @classmethod
    def from_uac_response(
        cls, request: Request, response: Response, *, via_sent_by: str | None = None
    ) -> Dialog:
        """UAC side (§12.1.2): a 1xx with To tag or a 2xx to our dialog-creating request."""
        remote_tag = response.to_tag
        if not remote_tag:
            raise SipSyntaxError("response without To tag cannot create a dialog")
        contacts = response.contacts
        if not contacts and 200 <= response.status < 300:
            raise SipSyntaxError("2xx without Contact")
        via = request.top_via
        return cls(
            call_id=request.call_id,
            local_tag=request.from_tag or "",
            remote_tag=remote_tag,
            local_uri=request.from_,
            remote_uri=response.to,
            remote_target=contacts[0].uri if contacts else request.uri,
            route_set=list(reversed(response.record_routes)),
            local_seq=request.cseq.seq,
            remote_seq=None,
            local_contact=request.headers.get("Contact") or "",
            via_transport=via.transport,
            via_sent_by=via_sent_by or _sent_by(via.host, via.port),
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
            is_uac=True,
            secure=request.uri.scheme == "sips",
        )

    @classmethod
    def from_uas_request(
        cls,
        request: Request,
        *,
        local_tag: str,
        local_contact: str,
        via_transport: str,
        via_sent_by: str,
        early: bool = True,
    ) -> Dialog:
        """UAS side (§12.1.1): we answer ``request`` with a To tag and Contact."""
        contacts = request.contacts
        if not contacts:
            raise SipSyntaxError("dialog-creating request without Contact")
        remote_tag = request.from_tag
        if not remote_tag:
            raise SipSyntaxError("request without From tag")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_uri=request.to,
            remote_uri=request.from_,
            remote_target=contacts[0].uri,
            route_set=request.record_routes,
            local_seq=0,
            remote_seq=request.cseq.seq,
            local_contact=local_contact,
            via_transport=via_transport,
            via_sent_by=via_sent_by,
            state=DialogState.EARLY if early else DialogState.CONFIRMED,
            is_uac=False,
            secure=request.uri.scheme == "sips",
        )

    @property
    def id(self) -> DialogId:
        """The dialog identifier."""
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # - building messages -

    def create_response(
        self,
        request: Request,
        status: int,
        reason: str = "",
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Response to a request in (or creating) this dialog: To tag, Contact, Record-Route."""
        extra: list[tuple[str, str]] = []
        if status < 300 and request.method in DIALOG_CREATING | TARGET_REFRESH:
            if request.method in DIALOG_CREATING and request.to_tag is None:
                extra.extend(("Record-Route", rr) for rr in request.headers.get_all("Record-Route"))
            if status > 100:
                extra.append(("Contact", self.local_contact))
        extra.extend(headers or ())
        return make_response(
            request, status, reason, to_tag=self.local_tag, headers=extra, body=body
        )

    def create_request(
        self,
        method: str,
        *,
        branch: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        cseq: int | None = None,
    ) -> Request:
        """In-dialog request (§12.2.1.1); increments the local CSeq except for ACK/CANCEL."""
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        request_uri, routes = self._route()
        h = Headers()
        h.add("Via", f"SIP/2.0/{self.via_transport} {self.via_sent_by};branch={branch};rport")
        h.add("Max-Forwards", "70")
        h.add("From", str(self.local_uri.with_tag(self.local_tag)))
        h.add("To", str(self.remote_uri.with_tag(self.remote_tag)))
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        for route in routes:
            h.add("Route", route)
        if method in TARGET_REFRESH and self.local_contact:
            h.add("Contact", self.local_contact)
        for name, value in headers or ():
            h.add(name, value)
        return Request(method, request_uri, h, body)

    def create_ack(
        self, invite_cseq: int, *, branch: str, headers: list[tuple[str, str]] | None = None,
        body: bytes = b""
    ) -> Request:
        """ACK for a 2xx (§13.2.2.4): end-to-end, a new branch, the INVITE's CSeq number."""
        return self.create_request(
            "ACK", branch=branch, headers=headers, body=body, cseq=invite_cseq
        )

    def create_refer(self, refer_to: str, *, branch: str, referred_by: str | None = None) -> Request:
        """REFER (RFC 3515) asking the peer to call ``refer_to`` (a URI or name-addr)."""
        target = refer_to if refer_to.startswith("<") else f"<{refer_to}>"
        extra = [("Refer-To", target)]
        if referred_by:
            extra.append(("Referred-By", referred_by))
        return self.create_request("REFER", branch=branch, headers=extra)

    def create_refer_notify(
        self, status: int, reason: str = "", *, branch: str, final: bool
    ) -> Request:
        """NOTIFY reporting REFER progress as a sipfrag (RFC 3515 §2.4.5)."""
        frag = f"SIP/2.0 {status} {reason or REASON_PHRASES.get(status, '')}\r\n".encode()
        state = "terminated;reason=noresource" if final else "active;expires=60"
        return self.create_request(
            "NOTIFY",
            branch=branch,
            headers=[
                ("Event", "refer"),
                ("Subscription-State", state),
                ("Content-Type", "message/sipfrag;version=2.0"),
            ],
            body=frag,
        )

    def next_hop(self) -> URI:
        """The URI whose address in-dialog requests are sent to (RFC 3263 resolution input)."""
        if self.route_set:
            return self.route_set[0].uri
        return self.remote_target

    def _route(self) -> tuple[URI, list[str]]:
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if first.uri.has_param("lr"):
            return self.remote_target, [str(r) for r in self.route_set]
        # Strict routing (RFC 2543 proxy): first route becomes the Request-URI (§12.2.1.1).
        routes = [str(r) for r in self.route_set[1:]]
        routes.append(f"<{self.remote_target}>")
        return first.uri.without_params("method", "maddr", "ttl", "transport", "lr"), routes

    # - receiving -

    def receive_request(self, request: Request) -> Response | None:
        """Check CSeq order and refresh the target; return the error response to send, if any.

        Retransmissions never get here (the transaction layer absorbs them), so a CSeq not
        above the last one is out of order and gets 500 (§12.2.2).
        """
        method = request.method
        if method not in ("ACK", "CANCEL"):
            seq = request.cseq.seq
            if self.remote_seq is not None and seq <= self.remote_seq:
                return make_response(
                    request, 500, "Out of order CSeq", headers=[("Retry-After", "1")]
                )
            self.remote_seq = seq
        if method in TARGET_REFRESH:
            self._refresh_target(request)
        if method == "BYE":
            self.state = DialogState.TERMINATED
        elif method == "ACK" and self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED
        return None

    def receive_response(self, request: Request, response: Response) -> None:
        """Update the dialog from a response to ``request`` that we sent in it."""
        status = response.status
        if status in (408, 481):
            # The peer lost the dialog (§12.2.1.2).
            self.state = DialogState.TERMINATED
            return
        if 200 <= status < 300:
            if self.state is DialogState.EARLY and request.method == "INVITE":
                self.state = DialogState.CONFIRMED
                # §12.1.2: the route set is fixed by the 2xx, not by earlier provisionals.
                self.route_set = list(reversed(response.record_routes))
            if request.method in TARGET_REFRESH:
                self._refresh_target(response)
        elif 101 <= status < 200 and self.state is DialogState.EARLY:
            self._refresh_target(response)
        if request.method == "BYE" and status >= 200:
            self.state = DialogState.TERMINATED

    def confirm(self) -> None:
        """Mark the dialog confirmed (UAS: after sending the 2xx)."""
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED

    def terminate(self) -> None:
        """Mark the dialog over."""
        self.state = DialogState.TERMINATED

    def _refresh_target(self, message: Request | Response) -> None:
        contacts = message.contacts
        if contacts and not contacts[0].wildcard:
            self.remote_target = contacts[0].uri

    def __repr__(self) -> str:
        return f"<Dialog {self.call_id} {self.local_tag}/{self.remote_tag} {self.state.name}>"


def _sent_by(host: str, port: int | None) -> str:
    return host if port is None else f"{host}:{port}"


class DialogTable:
    """Dialogs by id, with the lookup rules for incoming requests and responses."""

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def add(self, dialog: Dialog) -> None:
        """Register a dialog."""
        self._dialogs[dialog.id] = dialog

    def remove(self, dialog: Dialog) -> None:
        """Forget a dialog."""
        self._dialogs.pop(dialog.id, None)

    def for_request(self, request: Request) -> Dialog | None:
        """The dialog an incoming request belongs to (our tag is in To)."""
        to_tag = request.to_tag
        if not to_tag:
            return None
        return self._dialogs.get(DialogId(request.call_id, to_tag, request.from_tag or ""))

    def for_response(self, response: Response) -> Dialog | None:
        """The dialog a response to our request belongs to (our tag is in From)."""
        return self._dialogs.get(
            DialogId(response.call_id, response.from_tag or "", response.to_tag or "")
        )

    def check_request(self, request: Request) -> Response | None:
        """481 for an in-dialog request (To tag) matching no dialog (§12.2.2); else None.

        An ACK is never answered, so the caller drops an unmatched ACK itself.
        """
        if request.method == "ACK" or not request.to_tag:
            return None
        if self.for_request(request) is None:
            return make_response(request, 481)
        return None

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))
