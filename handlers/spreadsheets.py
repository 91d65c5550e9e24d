"""Bounded reading of uploaded spreadsheets (xls, xlsx, csv) into rows of strings.

Pure: takes bytes, returns values. The format is detected from the content, never from a
file name; every limit is checked before the expensive step it protects (the zip directory
is checked before anything is inflated).
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import openpyxl
import xlrd

from handlers.numbers import NumberKind, check_sender

__all__ = [
    "BadSheet",
    "CorruptFile",
    "Limits",
    "Sheet",
    "SpreadsheetError",
    "TooLarge",
    "TooManyColumns",
    "TooManyRows",
    "UnsupportedType",
    "detect_format",
    "read_rows",
    "render_cell",
    "restore_phone_leading_zero",
]


class SpreadsheetError(Exception):
    """An upload we refuse; `code` is stable, `http_status` is what the API should answer."""

    code: ClassVar[str] = "spreadsheet_error"
    http_status: ClassVar[int] = 422

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.code}: {detail}")
        self.detail = detail


class TooLarge(SpreadsheetError):
    """The file, or what it would inflate to, is over the limits (zip bombs land here)."""

    code = "body_too_large"
    http_status = 413


class UnsupportedType(SpreadsheetError):
    """Not xls, xlsx or a text (csv/tsv) file we can decode."""

    code = "unsupported_type"
    http_status = 422  # the request (multipart) is fine; the file inside is not a sheet


class TooManyRows(SpreadsheetError):
    """More rows than Limits.max_rows."""

    code = "too_many_rows"


class TooManyColumns(SpreadsheetError):
    """A row has a value past Limits.max_columns."""

    code = "too_many_columns"


class BadSheet(SpreadsheetError):
    """The requested sheet does not exist."""

    code = "bad_sheet"


class CorruptFile(SpreadsheetError):
    """The file claims a format but cannot be parsed as it."""

    code = "corrupt_file"


@dataclass(frozen=True, slots=True)
class Limits:
    """Upper bounds for one upload."""

    max_bytes: int = 10 * 1024 * 1024
    max_rows: int = 100_000
    # xlsx rows are read up to column max_columns + 1 only (a forged cell in column XFD must
    # not cost 16,384 cells a row): a value right past the limit is refused, one further
    # out is not seen. xls and csv rows are refused whatever column the value is in.
    max_columns: int = 50
    max_unzipped_bytes: int = 100 * 1024 * 1024
    # Real xlsx XML compresses 5-30x; deflate tops out near 1000x, which only bombs reach.
    # Small members (styles, shared strings of repeated values) are exempt from the ratio.
    max_compression_ratio: float = 200.0
    ratio_exempt_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sheet:
    """The rows of one sheet, cells rendered as the user sees them, plus all sheet names."""

    sheet_names: tuple[str, ...]
    name: str
    rows: list[list[str]]


OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
ZIP_MAGIC = b"PK\x03\x04"
CSV_SHEET_NAME = "Sheet1"


def detect_format(data: bytes) -> str:
    """Return "xls", "xlsx" or "csv" from magic bytes; zip members are not inflated here."""
    if data.startswith(OLE2_MAGIC):
        return "xls"
    if data.startswith(ZIP_MAGIC):
        return "xlsx"
    return "csv"


def read_rows(data: bytes, *, sheet: str | int | None = None, limits: Limits = Limits()) -> Sheet:
    """Read one sheet of an xls, xlsx or csv upload (None = first sheet, int = 0-based index).

    Raises a SpreadsheetError: too_large, unsupported_type, too_many_rows, too_many_columns,
    bad_sheet or corrupt_file.
    """
    if len(data) > limits.max_bytes:
        raise TooLarge(f"file is {len(data)} bytes, the limit is {limits.max_bytes}")
    fmt = detect_format(data)
    if fmt == "xls":
        return _read_xls(data, sheet, limits)
    if fmt == "xlsx":
        return _read_xlsx(data, sheet, limits)
    return _read_csv(data, sheet, limits)


def restore_phone_leading_zero(cell: str) -> str:
    """Give back the 0 Excel drops from a phone typed as a number (1012345678 -> 01012345678).

    Only 9- and 10-digit cells that become an allowed mobile, landline, 070 or 080 number
    are changed; anything else is returned as it was.
    """
    if not (cell.isascii() and cell.isdigit() and len(cell) in (9, 10)) or cell[0] == "0":
        return cell
    verdict = check_sender("0" + cell)
    if verdict.allowed and verdict.kind in _ZERO_LED_KINDS:
        return verdict.number
    return cell


_ZERO_LED_KINDS = frozenset(
    {NumberKind.MOBILE, NumberKind.FIXED_LINE, NumberKind.VOIP, NumberKind.TOLL_FREE}
)


def render_cell(value: object) -> str:
    """Render a cell value the way Excel's General format shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".15g")  # Excel keeps 15 significant digits
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value).strip()


class _RowCollector:
    """Collects rendered rows, enforcing row and column limits, dropping trailing blanks."""

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._pending_blank = 0
        self.rows: list[list[str]] = []

    def add(self, cells: Iterable[str]) -> None:
        row = list(cells)
        while row and row[-1] == "":
            row.pop()
        if len(row) > self._limits.max_columns:
            raise TooManyColumns(
                f"row {len(self.rows) + self._pending_blank + 1} has {len(row)} columns, "
                f"the limit is {self._limits.max_columns}"
            )
        if not row:
            self.add_blank()
            return
        self._count_one()
        self.rows.extend([] for _ in range(self._pending_blank))
        self._pending_blank = 0
        self.rows.append(row)

    def add_blank(self) -> None:
        # Blank rows count toward the limit (a forged row number 1,048,576 is refused
        # here, not after a million empty lists) but are only kept when a row follows.
        self._count_one()
        self._pending_blank += 1

    def _count_one(self) -> None:
        if len(self.rows) + self._pending_blank + 1 > self._limits.max_rows:
            raise TooManyRows(f"more than {self._limits.max_rows} rows")


def _pick(names: tuple[str, ...], sheet: str | int | None) -> int:
    if not names:
        raise CorruptFile("the workbook has no sheets")
    if sheet is None:
        return 0
    if isinstance(sheet, int):
        if 0 <= sheet < len(names):
            return sheet
        raise BadSheet(f"sheet index {sheet} out of range: the file has {len(names)} sheet(s)")
    if sheet in names:
        return names.index(sheet)
    raise BadSheet(f"no sheet named {sheet!r}; sheets: {', '.join(names)}")


def _read_xls(data: bytes, sheet: str | int | None, limits: Limits) -> Sheet:
    try:
        book = xlrd.open_workbook(
            file_contents=data, on_demand=True, logfile=io.StringIO(), ragged_rows=True
        )
    # xlrd raises a zoo of types (XLRDError, struct.error, IndexError, ...) on hostile input.
    except Exception as exc:
        raise CorruptFile(f"not a readable xls file: {exc}") from exc
    try:
        names = tuple(book.sheet_names())
        index = _pick(names, sheet)
        try:
            ws = book.sheet_by_index(index)
        except Exception as exc:
            raise CorruptFile(f"sheet {names[index]!r} cannot be read: {exc}") from exc
        if ws.nrows > limits.max_rows:
            # Blank rows count toward the limit in every format; refuse before rendering.
            raise TooManyRows(f"{ws.nrows} rows, the limit is {limits.max_rows}")
        out = _RowCollector(limits)
        for r in range(ws.nrows):
            out.add(_xls_cell(book, ws.cell(r, c)) for c in range(ws.row_len(r)))
        return Sheet(names, names[index], out.rows)
    finally:
        book.release_resources()


def _xls_cell(book: xlrd.book.Book, cell: xlrd.sheet.Cell) -> str:
    if cell.ctype == xlrd.XL_CELL_DATE:
        try:
            return render_cell(xlrd.xldate_as_datetime(cell.value, book.datemode))
        except (ValueError, OverflowError, xlrd.xldate.XLDateError):
            return render_cell(cell.value)
    if cell.ctype == xlrd.XL_CELL_BOOLEAN:
        return render_cell(bool(cell.value))
    if cell.ctype == xlrd.XL_CELL_ERROR:
        return str(xlrd.error_text_from_code.get(cell.value, "#ERR"))
    return render_cell(cell.value)


def _check_zip_directory(archive: zipfile.ZipFile, limits: Limits) -> None:
    # zipfile never inflates a member past the size its directory entry declares (it stops
    # and fails the CRC), so the declared sizes are a real bound on the work done later.
    total = 0
    for info in archive.infolist():
        total += info.file_size
        if total > limits.max_unzipped_bytes:
            raise TooLarge(
                f"workbook would inflate to more than {limits.max_unzipped_bytes} bytes"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.ratio_exempt_bytes and ratio > limits.max_compression_ratio:
            raise TooLarge(
                f"member {info.filename!r} is compressed {ratio:.0f}:1, "
                f"the limit is {limits.max_compression_ratio:.0f}:1"
            )


def _read_xlsx(data: bytes, sheet: str | int | None, limits: Limits) -> Sheet:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    # zipfile raises BadZipFile, NotImplementedError, UnicodeDecodeError, ... on damage.
    except Exception as exc:
        raise CorruptFile(f"not a readable zip file: {exc}") from exc
    with archive:  # only the central directory is read here
        members = set(archive.namelist())
        if "[Content_Types].xml" not in members:
            raise UnsupportedType("a zip archive that is not an Office document")
        if "xl/workbook.xml" not in members:
            raise UnsupportedType("an Office document that is not an Excel workbook")
        _check_zip_directory(archive, limits)
    try:
        book = openpyxl.load_workbook(
            io.BytesIO(data), read_only=True, data_only=True, keep_links=False
        )
    # openpyxl raises KeyError, ValueError, TypeError, ParseError ... on hostile input.
    except Exception as exc:
        raise CorruptFile(f"not a readable xlsx file: {exc}") from exc
    try:
        names = tuple(book.sheetnames)
        if sheet is None:
            # The first worksheet, skipping chart sheets a workbook may open with.
            sheet = next((n for n in names if hasattr(book[n], "iter_rows")), None)
        index = _pick(names, sheet)
        ws = book[names[index]]  # by name: book.worksheets skips chart sheets
        if not hasattr(ws, "iter_rows"):
            raise BadSheet(f"sheet {names[index]!r} is a chart, not a worksheet")
        # The <dimension> tag is written by the file's author: ignore it, or a forged
        # A1:XFD1048576 makes openpyxl pad every row to 16,384 cells.
        if hasattr(ws, "reset_dimensions"):
            ws.reset_dimensions()
        out = _RowCollector(limits)
        try:
            for values in ws.iter_rows(max_col=limits.max_columns + 1, values_only=True):
                if any(v is not None for v in values):
                    out.add(render_cell(v) for v in values)
                else:
                    out.add_blank()
        except SpreadsheetError:
            raise
        except Exception as exc:
            raise CorruptFile(f"sheet {names[index]!r} cannot be read: {exc}") from exc
        return Sheet(names, names[index], out.rows)
    finally:
        book.close()


def _decode_text(data: bytes) -> str:
    if data.startswith(codecs.BOM_UTF8):
        encodings: tuple[str, ...] = ("utf-8-sig",)
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ("utf-16",)  # Excel's "Unicode text" export (tab separated)
    else:
        # Korean Excel saves CSV in CP949; UTF-8 is tried first because CP949 text is
        # almost never valid UTF-8, while the reverse is often "valid" garbage.
        encodings = ("utf-8", "cp949")
    for encoding in encodings:
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\x00" in text:
            break
        return text
    raise UnsupportedType("not xls, xlsx or a UTF-8/CP949 text file")


def _read_csv(data: bytes, sheet: str | int | None, limits: Limits) -> Sheet:
    text = _decode_text(data)
    names = (CSV_SHEET_NAME,)
    index = _pick(names, sheet)
    head = text[:4096]
    delimiter = max(",\t;", key=head.count) if any(d in head for d in ",\t;") else ","
    out = _RowCollector(limits)
    try:
        for record in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            out.add(cell.strip() for cell in record)
    except csv.Error as exc:
        raise CorruptFile(f"malformed csv: {exc}") from exc
    return Sheet(names, names[index], out.rows)
