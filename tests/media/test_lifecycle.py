"""Ports and sockets come back on every end path: 1,000 sessions ended each way a call can
end leave the media process with exactly the descriptors it started with."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from handlers.errors import DomainError
from handlers.media.client import MediaProcess
from handlers.media.interface import EventKind, MediaEvent, RecordingRequest, Side
from protocols.rtp.g711 import Codec
from sim.media import RtpPeer
from tests.media.events import Events

pytestmark = pytest.mark.slow
_ids = itertools.count()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def test_no_port_or_socket_is_left_after_1000_sessions_ended_every_way(
        media: MediaProcess, tmp_path: Path) -> None:
    assert media.pid is not None
    await media.stats()  # a round trip: our own control connection is accepted by now
    baseline = open_fds(media.pid)
    customer, agent = await RtpPeer.open(), await RtpPeer.open()
    not_a_directory = tmp_path / "file"
    not_a_directory.write_bytes(b"")  # so the recording cannot be created under it
    given_ports: set[int] = set()
    outcomes: dict[str, int] = {}

    async def session(record: RecordingRequest | None = None, timeout: float | None = None,
                      events: list[MediaEvent] | None = None):  # type: ignore[no-untyped-def]
        s = await media.create(f"c{next(_ids)}", Codec.PCMU, record=record, timeout=timeout,
                               on_event=events.append if events is not None else None)
        given_ports.update(s.ports.values())
        return s

    async def before_any_sdp() -> str:
        await (await session()).close()
        return "none"

    async def after_the_offer_only() -> str:  # caller hung up while ringing
        s = await session(RecordingRequest())
        await s.offer(Side.A, customer.sdp())
        return (await s.close()).status.value

    async def talked_and_recorded() -> str:
        s = await session(RecordingRequest())
        await s.offer(Side.A, customer.sdp())
        await s.answer(Side.B, agent.sdp())
        await s.answered()
        for p in customer.packets(Codec.PCMU, b"\x01" * 320):
            customer.send((s.address, s.ports[Side.A]), p)
        for p in agent.packets(Codec.PCMU, b"\x02" * 320):
            agent.send((s.address, s.ports[Side.B]), p)
        await s.hold(Side.A)
        await s.repoint(Side.B, agent.sdp())
        return (await s.close()).status.value

    async def rtp_timeout() -> str:
        events = Events()
        s = await session(timeout=0.2, events=events)
        await s.answered()
        await events.wait_for(EventKind.TIMEOUT)
        return (await s.close()).status.value

    async def recording_failed() -> str:
        s = await session(RecordingRequest(path=str(not_a_directory / "x.wav")))
        await s.answered()
        return (await s.close()).status.value

    async def closed_twice() -> str:
        s = await session()
        first = await s.close()
        assert await s.close() is first
        return first.status.value

    async def engine_connection_lost() -> str:
        reader, writer = await asyncio.open_unix_connection(str(media.settings.control_path))
        for n in range(2):
            writer.write(json.dumps({"id": n, "op": "create", "call": f"orphan{next(_ids)}",
                                     "record": {"customer": "b"}}).encode() + b"\n")
            writer.write(json.dumps({"id": 10 + n, "op": "answered", "call": "nonexistent"}).encode() + b"\n")
        for _ in range(4):
            reply = json.loads(await reader.readline())
            if "ports" in reply:
                given_ports.update(reply["ports"].values())
        writer.close()
        await writer.wait_closed()
        return "orphaned"

    ways: list[Callable[[], Awaitable[str]]] = [before_any_sdp, after_the_offer_only, talked_and_recorded,
                                                rtp_timeout, recording_failed, closed_twice,
                                                engine_connection_lost]
    done = 0
    while done < 1000:
        batch = [ways[(done + i) % len(ways)] for i in range(min(49, 1000 - done))]
        for way, outcome in zip(batch, await asyncio.gather(*(w() for w in batch)), strict=True):
            key = f"{way.__name__}:{outcome}"
            outcomes[key] = outcomes.get(key, 0) + 1
        done += len(batch)

    with pytest.raises(DomainError) as refused:
        await media.request("close", call="never-created")
    assert refused.value.code == "media_unknown_call"
    await asyncio.sleep(0.2)  # the orphaned connections' hang-ups reach the media process
    stats = await media.stats()
    assert (stats["calls"], stats["ports_in_use"], stats["media_sockets"]) == (0, 0, 0)
    assert stats["calls_created"] == stats["calls_closed"] >= 1000
    async with asyncio.timeout(10):  # files of orphaned sessions may still be closing
        while open_fds(media.pid) != baseline:  # noqa: ASYNC110 - another process: nothing to await
            await asyncio.sleep(0.1)
    assert outcomes["talked_and_recorded:ok"] >= 140
    assert outcomes["recording_failed:failed"] >= 140
    assert outcomes["rtp_timeout:none"] >= 140
    for port in sorted(given_ports):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))  # free again
    assert len(given_ports) > 100
