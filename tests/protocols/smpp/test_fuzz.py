"""Property tests: the decoder never raises, and every valid PDU round-trips."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.smpp.codec import DecodeError, PduDecoder, decode_pdu
from protocols.smpp.constants import FIXED_TLV_LENGTHS, Tag
from protocols.smpp.pdu import (
    AlertNotification,
    BindReceiver,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    CancelSm,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    GenericNack,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
)

u8 = st.integers(0, 255)
u32 = st.integers(0, 2**32 - 1)


def cstr(max_size: int) -> st.SearchStrategy[str]:
    """A C-octet string that fits a field of ``max_size`` octets (NUL included)."""
    return st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=max_size - 1)


def _tlv_value(tag: int) -> st.SearchStrategy[bytes]:
    fixed = FIXED_TLV_LENGTHS.get(tag)
    if fixed is not None:
        return st.binary(min_size=fixed, max_size=fixed)
    return st.binary(max_size=300)


tags = st.sampled_from([int(t) for t in Tag]) | st.integers(0x1400, 0x3FFF)
tlv = tags.flatmap(lambda tag: _tlv_value(tag).map(lambda v: Tlv(tag, v)))
tlvs = st.lists(tlv, max_size=5).map(tuple)
header = {"sequence_number": u32, "command_status": u32}

short_message_fields = {
    **header,
    "service_type": cstr(6),
    "source_addr_ton": u8,
    "source_addr_npi": u8,
    "source_addr": cstr(21),
    "dest_addr_ton": u8,
    "dest_addr_npi": u8,
    "destination_addr": cstr(21),
    "esm_class": u8,
    "protocol_id": u8,
    "priority_flag": u8,
    "schedule_delivery_time": cstr(17),
    "validity_period": cstr(17),
    "registered_delivery": u8,
    "replace_if_present_flag": u8,
    "data_coding": u8,
    "sm_default_msg_id": u8,
    "short_message": st.binary(max_size=254),
    "tlvs": tlvs,
}
bind_fields = {
    **header,
    "system_id": cstr(16),
    "password": cstr(9),
    "system_type": cstr(13),
    "interface_version": u8,
    "addr_ton": u8,
    "addr_npi": u8,
    "address_range": cstr(41),
}

pdus: st.SearchStrategy[Pdu] = st.one_of(
    st.builds(SubmitSm, **short_message_fields),
    st.builds(DeliverSm, **short_message_fields),
    st.builds(BindTransmitter, **bind_fields),
    st.builds(BindReceiver, **bind_fields),
    st.builds(BindTransceiver, **bind_fields),
    st.builds(BindTransceiverResp, **header, system_id=cstr(16), tlvs=tlvs),
    st.builds(SubmitSmResp, **header, message_id=cstr(65).filter(bool), tlvs=tlvs),
    st.builds(DeliverSmResp, **header, message_id=cstr(65).filter(bool)),
    st.builds(DataSmResp, **header, message_id=cstr(65).filter(bool)),
    st.builds(
        DataSm,
        **header,
        service_type=cstr(6),
        source_addr=cstr(65),
        destination_addr=cstr(65),
        esm_class=u8,
        registered_delivery=u8,
        data_coding=u8,
        tlvs=tlvs,
    ),
    st.builds(QuerySm, **header, message_id=cstr(65), source_addr=cstr(21), source_addr_ton=u8),
    st.builds(
        QuerySmResp,
        **header,
        message_id=cstr(65).filter(bool),
        final_date=cstr(17),
        message_state=u8,
        error_code=u8,
    ),
    st.builds(
        CancelSm,
        **header,
        service_type=cstr(6),
        message_id=cstr(65),
        source_addr=cstr(21),
        destination_addr=cstr(21),
    ),
    st.builds(AlertNotification, **header, source_addr=cstr(65), esme_addr=cstr(65), tlvs=tlvs),
    st.builds(Outbind, **header, system_id=cstr(16), password=cstr(9)),
    st.builds(EnquireLink, **header),
    st.builds(Unbind, **header),
    st.builds(GenericNack, **header),
)


@given(pdus)
@settings(max_examples=400)
def test_every_valid_pdu_round_trips(pdu: Pdu) -> None:
    assert decode_pdu(pdu.encode()) == pdu


@given(st.lists(pdus, min_size=1, max_size=6), st.data())
@settings(max_examples=100)
def test_a_stream_cut_anywhere_yields_the_same_pdus(batch: list[Pdu], data: st.DataObject) -> None:
    stream = b"".join(p.encode() for p in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = PduDecoder()
    out: list[object] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[last:cut])
        last = cut
    assert out == batch


@given(st.binary(max_size=600))
@settings(max_examples=500)
def test_arbitrary_bytes_never_raise_out_of_the_decoder(data: bytes) -> None:
    decoder = PduDecoder(max_command_length=4096)
    for item in decoder.feed(data):
        assert isinstance(item, Pdu | DecodeError)


@given(st.binary(max_size=300), u32, st.sampled_from([0x1, 0x2, 0x4, 0x5, 0x9, 0x80000004]))
@settings(max_examples=500)
def test_arbitrary_bodies_under_valid_headers_never_raise(body: bytes, seq: int, cid: int) -> None:
    frame = struct.pack(">IIII", 16 + len(body), cid, 0, seq) + body
    result = decode_pdu(frame)
    if isinstance(result, DecodeError):
        assert result.sequence_number == seq and not result.fatal


@given(pdus, st.data())
@settings(max_examples=400)
def test_mutated_valid_pdus_never_raise(pdu: Pdu, data: st.DataObject) -> None:
    raw = bytearray(pdu.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            raw[i] = data.draw(u8)
        elif action == "delete" and len(raw) > 1:
            del raw[i]
        else:
            raw.insert(i, data.draw(u8))
    for item in PduDecoder(max_command_length=4096).feed(bytes(raw)):
        assert isinstance(item, Pdu | DecodeError)
    assert isinstance(decode_pdu(bytes(raw)), Pdu | DecodeError)
