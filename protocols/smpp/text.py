"""short_message text by data_coding (the Korean carriers' set: DESIGN section 6)."""

from __future__ import annotations

from protocols.smpp.constants import DataCoding

# data_coding 0 is "SMSC default alphabet"; Korean SMSCs treat it as ASCII/KS X 1003,
# so we decode it with cp949, which is a superset of ASCII, rather than GSM 03.38.
_CODECS: dict[int, str] = {
    DataCoding.DEFAULT: "cp949",
    DataCoding.ASCII: "ascii",
    DataCoding.LATIN1: "latin-1",
    DataCoding.UCS2: "utf-16-be",
    DataCoding.KSC5601: "cp949",
}


class UnsupportedDataCoding(ValueError):
    """The data_coding has no text codec here (binary or unknown)."""


def codec_for(data_coding: int) -> str:
    """The Python codec name for a data_coding."""
    try:
        return _CODECS[data_coding]
    except KeyError:
        raise UnsupportedDataCoding(f"data_coding 0x{data_coding:02x}") from None


def encode_text(text: str, data_coding: int) -> bytes:
    """Text to short_message octets; UnicodeEncodeError when a character does not fit."""
    return text.encode(codec_for(data_coding))


def decode_text(payload: bytes, data_coding: int) -> str:
    """short_message (or message_payload) octets to text; undecodable octets become U+FFFD."""
    return payload.decode(codec_for(data_coding), errors="replace")
