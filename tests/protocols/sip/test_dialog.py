"""Dialog creation, routing, CSeq rules and in-dialog request construction (§12)."""

from __future__ import annotations

import pytest

from protocols.sip.dialog import Dialog, DialogState, DialogTable
from protocols.sip.errors import SipSyntaxError
from protocols.sip.headers import NameAddr
from protocols.sip.message import Request, Response, make_response, parse_message
from protocols.sip.uri import URI
from tests.protocols.sip.messages import INVITE


def invite_with_record_route() -> Request:
    raw = INVITE.replace(
        b"Max-Forwards: 70\r\n",
        b"Max-Forwards: 70\r\n"
        b"Record-Route: <sip:p2.example.com;lr>\r\n"
        b"Record-Route: <sip:p1.example.com;lr>\r\n",
    )
    msg = parse_message(raw)
    assert isinstance(msg, Request)
    return msg


def ok_for(invite: Request, status: int = 200, contact: str = "<sip:bob@192.0.2.4>") -> Response:
    response = make_response(
        invite,
        status,
        to_tag="bobtag",
        headers=[("Record-Route", rr) for rr in invite.headers.get_all("Record-Route")]
        + [("Contact", contact)],
    )
    parsed = parse_message(response.encode())
    assert isinstance(parsed, Response)
    return parsed


def uac_dialog() -> tuple[Request, Dialog]:
    invite = invite_with_record_route()
    return invite, Dialog.from_uac_response(invite, ok_for(invite))


def test_uac_dialog_takes_ids_target_and_reversed_route_set_from_2xx() -> None:
    _, dialog = uac_dialog()
    assert dialog.state is DialogState.CONFIRMED
    assert (dialog.local_tag, dialog.remote_tag) == ("1928301774", "bobtag")
    assert dialog.remote_target == URI("sip", user="bob", host="192.0.2.4")
    assert [r.uri.host for r in dialog.route_set] == ["p1.example.com", "p2.example.com"]
    assert dialog.local_seq == 314159


def test_provisional_with_to_tag_creates_an_early_dialog_confirmed_by_2xx() -> None:
    invite = invite_with_record_route()
    dialog = Dialog.from_uac_response(invite, ok_for(invite, 180, "<sip:bob@192.0.2.5>"))
    assert dialog.state is DialogState.EARLY
    dialog.receive_response(invite, ok_for(invite, 200, "<sip:bob@192.0.2.6>"))
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.remote_target.host == "192.0.2.6"


def test_response_without_to_tag_creates_no_dialog() -> None:
    invite = invite_with_record_route()
    trying = parse_message(make_response(invite, 100).encode())
    assert isinstance(trying, Response)
    with pytest.raises(SipSyntaxError):
        Dialog.from_uac_response(invite, trying)


def test_in_dialog_bye_uses_loose_route_set_and_next_cseq() -> None:
    _, dialog = uac_dialog()
    bye = dialog.create_request("BYE", branch="z9hG4bKbye")
    assert bye.uri == dialog.remote_target
    assert bye.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert (bye.cseq.seq, bye.cseq.method) == (314160, "BYE")
    assert bye.from_tag == "1928301774" and bye.to_tag == "bobtag"
    assert dialog.next_hop().host == "p1.example.com"
    assert isinstance(parse_message(bye.encode()), Request)


def test_ack_for_2xx_has_new_branch_and_the_invite_cseq() -> None:
    invite, dialog = uac_dialog()
    ack = dialog.create_ack(invite.cseq.seq, branch="z9hG4bKack")
    assert ack.method == "ACK" and ack.cseq.seq == invite.cseq.seq
    assert ack.top_via.branch != invite.top_via.branch
    assert ack.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert dialog.local_seq == invite.cseq.seq  # ACK does not consume a CSeq


def test_strict_route_moves_first_route_into_request_uri() -> None:
    _, dialog = uac_dialog()
    dialog.route_set = [NameAddr.parse("<sip:strict.example.com>")]
    request = dialog.create_request("INFO", branch="z9hG4bKi")
    assert request.uri == URI("sip", host="strict.example.com")
    assert request.headers.get_all("Route") == ["<sip:bob@192.0.2.4>"]


def test_reinvite_and_update_carry_contact_and_refresh_the_target() -> None:
    _invite, dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", branch="z9hG4bKre")
    assert reinvite.headers.get("Contact") == "<sip:alice@pc33.atlanta.example.com>"
    reply = ok_for(reinvite, 200, "<sip:bob@198.51.100.9>")
    dialog.receive_response(reinvite, reply)
    assert dialog.remote_target.host == "198.51.100.9"
    update = dialog.create_request("UPDATE", branch="z9hG4bKup")
    assert update.cseq.seq == reinvite.cseq.seq + 1


def test_refer_carries_refer_to_and_notify_carries_a_sipfrag() -> None:
    _, dialog = uac_dialog()
    refer = dialog.create_refer("sip:carol@example.com", branch="z9hG4bKr")
    assert refer.headers.get("Refer-To") == "<sip:carol@example.com>"
    notify = dialog.create_refer_notify(200, branch="z9hG4bKn", final=True)
    assert notify.headers.get("Event") == "refer"
    assert notify.headers.get("Subscription-State") == "terminated;reason=noresource"
    assert notify.body == b"SIP/2.0 200 OK\r\n"


def uas_dialog() -> tuple[Request, Dialog]:
    invite = invite_with_record_route()
    dialog = Dialog.from_uas_request(
        invite,
        local_tag="uastag",
        local_contact="<sip:gw@203.0.113.1:5060>",
        via_transport="UDP",
        via_sent_by="203.0.113.1:5060",
    )
    return invite, dialog


def test_uas_response_copies_record_route_and_adds_contact_and_tag() -> None:
    invite, dialog = uas_dialog()
    ok = dialog.create_response(invite, 200)
    assert ok.to_tag == "uastag"
    assert ok.headers.get_all("Record-Route") == invite.headers.get_all("Record-Route")
    assert ok.headers.get("Contact") == "<sip:gw@203.0.113.1:5060>"
    assert [r.uri.host for r in dialog.route_set] == ["p2.example.com", "p1.example.com"]


def test_uas_rejects_lower_cseq_with_500_and_accepts_higher() -> None:
    _invite, dialog = uas_dialog()
    dialog.confirm()
    bye_old = parse_message(
        INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314158 BYE").replace(
            b"INVITE sip:", b"BYE sip:"
        )
    )
    assert isinstance(bye_old, Request)
    error = dialog.receive_request(bye_old)
    assert error is not None and error.status == 500
    bye_new = parse_message(
        INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314160 BYE").replace(
            b"INVITE sip:", b"BYE sip:"
        )
    )
    assert isinstance(bye_new, Request)
    assert dialog.receive_request(bye_new) is None
    assert dialog.state is DialogState.TERMINATED


def test_uas_first_request_uses_cseq_1_and_swaps_from_and_to() -> None:
    _, dialog = uas_dialog()
    bye = dialog.create_request("BYE", branch="z9hG4bKb")
    assert bye.cseq.seq == 1
    assert bye.from_.uri.user == "bob" and bye.from_tag == "uastag"
    assert bye.to.uri.user == "alice" and bye.to_tag == "1928301774"
    assert bye.uri == URI("sip", user="alice", host="pc33.atlanta.example.com")
    assert bye.headers.get_all("Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]


def test_request_for_unknown_dialog_gets_481() -> None:
    table = DialogTable()
    invite, dialog = uas_dialog()
    table.add(dialog)
    bye = dialog.create_request("BYE", branch="z9hG4bKb")
    # Seen from the peer: swap our tags back to build what the peer would send us.
    raw = parse_message(
        INVITE.replace(b"INVITE sip:", b"BYE sip:")
        .replace(b"CSeq: 314159 INVITE", b"CSeq: 314160 BYE")
        .replace(b"To: Bob <sip:bob@biloxi.example.com>", b"To: <sip:bob@biloxi.example.com>;tag=uastag")
    )
    assert isinstance(raw, Request)
    assert table.check_request(raw) is None
    assert table.for_request(raw) is dialog
    stray = parse_message(raw.encode().replace(b"tag=uastag", b"tag=nosuch"))
    assert isinstance(stray, Request)
    reply = table.check_request(stray)
    assert reply is not None and reply.status == 481
    assert table.check_request(invite) is None  # no To tag: not an in-dialog request
    assert bye.to_tag == "1928301774"


def test_408_or_481_to_an_in_dialog_request_ends_the_dialog() -> None:
    _, dialog = uac_dialog()
    info = dialog.create_request("INFO", branch="z9hG4bKi")
    gone = parse_message(make_response(info, 481).encode())
    assert isinstance(gone, Response)
    dialog.receive_response(info, gone)
    assert dialog.state is DialogState.TERMINATED
