"""MM7 SOAP 1.1 envelopes: `encode()` a message value for a schema version, `decode()` bytes
into a value or a `DecodeError` (never an exception).

Built with `xml.etree.ElementTree`; parsing refuses DOCTYPE declarations (no entity games),
unknown operations, unknown elements in the MM7 namespace, missing mandatory elements and
malformed values. Elements of other namespaces are carriers' extensions and are skipped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime

from protocols.mm7 import mime
from protocols.mm7.messages import (
    Address,
    AddressKind,
    CancelReq,
    CancelRsp,
    Decoded,
    DecodeError,
    DeliveryReportReq,
    DeliveryReportRsp,
    Encoded,
    Fault,
    Message,
    Part,
    ReplaceReq,
    ReplaceRsp,
    Role,
    RSErrorRsp,
    Status,
    SubmitReq,
    SubmitRsp,
    VASPErrorRsp,
)
from protocols.mm7.status import STATUS_TEXT, MMStatus, StatusCode
from protocols.mm7.versions import BY_NAMESPACE, SOAP_ENV, SchemaVersion

MAX_BODY_BYTES = 4 * 1024 * 1024
# SubmitReq elements read and ignored (reply charging, REL-6 application addressing, DRM).
_ACCEPTED_UNUSED = ("ReplyCharging", "ApplicID", "ReplyApplicID", "AuxApplicInfo",
                    "ContentClass", "DRMContent", "ChargedPartyID")
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class _Invalid(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _fmt_bool(v: bool) -> str:
    return "true" if v else "false"


def _fmt_time(v: datetime) -> str:
    if v.tzinfo is None:
        raise ValueError("MM7 times need a time zone")
    return v.isoformat(timespec="seconds")


# -- encoding ------------------------------------------------------------------------------


class _Builder:
    """Appends children in schema order, skipping absent optional values."""

    def __init__(self, parent: ET.Element) -> None:
        self.parent = parent

    def add(self, name: str, value: str | bool | int | datetime | None,
            attrs: dict[str, str] | None = None) -> ET.Element | None:
        if value is None:
            return None
        el = ET.SubElement(self.parent, name, attrs or {})
        if isinstance(value, bool):
            el.text = _fmt_bool(value)
        elif isinstance(value, datetime):
            el.text = _fmt_time(value)
        else:
            el.text = str(value)
        return el

    def node(self, name: str, attrs: dict[str, str] | None = None) -> _Builder:
        return _Builder(ET.SubElement(self.parent, name, attrs or {}))


def _address(b: _Builder, a: Address) -> None:
    b.add(a.kind.value, a.value)


def _status(b: _Builder, s: Status) -> None:
    st = b.node("Status")
    st.add("StatusCode", s.code)
    st.add("StatusText", s.text if s.text is not None else STATUS_TEXT.get(s.code, ""))
    st.add("Details", s.details)


def _sender_identification(b: _Builder, vasp_id: str | None, vas_id: str | None,
                           sender: Address | None = None) -> None:
    si = b.node("SenderIdentification")
    si.add("VASPID", vasp_id)
    si.add("VASID", vas_id)
    if sender is not None:
        _address(si.node("SenderAddress"), sender)


def _body_submit(b: _Builder, m: SubmitReq, schema: SchemaVersion) -> None:
    if not m.recipients:
        raise ValueError("a SubmitReq needs at least one recipient")
    _sender_identification(b, m.vasp_id, m.vas_id, m.sender)
    rec = b.node("Recipients")
    for role in Role:
        listed = [a for a in m.recipients if a.role is role]
        if listed:
            r = rec.node(role.value)
            for a in listed:
                _address(r, a)
    b.add("ServiceCode", m.service_code)
    b.add("LinkedID", m.linked_id)
    b.add("MessageClass", m.message_class)
    b.add("TimeStamp", m.timestamp)
    b.add("EarliestDeliveryTime", m.earliest_delivery)
    b.add("ExpiryDate", m.expiry)
    b.add("DeliveryReport", m.delivery_report)
    b.add("ReadReply", m.read_reply)
    b.add("Priority", m.priority)
    b.add("Subject", m.subject)
    b.add("ChargedParty", m.charged_party)
    b.add("DistributionIndicator", m.distribution_indicator)
    _content_ref(b, m.content, m.allow_adaptations)


def _content_ref(b: _Builder, content: tuple[Part, ...], allow: bool | None) -> None:
    if not content:
        return
    attrs = {"href": f"cid:{mime.CONTENT_CID}"}
    if allow is not None:
        attrs["allowAdaptations"] = _fmt_bool(allow)
    ET.SubElement(b.parent, "Content", attrs)


def _body_replace(b: _Builder, m: ReplaceReq, schema: SchemaVersion) -> None:
    si = b.node("SenderIdentification")
    si.add("VASPID", m.vasp_id)
    si.add("VASID", m.vas_id)
    b.add("MessageID", m.message_id)
    b.add("ServiceCode", m.service_code)
    b.add("TimeStamp", m.timestamp)
    b.add("EarliestDeliveryTime", m.earliest_delivery)
    b.add("ReadReply", m.read_reply)
    b.add("DistributionIndicator", m.distribution_indicator)
    _content_ref(b, m.content, m.allow_adaptations)


def _body_cancel(b: _Builder, m: CancelReq, schema: SchemaVersion) -> None:
    _sender_identification(b, m.vasp_id, m.vas_id)
    b.add("MessageID", m.message_id)


def _body_report(b: _Builder, m: DeliveryReportReq, schema: SchemaVersion) -> None:
    if m.mm_status is MMStatus.DELIVERY_CONDITION_NOT_MET and schema.release < 6:
        raise ValueError("DeliveryConditionNotMet exists from REL-6 on")
    b.add("MMSRelayServerID", m.relay_server_id)
    b.add("MessageID", m.message_id)
    _address(b.node("Recipient"), m.recipient)
    _address(b.node("Sender"), m.sender)
    b.add("TimeStamp" if schema.release >= 6 else "Date", m.date)
    b.add("MMStatus", m.mm_status.value)
    if schema.report_has_status_text:
        b.add("StatusText", m.status_text)


def _body_status_only(b: _Builder, m: CancelRsp | ReplaceRsp | DeliveryReportRsp | VASPErrorRsp,
                      schema: SchemaVersion) -> None:
    _status(b, m.status)


def _body_submit_rsp(b: _Builder, m: SubmitRsp, schema: SchemaVersion) -> None:
    _status(b, m.status)
    b.add("MessageID", m.message_id)


def _body_rserror(b: _Builder, m: RSErrorRsp, schema: SchemaVersion) -> None:
    b.add("MMSRelayServerID", m.relay_server_id)
    _status(b, m.status)


_ENCODERS: dict[type, tuple[str, Callable[..., None]]] = {
    SubmitReq: ("SubmitReq", _body_submit),
    SubmitRsp: ("SubmitRsp", _body_submit_rsp),
    CancelReq: ("CancelReq", _body_cancel),
    CancelRsp: ("CancelRsp", _body_status_only),
    ReplaceReq: ("ReplaceReq", _body_replace),
    ReplaceRsp: ("ReplaceRsp", _body_status_only),
    DeliveryReportReq: ("DeliveryReportReq", _body_report),
    DeliveryReportRsp: ("DeliveryReportRsp", _body_status_only),
    RSErrorRsp: ("RSErrorRsp", _body_rserror),
    VASPErrorRsp: ("VASPErrorRsp", _body_status_only),
}


def _operation(parent: ET.Element, m: Message, schema: SchemaVersion, mm7_version: str) -> None:
    name, fill = _ENCODERS[type(m)]
    op = ET.SubElement(parent, name, {"xmlns": schema.namespace})
    b = _Builder(op)
    b.add("MM7Version", mm7_version)
    fill(b, m, schema)


def envelope(m: Message, schema: SchemaVersion, mm7_version: str | None = None,
             soap_headers: dict[str, str] | None = None) -> bytes:
    """The SOAP envelope of a message (UTF-8 XML with its declaration)."""
    version = mm7_version or schema.default_mm7_version
    root = ET.Element("env:Envelope", {"xmlns:env": SOAP_ENV})
    header = ET.SubElement(root, "env:Header")
    if m.transaction_id is not None:
        tid = ET.SubElement(header, "mm7:TransactionID",
                            {"xmlns:mm7": schema.namespace, "env:mustUnderstand": "1"})
        tid.text = m.transaction_id
    for name, value in (soap_headers or {}).items():
        extra = ET.SubElement(header, f"mm7:{name}", {"xmlns:mm7": schema.namespace})
        extra.text = value
    body = ET.SubElement(root, "env:Body")
    if isinstance(m, Fault):
        fault = ET.SubElement(body, "env:Fault")
        ET.SubElement(fault, "faultcode").text = m.faultcode
        ET.SubElement(fault, "faultstring").text = m.faultstring
        if m.error is not None:
            _operation(ET.SubElement(fault, "detail"), m.error, schema, version)
    else:
        _operation(body, m, schema, version)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data


def encode(m: Message, schema: SchemaVersion, mm7_version: str | None = None, *,
           soap_headers: dict[str, str] | None = None, text_cte: str = "8bit",
           boundary: str | None = None) -> Encoded:
    """The HTTP body of a message: text/xml, or multipart/related when it has content.

    A SubmitReq/ReplaceReq whose first part is `application/smil` is sent as a SMIL
    presentation (`multipart/related`), otherwise as `multipart/mixed` content.
    """
    soap = envelope(m, schema, mm7_version, soap_headers)
    content = getattr(m, "content", ())
    if not content:
        return Encoded('text/xml; charset="utf-8"', soap)
    smil = content[0].content_type == "application/smil"
    ctype, body = mime.pack(soap, content, smil_first=smil, text_cte=text_cte,
                            boundary=boundary)
    return Encoded(ctype, body)


def fault_for(error: DecodeError, schema: SchemaVersion, *, server: bool,
              relay_server_id: str | None = None) -> Fault:
    """The SOAP Fault answering a request that could not be decoded (server: we are the MMSC,
    answering with RSErrorRsp; else we are the VASP, answering with VASPErrorRsp)."""
    status = Status(error.status, STATUS_TEXT.get(error.status), error.detail)
    detail: RSErrorRsp | VASPErrorRsp = (
        RSErrorRsp(error.transaction_id, status, relay_server_id) if server
        else VASPErrorRsp(error.transaction_id, status))
    code = "env:Server" if 3000 <= error.status < 4000 else "env:Client"
    return Fault(error.transaction_id, code, STATUS_TEXT.get(error.status, "Error"), detail)


# -- decoding ------------------------------------------------------------------------------


class _Reader:
    """The MM7 children of one element, each taken at most once; leftovers are refused."""

    def __init__(self, el: ET.Element, ns: str) -> None:
        self.el = el
        self.ns = ns
        self.children: dict[str, list[ET.Element]] = {}
        for child in el:
            if not isinstance(child.tag, str):
                continue  # comments, processing instructions
            uri, _, local = child.tag[1:].partition("}") if child.tag.startswith("{") \
                else ("", "", child.tag)
            if uri != ns and uri != "":
                if uri in BY_NAMESPACE:
                    raise _Invalid(StatusCode.VALIDATION_ERROR,
                                   f"<{local}> is in another MM7 schema's namespace")
                continue  # another namespace: a carrier's extension
            self.children.setdefault(local, []).append(child)
        self.taken: set[str] = set()

    def all(self, name: str) -> list[ET.Element]:
        self.taken.add(name)
        return self.children.get(name, [])

    def one(self, name: str, *, required: bool = False) -> ET.Element | None:
        found = self.all(name)
        if len(found) > 1:
            raise _Invalid(StatusCode.VALIDATION_ERROR, f"<{name}> appears {len(found)} times")
        if not found:
            if required:
                raise _Invalid(StatusCode.VALIDATION_ERROR,
                               f"<{self._name()}> lacks its mandatory <{name}>")
            return None
        return found[0]

    def text(self, name: str, *, required: bool = False) -> str | None:
        el = self.one(name, required=required)
        if el is None:
            return None
        if len([c for c in el if isinstance(c.tag, str)]):
            raise _Invalid(StatusCode.VALIDATION_ERROR, f"<{name}> must hold text only")
        value = (el.text or "").strip()
        if not value and required:
            raise _Invalid(StatusCode.VALIDATION_ERROR, f"<{name}> is empty")
        return value

    def req(self, name: str) -> str:
        value = self.text(name, required=True)
        assert value is not None
        return value

    def sub(self, name: str, *, required: bool = False) -> _Reader | None:
        el = self.one(name, required=required)
        return None if el is None else _Reader(el, self.ns)

    def finish(self) -> None:
        left = sorted(set(self.children) - self.taken)
        if left:
            raise _Invalid(StatusCode.VALIDATION_ERROR,
                           f"<{self._name()}> has unknown element <{left[0]}>")

    def _name(self) -> str:
        return self.el.tag.rpartition("}")[2]


def _bool(r: _Reader, name: str) -> bool | None:
    raw = r.text(name)
    if raw is None:
        return None
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise _Invalid(StatusCode.VALIDATION_ERROR, f"<{name}> is not a boolean: {raw[:40]!r}")


def _bool_attr(el: ET.Element, name: str) -> bool | None:
    raw = el.get(name)
    if raw is None:
        return None
    if raw.strip() in ("true", "1"):
        return True
    if raw.strip() in ("false", "0"):
        return False
    raise _Invalid(StatusCode.VALIDATION_ERROR, f"{name}= is not a boolean")


def _time(r: _Reader, name: str, *, required: bool = False) -> datetime | None:
    raw = r.text(name, required=required)
    if raw is None or (not raw and not required):
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise _Invalid(StatusCode.VALIDATION_ERROR,
                       f"<{name}> is not an xs:dateTime: {raw[:40]!r}") from None
    if value.tzinfo is None:
        raise _Invalid(StatusCode.VALIDATION_ERROR, f"<{name}> has no time zone")
    return value


def _addresses(r: _Reader, role: Role) -> list[Address]:
    out: list[Address] = []
    kinds = {k.value: k for k in AddressKind}
    for name in kinds:
        r.all(name)  # mark as known
    for el in r.el:  # document order
        if not isinstance(el.tag, str):
            continue
        uri, local = _split(el.tag)
        if uri in (r.ns, "") and local in kinds:
            value = (el.text or "").strip()
            if not value:
                raise _Invalid(StatusCode.ADDRESS_ERROR, f"empty <{local}>")
            out.append(Address(value, kinds[local], role))
    return out


def _one_address(r: _Reader | None, where: str) -> Address:
    if r is None:
        raise _Invalid(StatusCode.VALIDATION_ERROR, f"<{where}> is missing")
    found = _addresses(r, Role.TO)
    r.finish()
    if len(found) != 1:
        raise _Invalid(StatusCode.ADDRESS_ERROR, f"<{where}> must hold exactly one address")
    return found[0]


def _status_of(r: _Reader) -> Status:
    st = r.sub("Status")
    if st is None:
        # Some Korean MMSCs put StatusCode/StatusText directly in the operation element.
        code_raw = r.req("StatusCode")
        text, details = r.text("StatusText"), r.text("Details")
    else:
        code_raw = st.req("StatusCode")
        text, details = st.text("StatusText"), st.text("Details")
        st.finish()
    if not code_raw.isdigit() or len(code_raw) > 6:
        raise _Invalid(StatusCode.VALIDATION_ERROR, f"StatusCode {code_raw[:20]!r} is not a code")
    return Status(int(code_raw), text, details)


def _sender_id(r: _Reader) -> tuple[str | None, str | None, Address | None]:
    si = r.sub("SenderIdentification", required=True)
    assert si is not None
    vasp, vas = si.text("VASPID"), si.text("VASID")
    sa = si.sub("SenderAddress")
    sender: Address | None = None
    if sa is not None:
        bare = (sa.el.text or "").strip()
        if bare and not [c for c in sa.el if isinstance(c.tag, str)]:
            sender = Address(bare)  # some MMSCs write the number as SenderAddress's own text
        else:
            sender = _one_address(sa, "SenderAddress")
    si.finish()
    return vasp, vas, sender


def _content(r: _Reader, unpacked: mime.Unpacked) -> tuple[tuple[Part, ...], bool | None]:
    el = r.one("Content")
    if el is None:
        return (), None
    href = el.get("href")
    if not href:
        raise _Invalid(StatusCode.VALIDATION_ERROR, "<Content> has no href")
    allow = _bool_attr(el, "allowAdaptations")
    try:
        return mime.content_parts(unpacked, href.strip()), allow
    except mime.MimeProblem as exc:
        raise _Invalid(StatusCode.MESSAGE_FORMAT_CORRUPT, str(exc)) from None


def _d_submit(r: _Reader, tid: str | None, u: mime.Unpacked) -> SubmitReq:
    vasp, vas, sender = _sender_id(r)
    rec = r.sub("Recipients", required=True)
    assert rec is not None
    recipients: list[Address] = []
    for role in Role:
        for el in rec.all(role.value):
            sub = _Reader(el, r.ns)
            recipients += _addresses(sub, role)
            sub.finish()
    rec.finish()
    if not recipients:
        raise _Invalid(StatusCode.ADDRESS_ERROR, "<Recipients> lists nobody")
    content, allow = _content(r, u)
    for name in _ACCEPTED_UNUSED:  # schema elements a VASP's sender need not act on
        r.all(name)
    return SubmitReq(
        _tid(tid), vasp, vas, tuple(recipients), sender,
        service_code=r.text("ServiceCode"), linked_id=r.text("LinkedID"),
        message_class=r.text("MessageClass"), timestamp=_time(r, "TimeStamp"),
        earliest_delivery=r.text("EarliestDeliveryTime"), expiry=r.text("ExpiryDate"),
        delivery_report=_bool(r, "DeliveryReport"), read_reply=_bool(r, "ReadReply"),
        priority=r.text("Priority"), subject=r.text("Subject"),
        charged_party=r.text("ChargedParty"),
        distribution_indicator=_bool(r, "DistributionIndicator"),
        allow_adaptations=allow, content=content)


def _d_replace(r: _Reader, tid: str | None, u: mime.Unpacked) -> ReplaceReq:
    vasp, vas, _sender = _sender_id(r)
    content, allow = _content(r, u)
    return ReplaceReq(_tid(tid), vasp, vas, r.req("MessageID"),
                      service_code=r.text("ServiceCode"), timestamp=_time(r, "TimeStamp"),
                      earliest_delivery=r.text("EarliestDeliveryTime"),
                      read_reply=_bool(r, "ReadReply"),
                      distribution_indicator=_bool(r, "DistributionIndicator"),
                      allow_adaptations=allow, content=content)


def _d_cancel(r: _Reader, tid: str | None, u: mime.Unpacked) -> CancelReq:
    vasp, vas, _sender = _sender_id(r)
    return CancelReq(_tid(tid), vasp, vas, r.req("MessageID"))


def _d_report(r: _Reader, tid: str | None, u: mime.Unpacked) -> DeliveryReportReq:
    raw_status = r.req("MMStatus")
    try:
        mm_status = MMStatus(raw_status)
    except ValueError:
        raise _Invalid(StatusCode.VALIDATION_ERROR,
                       f"MMStatus {raw_status[:40]!r} is not a known status") from None
    date = _time(r, "Date") or _time(r, "TimeStamp")
    if date is None:
        raise _Invalid(StatusCode.VALIDATION_ERROR, "<DeliveryReportReq> lacks <Date>")
    return DeliveryReportReq(
        _tid(tid), r.req("MessageID"), _one_address(r.sub("Recipient"), "Recipient"),
        _one_address(r.sub("Sender"), "Sender"), date, mm_status,
        relay_server_id=r.text("MMSRelayServerID"),
        status_text=r.text("StatusText") or r.text("MMStatusText"))


def _d_submit_rsp(r: _Reader, tid: str | None, u: mime.Unpacked) -> SubmitRsp:
    status = _status_of(r)
    message_id = r.text("MessageID")
    return SubmitRsp(_tid(tid), status, message_id or None)


def _d_cancel_rsp(r: _Reader, tid: str | None, u: mime.Unpacked) -> CancelRsp:
    return CancelRsp(_tid(tid), _status_of(r))


def _d_replace_rsp(r: _Reader, tid: str | None, u: mime.Unpacked) -> ReplaceRsp:
    return ReplaceRsp(_tid(tid), _status_of(r))


def _d_report_rsp(r: _Reader, tid: str | None, u: mime.Unpacked) -> DeliveryReportRsp:
    return DeliveryReportRsp(_tid(tid), _status_of(r))


def _d_rserror(r: _Reader, tid: str | None, u: mime.Unpacked) -> RSErrorRsp:
    return RSErrorRsp(tid, _status_of(r), r.text("MMSRelayServerID"))


def _d_vasperror(r: _Reader, tid: str | None, u: mime.Unpacked) -> VASPErrorRsp:
    return VASPErrorRsp(tid, _status_of(r))


def _tid(tid: str | None) -> str:
    if tid is None:
        raise _Invalid(StatusCode.VALIDATION_ERROR, "the SOAP header lacks <TransactionID>")
    return tid


_DECODERS: dict[str, Callable[[_Reader, str | None, mime.Unpacked], Message]] = {
    "SubmitReq": _d_submit,
    "SubmitRsp": _d_submit_rsp,
    "CancelReq": _d_cancel,
    "CancelRsp": _d_cancel_rsp,
    "ReplaceReq": _d_replace,
    "ReplaceRsp": _d_replace_rsp,
    "DeliveryReportReq": _d_report,
    "DeliveryReportRsp": _d_report_rsp,
    "RSErrorRsp": _d_rserror,
    "VASPErrorRsp": _d_vasperror,
}


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local
    return "", tag


def _transaction_id(header: ET.Element | None) -> str | None:
    if header is None:
        return None
    found = [el for el in header if isinstance(el.tag, str)
             and _split(el.tag)[1] == "TransactionID" and _split(el.tag)[0] in BY_NAMESPACE]
    if len(found) > 1:
        raise _Invalid(StatusCode.VALIDATION_ERROR, "more than one <TransactionID>")
    if not found:
        return None
    value = (found[0].text or "").strip()
    if not value or len(value) > 255:
        raise _Invalid(StatusCode.VALIDATION_ERROR, "<TransactionID> is empty or too long")
    return value


def _operation_of(el: ET.Element, tid: str | None, u: mime.Unpacked) -> Decoded:
    uri, local = _split(el.tag)
    schema = BY_NAMESPACE.get(uri)
    if schema is None:
        if "23.140" in uri:
            raise _Invalid(StatusCode.UNSUPPORTED_VERSION, f"unsupported MM7 schema {uri[:120]}")
        raise _Invalid(StatusCode.UNSUPPORTED_OPERATION,
                       f"<{local[:40]}> is not an MM7 operation")
    decoder = _DECODERS.get(local)
    if decoder is None:
        raise _Invalid(StatusCode.UNSUPPORTED_OPERATION, f"unsupported operation {local[:40]}")
    r = _Reader(el, uri)
    version = r.req("MM7Version")
    message = decoder(r, tid, u)
    r.finish()
    return Decoded(message, schema, version)


def _fault(el: ET.Element, tid: str | None, u: mime.Unpacked) -> Decoded:
    code = string = None
    detail: ET.Element | None = None
    for child in el:
        if not isinstance(child.tag, str):
            continue
        local = _split(child.tag)[1]
        if local == "faultcode":
            code = (child.text or "").strip()
        elif local == "faultstring":
            string = (child.text or "").strip()
        elif local == "detail":
            detail = child
    if not code:
        raise _Invalid(StatusCode.VALIDATION_ERROR, "a Fault without <faultcode>")
    error: RSErrorRsp | VASPErrorRsp | None = None
    schema: SchemaVersion | None = None
    version: str | None = None
    if detail is not None:
        inner = [c for c in detail if isinstance(c.tag, str)
                 and _split(c.tag)[1] in ("RSErrorRsp", "VASPErrorRsp")]
        if inner:
            decoded = _operation_of(inner[0], tid, u)
            assert isinstance(decoded.message, RSErrorRsp | VASPErrorRsp)
            error, schema, version = decoded.message, decoded.schema, decoded.mm7_version
    return Decoded(Fault(tid, code, string or "", error), schema, version)


def _decode(content_type: str, body: bytes, max_bytes: int) -> Decoded:
    if len(body) > max_bytes:
        raise _Invalid(StatusCode.CONTENT_REFUSED, f"body of {len(body)} bytes is too large")
    try:
        unpacked = mime.unpack(content_type, body)
    except mime.MimeProblem as exc:
        raise _Invalid(StatusCode.MESSAGE_FORMAT_CORRUPT, str(exc)) from None
    if _DOCTYPE.search(unpacked.soap):
        raise _Invalid(StatusCode.MESSAGE_FORMAT_CORRUPT, "DOCTYPE/ENTITY declarations refused")
    try:
        root = ET.fromstring(unpacked.soap)
    except (ET.ParseError, ValueError, LookupError) as exc:
        raise _Invalid(StatusCode.MESSAGE_FORMAT_CORRUPT, f"not well-formed XML: {exc}") from None
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise _Invalid(StatusCode.MESSAGE_FORMAT_CORRUPT, "not a SOAP 1.1 envelope")
    header = root.find(f"{{{SOAP_ENV}}}Header")
    bodies = root.findall(f"{{{SOAP_ENV}}}Body")
    if len(bodies) != 1:
        raise _Invalid(StatusCode.MESSAGE_FORMAT_CORRUPT, "a SOAP envelope has one Body")
    tid = _transaction_id(header)
    try:
        children = [c for c in bodies[0] if isinstance(c.tag, str)]
        if len(children) != 1:
            raise _Invalid(StatusCode.VALIDATION_ERROR,
                           f"the SOAP Body holds {len(children)} elements, not one")
        (op,) = children
        if op.tag == f"{{{SOAP_ENV}}}Fault":
            return _fault(op, tid, unpacked)
        return _operation_of(op, tid, unpacked)
    except _Invalid as exc:
        raise _WithTid(exc.status, exc.detail, tid) from None


class _WithTid(_Invalid):
    def __init__(self, status: int, detail: str, tid: str | None) -> None:
        super().__init__(status, detail)
        self.tid = tid


def decode(content_type: str, body: bytes, *, max_bytes: int = MAX_BODY_BYTES
           ) -> Decoded | DecodeError:
    """Read an MM7 HTTP body (text/xml or multipart/related). Never raises."""
    try:
        return _decode(content_type, body, max_bytes)
    except _WithTid as exc:
        return DecodeError(exc.status, exc.detail, exc.tid)
    except _Invalid as exc:
        return DecodeError(exc.status, exc.detail)
