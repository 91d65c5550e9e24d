"""Recipient import from a spreadsheet (seed 002 §18-4): choose the sheet, the name column,
the phone column and the first row; get back the recipient list and every row's problem.

Nothing is stored: the portal shows the list, the user fixes or drops rows, and the numbers go
into `POST /v1/messages` as `to`. Uploads are bounded like the registry import
(`handlers.spreadsheets.Limits`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel, Field

from handlers import numbers, spreadsheets
from handlers.api.framework import Route, RouteTable, Upload, arg, respond, uploaded_file
from handlers.api.models import Params
from handlers.api.scopes import Scope
from handlers.errors import DomainError
from handlers.registry.routes import SPREADSHEET_CODES

UPLOAD_LIMITS = spreadsheets.Limits()
MAX_NAME_CHARS = 100
_LETTERS = re.compile(r"^[A-Za-z]{1,3}$")


@dataclass(frozen=True, slots=True)
class ImportSpec:
    """Where the recipients are: sheet (None = first), 0-based columns, 1-based first row."""

    sheet: str | int | None = None
    phone_column: int = 0
    name_column: int | None = None
    first_row: int = 1


@dataclass(frozen=True, slots=True)
class ImportedRecipient:
    """A usable row: canonical mobile number and the name cell (if a name column was chosen)."""

    row: int
    name: str | None
    number: str


@dataclass(frozen=True, slots=True)
class RowProblem:
    """A row that yields no recipient, and why (`code` is stable)."""

    row: int
    input: str
    name: str | None
    code: str
    detail: str
    duplicate_of: int | None = None


@dataclass(slots=True)
class ImportResult:
    """The parsed sheet: recipients in row order, problems in row order, sheet names."""

    sheet: str
    sheets: tuple[str, ...]
    recipients: list[ImportedRecipient] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    blank_rows: int = 0


def column_index(raw: str, field_name: str) -> int:
    """A column given as letters (`A`, `b`, `AA`) or a 1-based number, as a 0-based index."""
    text = raw.strip()
    if _LETTERS.match(text):
        index = 0
        for ch in text.upper():
            index = index * 26 + (ord(ch) - ord("A") + 1)
        value = index - 1
    elif text.isascii() and text.isdigit() and int(text) >= 1:
        value = int(text) - 1
    else:
        raise DomainError("invalid_column", f"{field_name} must be a column letter (A, B, …) "
                          "or a 1-based column number", field=field_name)
    if value >= UPLOAD_LIMITS.max_columns:
        raise DomainError("invalid_column", f"{field_name} is past the last readable column "
                          f"({UPLOAD_LIMITS.max_columns})", field=field_name)
    return value


def parse_spec(fields: dict[str, str]) -> ImportSpec:
    """The form fields `sheet`, `name_column`, `phone_column`, `first_row` (all optional)."""
    sheet_raw = fields.get("sheet", "").strip()
    phone = column_index(fields["phone_column"], "phone_column") \
        if fields.get("phone_column", "").strip() else 0
    name = column_index(fields["name_column"], "name_column") \
        if fields.get("name_column", "").strip() else None
    if name is not None and name == phone:
        raise DomainError("invalid_column", "name_column and phone_column are the same column",
                          field="name_column")
    first_raw = fields.get("first_row", "").strip() or "1"
    if not (first_raw.isascii() and first_raw.isdigit()) or not \
            1 <= int(first_raw) <= UPLOAD_LIMITS.max_rows:
        raise DomainError("invalid_first_row", "first_row must be a row number from 1",
                          field="first_row")
    return ImportSpec(sheet_raw or None, phone, name, int(first_raw))


def read_recipients(data: bytes, spec: ImportSpec) -> ImportResult:
    """Parse the upload; raises DomainError for the file itself (bad sheet, too large, …)."""
    try:
        sheet = _read_sheet(data, spec.sheet)
    except spreadsheets.SpreadsheetError as exc:
        raise DomainError(exc.code, exc.detail,
                          field="sheet" if isinstance(exc, spreadsheets.BadSheet) else "file"
                          ) from None
    result = ImportResult(sheet.name, sheet.sheet_names)
    seen: dict[str, int] = {}
    for offset, cells in enumerate(sheet.rows[spec.first_row - 1:]):
        row = spec.first_row + offset
        raw = cells[spec.phone_column] if spec.phone_column < len(cells) else ""
        name = None
        if spec.name_column is not None and spec.name_column < len(cells):
            name = cells[spec.name_column][:MAX_NAME_CHARS] or None
        if not raw:
            if name is None and not any(cells):
                result.blank_rows += 1
            else:
                result.problems.append(RowProblem(row, raw, name, "missing_number",
                                                  "the phone column is empty"))
            continue
        try:
            verdict = numbers.check_recipient(spreadsheets.restore_phone_leading_zero(raw))
        except numbers.NumberError as exc:
            result.problems.append(RowProblem(row, raw, name, exc.code, exc.detail))
            continue
        if not verdict.allowed:
            result.problems.append(RowProblem(row, raw, name, verdict.reason,
                                              verdict.explanation))
            continue
        first = seen.get(verdict.number)
        if first is not None:
            result.problems.append(RowProblem(row, raw, name, "duplicate",
                                              f"the same number as row {first}",
                                              duplicate_of=first))
            continue
        seen[verdict.number] = row
        result.recipients.append(ImportedRecipient(row, name, verdict.number))
    return result


def _read_sheet(data: bytes, sheet: str | int | None) -> spreadsheets.Sheet:
    """A sheet by name; a number that names no sheet is a 1-based position (`2` = second)."""
    try:
        return spreadsheets.read_rows(data, sheet=sheet, limits=UPLOAD_LIMITS)
    except spreadsheets.BadSheet:
        if isinstance(sheet, str) and sheet.isascii() and sheet.isdigit() and int(sheet) >= 1:
            return spreadsheets.read_rows(data, sheet=int(sheet) - 1, limits=UPLOAD_LIMITS)
        raise


class ImportFields(Params):
    """Where the recipients are in the uploaded sheet (every field optional)."""

    sheet: str = Field("", max_length=100, description="sheet name, or its 1-based "
                              "position when no sheet has that name; default: the first sheet")
    name_column: str = Field("", pattern=r"^([A-Za-z]{1,3}|[1-9][0-9]{0,3})?$",
                                    description="column of names: letter (B) or 1-based "
                                                "number; default: no names")
    phone_column: str = Field("", pattern=r"^([A-Za-z]{1,3}|[1-9][0-9]{0,3})?$",
                                     description="column of mobile numbers: letter or "
                                                 "1-based number; default A")
    first_row: str = Field("", pattern=r"^([1-9][0-9]{0,6})?$",
                                  description="first data row (1-based), e.g. 2 to skip a "
                                              "header")


class ImportedOut(BaseModel):
    row: int
    name: str | None
    number: str


class ProblemRow(BaseModel):
    row: int
    input: str
    name: str | None
    code: str = Field(examples=["not_mobile", "invalid_number", "duplicate", "missing_number"])
    detail: str
    duplicate_of: int | None


class ImportCounts(BaseModel):
    recipients: int
    invalid: int
    duplicates: int
    blank_rows: int


class RecipientsRead(BaseModel):
    sheet: str
    sheets: list[str]
    recipients: list[ImportedOut]
    problems: list[ProblemRow]
    counts: ImportCounts


def result_out(r: ImportResult) -> RecipientsRead:
    """The API answer of an import."""
    return RecipientsRead(
        sheet=r.sheet, sheets=list(r.sheets),
        recipients=[ImportedOut(row=x.row, name=x.name, number=x.number) for x in r.recipients],
        problems=[ProblemRow(row=p.row, input=p.input, name=p.name, code=p.code, detail=p.detail,
                             duplicate_of=p.duplicate_of) for p in r.problems],
        counts=ImportCounts(recipients=len(r.recipients),
                            invalid=sum(p.code != "duplicate" for p in r.problems),
                            duplicates=sum(p.code == "duplicate" for p in r.problems),
                            blank_rows=r.blank_rows))


async def import_recipients(request: web.Request) -> web.Response:
    f = arg(request, ImportFields)
    spec = parse_spec(f.model_dump())
    return respond(result_out(read_recipients(uploaded_file(request), spec)))


def add_routes(t: RouteTable) -> None:
    """Declare the recipient-import route."""
    t.add(Route("POST", "/v1/recipient-imports", import_recipients,
                "Read recipients from a spreadsheet (sheet, name and phone columns, first row)",
                "messages", body=Upload("xls, xlsx or csv (UTF-8 or CP949); detected from the "
                                        "content", ImportFields),
                responses={200: RecipientsRead},
                errors=("invalid_column", "invalid_first_row", *SPREADSHEET_CODES),
                scope=Scope.SEND, budget="imports"))
