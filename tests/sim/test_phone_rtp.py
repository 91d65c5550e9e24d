"""Simulated UAs calling each other directly over loopback, with real RTP: what one sends the
other receives byte for byte, a re-INVITE re-points the audio, hold stops it, and a call that
has ended leaves no socket or task behind."""

from __future__ import annotations

import asyncio
import os
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from protocols.rtp.g711 import Codec
from protocols.sip.transaction import Peer
from sim.media import Audio, RtpPeer, Tone, audio_line, sdp_body, tone_pattern, wav_payload
from sim.sip.phone import Script, SimCall, SimUA, TrunkCaller

HALF_SECOND = 4000  # samples
ALICE_SAYS = tone_pattern(Codec.PCMU, 0.5, frequencies=(440.0,), on=0.1, off=0.05)
BOB_SAYS = tone_pattern(Codec.PCMU, 0.5, frequencies=(1000.0,), on=0.2, off=0.1)
TONE = Audio()  # the default: a 3 s tone pattern, looped


async def until(check: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - packets arriving: nothing to await
            await asyncio.sleep(0.01)


def rtp(call: SimCall) -> RtpPeer:
    assert call.rtp is not None, "the UA has no audio"
    return call.rtp


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def pair(alice: SimUA, bob: SimUA) -> tuple[SimUA, SimUA]:
    """Start both and point each at the other: each is the other's "gateway"."""
    await alice.start()
    await bob.start()
    alice.gateway = Peer("UDP", bob.bind_host, bob.port)
    bob.gateway = Peer("UDP", alice.bind_host, alice.port)
    return alice, bob


@pytest.fixture
async def uas() -> AsyncIterator[list[SimUA]]:
    started: list[SimUA] = []
    yield started
    for ua in started:
        await ua.close()


def ua(name: str, audio: Audio | None = None) -> SimUA:
    return SimUA(name, gateway=("127.0.0.1", 9), script=Script(audio=audio))


async def talking(uas: list[SimUA], alice_audio: Audio = TONE, bob_audio: Audio = TONE,
                  ) -> tuple[SimUA, SimUA, SimCall, SimCall]:
    """Alice calls Bob, who answers at once: both calls established."""
    alice, bob = await pair(ua("alice", alice_audio), ua("bob", bob_audio))
    uas += [alice, bob]
    call = alice.call("bob")
    async with asyncio.timeout(5):
        leg = await bob.incoming.get()
        await call.answered.wait()
        await leg.answered.wait()
    return alice, bob, call, leg


async def test_each_side_receives_exactly_what_the_other_played(
        uas: list[SimUA], tmp_path: Path) -> None:
    # Bob plays a 16-bit WAV (turned into the negotiated law), the trunk caller raw G.711 bytes.
    path = tmp_path / "bob.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        t = np.arange(HALF_SECOND) / 8000
        w.writeframes((np.sin(2 * np.pi * 1000 * t) * 9000).astype("<i2").tobytes())
    carrier = TrunkCaller(gateway=("127.0.0.1", 9),
                          script=Script(audio=Audio(ALICE_SAYS, loop=False)))
    bob = ua("bob", Audio(path, loop=False))
    await pair(carrier, bob)
    uas += [carrier, bob]
    call = carrier.dial("0212345678", "01012345678")
    async with asyncio.timeout(5):
        leg = await bob.incoming.get()
        await call.answered.wait()
    bob_says = wav_payload(path, Codec.PCMU)
    await until(lambda: len(leg.received_payload()) == len(ALICE_SAYS)
                and len(call.received_payload()) == len(bob_says))
    assert leg.received_payload() == ALICE_SAYS == call.sent_payload()
    assert call.received_payload() == bob_says == leg.sent_payload()
    assert call.codec is leg.codec is Codec.PCMU
    # Each advertised its real endpoint and sends from it (symmetric RTP), the carrier from
    # its own address.
    carrier_rtp, bob_rtp = rtp(call), rtp(leg)
    offer, answer = audio_line(call.request.body), audio_line(call.remote_sdp)
    assert offer is not None and (offer.address, offer.port) == carrier_rtp.address
    assert answer is not None and (answer.address, answer.port) == bob_rtp.address
    assert carrier_rtp.address[0] == "127.0.0.2"
    assert {r.source for r in bob_rtp.received} == {carrier_rtp.address}
    assert {r.source for r in carrier_rtp.received} == {bob_rtp.address}
    assert all(r.packet.payload_type == 0 for r in bob_rtp.received)
    assert sum(r.packet.marker for r in bob_rtp.received) == 1  # one talkspurt
    await carrier.hangup(call)
    async with asyncio.timeout(5):
        await leg.ended.wait()


async def test_a_call_offered_in_the_200_gets_audio_both_ways(uas: list[SimUA]) -> None:
    alice, bob = await pair(ua("alice", Audio(ALICE_SAYS, loop=False)),
                            ua("bob", Audio(BOB_SAYS, loop=False)))
    uas += [alice, bob]
    call = alice.call("bob", with_sdp=False)  # Bob offers in the 200, Alice answers in the ACK
    async with asyncio.timeout(5):
        leg = await bob.incoming.get()
    await until(lambda: len(leg.received_payload()) == len(ALICE_SAYS)
                and len(call.received_payload()) == len(BOB_SAYS))
    assert leg.received_payload() == ALICE_SAYS and call.received_payload() == BOB_SAYS


async def test_a_reinvite_to_a_new_address_re_points_the_audio_and_its_codec(
        uas: list[SimUA]) -> None:
    _alice, bob, call, leg = await talking(uas)
    alice_rtp, bob_rtp = rtp(call), rtp(leg)
    await until(lambda: len(bob_rtp.received) > 2)
    # What an anchoring B2BUA does on a transfer: the audio now goes elsewhere, here in A-law.
    elsewhere = await RtpPeer.open()
    try:
        assert await bob.reinvite(leg, body=elsewhere.sdp(Codec.PCMA)) == 200
        assert call.sending_to == elsewhere.address and call.codec is Codec.PCMA
        re_pointed = len(alice_rtp.sent)  # Alice re-pointed before she answered
        await until(lambda: len(elsewhere.received) >= 5)
        assert {r.source for r in elsewhere.received} == {alice_rtp.address}
        assert {r.packet.payload_type for r in elsewhere.received} == {8}
        assert call.sent_payload().startswith(elsewhere.received_payload())
        later = {p.sequence for p in alice_rtp.sent[re_pointed:]}
        assert later and not later & {r.packet.sequence for r in bob_rtp.received}
    finally:
        elsewhere.close()


async def test_hold_stops_the_audio_toward_the_holder_until_it_resumes(
        uas: list[SimUA]) -> None:
    _alice, bob, call, leg = await talking(uas)
    alice_rtp, bob_rtp = rtp(call), rtp(leg)
    await until(lambda: len(alice_rtp.sent) > 2)

    # Bob holds with sendonly (music on hold): Alice answers recvonly and falls silent.
    assert await bob.reinvite(leg, direction="sendonly") == 200
    assert call.sending_to is None and leg.sending_to == alice_rtp.address
    held, heard = len(alice_rtp.sent), len(alice_rtp.received)
    await until(lambda: len(alice_rtp.received) > heard + 5)
    assert len(alice_rtp.sent) == held

    assert await bob.reinvite(leg) == 200
    assert call.sending_to == bob_rtp.address
    await until(lambda: len(alice_rtp.sent) > held + 2)
    resumed = alice_rtp.sent[held]  # a new talkspurt; the media clock ran on meanwhile
    assert resumed.marker and resumed.timestamp - alice_rtp.sent[held - 1].timestamp > 160

    # The older way to hold, the connection address 0.0.0.0; then inactive both ways.
    host, port = bob_rtp.address
    assert await bob.reinvite(leg, body=sdp_body("0.0.0.0", port)) == 200
    assert call.sending_to is None
    assert await bob.reinvite(leg, body=sdp_body(host, port, direction="inactive")) == 200
    assert call.sending_to is None and leg.sending_to is None


async def test_hangup_stops_the_audio_and_closes_both_sockets(uas: list[SimUA]) -> None:
    alice, _bob, call, leg = await talking(uas, bob_audio=Audio(Tone(seconds=1.0)))
    alice_rtp, bob_rtp = rtp(call), rtp(leg)
    await until(lambda: len(bob_rtp.received) > 2)
    await alice.hangup(call)
    async with asyncio.timeout(5):
        await leg.ended.wait()
    sent = len(alice_rtp.sent), len(bob_rtp.sent)
    await asyncio.sleep(0.06)
    assert (len(alice_rtp.sent), len(bob_rtp.sent)) == sent
    for side in (call, leg):
        assert side.sending_to is None
        assert rtp(side).transport.is_closing()
        assert rtp(side).transport.get_extra_info("socket").fileno() == -1
        assert side.received_payload()  # what arrived is still there to compare


async def test_many_calls_leave_no_socket_or_task_behind(uas: list[SimUA]) -> None:
    alice, bob = await pair(ua("alice", TONE), ua("bob", TONE))
    uas += [alice, bob]
    fds, tasks = open_fds(), len(asyncio.all_tasks())
    calls: list[SimCall] = []
    for n in range(40):
        call = alice.call("bob")
        async with asyncio.timeout(5):
            leg = await bob.incoming.get()
            await call.answered.wait()
        await until(leg.received_payload)
        if n % 2:
            await alice.hangup(call)
        else:
            await bob.hangup(leg)
        async with asyncio.timeout(5):
            await call.ended.wait()
            await leg.ended.wait()
        calls += [call, leg]
    await asyncio.sleep(0.05)
    assert open_fds() <= fds
    assert len(asyncio.all_tasks()) <= tasks
    assert all(rtp(c).transport.is_closing() for c in calls)


async def test_signalling_only_uas_open_no_socket_per_call(uas: list[SimUA]) -> None:
    alice, bob = await pair(ua("alice"), ua("bob"))
    uas += [alice, bob]
    fds = open_fds()
    call = alice.call("bob")
    async with asyncio.timeout(5):
        leg = await bob.incoming.get()
        await call.answered.wait()
    assert open_fds() == fds
    assert call.rtp is None and leg.rtp is None and call.received_payload() == b""
    assert call.request.body == alice._sdp() and call.remote_sdp == bob._sdp()
    await bob.hangup(leg)
