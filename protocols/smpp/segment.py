"""Long messages on the wire: message_payload, SAR TLVs or UDH concatenation (per carrier)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from protocols.smpp.constants import EsmClass, Tag
from protocols.smpp.pdu import Tlv, sar_tlvs
from protocols.smpp.text import codec_for
from protocols.values import quick_init

SINGLE_MAX_OCTETS = 140  # short_message capacity of one SMS over the air (8-bit and UCS-2)
_UDH_LENGTH = 6  # 05 00 03 ref total seq: concatenation with an 8-bit reference


class LongMessageMethod(Enum):
    """How a carrier wants text longer than one short_message."""

    MESSAGE_PAYLOAD = "message_payload"
    SAR = "sar"
    UDH = "udh"


@quick_init
@dataclass(frozen=True, slots=True)
class Segment:
    """The parts of one submit_sm: short_message, esm_class bits to OR in, and TLVs to add."""

    short_message: bytes
    esm_class: int
    tlvs: tuple[Tlv, ...]


def split_encoded(text: str, data_coding: int, max_octets: int) -> list[bytes]:
    """Encode ``text`` into chunks of at most ``max_octets``, never splitting a character.

    Raises UnicodeEncodeError when a character does not exist in the data_coding.
    """
    codec = codec_for(data_coding)
    whole = text.encode(codec)
    if len(whole) <= max_octets:
        return [whole]
    chunks: list[bytes] = []
    current = bytearray()
    for ch in text:
        encoded = ch.encode(codec)
        if len(current) + len(encoded) > max_octets:
            chunks.append(bytes(current))
            current.clear()
        current += encoded
    if current:
        chunks.append(bytes(current))
    return chunks


def segments(
    text: str,
    data_coding: int,
    method: LongMessageMethod,
    ref_num: int,
    max_octets: int = SINGLE_MAX_OCTETS,
) -> list[Segment]:
    """The submit_sm parts for ``text``; one plain segment when it fits in ``max_octets``.

    ``ref_num`` identifies the message among the recipient's concatenations (16 bits for
    SAR, the low 8 bits for UDH); the caller keeps it unique per destination.
    """
    one = _single(text, data_coding, max_octets)
    if one is not None:
        return [one]
    encoded = text.encode(codec_for(data_coding))
    if method is LongMessageMethod.MESSAGE_PAYLOAD:
        return [Segment(b"", 0, (Tlv(Tag.MESSAGE_PAYLOAD, encoded),))]
    if method is LongMessageMethod.SAR:
        parts = split_encoded(text, data_coding, max_octets)
        _check_count(len(parts))
        ref = ref_num & 0xFFFF
        return [Segment(part, 0, sar_tlvs(ref, len(parts), i)) for i, part in enumerate(parts, 1)]
    parts = split_encoded(text, data_coding, max_octets - _UDH_LENGTH)
    _check_count(len(parts))
    ref8 = ref_num & 0xFF
    return [
        Segment(bytes((5, 0, 3, ref8, len(parts), i)) + part, EsmClass.UDHI, ())
        for i, part in enumerate(parts, 1)
    ]


@lru_cache(maxsize=256)
def _single(text: str, data_coding: int, max_octets: int) -> Segment | None:
    """The one segment of a text that fits, None when it needs more: cached, since a bulk
    send repeats one text to every recipient (a value, so it can be shared)."""
    encoded = text.encode(codec_for(data_coding))
    return Segment(encoded, 0, ()) if len(encoded) <= max_octets else None


def _check_count(count: int) -> None:
    if count > 255:
        raise ValueError("text needs more than 255 segments")
