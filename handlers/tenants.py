"""Tenants, their SP IDs, API keys and settings: creation, lookup, key authentication."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from handlers import audit as audit_trail
from handlers.api.models import Body, Day, Timestamp
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.ivr.hours import clock_minutes

KEY_PREFIX = "tgk_"
SP_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,32}$"
_SP_ID = re.compile(SP_ID_PATTERN)


@dataclass(frozen=True, slots=True)
class Tenant:
    """An account (사업자) of a portal."""

    id: uuid.UUID
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public facts (never its secret)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    sp_id: str | None
    prefix: str
    label: str
    created_at: datetime
    revoked_at: datetime | None
    scope: Scope = Scope.ADMIN


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: one tenant, optionally narrowed to one SP ID."""

    tenant_id: uuid.UUID
    sp_id: str | None
    key_id: uuid.UUID
    key_prefix: str
    scope: Scope = Scope.ADMIN
    key_label: str = ""

    @property
    def actor(self) -> str:
        return f"key:{self.key_prefix}"


def hash_key(key: str) -> bytes:
    """The stored form of an API key."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> tuple[str, str]:
    """A fresh key and its display prefix: 'tgk_' + 43 url-safe chars (256 bits)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[: len(KEY_PREFIX) + 8]


async def create_tenant(conn: asyncpg.Connection, name: str, *, actor: str) -> Tenant:
    """Create a tenant; a duplicate name is `tenant_exists`."""
    name = name.strip()
    if not name or len(name) > 100:
        raise DomainError("invalid_name", "tenant name must be 1-100 characters", field="name")
    async with conn.transaction():
        try:
            row = await conn.fetchrow(
                "INSERT INTO tenants (name) VALUES ($1) RETURNING id, name, created_at", name
            )
        except asyncpg.UniqueViolationError:
            raise DomainError(
                "tenant_exists", f"a tenant named {name!r} exists", field="name", status=409
            ) from None
        assert row is not None
        await audit(conn, row["id"], actor, "tenant.create", name)
    return Tenant(row["id"], row["name"], row["created_at"])


async def find_tenant(conn: asyncpg.Connection, id_or_name: str) -> Tenant:
    """The tenant with this id or name; `tenant_not_found` otherwise."""
    try:
        tid: uuid.UUID | None = uuid.UUID(id_or_name)
    except ValueError:
        tid = None
    row = await conn.fetchrow(
        "SELECT id, name, created_at FROM tenants WHERE id = $1 OR name = $2", tid, id_or_name
    )
    if row is None:
        raise DomainError(
            "tenant_not_found", f"no tenant {id_or_name!r}", field="tenant", status=404
        )
    return Tenant(row["id"], row["name"], row["created_at"])


async def list_tenants(conn: asyncpg.Connection) -> list[Tenant]:
    """Every tenant, oldest first."""
    rows = await conn.fetch("SELECT id, name, created_at FROM tenants ORDER BY created_at, name")
    return [Tenant(r["id"], r["name"], r["created_at"]) for r in rows]


async def ensure_sp_id(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, sp_id: str, *, actor: str
) -> None:
    """Add an SP ID under a tenant (no-op if it is already that tenant's)."""
    if not _SP_ID.match(sp_id):
        raise DomainError(
            "invalid_sp_id", "SP ID must be 1-32 of A-Z a-z 0-9 _ . -", field="sp_id"
        )
    owner = await conn.fetchval("SELECT tenant_id FROM sp_ids WHERE sp_id = $1", sp_id)
    if owner == tenant_id:
        return
    if owner is not None:
        raise DomainError(
            "sp_id_taken", f"SP ID {sp_id!r} belongs to another tenant", field="sp_id", status=409
        )
    await conn.execute("INSERT INTO sp_ids (tenant_id, sp_id) VALUES ($1, $2)", tenant_id, sp_id)
    await audit(conn, tenant_id, actor, "sp_id.create", sp_id)


async def create_key(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    *,
    sp_id: str | None,
    label: str,
    actor: str,
    scope: Scope = Scope.ADMIN,
) -> tuple[str, ApiKey]:
    """Create a key for a tenant (and SP ID) with a scope; return the secret (shown once) and
    its record."""
    key, prefix = new_key()
    async with conn.transaction():
        if sp_id is not None:
            await ensure_sp_id(conn, tenant_id, sp_id, actor=actor)
        row = await conn.fetchrow(
            """INSERT INTO api_keys (tenant_id, sp_id, prefix, key_hash, label, scope)
               VALUES ($1, $2, $3, $4, $5, $6)
               RETURNING id, tenant_id, sp_id, prefix, label, created_at, revoked_at, scope""",
            tenant_id, sp_id, prefix, hash_key(key), label, scope.value,
        )
        assert row is not None
        await audit(conn, tenant_id, actor, "api_key.create", prefix,
                    {"sp_id": sp_id, "scope": scope.value, "label": label, "id": str(row["id"])})
    return key, _key(row)


async def list_keys(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, *,
    before: tuple[datetime, uuid.UUID] | None = None, limit: int | None = None,
) -> list[ApiKey]:
    """The tenant's keys, newest first; `before` continues after (created_at, id)."""
    rows = await conn.fetch(
        """SELECT id, tenant_id, sp_id, prefix, label, created_at, revoked_at, scope
           FROM api_keys WHERE tenant_id = $1
             AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
           ORDER BY created_at DESC, id DESC LIMIT $4""",
        tenant_id, before[0] if before else None, before[1] if before else None, limit,
    )
    return [_key(r) for r in rows]


async def get_key(conn: asyncpg.Connection, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """One of the tenant's keys; another tenant's key is `not_found`, like a missing one."""
    row = await conn.fetchrow(
        """SELECT id, tenant_id, sp_id, prefix, label, created_at, revoked_at, scope
           FROM api_keys WHERE tenant_id = $1 AND id = $2""",
        tenant_id, key_id,
    )
    if row is None:
        raise DomainError("not_found", "no such API key", status=404)
    return _key(row)


async def relabel_key(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, key_id: uuid.UUID, label: str, *, actor: str
) -> ApiKey:
    """Set the label of one of the tenant's keys."""
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE api_keys SET label = $3 WHERE tenant_id = $1 AND id = $2
               RETURNING id, tenant_id, sp_id, prefix, label, created_at, revoked_at, scope""",
            tenant_id, key_id, label,
        )
        if row is None:
            raise DomainError("not_found", "no such API key", status=404)
        await audit(conn, tenant_id, actor, "api_key.relabel", row["prefix"], {"label": label})
    return _key(row)


async def revoke_key(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, key_id: uuid.UUID, *, actor: str
) -> None:
    """Revoke one of the tenant's keys (idempotent)."""
    async with conn.transaction():
        prefix = await conn.fetchval(
            """UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
               WHERE tenant_id = $1 AND id = $2 RETURNING prefix""",
            tenant_id, key_id,
        )
        if prefix is None:
            raise DomainError("not_found", "no such API key", status=404)
        await audit(conn, tenant_id, actor, "api_key.revoke", prefix)


async def authenticate(conn: asyncpg.Connection, key: str) -> Principal | None:
    """The principal a presented key acts as, or None for an unknown or revoked key."""
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        return None
    row = await conn.fetchrow(
        """SELECT id, tenant_id, sp_id, prefix, scope, label FROM api_keys
           WHERE key_hash = $1 AND revoked_at IS NULL""",
        hash_key(key),
    )
    if row is None:
        return None
    return Principal(row["tenant_id"], row["sp_id"], row["id"], row["prefix"],
                     Scope(row["scope"]), row["label"])


async def audit(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID | None,
    actor: str,
    action: str,
    subject: str = "",
    details: dict[str, object] | None = None,
) -> None:
    """Append one entry to the audit trail (call inside the change's transaction)."""
    await audit_trail.record(conn, tenant_id, actor, action, subject, details)


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        row["id"], row["tenant_id"], row["sp_id"], row["prefix"], row["label"],
        row["created_at"], row["revoked_at"], Scope(row["scope"]),
    )


# -- settings ------------------------------------------------------------------------------------
# A setting is a field of TenantSettings. Those other code reads in SQL keep their own column
# (SETTING_COLUMNS); every other one lives in tenants.settings (jsonb), so a new setting is one
# field here and nothing in the database.

OPTOUT_NUMBER_PATTERN = r"^080-?[0-9]{3,4}-?[0-9]{4}$"
RID_PATTERN = r"^0[0-9]{1,2}-?[0-9]{3,4}-?[0-9]{4}$|^1[568][0-9]{2}-?[0-9]{4}$"
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ClockTime = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
_ZONES = sorted(zoneinfo.available_timezones())
TimeZoneName = Annotated[str, AfterValidator(lambda z: _known_zone(z)),
                         WithJsonSchema({"type": "string", "enum": _ZONES})]


def _known_zone(name: str) -> str:
    if name not in _ZONES:
        raise ValueError("unknown IANA time zone")
    return name


CloseTime = Annotated[str, StringConstraints(
    pattern=r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")]
DID_KEY_PATTERN = r"^[0-9]+(-[0-9]+)*$"
DidDigits = Annotated[str, StringConstraints(pattern=DID_KEY_PATTERN, max_length=24)]
CallbackTrigger = Literal["closed", "no_agent", "no_answer"]  # handlers.ivr.features.Trigger
ClosureReason = Annotated[str, StringConstraints(max_length=200)]


class _KeysNamed:
    """Publishes a map's key constraint as `propertyNames`: pydantic writes it as
    `patternProperties`, which leaves keys outside the pattern allowed by the document though
    the model refuses them."""

    def __get_pydantic_json_schema__(self, core: CoreSchema, handler: GetJsonSchemaHandler
                                     ) -> JsonSchemaValue:
        schema = handler(core)
        patterns = schema.pop("patternProperties", None)
        if patterns:
            (pattern, values), = patterns.items()
            schema["additionalProperties"] = values
            schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
        return schema


class DayHours(Body):
    """One weekday's own opening window."""

    opens: ClockTime = Field(description="HH:MM, e.g. 09:00")
    closes: CloseTime = Field(description="HH:MM after opens, or 24:00 (midnight), e.g. 13:00")


class Closure(Body):
    """A one-off closure (a company event, a system change): closed from starts to ends."""

    starts: Timestamp = Field(description="RFC 3339, closed from this instant")
    ends: Timestamp = Field(description="RFC 3339 after starts, open again from this instant")
    reason: ClosureReason = Field("", description="shown to people, e.g. 창립기념일")


class BusinessHours(Body):
    """When the tenant answers calls, in the tenant's time zone. A window lies within one
    calendar day (closes may be 24:00); outside it, on holidays and during closures the
    tenant is closed (docs/ivr.md)."""

    days: list[Weekday] = Field(min_length=1, max_length=7,
                                description="the days open, e.g. mon..fri")
    opens: ClockTime = Field(description="HH:MM, e.g. 09:00")
    closes: CloseTime = Field(description="HH:MM after opens, or 24:00 (midnight), e.g. 18:00")
    hours_by_day: dict[Weekday, DayHours] = Field(
        default_factory=dict, description="a window of its own for some of `days`, e.g. "
                                          '{"sat": {"opens": "09:00", "closes": "13:00"}}')
    holidays: list[Day] = Field(default_factory=list, max_length=400,
                                description="dates (YYYY-MM-DD) closed all day")
    closures: list[Closure] = Field(default_factory=list, max_length=100,
                                    description="one-off closures")


class TenantSettings(BaseModel):
    """What a tenant sets itself (GET/PATCH /v1/tenant/settings, `telgate admin tenant set`)."""

    sms_max_bytes: Literal[80, 90] = Field(
        90, description="bytes an SMS may carry; a longer text goes as LMS (type auto)")
    optout_number: str | None = Field(
        None, description="the tenant's free 080 opt-out number (digits); customers' MO "
                          "messages to it are opt-outs")
    ad_optout_line: str | None = Field(
        None, description="the closing line of advertisements, naming optout_number "
                          "(default: 무료거부 080-…)")
    timezone: str = Field("Asia/Seoul", description="IANA zone of business_hours")
    business_hours: BusinessHours | None = Field(
        None, description="when calls are answered; null: always (docs/ivr.md)")
    did_business_hours: dict[str, BusinessHours] = Field(
        default_factory=dict, description="hours of particular DIDs (digits), replacing "
                                          "business_hours for calls to that DID")
    callback_on: list[CallbackTrigger] = Field(
        default_factory=list, description="when a caller is offered the callback IVR: closed "
                                          "(outside business hours), no_agent (no target "
                                          "extension can ring), no_answer (ring timeout); "
                                          "empty: never")
    recording_policy: Literal["all", "none", "exclude_internal"] = Field(
        "none", description="which calls are recorded")
    default_rid: str | None = Field(
        None, description="representative number presented on outgoing calls; must be a "
                          "registered sender number")
    mms_lms_fallback: bool = Field(
        False, description="an MMS whose image the carrier refuses goes out as LMS (text only)")
    max_call_seconds: float | None = Field(
        None, description="longest call before it is ended (reason max_duration), 0: no limit; "
                          "null: the configured sip.max_call_seconds")
    # Limits: set by the operator (`telgate admin tenant set NAME=VALUE`), shown to the tenant.
    api_requests_per_second: float = Field(
        2000.0, description="API requests per second of all the tenant's keys together "
                            "(operator setting)")
    key_requests_per_second: float = Field(
        2000.0, description="API requests per second of any one key (operator setting)")
    recipients_per_second: float = Field(
        100_000.0, description="recipients accepted per second by POST /v1/messages "
                            "(operator setting)")
    daily_recipients: int = Field(
        5_000_000, description="recipients accepted per Korean calendar day (operator "
                               "setting)")
    imports_per_minute: float = Field(
        60.0, description="spreadsheet imports per minute (operator setting)")
    exports_per_minute: float = Field(
        60.0, description="exports per minute (operator setting)")


class SettingsPatch(Body):
    """The settings to change; a field left out keeps its value, null clears it."""

    sms_max_bytes: Literal[80, 90] | None = None
    optout_number: Annotated[str, StringConstraints(pattern=OPTOUT_NUMBER_PATTERN)] | None = \
        Field(None, examples=["080-123-4567"])
    ad_optout_line: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = \
        Field(None, examples=["무료거부 080-123-4567"])
    timezone: TimeZoneName | None = None
    business_hours: BusinessHours | None = None
    did_business_hours: Annotated[dict[DidDigits, BusinessHours], Field(max_length=100),
                                  _KeysNamed()] | None = Field(
        None, examples=[{"0212345678": {"days": ["mon", "tue", "wed", "thu", "fri"],
                                        "opens": "08:00", "closes": "20:00"}}])
    callback_on: Annotated[list[CallbackTrigger], Field(max_length=3)] | None = None
    recording_policy: Literal["all", "none", "exclude_internal"] | None = None
    default_rid: Annotated[str, StringConstraints(pattern=RID_PATTERN)] | None = None
    mms_lms_fallback: bool | None = None
    max_call_seconds: Annotated[float, Field(ge=0, le=86400)] | None = None


Rate = Annotated[float, Field(gt=0, le=1_000_000)]


class OperatorSettingsPatch(SettingsPatch):
    """What the operator sets (`telgate admin tenant set`): the tenant's settings and limits.
    The limits are not in the API's patch: a portal's key cannot raise its own share."""

    api_requests_per_second: Rate | None = None
    key_requests_per_second: Rate | None = None
    recipients_per_second: Rate | None = None
    daily_recipients: Annotated[int, Field(ge=0, le=10**10)] | None = None
    imports_per_minute: Rate | None = None
    exports_per_minute: Rate | None = None


LIMIT_SETTINGS = frozenset(OperatorSettingsPatch.model_fields) - frozenset(
    SettingsPatch.model_fields)
SETTING_COLUMNS = {"sms_max_bytes": "sms_max_bytes", "optout_number": "optout_number",
                   "ad_optout_line": "optout_line", "mms_lms_fallback": "mms_lms_fallback"}
_DEFAULTS = TenantSettings.model_validate({})
_NOT_NULL = {"sms_max_bytes", "timezone", "recording_policy", "mms_lms_fallback",
             *LIMIT_SETTINGS}


async def get_settings(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> TenantSettings:
    """The tenant's settings, defaults filled in."""
    row = await conn.fetchrow(
        "SELECT sms_max_bytes, optout_number, optout_line, mms_lms_fallback, settings "
        "FROM tenants WHERE id = $1",
        tenant_id)
    if row is None:
        raise DomainError("tenant_not_found", "no such tenant", field="tenant")
    values: dict[str, object] = {k: v for k, v in row["settings"].items()
                                 if k in TenantSettings.model_fields}
    for name, column in SETTING_COLUMNS.items():
        values[name] = row[column]
    if values["sms_max_bytes"] not in (80, 90):  # set by SQL to another value: show the default
        values["sms_max_bytes"] = _DEFAULTS.sms_max_bytes
    return TenantSettings.model_validate(values)


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _checked_hours(hours: dict[str, Any], where: str) -> dict[str, Any]:
    """Business hours as stored (holidays sorted, once each), refused (422 naming the field)
    where a window does not open before it closes, a day's own window is for a day not open,
    or a closure does not end after it starts."""
    def window(w: dict[str, Any], at: str) -> None:
        if clock_minutes(w["closes"]) <= clock_minutes(w["opens"]):
            raise DomainError("invalid_setting", f"{at}.closes must be after opens (a window "
                              "lies within one day; 24:00 is midnight)", field=f"{at}.closes")

    window(hours, where)
    for day, own in hours["hours_by_day"].items():
        if day not in hours["days"]:
            raise DomainError("invalid_setting", f"{where}.hours_by_day.{day}: {day} is not "
                              f"in days", field=f"{where}.hours_by_day.{day}")
        window(own, f"{where}.hours_by_day.{day}")
    for i, closure in enumerate(hours["closures"]):
        try:
            starts, ends = (datetime.fromisoformat(closure[k].replace("Z", "+00:00"))
                            .astimezone(UTC) for k in ("starts", "ends"))
        except OverflowError:
            raise DomainError("invalid_setting", f"{where}.closures[{i}] reaches outside the "
                              "years 1-9999", field=f"{where}.closures[{i}]") from None
        if ends <= starts:
            raise DomainError("invalid_setting", f"{where}.closures[{i}].ends must be after "
                              "starts", field=f"{where}.closures[{i}].ends")
    return {**hours, "holidays": sorted(set(hours["holidays"]))}


def _checked_did_hours(by_did: dict[str, Any]) -> dict[str, Any]:
    """DID hours keyed by digits, each checked; two keys naming one DID are refused."""
    out: dict[str, Any] = {}
    for key, hours in by_did.items():
        did = _digits(key)
        if did in out:
            raise DomainError("invalid_setting", f"did_business_hours names {did} twice",
                              field=f"did_business_hours.{key}")
        out[did] = _checked_hours(hours, f"did_business_hours.{did}")
    return out


def _formatted_080(number: str) -> str:
    return f"{number[:3]}-{number[3:-4]}-{number[-4:]}"


async def update_settings(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, patch: SettingsPatch, *, actor: str
) -> TenantSettings:
    """Apply a patch, check the settings together, store and audit them."""
    from handlers.messages.compose import optout_number_in

    changes = {name: getattr(patch, name) for name in patch.model_fields_set}
    for name, value in changes.items():
        if value is None and name in _NOT_NULL:
            raise DomainError("invalid_setting", f"{name} cannot be cleared", field=name)
    async with conn.transaction():
        await conn.execute("SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
        current = await get_settings(conn, tenant_id)
        merged = current.model_dump(mode="json")
        merged.update(patch.model_dump(mode="json", include=set(changes)))
        for name, value in changes.items():  # null puts a list or map back to empty
            if value is None and getattr(_DEFAULTS, name) is not None:
                merged[name] = getattr(_DEFAULTS, name)
        if changes.get("optout_number"):
            merged["optout_number"] = _digits(str(changes["optout_number"]))
            if "ad_optout_line" not in changes:
                merged["ad_optout_line"] = f"무료거부 {_formatted_080(merged['optout_number'])}"
        line, number = merged["ad_optout_line"], merged["optout_number"]
        if line is not None:
            named = optout_number_in(line)
            if number is None or named != number:
                raise DomainError("invalid_setting", "ad_optout_line must name the tenant's "
                                  "optout_number (e.g. 무료거부 080-123-4567)",
                                  field="ad_optout_line")
        if merged["business_hours"] is not None:
            merged["business_hours"] = _checked_hours(merged["business_hours"],
                                                      "business_hours")
        merged["did_business_hours"] = _checked_did_hours(merged["did_business_hours"])
        merged["callback_on"] = sorted(set(merged["callback_on"]))
        if changes.get("default_rid"):
            merged["default_rid"] = _digits(str(changes["default_rid"]))
            known = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM sender_numbers WHERE tenant_id = $1 "
                "AND number = $2)", tenant_id, merged["default_rid"])
            if not known:
                raise DomainError("sender_not_registered", "default_rid must be a registered "
                                  "sender number", field="default_rid")
        stored = {k: v for k, v in merged.items() if k not in SETTING_COLUMNS}
        try:
            await conn.execute(
                "UPDATE tenants SET sms_max_bytes = $2, optout_number = $3, optout_line = $4, "
                "mms_lms_fallback = $5, settings = $6 WHERE id = $1", tenant_id,
                merged["sms_max_bytes"], merged["optout_number"], merged["ad_optout_line"],
                merged["mms_lms_fallback"], stored)
        except asyncpg.UniqueViolationError:
            raise DomainError("optout_number_taken", "another tenant uses this 080 number",
                              field="optout_number") from None
        await audit(conn, tenant_id, actor, "tenant.settings", "",
                    {"changed": {k: merged[k] for k in sorted(changes)}})
    return TenantSettings.model_validate(merged)


# -- SP IDs ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SpId:
    """A sending sub-account of a tenant (seed 000: SP ID, company name, registration date)."""

    sp_id: str
    name: str
    created_at: datetime


async def list_sp_ids(conn: asyncpg.Connection, tenant_id: uuid.UUID, *, after: str | None,
                      limit: int) -> list[SpId]:
    """The tenant's SP IDs in SP ID order, after `after`."""
    rows = await conn.fetch(
        "SELECT sp_id, name, created_at FROM sp_ids WHERE tenant_id = $1 "
        "AND ($2::text IS NULL OR sp_id > $2) ORDER BY sp_id LIMIT $3", tenant_id, after, limit)
    return [SpId(r["sp_id"], r["name"], r["created_at"]) for r in rows]


async def create_sp_id(conn: asyncpg.Connection, tenant_id: uuid.UUID, sp_id: str, name: str,
                       *, actor: str) -> SpId:
    """A new SP ID with its display name; an existing one is `sp_id_exists` or `sp_id_taken`."""
    async with conn.transaction():
        owner = await conn.fetchval("SELECT tenant_id FROM sp_ids WHERE sp_id = $1", sp_id)
        if owner == tenant_id:
            raise DomainError("sp_id_exists", f"SP ID {sp_id!r} exists", field="sp_id")
        await ensure_sp_id(conn, tenant_id, sp_id, actor=actor)
        row = await conn.fetchrow(
            "UPDATE sp_ids SET name = $3 WHERE tenant_id = $1 AND sp_id = $2 "
            "RETURNING sp_id, name, created_at", tenant_id, sp_id, name)
    assert row is not None
    return SpId(row["sp_id"], row["name"], row["created_at"])


async def rename_sp_id(conn: asyncpg.Connection, tenant_id: uuid.UUID, sp_id: str, name: str,
                       *, actor: str) -> SpId:
    """Change the display name of one of the tenant's SP IDs."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE sp_ids SET name = $3 WHERE tenant_id = $1 AND sp_id = $2 "
            "RETURNING sp_id, name, created_at", tenant_id, sp_id, name)
        if row is None:
            raise DomainError("not_found", "no such SP ID")
        await audit(conn, tenant_id, actor, "sp_id.rename", sp_id, {"name": name})
    return SpId(row["sp_id"], row["name"], row["created_at"])
