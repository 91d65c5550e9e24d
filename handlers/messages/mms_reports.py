"""Delivery reports from carriers' MMSCs: a small HTTP listener of its own (not a /v1 route)
where each MMSC posts DeliveryReportReq with its HTTP basic credentials.

A report is written to `mm7_report_inbox` and matched to its recipient in the same
transaction *before* DeliveryReportRsp is answered; if the database is away the MMSC gets a
500 and sends the report again, so none is lost. A report that arrives before the SubmitRsp of
its message was stored waits in the inbox and is matched when the dispatcher stores it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import Counter

from config.schema import Mm7CarrierConfig, Mm7Config
from protocols.mm7 import codec
from protocols.mm7.messages import (
    Decoded,
    DecodeError,
    DeliveryReportReq,
    DeliveryReportRsp,
    Encoded,
    Status,
)
from protocols.mm7.status import StatusCode
from protocols.mm7.versions import SchemaVersion

log = structlog.get_logger("telgate.mms")

FINAL_STATES = {"Retrieved": "delivered", "Forwarded": "delivered", "Expired": "expired",
                "Rejected": "failed", "Unrecognised": "failed",
                "DeliveryConditionNotMet": "failed"}


async def match_reports(conn: asyncpg.Connection) -> int:
    """Apply stored reports to their submitted recipients (final state, webhook); how many."""
    n = await conn.fetchval(
        """WITH cand AS (
               SELECT DISTINCT ON (d.id) d.id AS did, r.message_id, r.idx, d.mm_status,
                      d.status_text, d.done_at
               FROM mm7_report_inbox d JOIN recipients r
                 ON r.carrier = d.carrier AND r.carrier_msg_id = d.msg_id
               WHERE r.state = 'submitted' AND r.mms
               ORDER BY d.id
           ), upd AS (
               UPDATE recipients r
               SET state = CASE WHEN c.mm_status IN ('Retrieved', 'Forwarded') THEN 'delivered'
                                WHEN c.mm_status = 'Expired' THEN 'expired' ELSE 'failed' END,
                   reason = CASE WHEN c.mm_status IN ('Retrieved', 'Forwarded') THEN NULL
                                 ELSE lower(c.mm_status) END,
                   dlr_stat = c.mm_status, dlr_err = c.status_text,
                   done_at = coalesce(c.done_at, now())
               FROM cand c WHERE r.message_id = c.message_id AND r.idx = c.idx
                 -- re-checked on the row's newest version: a concurrent match wins once
                 AND r.state = 'submitted'
               RETURNING r.tenant_id, r.message_id, r.idx, r.number, r.state, r.reason
           ), hooks AS (
               INSERT INTO event_log (tenant_id, sp_id, type, data)
               SELECT upd.tenant_id, m.sp_id, 'message.recipient.' || upd.state,
                      jsonb_build_object('message_id', upd.message_id, 'index', upd.idx,
                                         'number', upd.number, 'state', upd.state,
                                         'reason', upd.reason)
               FROM upd JOIN messages m ON m.id = upd.message_id
           ), gone AS (
               DELETE FROM mm7_report_inbox d USING cand WHERE d.id = cand.did
           )
           SELECT count(*) FROM upd""")
    return int(n or 0)


def _carrier_of(request: web.Request, carriers: Sequence[Mm7CarrierConfig]
                ) -> Mm7CarrierConfig | None:
    """The carrier whose report credentials the request carries (constant-time compare)."""
    raw = request.headers.get("Authorization", "")
    scheme, _, value = raw.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    for c in carriers:
        if not c.report_username or not c.report_password:
            continue
        if hmac.compare_digest(user.encode(), c.report_username.encode()) and \
                hmac.compare_digest(password.encode(), c.report_password.encode()):
            return c
    return None


def _answer(encoded: Encoded, status: int) -> web.Response:
    return web.Response(body=encoded.body, status=status, headers=encoded.headers)


class ReportListener:
    """The aiohttp listener MMSCs post DeliveryReportReq to."""

    def __init__(self, config: Mm7Config, pool: asyncpg.Pool,
                 reports: Counter | None = None) -> None:
        self.config = config
        self.pool = pool
        self.counter = reports  # telgate_mm7_reports_total{status}
        self.runner: web.AppRunner | None = None
        self.port: int = config.report_port
        self.reports = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes)
        app.router.add_post(self.config.report_path, self.handle)
        return app

    async def start(self) -> None:
        """Listen on the configured address (port 0: any free port, see `.port`)."""
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.report_host, self.config.report_port)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        log.info("mm7_report_listener_started", host=self.config.report_host, port=self.port,
                 path=self.config.report_path)

    async def stop(self) -> None:
        """Stop listening."""
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        """One POST from an MMSC."""
        carrier = _carrier_of(request, self.config.carriers)
        if carrier is None:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="mm7"'})
        schema = SchemaVersion(carrier.schema_version)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            error = DecodeError(StatusCode.CONTENT_REFUSED, "request too large")
            return _answer(codec.encode(codec.fault_for(error, schema, server=False), schema),
                           500)
        decoded = codec.decode(request.headers.get("Content-Type", ""), body,
                               max_bytes=self.config.max_body_bytes)
        if isinstance(decoded, DecodeError):
            log.warning("mm7_report_refused", carrier=carrier.name, status=decoded.status,
                        detail=decoded.detail)
            fault = codec.fault_for(decoded, schema, server=False)
            return _answer(codec.encode(fault, schema), 500)
        report = decoded.message
        if not isinstance(report, DeliveryReportReq):
            error = DecodeError(StatusCode.UNSUPPORTED_OPERATION,
                                f"{type(report).__name__} is not taken here",
                                getattr(report, "transaction_id", None))
            return _answer(codec.encode(codec.fault_for(error, schema, server=False),
                                        decoded.schema or schema), 500)
        await self._store(carrier.name, report)  # raises → 500: the MMSC sends it again
        self.reports += 1
        if self.counter is not None:
            self.counter.labels(report.mm_status.value).inc()
        rsp = DeliveryReportRsp(report.transaction_id, Status(StatusCode.SUCCESS, "Success"))
        return _answer(codec.encode(rsp, _schema(decoded, schema), decoded.mm7_version), 200)

    async def _store(self, carrier: str, report: DeliveryReportReq) -> None:
        log.debug("mm7_report", carrier=carrier, message_id=report.message_id,
                 status=report.mm_status.value)
        if not report.mm_status.final:
            return  # Deferred / Indeterminate: the final report follows
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO mm7_report_inbox (carrier, msg_id, mm_status, status_text, done_at)
                   VALUES ($1, $2, $3, $4, $5)""",
                carrier, report.message_id, report.mm_status.value, report.status_text,
                report.date)
            await match_reports(conn)


def _schema(decoded: Decoded, fallback: SchemaVersion) -> SchemaVersion:
    """Answer in the schema the MMSC wrote in."""
    return decoded.schema or fallback

