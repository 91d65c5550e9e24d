"""Sample MM7 documents shaped like the examples of TS 23.140 Annex L (MM7 SOAP messages): a
VASP submitting a news message with a SMIL presentation, the MMSC's answers, a delivery report,
cancel/replace, and an error as a SOAP Fault. Written here for the tests, with a KS C 5601
(EUC-KR) text part the way Korean carriers' MMSCs receive them."""

from __future__ import annotations

import base64

NS12 = "http://www.3gpp.org/ftp/Specs/archive/23_series/23.140/schema/REL-5-MM7-1-2"
NS10 = "http://www.3gpp.org/ftp/Specs/archive/23_series/23.140/schema/REL-5-MM7-1-0"
ENV = "http://schemas.xmlsoap.org/soap/envelope/"

TEXT_KO = "토성 사진이 도착했습니다"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 3 + b"\xff\xd9"
SMIL = (b'<smil><head><layout><root-layout/><region id="Image" top="0" left="0"/>'
        b'<region id="Text" top="70%"/></layout></head><body><par dur="8000ms">'
        b'<img src="saturn.jpg" region="Image"/><text src="story.txt" region="Text"/>'
        b"</par></body></smil>")


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


SUBMIT_REQ_CTYPE = ('multipart/related; boundary="NextPart_000_0028_01C19839.84698430"; '
                    'type="text/xml"; start="<mm7-submit-envelope>"')
SUBMIT_REQ = (
    _crlf(f"""--NextPart_000_0028_01C19839.84698430
Content-Type: text/xml; charset="utf-8"
Content-ID: <mm7-submit-envelope>

<?xml version="1.0" ?>
<env:Envelope xmlns:env="{ENV}">
  <env:Header>
    <mm7:TransactionID xmlns:mm7="{NS12}" env:mustUnderstand="1">
      vas00001-sub
    </mm7:TransactionID>
  </env:Header>
  <env:Body>
    <SubmitReq xmlns="{NS12}">
      <MM7Version>5.3.0</MM7Version>
      <SenderIdentification>
        <VASPID>TNN</VASPID>
        <VASID>News</VASID>
      </SenderIdentification>
      <Recipients>
        <To>
          <Number>01012345678</Number>
          <RFC2822Address displayOnly="true">editor@news.example</RFC2822Address>
        </To>
        <Cc><Number>01087654321</Number></Cc>
        <Bcc><RFC2822Address>archive@news.example</RFC2822Address></Bcc>
      </Recipients>
      <ServiceCode>gold-sp33-im42</ServiceCode>
      <LinkedID>mms00016666</LinkedID>
      <MessageClass>Informational</MessageClass>
      <TimeStamp>2002-01-02T09:30:47-05:00</TimeStamp>
      <EarliestDeliveryTime>2002-01-02T09:30:47-05:00</EarliestDeliveryTime>
      <ExpiryDate>P2D</ExpiryDate>
      <DeliveryReport>true</DeliveryReport>
      <Priority>Normal</Priority>
      <Subject>News for today</Subject>
      <ChargedParty>Sender</ChargedParty>
      <DistributionIndicator>true</DistributionIndicator>
      <Content href="cid:SaturnPics-01020930@news.tnn.com" allowAdaptations="true"/>
    </SubmitReq>
  </env:Body>
</env:Envelope>
--NextPart_000_0028_01C19839.84698430
Content-Type: multipart/related; boundary="StoryParts-74526-8432-2002-77645";
 type="application/smil"; start="<SaturnStory@news.tnn.com>"
Content-ID: <SaturnPics-01020930@news.tnn.com>

--StoryParts-74526-8432-2002-77645
Content-Type: application/smil; charset="us-ascii"
Content-ID: <SaturnStory@news.tnn.com>

""")
    + SMIL
    + _crlf("""
--StoryParts-74526-8432-2002-77645
Content-Type: text/plain; charset="ks_c_5601-1987"
Content-ID: <story@news.tnn.com>
Content-Location: story.txt
Content-Transfer-Encoding: 8bit

""")
    + TEXT_KO.encode("euc-kr")
    + _crlf("""
--StoryParts-74526-8432-2002-77645
Content-Type: image/jpeg
Content-ID: <saturn@news.tnn.com>
Content-Location: saturn.jpg
Content-Transfer-Encoding: base64

""")
    + base64.encodebytes(JPEG).replace(b"\n", b"\r\n")
    + _crlf("""--StoryParts-74526-8432-2002-77645--

--NextPart_000_0028_01C19839.84698430--
"""))


def envelope(body: str, tid: str | None = "vas00001-sub", ns: str = NS12) -> bytes:
    header = ("" if tid is None else
              f'<env:Header><mm7:TransactionID xmlns:mm7="{ns}" env:mustUnderstand="1">'
              f"{tid}</mm7:TransactionID></env:Header>")
    return (f'<?xml version="1.0" ?><env:Envelope xmlns:env="{ENV}">{header}'
            f"<env:Body>{body}</env:Body></env:Envelope>").encode()


SUBMIT_RSP = envelope(f"""<SubmitRsp xmlns="{NS12}"><MM7Version>5.3.0</MM7Version>
  <Status><StatusCode>1000</StatusCode><StatusText>Success</StatusText></Status>
  <MessageID>041502073667</MessageID></SubmitRsp>""")

DELIVERY_REPORT_REQ = envelope(f"""<DeliveryReportReq xmlns="{NS12}">
  <MM7Version>5.3.0</MM7Version><MMSRelayServerID>240.110.75.34</MMSRelayServerID>
  <MessageID>041502073667</MessageID>
  <Recipient><Number>01012345678</Number></Recipient>
  <Sender><ShortCode>1234</ShortCode></Sender>
  <Date>2002-04-15T07:16:30-05:00</Date><MMStatus>Retrieved</MMStatus>
  <StatusText>Message retrieved by the handset</StatusText></DeliveryReportReq>""",
                               tid="mmsc-dr-0001")

DELIVERY_REPORT_RSP = envelope(f"""<DeliveryReportRsp xmlns="{NS12}">
  <MM7Version>5.3.0</MM7Version>
  <Status><StatusCode>1000</StatusCode><StatusText>Success</StatusText></Status>
  </DeliveryReportRsp>""", tid="mmsc-dr-0001")

CANCEL_REQ = envelope(f"""<CancelReq xmlns="{NS12}"><MM7Version>5.3.0</MM7Version>
  <SenderIdentification><VASPID>TNN</VASPID><VASID>News</VASID></SenderIdentification>
  <MessageID>vas00001-sub</MessageID></CancelReq>""", tid="vas00002-can")

REPLACE_REQ_CTYPE = ('multipart/related; boundary="R1"; type="text/xml"; start="<env>"')
REPLACE_REQ = _crlf("""--R1
Content-Type: text/xml; charset="utf-8"
Content-ID: <env>

""") + envelope(f"""<ReplaceReq xmlns="{NS12}"><MM7Version>5.3.0</MM7Version>
  <SenderIdentification><VASPID>TNN</VASPID></SenderIdentification>
  <MessageID>041502073667</MessageID><ServiceCode>gold-sp33-im42</ServiceCode>
  <TimeStamp>2002-01-02T09:30:47-05:00</TimeStamp>
  <Content href="cid:new-content"/></ReplaceReq>""", tid="vas00003-rep") + _crlf("""
--R1
Content-Type: text/plain; charset="utf-8"
Content-ID: <new-content>

Updated story
--R1--
""")

FAULT = envelope(f"""<env:Fault><faultcode>env:Client</faultcode>
  <faultstring>Client error</faultstring><detail>
  <RSErrorRsp xmlns="{NS12}"><MM7Version>5.3.0</MM7Version>
  <MMSRelayServerID>240.110.75.34</MMSRelayServerID>
  <Status><StatusCode>2007</StatusCode><StatusText>Message format corrupt</StatusText>
  <Details>the Content href names no part</Details></Status></RSErrorRsp>
  </detail></env:Fault>""")

# The form a Korean carrier's MMSC answers with: StatusCode directly under RSErrorRsp.
BARE_RSERROR = envelope(f"""<mm7:RSErrorRsp xmlns:mm7="{NS12}"><StatusText>SUBS is ported
  </StatusText><MM7Version>5.3.0</MM7Version><StatusCode>6102</StatusCode></mm7:RSErrorRsp>""")

NS14 = "http://www.3gpp.org/ftp/Specs/archive/23_series/23.140/schema/REL-6-MM7-1-4"
# REL-6 additions the Annex example shows (ContentClass, DRMContent), ChargedPartyID, and the
# sender number written as SenderAddress's own text, as some MMSCs' VASP samples do.
SUBMIT_REQ_REL6 = envelope(f"""<SubmitReq xmlns="{NS14}"><MM7Version>6.8.0</MM7Version>
  <SenderIdentification><VASPID>TNN</VASPID><VASID>News</VASID>
  <SenderAddress>0212345678</SenderAddress></SenderIdentification>
  <Recipients><To><Number>01012345678</Number></To></Recipients>
  <ServiceCode>gold-sp33-im42</ServiceCode><ExpiryDate>P90D</ExpiryDate>
  <DeliveryReport>true</DeliveryReport><Priority>Normal</Priority>
  <Subject>News for today</Subject><ContentClass>video-rich</ContentClass>
  <DRMContent>true</DRMContent><ChargedParty>Recipient</ChargedParty>
  <ChargedPartyID>01012345678</ChargedPartyID></SubmitReq>""", ns=NS14)
