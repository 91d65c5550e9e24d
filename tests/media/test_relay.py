"""The relay as two phones and a listener experience it: audio crosses both ways unchanged,
NATed phones are reached where they really are, hold and transfer keep one recording, silence
ends the call, and a full disk costs the recording, never the call."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import pytest

from handlers.errors import DomainError
from handlers.media.client import MediaProcess, RelaySession
from handlers.media.interface import EventKind, MediaEvent, RecordingRequest, RecordingStatus, Side
from handlers.media.sdp import far_end
from protocols.rtp.g711 import Codec
from protocols.rtp.wav import read_wav
from sim.media import RtpPeer, tone_pattern
from tests.media.events import Events

needs_sox = pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")


async def settle(seconds: float = 0.3) -> None:
    """Let the last packets cross loopback and the relay."""
    await asyncio.sleep(seconds)


async def connect(media: MediaProcess, codec: Codec = Codec.PCMA, *, record: RecordingRequest | None = None,
                  events: list[MediaEvent] | None = None, timeout: float | None = None,
                  call_id: str = "call-1") -> tuple[RelaySession, RtpPeer, RtpPeer]:
    """A customer (A leg) calling an agent (B leg) through the relay, answered."""
    customer, agent = await RtpPeer.open(), await RtpPeer.open()
    session = await media.create(call_id, codec, record=record, timeout=timeout,
                                 on_event=events.append if events is not None else None)
    to_agent = await session.offer(Side.A, customer.sdp(codec))
    to_customer = await session.answer(Side.B, agent.sdp(codec))
    assert (far_end(to_agent).address, far_end(to_agent).port) == (session.address, session.ports[Side.B])
    assert far_end(to_customer).port == session.ports[Side.A]
    await session.answered()
    return session, customer, agent


def relay_port(session: RelaySession, side: Side) -> tuple[str, int]:
    return (session.address, session.ports[side])


async def sox(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec("sox", *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out.decode()


def file_size(path: str) -> int:
    return os.path.getsize(path)


def channels(path: str) -> tuple[bytes, bytes]:
    data = read_wav(Path(path).read_bytes()).data
    return data[0::2], data[1::2]


async def test_audio_crosses_both_ways_and_each_channel_holds_what_its_side_sent(media: MediaProcess) -> None:
    session, customer, agent = await connect(media, record=RecordingRequest(customer=Side.A))
    said_by_customer = tone_pattern(Codec.PCMA, 1.0, frequencies=(440.0,))
    said_by_agent = tone_pattern(Codec.PCMA, 1.0, frequencies=(620.0, 900.0))
    await asyncio.gather(customer.play(relay_port(session, Side.A), Codec.PCMA, said_by_customer),
                         agent.play(relay_port(session, Side.B), Codec.PCMA, said_by_agent))
    await settle()
    result = await session.close()
    assert agent.received_payload() == said_by_customer
    assert customer.received_payload() == said_by_agent
    assert {r.source for r in agent.received} == {relay_port(session, Side.B)}  # symmetric: from our port
    assert result.status is RecordingStatus.OK and result.path is not None
    left, right = channels(result.path)
    assert said_by_customer in left and said_by_agent in right
    assert result.bytes == file_size(result.path)
    assert 1.0 <= result.duration < 2.0


async def test_nated_phone_is_answered_at_its_real_address_and_strangers_are_ignored(
        media: MediaProcess) -> None:
    session, customer, agent = await connect(media)
    behind_nat = await RtpPeer.open()  # the customer's packets really come from this port
    stranger = await RtpPeer.open()
    for packet in behind_nat.packets(Codec.PCMA, tone_pattern(Codec.PCMA, 0.1)):
        behind_nat.send(relay_port(session, Side.A), packet)
    await settle(0.1)
    for packet in stranger.packets(Codec.PCMA, b"\x00" * 160):
        stranger.send(relay_port(session, Side.A), packet)
    for packet in agent.packets(Codec.PCMA, b"\x11" * 320):
        agent.send(relay_port(session, Side.B), packet)
    await settle()
    assert customer.received == []  # the address in its SDP was not where it is
    assert behind_nat.received_payload() == b"\x11" * 320
    assert b"\x00" * 160 not in agent.received_payload()
    legs = (await session.query())["legs"]
    assert legs["a"]["state"] == "latched" and legs["a"]["foreign"] == 1
    await session.close()


async def test_held_side_hears_nothing_and_the_recording_keeps_running(media: MediaProcess) -> None:
    session, customer, agent = await connect(media, record=RecordingRequest())
    before = tone_pattern(Codec.PCMA, 0.4, frequencies=(440.0,))
    during = tone_pattern(Codec.PCMA, 0.4, frequencies=(700.0,))
    await customer.play(relay_port(session, Side.A), Codec.PCMA, before)
    await session.hold(Side.B)
    await customer.play(relay_port(session, Side.A), Codec.PCMA, during)
    await asyncio.sleep(0.5)  # nobody sends: a stretch of silence in the file
    await session.unhold(Side.B)
    await settle()
    result = await session.close()
    assert agent.received_payload() == before
    left, _ = channels(result.path or "")
    assert before + during in left  # continuous: hold did not pause or cut the customer's side
    assert result.duration >= 1.3


async def test_transfer_to_another_phone_keeps_one_file_with_both_agents(media: MediaProcess) -> None:
    session, customer, first_agent = await connect(media, record=RecordingRequest())
    second_agent = await RtpPeer.open()
    first_words = tone_pattern(Codec.PCMA, 0.4, frequencies=(500.0,))
    second_words = tone_pattern(Codec.PCMA, 0.4, frequencies=(800.0,))
    await first_agent.play(relay_port(session, Side.B), Codec.PCMA, first_words)
    to_customer = await session.repoint(Side.B, second_agent.sdp(Codec.PCMA))
    assert far_end(to_customer).port == session.ports[Side.A]  # unchanged: no re-INVITE of the customer
    for packet in first_agent.packets(Codec.PCMA, b"\x22" * 160):  # a straggler of the old phone
        first_agent.send(relay_port(session, Side.B), packet)
    await settle(0.1)
    await second_agent.play(relay_port(session, Side.B), Codec.PCMA, second_words)
    hello = tone_pattern(Codec.PCMA, 0.2)
    await customer.play(relay_port(session, Side.A), Codec.PCMA, hello)
    await settle()
    result = await session.close()
    assert second_agent.received_payload() == hello
    assert customer.received_payload() == first_words + second_words
    _, right = channels(result.path or "")
    assert right.index(first_words) < right.index(second_words)
    assert b"\x22" * 160 not in right


async def test_silent_call_is_reported_as_rtp_timeout(media: MediaProcess) -> None:
    events = Events()
    session, customer, _ = await connect(media, events=events, timeout=1.0)
    for packet in customer.packets(Codec.PCMA, b"\x55" * 160):
        customer.send(relay_port(session, Side.A), packet)
    await events.wait_for(EventKind.TIMEOUT)
    assert [e.call_id for e in events if e.kind is EventKind.TIMEOUT] == ["call-1"]
    await session.close()


async def test_dtmf_digits_are_reported_once_each(media: MediaProcess) -> None:
    events: list[MediaEvent] = []
    session, customer, agent = await connect(media, events=events)
    for digit in "15#":
        await customer.send_digit(relay_port(session, Side.A), digit)
    await settle()
    assert [(e.side, e.detail) for e in events if e.kind is EventKind.DTMF] == [
        (Side.A, "1"), (Side.A, "5"), (Side.A, "#")]
    assert len(agent.received) == len(customer.sent)  # the digits are relayed too
    await session.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
async def test_full_disk_fails_the_recording_but_not_the_call(media: MediaProcess) -> None:
    events: list[MediaEvent] = []
    session, customer, agent = await connect(media, record=RecordingRequest(path="/dev/full"), events=events)
    words = tone_pattern(Codec.PCMA, 1.5)
    await customer.play(relay_port(session, Side.A), Codec.PCMA, words)
    await settle()
    result = await session.close()
    assert agent.received_payload() == words
    assert result.status is RecordingStatus.FAILED and "No space left" in (result.error or "")
    assert [e.kind for e in events] == [EventKind.RECORDING_FAILED]
    assert (await media.stats())["recording_failures"] == 1


@needs_sox
async def test_killed_media_process_leaves_a_playable_recording(media: MediaProcess, tmp_path: Path) -> None:
    events = Events()
    path = tmp_path / "killed.wav"
    session, customer, _ = await connect(media, record=RecordingRequest(path=str(path)), events=events)
    await customer.play(relay_port(session, Side.A), Codec.PCMA, tone_pattern(Codec.PCMA, 2.6))
    assert media.pid is not None
    os.kill(media.pid, signal.SIGKILL)
    await events.wait_for(EventKind.LOST)
    closed = await session.close()  # the engine's end path still completes
    assert (closed.status, closed.error) == (RecordingStatus.FAILED, "media process went away")
    assert float(await sox("--i", "-D", str(path))) >= 1.0
    await sox(str(path), "-n", "stat")  # decodes the whole file


async def test_sdp_naming_a_host_is_resolved_and_sdp_without_audio_is_refused(media: MediaProcess) -> None:
    customer, agent = await RtpPeer.open(), await RtpPeer.open()
    session = await media.create("call-host", Codec.PCMU, record=None)
    await session.offer(Side.A, customer.sdp(Codec.PCMU))
    await session.answer(Side.B, agent.sdp(Codec.PCMU).replace(b"IN IP4 127.0.0.1", b"IN IP4 localhost"))
    await session.answered()
    for packet in customer.packets(Codec.PCMU, b"\x33" * 320):
        customer.send(relay_port(session, Side.A), packet)
    await settle()
    assert agent.received_payload() == b"\x33" * 320
    with pytest.raises(DomainError) as refused:
        await session.offer(Side.A, b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
    assert (refused.value.code, refused.value.status) == ("media_bad_sdp", 422)
    await session.close()


async def test_refused_create_takes_no_port(media: MediaProcess) -> None:
    for bad in ({"record": {"customer": "c"}}, {"codec": "G729"}, {"timeout": "soon"}):
        with pytest.raises(DomainError) as refused:
            await media.request("create", call="bad", **bad)
        assert refused.value.code == "media_bad_request"
    stats = await media.stats()
    assert (stats["calls"], stats["ports_in_use"], stats["media_sockets"]) == (0, 0, 0)
