"""The MMSC simulator: an MM7 server (aiohttp) that takes SubmitReq, checks size and types,
answers with message ids, pushes DeliveryReportReq after a delay with a configurable outcome
mix, and injects faults (HTTP 500, timeouts, SOAP faults, throttling, dropped connections)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import random
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from protocols.mm7 import codec
from protocols.mm7.client import basic_auth
from protocols.mm7.messages import (
    Address,
    CancelReq,
    CancelRsp,
    Decoded,
    DecodeError,
    DeliveryReportReq,
    DeliveryReportRsp,
    Encoded,
    Fault,
    ReplaceReq,
    ReplaceRsp,
    RSErrorRsp,
    Status,
    SubmitReq,
    SubmitRsp,
)
from protocols.mm7.status import STATUS_TEXT, MMStatus, StatusCode
from protocols.mm7.versions import SchemaVersion
from protocols.smpp.throttle import TokenBucket
from sim.mmsc.config import FAULTS, MmscConfig

log = structlog.get_logger("telgate.sim.mmsc")


@dataclass(slots=True)
class ReceivedMms:
    """A SubmitReq the simulator accepted (and, for each recipient, will report on)."""

    message_id: str
    request: SubmitReq
    schema: SchemaVersion
    account: str | None
    received_at: float
    canceled: bool = False
    report: asyncio.Task[None] | None = field(default=None, repr=False)


def _status(code: int, details: str | None = None) -> Status:
    return Status(code, STATUS_TEXT.get(code, "Error"), details)


class MmscSimulator:
    """Run with ``async with MmscSimulator(cfg) as mmsc:``; ``mmsc.url`` is the endpoint."""

    def __init__(self, config: MmscConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.received: list[ReceivedMms] = []
        self.by_id: dict[str, ReceivedMms] = {}
        self.reports: list[DeliveryReportReq] = []
        self.stats = {"accepted": 0, "refused": 0, "faults": 0, "reports_sent": 0,
                      "reports_failed": 0, "report_retries": 0}
        self._faults: deque[str] = deque()
        self._ids = itertools.count(1)
        self._bucket = (TokenBucket(config.throttle_tps, max(config.throttle_tps / 10, 1.0),
                                    time.monotonic) if config.throttle_tps else None)
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = config.port

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The MM7 endpoint VASPs post to."""
        return f"http://{self.config.host}:{self.port}{self.config.path}"

    async def start(self) -> None:
        """Listen (port 0: a free port, see `.port`)."""
        app = web.Application(client_max_size=self.config.max_message_bytes * 2 + 65536)
        app.router.add_post(self.config.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("mmsc_sim_started", url=self.url)

    async def stop(self) -> None:
        """Stop listening and drop pending reports."""
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2)
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> MmscSimulator:
        await self.start()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def reports_settled(self) -> None:
        """Wait until every pending delivery report was pushed (or given up)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def inject(self, *faults: str) -> None:
        """Answer the next SubmitReqs with these faults, in order (then the configured rates)."""
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
        self._faults.extend(faults)

    # -- HTTP ------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> tuple[bool, str | None]:
        if not self.config.accounts:
            return True, None
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        return self.config.accounts.get(user) == password, user

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        ok, account = self._authorised(request)
        if not ok:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="mmsc"'})
        body = await request.read()
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        decoded = codec.decode(request.headers.get("Content-Type", ""), body,
                               max_bytes=self.config.max_message_bytes * 2 + 65536)
        if isinstance(decoded, DecodeError):
            self.stats["refused"] += 1
            fault = codec.fault_for(decoded, SchemaVersion.REL_5_MM7_1_2, server=True,
                                    relay_server_id=self.config.relay_server_id)
            return self._answer(codec.encode(fault, SchemaVersion.REL_5_MM7_1_2), 500)
        m = decoded.message
        schema = decoded.schema or SchemaVersion.REL_5_MM7_1_2
        if isinstance(m, SubmitReq):
            return await self._submit(request, m, decoded, account)
        if isinstance(m, CancelReq):
            return self._answer(codec.encode(self._cancel(m), schema, decoded.mm7_version), 200)
        if isinstance(m, ReplaceReq):
            return self._answer(codec.encode(self._replace(m), schema, decoded.mm7_version), 200)
        error = DecodeError(StatusCode.UNSUPPORTED_OPERATION,
                            f"{type(m).__name__} is not served here",
                            getattr(m, "transaction_id", None))
        return self._answer(codec.encode(codec.fault_for(error, schema, server=True), schema),
                            500)

    @staticmethod
    def _answer(encoded: Encoded, status: int) -> web.Response:
        return web.Response(body=encoded.body, status=status, headers=encoded.headers)

    def _next_fault(self) -> str | None:
        if self._faults:
            return self._faults.popleft()
        c, r = self.config, self.rng.random()
        for name, rate in (("http500", c.http500_rate), ("timeout", c.timeout_rate),
                           ("soap_fault", c.soap_fault_rate)):
            if r < rate:
                return name
            r -= rate
        return None

    async def _submit(self, request: web.Request, m: SubmitReq, decoded: Decoded,
                      account: str | None) -> web.StreamResponse:
        schema = decoded.schema or SchemaVersion.REL_5_MM7_1_2
        version = decoded.mm7_version

        def rsp(code: int, details: str | None = None, mid: str | None = None) -> web.Response:
            answer = SubmitRsp(m.transaction_id, _status(code, details), mid)
            return self._answer(codec.encode(answer, schema, version), 200)

        fault = self._next_fault()
        if fault is not None:
            self.stats["faults"] += 1
        if fault == "http500":
            return web.Response(status=500, text="Internal Server Error")
        if fault == "soap_fault":
            error = RSErrorRsp(m.transaction_id, _status(StatusCode.SERVER_ERROR),
                               self.config.relay_server_id)
            return self._answer(codec.encode(Fault(m.transaction_id, "env:Server",
                                                   "Server error", error), schema, version), 500)
        if fault == "throttle" or (self._bucket is not None and not self._bucket.try_acquire()):
            return rsp(StatusCode.SERVICE_UNAVAILABLE, "throttled")
        if self.config.vasp_ids and m.vasp_id not in self.config.vasp_ids:
            self.stats["refused"] += 1
            return rsp(StatusCode.IMPROPER_IDENTIFICATION, f"unknown VASPID {m.vasp_id}")
        problem = self._content_problem(m)
        if problem is not None:
            self.stats["refused"] += 1
            return rsp(StatusCode.CONTENT_REFUSED, problem)
        mid = f"{next(self._ids):012d}"
        entry = ReceivedMms(mid, m, schema, account, time.monotonic())
        if self.config.record_messages:
            self.received.append(entry)
            self.by_id[mid] = entry
        self.stats["accepted"] += 1
        if m.delivery_report is not False:
            entry.report = self._spawn(self._report_later(entry))
        if fault == "timeout":  # accepted, but the answer never comes: the VASP is in doubt
            await asyncio.sleep(self.config.timeout_ms / 1000)
            return rsp(StatusCode.SUCCESS, None, mid)
        if fault == "disconnect":  # accepted, then the connection drops
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        return rsp(StatusCode.SUCCESS, None, mid)

    def _content_problem(self, m: SubmitReq) -> str | None:
        total = sum(len(p.data) for p in m.content)
        if not m.content:
            return "no content"
        if total > self.config.max_message_bytes:
            return f"message of {total} bytes is over {self.config.max_message_bytes}"
        images = [p for p in m.content if p.content_type.startswith("image/")]
        if len(images) > self.config.max_images:
            return f"{len(images)} images, at most {self.config.max_images}"
        for p in m.content:
            if p.content_type not in self.config.content_types:
                return f"content type {p.content_type} not accepted"
            if p.content_type == "image/jpeg":
                if not p.data.startswith(b"\xff\xd8"):
                    return f"part {p.content_id} is not a JPEG"
                if len(p.data) > self.config.max_image_bytes:
                    return f"image {p.content_id} of {len(p.data)} bytes is over " \
                           f"{self.config.max_image_bytes}"
        return None

    def _cancel(self, m: CancelReq) -> CancelRsp:
        entry = self.by_id.get(m.message_id)
        if entry is None or entry.canceled:
            return CancelRsp(m.transaction_id, _status(StatusCode.MESSAGE_ID_NOT_FOUND))
        entry.canceled = True
        if entry.report is not None:
            entry.report.cancel()
        return CancelRsp(m.transaction_id, _status(StatusCode.SUCCESS))

    def _replace(self, m: ReplaceReq) -> ReplaceRsp:
        entry = self.by_id.get(m.message_id)
        if entry is None or entry.canceled:
            return ReplaceRsp(m.transaction_id, _status(StatusCode.MESSAGE_ID_NOT_FOUND))
        old = entry.request
        entry.request = SubmitReq(old.transaction_id, old.vasp_id, old.vas_id, old.recipients,
                                  old.sender, service_code=old.service_code,
                                  subject=old.subject, content=m.content or old.content)
        return ReplaceRsp(m.transaction_id, _status(StatusCode.SUCCESS))

    # -- delivery reports ----------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _outcome(self) -> str:
        names = list(self.config.outcomes)
        return self.rng.choices(names, weights=[self.config.outcomes[n] for n in names])[0]

    async def _report_later(self, entry: ReceivedMms) -> None:
        if self.config.report_delay_ms:
            await asyncio.sleep(self.config.report_delay_ms / 1000)
        if self.config.report_url is None:
            return
        for recipient in entry.request.recipients:
            outcome = self._outcome()
            if outcome == "NONE":
                continue
            sender = entry.request.sender or Address(entry.request.vasp_id or "vasp")
            report = DeliveryReportReq(
                f"dr-{entry.message_id}-{recipient.value}", entry.message_id,
                Address(recipient.value, recipient.kind), sender,
                datetime.now(UTC).replace(microsecond=0), MMStatus(outcome),
                self.config.relay_server_id,
                None if outcome == "Retrieved" else f"simulated {outcome}")
            await self._push(report, entry.schema)

    async def _push(self, report: DeliveryReportReq, schema: SchemaVersion) -> None:
        assert self.config.report_url is not None
        if self._http is None:
            self._http = aiohttp.ClientSession()
        encoded = codec.encode(report, schema)
        headers = dict(encoded.headers)
        if self.config.report_username:
            headers["Authorization"] = basic_auth(self.config.report_username,
                                                  self.config.report_password)
        delay = 0.2
        for attempt in range(self.config.report_retries + 1):
            if attempt:
                self.stats["report_retries"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with self._http.post(self.config.report_url, data=encoded.body,
                                           headers=headers,
                                           timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    answer = codec.decode(resp.headers.get("Content-Type", ""), await resp.read())
                    if resp.status == 200 and isinstance(answer, Decoded) and isinstance(
                            answer.message, DeliveryReportRsp):
                        self.reports.append(report)
                        self.stats["reports_sent"] += 1
                        return
        self.stats["reports_failed"] += 1
        log.warning("mmsc_sim_report_undelivered", message_id=report.message_id)
