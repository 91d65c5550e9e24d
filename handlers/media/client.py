"""The API process's side of the media process: starts it, speaks its JSON-lines control
protocol, and gives the engine `MediaSession`s (interface.py)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from handlers.errors import DomainError
from handlers.media.interface import (
    EventHandler,
    EventKind,
    MediaEvent,
    RecordingRequest,
    RecordingResult,
    RecordingStatus,
    Side,
)
from handlers.media.sdp import SdpError, anchor
from protocols.rtp.g711 import Codec

log = structlog.get_logger("media")


# The media process's refusal codes (handlers/media/process.py ControlError) as registered codes.
_REFUSALS = {
    "bad_request": "media_bad_request", "unknown_op": "media_bad_request",
    "bad_address": "media_bad_request", "unknown_call": "media_unknown_call",
    "call_exists": "media_call_exists", "ports_exhausted": "media_ports_exhausted",
    "ports_unavailable": "media_ports_exhausted", "internal_error": "media_unavailable",
    "prompt_not_found": "media_prompt_unavailable", "prompt_unreadable": "media_prompt_unavailable",
    "prompt_empty": "media_prompt_unavailable", "prompt_too_large": "media_prompt_unavailable",
}


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """How the media process is started (docs/media.md)."""

    control_path: Path
    recordings: Path
    address: str = "127.0.0.1"
    port_low: int = 16384  # below Linux's ephemeral range (32768-60999), so no port
    port_high: int = 32767  # the kernel hands out for outgoing sockets collides with ours
    timeout: float = 60.0
    hold_timeout: float = 3600.0


class MediaProcess:
    """The embedded media service: one child process, driven over its Unix control socket."""

    def __init__(self, settings: MediaSettings) -> None:
        self.settings = settings
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, EventHandler] = {}
        self._lost = False  # the control connection ended

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self, *, wait: float = 10.0) -> None:
        """Start the child and connect to it."""
        s = self.settings
        s.recordings.mkdir(parents=True, exist_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "handlers.media.process", "--control", str(s.control_path),
            "--address", s.address, "--ports", f"{s.port_low}-{s.port_high}",
            "--recordings", str(s.recordings), "--timeout", str(s.timeout),
            "--hold-timeout", str(s.hold_timeout), stdin=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(wait):
            while True:
                if self._proc.returncode is not None:
                    raise DomainError("media_unavailable", "media process exited at start", status=503)
                with contextlib.suppress(FileNotFoundError, ConnectionRefusedError):
                    self._reader, self._writer = await asyncio.open_unix_connection(str(s.control_path))
                    break
                await asyncio.sleep(0.02)
        self._lost = False
        self._read_task = asyncio.create_task(self._read_loop())
        log.info("media_process_started", pid=self._proc.pid, ports=f"{s.port_low}-{s.port_high}")

    async def stop(self, *, wait: float = 10.0) -> None:
        """Ask the child to finish every call and exit; kill it if it does not."""
        if self._proc is None:
            return
        with contextlib.suppress(DomainError):
            await self.request("shutdown")
        try:
            async with asyncio.timeout(wait):
                await self._proc.wait()
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        if self._writer is not None:
            self._writer.close()
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
        self._proc = None

    async def create(self, call_id: str, codec: Codec, *, record: RecordingRequest | None,
                     on_event: EventHandler | None = None, timeout: float | None = None) -> RelaySession:
        """A session with a port pair per leg; recorded if `record` is given."""
        fields: dict[str, Any] = {"call": call_id, "codec": codec.encoding}
        if record is not None:
            fields["record"] = {"customer": record.customer.value, "path": record.path}
        if timeout is not None:
            fields["timeout"] = timeout
        reply = await self.request("create", **fields)
        if on_event is not None:
            self._handlers[call_id] = on_event
        ports = reply["ports"]
        return RelaySession(self, call_id, reply["address"], {Side.A: ports["a"], Side.B: ports["b"]})

    async def stats(self) -> dict[str, Any]:
        """Counters of the media process (calls, ports in use, recording failures, ...)."""
        return await self.request("stats")

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """One control command; DomainError if refused or the process is gone."""
        if self._writer is None or self._writer.is_closing() or self._lost:
            raise DomainError("media_unavailable", "the media process is not running", status=503)
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            self._writer.write(json.dumps({"id": request_id, "op": op, **fields}).encode() + b"\n")
            await self._writer.drain()
        except ConnectionError as exc:
            self._waiting.pop(request_id, None)
            raise DomainError("media_unavailable", "the media process went away", status=503) from exc
        reply = await future
        if not reply.get("ok"):
            code = _REFUSALS.get(str(reply.get("code")), "media_bad_request")
            raise DomainError(code, str(reply.get("detail")))
        return reply

    def forget(self, call_id: str) -> None:
        self._handlers.pop(call_id, None)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                if "event" in message:
                    self._dispatch(message)
                else:
                    future = self._waiting.pop(message.get("id"), None)
                    if future is not None and not future.done():
                        future.set_result(message)
        finally:
            self._lost = True
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(DomainError("media_unavailable", "media process went away",
                                                     status=503))
            self._waiting.clear()
            for call_id, handler in list(self._handlers.items()):
                handler(MediaEvent(call_id, EventKind.LOST))

    def _dispatch(self, message: dict[str, Any]) -> None:
        handler = self._handlers.get(message["call"])
        if handler is None:
            return
        try:
            kind = EventKind(message["event"])
        except ValueError:  # a newer media process: one unknown event must not end the session
            log.warning("media_event_unknown", event=message["event"], call_id=message["call"])
            return
        side = Side(message["side"]) if message.get("side") else None
        handler(MediaEvent(message["call"], kind, side, message.get("detail", "")))


async def _ipv4(host: str) -> str:
    """`host` as an IPv4 literal (SDP may name a host; the media process takes addresses only)."""
    try:
        socket.inet_aton(host)
        return host
    except OSError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, family=socket.AF_INET,
                                                             type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise DomainError("media_bad_sdp", f"cannot resolve the media host {host!r}", status=422) from exc
    return str(infos[0][4][0])


class RelaySession:
    """The media of one call in the embedded media process (a `MediaSession`)."""

    def __init__(self, media: MediaProcess, call_id: str, address: str, ports: dict[Side, int]) -> None:
        self.call_id = call_id
        self.address = address
        self.ports = ports
        self._media = media
        self._closed: RecordingResult | None = None

    async def offer(self, side: Side, sdp: bytes) -> bytes:
        return await self._sdp(side, sdp, relatch=False)

    async def answer(self, side: Side, sdp: bytes) -> bytes:
        return await self._sdp(side, sdp, relatch=False)

    async def repoint(self, side: Side, sdp: bytes) -> bytes:
        return await self._sdp(side, sdp, relatch=True)

    async def answered(self) -> None:
        await self._media.request("answered", call=self.call_id)

    async def hold(self, side: Side) -> None:
        await self._media.request("hold", call=self.call_id, side=side.value)

    async def unhold(self, side: Side) -> None:
        await self._media.request("unhold", call=self.call_id, side=side.value)

    async def play(self, side: Side, file: Path, *, loop: bool = False, play_id: str,
                   codec: Codec | None = None) -> float:
        """Play `file` to `side` (see `MediaSession.play`); DomainError `media_prompt_unavailable`
        if the file is missing, unreadable, empty or too large. A relative path is taken from
        the media process's working directory (the daemon's when it started it)."""
        fields: dict[str, Any] = {"call": self.call_id, "side": side.value, "file": str(file),
                                  "loop": loop, "play": play_id}
        if codec is not None:
            fields["codec"] = codec.encoding
        reply = await self._media.request("play", **fields)
        return float(reply["duration"])

    async def stop(self, side: Side) -> bool:
        """Stop the prompt playing to `side`; False if none was."""
        reply = await self._media.request("stop", call=self.call_id, side=side.value)
        return bool(reply["stopped"])

    async def query(self) -> dict[str, Any]:
        """Latching state and packet counts per leg."""
        return await self._media.request("query", call=self.call_id)

    async def close(self) -> RecordingResult:
        """Idempotent: the second close returns the first one's result."""
        if self._closed is not None:
            return self._closed
        self._media.forget(self.call_id)
        try:
            reply = await self._media.request("close", call=self.call_id)
        except DomainError as exc:
            # Every end path must be able to close: a lost media process is a failed recording.
            if exc.code == "media_unknown_call":
                self._closed = RecordingResult(RecordingStatus.NONE, error="session already gone")
            elif exc.code == "media_unavailable":
                self._closed = RecordingResult(RecordingStatus.FAILED, error="media process went away")
            else:
                raise
            return self._closed
        data = dict(reply["recording"])
        data["status"] = RecordingStatus(data["status"])
        self._closed = RecordingResult(**data)
        return self._closed

    async def _sdp(self, side: Side, sdp: bytes, *, relatch: bool) -> bytes:
        # The body received from `side` goes to the other side, which must send to our port
        # for the other leg; `side`'s own far end is where we send what the other leg says.
        try:
            body, target = anchor(sdp, self.address, self.ports[side.other])
        except SdpError as exc:
            raise DomainError("media_bad_sdp", str(exc), status=422) from exc
        if target.address != "0.0.0.0":
            await self.point(side, target.address, target.port, relatch=relatch)
        return body

    async def point(self, side: Side, host: str, port: int, *, relatch: bool = False) -> None:
        """Send `side`'s media to `host`:`port` until its phone's own packets latch the leg
        (`relatch`: the leg now goes to another phone, latching starts over)."""
        await self._media.request("remote", call=self.call_id, side=side.value,
                                  address=await _ipv4(host), port=port, relatch=relatch)
