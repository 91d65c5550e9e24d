"""MM7 status codes (TS 23.140 §8.7.4 / the schema's status-code table) and MMStatus values."""

from __future__ import annotations

import enum


class StatusCode(enum.IntEnum):
    """Request status codes; 1xxx success, 2xxx client errors, 3xxx server errors,
    4xxx general service errors. Carriers add their own (e.g. 6xxx) which decode as ints."""

    SUCCESS = 1000
    PARTIAL_SUCCESS = 1100
    CLIENT_ERROR = 2000
    OPERATION_RESTRICTED = 2001
    ADDRESS_ERROR = 2002
    ADDRESS_NOT_FOUND = 2003
    CONTENT_REFUSED = 2004
    MESSAGE_ID_NOT_FOUND = 2005
    LINKED_ID_NOT_FOUND = 2006
    MESSAGE_FORMAT_CORRUPT = 2007
    APPLICATION_ID_NOT_FOUND = 2008
    REPLY_APPLICATION_ID_NOT_FOUND = 2009
    SERVER_ERROR = 3000
    NOT_POSSIBLE = 3001
    MESSAGE_REJECTED = 3002
    MULTIPLE_ADDRESSES_NOT_SUPPORTED = 3003
    APPLICATION_ADDRESSING_NOT_SUPPORTED = 3004
    GENERAL_SERVICE_ERROR = 4000
    IMPROPER_IDENTIFICATION = 4001
    UNSUPPORTED_VERSION = 4002
    UNSUPPORTED_OPERATION = 4003
    VALIDATION_ERROR = 4004
    SERVICE_ERROR = 4005
    SERVICE_UNAVAILABLE = 4006
    SERVICE_DENIED = 4007
    APPLICATION_DENIED = 4008


STATUS_TEXT: dict[int, str] = {
    StatusCode.SUCCESS: "Success",
    StatusCode.PARTIAL_SUCCESS: "Partial success",
    StatusCode.CLIENT_ERROR: "Client error",
    StatusCode.OPERATION_RESTRICTED: "Operation restricted",
    StatusCode.ADDRESS_ERROR: "Address Error",
    StatusCode.ADDRESS_NOT_FOUND: "Address Not Found",
    StatusCode.CONTENT_REFUSED: "Multimedia content refused",
    StatusCode.MESSAGE_ID_NOT_FOUND: "Message ID Not found",
    StatusCode.LINKED_ID_NOT_FOUND: "LinkedID not found",
    StatusCode.MESSAGE_FORMAT_CORRUPT: "Message format corrupt",
    StatusCode.SERVER_ERROR: "Server Error",
    StatusCode.NOT_POSSIBLE: "Not Possible",
    StatusCode.MESSAGE_REJECTED: "Message rejected",
    StatusCode.MULTIPLE_ADDRESSES_NOT_SUPPORTED: "Multiple addresses not supported",
    StatusCode.GENERAL_SERVICE_ERROR: "General service error",
    StatusCode.IMPROPER_IDENTIFICATION: "Improper identification",
    StatusCode.UNSUPPORTED_VERSION: "Unsupported version",
    StatusCode.UNSUPPORTED_OPERATION: "Unsupported operation",
    StatusCode.VALIDATION_ERROR: "Validation error",
    StatusCode.SERVICE_ERROR: "Service error",
    StatusCode.SERVICE_UNAVAILABLE: "Service unavailable",
    StatusCode.SERVICE_DENIED: "Service denied",
    StatusCode.APPLICATION_DENIED: "Application denied",
}


def is_success(code: int) -> bool:
    """1xxx codes: the request was carried out (1100: for some recipients only)."""
    return 1000 <= code < 2000


class MMStatus(enum.StrEnum):
    """The fate of a message in a DeliveryReportReq."""

    EXPIRED = "Expired"
    RETRIEVED = "Retrieved"
    REJECTED = "Rejected"
    INDETERMINATE = "Indeterminate"
    FORWARDED = "Forwarded"
    UNRECOGNISED = "Unrecognised"
    DEFERRED = "Deferred"
    DELIVERY_CONDITION_NOT_MET = "DeliveryConditionNotMet"  # REL-6 only

    @property
    def final(self) -> bool:
        """Whether the report ends the message's life (Deferred/Indeterminate do not)."""
        return self not in (MMStatus.DEFERRED, MMStatus.INDETERMINATE)
