"""GET /v1/events: the event log served as server-sent events, resumable with Last-Event-ID,
against a real PostgreSQL (and, for call events, the real B2BUA with simulated peers)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from config.sip import DidConfig, SipConfig, TrunkConfig
from handlers import tenants
from handlers.calls.events import CallEvent, EventBus
from handlers.calls.service import serve_calls
from handlers.events import log as event_log
from handlers.events.hub import EventHub
from handlers.events.log import NewEvent
from handlers.events.writer import EventLogWriter
from handlers.webhooks import emit
from tests.conftest import Api, Tenant, make_config, serve_api
from tests.integration.notices import listening
from tests.integration.test_calls import DID, Gateway

# -- a small SSE client --------------------------------------------------------------------


@dataclasses.dataclass
class Sse:
    """One frame: an event (`event`, `data`, `id`) or a heartbeat (`comment`, maybe `id`)."""

    id: int | None = None
    event: str | None = None
    data: dict[str, Any] | None = None
    comment: str | None = None


def parse(block: list[str]) -> Sse:
    frame = Sse()
    data: list[str] = []
    for line in block:
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "":
            frame.comment = value
        elif name == "id":
            frame.id = int(value)
        elif name == "event":
            frame.event = value
        elif name == "data":
            data.append(value)
    if data:
        frame.data = json.loads("\n".join(data))
    return frame


class Client:
    """An open GET /v1/events, read by a task of its own (a cancelled read inside aiohttp's
    own timer may not end, so waits are on a queue instead)."""

    def __init__(self, resp: Any) -> None:
        self.resp = resp
        self.frames: asyncio.Queue[Sse | None] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        block: list[str] = []
        try:
            while line := await self.resp.content.readline():
                text = line.decode().rstrip("\n")
                if text:
                    block.append(text)
                elif block:
                    self.frames.put_nowait(parse(block))
                    block = []
        except (aiohttp.ClientError, ConnectionError):
            pass
        self.frames.put_nowait(None)

    async def next(self, timeout: float = 5.0) -> Sse:
        frame = await asyncio.wait_for(self.frames.get(), timeout)
        if frame is None:
            self.frames.put_nowait(None)
            raise EOFError("stream closed")
        return frame

    async def event(self, timeout: float = 5.0) -> Sse:
        """The next event within `timeout`, skipping heartbeats and the `retry` advice."""
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next(max(0.0, deadline - time.monotonic()))
            if frame.event is not None:
                return frame

    def close(self) -> None:
        self.reader.cancel()
        self.resp.close()


async def open_stream(tenant: Tenant, query: str = "", **headers: str) -> Client:
    resp = await tenant.call("GET", f"/v1/events{query}", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return Client(resp)


# -- fixtures ------------------------------------------------------------------------------


@dataclasses.dataclass
class Events:
    api: Api
    tenant: Tenant
    hub: EventHub
    writer: EventLogWriter
    bus: EventBus

    def publish(self, kind: str, tenant: Tenant | None = None, **data: object) -> uuid.UUID:
        call_id = uuid.uuid4()
        self.bus.publish(CallEvent(kind, call_id, (tenant or self.tenant).id,
                                   datetime.now(UTC), data))
        return call_id


@pytest.fixture
async def ev(pool: asyncpg.Pool, db_dsn: str, state_root: Path) -> AsyncIterator[Events]:
    config = make_config(state_root, db_dsn, events__heartbeat_seconds="0.3")
    async with serve_api(pool, config) as api:
        hub = EventHub(db_dsn, pool, config.events, metrics=api.context.metrics,
                       poll_seconds=0.2, watch_linger_seconds=0.0)
        await hub.start()
        api.context.events = hub
        writer = EventLogWriter(pool, metrics=api.context.metrics)
        bus = EventBus()
        bus.add_sink(writer.offer)
        writer.start()
        try:
            yield Events(api, await api.new_tenant("acme"), hub, writer, bus)
        finally:
            await writer.stop()
            await hub.stop()


# -- resume --------------------------------------------------------------------------------


async def test_a_client_disconnecting_during_1000_events_resumes_each_once_in_order(
        ev: Events) -> None:
    first = await open_stream(ev.tenant)

    async def produce() -> None:
        for n in range(1000):
            ev.publish("call.answered", extension="1001", n=n)
            if n % 20 == 19:
                await asyncio.sleep(0.005)

    producer = asyncio.create_task(produce())
    got: list[tuple[int, int]] = []
    while len(got) < 300:
        frame = await first.event()
        assert frame.id is not None and frame.data is not None
        got.append((frame.id, frame.data["data"]["n"]))
    first.close()  # gone mid-stream, while events keep coming
    await asyncio.sleep(0.3)
    second = await open_stream(ev.tenant, **{"Last-Event-ID": str(got[-1][0])})
    while got[-1][1] < 999:
        frame = await second.event()
        assert frame.id is not None and frame.data is not None
        got.append((frame.id, frame.data["data"]["n"]))
    await producer
    second.close()
    assert [n for _, n in got] == list(range(1000))
    ids = [i for i, _ in got]
    assert ids == sorted(set(ids))


async def test_last_event_id_can_be_given_as_a_query_parameter(ev: Events) -> None:
    for n in range(5):
        ev.publish("call.answered", extension="1001", n=n)
    await ev.writer.flush()
    async with ev.api.context.pool.acquire() as conn:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM event_log ORDER BY id")]
    client = await open_stream(ev.tenant, f"?last_event_id={ids[1]}")
    assert [(await client.event()).id for _ in range(3)] == ids[2:]
    client.close()


async def test_a_resume_from_beyond_the_retention_window_gets_a_reset_event(
        ev: Events) -> None:
    for n in range(3):
        ev.publish("call.answered", extension="1001", n=n)
    await ev.writer.flush()
    async with ev.api.context.pool.acquire() as conn:
        await conn.execute("UPDATE event_log SET logged_at = now() - interval '25 hours'")
        first = await conn.fetchval("SELECT min(id) FROM event_log")
    assert await ev.hub.sweep() == 3
    client = await open_stream(ev.tenant, **{"Last-Event-ID": str(first)})
    reset = await client.event()
    assert reset.event == "reset" and reset.data is not None
    assert reset.data["reason"] == "expired" and reset.data["last_event_id"] == first
    ev.publish("call.answered", extension="1001", n=3)
    after = await client.event()
    assert after.event == "call.answered" and after.data is not None
    assert after.data["data"]["n"] == 3
    assert after.id is not None and reset.id is not None and after.id > reset.id
    client.close()


async def test_an_id_never_handed_out_gets_a_reset_event_too(ev: Events) -> None:
    client = await open_stream(ev.tenant, **{"Last-Event-ID": "999999"})
    reset = await client.event()
    assert reset.event == "reset" and reset.data is not None
    assert reset.data["reason"] == "unknown_id"
    client.close()


async def test_a_slow_client_is_cut_off_and_resumes_without_loss(ev: Events) -> None:
    TOTAL = 5000
    ev.api.context.config = dataclasses.replace(
        ev.api.context.config, events=dataclasses.replace(
            ev.api.context.config.events, stream_queue_events=1000, write_timeout_seconds=30.0))
    # A client that stops reading: a small receive buffer, nothing read after the request.
    host, port = ev.api.client.server.host, ev.api.client.server.port
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                 f"{ev.tenant.key}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.3)  # the stream is open
    payload = "x" * 2000  # 5,000 of them: more than the kernel's socket buffers hold
    for n in range(TOTAL):
        ev.publish("call.answered", extension="1001", n=n, pad=payload)
        if n % 100 == 99:
            await asyncio.sleep(0.02)
    cut = ev.api.context.metrics.registry.get_sample_value(
        "telgate_event_streams_cut_total", {"reason": "slow_client"})
    for _ in range(100):
        if cut:
            break
        await asyncio.sleep(0.05)
        cut = ev.api.context.metrics.registry.get_sample_value(
            "telgate_event_streams_cut_total", {"reason": "slow_client"})
    assert cut == 1.0
    # What the slow client did receive, then the rest after resuming from its last id.
    raw = b""
    with pytest.raises(Exception):  # noqa: B017 - closed by the server: EOF or reset
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                raw += chunk
            raise EOFError
    writer.close()
    body = raw.split(b"\r\n\r\n", 1)[1]
    received = _events_in(_unchunk(body))
    assert 0 < len(received) < TOTAL
    client = await open_stream(ev.tenant, **{"Last-Event-ID": str(received[-1][0])})
    while received[-1][1] < TOTAL - 1:
        frame = await client.event()
        assert frame.id is not None and frame.data is not None
        received.append((frame.id, frame.data["data"]["n"]))
    client.close()
    assert [n for _, n in received] == list(range(TOTAL))


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        try:
            size = int(size_line, 16)
        except ValueError:
            break
        if size == 0 or len(rest) < size:
            out += rest[:size]
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def _events_in(text: bytes) -> list[tuple[int, int]]:
    found = []
    for block in text.decode(errors="replace").split("\n\n")[:-1]:  # the last is partial
        frame = parse(block.split("\n"))
        if frame.event == "call.answered" and frame.id is not None and frame.data is not None:
            found.append((frame.id, frame.data["data"]["n"]))
    return found


# -- order across writers ------------------------------------------------------------------


async def test_an_event_committed_after_a_later_id_is_still_delivered_first(
        ev: Events) -> None:
    client = await open_stream(ev.tenant)
    pool = ev.api.context.pool
    slow = await pool.acquire()
    fast = await pool.acquire()
    try:
        tx = slow.transaction()
        await tx.start()
        await emit(slow, ev.tenant.id, "message.canceled", {"message_id": "first"})
        await emit(fast, ev.tenant.id, "message.canceled", {"message_id": "second"})
        with pytest.raises(TimeoutError):  # the later id waits for the earlier one
            await client.event(timeout=0.5)
        await tx.commit()
    finally:
        await pool.release(slow)
        await pool.release(fast)
    one, two = await client.event(), await client.event()
    assert one.data is not None and two.data is not None
    assert [one.data["data"]["message_id"], two.data["data"]["message_id"]] == [
        "first", "second"]
    assert one.id is not None and two.id is not None and one.id < two.id
    client.close()


async def test_a_rolled_back_id_does_not_hold_the_stream(ev: Events) -> None:
    client = await open_stream(ev.tenant)
    async with ev.api.context.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await emit(conn, ev.tenant.id, "message.canceled", {"message_id": "never"})
        await tx.rollback()
        await emit(conn, ev.tenant.id, "message.canceled", {"message_id": "kept"})
    frame = await client.event(timeout=2.0)
    assert frame.data is not None and frame.data["data"]["message_id"] == "kept"
    client.close()


# -- following the log ---------------------------------------------------------------------


async def test_with_no_stream_open_the_follower_reads_nothing(ev: Events) -> None:
    # Single sends commit events one transaction at a time, bulk sends thousands a second;
    # with nobody watching, none of it is read back.
    before, hwm = ev.hub.reads, ev.hub.hwm
    async with ev.api.context.pool.acquire() as conn:
        for n in range(20):
            await emit(conn, ev.tenant.id, "message.canceled", {"message_id": str(n)})
    await asyncio.sleep(0.5)  # notifications delivered, the 0.2 s poll passed twice
    assert (ev.hub.reads, ev.hub.hwm) == (before, hwm)


async def until_watching(hub: EventHub, watching: bool) -> None:
    for _ in range(500):  # a safety net: the follower looks every 0.2 s
        if hub.watching is watching:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the follower's watching is still {hub.watching}")


async def test_events_are_notified_only_while_some_stream_is_open(
        ev: Events, db_dsn: str) -> None:
    # A notifying commit holds PostgreSQL's database-wide notify lock through its flush, so
    # every writer of events would queue behind the others' flushes for nobody's benefit.
    async def one() -> None:
        async with ev.api.context.pool.acquire() as conn:
            await emit(conn, ev.tenant.id, "message.canceled", {"message_id": "x"})

    async with listening(db_dsn, event_log.CHANNEL) as signalled:
        assert await signalled(one) == []
        client = await open_stream(ev.tenant)
        await until_watching(ev.hub, True)
        assert await signalled(one) == [event_log.CHANNEL]
        assert (await client.event(timeout=2.0)).data is not None
        client.close()
        await wait_detached(ev.hub)
        await until_watching(ev.hub, False)  # the fixture's hub lingers for no time
        assert await signalled(one) == []


async def test_a_watcher_left_by_a_killed_instance_is_cleared_by_the_next_one(
        ev: Events, db_dsn: str, pool: asyncpg.Pool) -> None:
    gone = await asyncpg.connect(db_dsn)
    await event_log.watch(gone)
    pid = gone.get_server_pid()
    gone.terminate()  # as a kill -9 would leave it: the row stays
    for _ in range(500):  # a safety net: the backend ends as its socket closes
        if not await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            break
        await asyncio.sleep(0.01)
    assert await pool.fetchval("SELECT count(*) FROM event_watchers") == 1
    client = await open_stream(ev.tenant)
    await until_watching(ev.hub, True)
    mine = await pool.fetchval("SELECT array_agg(pid) FROM event_watchers")
    assert len(mine) == 1 and mine[0] != pid
    client.close()


async def test_a_stream_opened_after_quiet_commits_starts_after_the_last_one(
        ev: Events) -> None:
    async with ev.api.context.pool.acquire() as conn:
        await emit(conn, ev.tenant.id, "message.canceled", {"message_id": "before"})
        client = await open_stream(ev.tenant)
        await emit(conn, ev.tenant.id, "message.canceled", {"message_id": "after"})
    frame = await client.event(timeout=2.0)
    assert frame.data is not None and frame.data["data"]["message_id"] == "after"
    client.close()


async def test_a_client_resuming_after_quiet_commits_gets_them_from_the_log(
        ev: Events) -> None:
    first = await open_stream(ev.tenant)
    async with ev.api.context.pool.acquire() as conn:
        await emit(conn, ev.tenant.id, "message.canceled", {"message_id": "seen"})
        seen = await first.event()
        first.close()
        await wait_detached(ev.hub)
        for n in range(3):  # nobody watching: the follower does not read these
            await emit(conn, ev.tenant.id, "message.canceled", {"message_id": str(n)})
    second = await open_stream(ev.tenant, **{"Last-Event-ID": str(seen.id)})
    got = []
    for _ in range(3):
        frame = await second.event(timeout=2.0)
        assert frame.data is not None
        got.append(frame.data["data"]["message_id"])
    assert got == ["0", "1", "2"]
    second.close()


async def wait_detached(hub: EventHub) -> None:
    for _ in range(500):
        if not hub.streams:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the closed stream is still attached")


async def test_an_open_stream_gets_each_commit_as_it_comes(ev: Events) -> None:
    client = await open_stream(ev.tenant)
    async with ev.api.context.pool.acquire() as conn:
        for n in range(3):
            await emit(conn, ev.tenant.id, "message.canceled", {"message_id": str(n)})
            frame = await client.event(timeout=2.0)
            assert frame.data is not None and frame.data["data"]["message_id"] == str(n)
    client.close()


# -- who sees what -------------------------------------------------------------------------


async def test_a_stream_shows_only_its_tenant_and_the_types_and_extension_asked_for(
        ev: Events) -> None:
    other = await ev.api.new_tenant("other")
    everything = await open_stream(ev.tenant)
    ringing = await open_stream(ev.tenant, "?types=call.ringing,call.ended")
    at_1002 = await open_stream(ev.tenant, "?extension=1002")
    theirs = await open_stream(other)
    ev.publish("call.ringing", direction="incoming", caller="01012345678", callee=DID,
               did=DID, extensions=["1001"])
    ev.publish("call.answered", extension="1002")
    ev.publish("call.answered", other, extension="1002")
    assert [(await everything.event()).event for _ in range(2)] == [
        "call.ringing", "call.answered"]
    frame = await ringing.event()
    assert frame.event == "call.ringing" and frame.data is not None
    data = frame.data["data"]
    assert data["caller"] == "01012345678" and data["did"] == DID
    assert data["extensions"] == ["1001"] and data["customer_name"] is None
    frame = await at_1002.event()
    assert frame.event == "call.answered"
    mine = await theirs.event()
    assert mine.data is not None and mine.data["data"]["extension"] == "1002"
    with pytest.raises(TimeoutError):
        await theirs.event(timeout=0.5)
    # A filtered stream's heartbeat moves its resume point past what it left out.
    beat = await ringing.next(timeout=2.0)
    while beat.comment != "heartbeat" or beat.id is None:
        beat = await ringing.next(timeout=2.0)
    assert beat.id > (frame.id or 0)
    for c in (everything, ringing, at_1002, theirs):
        c.close()


async def test_a_key_narrowed_to_an_sp_id_sees_that_sps_messages_and_the_calls(
        ev: Events) -> None:
    async with ev.api.context.pool.acquire() as conn:
        for sp in ("SP1", "SP2"):
            await tenants.ensure_sp_id(conn, ev.tenant.id, sp, actor="test")
        key, record = await tenants.create_key(conn, ev.tenant.id, sp_id="SP1", label="",
                                               actor="test")
    narrowed = Tenant(ev.tenant.id, ev.tenant.name, key, record.id, ev.api)
    client = await open_stream(narrowed)
    async with ev.api.context.pool.acquire() as conn:
        await emit(conn, ev.tenant.id, "message.canceled", {"message_id": "sp2"}, sp_id="SP2")
        await emit(conn, ev.tenant.id, "message.canceled", {"message_id": "sp1"}, sp_id="SP1")
    ev.publish("call.answered", extension="1001")
    first, second = await client.event(), await client.event()
    assert first.data is not None and first.data["data"]["message_id"] == "sp1"
    assert second.event == "call.answered"
    client.close()


async def test_message_events_reach_the_stream_and_the_webhooks_from_one_row(
        ev: Events) -> None:
    async with ev.api.context.pool.acquire() as conn:
        hook = await conn.fetchval(
            "INSERT INTO webhooks (tenant_id, url, secret) VALUES ($1, 'https://p.example/h', "
            "'whsec_x') RETURNING id", ev.tenant.id)
    client = await open_stream(ev.tenant)
    async with ev.api.context.pool.acquire() as conn:
        await emit(conn, ev.tenant.id, "message.canceled", {"message_id": "m1"})
    ev.publish("call.answered", extension="1001")
    frames = [await client.event(), await client.event()]
    await ev.writer.flush()
    async with ev.api.context.pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_id, event_type FROM webhook_outbox "
                                "WHERE webhook_id = $1 ORDER BY id", hook)
    assert [(str(r["event_id"]), r["event_type"]) for r in rows] == [
        (f.data["id"], f.event) for f in frames if f.data is not None]
    client.close()


async def test_a_retried_batch_writes_no_event_twice(ev: Events) -> None:
    ev.publish("call.answered", extension="1001")
    await ev.writer.flush()
    async with ev.api.context.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT event_id, tenant_id FROM event_log")
        again = NewEvent(row["event_id"], row["tenant_id"], "call.answered", (), {},
                         datetime.now(UTC))
        await event_log.insert(conn, [again])
        assert await conn.fetchval("SELECT count(*) FROM event_log") == 1


# -- through the B2BUA ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def b2bua(ev: Events) -> AsyncIterator[Gateway]:
    """The B2BUA publishing on the stream's bus: DID → extension 1001, the carrier at
    127.0.0.2; its user agents closed and the server stopped at the end."""
    gw = Gateway(ev.api, ev.tenant)
    gw.server = await serve_calls(
        SipConfig(port=0, trunks=[TrunkConfig(name="carrier", addresses=["127.0.0.2"],
                                              host="127.0.0.2", port=5999)],
                  dids=[DidConfig(number=DID, tenant=ev.tenant.name, extensions=["1001"])]),
        ev.api.context.pool, ev.api.context, bus=ev.bus)
    try:
        yield gw
    finally:
        for ua in gw.uas:
            await ua.close()
        await gw.server.stop()


async def test_a_trunk_call_produces_call_ringing_on_an_open_stream(ev: Events) -> None:
    async with b2bua(ev) as gw:
        await gw.phone("1001")
        carrier = await gw.carrier()
        client = await open_stream(ev.tenant, "?types=call.ringing,call.ended")
        started = time.perf_counter()
        call = carrier.dial(DID, "01012345678")
        ringing = await client.event()
        delay_ms = (time.perf_counter() - started) * 1000
        print(f"\ncall.ringing reached the stream {delay_ms:.1f} ms after the INVITE was sent")
        assert ringing.event == "call.ringing" and ringing.data is not None
        data = ringing.data["data"]
        assert data["caller"] == "01012345678" and data["did"] == DID
        assert data["extensions"] == ["1001"] and data["customer_name"] is None
        async with asyncio.timeout(5):
            await call.answered.wait()
        await carrier.hangup(call)
        ended = await client.event()
        assert ended.event == "call.ended" and ended.data is not None
        record = ended.data["data"]["record"]
        assert record["caller"] == "01012345678" and record["class"] == "incoming"
        assert record["id"] == data["call_id"]
        client.close()


async def test_a_stored_customers_name_is_on_every_event_of_their_call_and_no_other_tenants(
        ev: Events) -> None:
    other = await ev.api.new_tenant("other")
    for tenant, name in ((ev.tenant, "홍길동"), (other, "임꺽정")):
        resp = await tenant.call("PUT", "/v1/customers/010-1234-5678", json={"name": name})
        assert resp.status == 201
    await other.call("PUT", "/v1/customers/01055556666", json={"name": "임꺽정"})
    async with b2bua(ev) as gw:
        await gw.phone("1001")
        carrier = await gw.carrier()
        client = await open_stream(ev.tenant, "?types=call.ringing,call.answered,call.ended")
        call = carrier.dial(DID, "01012345678")
        ringing = await client.event()
        assert ringing.event == "call.ringing" and ringing.data is not None
        assert ringing.data["data"]["customer_name"] == "홍길동"
        async with asyncio.timeout(5):
            await call.answered.wait()
        answered = await client.event()
        assert answered.event == "call.answered" and answered.data is not None
        assert answered.data["data"]["customer_name"] == "홍길동"
        await carrier.hangup(call)
        ended = await client.event()
        assert ended.event == "call.ended" and ended.data is not None
        assert ended.data["data"]["customer_name"] == "홍길동"
        # A caller only another tenant knows is nobody here.
        unknown = carrier.dial(DID, "01055556666")
        ringing = await client.event()
        assert ringing.event == "call.ringing" and ringing.data is not None
        assert ringing.data["data"]["caller"] == "01055556666"
        assert ringing.data["data"]["customer_name"] is None
        async with asyncio.timeout(5):
            await unknown.answered.wait()
        await carrier.hangup(unknown)
        client.close()


async def test_the_customer_is_the_callee_of_an_outgoing_call_and_internal_calls_have_none(
        ev: Events) -> None:
    await ev.tenant.call("PUT", "/v1/customers/01012345678", json={"name": "홍길동"})
    await ev.tenant.call("PUT", "/v1/customers/01099998888", json={"name": "김철수"})
    client = await open_stream(ev.tenant)
    ev.publish("call.ringing", direction="outgoing", caller="01099998888",
               callee="01012345678", did=None, extensions=["1001"])
    internal = ev.publish("call.ringing", direction="internal", caller="1001", callee="1002",
                          did=None, extensions=["1002"])
    ev.bus.publish(CallEvent("call.answered", internal, ev.tenant.id, datetime.now(UTC),
                             {"extension": "1002"}))
    outgoing, inside, answered = (await client.event(), await client.event(),
                                  await client.event())
    assert outgoing.data is not None and outgoing.data["data"]["customer_name"] == "홍길동"
    assert inside.data is not None and inside.data["data"]["customer_name"] is None
    assert answered.data is not None and "customer_name" not in answered.data["data"]
    client.close()


async def test_a_renamed_customer_is_shown_by_the_new_name_on_the_next_event(
        ev: Events) -> None:
    await ev.tenant.call("PUT", "/v1/customers/01012345678", json={"name": "홍길동"})
    client = await open_stream(ev.tenant)
    first = ev.publish("call.ringing", direction="incoming", caller="01012345678",
                       callee=DID, did=DID, extensions=["1001"])
    assert (await client.event()).data["data"]["customer_name"] == "홍길동"  # type: ignore[index]
    await ev.tenant.call("PUT", "/v1/customers/01012345678", json={"name": "홍길순"})
    ev.bus.publish(CallEvent("call.answered", first, ev.tenant.id, datetime.now(UTC),
                             {"extension": "1001"}))
    assert (await client.event()).data["data"]["customer_name"] == "홍길순"  # type: ignore[index]
    await ev.tenant.call("DELETE", "/v1/customers/01012345678")
    ev.publish("call.ringing", direction="incoming", caller="01012345678", callee=DID,
               did=DID, extensions=["1001"])
    assert (await client.event()).data["data"]["customer_name"] is None  # type: ignore[index]
    client.close()
