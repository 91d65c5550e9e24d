"""Bounded spreadsheet reading: real xls, xlsx and csv files built here, and hostile ones."""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import io
import tracemalloc
import zipfile
from collections.abc import Sequence
from typing import Any

import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.spreadsheets import (
    BadSheet,
    CorruptFile,
    Limits,
    SpreadsheetError,
    TooLarge,
    TooManyColumns,
    TooManyRows,
    UnsupportedType,
    detect_format,
    read_rows,
    restore_phone_leading_zero,
)

Rows = Sequence[Sequence[Any]]


def make_xlsx(sheets: dict[str, Rows]) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)  # type: ignore[arg-type]
    for name, rows in sheets.items():
        ws = book.create_sheet(name)
        for row in rows:
            ws.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def make_xls(sheets: dict[str, Rows]) -> bytes:
    # xlrd cannot write; xlwt (installed into .venv for the tests) writes real BIFF8.
    xlwt = pytest.importorskip("xlwt")
    book = xlwt.Workbook(encoding="utf-8")
    date_style = xlwt.easyxf(num_format_str="YYYY-MM-DD")
    for name, rows in sheets.items():
        ws = book.add_sheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value is None:
                    continue
                if isinstance(value, dt.date):
                    ws.write(r, c, value, date_style)
                else:
                    ws.write(r, c, value)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


CUSTOMERS: Rows = [
    ["고객명", "휴대폰 번호", "금액"],
    ["홍길동", "01000000000", 10000],
    ["은누리", 1011111111.0, 50000.0],  # the phone typed as a number: Excel dropped the 0
    ["김정", "010-4123-4190", 5000.5],
]
EXPECTED = [
    ["고객명", "휴대폰 번호", "금액"],
    ["홍길동", "01000000000", "10000"],
    ["은누리", "1011111111", "50000"],
    ["김정", "010-4123-4190", "5000.5"],
]


# --------------------------------------------------------------------------- formats


def test_xlsx_rows_come_back_as_the_user_sees_them() -> None:
    data = make_xlsx({"고객정보": CUSTOMERS, "메모": [["x"]]})
    sheet = read_rows(data, sheet=None, limits=Limits())
    assert sheet.sheet_names == ("고객정보", "메모")
    assert sheet.name == "고객정보"
    assert sheet.rows == EXPECTED


def test_xls_rows_come_back_as_the_user_sees_them() -> None:
    data = make_xls({"고객정보": CUSTOMERS, "메모": [["x"]]})
    assert data.startswith(b"\xd0\xcf\x11\xe0")
    sheet = read_rows(data, sheet=None, limits=Limits())
    assert sheet.sheet_names == ("고객정보", "메모")
    assert sheet.rows == EXPECTED


def test_seed_000_xls_with_numbers_in_column_a_is_read() -> None:
    # Seed 000: "엑셀 A열에 전화번호만 입력" — numbers typed as numbers lose their 0.
    data = make_xls({"Sheet1": [[1032940189.0], [162930188.0], ["0100000000"]]})
    rows = read_rows(data, sheet=0, limits=Limits()).rows
    assert [restore_phone_leading_zero(r[0]) for r in rows] == [
        "01032940189", "0162930188", "0100000000",
    ]


def test_dates_and_booleans_render_like_excel_in_both_formats() -> None:
    rows: Rows = [[dt.datetime(2024, 5, 1), True, 0.1 + 0.2, 1e20]]
    expected = ["2024-05-01", "TRUE", "0.3", "1e+20"]
    assert read_rows(make_xlsx({"s": rows}), sheet=None, limits=Limits()).rows == [expected]
    assert read_rows(make_xls({"s": rows}), sheet=None, limits=Limits()).rows == [expected]


@pytest.mark.parametrize("maker", [make_xlsx, make_xls])
def test_a_sheet_can_be_chosen_by_name_or_index(maker: Any) -> None:
    data = maker({"첫째": [["a"]], "둘째": [["b"]]})
    assert read_rows(data, sheet="둘째", limits=Limits()).rows == [["b"]]
    assert read_rows(data, sheet=1, limits=Limits()).name == "둘째"


@pytest.mark.parametrize("maker", [make_xlsx, make_xls])
@pytest.mark.parametrize("sheet", ["없는시트", 2, -1])
def test_a_missing_sheet_is_refused_naming_the_sheets(maker: Any, sheet: str | int) -> None:
    data = maker({"첫째": [["a"]], "둘째": [["b"]]})
    with pytest.raises(BadSheet) as info:
        read_rows(data, sheet=sheet, limits=Limits())
    assert info.value.code == "bad_sheet"


def test_csv_in_utf8_with_bom_is_read() -> None:
    data = codecs.BOM_UTF8 + "고객명,휴대폰 번호\r\n홍길동,010-1234-5678\r\n".encode()
    sheet = read_rows(data, sheet=None, limits=Limits())
    assert sheet.rows == [["고객명", "휴대폰 번호"], ["홍길동", "010-1234-5678"]]
    assert sheet.sheet_names == ("Sheet1",)


def test_csv_saved_by_korean_excel_in_cp949_is_read() -> None:
    data = "고객명,휴대폰 번호\r\n홍길동,01012345678\r\n똠방각하,01011111111\r\n".encode("cp949")
    rows = read_rows(data, sheet=None, limits=Limits()).rows
    assert rows[2] == ["똠방각하", "01011111111"]


def test_csv_in_plain_utf8_with_quoted_commas_is_read() -> None:
    data = '이름,메모\n"홍, 길동","a ""q"""\n'.encode()
    assert read_rows(data, sheet=None, limits=Limits()).rows == [
        ["이름", "메모"], ["홍, 길동", 'a "q"'],
    ]


def test_tab_separated_unicode_text_from_excel_is_read() -> None:
    data = "고객명\t휴대폰\n홍길동\t01012345678\n".encode("utf-16")
    assert read_rows(data, sheet=None, limits=Limits()).rows == [
        ["고객명", "휴대폰"], ["홍길동", "01012345678"],
    ]


def test_single_column_csv_of_numbers_is_read() -> None:
    data = b"01012345678\n010-2222-3333\n"
    assert read_rows(data, sheet=None, limits=Limits()).rows == [
        ["01012345678"], ["010-2222-3333"],
    ]


def test_csv_sheet_must_be_its_only_sheet() -> None:
    with pytest.raises(BadSheet):
        read_rows(b"a\n", sheet="고객", limits=Limits())
    assert read_rows(b"a\n", sheet=0, limits=Limits()).rows == [["a"]]


def test_format_is_detected_from_content_not_name() -> None:
    assert detect_format(make_xlsx({"s": [["a"]]})) == "xlsx"
    assert detect_format(make_xls({"s": [["a"]]})) == "xls"
    assert detect_format(b"a,b\n") == "csv"


def test_blank_rows_inside_are_kept_and_trailing_blanks_dropped() -> None:
    data = make_xlsx({"s": [["a", None, None], [None], ["b"], [None, None], [None]]})
    assert read_rows(data, sheet=None, limits=Limits()).rows == [["a"], [], ["b"]]


# --------------------------------------------------------------------------- refusals


def test_a_file_over_the_byte_limit_is_refused_as_too_large() -> None:
    with pytest.raises(TooLarge) as info:
        read_rows(b"a,b\n" * 100, sheet=None, limits=Limits(max_bytes=399))
    assert (info.value.code, info.value.http_status) == ("body_too_large", 413)


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",  # an image
        b"%PDF-1.7\n\xff\xfe\x00\x01binary",
        b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    ],
)
def test_files_that_are_not_spreadsheets_are_refused_as_unsupported(data: bytes) -> None:
    with pytest.raises(UnsupportedType) as info:
        read_rows(data, sheet=None, limits=Limits())
    assert info.value.http_status == 422


def test_a_plain_zip_is_not_taken_for_xlsx() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(UnsupportedType):
        read_rows(out.getvalue(), sheet=None, limits=Limits())


def test_a_word_document_is_not_taken_for_xlsx() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<w/>")
    with pytest.raises(UnsupportedType):
        read_rows(out.getvalue(), sheet=None, limits=Limits())


@pytest.mark.parametrize(
    "data",
    [
        make_xlsx({"s": [["a"]]})[:300],  # truncated xlsx
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600,  # OLE2 header, nothing inside
    ],
)
def test_damaged_workbooks_are_refused_as_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptFile) as info:
        read_rows(data, sheet=None, limits=Limits())
    assert info.value.code == "corrupt_file"


def test_xlsx_with_broken_sheet_xml_is_refused_as_corrupt() -> None:
    good = make_xlsx({"s": [["a"]]})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                body = body[: len(body) // 2]
            dst.writestr(info, body)
    with pytest.raises(CorruptFile):
        read_rows(out.getvalue(), sheet=None, limits=Limits())


@pytest.mark.parametrize("maker", [make_xlsx, make_xls])
def test_more_rows_than_the_limit_are_refused(maker: Any) -> None:
    data = maker({"s": [[f"0101234{i:04d}"] for i in range(11)]})
    assert len(read_rows(data, sheet=None, limits=Limits(max_rows=11)).rows) == 11
    with pytest.raises(TooManyRows) as info:
        read_rows(data, sheet=None, limits=Limits(max_rows=10))
    assert info.value.code == "too_many_rows"


def test_more_csv_rows_than_the_limit_are_refused() -> None:
    with pytest.raises(TooManyRows):
        read_rows(b"1\n" * 11, sheet=None, limits=Limits(max_rows=10))


@pytest.mark.parametrize("maker", [make_xlsx, make_xls])
def test_more_columns_than_the_limit_are_refused(maker: Any) -> None:
    data = maker({"s": [["x"] * 6]})
    assert read_rows(data, sheet=None, limits=Limits(max_columns=6)).rows == [["x"] * 6]
    with pytest.raises(TooManyColumns):
        read_rows(data, sheet=None, limits=Limits(max_columns=5))


def test_forged_xlsx_dimension_does_not_inflate_rows() -> None:
    good = make_xlsx({"s": [["a", "b"], ["c", "d"]]})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                body = body.replace(b'ref="A1:B2"', b'ref="A1:XFD1048576"')
                assert b"XFD1048576" in body
            dst.writestr(info, body)
    assert read_rows(out.getvalue(), sheet=None, limits=Limits()).rows == [
        ["a", "b"], ["c", "d"],
    ]


def _bomb(member_bytes: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        with archive.open("xl/worksheets/sheet1.xml", "w", force_zip64=True) as member:
            chunk = b" " * (1 << 20)
            for _ in range(member_bytes >> 20):
                member.write(chunk)
    return out.getvalue()


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    return _bomb(128 << 20)  # 128 MiB of spaces deflate to about 130 KB


def test_a_zip_bomb_is_refused_from_its_directory_without_inflating(zip_bomb: bytes) -> None:
    assert len(zip_bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge) as info:
            read_rows(zip_bomb, sheet=None, limits=Limits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.http_status == 413
    assert peak < 2 * 1024 * 1024  # inflating even 1% of the member would exceed this


def test_a_highly_compressed_member_is_refused_by_its_ratio() -> None:
    bomb = _bomb(4 << 20)  # 4 MiB: well under the size limit, but about 1000:1
    with pytest.raises(TooLarge) as info:
        read_rows(bomb, sheet=None, limits=Limits())
    assert "compressed" in info.value.detail


def test_all_refusals_share_one_base_with_a_code() -> None:
    for cls in (TooLarge, UnsupportedType, TooManyRows, TooManyColumns, BadSheet, CorruptFile):
        assert issubclass(cls, SpreadsheetError)
        assert cls.code != SpreadsheetError.code


# --------------------------------------------------------------------------- phone column


@pytest.mark.parametrize(
    ("cell", "restored"),
    [
        ("1012345678", "01012345678"),  # mobile typed as a number
        ("101234567", "0101234567"),  # 10-digit mobile
        ("1612345678", "01612345678"),
        ("212345678", "0212345678"),  # Seoul landline
        ("21234567", "21234567"),  # 8 digits: could be 1588-style, left alone
        ("311234567", "0311234567"),
        ("7012345678", "07012345678"),  # 070
        ("802580303", "0802580303"),  # 080
        ("601234567", "601234567"),  # 060 premium is not restored
        ("1234567890", "1234567890"),  # would be 012: a pager prefix, left alone
        ("5051234567", "5051234567"),  # 050 is not a number we restore
        ("01012345678", "01012345678"),
        ("010-1234-5678", "010-1234-5678"),
        ("홍길동", "홍길동"),
        ("", ""),
    ],
)
def test_phone_cells_get_back_the_leading_zero_excel_dropped(cell: str, restored: str) -> None:
    assert restore_phone_leading_zero(cell) == restored


def test_a_forged_far_row_number_is_refused_without_building_the_gap() -> None:
    good = make_xlsx({"s": [["a"], ["b"]]})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                body = body.replace(b'r="2"', b'r="1048576"').replace(b'r="A2"', b'r="A1048576"')
                assert b"1048576" in body
            dst.writestr(info, body)
    tracemalloc.start()
    try:
        with pytest.raises(TooManyRows):
            read_rows(out.getvalue(), sheet=None, limits=Limits(max_rows=1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 1024 * 1024


def test_chart_sheets_are_skipped_by_default_and_refused_by_choice() -> None:
    from openpyxl.chart import BarChart, Reference

    book = openpyxl.Workbook()
    ws = book.active
    assert ws is not None
    ws.title = "data"
    ws.append(["01012345678"])
    chart = BarChart()
    chart.add_data(Reference(ws, min_col=1, min_row=1, max_row=1))
    book.create_chartsheet("chart", 0).add_chart(chart)
    out = io.BytesIO()
    book.save(out)
    sheet = read_rows(out.getvalue(), sheet=None, limits=Limits())
    assert (sheet.sheet_names, sheet.name, sheet.rows) == (
        ("chart", "data"), "data", [["01012345678"]],
    )
    with pytest.raises(BadSheet):
        read_rows(out.getvalue(), sheet="chart", limits=Limits())


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2048), prefix=st.sampled_from([b"", b"PK\x03\x04",
                                                               b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"]))
def test_random_uploads_fail_only_with_spreadsheet_errors(data: bytes, prefix: bytes) -> None:
    with contextlib.suppress(SpreadsheetError):
        read_rows(prefix + data, sheet=None, limits=Limits(max_rows=100))


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(min_value=0, max_value=10_000), flip=st.integers(min_value=0))
def test_damaged_xlsx_fails_only_with_spreadsheet_errors(cut: int, flip: int) -> None:
    data = bytearray(GOOD_XLSX)
    data[flip % len(data)] ^= 0x5A
    for candidate in (bytes(data), GOOD_XLSX[:cut]):
        with contextlib.suppress(SpreadsheetError):
            read_rows(candidate, sheet=None, limits=Limits())


GOOD_XLSX = make_xlsx({"s": CUSTOMERS})
