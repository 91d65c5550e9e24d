"""SMPP 3.4 decoding: one framed PDU (``decode_pdu``) or a byte stream (``PduDecoder``).

Malformed input never raises: it becomes a ``DecodeError`` value carrying the status a peer
should be answered with (generic_nack) and whether the byte stream is still framed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from protocols.smpp.constants import (
    FIXED_TLV_LENGTHS,
    HEADER_LENGTH,
    RESPONSE_BIT,
    CommandId,
    CommandStatus,
)
from protocols.smpp.pdu import (
    ADDR_MAX,
    ADDRESS_RANGE_MAX,
    LONG_ADDR_MAX,
    MESSAGE_ID_MAX,
    PASSWORD_MAX,
    SERVICE_TYPE_MAX,
    SHORT_MESSAGE_MAX,
    SYSTEM_ID_MAX,
    SYSTEM_TYPE_MAX,
    TIME_MAX,
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
    UnbindResp,
)

_HEADER = struct.Struct(">IIII")
_TLV_HEADER = struct.Struct(">HH")

# A message_payload TLV may hold 64 KiB; anything much larger is an attack or lost framing.
DEFAULT_MAX_COMMAND_LENGTH = 70_000

_S = CommandStatus


@dataclass(frozen=True, slots=True)
class DecodeError:
    """A PDU (or the stream) that could not be decoded, and how to answer it.

    ``fatal`` means framing is lost (bad command_length): the session must close.
    """

    reason: str
    command_status: int
    sequence_number: int | None = None
    command_id: int | None = None
    fatal: bool = False

    @property
    def was_response(self) -> bool:
        """True when the bad PDU claimed to be a response (answering it with a nack is wrong)."""
        return self.command_id is not None and bool(self.command_id & RESPONSE_BIT)


class _Malformed(Exception):
    """Internal: raised by field readers, turned into DecodeError by decode_pdu."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _cstr(data: bytes, pos: int, end: int, size: int, status: int, name: str) -> tuple[str, int]:
    if pos < end and not data[pos]:  # empty, as most optional fields are: 0.3 µs less a field
        return "", pos + 1
    limit = pos + size
    nul = data.find(b"\0", pos, limit if limit < end else end)
    if nul < 0:
        if end - pos >= size:
            raise _Malformed(status, f"{name}_too_long")
        raise _Malformed(_S.ESME_RINVCMDLEN, f"{name}_truncated")
    return data[pos:nul].decode("latin-1"), nul + 1


def _u8(data: bytes, pos: int, end: int, name: str) -> int:
    if pos >= end:
        raise _Malformed(_S.ESME_RINVCMDLEN, f"{name}_truncated")
    return data[pos]


def _tlvs(data: bytes, pos: int, end: int) -> tuple[Tlv, ...]:
    if pos == end:
        return ()
    out: list[Tlv] = []
    while pos < end:
        if end - pos < 4:
            raise _Malformed(_S.ESME_RINVOPTPARSTREAM, "tlv_header_truncated")
        tag, length = _TLV_HEADER.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise _Malformed(_S.ESME_RINVOPTPARSTREAM, "tlv_overruns_pdu")
        fixed = FIXED_TLV_LENGTHS.get(tag)
        if fixed is not None and fixed != length:
            raise _Malformed(_S.ESME_RINVPARLEN, "tlv_length_invalid")
        out.append(Tlv(tag, data[pos : pos + length]))
        pos += length
    return tuple(out)


def _no_trailing(pos: int, end: int) -> None:
    if pos != end:
        raise _Malformed(_S.ESME_RINVCMDLEN, "trailing_octets")


_Parser = Callable[[bytes, int, int], Pdu]


def _header_only(cls: type[Pdu]) -> _Parser:
    def parse(data: bytes, seq: int, status: int) -> Pdu:
        _no_trailing(HEADER_LENGTH, len(data))
        return cls(sequence_number=seq, command_status=status)

    return parse


def _bind_request(cls: type[BindTransmitter | BindReceiver | BindTransceiver]) -> _Parser:
    def parse(data: bytes, seq: int, status: int) -> Pdu:
        end = len(data)
        system_id, p = _cstr(data, 16, end, SYSTEM_ID_MAX, _S.ESME_RINVSYSID, "system_id")
        password, p = _cstr(data, p, end, PASSWORD_MAX, _S.ESME_RINVPASWD, "password")
        system_type, p = _cstr(data, p, end, SYSTEM_TYPE_MAX, _S.ESME_RINVSYSTYP, "system_type")
        if end - p < 3:
            raise _Malformed(_S.ESME_RINVCMDLEN, "bind_fields_truncated")
        version, ton, npi = data[p], data[p + 1], data[p + 2]
        address_range, p = _cstr(data, p + 3, end, ADDRESS_RANGE_MAX, _S.ESME_RINVPARLEN, "address_range")
        _no_trailing(p, end)
        return cls(
            sequence_number=seq,
            command_status=status,
            system_id=system_id,
            password=password,
            system_type=system_type,
            interface_version=version,
            addr_ton=ton,
            addr_npi=npi,
            address_range=address_range,
        )

    return parse


def _bind_response(
    cls: type[BindTransmitterResp | BindReceiverResp | BindTransceiverResp],
) -> _Parser:
    def parse(data: bytes, seq: int, status: int) -> Pdu:
        end = len(data)
        if end == HEADER_LENGTH:  # error responses often carry no body at all
            return cls(sequence_number=seq, command_status=status)
        system_id, p = _cstr(data, 16, end, SYSTEM_ID_MAX, _S.ESME_RINVSYSID, "system_id")
        return cls(
            sequence_number=seq,
            command_status=status,
            system_id=system_id,
            tlvs=_tlvs(data, p, end),
        )

    return parse


def _message_id_response(cls: type[SubmitSmResp | DeliverSmResp | DataSmResp]) -> _Parser:
    def parse(data: bytes, seq: int, status: int) -> Pdu:
        end = len(data)
        if end == HEADER_LENGTH:  # error responses (and many deliver_sm_resp) have no body
            return cls(sequence_number=seq, command_status=status)
        message_id, p = _cstr(data, 16, end, MESSAGE_ID_MAX, _S.ESME_RINVMSGID, "message_id")
        return cls(
            sequence_number=seq,
            command_status=status,
            message_id=message_id,
            tlvs=_tlvs(data, p, end),
        )

    return parse


def _addresses(data: bytes, end: int, addr_max: int
               ) -> tuple[str, int, int, str, int, int, str, int]:
    """service_type, source (ton, npi, addr) and destination (ton, npi, addr), and the offset
    after them: the common head of submit_sm, deliver_sm and data_sm."""
    service_type, p = _cstr(data, 16, end, SERVICE_TYPE_MAX, _S.ESME_RINVSERTYP, "service_type")
    if end - p < 2:
        raise _Malformed(_S.ESME_RINVCMDLEN, "source_addr_truncated")
    s_ton, s_npi = data[p], data[p + 1]
    source_addr, p = _cstr(data, p + 2, end, addr_max, _S.ESME_RINVSRCADR, "source_addr")
    if end - p < 2:
        raise _Malformed(_S.ESME_RINVCMDLEN, "destination_addr_truncated")
    d_ton, d_npi = data[p], data[p + 1]
    dest, p = _cstr(data, p + 2, end, addr_max, _S.ESME_RINVDSTADR, "destination_addr")
    return service_type, s_ton, s_npi, source_addr, d_ton, d_npi, dest, p


def _short_message(cls: type[SubmitSm | DeliverSm]) -> _Parser:
    def parse(data: bytes, seq: int, status: int) -> Pdu:
        end = len(data)
        service_type, s_ton, s_npi, source_addr, d_ton, d_npi, dest, p = _addresses(
            data, end, ADDR_MAX)
        if end - p < 3:
            raise _Malformed(_S.ESME_RINVCMDLEN, "esm_class_truncated")
        esm_class, protocol_id, priority = data[p], data[p + 1], data[p + 2]
        schedule, p = _cstr(data, p + 3, end, TIME_MAX, _S.ESME_RINVSCHED, "schedule_delivery_time")
        validity, p = _cstr(data, p, end, TIME_MAX, _S.ESME_RINVEXPIRY, "validity_period")
        if end - p < 5:
            raise _Malformed(_S.ESME_RINVCMDLEN, "sm_length_truncated")
        registered, replace, coding, default_id, sm_length = data[p : p + 5]
        p += 5
        if sm_length > SHORT_MESSAGE_MAX:
            raise _Malformed(_S.ESME_RINVMSGLEN, "sm_length_too_large")
        if p + sm_length > end:
            raise _Malformed(_S.ESME_RINVMSGLEN, "short_message_truncated")
        short_message = data[p : p + sm_length]
        return cls(
            sequence_number=seq,
            command_status=status,
            service_type=service_type,
            source_addr_ton=s_ton,
            source_addr_npi=s_npi,
            source_addr=source_addr,
            dest_addr_ton=d_ton,
            dest_addr_npi=d_npi,
            destination_addr=dest,
            esm_class=esm_class,
            protocol_id=protocol_id,
            priority_flag=priority,
            schedule_delivery_time=schedule,
            validity_period=validity,
            registered_delivery=registered,
            replace_if_present_flag=replace,
            data_coding=coding,
            sm_default_msg_id=default_id,
            short_message=short_message,
            tlvs=_tlvs(data, p + sm_length, end),
        )

    return parse


def _data_sm(data: bytes, seq: int, status: int) -> Pdu:
    end = len(data)
    service_type, s_ton, s_npi, source_addr, d_ton, d_npi, dest, p = _addresses(
        data, end, LONG_ADDR_MAX)
    if end - p < 3:
        raise _Malformed(_S.ESME_RINVCMDLEN, "data_coding_truncated")
    return DataSm(
        sequence_number=seq,
        command_status=status,
        service_type=service_type,
        source_addr_ton=s_ton,
        source_addr_npi=s_npi,
        source_addr=source_addr,
        dest_addr_ton=d_ton,
        dest_addr_npi=d_npi,
        destination_addr=dest,
        esm_class=data[p],
        registered_delivery=data[p + 1],
        data_coding=data[p + 2],
        tlvs=_tlvs(data, p + 3, end),
    )


def _query_sm(data: bytes, seq: int, status: int) -> Pdu:
    end = len(data)
    message_id, p = _cstr(data, 16, end, MESSAGE_ID_MAX, _S.ESME_RINVMSGID, "message_id")
    if end - p < 2:
        raise _Malformed(_S.ESME_RINVCMDLEN, "source_addr_truncated")
    ton, npi = data[p], data[p + 1]
    source_addr, p = _cstr(data, p + 2, end, ADDR_MAX, _S.ESME_RINVSRCADR, "source_addr")
    _no_trailing(p, end)
    return QuerySm(
        sequence_number=seq,
        command_status=status,
        message_id=message_id,
        source_addr_ton=ton,
        source_addr_npi=npi,
        source_addr=source_addr,
    )


def _query_sm_resp(data: bytes, seq: int, status: int) -> Pdu:
    end = len(data)
    if end == HEADER_LENGTH:
        return QuerySmResp(sequence_number=seq, command_status=status)
    message_id, p = _cstr(data, 16, end, MESSAGE_ID_MAX, _S.ESME_RINVMSGID, "message_id")
    final_date, p = _cstr(data, p, end, TIME_MAX, _S.ESME_RINVPARLEN, "final_date")
    if end - p < 2:
        raise _Malformed(_S.ESME_RINVCMDLEN, "message_state_truncated")
    _no_trailing(p + 2, end)
    return QuerySmResp(
        sequence_number=seq,
        command_status=status,
        message_id=message_id,
        final_date=final_date,
        message_state=data[p],
        error_code=data[p + 1],
    )


def _cancel_sm(data: bytes, seq: int, status: int) -> Pdu:
    end = len(data)
    service_type, p = _cstr(data, 16, end, SERVICE_TYPE_MAX, _S.ESME_RINVSERTYP, "service_type")
    message_id, p = _cstr(data, p, end, MESSAGE_ID_MAX, _S.ESME_RINVMSGID, "message_id")
    if end - p < 2:
        raise _Malformed(_S.ESME_RINVCMDLEN, "source_addr_truncated")
    s_ton, s_npi = data[p], data[p + 1]
    source_addr, p = _cstr(data, p + 2, end, ADDR_MAX, _S.ESME_RINVSRCADR, "source_addr")
    if end - p < 2:
        raise _Malformed(_S.ESME_RINVCMDLEN, "destination_addr_truncated")
    d_ton, d_npi = data[p], data[p + 1]
    dest, p = _cstr(data, p + 2, end, ADDR_MAX, _S.ESME_RINVDSTADR, "destination_addr")
    _no_trailing(p, end)
    return CancelSm(
        sequence_number=seq,
        command_status=status,
        service_type=service_type,
        message_id=message_id,
        source_addr_ton=s_ton,
        source_addr_npi=s_npi,
        source_addr=source_addr,
        dest_addr_ton=d_ton,
        dest_addr_npi=d_npi,
        destination_addr=dest,
    )


def _outbind(data: bytes, seq: int, status: int) -> Pdu:
    end = len(data)
    system_id, p = _cstr(data, 16, end, SYSTEM_ID_MAX, _S.ESME_RINVSYSID, "system_id")
    password, p = _cstr(data, p, end, PASSWORD_MAX, _S.ESME_RINVPASWD, "password")
    _no_trailing(p, end)
    return Outbind(sequence_number=seq, command_status=status, system_id=system_id, password=password)


def _alert_notification(data: bytes, seq: int, status: int) -> Pdu:
    end = len(data)
    s_ton = _u8(data, 16, end, "source_addr_ton")
    s_npi = _u8(data, 17, end, "source_addr_npi")
    source_addr, p = _cstr(data, 18, end, LONG_ADDR_MAX, _S.ESME_RINVSRCADR, "source_addr")
    if end - p < 2:
        raise _Malformed(_S.ESME_RINVCMDLEN, "esme_addr_truncated")
    e_ton, e_npi = data[p], data[p + 1]
    esme_addr, p = _cstr(data, p + 2, end, LONG_ADDR_MAX, _S.ESME_RINVDSTADR, "esme_addr")
    return AlertNotification(
        sequence_number=seq,
        command_status=status,
        source_addr_ton=s_ton,
        source_addr_npi=s_npi,
        source_addr=source_addr,
        esme_addr_ton=e_ton,
        esme_addr_npi=e_npi,
        esme_addr=esme_addr,
        tlvs=_tlvs(data, p, end),
    )


_PARSERS: dict[int, _Parser] = {
    CommandId.GENERIC_NACK: _header_only(GenericNack),
    CommandId.BIND_RECEIVER: _bind_request(BindReceiver),
    CommandId.BIND_RECEIVER_RESP: _bind_response(BindReceiverResp),
    CommandId.BIND_TRANSMITTER: _bind_request(BindTransmitter),
    CommandId.BIND_TRANSMITTER_RESP: _bind_response(BindTransmitterResp),
    CommandId.BIND_TRANSCEIVER: _bind_request(BindTransceiver),
    CommandId.BIND_TRANSCEIVER_RESP: _bind_response(BindTransceiverResp),
    CommandId.QUERY_SM: _query_sm,
    CommandId.QUERY_SM_RESP: _query_sm_resp,
    CommandId.SUBMIT_SM: _short_message(SubmitSm),
    CommandId.SUBMIT_SM_RESP: _message_id_response(SubmitSmResp),
    CommandId.DELIVER_SM: _short_message(DeliverSm),
    CommandId.DELIVER_SM_RESP: _message_id_response(DeliverSmResp),
    CommandId.UNBIND: _header_only(Unbind),
    CommandId.UNBIND_RESP: _header_only(UnbindResp),
    CommandId.CANCEL_SM: _cancel_sm,
    CommandId.CANCEL_SM_RESP: _header_only(CancelSmResp),
    CommandId.OUTBIND: _outbind,
    CommandId.ENQUIRE_LINK: _header_only(EnquireLink),
    CommandId.ENQUIRE_LINK_RESP: _header_only(EnquireLinkResp),
    CommandId.ALERT_NOTIFICATION: _alert_notification,
    CommandId.DATA_SM: _data_sm,
    CommandId.DATA_SM_RESP: _message_id_response(DataSmResp),
}


def decode_pdu(frame: bytes) -> Pdu | DecodeError:
    """Decode exactly one PDU; ``frame`` must be the whole PDU, header included."""
    if len(frame) < HEADER_LENGTH:
        return DecodeError("header_truncated", _S.ESME_RINVCMDLEN, fatal=True)
    length, command_id, status, seq = _HEADER.unpack_from(frame, 0)
    if length != len(frame):
        return DecodeError("command_length_mismatch", _S.ESME_RINVCMDLEN, seq, command_id, True)
    parser = _PARSERS.get(command_id)
    if parser is None:
        return DecodeError("unknown_command_id", _S.ESME_RINVCMDID, seq, command_id)
    try:
        return parser(frame, seq, status)
    except _Malformed as exc:
        return DecodeError(exc.reason, exc.status, seq, command_id)
    except (IndexError, struct.error):
        # Field readers bound-check explicitly; this only backs them up: a read past the end.
        return DecodeError("body_truncated", _S.ESME_RINVCMDLEN, seq, command_id)


class PduDecoder:
    """Stream decoder: ``feed(bytes)`` returns the PDUs (or DecodeErrors) completed so far.

    After a fatal error (framing lost) it ignores all further input.
    """

    __slots__ = ("_buf", "_failed", "_max", "_need")

    def __init__(self, max_command_length: int = DEFAULT_MAX_COMMAND_LENGTH) -> None:
        self._buf = bytearray()
        self._need = HEADER_LENGTH
        self._max = max_command_length
        self._failed = False

    @property
    def failed(self) -> bool:
        """True once framing was lost; the connection should be closed."""
        return self._failed

    @property
    def buffered(self) -> int:
        """Octets held waiting for the rest of a PDU."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Pdu | DecodeError]:
        """Add received octets; return every PDU now complete, in order."""
        if self._failed:
            return []
        if type(data) is not bytes:  # slices below must be bytes, not bytearray views
            data = bytes(data)
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []
            data = bytes(self._buf)
            self._buf.clear()
        out: list[Pdu | DecodeError] = []
        pos = 0
        n = len(data)
        max_length = self._max
        while True:
            avail = n - pos
            if avail < HEADER_LENGTH:
                self._need = HEADER_LENGTH
                break
            length, command_id, status, seq = _HEADER.unpack_from(data, pos)
            if length < HEADER_LENGTH or length > max_length:
                reason = "command_length_too_small" if length < 16 else "command_length_too_large"
                out.append(DecodeError(reason, _S.ESME_RINVCMDLEN, seq, command_id, fatal=True))
                self._failed = True
                return out
            if avail < length:
                self._need = length
                break
            frame = data[pos : pos + length] if (pos or length != n) else data
            parser = _PARSERS.get(command_id)
            if parser is None:
                out.append(DecodeError("unknown_command_id", _S.ESME_RINVCMDID, seq, command_id))
            else:
                try:
                    out.append(parser(frame, seq, status))
                except _Malformed as exc:
                    out.append(DecodeError(exc.reason, exc.status, seq, command_id))
                except (IndexError, struct.error):
                    out.append(DecodeError("body_truncated", _S.ESME_RINVCMDLEN, seq, command_id))
            pos += length
        if pos < n:
            self._buf += memoryview(data)[pos:]
        return out
