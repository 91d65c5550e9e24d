"""The gateway answering calls itself, end to end with a real caller: SIPp dials the DID from
the carrier's address and presses keys with the RFC 2833 captures it ships
(/usr/share/sip-tester/dtmf_2833_N.pcap); what SIPp receives is counted on the wire by a packet
socket (SIPp cannot tell). Outside business hours, and inside them with every agent on
do-not-disturb, the caller hears the callback IVR and leaves a number that the callback list
then shows; an agent blocking an abusive caller is hung up at once while the caller hears the
whole warning, then a BYE."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from handlers.calls.anchoring import Anchoring
from handlers.ivr.prompts import PromptStore
from handlers.media.client import MediaProcess
from sim.media import Audio, Tone
from sim.sip.phone import Script
from tests.integration.test_calls import DID, Gateway, gw
from tests.interop.sniff import can_sniff, rtp_to
from tests.interop.test_sip_interop import SCENARIOS, SIPP, free_port
from tests.media.conftest import media

__all__ = ["gw", "media"]  # the fixtures

DTMF_PCAPS = Path("/usr/share/sip-tester")
CALLER = "01055556666"

pytestmark = [pytest.mark.interop, pytest.mark.slow,
              pytest.mark.skipif(SIPP is None or not (DTMF_PCAPS / "dtmf_2833_1.pcap").exists(),
                                 reason="sipp not installed (apt-get install sip-tester)"),
              pytest.mark.skipif(not can_sniff(), reason="counting RTP on the wire needs root")]


async def ivr_gateway(gw: Gateway, media: MediaProcess, root: Path,
                      settings: dict[str, Any]) -> PromptStore:
    """The gateway with anchored calls, the default prompts and the tenant's `settings`."""
    resp = await gw.tenant.call("PATCH", "/v1/tenant/settings", json=settings)
    assert resp.status == 200, await resp.text()
    prompts = PromptStore(root / "prompts")
    await asyncio.to_thread(prompts.prepare)
    anchoring = Anchoring(media, gw.api.context.pool, recordings_root=root / "recordings",
                          reserve=2, prompts=prompts)
    await gw.start(anchoring=anchoring)
    return prompts


def closed_now() -> dict[str, Any]:
    """Business hours with a closure around this very moment."""
    now = datetime.now(UTC)
    return {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "opens": "00:00",
            "closes": "23:59",
            "closures": [{"starts": (now - timedelta(hours=1)).isoformat(),
                          "ends": (now + timedelta(hours=1)).isoformat(),
                          "reason": "test"}]}


def keys_xml(keys: list[tuple[float, str]]) -> str:
    """A pause and an RFC 2833 capture per key (seconds after the previous key)."""
    parts = []
    for after, key in keys:
        parts.append(f'  <pause milliseconds="{int(after * 1000)}"/>')
        parts.append(f'  <nop><action><exec play_pcap_audio="{DTMF_PCAPS}/dtmf_2833_{key}.pcap"/>'
                     f'</action></nop>')
    return "\n".join(parts)


async def sipp_caller(gw: Gateway, cwd: Path, keys: list[tuple[float, str]], media_port: int,
                      *, timeout: float = 90) -> tuple[int, str]:
    """SIPp from the carrier's address to the DID, pressing `keys`, until our BYE."""
    assert SIPP is not None
    template = (SCENARIOS / "uac_callback_ivr.xml").read_text()
    scenario = cwd / "caller.xml"
    scenario.write_text(template.replace("@KEYS@", keys_xml(keys)).replace("@CALLER@", CALLER))
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sf", str(scenario), f"{gw.address[0]}:{gw.address[1]}", "-s", DID,
        "-i", "127.0.0.2", "-p", str(free_port("127.0.0.2")), "-mp", str(media_port), "-m", "1",
        "-nostdin", "-timeout", str(int(timeout)), cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(timeout + 20):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")[-800:]


def menu_and_confirm(prompts: PromptStore) -> tuple[float, float]:
    """Seconds of the menu (announcement and choices) and of the read-back of CALLER."""
    menu = prompts.duration(None, "callback_closed") + prompts.duration(None, "callback_menu")
    confirm = (prompts.duration(None, "callback_number_is")
               + sum(prompts.duration(None, f"digit_{d}") for d in CALLER)
               + prompts.duration(None, "callback_confirm"))
    return menu, confirm


async def open_callbacks(gw: Gateway) -> list[dict[str, Any]]:
    resp = await gw.tenant.call("GET", "/v1/callbacks")
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


async def test_a_sipp_caller_outside_business_hours_leaves_a_callback_number(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    prompts = await ivr_gateway(gw, media, tmp_path, {
        "business_hours": closed_now(), "callback_on": ["closed"]})
    await gw.phone("1001")  # registered and available: closed all the same
    menu, confirm = menu_and_confirm(prompts)
    media_port = free_port("127.0.0.2")
    # "1" once the announcement and the menu were heard, "1" again after the read-back.
    with rtp_to(media_port) as seen:
        status, err = await sipp_caller(gw, tmp_path, [(menu + 1.5, "1"), (confirm + 1.5, "1")],
                                        media_port)
    assert status == 0, err
    # Every prompt played to its end reached SIPp: the menu's and the read-back's.
    assert seen.seconds() >= menu + confirm, (seen.seconds(), menu, confirm)
    markers = [p for p in seen.packets if p[1]]
    assert len(markers) >= 3  # one per prompt started: announcement, menu, read-back, ...

    [entry] = await open_callbacks(gw)
    assert (entry["number"], entry["caller"], entry["did"], entry["trigger"]) == \
        (CALLER, CALLER, DID, "closed")
    [record] = await gw.records()
    assert (record["class"], record["end_reason"]) == ("missed", "callback_requested")

    resp = await gw.tenant.call("POST", f"/v1/callbacks/{entry['id']}/complete")
    assert resp.status == 200, await resp.text()
    assert await open_callbacks(gw) == []


async def test_inside_hours_with_every_agent_on_dnd_the_caller_reaches_the_ivr(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    prompts = await ivr_gateway(gw, media, tmp_path, {"callback_on": ["no_agent"]})
    phone = await gw.phone("1001")
    resp = await gw.tenant.call("PUT", "/v1/agents/1001/presence", json={"presence": "dnd"})
    assert resp.status == 200, await resp.text()
    busy = prompts.duration(None, "callback_busy") + prompts.duration(None, "callback_menu")
    _, confirm = menu_and_confirm(prompts)
    media_port = free_port("127.0.0.2")
    with rtp_to(media_port) as seen:
        status, err = await sipp_caller(gw, tmp_path, [(busy + 1.5, "1"), (confirm + 1.5, "1")],
                                        media_port)
    assert status == 0, err
    assert seen.seconds() >= busy + confirm
    assert phone.incoming.empty()  # the agent on DND was never rung
    [entry] = await open_callbacks(gw)
    assert (entry["number"], entry["trigger"]) == (CALLER, "no_agent")
    resp = await gw.tenant.call("POST", "/v1/callbacks/complete", json={"number": CALLER})
    assert resp.status == 200, await resp.text()
    assert await open_callbacks(gw) == []


async def live_call(gw: Gateway, state: str) -> dict[str, Any]:
    async with asyncio.timeout(15):
        while True:
            resp = await gw.tenant.call("GET", "/v1/calls")
            calls = (await resp.json())["items"]
            if calls and calls[0]["state"] == state:
                return dict(calls[0])
            await asyncio.sleep(0.05)


async def test_abuse_block_frees_the_agent_at_once_and_the_caller_hears_the_whole_warning(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    prompts = await ivr_gateway(gw, media, tmp_path, {"recording_policy": "all"})
    agent = await gw.phone("1001", Script(audio=Audio(play=Tone())))
    warning = prompts.duration(None, "abuse_warning")
    media_port = free_port("127.0.0.2")
    with rtp_to(media_port) as seen:
        caller = asyncio.create_task(sipp_caller(gw, tmp_path, [], media_port))
        call = await live_call(gw, "answered")
        [agent_call] = agent.calls.values()
        await asyncio.sleep(1.0)  # a moment of conversation
        mark = len(seen.packets)
        resp = await gw.tenant.call("POST", f"/v1/calls/{call['id']}/abuse-block")
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["state"] == "blocking"
        async with asyncio.timeout(5):
            await agent_call.ended.wait()  # the agent is free at once...
        assert not caller.done()  # ...while the caller still hears the warning
        again = await gw.tenant.call("POST", f"/v1/calls/{call['id']}/abuse-block")
        assert again.status == 202  # idempotent
        status, err = await caller
    assert status == 0, err  # SIPp got its BYE
    after = seen.packets[mark:]
    heard = sum(len(p[4]) for p in after if p[0] in (0, 8)) / 8000
    assert heard >= warning, (heard, warning)
    [record] = await gw.records()
    assert (record["class"], record["end_reason"], record["hangup_by"]) == \
        ("incoming", "abuse_blocked", "system")
    gone = await gw.tenant.call("POST", f"/v1/calls/{call['id']}/abuse-block")
    assert gone.status == 404
    # The recording went on to the end, and says how the call ended.
    async with asyncio.timeout(15):
        while True:
            found = (await (await gw.tenant.call("GET", "/v1/recordings")).json())["items"]
            if found and found[0]["status"] != "recording":
                break
            await asyncio.sleep(0.1)
    [rec] = found
    assert (rec["status"], rec["call_id"], rec["call_end_reason"]) == \
        ("ok", call["id"], "abuse_blocked")
    assert rec["duration_seconds"] >= warning


async def test_abuse_block_on_a_ringing_call_is_refused_with_its_code(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    await ivr_gateway(gw, media, tmp_path, {})
    await gw.phone("1001", Script(answer_after=30.0))
    media_port = free_port("127.0.0.2")
    caller = asyncio.create_task(sipp_caller(gw, tmp_path, [], media_port, timeout=20))
    try:
        call = await live_call(gw, "ringing")
        resp = await gw.tenant.call("POST", f"/v1/calls/{call['id']}/abuse-block")
        assert resp.status == 409
        assert (await resp.json())["code"] == "call_not_answered"
        hang = await gw.tenant.call("POST", f"/v1/calls/{call['id']}/hangup")
        assert hang.status == 202
    finally:
        with contextlib.suppress(Exception):
            await caller
