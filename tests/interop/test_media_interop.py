"""The relay and recorder against SIPp's own RTP: `sipp -sn uac_pcap` streams the G.711 A-law
capture it ships (and an RFC 4733 digit) through the relay to a phone, and the recording's
customer channel holds exactly the payload SIPp sent; the phone's audio crosses back to SIPp
and fills the agent channel."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from handlers.media.client import MediaProcess
from handlers.media.interface import EventKind, RecordingRequest, RecordingStatus, Side
from protocols.rtp.g711 import Codec
from protocols.rtp.wav import read_wav
from sim.media import RtpPeer, tone_pattern
from tests.media.conftest import media
from tests.media.events import Events
from tests.protocols.rtp.pcap import SIPP_PCAPS, udp_payloads

__all__ = ["media"]  # the fixture

pytestmark = [pytest.mark.interop, pytest.mark.slow]
SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "scenarios"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def read_file(path: str) -> bytes:
    return Path(path).read_bytes()


@pytest.mark.skipif(SIPP is None or not (SIPP_PCAPS / "g711a.pcap").exists(),
                    reason="sipp not installed (apt-get install sip-tester)")
async def test_sipp_pcap_call_is_relayed_and_recorded_byte_for_byte(media: MediaProcess,
                                                                    tmp_path: Path) -> None:
    assert SIPP is not None
    sent = b"".join(p[12:] for p in udp_payloads(SIPP_PCAPS / "g711a.pcap"))  # fixed 12-byte headers
    events = Events()
    phone = await RtpPeer.open()
    session = await media.create("sipp-1", Codec.PCMA, record=RecordingRequest(customer=Side.A),
                                 on_event=events.append)
    sipp_media = free_port()
    caller_sdp = (f"v=0\r\no=user1 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                  f"m=audio {sipp_media} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n").encode()
    await session.offer(Side.A, caller_sdp)
    await session.answer(Side.B, phone.sdp(Codec.PCMA))
    await session.answered()

    (tmp_path / "pcap").symlink_to(SIPP_PCAPS)  # uac_pcap plays pcap/g711a.pcap from its cwd
    uas_port, uac_port = free_port(), free_port()
    uas = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(SCENARIOS / "uas_relay.xml"), "-key", "relay_port", str(session.ports[Side.A]),
        "-i", "127.0.0.1", "-p", str(uas_port), "-mp", str(free_port()), "-m", "1", "-nostdin",
        cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(0.3)
    uac = await asyncio.create_subprocess_exec(
        SIPP, "-sn", "uac_pcap", f"127.0.0.1:{uas_port}", "-i", "127.0.0.1", "-p", str(uac_port),
        "-mp", str(sipp_media), "-m", "1", "-nostdin", "-timeout", "30",
        cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    spoken = tone_pattern(Codec.PCMA, 3.0, frequencies=(350.0, 440.0))
    # SIPp answers, then starts its stream; on a loaded machine that can take seconds. The phone
    # speaks only once the caller's side is latched (its audio has somewhere to go).
    async with asyncio.timeout(20):
        while (await session.query())["legs"]["a"]["state"] != "latched":
            assert uac.returncode is None, "SIPp ended before its stream reached the relay"
            await asyncio.sleep(0.05)
    await phone.play((session.address, session.ports[Side.B]), Codec.PCMA, spoken)
    async with asyncio.timeout(40):
        _, err = await uac.communicate()
        await uas.wait()
    assert uac.returncode == 0, err.decode(errors="replace")[-500:]
    legs = (await session.query())["legs"]
    result = await session.close()

    assert phone.received_payload(payload_type=8) == sent
    assert legs["a"]["received"] >= len(udp_payloads(SIPP_PCAPS / "g711a.pcap"))
    assert legs["b"]["received"] == len(phone.sent) and legs["a"]["forwarded"] == len(phone.sent)
    assert [(e.side, e.detail) for e in events if e.kind is EventKind.DTMF] == [(Side.A, "1")]
    assert result.status is RecordingStatus.OK and result.path is not None
    blob = read_file(result.path)
    data = read_wav(blob).data
    left, right = data[0::2], data[1::2]
    voiced = next(i for i in range(0, len(sent), 240) if sent[i:i + 240] != b"\xd5" * 240)
    start = left.index(sent[voiced:voiced + 240]) - voiced  # the capture opens with silence
    assert left[start:start + len(sent)] == sent
    assert spoken in right
    assert len(blob) == result.bytes
