"""Registrations kept in PostgreSQL: shown by the API, shared by instances, kept on restart."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sim.sip.phone import SimPhone
from tests.integration.test_calls import DID, PASSWORD, Gateway, gw, next_incoming, wait

__all__ = ["gw"]


async def test_an_extension_shows_its_registered_contacts(gw: Gateway) -> None:
    await gw.start()
    await gw.phone("1001")
    tcp = await gw.phone("1001", transport="TCP", create=False)
    body = await (await gw.tenant.call("GET", "/v1/extensions/1001")).json()
    contacts = {c["transport"]: c for c in body["contacts"]}
    assert set(contacts) == {"UDP", "TCP"}
    # Over TCP calls go down the connection the phone registered on, not to its listener.
    assert contacts["TCP"]["uri"] == f"sip:1001@127.0.0.1:{tcp.port};transport=tcp"
    assert contacts["TCP"]["address"].startswith("127.0.0.1:")
    expires = datetime.fromisoformat(contacts["UDP"]["expires_at"])
    assert timedelta(seconds=290) < expires - datetime.now(UTC) <= timedelta(seconds=300)


async def test_unregistering_removes_the_contact(gw: Gateway) -> None:
    await gw.start()
    phone = await gw.phone("1001")
    assert await phone.register(expires=0) == 200
    body = await (await gw.tenant.call("GET", "/v1/extensions/1001")).json()
    assert body["contacts"] == []


async def test_a_second_instance_on_the_same_database_reaches_a_phone_registered_at_the_first(
        gw: Gateway) -> None:
    first = await gw.start()
    phone = await gw.phone("1001")
    second_gw = Gateway(gw.api, gw.tenant)
    second = await second_gw.start()
    try:
        for _ in range(100):  # followed through LISTEN/NOTIFY
            if len(second.b2bua.registrar):
                break
            await asyncio.sleep(0.02)
        carrier = await second_gw.carrier()
        call = carrier.dial(DID, "01012345678")
        await wait(call.answered)
        leg = await next_incoming(phone)
        await carrier.hangup(call)
        await wait(leg.ended)
    finally:
        await carrier.close()
        await second.stop()
    del first


async def test_a_restarted_gateway_reaches_a_phone_without_it_registering_again(
        gw: Gateway) -> None:
    server = await gw.start()
    port = server.port
    info = await gw.extension("1001")
    phone = SimPhone("1001", gateway=gw.address, domain=info["sip_domain"], password=PASSWORD)
    await phone.start()
    gw.uas.append(phone)
    assert await phone.register() == 200
    await server.stop()
    gw.server = None
    await gw.start(port=port)
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    await carrier.hangup(call)
    [record] = await gw.records()
    assert record["extension"] == "1001" and record["end_reason"] == "normal"
