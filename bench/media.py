"""Relayed (and recorded) G.711 calls: packet loss and delay through telgate's media process,
through rtpengine-daemon (userspace forwarding, NG protocol) and, as the floor, straight from
sender to receiver, side by side.

    .venv/bin/python -m bench.media [--steps 50,100,200,400] [--seconds 5] [--runs 3]
                                    [--systems telgate] [--with-send 20000]

Each call is two RTP streams (customer -> agent, agent -> customer), 20 ms PCMU packets of 160
bytes, sent by a separate generator process whose streams are spread over the 20 ms period:
bench/rtpgen/rtpgen.c compiled with the system's cc (so the generator takes little of the CPU
the relay needs), or the Python generator below without a compiler.
Every payload carries its send time (CLOCK_MONOTONIC, shared by the processes), so delay is
receive time minus send time; loss is packets sent minus received after a 0.5 s drain. For
each system the steps are tried in order until a step loses packets. The relay's CPU time
(utime+stime from /proc, all threads) over the step gives its share of one core and the calls
one core would carry at that load. Prints a table and one JSON line per step, then a summary.

Systems:
  telgate      handlers.media.process, every call recorded (stereo WAV) in a temporary directory
  telgate-norec  the same, relay only (--systems telgate-norec; not in the default set)
  rtpengine    rtpengine-daemon --table=-1 (no kernel module), log level 4, relay only
  rtpengine+rec  the same with --recording-method=pcap and record-call=yes (its userspace recording)
  direct       no relay: the generator's own loopback floor
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import random
import resource
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from handlers.media.client import MediaProcess, MediaSettings
from handlers.media.interface import RecordingRequest, RecordingStatus, Side
from protocols.rtp.g711 import Codec
from protocols.rtp.ng import ng_reply, ng_request

PTIME = 0.020
GROUPS = 10  # streams are spread over the period in this many phases
_HEADER = struct.Struct("!BBHII")
_SENT_AT = struct.Struct("!q")


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def sdp(port: int) -> bytes:
    return (f"v=0\r\no=bench {port} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n").encode()


def sdp_port(body: bytes) -> int:
    for line in body.decode().splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise ValueError("no m=audio in answer")


# ---- the generator (its own process) ----------------------------------------------------------

def generator(conn: Connection, streams: int, seconds: float) -> None:
    """Bind `streams` sockets, report their ports, get each one's destination, send and receive."""
    raise_nofile()
    socks = []
    for _ in range(streams):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        socks.append(s)
    conn.send([s.getsockname()[1] for s in socks])
    destinations: list[tuple[str, int]] = conn.recv()
    ep = select.epoll()
    by_fd = {s.fileno(): s for s in socks}
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    packet = bytearray(12 + 160)
    packet[20:] = b"\xff" * 152
    ssrcs = [random.getrandbits(32) for _ in socks]
    groups = [list(range(g, streams, GROUPS)) for g in range(GROUPS)]
    delays: list[int] = []
    received = 0
    sent = 0
    buf = bytearray(2048)
    start = time.monotonic() + 0.05
    frames = int(seconds / PTIME)
    cpu0 = time.process_time()

    def drain(until: float) -> None:
        nonlocal received
        while True:
            wait = until - time.monotonic()
            if wait <= 0:
                return
            for fd, _ in ep.poll(wait):
                s = by_fd[fd]
                while True:
                    try:
                        n = s.recv_into(buf)
                    except BlockingIOError:
                        break
                    now = time.monotonic_ns()
                    if n >= 20:
                        delays.append(now - _SENT_AT.unpack_from(buf, 12)[0])
                        received += 1

    for frame in range(frames):
        for g, members in enumerate(groups):
            due = start + frame * PTIME + g * PTIME / GROUPS
            drain(due)
            for i in members:
                _HEADER.pack_into(packet, 0, 0x80, 0, frame & 0xFFFF, (frame * 160) & 0xFFFFFFFF, ssrcs[i])
                _SENT_AT.pack_into(packet, 12, time.monotonic_ns())
                try:
                    socks[i].sendto(packet, destinations[i])
                    sent += 1
                except OSError:
                    pass
    drain(time.monotonic() + 0.5)
    cpu = time.process_time() - cpu0
    d = np.array(delays, dtype=np.int64) / 1e6 if delays else np.zeros(1)
    conn.send({"sent": sent, "received": received, "p50_ms": float(np.percentile(d, 50)),
               "p99_ms": float(np.percentile(d, 99)), "max_ms": float(d.max()),
               "generator_cpu": cpu / (seconds + 0.5)})
    for s in socks:
        s.close()


# ---- relays -------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Telgate:
    def __init__(self, root: Path, *, record: bool = True) -> None:
        self.name = "telgate" if record else "telgate-norec"
        self.record = record
        low = random.randrange(10000, 12000, 2)  # below the ephemeral range (32768-)
        sock = root / f"media-{self.name}.sock"
        self.media = MediaProcess(MediaSettings(control_path=sock, recordings=root / "rec",
                                                port_low=low, port_high=low + 10000))
        self.sessions: list[Any] = []

    @property
    def pid(self) -> int | None:
        return self.media.pid

    async def start(self) -> None:
        await self.media.start()

    async def stop(self) -> None:
        await self.media.stop()

    async def setup(self, ports: list[int]) -> list[tuple[str, int]]:
        dests: list[tuple[str, int]] = []
        for i in range(0, len(ports), 2):
            call = f"bench-{time.monotonic_ns()}-{i}"
            s = await self.media.create(call, Codec.PCMU, record=RecordingRequest() if self.record else None)
            await s.offer(Side.A, sdp(ports[i]))
            await s.answer(Side.B, sdp(ports[i + 1]))
            await s.answered()
            self.sessions.append(s)
            dests += [(s.address, s.ports[Side.A]), (s.address, s.ports[Side.B])]
        return dests

    async def teardown(self) -> dict[str, Any]:
        results = [await s.close() for s in self.sessions]
        self.sessions = []
        ok = sum(r.status is RecordingStatus.OK for r in results)
        for r in results:  # keep the disk small between steps
            if r.path:
                with contextlib.suppress(OSError):
                    os.unlink(r.path)
        return {"recordings_ok": ok, "recordings": len(results)}


class Rtpengine:
    def __init__(self, root: Path, *, record: bool) -> None:
        self.name = "rtpengine+rec" if record else "rtpengine"
        self.record = record
        self.root = root
        self.proc: asyncio.subprocess.Process | None = None
        self.ng = ("127.0.0.1", random.randrange(9000, 10000))
        low = random.randrange(20000, 22000, 2)
        self.args = ["--config-file=none", "--foreground", "--log-stderr", "--table=-1",
                     "--interface=127.0.0.1", f"--listen-ng={self.ng[0]}:{self.ng[1]}",
                     f"--port-min={low}", f"--port-max={low + 10000}", "--log-level=4",
                     f"--num-threads={os.cpu_count()}", "--timeout=60", "--delete-delay=0"]
        if record:
            (root / "rtpengine-rec").mkdir(exist_ok=True)
            self.args += [f"--recording-dir={root / 'rtpengine-rec'}", "--recording-method=pcap"]
        self.calls: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)
        self._cookie = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self, message: dict[str, Any]) -> dict[str, Any]:
        self._cookie += 1
        cookie = str(self._cookie)
        self.sock.sendto(ng_request(cookie, message), self.ng)
        while True:
            got, reply = ng_reply(self.sock.recv(65535))
            if got == cookie:
                if reply.get("result") != b"ok" and message["command"] != "ping":
                    raise RuntimeError(f"rtpengine {message['command']}: {reply}")
                return reply

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "rtpengine", *self.args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            cwd=self.root)  # rtpengine 10.5 has dumped core at shutdown: keep it out of the work tree
        for _ in range(50):
            await asyncio.sleep(0.1)
            with contextlib.suppress(OSError, TimeoutError):
                self.sock.settimeout(0.2)
                if self.command({"command": "ping"}).get("result") == b"pong":
                    self.sock.settimeout(2.0)
                    return
        raise RuntimeError("rtpengine did not answer ping")

    async def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            await self.proc.wait()

    async def setup(self, ports: list[int]) -> list[tuple[str, int]]:
        dests: list[tuple[str, int]] = []
        for i in range(0, len(ports), 2):
            call = f"bench-{time.monotonic_ns()}-{i}"
            offer: dict[str, Any] = {"command": "offer", "call-id": call, "from-tag": "a",
                                     "sdp": sdp(ports[i])}
            if self.record:
                offer["record call"] = "yes"
            to_agent = sdp_port(self.command(offer)["sdp"])
            to_customer = sdp_port(self.command({"command": "answer", "call-id": call, "from-tag": "a",
                                                 "to-tag": "b", "sdp": sdp(ports[i + 1])})["sdp"])
            self.calls.append(call)
            dests += [("127.0.0.1", to_customer), ("127.0.0.1", to_agent)]
        return dests

    async def teardown(self) -> dict[str, Any]:
        for call in self.calls:
            self.command({"command": "delete", "call-id": call, "from-tag": "a"})
        self.calls = []
        if self.record:
            for f in (self.root / "rtpengine-rec").rglob("*.pcap"):
                with contextlib.suppress(OSError):
                    f.unlink()
        return {}


class Direct:
    name = "direct"
    pid = None

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def setup(self, ports: list[int]) -> list[tuple[str, int]]:
        dests: list[tuple[str, int]] = []
        for i in range(0, len(ports), 2):
            dests += [("127.0.0.1", ports[i + 1]), ("127.0.0.1", ports[i])]
        return dests

    async def teardown(self) -> dict[str, Any]:
        return {}


# ---- driver -------------------------------------------------------------------------------------

@dataclass
class Step:
    system: str
    calls: int
    run: int
    sent: int
    lost: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    relay_cpu: float | None  # share of one core
    generator_cpu: float
    extra: dict[str, Any]
    load: float  # the machine's 1-minute load average at the end of the step

    @property
    def calls_per_core(self) -> float | None:
        return self.calls / self.relay_cpu if self.relay_cpu else None


RTPGEN_SOURCE = Path(__file__).parent / "rtpgen" / "rtpgen.c"


def build_rtpgen(root: Path) -> Path | None:
    """The C generator (bench/rtpgen/rtpgen.c), compiled once; None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    binary = root / "rtpgen"
    subprocess.run([cc, "-O2", "-o", str(binary), str(RTPGEN_SOURCE)], check=True)
    return binary


async def one_step(system: Any, calls: int, seconds: float, run: int, rtpgen: Path | None) -> Step:
    if rtpgen is not None:
        return await one_step_c(system, calls, seconds, run, rtpgen)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=generator, args=(child, 2 * calls, seconds))
    proc.start()
    loop = asyncio.get_running_loop()
    ports = await loop.run_in_executor(None, parent.recv)
    dests = await system.setup(ports)
    pid = system.pid
    cpu0, t0 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
    parent.send(dests)
    result = await loop.run_in_executor(None, parent.recv)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) if pid else None
    await loop.run_in_executor(None, proc.join)
    extra = await system.teardown()
    return Step(system.name, calls, run, result["sent"], result["sent"] - result["received"],
                result["p50_ms"], result["p99_ms"], result["max_ms"], cpu, result["generator_cpu"], extra,
                os.getloadavg()[0])


async def one_step_c(system: Any, calls: int, seconds: float, run: int, rtpgen: Path) -> Step:
    proc = await asyncio.create_subprocess_exec(str(rtpgen), str(2 * calls), str(seconds),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    ports = [int(p) for p in (await proc.stdout.readline()).split()]
    dests = await system.setup(ports)
    pid = system.pid
    cpu0, t0 = (cpu_seconds(pid) if pid else 0.0), time.monotonic()
    proc.stdin.write((" ".join(str(port) for _, port in dests) + "\n").encode())
    await proc.stdin.drain()
    result = json.loads(await proc.stdout.readline())
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) if pid else None
    await proc.wait()
    extra = await system.teardown()
    return Step(system.name, calls, run, result["sent"], result["sent"] - result["received"],
                result["p50_ms"], result["p99_ms"], result["max_ms"], cpu, result["generator_cpu"], extra,
                os.getloadavg()[0])


def print_step(s: Step) -> None:
    cpu = f"{100 * s.relay_cpu:5.1f}%" if s.relay_cpu is not None else "   - "
    per_core = f"{s.calls_per_core:6.0f}" if s.calls_per_core else "     -"
    print(f"{s.system:14} {s.calls:5} run{s.run} sent {s.sent:7} lost {s.lost:5} "
          f"p50 {s.p50_ms:6.2f} ms p99 {s.p99_ms:6.2f} ms max {s.max_ms:6.1f} ms  relay cpu {cpu} "
          f"calls/core {per_core}  gen cpu {100 * s.generator_cpu:4.0f}% load {s.load:.1f} {s.extra or ''}",
          flush=True)
    print(json.dumps({"bench": "media", **{k: v for k, v in s.__dict__.items()},
                      "calls_per_core": s.calls_per_core}), flush=True)


class BulkSend:
    """A telgate daemon sending SMS to the SMSC simulator (SIP off, so no second media process),
    used to load the machine the way a 20,000-recipient send does while calls are relayed."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._stack = contextlib.AsyncExitStack()
        self.base = ""
        self.key = ""
        self.dsn = ""
        self._http: Any = None
        self._offset = 0

    async def __aenter__(self) -> BulkSend:
        from bench import messaging as m

        smsc_port = m.free_port()
        await self._stack.enter_async_context(m.child(
            [sys.executable, "-m", "sim.smsc", "--port", str(smsc_port), "--account", "telgate:bench"],
            log=self.work / "smsc.log"))
        await m.wait_port(smsc_port)
        from config import load_config
        from daemon.embedded_pg import EmbeddedPostgres

        config = load_config(None, {"TELGATE_STATE_DIR": str(self.work / "state")})
        pg = EmbeddedPostgres(config.state_dir, config.database.embedded)
        await pg.start()
        self._stack.push_async_callback(pg.stop)
        self.dsn = pg.dsn
        self.key = await m.prepare_tenant(pg.dsn)
        api_port = m.free_port()
        cfg = self.work / "telgate.toml"
        m.daemon_config(cfg, api_port, smsc_port, 2, 200, "warning")
        cfg.write_text(cfg.read_text() + "\n[sip]\nenabled = false\n")
        env = {**os.environ, "TELGATE_STATE_DIR": str(self.work / "state"),
               "TELGATE_DATABASE__DSN": json.dumps(pg.dsn), "PYTHONPATH": str(m.ROOT)}
        self.base = f"http://127.0.0.1:{api_port}"
        proc = await self._stack.enter_async_context(m.child(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(cfg)], env=env,
            log=self.work / "daemon.log"))
        import aiohttp

        self._http = await self._stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)))
        await m.wait_ready(self._http, self.base, proc)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def send(self, recipients: int) -> dict[str, Any]:
        """`recipients` accepted in 20 requests and delivered with receipts; its msg/s."""
        from bench import messaging as m

        to = [f"010{5000_0000 + self._offset + i:08d}" for i in range(recipients)]
        self._offset += recipients
        result: dict[str, Any] = await m.telgate_throughput(
            self._http, self.base, self.key, self.dsn, to, max(1, recipients // 20), 4)
        return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="50,100,200,300,400,600")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--systems", default="direct,telgate,rtpengine,rtpengine+rec")
    parser.add_argument("--python-generator", action="store_true",
                        help="use the Python generator even when a C compiler is present")
    parser.add_argument("--with-send", type=int, default=0, metavar="N",
                        help="while each telgate step runs, a telgate daemon sends N SMS recipients "
                             "through the SMSC simulator (the issue's 20,000-recipient send)")
    args = parser.parse_args()
    raise_nofile()
    steps = [int(x) for x in args.steps.split(",")]
    print(f"# machine: {platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"# G.711 PCMU 20 ms, {args.seconds} s per step, {args.runs} runs per step")
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="telgate-bench-media-") as tmp:
        root = Path(tmp)
        rtpgen = None if args.python_generator else build_rtpgen(root)
        print(f"# generator: {'bench/rtpgen/rtpgen.c' if rtpgen else 'Python (bench.media.generator)'}, "
              f"own process")
        systems: list[Any] = []
        for name in args.systems.split(","):
            if name in ("telgate", "telgate-norec"):
                systems.append(Telgate(root, record=name == "telgate"))
            elif name.startswith("rtpengine"):
                if shutil.which("rtpengine") is None:
                    print("# rtpengine: not installed (apt-get install rtpengine-daemon); skipped")
                    continue
                systems.append(Rtpengine(root, record=name.endswith("+rec")))
            elif name == "direct":
                systems.append(Direct())
        for system in systems:
            await system.start()
            if isinstance(system, Rtpengine):
                print(f"# {system.name}: rtpengine {' '.join(system.args)}")
            if isinstance(system, Telgate):
                s = system.media.settings
                print(f"# {system.name}: python -m handlers.media.process --ports {s.port_low}-{s.port_high} "
                      f"(one process, epoll), {'recording every call' if system.record else 'no recording'}")
            best: dict[str, Any] | None = None
            bulk = None
            if args.with_send and isinstance(system, Telgate):
                (root / "bulk").mkdir(exist_ok=True)
                bulk = await BulkSend(root / "bulk").__aenter__()
                print(f"# {system.name}: each step runs beside a {args.with_send}-recipient SMS send "
                      f"(daemon, embedded PostgreSQL and SMSC simulator on the same machine)")
            label = system.name + (" +send" if bulk else "")
            try:
                for calls in steps:
                    runs: list[Step] = []
                    for run in range(args.runs):
                        sending = asyncio.create_task(bulk.send(args.with_send)) if bulk else None
                        runs.append(await one_step(system, calls, args.seconds, run, rtpgen))
                        if sending is not None:
                            sent = await sending
                            print(json.dumps({"bench": "media_bulk_send", "calls": calls, "run": run,
                                              **sent}), flush=True)
                    for r in runs:
                        print_step(r)
                    lossless = all(r.lost == 0 for r in runs)
                    p99s = [r.p99_ms for r in runs]
                    cores = [r.calls_per_core for r in runs if r.calls_per_core]
                    row = {"calls": calls, "lost": [r.lost for r in runs],
                           "p99_ms_median": statistics.median(p99s),
                           "p99_ms_range": [min(p99s), max(p99s)],
                           "p50_ms_median": statistics.median([r.p50_ms for r in runs]),
                           "calls_per_core_median": statistics.median(cores) if cores else None,
                           "relay_cpu_median": statistics.median([r.relay_cpu for r in runs if r.relay_cpu])
                           if cores else None}
                    summary.setdefault(label, {}).setdefault("steps", {})[calls] = row
                    if lossless:
                        best = row
                    else:
                        print(f"# {system.name}: loss at {calls} calls; stopping")
                        summary.setdefault(label, {})["first_loss"] = row
                        break
            finally:
                if bulk is not None:
                    await bulk.__aexit__(None, None, None)
                await system.stop()
            summary.setdefault(label, {})["best_lossless"] = best
    print("# summary: best lossless step per system; telgate / rtpengine at the same steps")
    for name, data in summary.items():
        best = data.get("best_lossless") or {}
        first_loss = data.get("first_loss", {}).get("calls")
        print(f"{name:14} best lossless {best.get('calls')} calls, p99 {best.get('p99_ms_median')} ms, "
              f"calls/core {best.get('calls_per_core_median')}, first loss {first_loss}")
    ours = summary.get("telgate", {}).get("steps", {})
    for other in ("rtpengine", "rtpengine+rec"):
        theirs = summary.get(other, {}).get("steps", {})
        for calls in sorted(set(ours) & set(theirs)):
            a, b = ours[calls], theirs[calls]
            if a["calls_per_core_median"] and b["calls_per_core_median"]:
                print(f"ratio telgate/{other} at {calls} calls: relay CPU efficiency "
                      f"{a['calls_per_core_median'] / b['calls_per_core_median']:.2f}, "
                      f"p99 {a['p99_ms_median']:.2f} vs {b['p99_ms_median']:.2f} ms")
    print(json.dumps({"bench": "media_summary", **summary}))


if __name__ == "__main__":
    asyncio.run(main())
