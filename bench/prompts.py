"""Prompts played by the media process: its CPU per prompt packet, and how late packets leave.

    .venv/bin/python -m bench.prompts [--steps 50,100,200] [--seconds 5]

Each step makes that many sessions and plays a looping prompt (hold music) to both legs of
each, so a step of N calls sends 2N streams of 50 packets/s; the legs point at a sink socket
nobody reads (the kernel drops what overflows), except one probe leg whose arrival times give
the packets' lateness against their 20 ms schedule. The media process's CPU time (utime+stime
from /proc) over the step, minus the same sessions' idle CPU measured first, divided by the
packets it sent (`prompt_packets` in `stats`), is the cost of one prompt packet. Prints one
JSON line per step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.media import cpu_seconds
from handlers.media.client import MediaProcess, MediaSettings, RelaySession
from handlers.media.interface import Side
from protocols.rtp.g711 import Codec
from protocols.rtp.packet import parse_rtp
from sim.media import tone_pattern


class Probe(asyncio.DatagramProtocol):
    """Arrival times of one leg's prompt packets, by RTP timestamp."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, int]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.arrivals.append((time.monotonic(), parse_rtp(data).timestamp))

    def lateness_ms(self) -> list[float]:
        """How much later than its 20 ms slot each packet arrived, against the earliest one."""
        if not self.arrivals:
            return []
        t0, ts0 = self.arrivals[0]
        offsets = [at - (t0 + ((ts - ts0) & 0xFFFFFFFF) / 8000) for at, ts in self.arrivals]
        floor = min(offsets)
        return [1000 * (o - floor) for o in offsets]


async def step(media: MediaProcess, calls: int, seconds: float, music: Path, sink: int) -> dict[str, Any]:
    assert media.pid is not None
    sessions: list[RelaySession] = []
    for n in range(calls):
        session = await media.create(f"bench-{calls}-{n}", Codec.PCMU, record=None)
        for side in Side:
            await session.point(side, "127.0.0.1", sink)
        sessions.append(session)
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(Probe, local_addr=("127.0.0.1", 0))
    await sessions[0].point(Side.A, "127.0.0.1", transport.get_extra_info("sockname")[1])
    await asyncio.sleep(0.5)
    idle0 = cpu_seconds(media.pid)
    await asyncio.sleep(seconds)
    idle = (cpu_seconds(media.pid) - idle0) / seconds
    for session in sessions:
        for side in Side:
            await session.play(side, music, loop=True, play_id="moh")
    await asyncio.sleep(1.0)
    probe.arrivals.clear()
    played0 = (await media.stats())["prompt_packets"]
    cpu0, t0 = cpu_seconds(media.pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, t1 = cpu_seconds(media.pid), time.monotonic()
    packets = (await media.stats())["prompt_packets"] - played0
    transport.close()
    for session in sessions:
        await session.close()
    busy = (cpu1 - cpu0) / (t1 - t0)
    late = sorted(probe.lateness_ms())
    return {"calls": calls, "streams": 2 * calls, "packets": packets,
            "packets_expected": round(2 * calls * 50 * (t1 - t0)),
            "cpu_share": round(busy, 4), "idle_cpu_share": round(idle, 4),
            "us_per_packet": round(1e6 * (busy - idle) * (t1 - t0) / packets, 2) if packets else None,
            "probe_late_ms_p50": round(statistics.median(late), 2) if late else None,
            "probe_late_ms_p99": round(late[int(0.99 * (len(late) - 1))], 2) if late else None}


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        music = root / "moh.pcmu"
        music.write_bytes(tone_pattern(Codec.PCMU, 3.0))
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sink.bind(("127.0.0.1", 0))
        low = random.randrange(10000, 12000, 2)
        media = MediaProcess(MediaSettings(control_path=root / "media.sock", recordings=root / "rec",
                                           port_low=low, port_high=low + 4 * max(args.steps) + 8))
        await media.start()
        try:
            for calls in args.steps:
                print(json.dumps(await step(media, calls, args.seconds, music, sink.getsockname()[1])),
                      flush=True)
        finally:
            await media.stop()
            sink.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[50, 100, 200])
    ap.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
