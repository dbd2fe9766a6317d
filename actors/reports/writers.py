"""The report file formats that stream: CSV, JSON and XLSX, row by row to a file on disk.

Every writer gets the same calls: ``begin`` (title, parameters, the summary), then per section
``section`` / ``row`` ... / ``end_section``, then ``close``. None keeps rows: CSV and JSON write each
row as it comes, openpyxl's write-only workbook spools each sheet to a temporary file, so memory
does not grow with the report (the PDF, which must lay out pages, is ``actors.reports.pdf``).

CSV holds every section in one file: a ``# <section>`` line, the header (column keys), the rows, a
blank line. The XLSX has a Summary sheet (title, parameters, figures) and one sheet per section
with a styled, frozen header and number formats; a section longer than a sheet continues on the
next one (``<name> 2``). The JSON is one object: ``summary`` and ``sections.<name>.rows`` (objects).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from actors.reports.sections import Column, Section

#: Excel's limit is 1,048,576 rows a sheet; a longer section continues on another sheet.
XLSX_SHEET_ROWS = 1_000_000
NUMBER_FORMATS = {"int": "#,##0", "float": "#,##0.00", "pct": '0.00"%"', "money": "#,##0.00", "text": "@"}


class ReportWriter(Protocol):
    def begin(
        self, title: str, parameters: dict[str, Any], summary: Sequence[tuple[Column, Any]], generated_at: str
    ) -> None: ...

    def section(self, section: Section) -> None: ...

    def row(self, values: Sequence[Any]) -> None: ...

    def end_section(self, rows: int) -> None: ...

    def close(self) -> None: ...


class CsvWriter:
    def __init__(self, path: Path) -> None:
        self.file: IO[str] = path.open("w", newline="", encoding="utf-8")
        self.csv = csv.writer(self.file)

    def begin(
        self, title: str, parameters: dict[str, Any], summary: Sequence[tuple[Column, Any]], generated_at: str
    ) -> None:
        self.file.write(f"# {title}\n# generated_at={generated_at}\n")
        self.file.write("# " + " ".join(f"{k}={_text(v)}" for k, v in parameters.items()) + "\n\n")
        self.file.write("# summary\n")
        self.csv.writerow(["metric", "value"])
        for column, value in summary:
            self.csv.writerow([column.key, value])
        self.file.write("\n")

    def section(self, section: Section) -> None:
        self.file.write(f"# {section.name}\n")
        self.csv.writerow([column.key for column in section.columns])

    def row(self, values: Sequence[Any]) -> None:
        self.csv.writerow(values)

    def end_section(self, rows: int) -> None:
        self.file.write("\n")

    def close(self) -> None:
        self.file.close()


class JsonWriter:
    def __init__(self, path: Path) -> None:
        self.file: IO[str] = path.open("w", encoding="utf-8")
        self.keys: list[str] = []
        self.first_section = True
        self.first_row = True

    def begin(
        self, title: str, parameters: dict[str, Any], summary: Sequence[tuple[Column, Any]], generated_at: str
    ) -> None:
        head = {
            "title": title,
            "generated_at": generated_at,
            "parameters": parameters,
            "summary": {column.key: value for column, value in summary},
        }
        self.file.write(json.dumps(head)[:-1] + ', "sections": {')

    def section(self, section: Section) -> None:
        self.keys = [column.key for column in section.columns]
        columns = [{"key": c.key, "label": c.label, "kind": c.kind} for c in section.columns]
        separator = "" if self.first_section else ", "
        self.first_section, self.first_row = False, True
        self.file.write(
            f"{separator}{json.dumps(section.name)}: "
            f'{{"title": {json.dumps(section.title)}, "columns": {json.dumps(columns)}, "rows": ['
        )

    def row(self, values: Sequence[Any]) -> None:
        self.file.write(
            ("\n" if self.first_row else ",\n") + json.dumps(dict(zip(self.keys, values, strict=True)))
        )
        self.first_row = False

    def end_section(self, rows: int) -> None:
        self.file.write(f'], "row_count": {rows}}}')

    def close(self) -> None:
        self.file.write("}}\n")
        self.file.close()


class XlsxWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.book = Workbook(write_only=True)
        self.header_font = Font(bold=True, color="FFFFFF")
        self.header_fill = PatternFill("solid", fgColor="305496")
        self.sheet: WriteOnlyWorksheet | None = None
        self.current: Section | None = None
        self.sheet_rows = 0
        self.sheets = 0
        self.names: set[str] = set()

    def begin(
        self, title: str, parameters: dict[str, Any], summary: Sequence[tuple[Column, Any]], generated_at: str
    ) -> None:
        sheet = self.book.create_sheet("Summary")
        sheet.column_dimensions["A"].width = 28
        sheet.column_dimensions["B"].width = 40
        sheet.append([self._cell(sheet, title, font=Font(bold=True, size=14))])
        sheet.append(["Generated at", generated_at])
        for key, value in parameters.items():
            sheet.append([key, _text(value)])
        sheet.append([])
        sheet.append([self._header(sheet, "Figure"), self._header(sheet, "Value")])
        for column, value in summary:
            sheet.append([column.label, self._number(sheet, value, column.kind)])

    def section(self, section: Section) -> None:
        self.current = section
        self.sheets = 0
        self._new_sheet()

    def _new_sheet(self) -> None:
        assert self.current is not None
        self.sheets += 1
        name = self.current.title[:28] if self.sheets == 1 else f"{self.current.title[:25]} {self.sheets}"
        while name in self.names:
            name = name[:27] + "_"
        self.names.add(name)
        sheet = self.book.create_sheet(name)
        sheet.freeze_panes = "A2"
        for index, column in enumerate(self.current.columns, start=1):
            sheet.column_dimensions[get_column_letter(index)].width = max(10, min(30, len(column.label) + 4))
        sheet.append([self._header(sheet, column.label) for column in self.current.columns])
        self.sheet, self.sheet_rows = sheet, 0
        # One styled cell per number column, reused row after row: the write-only sheet writes a
        # row out as it is appended, and styling a new cell costs more than writing it.
        self.templates = [
            None if column.kind in ("int", "text") else self._number(sheet, 0, column.kind)
            for column in self.current.columns
        ]

    def row(self, values: Sequence[Any]) -> None:
        assert self.sheet is not None and self.current is not None
        if self.sheet_rows >= XLSX_SHEET_ROWS:
            self._new_sheet()
        sheet = self.sheet
        self.sheet.append(
            [
                value
                if column.kind in ("int", "text") or value is None
                else self._number(sheet, value, column.kind)
                for value, column in zip(values, self.current.columns, strict=True)
            ]
        )
        self.sheet_rows += 1

    def end_section(self, rows: int) -> None:
        self.sheet = None

    def close(self) -> None:
        self.book.save(self.path)

    def _header(self, sheet: WriteOnlyWorksheet, text: str) -> WriteOnlyCell:
        cell = WriteOnlyCell(sheet, value=text)
        cell.font, cell.fill = self.header_font, self.header_fill
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        return cell

    def _cell(self, sheet: WriteOnlyWorksheet, value: Any, *, font: Font) -> WriteOnlyCell:
        cell = WriteOnlyCell(sheet, value=value)
        cell.font = font
        return cell

    def _number(self, sheet: WriteOnlyWorksheet, value: Any, kind: str) -> Any:
        if value is None or kind == "text":
            return value
        cell = WriteOnlyCell(sheet, value=value)
        cell.number_format = NUMBER_FORMATS[kind]
        return cell


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)
