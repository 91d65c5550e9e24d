"""The sender-number registry (발신번호 사전등록): register, list, delete, quota, bulk import.

Every mutation runs in one transaction that first locks the tenant row, so that concurrent
registrations (one by one or by import) can never push a tenant past its quota, and writes the
audit trail in the same transaction.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from handlers import numbers
from handlers.errors import DomainError
from handlers.pagination import split_time_cursor, time_cursor
from handlers.spreadsheets import restore_phone_leading_zero
from handlers.tenants import audit


@dataclass(frozen=True, slots=True)
class SenderNumber:
    """A registered sender number."""

    number: str
    registered_at: datetime


@dataclass(frozen=True, slots=True)
class Quota:
    """How many numbers a tenant has registered and may register."""

    used: int
    limit: int


def canonical_sender(raw: object, *, field: str = "number") -> str:
    """Normalise and judge `raw` as a sender number; refusals carry the policy's reason code."""
    if not isinstance(raw, str):
        raise DomainError("invalid_number", "number must be a string", field=field)
    try:
        verdict = numbers.check_sender(raw)
    except numbers.NumberError as exc:
        raise DomainError(exc.code, exc.detail, field=field) from None
    if not verdict.allowed:
        raise DomainError(verdict.reason, verdict.explanation, field=field)
    return verdict.number


async def _lock_quota(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> Quota:
    limit = await conn.fetchval(
        "SELECT sender_quota FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
    if limit is None:
        raise DomainError("not_found", "no such tenant", status=404)
    used = await conn.fetchval(
        "SELECT count(*) FROM sender_numbers WHERE tenant_id = $1", tenant_id)
    return Quota(int(used), int(limit))


async def register(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, raw: object, *, actor: str
) -> SenderNumber:
    """Register one number: invalid → its policy code, twice → 409, over quota → 422."""
    number = canonical_sender(raw)
    async with conn.transaction():
        quota = await _lock_quota(conn, tenant_id)
        exists = await conn.fetchval(
            "SELECT 1 FROM sender_numbers WHERE tenant_id = $1 AND number = $2", tenant_id, number)
        if exists:
            raise DomainError("already_registered", f"{number} is already registered",
                              field="number", status=409)
        if quota.used >= quota.limit:
            raise DomainError(
                "quota_exceeded",
                f"{quota.used} of {quota.limit} numbers registered; delete one or ask for more",
                field="number", extra={"used": quota.used, "limit": quota.limit})
        at = await conn.fetchval(
            """INSERT INTO sender_numbers (tenant_id, number, registered_by) VALUES ($1, $2, $3)
               RETURNING registered_at""", tenant_id, number, actor)
        await audit(conn, tenant_id, actor, "sender_number.register", number)
    return SenderNumber(number, at)


class SortKey(enum.StrEnum):
    """List orders of the registry (seed 000: 정렬 등록일)."""

    REGISTERED_AT = "registered_at"
    NUMBER = "number"


async def list_numbers(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    *,
    q: str = "",
    sort: SortKey = SortKey.REGISTERED_AT,
    descending: bool = True,
    limit: int = 50,
    cursor: str | None = None,
    table: str = "sender_numbers",
    time_column: str = "registered_at",
) -> tuple[list[asyncpg.Record], str | None]:
    """One page of the tenant's numbers matching digits `q`, with the next page's cursor."""
    digits = "".join(ch for ch in q if ch.isdigit())
    op = "<" if descending else ">"
    order = "DESC" if descending else "ASC"
    # One cursor shape for both orders (`<micros>.<number>`); the number order reads the number.
    after = split_time_cursor(cursor) if cursor else None
    args: list[object] = [tenant_id, f"%{digits}%", limit + 1]
    if sort is SortKey.REGISTERED_AT:
        where = ""
        if after is not None:
            where = f"AND ({time_column}, number) {op} ($4::timestamptz, $5)"
            args += [after[0], after[1]]
        sql = (f"SELECT * FROM {table} WHERE tenant_id = $1 AND number LIKE $2 {where} "
               f"ORDER BY {time_column} {order}, number {order} LIMIT $3")
    else:
        where = ""
        if after is not None:
            where = f"AND number {op} $4"
            args.append(after[1])
        sql = (f"SELECT * FROM {table} WHERE tenant_id = $1 AND number LIKE $2 {where} "
               f"ORDER BY number {order} LIMIT $3")
    rows = await conn.fetch(sql, *args)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = time_cursor(last[time_column], last["number"])
    return list(rows), next_cursor


async def delete_numbers(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, raws: Sequence[object], *, actor: str
) -> int:
    """Delete the given numbers of the tenant (select-and-delete); returns how many went."""
    wanted = []
    for i, raw in enumerate(raws):
        try:
            wanted.append(numbers.normalise(raw) if isinstance(raw, str) else "")
        except numbers.NumberError as exc:
            raise DomainError(exc.code, exc.detail, field=f"numbers[{i}]") from None
    async with conn.transaction():
        gone = await conn.fetch(
            """DELETE FROM sender_numbers WHERE tenant_id = $1 AND number = ANY($2::text[])
               RETURNING number""", tenant_id, wanted)
        for r in gone:
            await audit(conn, tenant_id, actor, "sender_number.delete", r["number"])
    return len(gone)


async def quota(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> Quota:
    """The tenant's registered count and limit."""
    row = await conn.fetchrow(
        """SELECT t.sender_quota AS limit,
                  (SELECT count(*) FROM sender_numbers s WHERE s.tenant_id = t.id) AS used
           FROM tenants t WHERE t.id = $1""", tenant_id)
    if row is None:
        raise DomainError("not_found", "no such tenant", status=404)
    return Quota(int(row["used"]), int(row["limit"]))


async def set_quota(conn: asyncpg.Connection, tenant_id: uuid.UUID, limit: int, *,
                    actor: str) -> None:
    """Operator setting: how many numbers the tenant may register."""
    if limit < 0:
        raise DomainError("invalid_quota", "quota must be 0 or more", field="sender_quota")
    async with conn.transaction():
        await conn.execute("UPDATE tenants SET sender_quota = $2 WHERE id = $1", tenant_id, limit)
        await audit(conn, tenant_id, actor, "sender_number.quota", str(limit))


class RowStatus(enum.StrEnum):
    """Verdict on one spreadsheet row (seed 000's yellow rows are every status but ok)."""

    OK = "ok"
    INVALID = "invalid"
    DUPLICATE_IN_FILE = "duplicate_in_file"
    ALREADY_REGISTERED = "already_registered"
    OVER_QUOTA = "over_quota"


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One row of an import report."""

    row: int
    input: str
    number: str | None
    status: RowStatus
    reason: str | None = None


def looks_like_header(cell: str) -> bool:
    """A first row whose column A has no digit is a header (발신번호, number, ...)."""
    return not any(ch.isdigit() for ch in cell)


Progress = Callable[[int, int], None]


def judge_rows(
    cells: Sequence[tuple[int, str]],
    judge: Callable[[str], tuple[str | None, str | None]],
    existing: set[str],
    room: int | None,
    progress: Progress | None = None,
) -> list[ImportRow]:
    """Statuses of (row number, column A) pairs: judge → (number, refusal reason)."""
    seen: set[str] = set()
    report: list[ImportRow] = []
    total = len(cells)
    for done, (row_no, raw) in enumerate(cells, 1):
        if progress is not None and done % 2000 == 0:
            progress(done, total)
        number, reason = judge(raw)
        if number is None:
            report.append(ImportRow(row_no, raw, None, RowStatus.INVALID, reason))
        elif number in seen:
            report.append(ImportRow(row_no, raw, number, RowStatus.DUPLICATE_IN_FILE,
                                    "duplicate_in_file"))
        elif number in existing:
            seen.add(number)
            report.append(ImportRow(row_no, raw, number, RowStatus.ALREADY_REGISTERED,
                                    "already_registered"))
        elif room is not None and room <= 0:
            seen.add(number)
            report.append(ImportRow(row_no, raw, number, RowStatus.OVER_QUOTA, "quota_exceeded"))
        else:
            seen.add(number)
            if room is not None:
                room -= 1
            report.append(ImportRow(row_no, raw, number, RowStatus.OK))
    return report


def judge_sender(raw: str) -> tuple[str | None, str | None]:
    """(canonical number, None) for a valid sender, else (None, reason code)."""
    try:
        return canonical_sender(raw), None
    except DomainError as exc:
        return None, exc.code


def column_a(rows: Sequence[Sequence[str]]) -> list[tuple[int, str]]:
    """(1-based row number, column A) of non-empty rows, the header row (if any) left out.

    A number Excel stored as a number lost its leading zero (1012345678); it is restored
    when the result is a plausible Korean number, as the portal user typed it.
    """
    cells = [(i + 1, restore_phone_leading_zero((r[0] if r else "").strip()))
             for i, r in enumerate(rows)]
    cells = [(n, c) for n, c in cells if c]
    if cells and looks_like_header(cells[0][1]):
        cells = cells[1:]
    return cells


async def import_numbers(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    cells: Sequence[tuple[int, str]],
    *,
    dry_run: bool,
    skip_invalid: bool,
    actor: str,
    progress: Progress | None = None,
) -> tuple[list[ImportRow], int]:
    """Judge every row and, unless `dry_run`, register all (or with `skip_invalid` the ok rows).

    Without `skip_invalid` a single bad row registers nothing (`import_has_errors`, with the
    report). Runs under the tenant lock, so the statuses are exact when committing.
    """
    async with conn.transaction():
        q = await _lock_quota(conn, tenant_id)
        existing = {r["number"] for r in await conn.fetch(
            "SELECT number FROM sender_numbers WHERE tenant_id = $1", tenant_id)}
        report = judge_rows(cells, judge_sender, existing, q.limit - q.used, progress)
        if progress is not None:
            progress(len(cells), len(cells))
        good = [r for r in report if r.status is RowStatus.OK]
        # A number already registered is what the row asks for: re-importing a file is
        # idempotent, each such row reported as already_registered.
        bad = sum(1 for r in report if r.status not in _SETTLED)
        if dry_run:
            return report, 0
        if bad and not skip_invalid:
            raise ImportRefused(report)
        if good:
            await conn.copy_records_to_table(
                "sender_numbers", records=[(tenant_id, r.number, actor) for r in good],
                columns=["tenant_id", "number", "registered_by"])
            await audit(conn, tenant_id, actor, "sender_number.import", f"{len(good)} numbers",
                        {"registered": len(good), "refused": bad})
    return report, len(good)


_SETTLED = frozenset({RowStatus.OK, RowStatus.ALREADY_REGISTERED})


class ImportRefused(DomainError):
    """A committing import had rows that are not ok and `skip_invalid` was not set."""

    def __init__(self, report: list[ImportRow]) -> None:
        bad = sum(1 for r in report if r.status not in _SETTLED)
        super().__init__(
            "import_has_errors",
            f"{bad} row(s) are not ok; fix or drop them, or send skip_invalid=true",
            field="file")
        self.report = report
