"""Thin asyncio adapter over EsmeSession: a TCP connection, futures per request, events."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from protocols.smpp.pdu import Pdu, SubmitSm
from protocols.smpp.session import (
    BindFailed,
    BindSucceeded,
    EsmeSession,
    Event,
    RequestTimedOut,
    ResponseReceived,
    SessionClosed,
    SessionConfig,
)
from protocols.smpp.throttle import Backoff

T = TypeVar("T")


class SmppClientError(Exception):
    """Base of the client's errors; ``code`` is stable."""

    code = "smpp_client_error"


class BindError(SmppClientError):
    """The SMSC refused the bind or never answered it."""

    code = "bind_failed"

    def __init__(self, reason: str, command_status: int | None = None) -> None:
        super().__init__(reason if command_status is None else f"{reason} 0x{command_status:08x}")
        self.command_status = command_status


class RequestTimeout(SmppClientError):
    """No response in time: the SMSC may or may not have the message (in doubt)."""

    code = "response_timeout"


class ConnectionClosedError(SmppClientError):
    """The session ended before the request was answered (in doubt if it was sent)."""

    code = "connection_closed"


class _Window:
    """FIFO slots for requests in flight, urgent requests first.

    asyncio.Semaphore in 3.11 rescans all waiters on every release, which is quadratic with
    thousands of queued submits; this hands a freed slot straight to the oldest waiter. An
    urgent request (a verification code, a single send) waits only behind other urgent ones,
    not behind a bulk send's queued submits.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._urgent: deque[asyncio.Future[None]] = deque()

    async def acquire(self, urgent: bool = False) -> None:
        if self._free > 0 and not self._waiters and not self._urgent:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._waiters).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us as we were cancelled
            raise

    def release(self) -> None:
        for queue in (self._urgent, self._waiters):
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)
                    return
        self._free += 1


class _Protocol(asyncio.Protocol):
    def __init__(self, client: SmppClient) -> None:
        self._client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Request/response traffic in a window: Nagle would add 40 ms stalls (DESIGN 10).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._client._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._connection_lost()


class SmppClient:
    """One bound SMPP connection: ``await connect()``, ``await submit(pdu)``, ``events()``.

    Inbound events (deliver_sm, alerts, protocol errors, SessionClosed) go to ``on_event``
    when given, otherwise to the ``events()`` async iterator. Create it inside a running loop.
    """

    def __init__(
        self,
        config: SessionConfig,
        *,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.config = config
        self.session = EsmeSession(config)
        self._on_event = on_event
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._window = _Window(config.window)
        self._bound: asyncio.Future[BindSucceeded] = self._loop.create_future()
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False

    async def connect(self, host: str, port: int) -> BindSucceeded:
        """Open TCP, bind, and return once bound; raises BindError or OSError."""
        transport, _ = await self._loop.create_connection(lambda: _Protocol(self), host, port)
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.session.bind(self._loop.time())
        self._pump()
        return await self._bound

    async def request(self, pdu: Pdu, *, urgent: bool = False) -> Pdu:
        """Send a request once the window has room (`urgent`: before the non-urgent requests
        waiting for it); return its response (maybe generic_nack)."""
        return await (await self.start(pdu, urgent=urgent))

    async def start(self, pdu: Pdu, *, urgent: bool = False) -> asyncio.Future[Pdu]:
        """Send a request once the window has room, as `request` does, and return the future
        of its response instead of waiting for it: one task can keep many requests in flight.
        The future fails with RequestTimeout or ConnectionClosedError; await it."""
        await self._window.acquire(urgent)
        future: asyncio.Future[Pdu] = self._loop.create_future()
        try:
            if self.session.closed:
                raise ConnectionClosedError("session closed")
            self.session.send_request(pdu, future, self._loop.time())
        except BaseException:
            self._window.release()
            raise
        self._flush_soon()
        return future

    def _flush_soon(self) -> None:
        """Write what the session has to send once this loop iteration is done: every PDU
        queued meanwhile (submits, acknowledgements) goes in one write, not one each."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._pump)

    async def submit(self, pdu: SubmitSm, *, urgent: bool = False) -> Pdu:
        """Send a submit_sm; returns the submit_sm_resp (or generic_nack)."""
        return await self.request(pdu, urgent=urgent)

    async def events(self) -> AsyncIterator[Event]:
        """Inbound events until (and including) SessionClosed."""
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, SessionClosed):
                return

    async def close(self, unbind_wait: float = 5.0) -> None:
        """Unbind politely (waiting at most ``unbind_wait`` s for unbind_resp), then close."""
        if not self.session.closed:
            self.session.unbind(self._loop.time())
            self._pump()
            try:
                await asyncio.wait_for(asyncio.shield(self._closed), unbind_wait)
            except TimeoutError:
                self.session.connection_lost(self._loop.time())
                self._pump()
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> str:
        """Wait for the session to end; returns the reason."""
        return await asyncio.shield(self._closed)

    # --- driving the session -----------------------------------------------------------

    def _data_received(self, data: bytes) -> None:
        self.session.receive_data(data, self._loop.time())
        self._pump()

    def _connection_lost(self) -> None:
        self._transport = None
        self.session.connection_lost(self._loop.time())
        self._pump()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.session.handle_timer(self._loop.time())
        self._pump()

    def _pump(self) -> None:
        self._flush_scheduled = False
        data = self.session.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)
        while (event := self.session.next_event()) is not None:
            self._dispatch(event)
        if self.session.closed:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._transport is not None:
                self._transport.close()
            return
        when = self.session.get_timer()
        # Re-arm only for an earlier deadline: a timer that fires early just re-arms itself.
        if when is not None and (self._timer_at is None or when < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self._loop.call_at(when, self._on_timer)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, ResponseReceived):
            fut = event.token
            if isinstance(fut, asyncio.Future) and not fut.done():
                fut.set_result(event.response)
            self._window.release()
        elif isinstance(event, RequestTimedOut):
            fut = event.token
            if isinstance(fut, asyncio.Future) and not fut.done():
                fut.set_exception(RequestTimeout("no response"))
            self._window.release()
        elif isinstance(event, BindSucceeded):
            if not self._bound.done():
                self._bound.set_result(event)
        elif isinstance(event, BindFailed):
            if not self._bound.done():
                self._bound.set_exception(BindError("bind refused", event.command_status))
        else:
            if isinstance(event, SessionClosed):
                self._on_closed(event)
            if self._on_event is not None:
                self._on_event(event)
            else:
                self._queue.put_nowait(event)

    def _on_closed(self, event: SessionClosed) -> None:
        for token, _request in event.unanswered:
            if isinstance(token, asyncio.Future) and not token.done():
                token.set_exception(ConnectionClosedError(event.reason))
            self._window.release()
        if not self._bound.done():
            self._bound.set_exception(BindError(event.reason))
        if not self._closed.done():
            self._closed.set_result(event.reason)


async def connect_with_backoff(
    connect: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    retry_on: tuple[type[BaseException], ...] = (OSError, BindError),
    max_attempts: int | None = None,
) -> T:
    """Call ``connect`` until it succeeds, sleeping ``backoff.next_delay()`` between tries."""
    while True:
        try:
            result = await connect()
        except retry_on:
            if max_attempts is not None and backoff.attempts + 1 >= max_attempts:
                raise
            await sleep(backoff.next_delay())
            continue
        backoff.reset()
        return result
