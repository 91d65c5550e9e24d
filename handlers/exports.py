"""Streamed spreadsheet downloads: CSV (UTF-8 with BOM) and XLSX written row by row, so an
export of a year of records never holds more than one chunk in memory.

The XLSX is a minimal Office Open XML workbook (one sheet, inline strings) zipped on the fly
with data descriptors, the way a non-seekable stream has to be; Excel, LibreOffice and
openpyxl read it.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import AsyncIterator, Sequence
from xml.sax.saxutils import escape

from aiohttp import web

CSV = "text/csv"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CHUNK = 64 * 1024

Cell = str | int | float | None


async def stream(request: web.Request, fmt: str, name: str, sheet: str,
                 columns: Sequence[str], rows: AsyncIterator[Sequence[Cell]]
                 ) -> web.StreamResponse:
    """Send `rows` under a header of `columns` as a `fmt` ("csv" or "xlsx") attachment."""
    resp = web.StreamResponse(headers={
        "Content-Type": f"{CSV}; charset=utf-8" if fmt == "csv" else XLSX,
        "Content-Disposition": f'attachment; filename="{name}.{fmt}"'})
    await resp.prepare(request)
    writer: _CsvWriter | XlsxWriter = _CsvWriter() if fmt == "csv" else XlsxWriter(sheet)
    writer.row(columns)
    async for row in rows:
        writer.row(row)
        if writer.pending() >= CHUNK:
            await resp.write(writer.take())
    await resp.write(writer.close())
    await resp.write_eof()
    return resp


class _CsvWriter:
    def __init__(self) -> None:
        self._buf = io.StringIO()
        self._buf.write("\ufeff")  # Excel reads UTF-8 (Korean) only with a BOM
        self._csv = csv.writer(self._buf)

    def row(self, values: Sequence[Cell]) -> None:
        self._csv.writerow(["" if v is None else v for v in values])

    def pending(self) -> int:
        return self._buf.tell()

    def take(self) -> bytes:
        out = self._buf.getvalue().encode()
        self._buf.seek(0)
        self._buf.truncate()
        return out

    def close(self) -> bytes:
        return self.take()


class _Spool(io.RawIOBase):
    """A write-only, non-seekable byte sink the zip writer fills and the response drains."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        chunk = bytes(b)  # type: ignore[call-overload]
        self.data += chunk
        self.written += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.written


_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

_CONTENT_TYPES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
    'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.'
    'openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-'
    'officedocument.spreadsheetml.styles+xml"/></Types>')
_ROOT_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>')
_WORKBOOK_RELS = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
    '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/worksheet" Target="worksheets/sheet1.xml"/>'
    '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
    'relationships/styles" Target="styles.xml"/></Relationships>')
_STYLES = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="1"><fill><patternFill patternType="none"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
    '</cellStyleXfs><cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" '
    'xfId="0"/></cellXfs><cellStyles count="1"><cellStyle name="Normal" xfId="0" '
    'builtinId="0"/></cellStyles></styleSheet>')
_SHEET_HEAD = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
    '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
    '<sheetData>')
_SHEET_TAIL = '</sheetData></worksheet>'


def _workbook(sheet: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            f'<sheets><sheet name="{escape(sheet, {chr(34): "&quot;"})}" sheetId="1" '
            'r:id="rId1"/></sheets></workbook>')


def _column(i: int) -> str:
    name = ""
    i += 1
    while i:
        i, rest = divmod(i - 1, 26)
        name = chr(65 + rest) + name
    return name


class XlsxWriter:
    """One worksheet of rows, zipped as it is written; `take()` drains finished bytes."""

    def __init__(self, sheet: str) -> None:
        self._spool = _Spool()
        self._zip = zipfile.ZipFile(self._spool, "w", compression=zipfile.ZIP_DEFLATED)
        for part, text in (("[Content_Types].xml", _CONTENT_TYPES), ("_rels/.rels", _ROOT_RELS),
                           ("xl/workbook.xml", _workbook(sheet[:31])),
                           ("xl/_rels/workbook.xml.rels", _WORKBOOK_RELS),
                           ("xl/styles.xml", _STYLES)):
            self._zip.writestr(part, text)
        self._sheet = self._zip.open("xl/worksheets/sheet1.xml", "w", force_zip64=True)
        self._sheet.write(_SHEET_HEAD.encode())
        self._rows = 0
        self._refs: list[str] = []

    def row(self, values: Sequence[Cell]) -> None:
        self._rows += 1
        n = self._rows
        while len(self._refs) < len(values):
            self._refs.append(_column(len(self._refs)))
        cells = []
        for ref, v in zip(self._refs, values, strict=False):
            if v is None or v == "":
                continue
            if isinstance(v, bool):
                v = "TRUE" if v else "FALSE"
            if isinstance(v, int | float):
                cells.append(f'<c r="{ref}{n}"><v>{v!r}</v></c>')
            else:
                text = escape(_ILLEGAL_XML.sub("", v))
                cells.append(f'<c r="{ref}{n}" t="inlineStr"><is><t xml:space="preserve">'
                             f'{text}</t></is></c>')
        self._sheet.write(f'<row r="{n}">{"".join(cells)}</row>'.encode())

    def pending(self) -> int:
        return len(self._spool.data)

    def take(self) -> bytes:
        out = bytes(self._spool.data)
        self._spool.data.clear()
        return out

    def close(self) -> bytes:
        """Finish the sheet and the zip directory; the last bytes of the file."""
        self._sheet.write(_SHEET_TAIL.encode())
        self._sheet.close()
        self._zip.close()
        return self.take()
