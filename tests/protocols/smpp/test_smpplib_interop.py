"""Our codec against smpplib 2.2.4, byte for byte, in both directions."""

from __future__ import annotations

from typing import Any

import pytest
from smpplib import command as smpplib_command
from smpplib import smpp as smpplib_smpp

from protocols.smpp.codec import decode_pdu
from protocols.smpp.constants import Tag
from protocols.smpp.pdu import (
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
    UnbindResp,
)

pytestmark = pytest.mark.interop

SEQ = 0x01020304


class _FakeClient:
    """smpplib PDUs insist on a client for sequence numbers; we set them ourselves."""

    sequence = 0

    def next_sequence(self) -> int:
        return 0


def _smpplib_encode(name: str, fields: dict[str, Any], status: int = 0) -> bytes:
    pdu = smpplib_command.factory(name, client=_FakeClient(), status=status, **fields)
    pdu.sequence = SEQ  # smpplib ignores sequence= in the constructor
    data: bytes = pdu.generate()
    return data


def _smpplib_decode(data: bytes) -> Any:
    return smpplib_smpp.parse_pdu(data, client=_FakeClient())


BIND: dict[str, Any] = {
    "system_id": "telgate01",
    "password": "s3cret",
    "system_type": "SMS",
    "addr_ton": 1,
    "addr_npi": 1,
    "address_range": "^010",
}
SUBMIT: dict[str, Any] = {
    "service_type": "CMT",
    "source_addr_ton": 2,
    "source_addr_npi": 1,
    "source_addr": "0212345678",
    "dest_addr_ton": 1,
    "dest_addr_npi": 1,
    "destination_addr": "821012345678",
    "esm_class": 0x40,
    "protocol_id": 0,
    "priority_flag": 1,
    "schedule_delivery_time": "261123120000000+",
    "validity_period": "000001000000000R",
    "registered_delivery": 1,
    "replace_if_present_flag": 0,
    "data_coding": 0x0E,
    "sm_default_msg_id": 0,
    "short_message": b"\x05\x00\x03\x2a\x02\x01" + "안녕하세요".encode("cp949"),
}
RECEIPT_TEXT = (
    b"id:1A2B3C4D sub:001 dlvrd:001 submit date:2611231200 done date:2611231201 stat:DELIVRD err:000 text:"
)

# (smpplib command name, smpplib fields, our PDU with the same fields)
CASES: list[tuple[str, dict[str, Any], Pdu]] = [
    ("bind_transmitter", BIND, BindTransmitter(sequence_number=SEQ, **BIND)),
    ("bind_receiver", BIND, BindReceiver(sequence_number=SEQ, **BIND)),
    ("bind_transceiver", BIND, BindTransceiver(sequence_number=SEQ, **BIND)),
    (
        "bind_transmitter_resp",
        {"system_id": "SMSC", "sc_interface_version": 0x34},
        BindTransmitterResp(
            sequence_number=SEQ,
            system_id="SMSC",
            tlvs=(Tlv.u8(Tag.SC_INTERFACE_VERSION, 0x34),),
        ),
    ),
    (
        "bind_receiver_resp",
        {"system_id": "SMSC"},
        BindReceiverResp(sequence_number=SEQ, system_id="SMSC"),
    ),
    (
        "bind_transceiver_resp",
        {"system_id": "SMSC"},
        BindTransceiverResp(sequence_number=SEQ, system_id="SMSC"),
    ),
    ("submit_sm", SUBMIT, SubmitSm(sequence_number=SEQ, **SUBMIT)),
    (
        # TLVs in smpplib's params_order, since it always writes them in that order.
        "submit_sm",
        {
            "source_addr": "15881234",
            "destination_addr": "01012345678",
            "data_coding": 8,
            "user_message_reference": 0xBEEF,
            "source_port": 1000,
            "destination_port": 2000,
            "sar_msg_ref_num": 0x1234,
            "sar_total_segments": 3,
            "sar_segment_seqnum": 2,
            "message_payload": "긴 메시지".encode("utf-16-be") * 50,
        },
        SubmitSm(
            sequence_number=SEQ,
            source_addr="15881234",
            destination_addr="01012345678",
            data_coding=8,
            tlvs=(
                Tlv.u16(Tag.USER_MESSAGE_REFERENCE, 0xBEEF),
                Tlv.u16(Tag.SOURCE_PORT, 1000),
                Tlv.u16(Tag.DESTINATION_PORT, 2000),
                Tlv.u16(Tag.SAR_MSG_REF_NUM, 0x1234),
                Tlv.u8(Tag.SAR_TOTAL_SEGMENTS, 3),
                Tlv.u8(Tag.SAR_SEGMENT_SEQNUM, 2),
                Tlv(Tag.MESSAGE_PAYLOAD, "긴 메시지".encode("utf-16-be") * 50),
            ),
        ),
    ),
    ("submit_sm_resp", {"message_id": "1A2B3C4D"}, SubmitSmResp(sequence_number=SEQ, message_id="1A2B3C4D")),
    (
        "deliver_sm",
        {
            "source_addr": "01012345678",
            "destination_addr": "0212345678",
            "esm_class": 4,
            "short_message": RECEIPT_TEXT,
            "network_error_code": b"\x03\x00\x01",
            "message_state": 2,
            "receipted_message_id": "1A2B3C4D",
        },
        DeliverSm(
            sequence_number=SEQ,
            source_addr="01012345678",
            destination_addr="0212345678",
            esm_class=4,
            short_message=RECEIPT_TEXT,
            tlvs=(
                Tlv(Tag.NETWORK_ERROR_CODE, b"\x03\x00\x01"),
                Tlv.u8(Tag.MESSAGE_STATE, 2),
                Tlv.cstr(Tag.RECEIPTED_MESSAGE_ID, "1A2B3C4D"),
            ),
        ),
    ),
    ("deliver_sm_resp", {}, DeliverSmResp(sequence_number=SEQ)),
    (
        "data_sm",
        {
            "service_type": "WAP",
            "source_addr": "1588",
            "destination_addr": "01099998888",
            "esm_class": 0,
            "registered_delivery": 1,
            "data_coding": 4,
            "source_port": 9200,
            "destination_port": 2948,
            "message_payload": b"\x00\x01binary",
        },
        DataSm(
            sequence_number=SEQ,
            service_type="WAP",
            source_addr="1588",
            destination_addr="01099998888",
            registered_delivery=1,
            data_coding=4,
            tlvs=(
                Tlv.u16(Tag.SOURCE_PORT, 9200),
                Tlv.u16(Tag.DESTINATION_PORT, 2948),
                Tlv(Tag.MESSAGE_PAYLOAD, b"\x00\x01binary"),
            ),
        ),
    ),
    ("data_sm_resp", {"message_id": "99"}, DataSmResp(sequence_number=SEQ, message_id="99")),
    (
        "query_sm",
        {"message_id": "1A2B", "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": "1588"},
        QuerySm(
            sequence_number=SEQ, message_id="1A2B", source_addr_ton=1, source_addr_npi=1, source_addr="1588"
        ),
    ),
    (
        "query_sm_resp",
        {"message_id": "1A2B", "final_date": "261123120000000+", "message_state": 2, "error_code": 7},
        QuerySmResp(
            sequence_number=SEQ,
            message_id="1A2B",
            final_date="261123120000000+",
            message_state=2,
            error_code=7,
        ),
    ),
    ("unbind", {}, Unbind(sequence_number=SEQ)),
    ("unbind_resp", {}, UnbindResp(sequence_number=SEQ)),
    ("enquire_link", {}, EnquireLink(sequence_number=SEQ)),
    ("enquire_link_resp", {}, EnquireLinkResp(sequence_number=SEQ)),
    (
        "alert_notification",
        {
            "source_addr_ton": 1,
            "source_addr_npi": 1,
            "source_addr": "01012345678",
            "esme_addr_ton": 0,
            "esme_addr_npi": 0,
            "esme_addr": "telgate",
            "ms_availability_status": 1,
        },
        AlertNotification(
            sequence_number=SEQ,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr="01012345678",
            esme_addr="telgate",
            tlvs=(Tlv.u8(Tag.MS_AVAILABILITY_STATUS, 1),),
        ),
    ),
]
IDS = [f"{i:02d}-{name}" for i, (name, _f, _p) in enumerate(CASES)]


@pytest.mark.parametrize(("name", "fields", "ours"), CASES, ids=IDS)
def test_our_encoding_equals_smpplib_encoding(name: str, fields: dict[str, Any], ours: Pdu) -> None:
    assert ours.encode() == _smpplib_encode(name, fields)


@pytest.mark.parametrize(("name", "fields", "ours"), CASES, ids=IDS)
def test_smpplib_encoded_pdus_decode_to_the_same_fields(name: str, fields: dict[str, Any], ours: Pdu) -> None:
    assert decode_pdu(_smpplib_encode(name, fields)) == ours


@pytest.mark.parametrize(("name", "fields", "ours"), CASES, ids=IDS)
def test_our_pdus_decode_in_smpplib_to_the_same_fields(name: str, fields: dict[str, Any], ours: Pdu) -> None:
    theirs = _smpplib_decode(ours.encode())
    assert theirs.command == name
    assert theirs.sequence == SEQ
    for field, value in fields.items():
        expected = value.encode("latin-1") if isinstance(value, str) else value
        assert getattr(theirs, field) == expected, field


def test_error_status_travels_in_the_header_both_ways() -> None:
    data = _smpplib_encode("generic_nack", {}, status=0x58)
    assert data == GenericNack(sequence_number=SEQ, command_status=0x58).encode()
    assert decode_pdu(data) == GenericNack(sequence_number=SEQ, command_status=0x58)
    theirs = _smpplib_decode(GenericNack(sequence_number=SEQ, command_status=0x58).encode())
    assert theirs.status == 0x58


def test_smpplib_accepts_a_truncated_submit_sm_that_we_reject() -> None:
    # The reason DESIGN section 5 keeps smpplib as a reference only: it parses half a PDU.
    full = SubmitSm(sequence_number=SEQ, **SUBMIT).encode()
    cut = (len(full) - 10).to_bytes(4, "big") + full[4:-10]
    _smpplib_decode(cut)  # no complaint from smpplib
    error = decode_pdu(cut)
    assert not isinstance(error, Pdu)
    assert error.command_status == 0x01  # ESME_RINVMSGLEN: short_message runs past the end
    assert error.sequence_number == SEQ
