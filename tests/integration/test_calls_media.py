"""Calls anchored in the media process, with simulated phones that send and receive real RTP:
both sides hear each other through telgate's ports (never end to end), a hold in the middle
keeps one recording as long as the call, the tenant's recording policy decides what is
recorded, and a silent call ends with its reason."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from handlers.calls.anchoring import Anchoring
from handlers.ivr.prompts import PromptStore
from handlers.media import recordings
from handlers.media.client import MediaProcess, MediaSettings
from protocols.rtp.g711 import Codec, decode
from protocols.rtp.wav import read_wav
from sim.media import Audio, Tone
from sim.sip.phone import Script
from tests.integration.test_calls import DID, Gateway, gw, wait
from tests.media.conftest import media, port_slice

__all__ = ["gw", "media"]  # the fixtures

CARRIER_TONE = Tone(seconds=2.0, frequencies=(1000.0,), on=0.4, off=0.1)
PHONE_TONE = Tone(seconds=2.0, frequencies=(440.0,), on=0.4, off=0.1)


async def anchored(gw: Gateway, media: MediaProcess, root: Path, policy: str = "all", *,
                   prompts: bool = False, reserve: int = 2) -> Anchoring:
    """The gateway with calls anchored in `media` under `policy`; with `prompts`, the shipped
    prompts (hold music) prepared under `root`/prompts."""
    resp = await gw.tenant.call("PATCH", "/v1/tenant/settings", json={"recording_policy": policy})
    assert resp.status == 200, await resp.text()
    store = None
    if prompts:
        store = PromptStore(root / "prompts")
        await asyncio.to_thread(store.prepare)
    anchoring = Anchoring(media, gw.api.context.pool, recordings_root=root, reserve=reserve,
                          prompts=store)
    await gw.start(anchoring=anchoring)
    return anchoring


async def recorded(gw: Gateway, expected: int = 1) -> list[recordings.Recording]:
    now = datetime.now(UTC)
    async with asyncio.timeout(15):
        while True:
            async with gw.api.context.pool.acquire() as conn:
                found = await recordings.search(conn, gw.tenant.id, since=now - timedelta(hours=1),
                                                until=now + timedelta(hours=1), include_internal=True)
            if len(found) >= expected and all(r.status != "recording" for r in found):
                return found
            await asyncio.sleep(0.05)


def strongest(pcm: np.ndarray, candidates: tuple[float, ...]) -> float:
    """Which of `candidates` (Hz) carries the most energy in 8 kHz `pcm` (one DFT bin each)."""
    samples = pcm.astype(np.float64)
    n = np.arange(len(samples))
    power = {f: abs(np.sum(samples * np.exp(-2j * np.pi * f * n / 8000))) for f in candidates}
    return max(power, key=lambda f: power[f])


async def test_both_sides_hear_each_other_through_our_ports_and_a_hold_keeps_one_recording(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    await anchored(gw, media, tmp_path / "rec")
    phone = await gw.phone("1001", Script(audio=Audio(play=PHONE_TONE)))
    carrier = await gw.carrier()
    carrier.script = Script(audio=Audio(play=CARRIER_TONE))
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    [answered] = [c for c in phone.calls.values()]
    await wait(answered.answered)
    # Neither phone sends to the other: both were given telgate's address and ports.
    assert call.sending_to is not None and answered.sending_to is not None
    assert call.sending_to[1] != answered.rtp.address[1]  # type: ignore[union-attr]
    assert answered.sending_to[1] != call.rtp.address[1]  # type: ignore[union-attr]
    await asyncio.sleep(1.0)
    assert await phone.reinvite(answered, direction="sendonly") == 200  # the agent holds
    await asyncio.sleep(0.6)
    assert await phone.reinvite(answered) == 200
    await asyncio.sleep(1.0)
    assert await carrier.hangup(call) == 200

    carrier_heard, phone_heard = call.received_payload(), answered.received_payload()
    assert len(carrier_heard) > 8000 and len(phone_heard) > 8000
    assert strongest(decode(call.codec or Codec.PCMU, carrier_heard), (440.0, 1000.0)) == 440.0
    assert strongest(decode(answered.codec or Codec.PCMU, phone_heard), (440.0, 1000.0)) == 1000.0
    # What the carrier sent reached the phone unchanged (same codec both sides: no transcoding).
    assert phone_heard[:4000] in call.sent_payload()

    [record] = await gw.records()
    [rec] = await recorded(gw)
    assert rec.status == "ok" and rec.customer == "01012345678" and rec.extension == "1001"
    wav = read_wav(await asyncio.to_thread(Path(rec.path).read_bytes))
    left, right = wav.data[0::2], wav.data[1::2]
    assert abs(len(left) / 8000 - record["talk_seconds"]) < 0.1, (len(left) / 8000, record)
    codec = Codec.from_name(rec.codec)
    assert strongest(decode(codec, left), (440.0, 1000.0)) == 1000.0  # customer: the carrier
    assert strongest(decode(codec, right), (440.0, 1000.0)) == 440.0  # agent: the phone


async def test_the_recording_policy_decides_which_calls_are_recorded(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    await anchored(gw, media, tmp_path / "rec", policy="exclude_internal")
    audio = Script(audio=Audio(play=PHONE_TONE))
    first = await gw.phone("1001", audio)
    second = await gw.phone("1002", audio)
    internal = second.call("1001")
    await wait(internal.answered)
    await asyncio.sleep(0.3)
    assert await second.hangup(internal) == 200
    carrier = await gw.carrier()
    carrier.script = Script(audio=Audio(play=CARRIER_TONE))
    outside = carrier.dial(DID, "01099998888")
    await wait(outside.answered)
    await asyncio.sleep(0.3)
    assert await carrier.hangup(outside) == 200

    records = await gw.records(2)
    assert sorted(r["internal"] for r in records) == [False, True]
    [rec] = await recorded(gw)  # only the call from outside
    assert rec.customer == "01099998888" and not rec.internal
    # Switched off: the next call is not recorded, with no restart.
    resp = await gw.tenant.call("PATCH", "/v1/tenant/settings", json={"recording_policy": "none"})
    assert resp.status == 200
    await asyncio.sleep(0.2)  # the driver re-reads the setting on its own task
    again = carrier.dial(DID, "01077776666")
    await wait(again.answered)
    assert await carrier.hangup(again) == 200
    await gw.records(3)
    assert len(await recorded(gw)) == 1
    del first


async def test_a_call_nobody_speaks_on_ends_with_rtp_timeout(gw: Gateway, tmp_path: Path) -> None:
    low, high = port_slice(40)
    quiet = MediaProcess(MediaSettings(control_path=tmp_path / "m.sock", recordings=tmp_path / "rec",
                                       port_low=low, port_high=high, timeout=1.0))
    await quiet.start()
    try:
        await anchored(gw, quiet, tmp_path / "rec")
        await gw.phone("1001")  # signalling only: no RTP either way
        carrier = await gw.carrier()
        call = carrier.dial(DID, "01012345678")
        await wait(call.answered)
        await wait(call.ended, timeout=10)  # telgate hangs up
        [record] = await gw.records()
        assert record["end_reason"] == "rtp_timeout" and record["hangup_by"] == "system"
        [rec] = await recorded(gw)
        assert rec.status == "ok"  # a silent call is still a complete (silent) recording
    finally:
        if gw.server is not None:
            await gw.server.stop()
            gw.server = None
        await quiet.stop()


async def test_a_media_process_killed_mid_call_ends_it_keeps_its_audio_and_comes_back(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    anchoring = await anchored(gw, media, tmp_path / "rec")
    phone = await gw.phone("1001", Script(audio=Audio(play=PHONE_TONE)))
    carrier = await gw.carrier()
    carrier.script = Script(audio=Audio(play=CARRIER_TONE))
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    await asyncio.sleep(2.5)  # more than a second of audio: the header was rewritten since
    assert media.pid is not None
    os.kill(media.pid, signal.SIGKILL)
    await wait(call.ended, timeout=10)  # telgate hangs up: the call has no media any more
    [record] = await gw.records()
    assert record["end_reason"] == "media_lost" and record["hangup_by"] == "system"
    [rec] = await recorded(gw)
    assert rec.status == "interrupted" and rec.bytes is not None and rec.sha256 is not None
    wav = read_wav(await asyncio.to_thread(Path(rec.path).read_bytes))
    assert len(wav.data) / 2 / 8000 >= 1.0  # it plays up to about its last second

    # A new media process took over: the next call is anchored and recorded again.
    for _ in range(200):
        if anchoring.restarts and anchoring.reserved:
            break
        await asyncio.sleep(0.05)
    assert anchoring.restarts == 1 and anchoring.reserved
    again = carrier.dial(DID, "01012345678")
    await wait(again.answered)
    await asyncio.sleep(0.5)
    assert await carrier.hangup(again) == 200
    found = await recorded(gw, 2)
    assert sorted(r.status for r in found) == ["interrupted", "ok"]
    del phone


async def test_a_held_caller_hears_the_tenants_hold_music_from_the_phone_or_the_api(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    anchoring = await anchored(gw, media, tmp_path / "rec", prompts=True)
    assert anchoring.prompts is not None
    music = anchoring.prompts.path(None, "hold_music", Codec.PCMU).read_bytes()
    phone = await gw.phone("1001", Script(audio=Audio(play=PHONE_TONE)))
    carrier = await gw.carrier()
    carrier.script = Script(audio=Audio(play=CARRIER_TONE))
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    [answered] = [c for c in phone.calls.values()]
    await wait(answered.answered)
    await asyncio.sleep(0.5)

    # The agent's phone holds the caller: the caller hears music, not the agent's tone.
    before = len(call.received_payload())
    assert await phone.reinvite(answered, direction="sendonly") == 200
    await asyncio.sleep(1.5)
    assert music[800:2400] in call.received_payload()[before:]
    assert await phone.reinvite(answered) == 200
    await asyncio.sleep(0.5)

    # The CRM holds the caller through the API: the same, with a re-INVITE from us.
    [live] = (await (await gw.tenant.call("GET", "/v1/calls")).json())["items"]
    resp = await gw.tenant.call("POST", f"/v1/calls/{live['id']}/hold")
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["held"] == ["a"]
    before = len(call.received_payload())
    await asyncio.sleep(1.5)
    assert music[800:2400] in call.received_payload()[before:]
    resp = await gw.tenant.call("POST", f"/v1/calls/{live['id']}/unhold")
    assert resp.status == 202 and (await resp.json())["held"] == []
    await asyncio.sleep(0.5)
    assert await carrier.hangup(call) == 200
    [rec] = await recorded(gw)
    assert rec.status == "ok"  # one recording through both holds


async def test_a_blind_transfer_connects_the_caller_to_the_second_agent_in_one_recording(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    await anchored(gw, media, tmp_path / "rec", prompts=True)
    first = await gw.phone("1001", Script(audio=Audio(play=PHONE_TONE)))
    second_tone = Tone(seconds=2.0, frequencies=(2000.0,), on=0.4, off=0.1)
    second = await gw.phone("1002", Script(answer_after=0.5, audio=Audio(play=second_tone)))
    carrier = await gw.carrier()
    carrier.script = Script(audio=Audio(play=CARRIER_TONE))
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    [agent] = list(first.calls.values())
    await wait(agent.answered)
    await asyncio.sleep(0.5)

    [live] = (await (await gw.tenant.call("GET", "/v1/calls")).json())["items"]
    resp = await gw.tenant.call("POST", f"/v1/calls/{live['id']}/transfer", json={"to": "1002"})
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["state"] == "transferring"
    await wait(agent.ended)  # the first agent is free at once
    [taken] = list(second.calls.values())
    await wait(taken.answered)
    mark = len(call.received_payload())
    await asyncio.sleep(1.5)
    # The caller now hears the second agent (2 kHz), and the second agent hears the caller.
    heard = decode(Codec.PCMU, call.received_payload()[mark:])
    assert strongest(heard, (440.0, 1000.0, 2000.0)) == 2000.0
    assert strongest(decode(Codec.PCMU, taken.received_payload()[-4000:]),
                     (440.0, 1000.0, 2000.0)) == 1000.0
    [moved] = (await (await gw.tenant.call("GET", "/v1/calls")).json())["items"]
    assert (moved["state"], moved["extension"], moved["transfers"]) == ("answered", "1002", ["1001"])
    assert await carrier.hangup(call) == 200
    [record] = await gw.records()
    assert (record["extension"], record["class"], record["transfers"]) == \
        ("1002", "incoming", ["1001", "1002"])
    [rec] = await recorded(gw)
    assert rec.status == "ok" and str(rec.call_id) == record["id"]  # one file through it all


async def test_click_to_call_rings_the_agent_then_the_customer_and_both_hear_each_other(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    from config.sip import TrunkConfig
    from protocols.sip.transaction import Peer
    from tests.integration.test_calls import next_incoming

    resp = await gw.tenant.call("POST", "/v1/sender-numbers", json={"number": "0212345678"})
    assert resp.status == 201
    carrier = await gw.carrier()  # the customer's side, behind the trunk
    carrier.script = Script(answer_after=0.3, audio=Audio(play=CARRIER_TONE))
    await gw.start(anchoring=Anchoring(media, gw.api.context.pool, recordings_root=tmp_path,
                                       reserve=2),
                   trunks=[TrunkConfig(name="carrier", addresses=["127.0.0.2"],
                                       host="127.0.0.2", port=carrier.port)])
    carrier.gateway = Peer("UDP", *gw.address)
    await gw.extension("1001", rid="02-1234-5678", use_rid=True)
    agent = await gw.phone("1001", Script(answer_after=0.3, audio=Audio(play=PHONE_TONE)),
                           create=False)
    resp = await gw.tenant.call("POST", "/v1/calls", json={"extension": "1001",
                                                           "to": "010-5555-6666"})
    assert resp.status == 202, await resp.text()
    placed = await resp.json()
    assert (placed["direction"], placed["callee"], placed["caller"]) == \
        ("outgoing", "01055556666", "0212345678")
    [rung] = list(agent.calls.values())  # the agent first...
    assert rung.request.from_.uri.user == "01055556666"  # ...seeing whom it will reach
    out = await next_incoming(carrier)  # then the customer, with the RID presented
    assert out.request.from_.uri.user == "0212345678"
    await wait(out.answered)
    await asyncio.sleep(1.5)
    assert strongest(decode(Codec.PCMU, out.received_payload()[-4000:]),
                     (440.0, 1000.0)) == 440.0  # the customer hears the agent
    assert strongest(decode(Codec.PCMU, rung.received_payload()[-4000:]),
                     (440.0, 1000.0)) == 1000.0  # and the agent the customer
    assert await agent.hangup(rung) == 200
    await wait(out.ended)
    [record] = await gw.records()
    assert (record["class"], record["extension"], record["callee"]) == \
        ("outgoing", "1001", "01055556666")


async def test_click_to_call_with_an_unregistered_caller_id_is_refused(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    await gw.start(anchoring=Anchoring(media, gw.api.context.pool, recordings_root=tmp_path,
                                       reserve=2))
    await gw.phone("1001")
    resp = await gw.tenant.call("POST", "/v1/calls", json={"extension": "1001",
                                                           "to": "01055556666",
                                                           "caller_id": "0299990000"})
    assert resp.status == 422
    problem = await resp.json()
    assert (problem["code"], problem["field"]) == ("sender_not_registered", "caller_id")


async def test_a_call_ringing_at_one_agent_is_picked_up_by_another_through_the_api(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    await anchored(gw, media, tmp_path / "rec")
    ringing = await gw.phone("1001", Script(answer_after=30.0, audio=Audio(play=PHONE_TONE)))
    picker_tone = Tone(seconds=2.0, frequencies=(2000.0,), on=0.4, off=0.1)
    picker = await gw.phone("1002", Script(answer_after=0.2, audio=Audio(play=picker_tone)))
    carrier = await gw.carrier()
    carrier.script = Script(audio=Audio(play=CARRIER_TONE))
    call = carrier.dial(DID, "01012345678")
    [rung] = [await asyncio.wait_for(ringing.incoming.get(), 5)]
    [live] = (await (await gw.tenant.call("GET", "/v1/calls")).json())["items"]
    resp = await gw.tenant.call("POST", f"/v1/calls/{live['id']}/pickup", json={"extension": "1002"})
    assert resp.status == 202, await resp.text()
    await wait(rung.ended)  # 1001 stops ringing
    await wait(call.answered)
    [taken] = list(picker.calls.values())
    await asyncio.sleep(1.5)
    assert strongest(decode(Codec.PCMU, call.received_payload()[-4000:]),
                     (440.0, 1000.0, 2000.0)) == 2000.0  # the caller talks to 1002
    assert taken.received_payload()
    assert await carrier.hangup(call) == 200
    [record] = await gw.records()
    assert (record["extension"], record["class"]) == ("1002", "incoming")
    [rec] = await recorded(gw)
    assert rec.status == "ok" and rec.extension == "1002"  # picked up before any answer


async def test_an_attended_transfer_through_the_api_joins_caller_and_colleague_in_one_recording(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    await anchored(gw, media, tmp_path / "rec", prompts=True, reserve=3)
    agent = await gw.phone("1001", Script(audio=Audio(play=PHONE_TONE)))
    colleague_tone = Tone(seconds=2.0, frequencies=(2000.0,), on=0.4, off=0.1)
    colleague = await gw.phone("1002", Script(answer_after=0.2, audio=Audio(play=colleague_tone)))
    carrier = await gw.carrier()
    carrier.script = Script(audio=Audio(play=CARRIER_TONE))
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    [answered] = list(agent.calls.values())
    await wait(answered.answered)
    assert await agent.reinvite(answered, direction="sendonly") == 200  # the caller waits
    consult = agent.call("1002")
    await wait(consult.answered)
    live = (await (await gw.tenant.call("GET", "/v1/calls")).json())["items"]
    [first] = [c for c in live if c["direction"] == "incoming"]
    [second] = [c for c in live if c["direction"] == "internal"]
    resp = await gw.tenant.call("POST", f"/v1/calls/{first['id']}/transfer",
                                json={"consult_call_id": second["id"]})
    assert resp.status == 202, await resp.text()
    await wait(answered.ended)  # the agent leaves both calls
    await wait(consult.ended)
    await asyncio.sleep(1.5)
    heard = decode(Codec.PCMU, call.received_payload()[-4000:])
    assert strongest(heard, (440.0, 1000.0, 2000.0)) == 2000.0  # the caller hears 1002
    [taken] = list(colleague.calls.values())
    assert strongest(decode(Codec.PCMU, taken.received_payload()[-4000:]),
                     (440.0, 1000.0, 2000.0)) == 1000.0  # and 1002 the caller
    assert await carrier.hangup(call) == 200
    records = {r["direction"]: r for r in await gw.records(2)}
    assert (records["incoming"]["extension"], records["internal"]["end_reason"]) == \
        ("1002", "transferred")
    assert records["incoming"]["transfers"] == ["1001", "1002"]
    recs = await recorded(gw, 2)
    [main] = [r for r in recs if str(r.call_id) == records["incoming"]["id"]]
    # One file; the index names the agent who answered (the call record names the last).
    assert main.status == "ok" and main.extension == "1001"


async def test_a_phone_dialling_the_pickup_code_takes_the_call_ringing_at_another(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    await anchored(gw, media, tmp_path / "rec")
    ringing = await gw.phone("1001", Script(answer_after=30.0, audio=Audio(play=PHONE_TONE)))
    picker_tone = Tone(seconds=2.0, frequencies=(2000.0,), on=0.4, off=0.1)
    picker = await gw.phone("1002", Script(audio=Audio(play=picker_tone)))
    early = picker.call("*8")
    await wait(early.ended)
    assert early.final_status == 404, early.final_status  # nothing rings yet
    carrier = await gw.carrier()
    carrier.script = Script(audio=Audio(play=CARRIER_TONE))
    call = carrier.dial(DID, "01012345678")
    rung = await asyncio.wait_for(ringing.incoming.get(), 5)
    taking = picker.call("**1001")  # directed pickup of the call ringing at 1001
    await wait(taking.answered)
    await wait(call.answered)
    await wait(rung.ended)  # 1001 stops ringing
    await asyncio.sleep(1.5)
    assert strongest(decode(Codec.PCMU, call.received_payload()[-4000:]),
                     (440.0, 1000.0, 2000.0)) == 2000.0  # the caller talks to 1002
    assert strongest(decode(Codec.PCMU, taking.received_payload()[-4000:]),
                     (440.0, 1000.0, 2000.0)) == 1000.0
    assert await picker.hangup(taking) == 200
    await wait(call.ended)
    [record] = await gw.records()
    assert (record["extension"], record["class"]) == ("1002", "incoming")
