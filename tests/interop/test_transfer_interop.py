"""A real phone transferring a call: baresip, the agent at extension 1001, answers a carrier's
call and blind-transfers it (its `/transfer` command: RFC 3515 REFER) to extension 1002; the
caller ends up talking to 1002, in the same media session and recording."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from handlers.calls.anchoring import Anchoring
from handlers.ivr.prompts import PromptStore
from handlers.media.client import MediaProcess
from sim.media import Audio, Tone
from sim.sip.phone import Script
from tests.integration.test_calls import DID, Gateway, gw, wait
from tests.interop.test_sip_interop import BARESIP, BARESIP_CONFIG, free_port, registered_baresip
from tests.media.conftest import media

__all__ = ["gw", "media"]  # the fixtures

pytestmark = [pytest.mark.interop, pytest.mark.slow,
              pytest.mark.skipif(BARESIP is None,
                                 reason="baresip not installed (apt-get install baresip)")]


async def test_baresip_blind_transfers_a_call_by_refer_to_another_extension(
        gw: Gateway, media: MediaProcess, tmp_path: Path) -> None:
    prompts = PromptStore(tmp_path / "prompts")
    await asyncio.to_thread(prompts.prepare)
    await gw.start(anchoring=Anchoring(media, gw.api.context.pool,
                                       recordings_root=tmp_path / "rec", reserve=2,
                                       prompts=prompts), digest_algorithms=["MD5"])
    home = tmp_path / "baresip"
    home.mkdir()
    procs: list[asyncio.subprocess.Process] = []
    async with registered_baresip(gw, home, BARESIP_CONFIG.format(port=free_port()),
                                  procs=procs) as output:
        second = await gw.phone("1002", Script(audio=Audio(play=Tone())))
        carrier = await gw.carrier()
        carrier.script = Script(audio=Audio(play=Tone(frequencies=(1000.0,))))
        call = carrier.dial(DID, "01012345678")
        await wait(call.answered, timeout=10)
        info = await (await gw.tenant.call("GET", "/v1/extensions/1002")).json()
        [proc] = procs
        assert proc.stdin is not None
        proc.stdin.write(f"/transfer sip:1002@{info['sip_domain']}\n".encode())
        await proc.stdin.drain()
        try:
            taken = await asyncio.wait_for(second.incoming.get(), 10)
        except TimeoutError:
            pytest.fail(output.decode(errors="replace")[-4000:])
        await wait(taken.answered)
        await asyncio.sleep(1.0)
        [live] = (await (await gw.tenant.call("GET", "/v1/calls")).json())["items"]
        assert (live["state"], live["extension"], live["transfers"]) == \
            ("answered", "1002", ["1001"])
        assert taken.received_payload()  # the caller's audio reaches the new agent
        assert await carrier.hangup(call) == 200
    [record] = await gw.records()
    assert (record["extension"], record["class"]) == ("1002", "incoming")
