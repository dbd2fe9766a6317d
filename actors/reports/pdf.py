"""The PDF format (reportlab): title, parameters, summary, a bar chart, the sections' tables, page numbers.

A PDF is read by people: a section longer than ``PDF_MAX_ROWS`` shows its first rows and a note
with the full count and where the full rows are (the same report as CSV, XLSX or JSON), so the
document, and the memory laying it out, stay small whatever the report's size. The chart is drawn
with reportlab's own graphics (``reportlab.graphics.charts.barcharts``) from the first section
that names one (its ``chart`` columns), at most ``CHART_POINTS`` bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.platypus.flowables import Flowable

from actors.reports.sections import Column, Section

PDF_MAX_ROWS = 100
CHART_POINTS = 60
HEADER_BLUE = colors.HexColor("#305496")


class PdfWriter:
    def __init__(self, path: Path, *, report_type: str) -> None:
        self.path = path
        self.report_type = report_type
        self.styles = getSampleStyleSheet()
        self.small = self.styles["BodyText"].clone("small", fontSize=7, leading=8.5)
        self.story: list[Flowable] = []
        self.chart: Flowable | None = None
        self.chart_at = 0
        self.current: Section | None = None
        self.rows: list[list[Any]] = []
        self.points: list[tuple[str, float]] = []
        self.parameters: dict[str, Any] = {}

    def begin(
        self, title: str, parameters: dict[str, Any], summary: Sequence[tuple[Column, Any]], generated_at: str
    ) -> None:
        self.parameters = parameters
        self.story.append(Paragraph(f"{title} report", self.styles["Title"]))
        self.story.append(Paragraph(f"Generated at {generated_at} (UTC)", self.styles["Normal"]))
        given: list[list[Any]] = [["Parameter", "Value"]]
        for key, value in parameters.items():
            given.append([key, ", ".join(map(str, value)) if isinstance(value, list) else str(value)])
        self.story += [Spacer(1, 4 * mm), self._table(given, widths=[45 * mm, 80 * mm], align_right=False)]
        figures = [["Summary", "Value"]] + [[c.label, _shown(v, c.kind)] for c, v in summary]
        self.story += [Spacer(1, 4 * mm), self._table(figures, widths=[60 * mm, 40 * mm])]
        self.chart_at = len(self.story)

    def section(self, section: Section) -> None:
        self.current, self.rows, self.points = section, [], []

    def row(self, values: Sequence[Any]) -> None:
        assert self.current is not None
        if len(self.rows) < PDF_MAX_ROWS:
            self.rows.append(list(values))
        chart = self.current.chart
        if chart is not None and self.chart is None and len(self.points) < CHART_POINTS:
            keys = [column.key for column in self.current.columns]
            label, value = values[keys.index(chart[0])], values[keys.index(chart[1])]
            self.points.append((str(label), float(value or 0)))

    def end_section(self, rows: int) -> None:
        section = self.current
        assert section is not None
        if self.points and self.chart is None and section.chart is not None:
            label = next(c.label for c in section.columns if c.key == section.chart[1])
            self.chart = self._bar_chart(f"{section.title}: {label}", self.points)
        self.story += [Spacer(1, 6 * mm), Paragraph(section.title, self.styles["Heading2"])]
        header = [Paragraph(f"<b>{column.label}</b>", self.small) for column in section.columns]
        body = [[_shown(v, c.kind) for v, c in zip(row, section.columns, strict=True)] for row in self.rows]
        if body:
            table = self._table([header, *body], repeat=True)
            for index, column in enumerate(section.columns):
                if column.kind == "text":
                    table.setStyle(TableStyle([("ALIGN", (index, 1), (index, -1), "LEFT")]))
            self.story.append(table)
        else:
            self.story.append(Paragraph("No rows for these parameters.", self.styles["Normal"]))
        if rows > len(self.rows):
            self.story.append(
                Paragraph(
                    f"<i>This table has {rows:,} rows; the PDF shows the first {len(self.rows):,}. The full "
                    f"rows are in the CSV, XLSX and JSON formats of this report (request it again with "
                    f"--format csv, xlsx or json and the same parameters).</i>",
                    self.styles["Normal"],
                )
            )

    def close(self) -> None:
        if self.chart is not None:
            self.story[self.chart_at : self.chart_at] = [Spacer(1, 4 * mm), self.chart]
        document = SimpleDocTemplate(
            str(self.path),
            pagesize=landscape(A4),
            leftMargin=12 * mm,
            rightMargin=12 * mm,
            topMargin=12 * mm,
            bottomMargin=14 * mm,
            title=f"edujobs {self.report_type} report",
            author="edujobs",
        )
        document.build(self.story, onFirstPage=_page_number, onLaterPages=_page_number)

    def _table(
        self,
        rows: list[list[Any]],
        *,
        widths: list[float] | None = None,
        repeat: bool = False,
        align_right: bool = True,
    ) -> Table:
        table = Table(rows, colWidths=widths, repeatRows=1 if repeat else 0)
        style = [
            ("BACKGROUND", (0, 0), (-1, 0), HEADER_BLUE),
            ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
            ("FONTSIZE", (0, 0), (-1, -1), 7),
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#EEF2F8")]),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ]
        if align_right:
            style.append(("ALIGN", (1, 1), (-1, -1), "RIGHT"))
        table.setStyle(TableStyle(style))
        return table

    def _bar_chart(self, title: str, points: list[tuple[str, float]]) -> Drawing:
        drawing = Drawing(250 * mm, 75 * mm)
        chart = VerticalBarChart()
        chart.x, chart.y, chart.width, chart.height = 15 * mm, 15 * mm, 225 * mm, 50 * mm
        chart.data = [[value for _, value in points]]
        chart.categoryAxis.categoryNames = [label for label, _ in points]
        chart.categoryAxis.labels.angle = 45 if len(points) > 8 else 0
        chart.categoryAxis.labels.boxAnchor = "ne" if len(points) > 8 else "n"
        chart.categoryAxis.labels.fontSize = 6
        chart.valueAxis.valueMin = 0
        chart.valueAxis.labels.fontSize = 7
        chart.bars[0].fillColor = HEADER_BLUE
        drawing.add(chart)
        drawing.add(String(15 * mm, 70 * mm, title, fontSize=10, fontName="Helvetica-Bold"))
        return drawing


def _page_number(canvas: Canvas, document: Any) -> None:
    canvas.saveState()
    canvas.setFont("Helvetica", 8)
    canvas.drawRightString(landscape(A4)[0] - 12 * mm, 7 * mm, f"Page {document.page}")
    canvas.drawString(12 * mm, 7 * mm, "edujobs analytics")
    canvas.restoreState()


def _shown(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "int":
        return f"{value:,}"
    if kind in ("float", "money"):
        return f"{value:,.2f}"
    if kind == "pct":
        return f"{value:.2f}%"
    return str(value)
