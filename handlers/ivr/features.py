"""Per-tenant call features the engine reads synchronously: business hours (the tenant's and
its DIDs') and which triggers send a caller to the callback IVR.

`tenant_call_features` reads every tenant that set any of them; the engine keeps the result in
a cache refreshed at start and when a tenant's settings change (as `handlers/calls/limits.py`
does for the call limits). A tenant absent from it has `NO_FEATURES`: always open, no callback
IVR, calls behave as before the IVR existed.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from handlers.ivr.hours import BusinessCalendar

log = structlog.get_logger("telgate.ivr.features")


class Trigger(enum.StrEnum):
    """Why a caller reached the callback IVR (the `callback_on` setting lists the enabled)."""

    CLOSED = "closed"  # outside business hours
    NO_AGENT = "no_agent"  # every target extension offline, DND, busy or unregistered
    NO_ANSWER = "no_answer"  # the ring group rang out


@dataclass(frozen=True, slots=True)
class CallFeatures:
    """One tenant's hours (None: always open), its DIDs' own hours (digits -> calendar, they
    replace the tenant's for calls to that DID) and the enabled callback triggers."""

    hours: BusinessCalendar | None = None
    did_hours: Mapping[str, BusinessCalendar] = field(default_factory=dict)
    callback_on: frozenset[str] = frozenset()

    def open_at(self, did: str | None, at: datetime) -> bool:
        """Whether a call to `did` (None: no DID, the tenant's hours) is answered at `at`."""
        calendar = self.did_hours.get(did, self.hours) if did is not None else self.hours
        return calendar is None or calendar.is_open(at)


NO_FEATURES = CallFeatures()


def features_of(settings: Mapping[str, Any]) -> CallFeatures:
    """The features of one tenant's stored settings (ValueError/KeyError if malformed)."""
    zone = settings.get("timezone") or "Asia/Seoul"
    hours = settings.get("business_hours")
    return CallFeatures(
        hours=BusinessCalendar.from_settings(hours, zone) if hours else None,
        did_hours={did: BusinessCalendar.from_settings(h, zone)
                   for did, h in (settings.get("did_business_hours") or {}).items()},
        callback_on=frozenset(Trigger(t).value for t in settings.get("callback_on") or ()),
    )


async def tenant_call_features(conn: asyncpg.Connection) -> dict[uuid.UUID, CallFeatures]:
    """Every tenant with business hours, DID hours or callback triggers set (others absent).
    A tenant whose stored value cannot be read is logged and left out (always open)."""
    rows = await conn.fetch(
        """SELECT id, jsonb_build_object(
                      'timezone', settings->'timezone',
                      'business_hours', settings->'business_hours',
                      'did_business_hours', settings->'did_business_hours',
                      'callback_on', settings->'callback_on')::text AS features
           FROM tenants
           WHERE jsonb_typeof(settings->'business_hours') = 'object'
              OR settings->'did_business_hours' NOT IN ('null', '{}')
              OR settings->'callback_on' NOT IN ('null', '[]')""")
    found: dict[uuid.UUID, CallFeatures] = {}
    for r in rows:
        try:
            found[r["id"]] = features_of(json.loads(r["features"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("tenant_setting_unreadable", tenant=str(r["id"]),
                        setting="business_hours", error=str(exc))
    return found
