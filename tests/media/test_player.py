"""Prompts played into a call as the phone hears them: a 1 s prompt arrives as 50 packets with
the file's bytes, then `played` is reported; hold music loops until stopped; the other leg is
not heard while a prompt plays and is heard again after; a new prompt replaces the current one;
a prompt that cannot be read is refused."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from handlers.errors import DomainError
from handlers.media.client import MediaProcess
from handlers.media.interface import EventKind, Side
from protocols.rtp.g711 import Codec
from sim.media import Received, RtpPeer, tone_pattern
from tests.media.events import Events
from tests.media.test_relay import connect, relay_port, settle

ONE_SECOND = bytes(range(256)) * 31 + bytes(64)  # 8000 samples, every frame different


def prompt(tmp_path: Path, name: str, audio: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(audio)
    return path


def assert_one_stream(packets: list[Received]) -> None:
    """Contiguous sequence and 20 ms timestamps, one SSRC (across plays too)."""
    for before, after in itertools.pairwise(p.packet for p in packets):
        assert after.ssrc == before.ssrc
        assert after.sequence == (before.sequence + 1) & 0xFFFF


async def received_at_least(peer: RtpPeer, count: int, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while len(peer.received) < count:  # noqa: ASYNC110 - packets arriving: nothing to await
            await asyncio.sleep(0.02)


async def test_one_second_prompt_reaches_the_phone_whole_then_played_is_reported(
        media: MediaProcess, tmp_path: Path) -> None:
    events = Events()
    session, customer, _ = await connect(media, Codec.PCMU, events=events)
    duration = await session.play(Side.A, prompt(tmp_path, "welcome.pcmu", ONE_SECOND), play_id="welcome")
    assert duration == 1.0
    played = await events.wait_for(EventKind.PLAYED)
    count_at_event = len(customer.received)
    await settle()
    packets = customer.received
    assert (played.side, played.detail) == (Side.A, "welcome")
    # The event follows the last packet (this loop reads one datagram a turn: a few may wait).
    assert len(packets) == 50 and count_at_event >= 40
    assert b"".join(r.packet.payload for r in packets) == ONE_SECOND
    assert [r.packet.marker for r in packets] == [True] + [False] * 49
    assert {r.packet.payload_type for r in packets} == {0}
    assert [r.packet.timestamp - packets[0].packet.timestamp for r in packets[:3]] == [0, 160, 320]
    assert_one_stream(packets)
    assert {r.source for r in packets} == {relay_port(session, Side.A)}  # from the leg's own port
    assert (await session.query())["legs"]["a"]["played"] == 50
    await session.close()


async def test_prompt_goes_where_the_phone_really_is_once_latched(media: MediaProcess,
                                                                  tmp_path: Path) -> None:
    events = Events()
    session, customer, _ = await connect(media, events=events)
    behind_nat = await RtpPeer.open()
    for packet in behind_nat.packets(Codec.PCMA, Codec.PCMA.silence_bytes(160)):
        behind_nat.send(relay_port(session, Side.A), packet)
    await settle(0.1)
    await session.play(Side.A, prompt(tmp_path, "short.pcma", ONE_SECOND[:800]), play_id="p")
    await events.wait_for(EventKind.PLAYED)
    await settle(0.1)
    assert customer.received == []
    assert b"".join(r.packet.payload for r in behind_nat.received) == ONE_SECOND[:800]
    await session.close()


async def test_hold_music_loops_past_its_end_until_stopped(media: MediaProcess, tmp_path: Path) -> None:
    events = Events()
    session, _, agent = await connect(media, events=events)
    music = ONE_SECOND[:1000]  # 0.125 s: not a whole number of frames, joined without a gap
    await session.play(Side.B, prompt(tmp_path, "moh.pcma", music), loop=True, play_id="moh")
    await received_at_least(agent, 20)  # 0.4 s: over three times round
    assert await session.stop(Side.B) is True
    await settle()
    heard = len(agent.received)
    await settle()
    assert len(agent.received) == heard  # stopped for good
    assert b"".join(r.packet.payload for r in agent.received) == (music * 100)[:heard * 160]
    assert [r.packet.marker for r in agent.received].count(True) == 1
    assert_one_stream(agent.received)
    assert await session.stop(Side.B) is False
    assert EventKind.PLAYED not in {e.kind for e in events}  # stopping reports nothing
    await session.close()


async def test_other_leg_is_not_heard_during_a_prompt_and_is_heard_again_after(
        media: MediaProcess, tmp_path: Path) -> None:
    events = Events()
    session, customer, agent = await connect(media, events=events)
    warning = tone_pattern(Codec.PCMA, 1.0, frequencies=(1000.0,))
    agent_words = tone_pattern(Codec.PCMA, 0.3, frequencies=(440.0,))
    await session.play(Side.A, prompt(tmp_path, "warning.pcma", warning), play_id="warning")
    await agent.play(relay_port(session, Side.B), Codec.PCMA, agent_words)  # during the prompt
    await events.wait_for(EventKind.PLAYED)
    await settle(0.1)
    assert b"".join(r.packet.payload for r in customer.received) == warning
    after = tone_pattern(Codec.PCMA, 0.2, frequencies=(620.0,))
    await agent.play(relay_port(session, Side.B), Codec.PCMA, after)
    await settle()
    assert b"".join(r.packet.payload for r in customer.received) == warning + after
    legs = (await session.query())["legs"]
    assert legs["a"]["playing"] is None and legs["b"]["received"] == len(agent.sent)
    await session.close()


async def test_new_prompt_replaces_the_one_playing(media: MediaProcess, tmp_path: Path) -> None:
    events = Events()
    session, customer, _ = await connect(media, events=events)
    first, second = b"\x11" * 8000, b"\x22" * 1600
    await session.play(Side.A, prompt(tmp_path, "first.pcma", first), loop=True, play_id="first")
    await received_at_least(customer, 5)
    await session.play(Side.A, prompt(tmp_path, "second.pcma", second), play_id="second")
    played = await events.wait_for(EventKind.PLAYED)
    await settle()
    payloads = [r.packet.payload for r in customer.received]
    switch = payloads.index(second[:160])
    assert set(payloads[:switch]) == {first[:160]} and payloads[switch:] == [second[:160]] * 10
    assert [r.packet.marker for r in customer.received].count(True) == 2
    assert customer.received[switch].packet.marker
    assert_one_stream(customer.received)  # same SSRC, the sequence runs on
    assert [(e.kind, e.detail) for e in events] == [(EventKind.PLAYED, "second")]
    assert played.side is Side.A
    await session.close()


async def test_closing_the_session_stops_its_prompts(media: MediaProcess, tmp_path: Path) -> None:
    session, customer, _ = await connect(media)
    await session.play(Side.A, prompt(tmp_path, "moh.pcma", ONE_SECOND), loop=True, play_id="moh")
    await received_at_least(customer, 3)
    await session.close()
    await settle(0.1)
    heard = len(customer.received)
    await settle()
    assert len(customer.received) == heard
    assert (await media.stats())["plays_active"] == 0


async def test_prompt_that_cannot_be_read_is_refused(media: MediaProcess, tmp_path: Path) -> None:
    events = Events()
    session, customer, _ = await connect(media, events=events)
    empty = prompt(tmp_path, "empty.pcma", b"")
    for path, why in ((tmp_path / "missing.pcma", "no file"), (empty, "is empty"),
                      (tmp_path, "not a regular file")):
        with pytest.raises(DomainError) as refused:
            await session.play(Side.A, path, play_id="x")
        assert refused.value.code == "media_prompt_unavailable" and why in str(refused.value)
    music = prompt(tmp_path, "moh.pcma", ONE_SECOND)
    for bad in ({"call": "no-such-call"}, {"side": "c"}, {"loop": "yes"}, {"play": 7}, {"codec": "G729"}):
        fields = {"call": session.call_id, "side": "a", "file": str(music), "play": "x", **bad}
        with pytest.raises(DomainError) as refused:
            await media.request("play", **fields)
        assert refused.value.code == ("media_unknown_call" if "call" in bad else "media_bad_request")
    await settle(0.1)
    assert customer.received == [] and list(events) == []
    await session.close()
