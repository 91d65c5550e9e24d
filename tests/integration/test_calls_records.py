"""Call records are readable the moment a call has ended, with why it ended; the tenant's
maximum call duration is honoured."""

from __future__ import annotations

from tests.integration.test_calls import DID, Gateway, gw, next_incoming, wait

__all__ = ["gw"]


async def test_the_record_is_listed_as_soon_as_the_hangup_is_answered(gw: Gateway) -> None:
    await gw.start()
    await gw.phone("1001")
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    assert await carrier.hangup(call) == 200
    resp = await gw.tenant.call("GET", "/v1/cdrs")  # no waiting, no flush
    [record] = (await resp.json())["items"]
    assert (record["class"], record["hangup_by"], record["end_reason"]) == \
        ("incoming", "caller", "normal")


async def test_a_tenant_maximum_call_duration_ends_the_call_and_says_so(gw: Gateway) -> None:
    async with gw.api.context.pool.acquire() as conn:
        await conn.execute("UPDATE tenants SET settings = settings || $2::jsonb WHERE id = $1",
                           gw.tenant.id, {"max_call_seconds": 1})
    await gw.start()
    phone = await gw.phone("1001")
    carrier = await gw.carrier()
    call = carrier.dial(DID, "01012345678")
    await wait(call.answered)
    leg = await next_incoming(phone)
    await wait(call.ended)
    await wait(leg.ended)
    assert call.ended_by == "remote" and leg.ended_by == "remote"
    [record] = await gw.records()
    assert record["end_reason"] == "max_duration" and record["hangup_by"] == "system"
