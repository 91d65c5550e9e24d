"""Calls through the B2BUA over real loopback UDP/TCP, with simulated phones and a simulated
carrier, against a real PostgreSQL: routing, ring groups, cancel, busy, caller-ID checks and
the call record each scenario leaves."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from config.sip import DidConfig, SipConfig, TrunkConfig
from handlers.api.app import build_app
from handlers.api.context import AppContext
from handlers.api.framework import RouteTable
from handlers.calls.anchoring import Anchoring
from handlers.calls.service import CallsServer, serve_calls
from handlers.metrics import Metrics
from protocols.sip.transaction import Peer
from sim.sip.demo import start_demo
from sim.sip.phone import Behaviour, CallState, Script, SimCall, SimPhone, SimUA, TrunkCaller
from tests.conftest import Api, Tenant, make_config

DID = "0212345678"
PASSWORD = "s3cret-pass"


@dataclasses.dataclass
class Gateway:
    """The control API plus the SIP side, started per test with the SIP config it needs."""

    api: Api
    tenant: Tenant
    server: CallsServer | None = None
    uas: list[SimPhone | TrunkCaller] = dataclasses.field(default_factory=list)

    async def start(self, *, anchoring: Anchoring | None = None, **sip: Any) -> CallsServer:
        """Serve SIP; with `anchoring`, calls' media goes through that media process."""
        sip.setdefault("port", 0)
        sip.setdefault("trunks", [TrunkConfig(name="carrier", addresses=["127.0.0.2"],
                                              host="127.0.0.2", port=5999)])
        sip.setdefault("dids", [DidConfig(number=DID, tenant=self.tenant.name,
                                          extensions=["1001"])])
        self.server = await serve_calls(SipConfig(**sip), self.api.context.pool,
                                        self.api.context, anchoring=anchoring)
        return self.server

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None
        return ("127.0.0.1", self.server.port)

    async def extension(self, number: str, tenant: Tenant | None = None,
                        **extra: Any) -> dict[str, Any]:
        resp = await (tenant or self.tenant).call(
            "POST", "/v1/extensions", json={"extension": number, "password": PASSWORD, **extra})
        assert resp.status == 201, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body

    async def phone(self, number: str, script: Script | None = None, *,
                    transport: str = "UDP", create: bool = True,
                    tenant: Tenant | None = None) -> SimPhone:
        if create:
            info = await self.extension(number, tenant)
        else:
            info = await (await (tenant or self.tenant).call(
                "GET", f"/v1/extensions/{number}")).json()
        domain = info["sip_domain"]
        phone = SimPhone(number, gateway=self.address, transport=transport, domain=domain,
                         password=PASSWORD, script=script)
        await phone.start()
        self.uas.append(phone)
        assert await phone.register() == 200
        return phone

    async def carrier(self, transport: str = "UDP", password: str | None = None,
                      ) -> TrunkCaller:
        """The carrier's side of the trunk (may start before the gateway, to learn its port)."""
        address = self.address if self.server is not None else ("127.0.0.1", 0)
        caller = TrunkCaller(gateway=address, transport=transport, password=password)
        await caller.start()
        self.uas.append(caller)
        return caller

    async def records(self, expected: int = 1, tenant: Tenant | None = None,
                      query: str = "") -> list[dict[str, Any]]:
        assert self.server is not None
        for _ in range(100):
            await self.server.cdrs.flush()
            resp = await (tenant or self.tenant).call("GET", f"/v1/cdrs{query}")
            items: list[dict[str, Any]] = (await resp.json())["items"]
            if len(items) >= expected:
                return items
            await asyncio.sleep(0.05)
        raise AssertionError(f"expected {expected} call records, have {len(items)}")


@pytest.fixture
async def gw(pool: asyncpg.Pool, db_dsn: str, state_root: Path) -> AsyncIterator[Gateway]:
    config = make_config(state_root, db_dsn)
    ctx = AppContext(config=config, pool=pool, metrics=Metrics(), routes=RouteTable(),
                     version="test")
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx)))
    await client.start_server()
    api = Api(client, ctx)
    gateway = Gateway(api, await api.new_tenant("acme"))
    try:
        yield gateway
    finally:
        for ua in gateway.uas:
            await ua.close()
        if gateway.server is not None:
            await gateway.server.stop()
        await client.close()


async def wait(event: asyncio.Event, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        await event.wait()


async def next_incoming(phone: SimUA, timeout: float = 5.0) -> SimCall:
    async with asyncio.timeout(timeout):
        return await phone.incoming.get()


# -- incoming ------------------------------------------------------------------------------

async def test_trunk_call_rings_the_registered_phone_and_the_caller_hangs_up(
        gw: Gateway) -> None:
    server = await gw.start()
    events = server.bus.subscribe()
    phone = await gw.phone("1001")
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    leg = await next_incoming(phone)
    await wait(leg.answered)
    assert leg.remote_sdp.startswith(b"v=0")  # the caller's SDP passed through
    await carrier.hangup(call)
    await wait(leg.ended)
    assert leg.ended_by == "remote"
    [record] = await gw.records()
    assert record["class"] == "incoming"
    assert record["direction"] == "incoming" and record["internal"] is False
    assert record["caller"] == "01012345678" and record["did"] == DID
    assert record["extension"] == "1001" and record["final_status"] == 200
    assert record["hangup_by"] == "caller"
    assert record["ringing_at"] and record["answered_at"]
    kinds = []
    while not events.queue.empty():
        kinds.append((await events.get()).type)
    assert kinds == ["call.ringing", "call.answered", "call.ended"]


async def test_the_extension_can_hang_up_an_answered_trunk_call(gw: Gateway) -> None:
    await gw.start()
    await gw.phone("1001", Script(hangup_after=0.2))
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.ended)
    assert call.ended_by == "remote" and call.final_status == 200
    [record] = await gw.records()
    assert record["class"] == "incoming" and record["hangup_by"] == "callee"
    assert record["talk_seconds"] >= 0.15


async def test_trunk_call_over_tcp_reaches_a_phone_registered_over_tcp(gw: Gateway) -> None:
    # Outgoing TCP connections cannot pick their source address, so this carrier is known by
    # digest credentials rather than by address.
    await gw.start(trunks=[TrunkConfig(name="carrier", username="carrier",
                                       password="trunk-secret")])
    phone = await gw.phone("1001", transport="TCP")
    carrier = await gw.carrier("TCP", password="trunk-secret")
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    leg = await next_incoming(phone)
    assert await carrier.hangup(call) == 200
    await wait(leg.ended)
    assert (await gw.records())[0]["class"] == "incoming"


async def test_caller_cancelling_before_answer_is_ended_before_answer(gw: Gateway) -> None:
    await gw.start()
    phone = await gw.phone("1001", Script(Behaviour.NO_ANSWER))
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678", cancel_after=0.3)
    await wait(call.ended)
    assert call.final_status == 487
    leg = await next_incoming(phone)
    await wait(leg.ended)  # the CANCEL reached the phone
    assert leg.final_status == 487
    [record] = await gw.records()
    assert record["class"] == "ended_before_answer" and record["hangup_by"] == "caller"
    assert record["answered_at"] is None and record["ringing_at"] is not None


async def test_busy_extension_gives_busy_to_the_caller_and_busy_missed(gw: Gateway) -> None:
    await gw.start()
    await gw.phone("1001", Script(Behaviour.BUSY))
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.ended)
    assert call.final_status == 486
    [record] = await gw.records()
    assert record["class"] == "busy_missed" and record["final_status"] == 486


async def test_unanswered_call_times_out_as_missed(gw: Gateway) -> None:
    await gw.start(dids=[DidConfig(number=DID, tenant=gw.tenant.name, extensions=["1001"],
                                   no_answer_seconds=0.5)])
    phone = await gw.phone("1001", Script(Behaviour.NO_ANSWER))
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.ended)
    assert call.final_status == 480
    leg = await next_incoming(phone)
    await wait(leg.ended)
    [record] = await gw.records()
    assert record["class"] == "missed" and record["hangup_by"] == "system"


async def test_unregistered_extension_is_missed(gw: Gateway) -> None:
    await gw.start()
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.ended)
    assert call.final_status == 480
    assert (await gw.records())[0]["class"] == "missed"


async def test_unknown_did_is_refused(gw: Gateway) -> None:
    await gw.start()
    carrier = await gw.carrier()
    call = carrier.dial("0299999999", "01012345678")
    await wait(call.ended)
    assert call.final_status == 404


async def test_sequential_ring_group_moves_on_after_the_ring_time(gw: Gateway) -> None:
    await gw.start(dids=[DidConfig(number=DID, tenant=gw.tenant.name,
                                   extensions=["1001", "1002"], strategy="sequential",
                                   ring_seconds=0.4, no_answer_seconds=5)])
    first = await gw.phone("1001", Script(Behaviour.NO_ANSWER))
    second = await gw.phone("1002")
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    assert (await next_incoming(first)).final_status == 487  # cancelled after 0.4 s
    assert (await next_incoming(second)).state is CallState.ANSWERED
    await carrier.hangup(call)
    [record] = await gw.records()
    assert record["class"] == "incoming" and record["extension"] == "1002"


async def test_sequential_ring_group_skips_a_busy_extension_at_once(gw: Gateway) -> None:
    await gw.start(dids=[DidConfig(number=DID, tenant=gw.tenant.name,
                                   extensions=["1001", "1002"], strategy="sequential",
                                   ring_seconds=10)])
    await gw.phone("1001", Script(Behaviour.BUSY))
    await gw.phone("1002")
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered, timeout=2)
    await carrier.hangup(call)
    assert (await gw.records())[0]["extension"] == "1002"


async def test_simultaneous_ring_group_first_answer_wins_and_others_stop(gw: Gateway) -> None:
    await gw.start(dids=[DidConfig(number=DID, tenant=gw.tenant.name,
                                   extensions=["1001", "1002"])])
    slow = await gw.phone("1001", Script(answer_after=3))
    fast = await gw.phone("1002", Script(answer_after=0.2))
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    loser = await next_incoming(slow)
    await wait(loser.ended)
    assert loser.final_status == 487
    winner = await next_incoming(fast)
    assert winner.state is CallState.ANSWERED
    await carrier.hangup(call)
    await wait(winner.ended)
    assert (await gw.records())[0]["extension"] == "1002"


async def test_simultaneous_ring_group_where_everyone_is_busy_is_busy_missed(
        gw: Gateway) -> None:
    await gw.start(dids=[DidConfig(number=DID, tenant=gw.tenant.name,
                                   extensions=["1001", "1002"])])
    await gw.phone("1001", Script(Behaviour.BUSY))
    await gw.phone("1002", Script(Behaviour.BUSY))
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.ended)
    assert call.final_status == 486
    assert (await gw.records())[0]["class"] == "busy_missed"


async def test_rejected_call_is_missed(gw: Gateway) -> None:
    await gw.start()
    await gw.phone("1001", Script(Behaviour.REJECT, answer_after=0.1))
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.ended)
    assert call.final_status == 603
    assert (await gw.records())[0]["class"] == "missed"


async def test_every_contact_of_an_extension_rings(gw: Gateway) -> None:
    await gw.start()
    desk = await gw.phone("1001", Script(Behaviour.NO_ANSWER))
    await gw.phone("1001", Script(answer_after=0.1), create=False)
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    assert (await next_incoming(desk)).final_status == 487
    await carrier.hangup(call)


async def test_reinvite_passes_through_to_the_other_leg(gw: Gateway) -> None:
    await gw.start()
    phone = await gw.phone("1001")
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    leg = await next_incoming(phone)
    assert await carrier.reinvite(call) == 200
    assert leg.reinvites == 1
    assert await phone.reinvite(leg) == 200
    assert call.reinvites == 1
    await phone.hangup(leg)
    await wait(call.ended)
    assert (await gw.records())[0]["hangup_by"] == "callee"


async def test_early_media_from_the_phone_reaches_the_caller(gw: Gateway) -> None:
    await gw.start()
    phone = await gw.phone("1001", Script(answer_after=0.3, early_media=True))
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.ringing)
    await wait(call.answered)
    leg = await next_incoming(phone)
    assert call.early_sdp == phone._sdp() and leg.state is CallState.ANSWERED
    await carrier.hangup(call)


async def test_deleted_extension_stops_receiving_calls_after_the_sweep(gw: Gateway) -> None:
    server = await gw.start()
    await gw.phone("1001")
    assert (await gw.tenant.call("DELETE", "/v1/extensions/1001")).status == 204
    await server.b2bua.sweep()
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.ended)
    assert call.final_status == 480


async def test_stopping_the_gateway_hangs_up_answered_calls(gw: Gateway) -> None:
    server = await gw.start()
    phone = await gw.phone("1001")
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    leg = await next_incoming(phone)
    await server.stop()
    gw.server = None
    await wait(call.ended)
    await wait(leg.ended)
    assert call.ended_by == "remote" and leg.ended_by == "remote"


# -- internal and outgoing -----------------------------------------------------------------

async def test_internal_call_between_extensions_is_marked_internal(gw: Gateway) -> None:
    await gw.start()
    caller = await gw.phone("1001")
    callee = await gw.phone("2002")
    call = caller.call("2002")
    await wait(call.answered)
    leg = await next_incoming(callee)
    await caller.hangup(call)
    await wait(leg.ended)
    [record] = await gw.records()
    assert record["direction"] == "internal" and record["internal"] is True
    assert record["extension"] == "2002" and record["peer_extension"] == "1001"
    assert record["class"] == "incoming" and record["hangup_by"] == "caller"
    assert await gw.records(0, query="?internal=false") == []


async def test_outgoing_call_with_a_registered_rid_goes_out_through_the_trunk(
        gw: Gateway) -> None:
    resp = await gw.tenant.call("POST", "/v1/sender-numbers", json={"number": "0212345678"})
    assert resp.status == 201
    carrier = await gw.carrier()  # plays the carrier's side of the trunk
    await gw.start(trunks=[TrunkConfig(name="carrier", addresses=["127.0.0.2"],
                                       host="127.0.0.2", port=carrier.port)])
    carrier.gateway = Peer("UDP", *gw.address)
    await gw.extension("1001", rid="02-1234-5678", use_rid=True, caller_id="01099998888")
    phone = await gw.phone("1001", create=False)
    call = phone.call("01055556666")
    await wait(call.answered)
    out = await next_incoming(carrier)
    assert out.request.from_.uri.user == "0212345678"  # the RID is presented
    assert out.request.uri.user == "01055556666"
    await phone.hangup(call)
    await wait(out.ended)
    [record] = await gw.records()
    assert record["class"] == "outgoing" and record["caller"] == "0212345678"
    assert record["callee"] == "01055556666" and record["extension"] == "1001"


async def test_outgoing_calls_avoid_a_trunk_that_stopped_answering_keepalives(
        gw: Gateway) -> None:
    resp = await gw.tenant.call("POST", "/v1/sender-numbers", json={"number": "01099998888"})
    assert resp.status == 201
    carrier = await gw.carrier()
    server = await gw.start(trunk_keepalive_seconds=0, trunks=[
        TrunkConfig(name="dead", host="127.0.0.2", port=9),  # nothing listens there
        TrunkConfig(name="alive", addresses=["127.0.0.2"], host="127.0.0.2",
                    port=carrier.port)])
    carrier.gateway = Peer("UDP", *gw.address)
    server.b2bua.trunk_down.add("dead")  # as the keep-alive would have found
    await gw.extension("1001", caller_id="01099998888")
    phone = await gw.phone("1001", create=False)
    call = phone.call("01055556666")
    await wait(call.answered)
    await phone.hangup(call)
    assert (await gw.records())[0]["trunk"] == "alive"


async def test_a_trunk_answering_its_keepalive_is_marked_up_again(gw: Gateway) -> None:
    carrier = await gw.carrier()
    server = await gw.start(trunk_keepalive_seconds=0, trunks=[
        TrunkConfig(name="carrier", host="127.0.0.2", port=carrier.port)])
    server.b2bua.trunk_down.add("carrier")
    server.b2bua.probe_trunks()
    for _ in range(50):
        if not server.b2bua.trunk_down:
            break
        await asyncio.sleep(0.02)
    assert server.b2bua.trunk_down == set()


async def test_outgoing_call_answers_the_carriers_digest_challenge(gw: Gateway) -> None:
    resp = await gw.tenant.call("POST", "/v1/sender-numbers", json={"number": "01099998888"})
    assert resp.status == 201
    carrier = await gw.carrier()
    carrier.script = Script(challenge=("telgate-acct", "carrier-pass"))
    await gw.start(trunks=[TrunkConfig(
        name="carrier", addresses=["127.0.0.2"], host="127.0.0.2", port=carrier.port,
        outbound_username="telgate-acct", outbound_password="carrier-pass")])
    carrier.gateway = Peer("UDP", *gw.address)
    await gw.extension("1001", caller_id="01099998888")
    phone = await gw.phone("1001", create=False)
    call = phone.call("01055556666")
    await wait(call.answered)
    out = await next_incoming(carrier)
    assert "Proxy-Authorization" in out.request.headers
    await phone.hangup(call)
    assert (await gw.records())[0]["class"] == "outgoing"


async def test_outgoing_call_with_an_unregistered_caller_id_is_forbidden(gw: Gateway) -> None:
    await gw.start()
    await gw.extension("1001", caller_id="01099998888")  # not in the sender registry
    phone = await gw.phone("1001", create=False)
    call = phone.call("01055556666")
    await wait(call.ended)
    assert call.final_status == 403
    [record] = await gw.records()
    assert record["class"] == "outgoing_failed" and record["final_status"] == 403


async def test_outgoing_call_the_far_end_refuses_is_outgoing_failed(gw: Gateway) -> None:
    resp = await gw.tenant.call("POST", "/v1/sender-numbers", json={"number": "01099998888"})
    assert resp.status == 201
    carrier = await gw.carrier()
    carrier.script = Script(Behaviour.BUSY)
    await gw.start(trunks=[TrunkConfig(name="carrier", addresses=["127.0.0.2"],
                                       host="127.0.0.2", port=carrier.port)])
    carrier.gateway = Peer("UDP", *gw.address)
    await gw.extension("1001", caller_id="01099998888")
    phone = await gw.phone("1001", create=False)
    call = phone.call("01055556666")
    await wait(call.ended)
    assert call.final_status == 486
    assert (await gw.records())[0]["class"] == "outgoing_failed"


async def test_internal_call_to_an_unregistered_extension_is_missed(gw: Gateway) -> None:
    await gw.start()
    caller = await gw.phone("1001")
    call = caller.call("2002")
    await wait(call.ended)
    assert call.final_status == 480
    [record] = await gw.records()
    assert record["class"] == "missed" and record["internal"] is True


async def test_a_call_offered_without_sdp_gets_its_answer_in_the_ack(gw: Gateway) -> None:
    await gw.start()
    caller = await gw.phone("1001")
    callee = await gw.phone("2002")
    call = caller.call("2002", with_sdp=False)  # late offer: the callee's 200 carries it
    await wait(call.answered)
    assert call.remote_sdp.startswith(b"v=0")
    leg = await next_incoming(callee)
    assert leg.remote_sdp == b""
    await callee.hangup(leg)
    await wait(call.ended)
    assert (await gw.records())[0]["hangup_by"] == "callee"


# -- registrar and authentication ----------------------------------------------------------

async def test_wrong_password_and_unknown_extension_get_the_same_answer(gw: Gateway) -> None:
    await gw.start()
    info = await gw.extension("1001")
    wrong = SimPhone("1001", gateway=gw.address, domain=info["sip_domain"], password="nope-nope")
    unknown = SimPhone("1999", gateway=gw.address, domain=info["sip_domain"],
                       password=PASSWORD)
    for ua in (wrong, unknown):
        await ua.start()
        gw.uas.append(ua)
    assert await wrong.register() == 401
    assert await unknown.register() == 401


async def test_repeated_failures_lock_the_source_out(gw: Gateway) -> None:
    await gw.start(lockout_failures=3)
    info = await gw.extension("1001")
    bad = SimPhone("1001", gateway=gw.address, domain=info["sip_domain"], password="nope-nope")
    await bad.start()
    gw.uas.append(bad)
    # Each register() is up to two attempts (the phone reuses the last challenge first).
    statuses = [await bad.register() for _ in range(3)]
    assert statuses[0] == 401 and statuses[-1] == 403
    good = SimPhone("1001", gateway=gw.address, domain=info["sip_domain"], password=PASSWORD)
    await good.start()
    gw.uas.append(good)
    assert await good.register() == 403  # same source address: locked


async def test_a_nonce_from_before_a_restart_is_stale_not_a_failed_attempt(
        gw: Gateway) -> None:
    server = await gw.start(lockout_failures=1)
    info = await gw.extension("1001")
    phone = SimPhone("1001", gateway=gw.address, domain=info["sip_domain"], password=PASSWORD)
    await phone.start()
    gw.uas.append(phone)
    assert await phone.register() == 200
    # A restarted daemon has a new nonce secret: the phone's next REGISTER carries a nonce
    # it cannot verify, and must be re-challenged without counting against the address.
    server.b2bua.admission.digest._secret = b"another-process"
    assert await phone.register() == 200
    assert not server.b2bua.admission.lockout.is_locked("127.0.0.1", server.b2bua.now)


async def test_same_extension_number_in_two_tenants_reaches_each_tenants_phone(
        gw: Gateway) -> None:
    other = await gw.api.new_tenant("other")
    await gw.start(dids=[DidConfig(number=DID, tenant="acme", extensions=["1001"]),
                         DidConfig(number="0311112222", tenant="other", extensions=["1001"])])
    mine = await gw.phone("1001")
    theirs = await gw.phone("1001", tenant=other)
    carrier = await gw.carrier()
    call = carrier.dial("0311112222", "01012345678")
    await wait(call.answered)
    assert (await next_incoming(theirs)).state is CallState.ANSWERED
    assert mine.incoming.empty()
    await carrier.hangup(call)
    assert (await gw.records(tenant=other))[0]["did"] == "0311112222"
    assert await gw.records(0) == []


# -- the API -------------------------------------------------------------------------------

async def test_extension_api_is_tenant_scoped_and_never_returns_secrets(gw: Gateway) -> None:
    other = await gw.api.new_tenant("other")
    created = await gw.extension("1001", name="상담원1")
    assert "password" not in created and not any("ha1" in k for k in created)
    assert (await other.call("GET", "/v1/extensions/1001")).status == 404
    assert (await other.call("DELETE", "/v1/extensions/1001")).status == 404
    resp = await other.call("PATCH", "/v1/extensions/1001", json={"password": "another-pass"})
    assert resp.status == 404
    assert (await (await other.call("GET", "/v1/extensions")).json())["items"] == []
    mine = await (await gw.tenant.call("GET", "/v1/extensions")).json()
    assert [e["extension"] for e in mine["items"]] == ["1001"]
    dup = await gw.tenant.call("POST", "/v1/extensions",
                               json={"extension": "1001", "password": PASSWORD})
    assert dup.status == 409


async def test_extension_numbers_are_at_most_four_digits(gw: Gateway) -> None:
    resp = await gw.tenant.call("POST", "/v1/extensions",
                                json={"extension": "10001", "password": PASSWORD})
    assert resp.status == 422
    assert (await resp.json())["field"] == "extension"


async def test_password_is_stored_as_digest_hashes_only(gw: Gateway) -> None:
    await gw.extension("1001")
    async with gw.api.context.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM extensions")
    assert row is not None
    assert PASSWORD not in " ".join(str(v) for v in row.values())
    assert len(row["ha1_md5"]) == 32 and len(row["ha1_sha256"]) == 64


async def test_changed_password_is_the_one_phones_must_use(gw: Gateway) -> None:
    await gw.start()
    info = await gw.extension("1001")
    resp = await gw.tenant.call("PATCH", "/v1/extensions/1001",
                                json={"password": "brand-new-pass"})
    assert resp.status == 200
    old = SimPhone("1001", gateway=gw.address, domain=info["sip_domain"], password=PASSWORD)
    new = SimPhone("1001", gateway=gw.address, domain=info["sip_domain"],
                   password="brand-new-pass")
    for ua in (old, new):
        await ua.start()
        gw.uas.append(ua)
    assert await old.register() == 401
    assert await new.register() == 200


async def test_call_records_page_with_a_cursor_and_filter_by_class(gw: Gateway) -> None:
    await gw.start()
    await gw.phone("1001", Script(Behaviour.BUSY))
    carrier = await gw.carrier()
    for _ in range(3):
        call = carrier.dial(DID, "01012345678")
        await wait(call.ended)
    await gw.records(3)
    first = await (await gw.tenant.call("GET", "/v1/cdrs?limit=2")).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await (await gw.tenant.call(
        "GET", f"/v1/cdrs?limit=2&cursor={first['next_cursor']}")).json()
    assert len(rest["items"]) == 1 and rest["next_cursor"] is None
    ids = {r["id"] for r in first["items"] + rest["items"]}
    assert len(ids) == 3
    assert await gw.records(0, query="?class=incoming") == []
    assert len(await gw.records(3, query="?class=busy_missed")) == 3


async def test_demo_phone_answers_the_demo_did_and_stays_until_the_caller_hangs_up(
        gw: Gateway) -> None:
    server = await gw.start(dids=[DidConfig(number=DID, tenant="demo", extensions=["1001"])])
    stop = await start_demo(dataclasses.replace(SipConfig(), port=server.port),
                            gw.api.context.pool)
    try:
        carrier = await gw.carrier()
        call = carrier.dial(DID, "01012345678")
        await wait(call.answered)
        await asyncio.sleep(0.3)
        assert call.state is CallState.ANSWERED  # the phone does not hang up by itself
        assert await carrier.hangup(call) == 200
        async with gw.api.context.pool.acquire() as conn:
            demo = await conn.fetchval("SELECT id FROM tenants WHERE name = 'demo'")
        assert server.b2bua.registrar.contacts((demo, "1001"), server.b2bua.now)
    finally:
        await stop()


async def test_extension_and_call_record_routes_are_in_a_valid_openapi_document(
        gw: Gateway) -> None:
    resp = await gw.api.client.get("/v1/openapi.json")
    doc = await resp.json()
    validate(doc)
    assert {"/v1/extensions", "/v1/extensions/{extension}", "/v1/cdrs"} <= set(doc["paths"])
    assert set(doc["paths"]["/v1/extensions/{extension}"]) == {"get", "patch", "delete"}
