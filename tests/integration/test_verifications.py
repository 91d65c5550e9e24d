"""Verification codes against the real database on a fake clock: single use, lock-out, caps,
the previous code dead after a resend, codes never stored or shown, tenant isolation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from config.schema import VerificationConfig
from handlers.errors import DomainError
from handlers.outage import LoopTracker
from handlers.tenants import Principal
from handlers.verify import rules
from handlers.verify.service import StartRequest, Sweeper, Verifier
from tests.conftest import Api, Tenant
from tests.integration.test_messaging import running, sim_config, until

SENDER = "0212345678"
PHONE = "01012345678"
T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


async def tenant_with_sender(api: Api) -> Tenant:
    t = await api.new_tenant()
    resp = await t.call("POST", "/v1/sender-numbers", json={"number": SENDER})
    assert resp.status == 201
    async with api.context.pool.acquire() as conn:
        await api.context.index.reload_tenant(conn, t.id)
    return t


def principal(t: Tenant) -> Principal:
    return Principal(t.id, None, t.key_id, t.key[:8])


class Phone:
    """Reads the code the way the phone would: from the queued SMS."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def last_code(self, vid: str) -> str:
        text = await self.conn.fetchval(
            """SELECT r.text FROM recipients r JOIN messages m ON m.id = r.message_id
               WHERE m.verification_id = $1 AND r.state = 'queued'""", uuid.UUID(vid))
        assert text is not None, "no queued code"
        return "".join(ch for ch in text.split("]")[1] if ch.isdigit())[:6]


@pytest.fixture
async def setup(api: Api) -> tuple[Verifier, Tenant, asyncpg.Connection]:
    t = await tenant_with_sender(api)
    verifier = Verifier(VerificationConfig(), api.context.index)
    conn = await api.context.pool.acquire()
    yield verifier, t, conn
    await api.context.pool.release(conn)


async def refused(coro: object) -> DomainError:
    with pytest.raises(DomainError) as info:
        await coro  # type: ignore[misc]
    return info.value


async def test_a_code_sent_and_checked_once(setup: tuple[Verifier, Tenant, asyncpg.Connection]
                                            ) -> None:
    verifier, t, conn = setup
    who = principal(t)
    started = await verifier.start(conn, who, StartRequest(to="010-1234-5678", sender=SENDER), T0)
    assert started["to"] == PHONE and started["expires_at"] == (T0 + timedelta(minutes=5)).isoformat()
    code = await Phone(conn).last_code(str(started["id"]))
    vid = uuid.UUID(str(started["id"]))
    ok = await verifier.check(conn, who, vid, code, T0 + timedelta(minutes=1))
    assert ok["status"] == "approved"
    again = await refused(verifier.check(conn, who, vid, code, T0 + timedelta(minutes=1)))
    assert again.code == "verification_closed"
    # Nothing keeps the code once the verification is closed.
    assert await conn.fetchval("SELECT code_hash FROM verifications WHERE id = $1", vid) is None
    texts = await conn.fetch(
        """SELECT m.text AS m, r.text AS r FROM messages m JOIN recipients r ON r.message_id = m.id
           WHERE m.verification_id = $1""", vid)
    assert texts and all(code not in (row["m"] or "") + (row["r"] or "") for row in texts)
    assert "{code}" in texts[0]["m"]
    events = await conn.fetchval("SELECT count(*) FROM webhook_outbox")
    assert events == 0  # no webhooks subscribed: nothing queued


async def test_the_sms_waits_in_the_verification_lane(
        setup: tuple[Verifier, Tenant, asyncpg.Connection]) -> None:
    verifier, t, conn = setup
    started = await verifier.start(conn, principal(t), StartRequest(to=PHONE, sender=SENDER), T0)
    row = await conn.fetchrow(
        """SELECT r.lane, r.state, m.type FROM recipients r JOIN messages m ON m.id = r.message_id
           WHERE m.verification_id = $1""", uuid.UUID(str(started["id"])))
    assert (row["lane"], row["state"], row["type"]) == (0, "queued", "sms")


async def test_an_expired_code_is_refused_and_closed(
        setup: tuple[Verifier, Tenant, asyncpg.Connection]) -> None:
    verifier, t, conn = setup
    who = principal(t)
    started = await verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER), T0)
    code = await Phone(conn).last_code(str(started["id"]))
    vid = uuid.UUID(str(started["id"]))
    err = await refused(verifier.check(conn, who, vid, code, T0 + timedelta(minutes=5)))
    assert err.code == "verification_expired" and err.status == 410
    assert (await verifier.get(conn, who, vid, T0))["status"] == "expired"


async def test_five_wrong_codes_lock_the_number_for_ten_minutes(
        setup: tuple[Verifier, Tenant, asyncpg.Connection]) -> None:
    verifier, t, conn = setup
    who = principal(t)
    started = await verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER), T0)
    vid = uuid.UUID(str(started["id"]))
    code = await Phone(conn).last_code(str(vid))
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for left in (4, 3, 2, 1):
        err = await refused(verifier.check(conn, who, vid, wrong, T0))
        assert err.code == "verification_code_mismatch" and err.extra["attempts_left"] == left
    err = await refused(verifier.check(conn, who, vid, wrong, T0))
    assert err.code == "verification_locked" and err.retry_after == 600
    # The verification failed for good, and the number gets no new code while locked.
    err = await refused(verifier.check(conn, who, vid, code, T0 + timedelta(seconds=1)))
    assert err.code == "verification_locked"
    err = await refused(verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER),
                                       T0 + timedelta(minutes=9)))
    assert err.code == "verification_locked" and err.retry_after == 60
    assert (await verifier.get(conn, who, vid, T0))["status"] == "failed"
    # Ten minutes on, the lock has ended.
    later = await verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER),
                                 T0 + timedelta(minutes=10))
    code2 = await Phone(conn).last_code(str(later["id"]))
    ok = await verifier.check(conn, who, uuid.UUID(str(later["id"])), code2,
                              T0 + timedelta(minutes=11))
    assert ok["status"] == "approved"


async def test_a_resend_kills_the_previous_code(
        setup: tuple[Verifier, Tenant, asyncpg.Connection]) -> None:
    verifier, t, conn = setup
    who = principal(t)
    started = await verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER), T0)
    vid = uuid.UUID(str(started["id"]))
    first = await Phone(conn).last_code(str(vid))
    err = await refused(verifier.resend(conn, who, vid, T0 + timedelta(seconds=29)))
    assert err.code == "verification_resend_too_soon" and err.retry_after == 1
    await verifier.resend(conn, who, vid, T0 + timedelta(seconds=30))
    second = await Phone(conn).last_code(str(vid))
    # The first SMS, if not yet sent, is withdrawn rather than delivered late.
    states = await conn.fetch(
        """SELECT r.state, r.reason FROM recipients r JOIN messages m ON m.id = r.message_id
           WHERE m.verification_id = $1 ORDER BY m.created_at""", vid)
    assert [(s["state"], s["reason"]) for s in states].count(("canceled", "code_withdrawn")) == 1
    if first != second:
        err = await refused(verifier.check(conn, who, vid, first, T0 + timedelta(seconds=31)))
        assert err.code == "verification_code_mismatch"
    ok = await verifier.check(conn, who, vid, second, T0 + timedelta(seconds=32))
    assert ok["status"] == "approved"


async def test_at_most_five_codes_per_number_in_ten_minutes(
        setup: tuple[Verifier, Tenant, asyncpg.Connection]) -> None:
    verifier, t, conn = setup
    who = principal(t)
    for i in range(5):
        await verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER),
                             T0 + timedelta(minutes=i))
    err = await refused(verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER),
                                       T0 + timedelta(minutes=5)))
    assert err.code == "verification_send_limit" and err.retry_after == 300
    # Another number is not affected; the first one frees after the window.
    await verifier.start(conn, who, StartRequest(to="01099998888", sender=SENDER),
                         T0 + timedelta(minutes=5))
    await verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER),
                         T0 + timedelta(minutes=10, seconds=1))


async def test_a_new_verification_supersedes_the_open_one(
        setup: tuple[Verifier, Tenant, asyncpg.Connection]) -> None:
    verifier, t, conn = setup
    who = principal(t)
    first = await verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER), T0)
    code = await Phone(conn).last_code(str(first["id"]))
    await verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER), T0 + timedelta(seconds=5))
    err = await refused(verifier.check(conn, who, uuid.UUID(str(first["id"])), code,
                                       T0 + timedelta(seconds=6)))
    assert err.code == "verification_closed" and err.extra["status"] == "canceled"


async def test_unregistered_senders_and_opted_out_numbers_are_refused(
        api: Api, setup: tuple[Verifier, Tenant, asyncpg.Connection]) -> None:
    verifier, t, conn = setup
    who = principal(t)
    err = await refused(verifier.start(conn, who, StartRequest(to=PHONE, sender="0299998888"), T0))
    assert err.code == "sender_not_registered" and err.field == "from"
    resp = await t.call("POST", "/v1/opt-outs", json={"number": PHONE})
    assert resp.status == 201
    await api.context.index.reload_tenant(conn, t.id)
    err = await refused(verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER), T0))
    assert err.code == "opted_out" and err.field == "to"


async def test_another_tenant_cannot_see_or_check_a_verification(
        api: Api, setup: tuple[Verifier, Tenant, asyncpg.Connection]) -> None:
    verifier, t, conn = setup
    started = await verifier.start(conn, principal(t), StartRequest(to=PHONE, sender=SENDER), T0)
    code = await Phone(conn).last_code(str(started["id"]))
    other = principal(await tenant_with_sender(api))
    vid = uuid.UUID(str(started["id"]))
    for attempt in (verifier.check(conn, other, vid, code, T0), verifier.get(conn, other, vid, T0),
                    verifier.resend(conn, other, vid, T0 + timedelta(minutes=1)),
                    verifier.cancel(conn, other, vid, T0)):
        err = await refused(attempt)
        assert err.status == 404


async def test_a_canceled_verification_withdraws_its_code(
        setup: tuple[Verifier, Tenant, asyncpg.Connection]) -> None:
    verifier, t, conn = setup
    who = principal(t)
    started = await verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER), T0)
    vid = uuid.UUID(str(started["id"]))
    code = await Phone(conn).last_code(str(vid))
    assert (await verifier.cancel(conn, who, vid, T0))["status"] == "canceled"
    err = await refused(verifier.check(conn, who, vid, code, T0))
    assert err.code == "verification_closed"
    state = await conn.fetchval(
        """SELECT r.state FROM recipients r JOIN messages m ON m.id = r.message_id
           WHERE m.verification_id = $1""", vid)
    assert state == "canceled"


async def test_the_sweeper_expires_and_erases(
        setup: tuple[Verifier, Tenant, asyncpg.Connection]) -> None:
    verifier, t, conn = setup
    who = principal(t)
    started = await verifier.start(conn, who, StartRequest(to=PHONE, sender=SENDER), T0)
    assert await verifier.sweep(conn, T0 + timedelta(minutes=4)) == 0
    assert await verifier.sweep(conn, T0 + timedelta(minutes=5)) == 1
    vid = uuid.UUID(str(started["id"]))
    row = await conn.fetchrow("SELECT status, code_hash FROM verifications WHERE id = $1", vid)
    assert row["status"] == "expired" and row["code_hash"] is None
    assert rules.Status(row["status"]) is rules.Status.EXPIRED


# -- through the dispatcher to the SMSC simulator -------------------------------------------


async def test_the_code_reaches_the_phone_and_is_erased_after_approval(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await tenant_with_sender(api)
    verifier = Verifier(VerificationConfig(), api.context.index)
    async with running(api, db_dsn, state_root, sim_config()) as (smsc, _d):
        async with api.context.pool.acquire() as conn:
            started = await verifier.start(conn, principal(t),
                                           StartRequest(to=PHONE, sender=SENDER), utcnow())
        await smsc.wait_for_submits(1)
        (sms,) = smsc.submits
        assert sms.destination_addr == PHONE and sms.source_addr == SENDER
        assert sms.text is not None
        code = "".join(ch for ch in sms.text.split("]")[1] if ch.isdigit())[:6]
        vid = uuid.UUID(str(started["id"]))
        async with api.context.pool.acquire() as conn:
            ok = await verifier.check(conn, principal(t), vid, code, utcnow())
            assert ok["status"] == "approved"

            async def erased() -> bool:
                await verifier.sweep(conn, utcnow())
                texts = await conn.fetch(
                    """SELECT r.text FROM recipients r JOIN messages m ON m.id = r.message_id
                       WHERE m.verification_id = $1""", vid)
                return [r["text"] for r in texts] == [None]

            await until(erased)


async def test_a_code_queued_behind_a_bulk_send_goes_first(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await tenant_with_sender(api)
    bulk = [f"0107{i:07d}" for i in range(1000)]
    resp = await t.call("POST", "/v1/messages",
                        json={"from": SENDER, "to": bulk, "text": "대량 공지"})
    assert resp.status == 202
    verifier = Verifier(VerificationConfig(), api.context.index)
    async with api.context.pool.acquire() as conn:
        await verifier.start(conn, principal(t), StartRequest(to=PHONE, sender=SENDER), utcnow())
        lanes = dict(await conn.fetch(
            "SELECT lane, count(*) FROM recipients WHERE state = 'queued' GROUP BY lane"))
    assert lanes == {0: 1, 2: 1000}
    async with running(api, db_dsn, state_root, sim_config()) as (smsc, dispatcher):
        seen = await dispatcher.measure_lanes()
        assert seen["verification"][0] <= 1 and seen["bulk"][0] >= 1
        await smsc.wait_for_submits(1001)
        assert smsc.submits[0].destination_addr == PHONE


async def test_a_code_sent_while_a_bulk_send_drains_overtakes_it(
        api: Api, db_dsn: str, state_root: Path) -> None:
    t = await tenant_with_sender(api)
    verifier = Verifier(VerificationConfig(), api.context.index)
    async with running(api, db_dsn, state_root, sim_config(latency_ms=2.0)) as (smsc, _d):
        for part in range(3):  # 3,000 recipients in requests within the test body limit
            bulk = [f"010{part}{i:07d}" for i in range(1000)]
            resp = await t.call("POST", "/v1/messages",
                                json={"from": SENDER, "to": bulk, "text": "대량 공지"})
            assert resp.status == 202
        await smsc.wait_for_submits(200)
        async with api.context.pool.acquire() as conn:
            await verifier.start(conn, principal(t), StartRequest(to=PHONE, sender=SENDER),
                                 utcnow())
            queued_then = 3000 - len(smsc.submits)
        await smsc.wait_for_submits(3001)
        position = [s.destination_addr for s in smsc.submits].index(PHONE)
        ahead = position - (3000 - queued_then)
        # Only what was already claimed or on the wire (window 50 × 2 in flight, one claim
        # batch) may pass before it; the rest of the bulk send waits behind the code.
        assert ahead <= 600, (ahead, queued_then)
        assert queued_then > 1000


# -- through the control API ----------------------------------------------------------------


async def _api_flow(api: Api) -> str:
    """Send, refuse a wrong code, approve; returns the code."""
    t = await tenant_with_sender(api)
    resp = await t.call("POST", "/v1/verifications",
                        json={"to": "010-1234-5678", "from": "02-1234-5678"})
    assert resp.status == 201, await resp.text()
    started = await resp.json()
    async with api.context.pool.acquire() as conn:
        code = await Phone(conn).last_code(started["id"])
    bodies = [await resp.text()]
    for path in (f"/v1/verifications/{started['id']}", "/v1/messages",
                 f"/v1/messages/{started['message_id']}"):
        r = await t.call("GET", path)
        bodies.append(await r.text())
    assert all(code not in b for b in bodies)
    listed = await (await t.call("GET", "/v1/messages")).json()
    assert listed["items"] == []  # the code's SMS is shown through /v1/verifications only
    async with api.context.pool.acquire() as conn:  # one audit entry, in the code's statement
        entries = await conn.fetch("SELECT action, subject, details::text AS details, key_id"
                                   " FROM audit_log WHERE tenant_id = $1 AND action LIKE"
                                   " 'POST /v1/verifications%'", t.id)
    assert [(e["action"], e["subject"]) for e in entries] == \
        [("POST /v1/verifications", "/v1/verifications")]
    assert started["id"] in entries[0]["details"] and code not in entries[0]["details"]
    assert entries[0]["key_id"] is not None

    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = await t.call("POST", f"/v1/verifications/{started['id']}/check", json={"code": wrong})
    problem = await r.json()
    assert r.status == 422 and problem["code"] == "verification_code_mismatch"
    assert problem["attempts_left"] == 4 and problem["field"] == "code"
    r = await t.call("POST", f"/v1/verifications/{started['id']}/resend")
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0
    assert (await r.json())["code"] == "verification_resend_too_soon"
    r = await t.call("POST", f"/v1/verifications/{started['id']}/check", json={"code": code})
    assert r.status == 200 and (await r.json())["status"] == "approved"
    state = await (await t.call("GET", f"/v1/verifications/{started['id']}")).json()
    assert state["status"] == "approved" and state["from"] == SENDER and state["sends"] == 1

    other = await tenant_with_sender(api)
    r = await other.call("POST", f"/v1/verifications/{started['id']}/check", json={"code": code})
    assert r.status == 404
    r = await other.call("GET", f"/v1/verifications/{started['id']}")
    assert r.status == 404
    return code


async def test_the_api_flow_never_shows_or_logs_the_code(api: Api) -> None:
    with capture_logs() as logs:
        code = await _api_flow(api)
    assert logs and all(code not in repr(entry) for entry in logs)


async def test_the_api_refuses_malformed_requests_naming_the_field(api: Api) -> None:
    t = await tenant_with_sender(api)
    r = await t.call("POST", "/v1/verifications", json={"to": "010-1234-5678"})
    assert r.status == 422 and (await r.json())["field"] == "from"
    r = await t.call("POST", "/v1/verifications",
                     json={"to": "010-1234-5678", "from": "0299990000"})
    assert r.status == 422 and (await r.json())["code"] == "sender_not_registered"
    r = await t.call("POST", f"/v1/verifications/{uuid.uuid4()}/check", json={"code": "12a"})
    assert r.status == 422 and (await r.json())["field"] == "code"


async def test_the_daemon_sweeper_expires_old_codes(api: Api) -> None:
    t = await tenant_with_sender(api)
    verifier = Verifier(VerificationConfig(), api.context.index)
    async with api.context.pool.acquire() as conn:
        started = await verifier.start(conn, principal(t), StartRequest(to=PHONE, sender=SENDER),
                                       utcnow() - timedelta(minutes=6))
    sweeper = Sweeper(verifier, api.context.pool, LoopTracker("verification-sweeper"),
                      every=0.05)
    sweeper.start()
    try:
        async def expired() -> bool:
            r = await t.call("GET", f"/v1/verifications/{started['id']}")
            body = await r.json()
            async with api.context.pool.acquire() as conn:
                kept = await conn.fetchval("SELECT code_hash FROM verifications WHERE id = $1",
                                           uuid.UUID(str(started["id"])))
            return body["status"] == "expired" and kept is None

        await until(expired)
    finally:
        await sweeper.stop()
