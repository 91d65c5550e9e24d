"""Message composition rules: encoding and byte counts, SMS/LMS/MMS choice, subjects, JPEG
images, template variables and the legal marks of advertising.

Pure and I/O-free; the clock is a parameter. Every refusal is a ComposeError carrying a
stable `code`, a `detail` and the request `field` at fault, for application/problem+json.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import ClassVar
from zoneinfo import ZoneInfo

from handlers.messages.templates import Template, parse_template
from handlers.numbers import NumberError, normalise

__all__ = [
    "BUILTIN_VARIABLES",
    "KST",
    "AdNightTime",
    "AdOptoutMismatch",
    "AdOptoutMissing",
    "AdOptoutNotLast",
    "ComposeError",
    "ComposePolicy",
    "ComposeRequest",
    "ComposedMessage",
    "EmptyText",
    "ImageNotAllowed",
    "ImageNotJpeg",
    "ImageRequired",
    "ImageTooLarge",
    "JpegInfo",
    "MessageType",
    "MissingVariable",
    "NoRecipients",
    "Recipient",
    "SubjectNotAllowed",
    "SubjectTooLong",
    "TooLong",
    "TooLongForSms",
    "TooManyImages",
    "UnencodableCharacter",
    "UnknownVariable",
    "compose",
    "count_bytes",
    "inspect_jpeg",
    "is_ad_night_time",
]

KST = ZoneInfo("Asia/Seoul")

AD_PREFIX = "(광고)"
CUSTOMER_NAME = "고객명"
TODAY = "오늘날짜"
# Names the gateway fills itself; recipients' vars cannot override them.
BUILTIN_VARIABLES = (CUSTOMER_NAME, TODAY)

# Night window for advertising (Information and Communications Network Act art. 50(3)):
# from 21:00 inclusive to 08:00 exclusive, Korean time.
AD_NIGHT_STARTS = time(21, 0)
AD_NIGHT_ENDS = time(8, 0)


# --------------------------------------------------------------------------- errors


class ComposeError(ValueError):
    """A message we refuse to queue: stable `code`, human `detail`, request `field` at fault."""

    code: ClassVar[str] = "compose_error"

    def __init__(self, detail: str, *, field: str) -> None:
        super().__init__(f"{self.code} at {field}: {detail}")
        self.detail = detail
        self.field = field


class UnencodableCharacter(ComposeError):
    """A character outside the carrier character set (KS X 1001, or CP949 if allowed)."""

    code = "unencodable_character"

    def __init__(self, char: str, position: int, *, field: str) -> None:
        name = f"U+{ord(char):04X}"
        super().__init__(
            f"character {char!r} ({name}) at position {position} cannot be sent by SMS/LMS/MMS",
            field=field,
        )
        self.char = char
        self.position = position


class EmptyText(ComposeError):
    """SMS and LMS need text."""

    code = "empty_text"


class TooLongForSms(ComposeError):
    """Type `sms` was asked for but the text is over the tenant's SMS byte limit."""

    code = "too_long_for_sms"


class TooLong(ComposeError):
    """The text is over the LMS/MMS byte limit."""

    code = "too_long"


class SubjectNotAllowed(ComposeError):
    """A subject on a message that ends up SMS (carriers drop it; we refuse to hide that)."""

    code = "subject_not_allowed"


class SubjectTooLong(ComposeError):
    """The subject is over its byte limit."""

    code = "subject_too_long"


class ImageNotJpeg(ComposeError):
    """An attachment that is not a complete JPEG."""

    code = "image_not_jpeg"


class ImageTooLarge(ComposeError):
    """An image over the byte or pixel limits."""

    code = "image_too_large"


class TooManyImages(ComposeError):
    """More images than an MMS carries."""

    code = "too_many_images"


class ImageNotAllowed(ComposeError):
    """Images with an explicit `sms` or `lms` type."""

    code = "images_not_allowed"


class ImageRequired(ComposeError):
    """Explicit `mms` without an image."""

    code = "image_required"


class UnknownVariable(ComposeError):
    """A template variable that is neither built in nor supplied with any recipient."""

    code = "unknown_variable"

    def __init__(self, name: str, *, field: str) -> None:
        super().__init__(
            f"{{{name}}} is neither a built-in variable ({', '.join(BUILTIN_VARIABLES)}) "
            "nor supplied in any recipient's vars",
            field=field,
        )
        self.name = name


class MissingVariable(ComposeError):
    """A recipient lacks a value for a variable the text uses."""

    code = "missing_variable"

    def __init__(self, name: str, *, field: str) -> None:
        super().__init__(f"no value for {{{name}}}", field=field)
        self.name = name


class NoRecipients(ComposeError):
    """A message needs at least one recipient."""

    code = "no_recipients"


class AdOptoutMissing(ComposeError):
    """An advertisement from a tenant that has no 080 opt-out line configured."""

    code = "ad_optout_missing"


class AdOptoutMismatch(ComposeError):
    """The advertisement names an opt-out number other than the tenant's."""

    code = "ad_optout_mismatch"


class AdOptoutNotLast(ComposeError):
    """The tenant's opt-out line is in the advertisement but not at its end."""

    code = "ad_optout_not_last"


class AdNightTime(ComposeError):
    """An advertisement sent between 21:00 and 08:00 KST without night-time consent."""

    code = "ad_night_time"


# --------------------------------------------------------------------------- values


class MessageType(enum.StrEnum):
    """Requested (`auto` included) or decided message type."""

    AUTO = "auto"
    SMS = "sms"
    LMS = "lms"
    MMS = "mms"


@dataclass(frozen=True, slots=True)
class ComposePolicy:
    """Per-tenant composition settings; defaults follow the carriers' current terms."""

    sms_max_bytes: int = 90
    lms_max_bytes: int = 2000
    subject_max_bytes: int = 40
    # Hangul syllables outside KS X 1001 (똠, 햏, 뷁 …) exist in CP949 only; many handsets
    # and SMSCs behind data_coding 0x0E (KS C 5601) garble them, so they are refused unless
    # the tenant's carrier is known to carry CP949.
    allow_cp949_extensions: bool = False
    optout_line: str | None = None  # e.g. "무료거부 080-123-4567"
    max_images: int = 3
    max_image_bytes: int = 300 * 1024
    max_image_width: int = 1500
    max_image_height: int = 1440


@dataclass(frozen=True, slots=True)
class Recipient:
    """What a recipient contributes to the text: a name for {고객명} and free variables."""

    name: str | None = None
    vars: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ComposeRequest:
    """The message as the API received it (numbers are checked elsewhere)."""

    text: str
    recipients: Sequence[Recipient] = (Recipient(),)
    type: MessageType = MessageType.AUTO
    subject: str | None = None
    images: Sequence[bytes] = ()
    ad: bool = False
    night_consent: bool = False


@dataclass(frozen=True, slots=True)
class JpegInfo:
    """A validated JPEG attachment."""

    size: int
    width: int
    height: int
    progressive: bool


@dataclass(frozen=True, slots=True)
class ComposedMessage:
    """A message ready to queue: one type for all recipients, texts in recipients' order."""

    type: MessageType
    subject: str | None
    template: str  # the text after ad marks, before variables
    texts: tuple[str, ...]
    max_bytes: int  # of the longest text; decides the type
    images: tuple[JpegInfo, ...]


# --------------------------------------------------------------------------- encoding


def _check_encodable(text: str, *, allow_cp949_extensions: bool, field: str) -> None:
    for position, char in enumerate(text):
        if char.isascii():
            continue
        try:
            encoded = char.encode("cp949")
        except UnicodeEncodeError:
            raise UnencodableCharacter(char, position, field=field) from None
        # KS X 1001 (EUC-KR) uses bytes 0xA1-0xFE for both halves; CP949's extension
        # syllables have a lower lead or trail byte. Python's own euc_kr codec is no judge:
        # it encodes 똠 as an 8-byte jamo sequence instead of failing.
        if not allow_cp949_extensions and (encoded[0] < 0xA1 or encoded[-1] < 0xA1):
            raise UnencodableCharacter(char, position, field=field)


def count_bytes(text: str, *, allow_cp949_extensions: bool = False, field: str = "text") -> int:
    """Bytes `text` takes on the wire in EUC-KR/CP949 (ASCII 1, Hangul 2).

    Raises UnencodableCharacter for the first character outside the allowed set.
    """
    _check_encodable(text, allow_cp949_extensions=allow_cp949_extensions, field=field)
    return len(text.encode("cp949"))


# --------------------------------------------------------------------------- JPEG

_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7,
                          0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def inspect_jpeg(data: bytes, *, field: str = "images[0]") -> JpegInfo:
    """Validate JPEG structure (SOI, segments, SOF frame, SOS, EOI) and return its size.

    Raises ImageNotJpeg; the content decides, never a file name.
    """
    def refuse(why: str) -> ImageNotJpeg:
        return ImageNotJpeg(f"not a JPEG image: {why}", field=field)

    if not data.startswith(b"\xff\xd8"):
        raise refuse("no SOI marker")
    # Some cameras pad after EOI with zeros; anything else after it is not a JPEG we trust.
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise refuse("no EOI marker at the end")
    pos = 2
    frame: tuple[int, int, bool] | None = None
    while True:
        if pos + 2 > len(data) or data[pos] != 0xFF:
            raise refuse(f"broken segment at byte {pos}")
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= len(data):
            raise refuse("truncated marker")
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD8, 0xD9):
            raise refuse(f"unexpected marker FF{marker:02X} before the image data")
        if pos + 2 > len(data):
            raise refuse("truncated segment length")
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > len(data):
            raise refuse(f"segment FF{marker:02X} overruns the file")
        if marker in _SOF_MARKERS:
            if length < 8:
                raise refuse("short SOF segment")
            height = int.from_bytes(data[pos + 3 : pos + 5], "big")
            width = int.from_bytes(data[pos + 5 : pos + 7], "big")
            if width == 0 or height == 0:
                raise refuse("frame without width or height")
            frame = (width, height, marker in _PROGRESSIVE)
        elif marker == 0xDA:  # SOS: entropy-coded data follows, up to EOI
            if frame is None:
                raise refuse("image data before any SOF frame")
            return JpegInfo(len(data), frame[0], frame[1], frame[2])
        pos += length


def _check_images(images: Sequence[bytes], policy: ComposePolicy) -> tuple[JpegInfo, ...]:
    if len(images) > policy.max_images:
        raise TooManyImages(
            f"{len(images)} images, an MMS carries at most {policy.max_images}", field="images"
        )
    infos = []
    for i, data in enumerate(images):
        where = f"images[{i}]"
        if len(data) > policy.max_image_bytes:
            raise ImageTooLarge(
                f"{len(data)} bytes, the limit is {policy.max_image_bytes}", field=where
            )
        info = inspect_jpeg(data, field=where)
        if info.width > policy.max_image_width or info.height > policy.max_image_height:
            raise ImageTooLarge(
                f"{info.width}x{info.height} px, the limit is "
                f"{policy.max_image_width}x{policy.max_image_height}",
                field=where,
            )
        infos.append(info)
    return tuple(infos)


# --------------------------------------------------------------------------- advertising

# "무료거부 080-123-4567", "수신거부: 0801234567", "무료 수신거부 080 123 4567" …
_OPTOUT = re.compile(
    r"(?:무료|수신)[ \t]*(?:수신[ \t]*)?거부[ \t]*[:：]?[ \t]*"
    r"(0[ \t.\-]*8[ \t.\-]*0(?:[ \t.\-]*\d){7,8})(?!\d)"
)


def is_ad_night_time(now: datetime) -> bool:
    """True from 21:00 (inclusive) to 08:00 (exclusive) Korean time."""
    local = now.astimezone(KST).time()
    return local >= AD_NIGHT_STARTS or local < AD_NIGHT_ENDS


def optout_number_in(line: str) -> str | None:
    """The 080 number an opt-out line names (canonical digits), or None."""
    match = _OPTOUT.search(line)
    if match is None:
        return None
    try:
        return normalise(match.group(1))
    except NumberError:
        return None


def _apply_ad_marks(text: str, policy: ComposePolicy) -> str:
    if policy.optout_line is None:
        raise AdOptoutMissing("the tenant has no 080 opt-out line configured", field="ad")
    own = optout_number_in(policy.optout_line)
    if own is None:
        raise AdOptoutMissing(
            f"the tenant's opt-out line {policy.optout_line!r} has no 080 number", field="ad"
        )
    body = text.strip()
    matches = list(_OPTOUT.finditer(body))
    for match in matches:
        try:
            found = normalise(match.group(1))
        except NumberError:
            found = match.group(1)
        if found != own:
            raise AdOptoutMismatch(
                f"the text names opt-out number {match.group(1).strip()}, "
                f"the tenant's is {own}",
                field="text",
            )
    if matches:
        if matches[-1].end() != len(body):
            raise AdOptoutNotLast("the opt-out line must end the advertisement", field="text")
    else:
        body = f"{body}\n{policy.optout_line}" if body else policy.optout_line
    if not body.startswith(AD_PREFIX):
        body = AD_PREFIX + body
    return body


# --------------------------------------------------------------------------- compose


def _values_for(
    recipient: Recipient, index: int, names: Sequence[str], today: str
) -> dict[str, str]:
    values: dict[str, str] = {}
    for name in names:
        if name == TODAY:
            values[name] = today
        elif name == CUSTOMER_NAME and recipient.name:
            values[name] = recipient.name
        elif name in recipient.vars:
            values[name] = recipient.vars[name]
        else:
            where = "name" if name == CUSTOMER_NAME else f"vars.{name}"
            raise MissingVariable(name, field=f"to[{index}].{where}")
    return values


def _render_all(
    template: Template, request: ComposeRequest, policy: ComposePolicy, today: str
) -> tuple[str, ...]:
    names = template.variables
    if not names:
        text = template.render({})
        return tuple(text for _ in request.recipients)
    supplied = {key for r in request.recipients for key in r.vars}
    for name in names:
        if name not in BUILTIN_VARIABLES and name not in supplied:
            raise UnknownVariable(name, field="text")
    texts = []
    for index, recipient in enumerate(request.recipients):
        values = _values_for(recipient, index, names, today)
        for name, value in values.items():
            if name == TODAY:
                continue
            where = "name" if name == CUSTOMER_NAME and recipient.name else f"vars.{name}"
            _check_encodable(
                value,
                allow_cp949_extensions=policy.allow_cp949_extensions,
                field=f"to[{index}].{where}",
            )
        texts.append(template.render(values))
    return tuple(texts)


def _decide_type(
    requested: MessageType, max_bytes: int, has_images: bool, policy: ComposePolicy
) -> MessageType:
    if has_images:
        if requested in (MessageType.SMS, MessageType.LMS):
            raise ImageNotAllowed(f"type {requested} carries no images", field="images")
        return MessageType.MMS
    if requested == MessageType.MMS:
        raise ImageRequired("type mms needs at least one JPEG image", field="images")
    if requested == MessageType.SMS and max_bytes > policy.sms_max_bytes:
        raise TooLongForSms(
            f"{max_bytes} bytes, SMS carries at most {policy.sms_max_bytes}", field="text"
        )
    if requested == MessageType.AUTO:
        return MessageType.SMS if max_bytes <= policy.sms_max_bytes else MessageType.LMS
    return requested


def compose(request: ComposeRequest, policy: ComposePolicy, *, now: datetime) -> ComposedMessage:
    """Validate and render a message for every recipient, deciding SMS, LMS or MMS.

    `now` (timezone-aware) is when the message goes out: the request time for an immediate
    send, `send_at` for a scheduled one; it dates {오늘날짜} and decides the ad night window.
    Raises a ComposeError subclass; nothing is partially accepted.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if not request.recipients:
        raise NoRecipients("the message has no recipients", field="to")
    cp949 = policy.allow_cp949_extensions
    # Positions are reported in the text as the user typed it, so check before rewriting.
    _check_encodable(request.text, allow_cp949_extensions=cp949, field="text")
    text = request.text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip() and not request.images:
        raise EmptyText("the message has no text", field="text")
    if request.ad:
        text = _apply_ad_marks(text, policy)
        _check_encodable(text, allow_cp949_extensions=cp949, field="ad")
        if is_ad_night_time(now) and not request.night_consent:
            raise AdNightTime(
                "advertising between 21:00 and 08:00 KST needs the recipients' night-time "
                "consent",
                field="send_at",
            )

    template = parse_template(text)
    today = now.astimezone(KST).date().isoformat()  # YYYY-MM-DD, as the portals show dates
    texts = _render_all(template, request, policy, today)
    max_bytes = max((len(t.encode("cp949")) for t in texts), default=0)

    images = _check_images(request.images, policy)
    kind = _decide_type(request.type, max_bytes, bool(images), policy)
    if max_bytes > policy.lms_max_bytes:
        raise TooLong(
            f"{max_bytes} bytes, {kind.upper()} carries at most {policy.lms_max_bytes}",
            field="text",
        )

    subject = (request.subject or "").strip() or None
    if subject is not None:
        if kind == MessageType.SMS:
            raise SubjectNotAllowed(
                f"a subject needs LMS or MMS; this text fits an SMS ({max_bytes} bytes)",
                field="subject",
            )
        subject_bytes = count_bytes(subject, allow_cp949_extensions=cp949, field="subject")
        if subject_bytes > policy.subject_max_bytes:
            raise SubjectTooLong(
                f"{subject_bytes} bytes, the limit is {policy.subject_max_bytes}",
                field="subject",
            )
    return ComposedMessage(kind, subject, text, texts, max_bytes, images)
