"""No independent MM7 implementation is installable (none on PyPI, npm or Debian), so the two
layers MM7 stands on are cross-checked with implementations that are not ours and not the
standard library's: aiohttp's multipart reader/writer for SOAP-with-attachments, and lxml
(libxml2) for the envelopes."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aiohttp import ClientSession, MultipartReader, MultipartWriter, web
from aiohttp.test_utils import TestServer

from protocols.mm7 import codec
from protocols.mm7.messages import Address, Decoded, Part, SubmitReq
from protocols.mm7.smil import presentation
from protocols.mm7.versions import SOAP_ENV, SchemaVersion
from tests.protocols.mm7 import samples as s

etree = pytest.importorskip("lxml.etree")

TEXT = "안녕하세요, 주문하신 상품 사진입니다"
JPEG = s.JPEG * 40


def _submit() -> SubmitReq:
    img = Part("image/jpeg", JPEG, "image1", None, "image1.jpg")
    txt = Part("text/plain", TEXT.encode("euc-kr"), "text1", "ks_c_5601-1987", "text1.txt")
    return SubmitReq("tx-9", "VASP", "VAS", (Address("01012345678"),), Address("0212345678"),
                     service_code="SVC", subject="사진", content=(presentation((img, txt)), img, txt))


async def _read_all(content_type: str, body: bytes) -> list[tuple[dict[str, str], Any]]:
    """POST the body to an aiohttp server that takes it apart with `request.multipart()`."""
    seen: list[tuple[dict[str, str], Any]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.extend(await _parts(await request.multipart()))
        return web.Response()

    app = web.Application(client_max_size=2**24)
    app.router.add_post("/", handler)
    async with TestServer(app) as server, ClientSession() as http, http.post(
            server.make_url("/"), data=body, headers={"Content-Type": content_type}) as resp:
        assert resp.status == 200
    return seen


async def _parts(reader: MultipartReader) -> list[tuple[dict[str, str], Any]]:
    out: list[tuple[dict[str, str], Any]] = []
    while True:
        part = await reader.next()
        if part is None:
            return out
        headers = dict(part.headers)
        if isinstance(part, MultipartReader):
            out.append((headers, await _parts(part)))
        else:
            out.append((headers, await part.read(decode=True)))


async def test_aiohttp_reads_our_submit_req_part_for_part() -> None:
    enc = codec.encode(_submit(), SchemaVersion.REL_5_MM7_1_2)
    (soap_headers, soap), (content_headers, parts) = await _read_all(enc.content_type, enc.body)
    assert soap_headers["Content-ID"] == "<mm7-soap>"
    assert soap.startswith(b"<?xml") and b"SubmitReq" in soap
    assert content_headers["Content-ID"] == "<mm7-content>"
    (smil_h, smil), (img_h, img), (txt_h, txt) = parts
    assert smil_h["Content-Type"].startswith("application/smil") and b"image1.jpg" in smil
    assert img_h["Content-Type"] == "image/jpeg" and img == JPEG
    assert 'charset="ks_c_5601-1987"' in txt_h["Content-Type"]
    assert txt.decode("euc-kr") == TEXT


async def test_we_read_a_submit_req_written_by_aiohttp() -> None:
    soap = s.SUBMIT_REQ.split(b"\r\n\r\n", 1)[1].split(b"\r\n--NextPart", 1)[0]
    content = MultipartWriter("related", boundary="inner-aiohttp")
    content.append(b"<smil/>", {"Content-Type": "application/smil",
                                "Content-ID": "<SaturnStory@news.tnn.com>"})
    content.append(TEXT.encode("euc-kr"), {"Content-Type": "text/plain; charset=ks_c_5601-1987",
                                           "Content-ID": "<story@news.tnn.com>"})
    content.append(JPEG, {"Content-Type": "image/jpeg", "Content-ID": "<saturn@news.tnn.com>",
                          "Content-Transfer-Encoding": "binary"})
    outer = MultipartWriter("related", boundary="outer-aiohttp")
    outer.append(soap, {"Content-Type": "text/xml; charset=utf-8", "Content-ID": "<env>"})
    outer.append(content, {"Content-ID": "<SaturnPics-01020930@news.tnn.com>"})
    buf = io.BytesIO()

    class Sink:
        async def write(self, data: bytes) -> None:
            buf.write(data)

    await outer.write(Sink())  # type: ignore[arg-type]
    ctype = outer.content_type + '; type="text/xml"; start="<env>"'
    d = codec.decode(ctype, buf.getvalue())
    assert isinstance(d, Decoded), d
    m = d.message
    assert isinstance(m, SubmitReq) and m.transaction_id == "vas00001-sub"
    assert [p.data for p in m.content] == [b"<smil/>", TEXT.encode("euc-kr"), JPEG]
    assert m.content[1].text() == TEXT


@pytest.mark.parametrize("schema", list(SchemaVersion))
def test_libxml2_reads_our_envelopes_and_we_read_its_serialisation(schema: SchemaVersion) -> None:
    envelope = codec.envelope(_submit(), schema, soap_headers={"OriginCode": "123"})
    root = etree.fromstring(envelope)
    ns = {"env": SOAP_ENV, "mm7": schema.namespace}
    assert root.xpath("string(env:Header/mm7:TransactionID)", namespaces=ns) == "tx-9"
    assert root.xpath("string(env:Header/mm7:TransactionID/@env:mustUnderstand)",
                      namespaces=ns) == "1"
    assert root.xpath("string(env:Header/mm7:OriginCode)", namespaces=ns) == "123"
    body = "env:Body/mm7:SubmitReq/"
    assert root.xpath(f"string({body}mm7:MM7Version)", namespaces=ns) == \
        schema.default_mm7_version
    assert root.xpath(f"string({body}mm7:SenderIdentification/mm7:VASPID)",
                      namespaces=ns) == "VASP"
    assert root.xpath(f"string({body}mm7:Recipients/mm7:To/mm7:Number)",
                      namespaces=ns) == "01012345678"
    assert root.xpath(f"string({body}mm7:Subject)", namespaces=ns) == "사진"
    assert root.xpath(f"string({body}mm7:Content/@href)", namespaces=ns) == "cid:mm7-content"
    # libxml2's own (canonical) serialisation, other prefixes and all, reads back the same.
    c14n = etree.tostring(root, method="c14n")
    enc = codec.encode(_submit(), schema, soap_headers={"OriginCode": "123"})
    rewritten = enc.body.replace(envelope.split(b"?>", 1)[1], c14n)
    assert rewritten != enc.body
    back = codec.decode(enc.content_type, rewritten)
    assert isinstance(back, Decoded) and back.message == _submit()
