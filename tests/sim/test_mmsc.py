"""The MMSC simulator as tests and the demo use it: it checks what a carrier's MMSC checks,
answers with message ids, pushes delivery reports (retrying a failing receiver), and
misbehaves on request. Driven through our MM7 client over real HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from protocols.mm7 import codec
from protocols.mm7.client import Mm7Client, Mm7HttpError
from protocols.mm7.messages import (
    Address,
    CancelReq,
    CancelRsp,
    Decoded,
    DeliveryReportReq,
    DeliveryReportRsp,
    Part,
    ReplaceReq,
    ReplaceRsp,
    Status,
    SubmitReq,
    SubmitRsp,
)
from protocols.mm7.status import MMStatus
from protocols.mm7.versions import SchemaVersion
from sim.mmsc import MmscConfig, MmscSimulator
from sim.mmsc.__main__ import build_parser, config_from_args, main

JPEG = b"\xff\xd8\xff\xe0" + b"j" * 1000 + b"\xff\xd9"
TEXT = Part("text/plain", "안녕하세요".encode("euc-kr"), "t", "ks_c_5601-1987")


def submit(*content: Part, tid: str = "t1", to: str = "01012345678",
           dr: bool | None = True) -> SubmitReq:
    return SubmitReq(tid, "VASP", None, (Address(to),), Address("0212345678"),
                     delivery_report=dr, content=content or (Part("image/jpeg", JPEG, "i"), TEXT))


@pytest.fixture
async def mmsc() -> AsyncIterator[MmscSimulator]:
    async with MmscSimulator(MmscConfig(accounts={"u": "p"}, vasp_ids=frozenset({"VASP"}),
                                        max_image_bytes=2000)) as sim:
        yield sim


def client(sim: MmscSimulator, password: str = "p",
           schema: SchemaVersion = SchemaVersion.REL_5_MM7_1_2) -> Mm7Client:
    return Mm7Client(sim.url, schema=schema, username="u", password=password, timeout=5)


async def status_of(c: Mm7Client, request: SubmitReq | CancelReq | ReplaceReq) -> int:
    answer = (await c.send(request)).message
    assert isinstance(answer, SubmitRsp | CancelRsp | ReplaceRsp)
    return answer.status.code


async def test_accepts_a_submit_and_keeps_its_parts_as_sent(mmsc: MmscSimulator) -> None:
    c = client(mmsc, schema=SchemaVersion.REL_6_MM7_1_4)
    answer = (await c.send(submit())).message
    await c.close()
    assert isinstance(answer, SubmitRsp) and answer.status.code == 1000 and answer.message_id
    (got,) = mmsc.received
    assert got.message_id == answer.message_id and got.schema is SchemaVersion.REL_6_MM7_1_4
    assert [p.data for p in got.request.content] == [JPEG, TEXT.data]
    assert got.request.content[1].text() == "안녕하세요"


@pytest.mark.parametrize(("request_", "code"), [
    (submit(Part("image/jpeg", b"GIF89a", "i")), 2004),
    (submit(Part("image/jpeg", JPEG * 3, "i")), 2004),
    (submit(*(Part("image/jpeg", JPEG, f"i{n}") for n in range(4))), 2004),
    (submit(Part("video/mp4", b"x", "v")), 2004),
    (SubmitReq("t", "OTHER", None, (Address("010"),), content=(TEXT,)), 4001),
])
async def test_refuses_what_a_carrier_refuses(mmsc: MmscSimulator, request_: SubmitReq,
                                              code: int) -> None:
    c = client(mmsc)
    assert await status_of(c, request_) == code
    await c.close()
    assert mmsc.received == []


async def test_wrong_credentials_get_401(mmsc: MmscSimulator) -> None:
    c = client(mmsc, password="nope")
    with pytest.raises(Mm7HttpError) as caught:
        await c.send(submit())
    await c.close()
    assert caught.value.http_status == 401 and not caught.value.in_doubt


async def test_cancel_and_replace_act_on_accepted_messages(mmsc: MmscSimulator) -> None:
    c = client(mmsc)
    answer = (await c.send(submit(dr=False))).message
    assert isinstance(answer, SubmitRsp) and answer.message_id
    new = Part("text/plain", b"replaced", "n", "us-ascii")
    assert await status_of(c, ReplaceReq("r", "VASP", None, answer.message_id,
                                         content=(new,))) == 1000
    assert mmsc.received[0].request.content == (new,)
    assert await status_of(c, CancelReq("c", "VASP", None, answer.message_id)) == 1000
    assert await status_of(c, CancelReq("c2", "VASP", None, answer.message_id)) == 2005
    assert await status_of(c, CancelReq("c3", "VASP", None, "nope")) == 2005
    await c.close()


async def test_throttling_answers_4006_past_the_rate() -> None:
    async with MmscSimulator(MmscConfig(throttle_tps=1)) as sim:
        c = Mm7Client(sim.url, schema=SchemaVersion.REL_5_MM7_1_3)
        codes = [await status_of(c, submit(tid=f"t{i}")) for i in range(3)]
        await c.close()
    assert codes[0] == 1000 and 4006 in codes[1:]


async def test_reports_are_pushed_with_the_outcome_mix_and_retried_until_taken() -> None:
    taken: list[DeliveryReportReq] = []
    refusals = 2

    async def receiver(request: web.Request) -> web.Response:
        nonlocal refusals
        if refusals:
            refusals -= 1
            return web.Response(status=503)
        d = codec.decode(request.headers["Content-Type"], await request.read())
        assert isinstance(d, Decoded) and isinstance(d.message, DeliveryReportReq)
        assert request.headers["Authorization"].startswith("Basic ")
        taken.append(d.message)
        rsp = DeliveryReportRsp(d.message.transaction_id, Status(1000))
        enc = codec.encode(rsp, SchemaVersion.REL_5_MM7_1_2)
        return web.Response(body=enc.body, headers=enc.headers)

    app = web.Application()
    app.router.add_post("/dr", receiver)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    cfg = MmscConfig(report_url=f"http://127.0.0.1:{port}/dr", report_username="r",
                     report_password="s", outcomes={"Expired": 1})
    try:
        async with MmscSimulator(cfg) as sim:
            c = Mm7Client(sim.url, schema=SchemaVersion.REL_5_MM7_1_2)
            answer = (await c.send(submit())).message
            await c.close()
            async with asyncio.timeout(10):
                await sim.reports_settled()
            assert sim.stats["report_retries"] == 2 and sim.stats["reports_sent"] == 1
    finally:
        await runner.cleanup()
    assert isinstance(answer, SubmitRsp)
    (report,) = taken
    assert report.message_id == answer.message_id and report.mm_status is MMStatus.EXPIRED
    assert report.recipient.value == "01012345678"


def test_flags_map_onto_the_simulator_configuration() -> None:
    cfg = config_from_args(build_parser().parse_args([
        "--port", "0", "--account", "a:b:c", "--vasp-id", "V1", "--report-url", "http://x/dr",
        "--report-account", "r:s", "--outcomes", "retrieved=0.9,Rejected=0.1",
        "--timeout-rate", "0.1", "--throttle-tps", "50", "--max-image-bytes", "1000"]))
    assert cfg.accounts == {"a": "b:c"} and cfg.vasp_ids == {"V1"}
    assert (cfg.report_username, cfg.report_password) == ("r", "s")
    assert cfg.outcomes == {"Retrieved": 0.9, "Rejected": 0.1}
    assert (cfg.timeout_rate, cfg.throttle_tps, cfg.max_image_bytes) == (0.1, 50.0, 1000)


def test_bad_arguments_exit_with_status_2() -> None:
    assert main(["--outcomes", "Eaten=1"]) == 2
    assert main(["--account", "nocolon"]) == 2
    assert main(["--http500-rate", "2"]) == 2


async def test_cli_serves_mm7_until_terminated() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.mmsc", "--port", "0", stdout=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(15):
            assert proc.stdout is not None
            hello = json.loads(await proc.stdout.readline())
            assert hello["event"] == "mmsc_listening"
            c = Mm7Client(hello["url"], schema=SchemaVersion.REL_5_MM7_1_0)
            assert await status_of(c, submit(dr=False)) == 1000
            await c.close()
            proc.send_signal(signal.SIGTERM)
            bye = json.loads(await proc.stdout.readline())
            assert bye["event"] == "mmsc_stopped" and bye["accepted"] == 1
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
