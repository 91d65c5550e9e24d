"""Our ESME client against the SMSC simulator over real TCP on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from protocols.smpp.client import (
    BindError,
    ConnectionClosedError,
    RequestTimeout,
    SmppClient,
    connect_with_backoff,
)
from protocols.smpp.constants import CommandStatus, DataCoding, MessageState, Tag
from protocols.smpp.pdu import SubmitSm, SubmitSmResp, Tlv
from protocols.smpp.receipt import message_ids_match
from protocols.smpp.session import BindMode, DeliverSmReceived, Event, SessionConfig
from protocols.smpp.text import decode_text
from protocols.smpp.throttle import Backoff
from sim.smsc import MessageIdFormat, SmscConfig, SmscSimulator

S = CommandStatus
ACCOUNT = {"portal": "secret"}
LOGIN = SessionConfig(system_id="portal", password="secret", window=50)


def message(text: str = "안녕하세요 고객님", receipt: bool = True) -> SubmitSm:
    return SubmitSm(
        source_addr="15881234",
        destination_addr="01012345678",
        data_coding=DataCoding.KSC5601,
        registered_delivery=1 if receipt else 0,
        short_message=text.encode("cp949"),
        tlvs=(Tlv.u16(Tag.USER_MESSAGE_REFERENCE, 4242),),
    )


@asynccontextmanager
async def bound(
    smsc: SmscSimulator, config: SessionConfig = LOGIN
) -> AsyncIterator[tuple[SmppClient, asyncio.Queue[Event]]]:
    inbox: asyncio.Queue[Event] = asyncio.Queue()
    client = SmppClient(config, on_event=inbox.put_nowait)
    await client.connect("127.0.0.1", smsc.port)
    try:
        yield client, inbox
    finally:
        await client.close(unbind_wait=1.0)


async def next_deliver(inbox: asyncio.Queue[Event]) -> DeliverSmReceived:
    while True:
        event = await inbox.get()
        if isinstance(event, DeliverSmReceived):
            return event


async def test_bind_with_a_wrong_password_is_refused_as_invalid_password() -> None:
    async with asyncio.timeout(5), SmscSimulator(SmscConfig(accounts=ACCOUNT)) as smsc:
        client = SmppClient(SessionConfig(system_id="portal", password="guess"))
        with pytest.raises(BindError) as refused:
            await client.connect("127.0.0.1", smsc.port)
        assert refused.value.command_status == S.ESME_RINVPASWD
        assert smsc.bound_system_ids == []


async def test_submitted_message_is_recorded_as_sent_and_its_receipt_comes_back() -> None:
    config = SmscConfig(accounts=ACCOUNT, receipt_delay_ms=20)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc) as (client, inbox):
        resp = await client.submit(message())
        assert isinstance(resp, SubmitSmResp) and resp.command_status == S.ESME_ROK
        (record,) = smsc.submits
        assert (record.message_id, record.source_addr, record.destination_addr) == (
            resp.message_id,
            "15881234",
            "01012345678",
        )
        assert (record.text, record.data_coding) == ("안녕하세요 고객님", DataCoding.KSC5601)
        assert record.tlvs == {Tag.USER_MESSAGE_REFERENCE: (4242).to_bytes(2, "big")}
        receipt = await next_deliver(inbox)
        assert receipt.receipt is not None
        assert (receipt.receipt.message_id, receipt.receipt.stat) == (resp.message_id, "DELIVRD")
        assert receipt.pdu.destination_addr == "15881234"


async def test_outcome_mix_produces_failure_receipts_with_state_and_network_error() -> None:
    config = SmscConfig(accounts=ACCOUNT, outcomes={"UNDELIV": 1.0})
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc) as (client, inbox):
        await client.submit(message())
        event = await next_deliver(inbox)
        assert event.receipt is not None and event.receipt.state is MessageState.UNDELIVERABLE
        assert event.pdu.message_state == MessageState.UNDELIVERABLE
        assert event.pdu.get_tlv(Tag.NETWORK_ERROR_CODE) is not None


async def test_outcome_none_sends_no_receipt_at_all() -> None:
    config = SmscConfig(accounts=ACCOUNT, outcomes={"NONE": 1.0})
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc) as (client, inbox):
        await client.submit(message())
        await asyncio.sleep(0)  # a receipt would be scheduled now, with no delay
        assert await smsc.send_mo("01099998888", "15881234", "다음") == S.ESME_ROK
        event = await next_deliver(inbox)
        assert not event.is_receipt
        assert smsc.stats["receipts_sent"] == 0


async def test_submits_beyond_the_tps_limit_are_answered_throttled() -> None:
    config = SmscConfig(accounts=ACCOUNT, tps=2, tps_burst=3)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc) as (client, _):
        answers = await asyncio.gather(*(client.submit(message(receipt=False)) for _ in range(8)))
        statuses = sorted(a.command_status for a in answers)
        assert statuses == [S.ESME_ROK] * 3 + [S.ESME_RTHROTTLED] * 5
        assert len(smsc.submits) == 3


async def test_submits_beyond_the_smsc_window_are_answered_queue_full() -> None:
    config = SmscConfig(accounts=ACCOUNT, window=2, latency_ms=100)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc) as (client, _):
        answers = await asyncio.gather(*(client.submit(message(receipt=False)) for _ in range(5)))
        statuses = sorted(a.command_status for a in answers)
        assert statuses == [S.ESME_ROK] * 2 + [S.ESME_RMSGQFUL] * 3


async def test_error_injection_answers_the_configured_status() -> None:
    config = SmscConfig(accounts=ACCOUNT, error_rate=1.0, error_status=S.ESME_RSUBMITFAIL)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc) as (client, _):
        resp = await client.submit(message())
        assert resp.command_status == S.ESME_RSUBMITFAIL
        assert smsc.submits == []


async def test_disconnect_after_n_submits_leaves_the_rest_in_doubt_and_reconnect_works() -> None:
    config = SmscConfig(accounts=ACCOUNT, disconnect_after_submits=3)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc:
        client = SmppClient(LOGIN, on_event=lambda e: None)
        await client.connect("127.0.0.1", smsc.port)
        answers = await asyncio.gather(
            *(client.submit(message(receipt=False)) for _ in range(6)), return_exceptions=True
        )
        assert sum(isinstance(a, SubmitSmResp) for a in answers) == 3
        assert sum(isinstance(a, ConnectionClosedError) for a in answers) == 3
        assert await client.wait_closed() == "connection_lost"

        again = SmppClient(LOGIN, on_event=lambda e: None)
        await connect_with_backoff(lambda: again.connect("127.0.0.1", smsc.port), Backoff(initial=0.01))
        assert (await again.submit(message(receipt=False))).command_status == S.ESME_ROK
        await again.close()


async def test_disconnect_on_demand_fails_requests_waiting_for_an_answer() -> None:
    config = SmscConfig(accounts=ACCOUNT, latency_ms=500)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc:
        client = SmppClient(LOGIN, on_event=lambda e: None)
        await client.connect("127.0.0.1", smsc.port)
        pending = asyncio.ensure_future(client.submit(message()))
        await smsc.wait_for_submits(1)
        smsc.disconnect_all()
        with pytest.raises(ConnectionClosedError):
            await pending
        assert await client.wait_closed() == "connection_lost"


async def test_injected_mo_message_reaches_the_esme_and_is_acknowledged() -> None:
    async with (
        asyncio.timeout(5),
        SmscSimulator(SmscConfig(accounts=ACCOUNT)) as smsc,
        bound(smsc) as (_client, inbox),
    ):
        status = await smsc.send_mo("01099998888", "15881234", "수신거부", data_coding=8)
        assert status == S.ESME_ROK
        event = await next_deliver(inbox)
        assert not event.is_receipt
        assert (event.pdu.source_addr, event.pdu.destination_addr) == ("01099998888", "15881234")
        assert decode_text(event.pdu.short_message, event.pdu.data_coding) == "수신거부"


async def test_receipt_id_in_the_other_format_still_names_the_submitted_message() -> None:
    config = SmscConfig(accounts=ACCOUNT, message_id_format=MessageIdFormat.HEX, receipt_id_other_format=True)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc) as (client, inbox):
        resp = await client.submit(message())
        assert isinstance(resp, SubmitSmResp)
        event = await next_deliver(inbox)
        assert event.receipt is not None
        receipt_id = event.receipt.message_id
        assert receipt_id != resp.message_id and receipt_id.isdigit()
        assert int(resp.message_id, 16) == int(receipt_id)
        assert message_ids_match(resp.message_id, receipt_id)


async def test_decimal_ids_when_asked() -> None:
    config = SmscConfig(accounts=ACCOUNT, message_id_format=MessageIdFormat.DECIMAL)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc) as (client, inbox):
        resp = await client.submit(message())
        assert isinstance(resp, SubmitSmResp) and resp.message_id.isdigit()
        event = await next_deliver(inbox)
        assert event.receipt is not None and event.receipt.message_id == resp.message_id


async def test_receipts_wait_for_a_receiver_bind() -> None:
    config = SmscConfig(accounts=ACCOUNT)
    tx_only = SessionConfig(system_id="portal", password="secret", bind_mode=BindMode.TRANSMITTER)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc:
        async with bound(smsc, tx_only) as (client, _):
            resp = await client.submit(message())
        assert isinstance(resp, SubmitSmResp)
        assert smsc.stats["receipts_sent"] == 0
        rx_only = SessionConfig(system_id="portal", password="secret", bind_mode=BindMode.RECEIVER)
        async with bound(smsc, rx_only) as (_rx, inbox):
            event = await next_deliver(inbox)
            assert event.receipt is not None and event.receipt.message_id == resp.message_id


async def test_slow_answer_times_out_in_doubt_and_frees_the_window_slot() -> None:
    config = SmscConfig(accounts=ACCOUNT, latency_ms=300)
    impatient = SessionConfig(system_id="portal", password="secret", window=1, response_timeout=0.05)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc, impatient) as (client, _):
        with pytest.raises(RequestTimeout):
            await client.submit(message(receipt=False))
        assert client.session.window_available == 1
        assert len(smsc.submits) == 1  # the SMSC did take it: that is what "in doubt" means


async def test_inbound_events_can_be_consumed_as_an_async_iterator() -> None:
    async with asyncio.timeout(5), SmscSimulator(SmscConfig(accounts=ACCOUNT)) as smsc:
        client = SmppClient(LOGIN)
        await client.connect("127.0.0.1", smsc.port)
        await smsc.send_mo("01099998888", "15881234", "네")
        smsc.disconnect_all()
        seen = [type(e).__name__ async for e in client.events()]
        assert seen == ["DeliverSmReceived", "SessionClosed"]


async def test_a_submit_cancelled_while_waiting_for_the_window_does_not_leak_a_slot() -> None:
    config = SmscConfig(accounts=ACCOUNT, latency_ms=50)
    one = SessionConfig(system_id="portal", password="secret", window=1)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc, one) as (client, _):
        first = asyncio.ensure_future(client.submit(message(receipt=False)))
        waiting = asyncio.ensure_future(client.submit(message(receipt=False)))
        await asyncio.sleep(0)
        waiting.cancel()
        assert (await first).command_status == S.ESME_ROK
        third = await client.submit(message(receipt=False))
        assert third.command_status == S.ESME_ROK
        assert len(smsc.submits) == 2


async def test_received_log_shows_each_text_as_the_phone_got_it(tmp_path: Path) -> None:
    path = tmp_path / "received.jsonl"
    config = SmscConfig(accounts=ACCOUNT, received_log=path, record_submits=False)
    async with asyncio.timeout(5), SmscSimulator(config) as smsc, bound(smsc) as (client, _):
        first = await client.submit(message("[인증번호] 123456"))
        await client.submit(message("두 번째"))
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert [x["text"] for x in lines] == ["[인증번호] 123456", "두 번째"]
    assert lines[0]["to"] == "01012345678" and lines[0]["from"] == "15881234"
    assert isinstance(first, SubmitSmResp) and lines[0]["message_id"] == first.message_id
