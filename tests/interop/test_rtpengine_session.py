"""The engine's media interface served by a real rtpengine-daemon (userspace, NG over UDP):
the same calls that drive our relay carry audio both ways, hold silences the held leg, and a
re-pointed leg reaches the new phone. Skipped, saying why, without rtpengine."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from handlers.errors import DomainError
from handlers.media.interface import RecordingStatus, Side
from handlers.media.rtpengine import RtpengineService
from protocols.rtp.g711 import Codec
from sim.media import RtpPeer, tone_pattern

pytestmark = pytest.mark.interop
RTPENGINE = shutil.which("rtpengine")


def port_of(body: bytes) -> int:
    return next(int(line.split()[1]) for line in body.decode().splitlines() if line.startswith("m=audio"))


@pytest.fixture
async def rtpengine(tmp_path: Path) -> AsyncIterator[RtpengineService]:
    if RTPENGINE is None:
        pytest.skip("rtpengine not installed (apt-get install rtpengine-daemon)")
    ng = random.randrange(9000, 10000)  # below the ephemeral range, like our relay's ports
    low = random.randrange(10000, 32000, 2)
    log = tmp_path / "rtpengine.log"
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            RTPENGINE, "--config-file=none", "--foreground", "--log-stderr", "--table=-1",
            "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{ng}", f"--port-min={low}",
            f"--port-max={low + 200}", "--log-level=4", "--delete-delay=0",
            stdout=asyncio.subprocess.DEVNULL, stderr=err, cwd=tmp_path)
    service = RtpengineService("127.0.0.1", ng, timeout=0.3, retries=50)  # a busy machine starts it slowly
    try:
        try:
            await service.start()
        except DomainError:
            pytest.fail(f"rtpengine did not answer (exit {proc.returncode}): {log.read_text()[-1000:]}")
        yield service
    finally:
        await service.stop()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        await proc.wait()


async def test_the_media_interface_drives_rtpengine_like_our_relay(rtpengine: RtpengineService) -> None:
    customer, agent, second_agent = await RtpPeer.open(), await RtpPeer.open(), await RtpPeer.open()
    session = await rtpengine.create("rtpe-1", Codec.PCMA, record=None)
    to_agent = await session.offer(Side.A, customer.sdp(Codec.PCMA))
    to_customer = await session.answer(Side.B, agent.sdp(Codec.PCMA))
    await session.answered()
    a_port, b_port = port_of(to_customer), port_of(to_agent)
    hello, reply = tone_pattern(Codec.PCMA, 0.4, frequencies=(440.0,)), tone_pattern(Codec.PCMA, 0.4)
    await asyncio.gather(customer.play(("127.0.0.1", a_port), Codec.PCMA, hello),
                         agent.play(("127.0.0.1", b_port), Codec.PCMA, reply))
    await asyncio.sleep(0.3)
    assert agent.received_payload() == hello and customer.received_payload() == reply

    await session.hold(Side.B)
    await customer.play(("127.0.0.1", a_port), Codec.PCMA, tone_pattern(Codec.PCMA, 0.2))
    await asyncio.sleep(0.2)
    assert agent.received_payload() == hello  # nothing more reached the held leg
    await session.unhold(Side.B)

    to_customer = await session.repoint(Side.B, second_agent.sdp(Codec.PCMA))
    a_port = port_of(to_customer)  # rtpengine may move the customer's port (then: re-INVITE)
    later = tone_pattern(Codec.PCMA, 0.4, frequencies=(900.0,))
    await customer.play(("127.0.0.1", a_port), Codec.PCMA, later)
    await asyncio.sleep(0.3)
    assert second_agent.received_payload() == later
    assert (await session.close()).status is RecordingStatus.NONE
    with pytest.raises(DomainError):
        await rtpengine.command({"command": "query", "call-id": "rtpe-1"})
