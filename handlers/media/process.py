"""The media process: RTP relaying and recording on its own event loop, away from the API's.

It owns every RTP socket and recording file, and is driven over a Unix stream socket speaking
JSON lines (`docs/media.md` lists the commands). A plain epoll loop rather than asyncio: each
wake-up drains every ready socket, which keeps the per-packet cost to a few microseconds.
Prompts (IVR, hold music) are sent from the same loop: a heap of the plays' next due times
sets how long epoll may wait, so each packet leaves on its 20 ms mark.

Run: ``python -m handlers.media.process --control /path/media.sock --ports 16384-32767``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import heapq
import itertools
import json
import os
import re
import resource
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from handlers.media.interface import RecordingResult, RecordingStatus
from handlers.media.ports import PortPool, PortsExhausted
from handlers.media.prompt_cache import PromptCache, PromptUnavailable
from handlers.media.recorder import Recorder
from handlers.media.relay import RelayCall
from protocols.rtp.g711 import Codec
from protocols.rtp.player import Playback, RtpStream

log = structlog.get_logger("media")
SIDES = {"a": 0, "b": 1}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._@-]")
_READ_BURST = 64  # datagrams taken from one socket per wake-up before looking at the others
_FLUSH_SLICES = 5  # each tick flushes one slice of the recorders, so no tick writes them all


class ControlError(Exception):
    """A command the media process refuses; `code` goes back to the client."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(slots=True)
class Entry:
    """A call with its four sockets (A RTP, A RTCP, B RTP, B RTCP) and the client that owns it."""

    call: RelayCall
    sockets: tuple[socket.socket, socket.socket, socket.socket, socket.socket]
    owner: int
    codec: Codec
    record_path: Path | None
    failure_reported: bool = False
    plays: list[Play | None] = field(default_factory=lambda: [None, None])  # per leg, A then B
    streams: list[RtpStream | None] = field(default_factory=lambda: [None, None])  # kept across plays


@dataclass(slots=True, eq=False)
class Play:
    """A prompt being sent to one leg; `active` goes False when it ends, is replaced or stopped
    (its stale entry in the heap is then skipped)."""

    entry: Entry
    leg: int
    playback: Playback
    play_id: str
    active: bool = True


@dataclass(slots=True)
class Client:
    sock: socket.socket
    inbuf: bytes = b""
    outbuf: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class Counters:
    calls_created: int = 0
    calls_closed: int = 0
    recording_failures: int = 0
    send_errors: int = 0
    timeouts: int = 0
    plays_started: int = 0
    prompt_packets: int = 0


class MediaLoop:
    """The relay: control connections, media sockets, recorders, timers."""

    def __init__(self, control_path: Path, pool: PortPool, recordings: Path, *,
                 timeout: float = 60.0, hold_timeout: float = 3600.0, tick: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.recordings = recordings
        self.timeout = timeout
        self.hold_timeout = hold_timeout
        self.counters = Counters()
        self._tick = tick
        self._clock = clock
        self._epoll = select.epoll()
        self._calls: dict[str, Entry] = {}
        # fd -> (entry, leg index, is RTCP, socket)
        self._media: dict[int, tuple[Entry, int, bool, socket.socket]] = {}
        self._clients: dict[int, Client] = {}
        self._prompts = PromptCache()
        # (next due time, tie-break, play) of every play; entries of ended plays linger until due
        self._due: list[tuple[float, int, Play]] = []
        self._due_order = itertools.count()
        # One thread for all file work (recordings' writes, closes, digests), in order: a slow
        # disk delays recordings, never the loop.
        self._disk = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="media-disk")
        self._batch: list[Callable[[], None]] = []  # file jobs of this tick, handed over together
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        with contextlib.suppress(FileNotFoundError):
            control_path.unlink()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(control_path))
        self._server.listen(16)
        self._server.setblocking(False)
        self._epoll.register(self._server.fileno(), select.EPOLLIN)
        self._control_path = control_path
        self._running = True
        self._ticks = 0
        self._parent = os.getppid()
        # recordings being finished: (call, (client fd, request id) to answer, result)
        self._pending: list[concurrent.futures.Future[tuple[Entry, tuple[int, Any] | None,
                                                            RecordingResult]]] = []

    # ---- loop -------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until `shutdown` (command or SIGTERM)."""
        next_tick = self._clock() + self._tick
        next_second = self._clock() + 1.0
        while self._running:
            wake = min(next_tick, self._due[0][0]) if self._due else next_tick
            wait = max(0.0, wake - self._clock())
            try:
                events = self._epoll.poll(wait)
            except InterruptedError:
                continue
            now = self._clock()
            for fd, mask in events:
                media = self._media.get(fd)
                if media is not None:
                    self._drain(media, now)
                elif fd == self._server.fileno():
                    self._accept()
                elif fd == self._wake_r:
                    self._finish_closes()
                else:
                    self._client_event(fd, mask)
            if self._due:
                self._send_prompts(self._clock())  # again: a play command may have just begun one
            if now >= next_tick:
                next_tick = now + self._tick
                self._flush_recorders(now)
                if now >= next_second:
                    next_second = now + 1.0
                    self._check_timeouts(now)
                    if os.getppid() != self._parent:
                        # The daemon died (even by kill -9): finish every recording and exit
                        # rather than linger as an orphan holding ports.
                        log.warning("media_parent_gone", parent=self._parent)
                        self._running = False
        self._close_everything()

    def stop(self) -> None:
        self._running = False

    def _drain(self, media: tuple[Entry, int, bool, socket.socket], now: float) -> None:
        entry, leg, rtcp, sock = media
        call = entry.call
        out = entry.sockets[(1 - leg) * 2 + (1 if rtcp else 0)]
        for _ in range(_READ_BURST):
            try:
                data, source = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ECONNREFUSED from an earlier send; the socket stays usable
            destination = call.rtcp_from(leg, source) if rtcp else call.rtp_from(leg, data, source, now)
            if destination is not None:
                try:
                    out.sendto(data, destination)
                except OSError:
                    self.counters.send_errors += 1
            if call.digits:
                for index, digit in call.digits:
                    self._event(entry, "dtmf", side="ab"[index], detail=digit)
                call.digits.clear()

    def _send_prompts(self, now: float) -> None:
        """Send every play's packets that are due; report the plays that ended."""
        due = self._due
        while due and due[0][0] <= now:
            play = heapq.heappop(due)[2]
            if not play.active:
                continue
            entry = play.entry
            leg = entry.call.legs[play.leg]
            packets = play.playback.packets_due(now)
            destination = leg.rtp_destination()
            if destination is not None:  # nowhere to send yet: the prompt's time passes anyway
                sock = entry.sockets[play.leg * 2]
                for packet in packets:
                    try:
                        sock.sendto(packet, destination)
                    except OSError:
                        self.counters.send_errors += 1
                leg.played += len(packets)
                self.counters.prompt_packets += len(packets)
            timer = play.playback.get_timer()
            if timer is not None:
                heapq.heappush(due, (timer, next(self._due_order), play))
                continue
            self._end_play(play)
            self._event(entry, "played", side="ab"[play.leg], detail=play.play_id)

    def _end_play(self, play: Play) -> None:
        play.active = False
        play.entry.plays[play.leg] = None
        play.entry.call.legs[play.leg].playing = False

    def _flush_recorders(self, now: float) -> None:
        self._ticks += 1
        turn = self._ticks % _FLUSH_SLICES
        for n, entry in enumerate(self._calls.values()):
            recorder = entry.call.recorder
            if recorder is None or n % _FLUSH_SLICES != turn:
                continue
            recorder.flush(now)
            if recorder.failed and not entry.failure_reported:
                entry.failure_reported = True
                self.counters.recording_failures += 1
                log.warning("recording_failed", call_id=entry.call.call_id, error=recorder.error)
                self._event(entry, "recording_failed", detail=recorder.error or "")
        self._submit_batch()

    def _submit_batch(self) -> None:
        """Hand this tick's file jobs to the disk thread as one job (one wake-up, in order)."""
        if self._batch:
            jobs = self._batch.copy()
            self._batch.clear()  # the same list: recorders hold its bound append
            self._disk.submit(_run_all, jobs)

    def _check_timeouts(self, now: float) -> None:
        for entry in self._calls.values():
            if entry.call.check_timeout(now):
                self.counters.timeouts += 1
                self._event(entry, "timeout", detail=f"{entry.call.idle_for(now):.1f}")

    # ---- control ----------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._server.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            self._clients[sock.fileno()] = Client(sock)
            self._epoll.register(sock.fileno(), select.EPOLLIN)

    def _client_event(self, fd: int, mask: int) -> None:
        client = self._clients.get(fd)
        if client is None:
            return
        if mask & select.EPOLLOUT:
            self._send_pending(client)
        if not mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            return
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client(fd)
            return
        client.inbuf += data
        while b"\n" in client.inbuf:
            line, client.inbuf = client.inbuf.split(b"\n", 1)
            if line.strip():
                self._command(fd, line)

    def _command(self, fd: int, line: bytes) -> None:
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ControlError("bad_request", "a command is a JSON object")
            op = request.get("op")
            handler = getattr(self, f"_op_{op}", None) if isinstance(op, str) else None
            if handler is None:
                raise ControlError("unknown_op", f"unknown op {op!r}")
            reply = handler(fd, request)
            if reply is None:
                return  # answered later (close waits for the recording's digest)
            self._reply(fd, {"id": request.get("id"), "ok": True, **reply})
        except ControlError as exc:
            self._reply(fd, {"id": request.get("id"), "ok": False, "code": exc.code, "detail": str(exc)})
        except (ValueError, KeyError, TypeError) as exc:
            self._reply(fd, {"id": request.get("id"), "ok": False, "code": "bad_request", "detail": str(exc)})
        except Exception as exc:  # a bug in one command must not stop every call's media
            log.exception("media_command_failed", op=request.get("op"))
            self._reply(fd, {"id": request.get("id"), "ok": False, "code": "internal_error",
                             "detail": type(exc).__name__})

    def _entry(self, request: dict[str, Any]) -> Entry:
        entry = self._calls.get(str(request["call"]))
        if entry is None:
            raise ControlError("unknown_call", f"no media session {request['call']!r}")
        return entry

    def _op_create(self, fd: int, request: dict[str, Any]) -> dict[str, Any]:
        call_id = str(request["call"])
        if call_id in self._calls:
            raise ControlError("call_exists", f"media session {call_id!r} exists")
        codec = Codec.from_name(str(request.get("codec", "PCMU")))
        # Everything that can refuse the request is read before a port is taken.
        call = RelayCall(call_id, self._clock(), timeout=float(request.get("timeout", self.timeout)),
                         hold_timeout=float(request.get("hold_timeout", self.hold_timeout)))
        record = request.get("record")
        path: Path | None = None
        if isinstance(record, dict):
            call.customer = SIDES[str(record.get("customer", "a"))]
            path = Path(record["path"]) if record.get("path") else self._default_path(call_id)
        pairs = []
        try:
            for _ in range(2):
                pairs.append(self.pool.allocate())
        except (PortsExhausted, OSError) as exc:
            for rtp, rtcp in pairs:
                self.pool.release(rtp, rtcp)
            code = "ports_exhausted" if isinstance(exc, PortsExhausted) else "ports_unavailable"
            raise ControlError(code, str(exc)) from exc
        (a_rtp, a_rtcp), (b_rtp, b_rtcp) = pairs
        entry = Entry(call, (a_rtp, a_rtcp, b_rtp, b_rtcp), fd, codec, path)
        self._calls[call_id] = entry
        for index, sock in enumerate(entry.sockets):
            self._media[sock.fileno()] = (entry, index // 2, bool(index & 1), sock)
            self._epoll.register(sock.fileno(), select.EPOLLIN)
        self.counters.calls_created += 1
        return {"address": self.pool.address,
                "ports": {"a": a_rtp.getsockname()[1], "b": b_rtp.getsockname()[1]}}

    def _op_remote(self, fd: int, request: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(request)
        leg = entry.call.legs[SIDES[str(request["side"])]]
        address = str(request["address"])
        try:  # an IP literal only: a host name would be resolved again on every sendto
            socket.inet_aton(address)
        except OSError as exc:
            raise ControlError("bad_address", f"not an IPv4 address: {address!r}") from exc
        leg.set_remote((address, int(request["port"])), relatch=bool(request.get("relatch")))
        return {}

    def _op_answered(self, fd: int, request: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(request)
        now = self._clock()
        if entry.call.answered_at is None:
            # A session made ahead of its call learns at the answer what it records and in
            # which law (the negotiated codec is known only then).
            if "codec" in request:
                entry.codec = Codec.from_name(str(request["codec"]))
            record = request.get("record")
            if isinstance(record, dict):
                entry.call.customer = SIDES[str(record.get("customer", "a"))]
                entry.record_path = (Path(record["path"]) if record.get("path")
                                     else self._default_path(entry.call.call_id))
            recorder = (Recorder(entry.record_path, entry.codec, now, disk=self._batch.append)
                        if entry.record_path else None)
            entry.call.answered(now, recorder)
        return {}

    def _op_hold(self, fd: int, request: dict[str, Any]) -> dict[str, Any]:
        self._entry(request).call.legs[SIDES[str(request["side"])]].held = True
        return {}

    def _op_unhold(self, fd: int, request: dict[str, Any]) -> dict[str, Any]:
        self._entry(request).call.legs[SIDES[str(request["side"])]].held = False
        return {}

    def _op_play(self, fd: int, request: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(request)
        index = SIDES[str(request["side"])]
        play_id = request["play"]
        loop = request.get("loop", False)
        if not isinstance(play_id, str) or not isinstance(loop, bool):
            raise ControlError("bad_request", "play is a string, loop a boolean")
        # The file is in whatever law the caller chose for the call; by default the session's.
        codec = Codec.from_name(str(request["codec"])) if request.get("codec") else entry.codec
        try:
            audio = self._prompts.read(Path(str(request["file"])))
        except PromptUnavailable as exc:
            raise ControlError(exc.code, str(exc)) from exc
        current = entry.plays[index]
        if current is not None:
            self._end_play(current)  # replaced: no `played` for it
        stream = entry.streams[index]
        if stream is None:
            stream = entry.streams[index] = RtpStream.random()
        now = self._clock()
        play = Play(entry, index, Playback(audio, codec, stream, now, loop=loop), play_id)
        entry.plays[index] = play
        entry.call.legs[index].playing = True
        heapq.heappush(self._due, (now, next(self._due_order), play))
        self.counters.plays_started += 1
        return {"duration": play.playback.duration}

    def _op_stop(self, fd: int, request: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(request)
        play = entry.plays[SIDES[str(request["side"])]]
        if play is not None:
            self._end_play(play)
        return {"stopped": play is not None}

    def _op_query(self, fd: int, request: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(request)
        legs = {}
        for side, leg, play in zip("ab", entry.call.legs, entry.plays, strict=True):
            legs[side] = {"state": leg.state.value, "latched": list(leg.rtp) if leg.rtp else None,
                          "received": leg.received, "forwarded": leg.forwarded, "foreign": leg.foreign,
                          "held": leg.held, "playing": play.play_id if play else None,
                          "played": leg.played}
        recorder = entry.call.recorder
        return {"legs": legs, "recording": None if recorder is None else
                {"path": str(recorder.path), "error": recorder.error, "late_samples": recorder.late_samples}}

    def _op_stats(self, fd: int, request: dict[str, Any]) -> dict[str, Any]:
        return {"calls": len(self._calls), "ports_in_use": len(self.pool.in_use),
                "media_sockets": len(self._media), "pid": os.getpid(),
                "plays_active": sum(1 for _, _, play in self._due if play.active), **asdict(self.counters)}

    def _op_close(self, fd: int, request: dict[str, Any]) -> dict[str, Any] | None:
        entry = self._entry(request)
        if self._release(entry, reply_to=(fd, request.get("id"))):
            return None  # answered once the recording is finished and its digest taken
        return {"recording": _result_json(RecordingResult(RecordingStatus.NONE))}

    def _op_shutdown(self, fd: int, request: dict[str, Any]) -> dict[str, Any]:
        self._running = False
        return {}

    def _finish_closes(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 4096)
        still = []
        for future in self._pending:
            if not future.done():
                still.append(future)
                continue
            entry, reply_to, result = future.result()
            if result.status is RecordingStatus.FAILED and not entry.failure_reported:
                entry.failure_reported = True
                self.counters.recording_failures += 1
                log.warning("recording_failed", call_id=entry.call.call_id, error=result.error)
            if reply_to is not None:
                self._reply(reply_to[0], {"id": reply_to[1], "ok": True, "recording": _result_json(result)})
        self._pending = still

    def _release(self, entry: Entry, reply_to: tuple[int, Any] | None = None) -> bool:
        """Free the call's sockets and ports at once; finish its recording file on the disk
        thread (True if there is one: its result comes through `_finish_closes`)."""
        self._calls.pop(entry.call.call_id, None)
        for play in entry.plays:
            if play is not None:
                self._end_play(play)
        for sock in entry.sockets:
            self._media.pop(sock.fileno(), None)
            with contextlib.suppress(OSError):
                self._epoll.unregister(sock.fileno())
        self.pool.release(entry.sockets[0], entry.sockets[1])
        self.pool.release(entry.sockets[2], entry.sockets[3])
        self.counters.calls_closed += 1
        recorder = entry.call.recorder
        if recorder is None:
            return False
        recorder.close(self._clock())
        self._submit_batch()  # the close's writes go before the digest

        def digest() -> tuple[Entry, tuple[int, Any] | None, RecordingResult]:
            return entry, reply_to, recorder.result()  # after the close job: same thread

        future = self._disk.submit(digest)
        future.add_done_callback(lambda _: os.write(self._wake_w, b"x"))
        self._pending.append(future)
        return True

    def _default_path(self, call_id: str) -> Path:
        day = time.strftime("%Y/%m/%d", time.gmtime())
        return self.recordings / day / f"{_SAFE_NAME.sub('_', call_id)}.wav"

    # ---- output -----------------------------------------------------------------------------

    def _event(self, entry: Entry, kind: str, *, side: str | None = None, detail: str = "") -> None:
        self._reply(entry.owner, {"event": kind, "call": entry.call.call_id, "side": side, "detail": detail})

    def _reply(self, fd: int, message: dict[str, Any]) -> None:
        client = self._clients.get(fd)
        if client is None:
            return
        client.outbuf += json.dumps(message, separators=(",", ":")).encode() + b"\n"
        self._send_pending(client)

    def _send_pending(self, client: Client) -> None:
        fd = client.sock.fileno()
        try:
            sent = client.sock.send(client.outbuf)
            del client.outbuf[:sent]
        except BlockingIOError:
            pass
        except OSError:
            client.outbuf.clear()
            return
        mask = select.EPOLLIN | (select.EPOLLOUT if client.outbuf else 0)
        with contextlib.suppress(OSError):
            self._epoll.modify(fd, mask)

    def _drop_client(self, fd: int) -> None:
        """A client went away: its calls end (their recordings are finished, ports freed)."""
        client = self._clients.pop(fd)
        with contextlib.suppress(OSError):
            self._epoll.unregister(fd)
        client.sock.close()
        for entry in [e for e in self._calls.values() if e.owner == fd]:
            log.info("media_session_orphaned", call_id=entry.call.call_id)
            self._release(entry)

    def _close_everything(self) -> None:
        for entry in list(self._calls.values()):
            self._release(entry)
        for fd in list(self._clients):
            self._drop_client(fd)
        self._disk.shutdown(wait=True)
        self._finish_closes()  # count the failures among them (nobody is left to answer)
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self._control_path.unlink()
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _run_all(jobs: list[Callable[[], None]]) -> None:
    for job in jobs:
        job()


def _result_json(result: RecordingResult) -> dict[str, Any]:
    data = asdict(result)
    data["status"] = result.status.value
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="telgate media process (RTP relay and recorder)")
    parser.add_argument("--control", required=True, type=Path, help="Unix socket to serve commands on")
    parser.add_argument("--address", default="127.0.0.1", help="address RTP sockets bind to")
    parser.add_argument("--ports", default="16384-32767", help="RTP port range LOW-HIGH")
    parser.add_argument("--recordings", type=Path, default=Path("var/recordings"))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without RTP that end a call")
    parser.add_argument("--hold-timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)
    # JSON log lines on stderr: stdout belongs to whoever started us.
    structlog.configure(processors=[structlog.processors.add_log_level,
                                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                                    structlog.processors.JSONRenderer()],
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    # Four sockets per call: the default soft limit (1024) would cap us near 250 calls.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    low, _, high = args.ports.partition("-")
    pool = PortPool(args.address, int(low), int(high))
    loop = MediaLoop(args.control, pool, args.recordings, timeout=args.timeout,
                     hold_timeout=args.hold_timeout)
    signal.signal(signal.SIGTERM, lambda *_: loop.stop())
    signal.signal(signal.SIGINT, lambda *_: loop.stop())
    log.info("media_started", control=str(args.control), ports=args.ports, pid=os.getpid())
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
