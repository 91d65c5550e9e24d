"""The event log in PostgreSQL (`event_log`, migration 0013): plain SQL, one query per function.

Ids are taken in insert order but may commit out of order; `writers` and `still_running` let
the follower (hub.py) tell a row that can still appear from one that never will.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

CHANNEL = "telgate_events"
_NONE: frozenset[str] = frozenset()
_COLUMNS = "id, event_id, tenant_id, sp_id, type, extensions, created_at, data::text AS data"


class LoggedEvent:
    """One row of the log, with its server-sent-event frame rendered once for every stream.

    The frame is made when a stream first asks for it: the follower reads every event (to
    keep its place and the recent ones), most of which no stream may ever send."""

    __slots__ = (
        "_created_at",
        "_data",
        "_event_id",
        "_frame",
        "extensions",
        "id",
        "sp_id",
        "tenant_id",
        "type",
    )

    def __init__(self, id: int, tenant_id: uuid.UUID, sp_id: str | None, type: str,
                 extensions: frozenset[str], event_id: uuid.UUID, created_at: datetime,
                 data_json: str) -> None:
        self.id = id
        self.tenant_id = tenant_id
        self.sp_id = sp_id
        self.type = type
        self.extensions = extensions
        self._event_id = event_id
        self._created_at = created_at
        self._data = data_json
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = frame(self.id, self._event_id, self.type, self._created_at, self._data)
        return self._frame


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to write: `event_id` is chosen by the writer, so a retried batch never doubles;
    `customer`, a call's customer number, gives the row the directory's `customer_name`."""

    event_id: uuid.UUID
    tenant_id: uuid.UUID
    type: str
    extensions: tuple[str, ...]
    data: dict[str, object]
    created_at: datetime
    customer: str | None = None


def frame(log_id: int, event_id: uuid.UUID, event_type: str, created_at: datetime,
          data_json: str) -> bytes:
    """The SSE frame: `id` is the log id (Last-Event-ID), `data` the webhook body's JSON."""
    body = (f'{{"id":"{event_id}","type":{json.dumps(event_type)},'
            f'"created_at":"{created_at.isoformat()}","data":{data_json}}}')
    return f"id: {log_id}\nevent: {event_type}\ndata: {body}\n\n".encode()


def from_row(r: asyncpg.Record) -> LoggedEvent:
    """A stored row, framed."""
    extensions = r["extensions"]
    return LoggedEvent(r["id"], r["tenant_id"], r["sp_id"], r["type"],
                       frozenset(extensions) if extensions else _NONE, r["event_id"],
                       r["created_at"], r["data"])


async def insert(conn: asyncpg.Connection, events: Sequence[NewEvent]) -> None:
    """Write events in one statement, ids in the given order; an event already written (the
    same event_id: a batch retried after a lost commit answer) is skipped. An event with a
    `customer` number gets `customer_name` from the tenant's customer directory (null when the
    number is not in it) in the same statement. JSON goes as text, whatever codec the
    connection has."""
    await conn.execute(
        """INSERT INTO event_log (event_id, tenant_id, type, extensions, data, created_at)
           SELECT u.event_id, u.tenant_id, u.type,
                  ARRAY(SELECT jsonb_array_elements_text(u.extensions::jsonb)),
                  CASE WHEN u.customer IS NULL THEN u.data::jsonb
                       ELSE u.data::jsonb || jsonb_build_object('customer_name', c.name) END,
                  u.created_at
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                       $6::timestamptz[], $7::text[])
                WITH ORDINALITY AS u(event_id, tenant_id, type, extensions, data, created_at,
                                     customer, n)
                LEFT JOIN customers c ON c.tenant_id = u.tenant_id AND c.number = u.customer
           ORDER BY u.n
           ON CONFLICT (event_id) DO NOTHING""",
        [e.event_id for e in events], [e.tenant_id for e in events], [e.type for e in events],
        [json.dumps(list(e.extensions)) for e in events],
        [json.dumps(e.data, default=str, ensure_ascii=False) for e in events],
        [e.created_at for e in events], [e.customer for e in events])


async def rows_after(conn: asyncpg.Connection, after: int, limit: int) -> list[LoggedEvent]:
    """Committed rows after `after`, in id order (every tenant: the follower's read)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM event_log WHERE id > $1 ORDER BY id LIMIT $2", after, limit)
    return [from_row(r) for r in rows]


async def rows_between(conn: asyncpg.Connection, after: int, before: int) -> list[LoggedEvent]:
    """Committed rows with `after` < id < `before`, in id order."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM event_log WHERE id > $1 AND id < $2 ORDER BY id",
        after, before)
    return [from_row(r) for r in rows]


async def history(conn: asyncpg.Connection, tenant_id: uuid.UUID, *, after: int, upto: int,
                  limit: int, sp_id: str | None, types: Sequence[str] | None,
                  extension: str | None) -> list[LoggedEvent]:
    """One tenant's rows with `after` < id <= `upto`, filtered as a stream is, in id order."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM event_log
            WHERE tenant_id = $1 AND id > $2 AND id <= $3
              AND ($5::text IS NULL OR type NOT LIKE 'message.%' OR sp_id = $5)
              AND ($6::text[] IS NULL OR type = ANY ($6))
              AND ($7::text IS NULL OR $7 = ANY (extensions))
            ORDER BY id LIMIT $4""",
        tenant_id, after, upto, limit, sp_id, list(types) if types is not None else None,
        extension)
    return [from_row(r) for r in rows]


async def last_id(conn: asyncpg.Connection) -> int:
    """The highest committed id (0 when the log is empty)."""
    return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM event_log"))


async def last_issued(conn: asyncpg.Connection) -> int:
    """The highest id ever handed out (committed or not); ids above it do not exist."""
    value = await conn.fetchval("SELECT pg_sequence_last_value('event_log_id_seq')")
    return int(value or 0)


async def floor(conn: asyncpg.Connection) -> int:
    """Ids at or below this were deleted by retention."""
    return int(await conn.fetchval("SELECT floor FROM event_log_floor"))


async def watch(conn: asyncpg.Connection) -> None:
    """Ask for `CHANNEL` notifications on this (LISTEN) connection: while any connection
    watches, every statement adding events notifies (migration 0023). Rows of connections that
    are gone (an instance killed) are cleared on the way."""
    await conn.execute(
        """WITH gone AS (
               DELETE FROM event_watchers
               WHERE pid <> pg_backend_pid() AND pid NOT IN (SELECT pid FROM pg_stat_activity)
           )
           INSERT INTO event_watchers (pid) VALUES (pg_backend_pid())
           ON CONFLICT (pid) DO NOTHING""")


async def unwatch(conn: asyncpg.Connection) -> None:
    """No more notifications for this connection (others may still watch)."""
    await conn.execute("DELETE FROM event_watchers WHERE pid = pg_backend_pid()")


async def writers(conn: asyncpg.Connection) -> list[str]:
    """Transactions now able to commit event ids (holders of the writer mark)."""
    found = await conn.fetchval(
        """SELECT coalesce(array_agg(virtualtransaction), '{}') FROM pg_locks
           WHERE locktype = 'advisory' AND classid = 7401 AND objid = 13 AND objsubid = 2
             AND granted""")
    return list(found)


async def still_running(conn: asyncpg.Connection, vxids: Sequence[str]) -> bool:
    """Whether any of these writer transactions has not ended yet."""
    return bool(await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM pg_locks
                          WHERE locktype = 'advisory' AND classid = 7401 AND objid = 13
                            AND objsubid = 2 AND virtualtransaction = ANY ($1::text[]))""",
        list(vxids)))


async def sweep(conn: asyncpg.Connection, retention_seconds: float, *, batch: int = 10_000
                ) -> int:
    """Delete the oldest rows logged longer ago than the retention (up to `batch`, always a
    prefix of the ids) and raise the floor past them; return how many went."""
    deleted = await conn.fetchval(
        """WITH head AS (
               SELECT id, logged_at FROM event_log ORDER BY id LIMIT $2
           ), doomed AS (
               SELECT id FROM head
               WHERE id < coalesce((SELECT min(id) FROM head
                                    WHERE logged_at >= now() - make_interval(secs => $1)),
                                   9223372036854775807)
           ), gone AS (
               DELETE FROM event_log e USING doomed WHERE e.id = doomed.id RETURNING e.id
           ), raised AS (
               UPDATE event_log_floor SET floor = greatest(floor, (SELECT max(id) FROM gone))
               WHERE EXISTS (SELECT 1 FROM gone)
           )
           SELECT count(*) FROM gone""",
        retention_seconds, batch)
    return int(deleted or 0)
