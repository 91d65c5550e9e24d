"""The de-facto delivery receipt text (SMPP 3.4 appendix B) and message id matching."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

from protocols.smpp.constants import (
    MESSAGE_TYPE_MASK,
    RECEIPT_STAT_BY_STATE,
    STATE_BY_RECEIPT_STAT,
    EsmClass,
    MessageState,
)
from protocols.smpp.pdu import DataSm, DeliverSm
from protocols.values import quick_init

# Keys in the order SMSCs write them; "text" swallows the rest of the line because its
# content is the message itself and may contain anything, "id:" included.
_CANONICAL = re.compile(
    r"id:(\S+) sub:(\S*) dlvrd:(\S*) submit date:(\d*) done date:(\d*) stat:(\S+) err:(\S*)"
    r"(?: text:(.*))?\Z",
    re.IGNORECASE | re.DOTALL,
)
_KEY = re.compile(r"(?i)(?:^|(?<=\s))(id|sub|dlvrd|submit[ _]date|done[ _]date|stat|err|text)\s*:")


@quick_init
@dataclass(frozen=True, slots=True)
class DeliveryReceipt:
    """A parsed receipt; fields an SMSC left out are None."""

    message_id: str
    stat: str | None = None
    err: str | None = None
    sub: str | None = None
    dlvrd: str | None = None
    submit_date: datetime | None = None
    done_date: datetime | None = None
    text: str | None = None

    @property
    def state(self) -> MessageState | None:
        """The stat word as a message state (DELIVRD -> DELIVERED), if known."""
        if self.stat is None:
            return None
        return STATE_BY_RECEIPT_STAT.get(self.stat)


@lru_cache(maxsize=256)
def parse_receipt_date(value: str) -> datetime | None:
    """YYMMDDhhmm[ss] as a naive datetime (SMSC local time), None when unreadable.

    Cached: the receipts of a busy minute all carry the same few date strings."""
    d = value.strip()
    if len(d) not in (10, 12) or not d.isdigit():
        return None
    try:
        # By hand rather than strptime: receipts arrive at thousands per second.
        return datetime(
            2000 + int(d[0:2]),
            int(d[2:4]),
            int(d[4:6]),
            int(d[6:8]),
            int(d[8:10]),
            int(d[10:12]) if len(d) == 12 else 0,
        )
    except ValueError:
        return None


def parse_receipt(text: str | bytes) -> DeliveryReceipt | None:
    """Parse receipt text tolerant of case, order and missing fields; None if it is no receipt."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    m = _CANONICAL.match(text)
    if m is not None:  # the common exact layout: one regex match instead of a field scan
        return DeliveryReceipt(
            message_id=m[1],
            sub=m[2],
            dlvrd=m[3],
            submit_date=parse_receipt_date(m[4]),
            done_date=parse_receipt_date(m[5]),
            stat=m[6].upper(),
            err=m[7],
            text=m[8],
        )
    fields: dict[str, str] = {}
    matches = list(_KEY.finditer(text))
    for i, m in enumerate(matches):
        key = m.group(1).lower().replace("_", " ")
        if key in fields:
            continue
        if key == "text":
            fields[key] = text[m.end() :]
            break
        stop = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        fields[key] = text[m.end() : stop].strip()
    if "id" not in fields or ("stat" not in fields and "err" not in fields):
        return None
    submit = fields.get("submit date")
    done = fields.get("done date")
    stat = fields.get("stat")
    return DeliveryReceipt(
        message_id=fields["id"],
        stat=stat.upper() if stat else None,
        err=fields.get("err"),
        sub=fields.get("sub"),
        dlvrd=fields.get("dlvrd"),
        submit_date=parse_receipt_date(submit) if submit else None,
        done_date=parse_receipt_date(done) if done else None,
        text=fields.get("text"),
    )


def format_receipt(
    message_id: str,
    stat: str,
    *,
    submit_date: datetime | str,
    done_date: datetime | str,
    err: str = "000",
    sub: str = "001",
    dlvrd: str | None = None,
    text: str = "",
) -> str:
    """The receipt text as SMSCs write it (``dlvrd`` defaults from ``stat``). A date is a
    datetime, or already in its receipt form (`receipt_date`) when many receipts share it."""
    if dlvrd is None:
        dlvrd = "001" if stat == "DELIVRD" else "000"
    if not isinstance(submit_date, str):
        submit_date = receipt_date(submit_date)
    if not isinstance(done_date, str):
        done_date = receipt_date(done_date)
    return (
        f"id:{message_id} sub:{sub} dlvrd:{dlvrd} "
        f"submit date:{submit_date} done date:{done_date} "
        f"stat:{stat} err:{err} text:{text[:20]}"
    )


def receipt_date(when: datetime) -> str:
    """YYMMDDhhmm of `when` as given (its own zone, if any), as a receipt writes it."""
    # strftime cost more than the rest of a receipt's text; this is a third of it.
    return f"{when.year % 100:02d}{when.month:02d}{when.day:02d}{when.hour:02d}{when.minute:02d}"


def message_ids_match(submitted: str, receipted: str) -> bool:
    """True when a receipt id names the submitted message despite hex/decimal or case drift.

    Some SMSCs answer submit_sm_resp in hex and write receipts in decimal (or the reverse).
    """
    a, b = submitted.strip(), receipted.strip()
    if a.lower() == b.lower():
        return True
    try:
        if a.isdigit() and int(a) == int(b, 16):
            return True
        if b.isdigit() and int(b) == int(a, 16):
            return True
    except ValueError:
        return False
    return False


def receipt_from_deliver_sm(pdu: DeliverSm | DataSm) -> DeliveryReceipt | None:
    """The receipt a deliver_sm/data_sm carries, or None when it is a mobile-originated message.

    TLVs (receipted_message_id, message_state) win over the text, which is free-form.
    """
    if pdu.esm_class & MESSAGE_TYPE_MASK not in _RECEIPT_TYPES:
        return None
    raw = pdu.message_payload
    if raw is None and isinstance(pdu, DeliverSm):
        raw = pdu.short_message
    parsed = parse_receipt(raw) if raw else None
    tlv_id = pdu.receipted_message_id
    tlv_state = pdu.message_state
    if parsed is None:
        if tlv_id is None:
            return None
        stat = RECEIPT_STAT_BY_STATE.get(MessageState(tlv_state)) if tlv_state in _STATES else None
        return DeliveryReceipt(message_id=tlv_id, stat=stat)
    if tlv_id is not None and tlv_id != parsed.message_id:
        parsed = replace(parsed, message_id=tlv_id)
    if parsed.stat is None and tlv_state in _STATES:
        parsed = replace(parsed, stat=RECEIPT_STAT_BY_STATE[MessageState(tlv_state)])
    return parsed


_STATES = frozenset(int(s) for s in MessageState)
_RECEIPT_TYPES = frozenset({EsmClass.SMSC_DELIVERY_RECEIPT, EsmClass.INTERMEDIATE_NOTIFICATION})
