"""Framing and strictness of the SMPP decoder, and encoder guards."""

from __future__ import annotations

import struct

import pytest

from protocols.smpp.codec import DecodeError, PduDecoder, decode_pdu
from protocols.smpp.constants import CommandId, CommandStatus, Tag
from protocols.smpp.pdu import (
    CancelSm,
    CancelSmResp,
    DeliverSm,
    EncodeError,
    EnquireLink,
    Outbind,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    sar_tlvs,
)

S = CommandStatus


def _submit(**kw: object) -> SubmitSm:
    fields: dict[str, object] = {
        "sequence_number": 42,
        "source_addr": "0212345678",
        "destination_addr": "01012345678",
        "short_message": b"hello",
    }
    fields.update(kw)
    return SubmitSm(**fields)  # type: ignore[arg-type]


def _frame(command_id: int, body: bytes, seq: int = 9, status: int = 0) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, seq) + body


def _error(item: object) -> DecodeError:
    assert isinstance(item, DecodeError), item
    return item


def test_pdus_split_at_every_byte_boundary_come_out_whole_and_in_order() -> None:
    stream = _submit().encode() + EnquireLink(sequence_number=43).encode() + _submit().encode()
    decoder = PduDecoder()
    out = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert out == [_submit(), EnquireLink(sequence_number=43), _submit()]
    assert decoder.buffered == 0


def test_many_pdus_in_one_chunk_all_decode() -> None:
    chunk = b"".join(_submit(sequence_number=n).encode() for n in range(1, 101))
    out = PduDecoder().feed(chunk)
    assert [p.sequence_number for p in out if not isinstance(p, DecodeError)] == list(range(1, 101))


def test_command_length_below_header_size_is_fatal_and_stops_decoding() -> None:
    decoder = PduDecoder()
    out = decoder.feed(struct.pack(">IIII", 15, CommandId.ENQUIRE_LINK, 0, 77))
    err = _error(out[0])
    assert (err.fatal, err.command_status, err.sequence_number) == (True, S.ESME_RINVCMDLEN, 77)
    assert decoder.failed
    assert decoder.feed(EnquireLink(sequence_number=1).encode()) == []


def test_command_length_beyond_the_configured_maximum_is_fatal() -> None:
    decoder = PduDecoder(max_command_length=1000)
    err = _error(decoder.feed(struct.pack(">IIII", 1001, CommandId.SUBMIT_SM, 0, 5))[0])
    assert err.fatal and err.reason == "command_length_too_large" and err.sequence_number == 5


def test_unknown_command_id_is_reported_and_the_stream_continues() -> None:
    decoder = PduDecoder()
    out = decoder.feed(_frame(0x0000_0777, b"abc", seq=3) + EnquireLink(sequence_number=4).encode())
    err = _error(out[0])
    assert (err.command_status, err.sequence_number, err.fatal) == (S.ESME_RINVCMDID, 3, False)
    assert out[1] == EnquireLink(sequence_number=4)


def test_trailing_octets_after_a_header_only_pdu_are_an_error() -> None:
    err = _error(decode_pdu(_frame(CommandId.ENQUIRE_LINK, b"\x00")))
    assert err.command_status == S.ESME_RINVCMDLEN and err.reason == "trailing_octets"


def test_trailing_octets_after_cancel_sm_are_an_error() -> None:
    body = CancelSm(message_id="1", source_addr="1", destination_addr="2").encode()[16:]
    err = _error(decode_pdu(_frame(CommandId.CANCEL_SM, body + b"xyz")))
    assert err.reason == "trailing_octets"


def test_garbage_after_submit_sm_that_is_not_a_tlv_is_an_error() -> None:
    data = _submit().encode()
    bad = struct.pack(">I", len(data) + 2) + data[4:] + b"\x02\x04"
    err = _error(decode_pdu(bad))
    assert err.command_status == S.ESME_RINVOPTPARSTREAM and err.sequence_number == 42


def test_tlv_running_past_the_end_is_an_error_with_the_sequence_number() -> None:
    data = _submit().encode() + struct.pack(">HH", Tag.MESSAGE_PAYLOAD, 50) + b"short"
    data = struct.pack(">I", len(data)) + data[4:]
    err = _error(decode_pdu(data))
    assert (err.command_status, err.sequence_number) == (S.ESME_RINVOPTPARSTREAM, 42)


def test_known_tlv_with_a_wrong_length_is_rejected() -> None:
    pdu = _submit(tlvs=(Tlv(Tag.SAR_MSG_REF_NUM, b"\x01"),))
    err = _error(decode_pdu(pdu.encode()))
    assert err.command_status == S.ESME_RINVPARLEN


def test_c_string_without_nul_before_the_end_is_truncation() -> None:
    err = _error(decode_pdu(_frame(CommandId.SUBMIT_SM_RESP, b"1234")))
    assert err.command_status == S.ESME_RINVCMDLEN and err.reason == "message_id_truncated"


def test_c_string_over_its_maximum_length_names_the_field() -> None:
    long_addr = b"1" * 21 + b"\x00"  # source_addr holds 20 octets + NUL
    body = b"\x00" + b"\x01\x01" + long_addr + b"\x01\x01" + b"010\x00" + bytes(12)
    err = _error(decode_pdu(_frame(CommandId.SUBMIT_SM, body)))
    assert err.command_status == S.ESME_RINVSRCADR and err.reason == "source_addr_too_long"


def test_truncated_submit_sm_body_is_an_error() -> None:
    data = _submit().encode()
    for cut in range(17, len(data)):
        frame = struct.pack(">I", cut) + data[4:cut]
        err = _error(decode_pdu(frame))
        assert err.sequence_number == 42 and not err.fatal


def test_sm_length_larger_than_the_rest_is_invalid_message_length() -> None:
    data = bytearray(_submit().encode())
    data[data.index(b"hello") - 1] = 200
    assert _error(decode_pdu(bytes(data))).command_status == S.ESME_RINVMSGLEN


def test_error_responses_without_body_decode() -> None:
    pdu = decode_pdu(_frame(CommandId.SUBMIT_SM_RESP, b"", status=S.ESME_RTHROTTLED))
    assert pdu == SubmitSmResp(sequence_number=9, command_status=S.ESME_RTHROTTLED)


def test_unknown_tlvs_survive_a_round_trip() -> None:
    pdu = _submit(tlvs=(Tlv(0x1401, b"vendor"), *sar_tlvs(7, 2, 1)))
    decoded = decode_pdu(pdu.encode())
    assert decoded == pdu
    assert isinstance(decoded, SubmitSm) and decoded.sar == (7, 2, 1)


def test_receipt_tlvs_read_back_typed() -> None:
    pdu = DeliverSm(
        esm_class=4,
        tlvs=(Tlv.cstr(Tag.RECEIPTED_MESSAGE_ID, "abc"), Tlv.u8(Tag.MESSAGE_STATE, 5)),
    )
    decoded = decode_pdu(pdu.encode())
    assert isinstance(decoded, DeliverSm)
    assert (decoded.receipted_message_id, decoded.message_state) == ("abc", 5)


def test_outbind_and_cancel_sm_resp_round_trip() -> None:
    for pdu in (Outbind(sequence_number=1, system_id="smsc", password="pw"), CancelSmResp()):
        assert decode_pdu(pdu.encode()) == pdu


def test_encoder_refuses_overlong_or_nul_fields() -> None:
    with pytest.raises(EncodeError):
        _submit(source_addr="1" * 21).encode()
    with pytest.raises(EncodeError):
        _submit(destination_addr="010\x001").encode()
    with pytest.raises(EncodeError):
        _submit(short_message=b"x" * 255).encode()
    with pytest.raises(EncodeError):
        _submit(esm_class=256).encode()
    with pytest.raises(EncodeError):
        _submit(sequence_number=2**32).encode()


def test_encode_can_override_the_sequence_number_without_a_copy() -> None:
    data = _submit().encode(sequence_number=1234)
    assert struct.unpack(">I", data[12:16])[0] == 1234
