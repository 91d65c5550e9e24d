"""The client's window: a freed slot goes to the oldest urgent request first, then the oldest
other one, so a verification code does not queue behind a bulk send's submits."""

from __future__ import annotations

import asyncio

from protocols.smpp.client import _Window


async def test_urgent_requests_take_freed_slots_before_older_bulk_ones() -> None:
    window = _Window(1)
    await window.acquire()  # the window is full
    order: list[str] = []

    async def wait(name: str, urgent: bool) -> None:
        await window.acquire(urgent)
        order.append(name)

    tasks = [asyncio.create_task(wait(f"bulk{i}", False)) for i in range(3)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(wait("code", True)), asyncio.create_task(wait("single", True))]
    await asyncio.sleep(0)
    for _ in range(5):
        window.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["code", "single", "bulk0", "bulk1", "bulk2"]


async def test_a_free_slot_is_taken_at_once_whatever_the_urgency() -> None:
    window = _Window(2)
    await window.acquire()
    await asyncio.wait_for(window.acquire(urgent=False), 1)
    window.release()
    await asyncio.wait_for(window.acquire(urgent=True), 1)
