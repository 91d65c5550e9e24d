"""Accepting a message: validate, check the sender and every recipient, queue in one transaction.

Nothing is written unless everything is valid. Opted-out recipients are stored as `rejected`
(reason `opted_out`) so that the portal sees why they got nothing. The idempotency key row is
written in the same transaction as the message, so a retried request either finds the first
answer or waits for it (unique index) and then finds it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import asyncpg

from handlers import numbers
from handlers.errors import DomainError
from handlers.messages import compose as c
from handlers.messages import mms_store
from handlers.messages.wake import DISPATCH_CHANNEL, DispatchWake
from handlers.registry.index import NumberIndex
from handlers.registry.senders import canonical_sender
from handlers.tenants import Principal
from handlers.webhooks import emit
from protocols.values import quick_init

MAX_RECIPIENTS = 10_000
SMALL_SEND = 200  # up to this many recipients: one statement; beyond: a transaction with COPY
# Dispatch lanes (recipients.lane), claimed in this order so that a bulk send waiting in the
# queue cannot hold back a verification code or a single send.
LANE_VERIFICATION, LANE_SINGLE, LANE_BULK = 0, 1, 2
LANES = ("verification", "single", "bulk")
MAX_SCHEDULE_AHEAD = timedelta(days=183)
# A send_at this little in the past is the client's clock or the request's transit: sent now.
SEND_AT_GRACE = timedelta(seconds=60)
POLICY_SECONDS = 10.0  # a tenant's changed composition settings reach other instances within this
MAX_CACHED_POLICIES = 100_000

# What validation reads with: a connection, or the pool itself (a connection only when a read
# is needed: most sends need none, their tenant's settings being cached).
Reader: TypeAlias = "asyncpg.Connection | asyncpg.Pool"
# Takes n recipients from the send budgets of the tenant (handlers.api.ratelimit), or raises.
Charge = Callable[[asyncpg.Connection, int], Awaitable[None]]


@quick_init
@dataclass(frozen=True, slots=True)
class ParsedRecipient:
    """A recipient as requested, normalised, with its row in the request."""

    row: int
    number: str
    name: str | None
    vars: dict[str, str]


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """The tenant settings composition needs."""

    sms_max_bytes: int
    optout_line: str | None


def request_hash(body: dict[str, Any]) -> bytes:
    """A digest of the request body that ignores key order and whitespace."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).digest()


def parse_recipients(raw: object) -> tuple[list[ParsedRecipient], int]:
    """Normalised, de-duplicated recipients and how many duplicates collapsed.

    Every invalid row is reported at once (`invalid_recipients`, with `errors`).
    """
    if not isinstance(raw, list) or not raw:
        raise DomainError("no_recipients", "to must be a non-empty list", field="to")
    if len(raw) > MAX_RECIPIENTS:
        raise DomainError("too_many_recipients",
                          f"{len(raw)} recipients; at most {MAX_RECIPIENTS} per request", field="to")
    out: list[ParsedRecipient] = []
    errors: list[dict[str, object]] = []
    seen: set[str] = set()
    duplicates = 0
    for i, item in enumerate(raw):
        name: str | None = None
        variables: dict[str, str] = {}
        if isinstance(item, str):
            number_raw: object = item
            where = f"to[{i}]"
        elif isinstance(item, dict):
            number_raw = item.get("number")
            where = f"to[{i}].number"
            name_raw = item.get("name")
            if name_raw is not None and not isinstance(name_raw, str):
                errors.append({"field": f"to[{i}].name", "code": "invalid_name",
                               "detail": "name must be a string"})
                continue
            name = name_raw
            vars_raw = item.get("vars") or {}
            if not isinstance(vars_raw, dict) or not all(
                    isinstance(k, str) and isinstance(v, str | int | float)
                    for k, v in vars_raw.items()):
                errors.append({"field": f"to[{i}].vars", "code": "invalid_vars",
                               "detail": "vars must map names to strings"})
                continue
            variables = {k: str(v) for k, v in vars_raw.items()}
        else:
            errors.append({"field": f"to[{i}]", "code": "invalid_recipient",
                           "detail": "a recipient is a number or an object with a number"})
            continue
        if not isinstance(number_raw, str):
            errors.append({"field": where, "code": "invalid_number",
                           "detail": "number must be a string"})
            continue
        try:
            verdict = numbers.check_recipient(number_raw)
        except numbers.NumberError as exc:
            errors.append({"field": where, "code": exc.code, "detail": exc.detail})
            continue
        if not verdict.allowed:
            errors.append({"field": where, "code": verdict.reason, "detail": verdict.explanation})
            continue
        if verdict.number in seen:
            duplicates += 1
            continue
        seen.add(verdict.number)
        out.append(ParsedRecipient(i, verdict.number, name, variables))
    if errors:
        first = errors[0]
        raise DomainError("invalid_recipients",
                          f"{len(errors)} recipient(s) are not valid; first: {first['detail']}",
                          field=str(first["field"]), extra={"errors": errors})
    return out, duplicates


def parse_send_at(raw: object, now: datetime) -> datetime:
    """When to send: now (absent, or past by at most SEND_AT_GRACE) or an RFC 3339 time at
    most ~6 months ahead; further in the past is refused (it would go out unannounced)."""
    if raw is None or raw == "":
        return now
    if not isinstance(raw, str):
        raise DomainError("invalid_send_at", "send_at must be an RFC 3339 time", field="send_at")
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise DomainError("invalid_send_at", "send_at must be an RFC 3339 time",
                          field="send_at") from None
    if when.tzinfo is None:
        raise DomainError("invalid_send_at", "send_at needs a time zone offset", field="send_at")
    if when > now + MAX_SCHEDULE_AHEAD:
        raise DomainError("send_at_too_far", "send_at may be at most 6 months ahead",
                          field="send_at")
    if when < now - SEND_AT_GRACE:
        raise DomainError(
            "send_at_in_past",
            f"send_at {raw} is in the past; omit send_at to send now", field="send_at")
    return max(when.astimezone(UTC), now)


def decode_images(raw: object) -> list[bytes]:
    """Base64 images of an MMS request."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DomainError("invalid_images", "images must be a list of base64 JPEGs",
                          field="images")
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(base64.b64decode(str(item), validate=True))
        except (binascii.Error, ValueError):
            raise DomainError("invalid_images", "not valid base64", field=f"images[{i}]") from None
    return out


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise DomainError("invalid_field", f"{key} must be a string", field=key)
    return value


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise DomainError("invalid_field", f"{key} must be true or false", field=key)
    return value


async def tenant_policy(conn: Reader, tenant_id: uuid.UUID) -> TenantPolicy:
    """The tenant's composition settings."""
    row = await conn.fetchrow("SELECT sms_max_bytes, optout_line FROM tenants WHERE id = $1",
                              tenant_id)
    assert row is not None
    return TenantPolicy(row["sms_max_bytes"], row["optout_line"])


class PolicyCache:
    """Tenants' composition settings, read once per `ttl` seconds instead of once per send.

    A change made through this instance's API is seen by the next send (`forget`, wired to the
    API's settings listeners); one made on another instance within `ttl`, as the rate limits.
    """

    def __init__(self, ttl: float = POLICY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._cached: dict[uuid.UUID, tuple[TenantPolicy, float]] = {}

    async def get(self, conn: Reader, tenant_id: uuid.UUID) -> TenantPolicy:
        now = self.clock()
        hit = self._cached.get(tenant_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        policy = await tenant_policy(conn, tenant_id)
        if len(self._cached) >= MAX_CACHED_POLICIES:
            self._cached.clear()
        self._cached[tenant_id] = (policy, now + self.ttl)
        return policy

    def forget(self, tenant_id: uuid.UUID) -> None:
        self._cached.pop(tenant_id, None)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A validated message, ready to be written."""

    sender: str
    composed: c.ComposedMessage
    recipients: list[ParsedRecipient]
    rejected: set[str]
    send_at: datetime
    ad: bool
    test: bool
    template_id: uuid.UUID | None
    duplicates: int
    images: tuple[bytes, ...] = ()  # an MMS's JPEGs, as sent


async def prepare(conn: Reader, who: Principal, body: dict[str, Any],
                  index: NumberIndex, now: datetime, *, has_mms_route: bool | None = None,
                  policies: PolicyCache | None = None) -> Prepared:
    """Validate a request body completely; raises DomainError naming the field at fault.

    `has_mms_route` None: whether the MM7 dispatcher runs with a carrier. `policies`: where
    the tenant's settings are cached (None: read them now)."""
    if has_mms_route is None:
        has_mms_route = mms_store.route_available()
    sender = canonical_sender(body.get("from"), field="from")
    if not index.may_send(who.tenant_id, sender):
        raise DomainError("sender_not_registered",
                          f"{numbers.mask(sender)} is not a registered sender number of this "
                          "account; register it first (Telecommunications Business Act art. 84-2)",
                          field="from")
    test = _bool(body, "test")
    recipients, duplicates = parse_recipients(body.get("to"))
    if test and len(recipients) != 1:
        raise DomainError("test_needs_one_recipient", "a test send goes to exactly one number",
                          field="to")
    text = _opt_str(body, "text")
    subject = _opt_str(body, "subject")
    template_id: uuid.UUID | None = None
    if body.get("template_id") is not None:
        try:
            template_id = uuid.UUID(str(body["template_id"]))
        except ValueError:
            template_id = None
        row = None if template_id is None else await conn.fetchrow(
            "SELECT text, subject FROM templates WHERE tenant_id = $1 AND id = $2",
            who.tenant_id, template_id)
        if row is None:
            raise DomainError("template_not_found", "no such template", field="template_id")
        text = text or row["text"]
        subject = subject or row["subject"]
    if text is None:
        text = ""
    kind_raw = body.get("type", "auto")
    try:
        kind = c.MessageType(kind_raw)
    except ValueError:
        raise DomainError("invalid_field", "type must be auto, sms, lms or mms",
                          field="type") from None
    ad = _bool(body, "ad")
    send_at = parse_send_at(body.get("send_at"), now)
    policy_row = await (tenant_policy(conn, who.tenant_id) if policies is None
                        else policies.get(conn, who.tenant_id))
    policy = c.ComposePolicy(sms_max_bytes=policy_row.sms_max_bytes,
                             optout_line=policy_row.optout_line)
    images = tuple(decode_images(body.get("images")))
    request = c.ComposeRequest(
        text=text,
        recipients=[c.Recipient(r.name, r.vars) for r in recipients],
        type=kind, subject=subject, images=images, ad=ad,
        night_consent=_bool(body, "night_consent"))
    try:
        composed = c.compose(request, policy, now=send_at)
    except c.ComposeError as exc:
        raise DomainError(exc.code, exc.detail, field=_request_field(exc.field, recipients),
                          extra=_compose_extra(exc)) from None
    if composed.type is c.MessageType.MMS and not has_mms_route:
        raise DomainError("no_route", "no MMS route is configured for this account",
                          field="type")
    ad = composed.ad  # the text may have made it one
    rejected = {r.number for r in recipients
                if index.is_opted_out(who.tenant_id, r.number, advertising=ad)}
    return Prepared(sender, composed, recipients, rejected, send_at, ad, test, template_id,
                    duplicates, images if composed.type is c.MessageType.MMS else ())


def _request_field(field: str, recipients: list[ParsedRecipient]) -> str:
    """compose() numbers recipients after de-duplication; report the request's own index."""
    if field.startswith("to[") and "]" in field:
        pos = int(field[3:field.index("]")])
        if pos < len(recipients):
            return f"to[{recipients[pos].row}]" + field[field.index("]") + 1:]
    return field


def _compose_extra(exc: c.ComposeError) -> dict[str, object]:
    if isinstance(exc, c.UnencodableCharacter):
        return {"character": exc.char, "position": exc.position}
    return {}


def recipient_rows(p: Prepared) -> tuple[str, list[tuple[Any, ...]]]:
    """The message's stored text and one row per recipient (idx, number, name, text, state,
    reason)."""
    texts = p.composed.texts
    same = len(set(texts)) == 1
    rows = []
    for i, (r, text) in enumerate(zip(p.recipients, texts, strict=True)):
        rejected = r.number in p.rejected
        rows.append((i, r.number, r.name, None if same else text,
                     "rejected" if rejected else "queued", "opted_out" if rejected else None))
    return (texts[0] if same else p.composed.template), rows


def accepted_event(message_id: uuid.UUID, p: Prepared) -> dict[str, object]:
    return {"message_id": str(message_id), "type": p.composed.type.value,
            "recipients": len(p.recipients), "rejected": len(p.rejected),
            "send_at": p.send_at.isoformat()}


async def store(conn: asyncpg.Connection, who: Principal, p: Prepared,
                message_id: uuid.UUID | None = None) -> uuid.UUID:
    """Write the message and its recipients (COPY) in the caller's transaction."""
    message_id = message_id or uuid.uuid4()
    text, rows = recipient_rows(p)
    await conn.execute(
        """INSERT INTO messages (id, tenant_id, sp_id, sender, type, subject, text, ad, test,
                                 template_id, send_at, recipient_count)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        message_id, who.tenant_id, who.sp_id, p.sender, p.composed.type.value,
        p.composed.subject, text, p.ad, p.test, p.template_id, p.send_at, len(p.recipients))
    lane = LANE_BULK if len(rows) > SMALL_SEND else LANE_SINGLE
    await conn.copy_records_to_table(
        "recipients",
        records=[(message_id, i, who.tenant_id, n, name, t, st, why, p.send_at, lane)
                 for i, n, name, t, st, why in rows],
        columns=["message_id", "idx", "tenant_id", "number", "name", "text", "state", "reason",
                 "next_attempt_at", "lane"])
    await emit(conn, who.tenant_id, "message.accepted", accepted_event(message_id, p),
               sp_id=who.sp_id)
    return message_id


async def store_at_once(conn: asyncpg.Connection, who: Principal, p: Prepared,
                        message_id: uuid.UUID, answer: dict[str, object],
                        idempotency: tuple[str, bytes] | None, *,
                        notify: str | None = DISPATCH_CHANNEL) -> None:
    """A small send in one statement (one round trip, its own transaction): the message, its
    recipients, the webhook event, the idempotency key and, unless `notify` is None (the
    caller wakes its dispatcher itself, `wake.DispatchWake`), the dispatchers' NOTIFY."""
    text, rows = recipient_rows(p)
    cols = list(zip(*rows, strict=True))
    key, digest = idempotency if idempotency else (None, b"")
    await conn.execute(
        """WITH m AS (
               INSERT INTO messages (id, tenant_id, sp_id, sender, type, subject, text, ad, test,
                                     template_id, send_at, recipient_count)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ), r AS (
               INSERT INTO recipients (message_id, idx, tenant_id, number, name, text, state,
                                       reason, next_attempt_at)
               SELECT $1, u.idx, $2, u.number, u.name, u.text, u.state, u.reason, $11
               FROM unnest($13::int[], $14::text[], $15::text[], $16::text[], $17::text[],
                           $18::text[]) AS u(idx, number, name, text, state, reason)
           ), h AS (
               INSERT INTO event_log (tenant_id, sp_id, type, data)
               VALUES ($2, $3, 'message.accepted', $19::jsonb)
           ), k AS (
               INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, response)
               SELECT $2, $20, $21, 202, $22::jsonb WHERE $20::text IS NOT NULL
           )
           SELECT pg_notify($23, '') WHERE $23::text IS NOT NULL""",
        message_id, who.tenant_id, who.sp_id, p.sender, p.composed.type.value,
        p.composed.subject, text, p.ad, p.test, p.template_id, p.send_at, len(p.recipients),
        list(cols[0]), list(cols[1]), list(cols[2]), list(cols[3]), list(cols[4]), list(cols[5]),
        accepted_event(message_id, p), key, digest, answer, notify)


def accepted_json(message_id: uuid.UUID, p: Prepared, now: datetime) -> dict[str, object]:
    """The 202 answer of an accepted message."""
    return {
        "id": str(message_id),
        "type": p.composed.type.value,
        "status": "scheduled" if p.send_at > now + timedelta(seconds=1) else "queued",
        "recipients": len(p.recipients),
        "rejected": len(p.rejected),
        "duplicates_removed": p.duplicates,
        "send_at": p.send_at.isoformat(),
        "bytes": p.composed.max_bytes,
    }


async def accept(conn: asyncpg.Connection, who: Principal, body: dict[str, Any],
                 index: NumberIndex, now: datetime, *, idempotency_key: str | None,
                 has_mms_route: bool | None = None,
                 charge: Charge | None = None,
                 prepared: Prepared | None = None,
                 policies: PolicyCache | None = None,
                 wake: DispatchWake | None = None) -> tuple[int, dict[str, object]]:
    """Accept a send request; returns (HTTP status, answer). Idempotent per key for 24 h.
    `charge` takes the accepted recipients from the tenant's send budgets (or refuses);
    `prepared`: the body already validated by `prepare` (without an idempotency key);
    `wake`: how the dispatcher learns of the send (default: every instance's, by NOTIFY)."""
    notify = DISPATCH_CHANNEL if wake is None else wake.channel
    digest = request_hash(body)
    if idempotency_key is not None:
        if not 1 <= len(idempotency_key) <= 200:
            raise DomainError("invalid_idempotency_key", "Idempotency-Key must be 1-200 chars",
                              field="Idempotency-Key", status=400)
        earlier = await _earlier(conn, who.tenant_id, idempotency_key, digest, now)
        if earlier is not None:
            return earlier
    if prepared is None:
        prepared = await prepare(conn, who, body, index, now, has_mms_route=has_mms_route,
                                 policies=policies)
    if charge is not None:
        await charge(conn, len(prepared.recipients))
    message_id = uuid.uuid4()
    answer = accepted_json(message_id, prepared, now)
    idempotency = (idempotency_key, digest) if idempotency_key is not None else None
    try:
        if len(prepared.recipients) <= SMALL_SEND and not prepared.images:
            await store_at_once(conn, who, prepared, message_id, answer, idempotency,
                                notify=notify)
        else:
            async with conn.transaction():
                await store(conn, who, prepared, message_id)
                if prepared.images:
                    await mms_store.attach(conn, message_id, prepared.images,
                                           prepared.composed.images)
                if idempotency_key is not None:
                    await conn.execute(
                        """INSERT INTO idempotency_keys
                               (tenant_id, key, request_hash, status, response)
                           VALUES ($1, $2, $3, 202, $4)""",
                        who.tenant_id, idempotency_key, digest, answer)
                if notify is not None:
                    await conn.execute("SELECT pg_notify($1, '')", notify)
    except asyncpg.UniqueViolationError:
        # The same key was committed by a concurrent request meanwhile: answer as it did.
        assert idempotency_key is not None
        earlier = await _earlier(conn, who.tenant_id, idempotency_key, digest, now)
        assert earlier is not None
        return earlier
    if wake is not None:
        wake.committed()
    return 202, answer


async def _earlier(conn: asyncpg.Connection, tenant_id: uuid.UUID, key: str, digest: bytes,
                   now: datetime) -> tuple[int, dict[str, object]] | None:
    row = await conn.fetchrow(
        """SELECT request_hash, status, response, created_at FROM idempotency_keys
           WHERE tenant_id = $1 AND key = $2""", tenant_id, key)
    if row is None:
        return None
    if row["created_at"] < now - timedelta(hours=24):
        await conn.execute("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2",
                           tenant_id, key)
        return None
    if bytes(row["request_hash"]) != digest:
        raise DomainError("idempotency_conflict",
                          "this Idempotency-Key was used with a different request body",
                          field="Idempotency-Key", status=409)
    return int(row["status"]), dict(row["response"])
