"""The same `MediaService`/`MediaSession` interface served by rtpengine over its NG protocol
(bencode over UDP), for deployments whose media outgrows one box.

Each leg is an NG tag (`a`, `b`): an SDP from a leg is an NG `offer` from that tag, unless it
answers the other leg's offer (`answer`); `hold` blocks the media flowing towards the held
leg (`block media` from the other tag); `close` is `delete`. Recording through rtpengine's
recording daemon is not wired: sessions report no recording. Nor are prompts (NG `play media`
needs rtpengine's transcoding build and reports no end of play): `play` is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from pathlib import Path
from typing import Any

from handlers.errors import DomainError
from handlers.media.interface import (
    EventHandler,
    RecordingRequest,
    RecordingResult,
    RecordingStatus,
    Side,
)
from protocols.rtp.g711 import Codec
from protocols.rtp.ng import BencodeError, ng_reply, ng_request

TAGS = {Side.A: "a", Side.B: "b"}


class _NgProtocol(asyncio.DatagramProtocol):
    def __init__(self, waiting: dict[str, asyncio.Future[dict[str, Any]]]) -> None:
        self.waiting = waiting

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        try:
            cookie, reply = ng_reply(data)
        except BencodeError:
            return
        future = self.waiting.pop(cookie, None)
        if future is not None and not future.done():
            future.set_result(reply)


class RtpengineService:
    """A `MediaService` backed by one rtpengine's NG control port."""

    def __init__(self, host: str, port: int, *, timeout: float = 1.0, retries: int = 3) -> None:
        self.address = (host, port)
        self._timeout = timeout
        self._retries = retries
        self._transport: asyncio.DatagramTransport | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._cookies = itertools.count(1)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _NgProtocol(self._waiting), remote_addr=self.address)
        await self.command({"command": "ping"})

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def create(self, call_id: str, codec: Codec, *, record: RecordingRequest | None,
                     on_event: EventHandler | None = None, timeout: float | None = None) -> RtpengineSession:
        # rtpengine learns the call from its first offer; nothing to allocate before it.
        return RtpengineSession(self, call_id)

    async def command(self, message: dict[str, Any]) -> dict[str, Any]:
        """One NG command, retransmitted with the same cookie (rtpengine answers repeats from
        its cache); DomainError if rtpengine refuses or never answers."""
        if self._transport is None:
            raise DomainError("media_unavailable", "rtpengine client not started", status=503)
        cookie = f"{next(self._cookies)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[cookie] = future
        wire = ng_request(cookie, message)
        try:
            for _ in range(self._retries):
                self._transport.sendto(wire)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._timeout):
                        reply = await asyncio.shield(future)
                    break
            else:
                raise DomainError("media_unavailable", "rtpengine did not answer", status=503)
        finally:
            self._waiting.pop(cookie, None)
        result = reply.get("result")
        if result not in (b"ok", b"pong"):
            reason = reply.get("error-reason", b"")
            detail = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
            raise DomainError("media_refused", f"rtpengine {message['command']}: {detail}", status=503)
        return reply


class RtpengineSession:
    """One call's media in rtpengine (a `MediaSession`)."""

    def __init__(self, service: RtpengineService, call_id: str) -> None:
        self.call_id = call_id
        self._service = service
        self._offered_by: Side | None = None
        self._answered_sdp = False  # once the first answer is in, offers carry both tags
        self._closed: RecordingResult | None = None

    async def offer(self, side: Side, sdp: bytes) -> bytes:
        self._offered_by = side
        return await self._sdp("offer", side, sdp)

    async def answer(self, side: Side, sdp: bytes) -> bytes:
        body = await self._sdp("answer", side, sdp)
        self._answered_sdp = True
        return body

    async def repoint(self, side: Side, sdp: bytes) -> bytes:
        # The new phone's SDP answers the standing offer of the other leg (or offers anew);
        # rtpengine learns the new address from it and latches again.
        verb = "answer" if self._offered_by is side.other else "offer"
        return await self._sdp(verb, side, sdp)

    async def answered(self) -> None:
        return None

    async def hold(self, side: Side) -> None:
        await self._service.command({"command": "block media", "call-id": self.call_id,
                                     "from-tag": TAGS[side.other]})

    async def unhold(self, side: Side) -> None:
        await self._service.command({"command": "unblock media", "call-id": self.call_id,
                                     "from-tag": TAGS[side.other]})

    async def play(self, side: Side, file: Path, *, loop: bool = False, play_id: str,
                   codec: Codec | None = None) -> float:
        raise DomainError("media_refused", "prompts are not played through rtpengine", status=503)

    async def stop(self, side: Side) -> bool:
        return False  # nothing can be playing

    async def close(self) -> RecordingResult:
        if self._closed is None:
            with contextlib.suppress(DomainError):  # never offered: rtpengine knows no such call
                await self._service.command({"command": "delete", "call-id": self.call_id})
            self._closed = RecordingResult(RecordingStatus.NONE)
        return self._closed

    async def _sdp(self, verb: str, side: Side, sdp: bytes) -> bytes:
        message: dict[str, Any] = {"command": verb, "call-id": self.call_id, "sdp": sdp,
                                   "replace": ["origin", "session-connection"], "ICE": "remove"}
        if verb == "offer":
            message["from-tag"] = TAGS[side]
            if self._answered_sdp:  # a re-offer within the established dialog
                message["to-tag"] = TAGS[side.other]
        else:  # an answer is seen from the offerer: from-tag stays the offering leg's
            message["from-tag"] = TAGS[side.other]
            message["to-tag"] = TAGS[side]
        reply = await self._service.command(message)
        body = reply.get("sdp")
        if not isinstance(body, bytes):
            raise DomainError("media_refused", f"rtpengine {verb}: no SDP in the reply", status=503)
        return body
