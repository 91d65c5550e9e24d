"""Calls anchored and recorded by telgate, end to end with real peers: SIPp calls the DID from
the carrier's address streaming the G.711 A-law capture it ships (`-sn uac_pcap`), telgate
relays it to a registered phone (a SIPp UAS that says back what it hears, `-rtp_echo`), and the
call's recording holds the carrier's audio byte for byte on the customer channel and the phone's
on the agent channel."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handlers.calls.anchoring import Anchoring
from handlers.media import recordings
from handlers.media.client import MediaProcess
from protocols.rtp.g711 import Codec, decode
from protocols.rtp.wav import read_wav
from sim.sip.phone import SimPhone
from tests.integration.test_calls import DID, PASSWORD, Gateway, gw
from tests.interop.test_sip_interop import (
    BARESIP,
    SCENARIOS,
    SIPP,
    free_port,
    registered_baresip,
    terminate,
)
from tests.media.conftest import media
from tests.protocols.rtp.pcap import SIPP_PCAPS, udp_payloads

__all__ = ["gw", "media"]  # the fixtures

pytestmark = [pytest.mark.interop, pytest.mark.slow,
              pytest.mark.skipif(SIPP is None or not (SIPP_PCAPS / "g711a.pcap").exists(),
                                 reason="sipp not installed (apt-get install sip-tester)")]


async def anchored(gw: Gateway, media: MediaProcess, root: Path, **sip: Any) -> Anchoring:
    """The gateway with its calls anchored in `media`, recording every call of the tenant."""
    resp = await gw.tenant.call("PATCH", "/v1/tenant/settings", json={"recording_policy": "all"})
    assert resp.status == 200, await resp.text()
    anchoring = Anchoring(media, gw.api.context.pool, recordings_root=root, reserve=2)
    await gw.start(anchoring=anchoring, **sip)
    return anchoring


@contextlib.asynccontextmanager
async def echoing_phone(gw: Gateway) -> Any:
    """Extension 1001, registered, answered by a SIPp UAS echoing the RTP it receives."""
    assert SIPP is not None
    await gw.extension("1001")
    info = await (await gw.tenant.call("GET", "/v1/extensions/1001")).json()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(SCENARIOS / "uas_pcma.xml"), "-i", "127.0.0.1", "-p", str(port),
        "-mp", str(free_port()), "-rtp_echo", "-m", "1", "-nostdin",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        registrar = SimPhone("1001", gateway=gw.address, domain=info["sip_domain"], password=PASSWORD)
        await registrar.start()
        gw.uas.append(registrar)
        assert await registrar.register(contact=f"<sip:1001@127.0.0.1:{port}>") == 200
        yield proc
    finally:
        await terminate(proc)


async def pcap_caller(gw: Gateway, cwd: Path) -> tuple[int, str]:
    """SIPp's uac_pcap from the carrier's address to the DID: (exit status, stderr tail)."""
    assert SIPP is not None
    (cwd / "pcap").symlink_to(SIPP_PCAPS)  # uac_pcap plays pcap/g711a.pcap from its cwd
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sn", "uac_pcap", f"{gw.address[0]}:{gw.address[1]}", "-s", DID, "-i", "127.0.0.2",
        "-p", str(free_port("127.0.0.2")), "-mp", str(free_port("127.0.0.2")), "-m", "1",
        "-nostdin", "-timeout", "40", cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")[-800:]


async def the_recording(gw: Gateway) -> recordings.Recording:
    """The tenant's one recording, once its call's close has been stored."""
    now = datetime.now(UTC)
    async with asyncio.timeout(15):
        while True:
            async with gw.api.context.pool.acquire() as conn:
                found = await recordings.search(conn, gw.tenant.id, since=now - timedelta(hours=1),
                                                until=now + timedelta(hours=1))
            if found and found[0].status != "recording":
                assert len(found) == 1
                return found[0]
            await asyncio.sleep(0.05)


async def test_a_carrier_call_to_the_did_is_relayed_and_recorded_byte_for_byte(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    sent = b"".join(p[12:] for p in udp_payloads(SIPP_PCAPS / "g711a.pcap"))  # fixed 12-byte headers
    await anchored(gw, media, tmp_path / "recordings")
    async with echoing_phone(gw):
        status, err = await pcap_caller(gw, tmp_path)
    assert status == 0, err

    [record] = await gw.records()
    assert record["class"] == "incoming" and record["extension"] == "1001"
    rec = await the_recording(gw)
    assert rec.status == "ok" and rec.codec == "PCMA", rec
    assert str(rec.call_id) == record["id"]
    assert rec.customer is None and record["caller"] == "anonymous"  # uac_pcap withholds its number
    assert rec.extension == "1001" and not rec.internal
    blob = await asyncio.to_thread(Path(rec.path).read_bytes)
    assert len(blob) == rec.bytes
    wav = read_wav(blob)
    left, right = wav.data[0::2], wav.data[1::2]
    # The capture opens with silence: find its first voiced 30 ms in the customer channel.
    voiced = next(i for i in range(0, len(sent), 240) if sent[i:i + 240] != b"\xd5" * 240)
    start = left.index(sent[voiced:voiced + 240]) - voiced
    assert left[start:start + len(sent)] == sent  # the carrier's audio, every byte, in place
    assert sent[voiced:] in right  # the phone said it back: the agent channel has it all
    # One file as long as the answered call.
    assert abs(len(left) / 8000 - record["talk_seconds"]) < 0.1, (len(left) / 8000, record)
    # The call's ports are back in the pool; the reservoir was topped up for the next call.
    stats = await media.stats()
    assert (stats["calls"], stats["calls_created"], stats["calls_closed"]) == (2, 3, 1)


BARESIP_AGENT = """\
sip_listen\t\t127.0.0.1:{port}
audio_player\t\taubridge,nil
audio_source\t\tausine,{hz}
audio_alert\t\taubridge,nil
ausrc_srate\t\t48000
ausrc_channels\t\t2
snd_path\t\t{home}
module_path\t\t/usr/lib/baresip/modules
module\t\t\tstdio.so
module\t\t\tg711.so
module\t\t\tausine.so
module\t\t\taubridge.so
module\t\t\tsndfile.so
module_app\t\tmenu.so
module_app\t\taccount.so
"""


def strongest(pcm: np.ndarray, candidates: tuple[float, ...], rate: int = 8000) -> float:
    """Which of `candidates` (Hz) carries the most energy in `pcm` (Goertzel)."""
    samples = pcm.astype(np.float64)
    n = np.arange(len(samples))
    power = {f: abs(np.sum(samples * np.exp(-2j * np.pi * f * n / rate))) for f in candidates}
    return max(power, key=lambda f: power[f])


@pytest.mark.skipif(BARESIP is None, reason="baresip not installed (apt-get install baresip)")
async def test_baresip_as_the_agent_hears_the_carrier_and_is_recorded_answering(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    sent = b"".join(p[12:] for p in udp_payloads(SIPP_PCAPS / "g711a.pcap"))
    await anchored(gw, media, tmp_path / "recordings", digest_algorithms=["MD5"])
    home = tmp_path / "baresip"
    home.mkdir()
    config = BARESIP_AGENT.format(port=free_port(), hz=1000, home=home)
    async with registered_baresip(gw, home, config, ";audio_codecs=PCMA") as output:
        status, err = await pcap_caller(gw, tmp_path)
        assert status == 0, err + output.decode(errors="replace")[-3000:]
        rec = await the_recording(gw)

    [record] = await gw.records()
    assert record["class"] == "incoming" and record["extension"] == "1001"
    assert rec.status == "ok" and rec.codec == "PCMA" and rec.extension == "1001"
    wav = read_wav(await asyncio.to_thread(Path(rec.path).read_bytes))
    left, right = wav.data[0::2], wav.data[1::2]
    voiced = next(i for i in range(0, len(sent), 240) if sent[i:i + 240] != b"\xd5" * 240)
    start = left.index(sent[voiced:voiced + 240]) - voiced
    assert left[start:start + len(sent)] == sent  # the carrier's side, byte for byte
    # The agent's side: baresip's 1 kHz sine, through its resampler and G.711, all call long.
    agent_pcm = decode(Codec.PCMA, right)
    assert np.sqrt(np.mean(agent_pcm.astype(np.float64) ** 2)) > 500
    assert strongest(agent_pcm[8000:16000], (440.0, 1000.0, 2000.0, 3000.0)) == 1000.0
    # And baresip heard the carrier: its dump of what it played out is not silence.
    dumps = sorted(home.glob("dump-*-dec.wav"))
    assert dumps, sorted(p.name for p in home.iterdir())
    heard = np.frombuffer(dumps[0].read_bytes()[44:], dtype=np.int16)
    assert np.sqrt(np.mean(heard.astype(np.float64) ** 2)) > 100
