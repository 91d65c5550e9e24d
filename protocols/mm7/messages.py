"""MM7 operations as frozen values. The codec turns them into SOAP envelopes and back."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from protocols.mm7.status import MMStatus
from protocols.mm7.versions import SchemaVersion


class AddressKind(enum.StrEnum):
    """How an address is written (the element name inside To/Cc/Bcc/Sender...)."""

    NUMBER = "Number"
    SHORT_CODE = "ShortCode"
    EMAIL = "RFC2822Address"


class Role(enum.StrEnum):
    """Where a recipient is listed."""

    TO = "To"
    CC = "Cc"
    BCC = "Bcc"


@dataclass(frozen=True, slots=True)
class Address:
    """An MSISDN, short code or e-mail address."""

    value: str
    kind: AddressKind = AddressKind.NUMBER
    role: Role = Role.TO


@dataclass(frozen=True, slots=True)
class Part:
    """One content part of a multimedia message: its type, bytes and identifiers."""

    content_type: str  # e.g. "image/jpeg", "text/plain", "application/smil"
    data: bytes
    content_id: str
    charset: str | None = None  # text parts: how `data` is encoded (e.g. "ks_c_5601-1987")
    location: str | None = None  # Content-Location (a file name SMIL refers to)

    def text(self) -> str:
        """A text part's characters, decoded with its declared charset (strict)."""
        return self.data.decode(self.charset or "us-ascii")


@dataclass(frozen=True, slots=True)
class Status:
    """The Status element of a response: code, text, details."""

    code: int
    text: str | None = None
    details: str | None = None


@dataclass(frozen=True, slots=True)
class SubmitReq:
    """VASP → MMSC: submit a multimedia message."""

    transaction_id: str
    vasp_id: str | None
    vas_id: str | None
    recipients: tuple[Address, ...]
    sender: Address | None = None
    service_code: str | None = None
    linked_id: str | None = None
    message_class: str | None = None  # Personal | Informational | Advertisement | Auto
    timestamp: datetime | None = None
    earliest_delivery: str | None = None  # absolute dateTime or relative duration (P1D)
    expiry: str | None = None
    delivery_report: bool | None = None
    read_reply: bool | None = None
    priority: str | None = None  # High | Normal | Low
    subject: str | None = None
    charged_party: str | None = None
    distribution_indicator: bool | None = None
    allow_adaptations: bool | None = None
    content: tuple[Part, ...] = ()


@dataclass(frozen=True, slots=True)
class SubmitRsp:
    """MMSC → VASP: the submit's status and, on success, the message id."""

    transaction_id: str
    status: Status
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class CancelReq:
    """VASP → MMSC: cancel a message not yet delivered."""

    transaction_id: str
    vasp_id: str | None
    vas_id: str | None
    message_id: str


@dataclass(frozen=True, slots=True)
class CancelRsp:
    """MMSC → VASP: the cancel's status."""

    transaction_id: str
    status: Status


@dataclass(frozen=True, slots=True)
class ReplaceReq:
    """VASP → MMSC: replace the content of a message not yet delivered."""

    transaction_id: str
    vasp_id: str | None
    vas_id: str | None
    message_id: str
    service_code: str | None = None
    timestamp: datetime | None = None
    earliest_delivery: str | None = None
    read_reply: bool | None = None
    distribution_indicator: bool | None = None
    allow_adaptations: bool | None = None
    content: tuple[Part, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplaceRsp:
    """MMSC → VASP: the replace's status."""

    transaction_id: str
    status: Status


@dataclass(frozen=True, slots=True)
class DeliveryReportReq:
    """MMSC → VASP: what became of a submitted message for one recipient."""

    transaction_id: str
    message_id: str
    recipient: Address
    sender: Address
    date: datetime
    mm_status: MMStatus
    relay_server_id: str | None = None
    status_text: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryReportRsp:
    """VASP → MMSC: the report was taken."""

    transaction_id: str
    status: Status


@dataclass(frozen=True, slots=True)
class RSErrorRsp:
    """MMSC → VASP: a request could not be processed (inside a SOAP Fault, or bare)."""

    transaction_id: str | None
    status: Status
    relay_server_id: str | None = None


@dataclass(frozen=True, slots=True)
class VASPErrorRsp:
    """VASP → MMSC: the MMSC's request could not be processed."""

    transaction_id: str | None
    status: Status


@dataclass(frozen=True, slots=True)
class Fault:
    """A SOAP 1.1 Fault; `error` is the RSErrorRsp/VASPErrorRsp of its detail, if any."""

    transaction_id: str | None
    faultcode: str  # env:Client | env:Server
    faultstring: str
    error: RSErrorRsp | VASPErrorRsp | None = None

    @property
    def status_code(self) -> int | None:
        """The MM7 status code the fault carries, if any."""
        return None if self.error is None else self.error.status.code


Request = SubmitReq | CancelReq | ReplaceReq | DeliveryReportReq
Response = SubmitRsp | CancelRsp | ReplaceRsp | DeliveryReportRsp | RSErrorRsp | VASPErrorRsp | Fault
Message = Request | Response


@dataclass(frozen=True, slots=True)
class Decoded:
    """A message read off the wire with the schema and MM7Version it was written in."""

    message: Message
    schema: SchemaVersion | None  # None only for a Fault without an MM7 detail
    mm7_version: str | None


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why bytes are not an acceptable MM7 message; `status` is the code to answer with."""

    status: int
    detail: str
    transaction_id: str | None = None


@dataclass(frozen=True, slots=True)
class Encoded:
    """An HTTP body and the headers that must go with it."""

    content_type: str
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """The HTTP headers of a SOAP 1.1 request or response carrying this body."""
        return {"Content-Type": self.content_type, "SOAPAction": '""'}
