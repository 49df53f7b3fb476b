"""Every terminal table reads whole at 80 columns and at 50: no "…", whole headers, whole names.

Each table is drawn from the data its command prints (the 27 Thanh Hóa districts and the sectors of the
reference migration, report rows, alerts, replay plans) and read back from the text: every header is on
one line, every cell's words are in its column in order (names wrapped at spaces, never cut), and where
a table cannot fit, each record is a block of "field: value" lines holding the same values.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from analytics.report import ReportRow, adoption_table
from base.tables import NO_COMPARISON, FittedTable
from cli.common import stdout_console
from cli.demo import alerts_table as demo_alerts_table
from cli.demo import scenario_table, sectors_table, units_table
from cli.main import alerts_table
from cli.replay import compare_table, plan_table, rebuilds_table
from replay.members import GroupState, Member
from replay.rewind import PartitionPlan, RewindPlan, Target

REFERENCE = (
    Path(__file__).resolve().parents[2] / "sinks/clickhouse/migrations/0002_reference_thanh_hoa.sql"
).read_text(encoding="utf-8")
DISTRICTS = dict(re.findall(r"\('(\d{3})', '([^']+)', 'district'", REFERENCE))
SECTORS = dict(re.findall(r"\('(\d{4})', '([^']+)', '[^']+'\)", REFERENCE))
WIDTHS = (80, 50)


def render(table: FittedTable, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


def words(texts: list[str]) -> list[str]:
    return " ".join(texts).split()


def read_grid(text: str, table: FittedTable) -> list[list[str]]:
    """The table layout's records, each cell the words of its lines joined (a record starts where the first
    column, never empty here, has text)."""
    headers = [line for line in text.splitlines() if line.startswith("┃")]
    assert len(headers) == 1, "a header wrapped or is missing:\n" + text
    assert [h.strip() for h in headers[0].split("┃")[1:-1]] == [f.header for f in table.fields]
    records: list[list[list[str]]] = []
    for line in text.splitlines():
        if not line.startswith("│"):
            continue
        parts = [p.strip() for p in line.split("│")[1:-1]]
        assert len(parts) == len(table.fields), line
        if parts[0] or not records:
            records.append([[] for _ in parts])
        for cell, part in zip(records[-1], parts, strict=True):
            if part:
                cell.append(part)
    return [[" ".join(cell) for cell in record] for record in records]


def read_blocks(text: str, table: FittedTable) -> list[list[str]]:
    """The vertical layout's records: blank-line separated blocks of "header: value" lines (a value that
    wraps goes on indented)."""
    blocks = text.split("\n\n")[1:]  # the title first
    headers = sorted((f.header for f in table.fields), key=len, reverse=True)
    records = []
    for block in blocks:
        values: dict[str, list[str]] = {}
        current = None
        for line in block.splitlines():
            label = next((h for h in headers if line.startswith(f"{h}:")), None)
            if label is not None:
                current = label
                values[current] = [line[len(label) + 1 :].strip()]
            elif line.strip():
                assert current is not None and line.startswith(" "), line
                values[current].append(line.strip())
        records.append([" ".join(values.get(f.header, [])) for f in table.fields])
    return records


def same(got: str, cell: str, room: int | None) -> bool:
    """The cell's words in order; a word longer than the line (``room``, vertical layout) may go on over
    the next lines, nothing else may be split."""
    if words([got]) == words([cell]):
        return True
    if room is None or "".join(got.split()) != "".join(cell.split()):
        return False
    extra = sum(-(-cell_len(w) // room) - 1 for w in cell.split() if cell_len(w) > room)
    return len(got.split()) - len(cell.split()) <= extra


def assert_whole(table: FittedTable, width: int) -> str:
    """The text at ``width``, after checking that it holds every header and cell whole."""
    text = render(table, width)
    assert "…" not in text, text
    assert max(cell_len(line) for line in text.splitlines()) <= width, text
    if "┃" in text:
        shown, room = read_grid(text, table), None
    else:
        shown, room = read_blocks(text, table), width - max(cell_len(f.header) for f in table.fields) - 2
    expected = [list(row.cells) for row in table.rows]
    assert len(shown) == len(expected), text
    for record, row in zip(shown, expected, strict=True):
        for field, got, cell in zip(table.fields, record, row, strict=True):
            assert same(got, cell, room), f"{field.header}: {got!r} != {cell!r}\n{text}"
    return text


def report_rows() -> list[ReportRow]:
    rows = [
        ReportRow("*", "*", "Toàn tỉnh", 54_620, 41_000, 0.7506, 0.8, None, None, 342_780_000, 10**12, 8 * 10**10, 0.41)
    ]
    for i, (code, name) in enumerate(sorted(DISTRICTS.items())):
        previous = None if i % 5 == 0 else 0.55 + i / 100
        change = None if previous is None else (0.5 + i / 90) - previous
        rows.append(ReportRow("5610", code, name, 120 + i, 60 + i, 0.5 + i / 90, 0.6, previous, change, 12_345 * i,
                              10**9, 8 * 10**7, 0.35))  # fmt: skip
    return rows


def demo_alert_rows() -> list[tuple]:
    silent = {"count": 3, "sellers": [{"seller_id": f"28000000{i:02d}"} for i in range(3)]}
    return [
        (dt.date(2024, 6, 18), "firing", "adoption_drop", {"sector": "5610", "unit": "380"},
         json.dumps({"issuing_share": 0.31, "baseline_share": 0.78}), ""),
        (dt.date(2024, 6, 19), "firing", "volume_drop", {"sector": "*", "unit": "380"},
         json.dumps({"invoices": 1234, "baseline_invoices": 2400.0}), "silence:abc"),
        (dt.date(2024, 6, 21), "firing", "dormant_issuer", {"unit": "399"}, json.dumps(silent), ""),
        (dt.date(2024, 6, 12), "resolved", "pipeline_silence", {"unit": "*"},
         json.dumps({"longest_silent_hours": 6, "silent_hours": [9, 10, 11, 12, 13, 14]}), ""),
    ]  # fmt: skip


def alert_instances() -> list[dict]:
    values = {"issuing_share": 0.3125, "baseline_share": 0.7812, "upper_bound": 0.41, "eligible": 64,
              "active_today": 20, "adoption_7d": 0.55, "active_7d": 35}  # fmt: skip
    return [
        {"state": "firing", "rule": "adoption_drop", "labels": {"sector": "5610", "unit": "380"},
         "started_day": dt.date(2024, 6, 17), "values": json.dumps(values)},
        {"state": "pending", "rule": "dormant_issuer", "labels": {"unit": "399"}, "started_day": dt.date(2024, 6, 20),
         "values": json.dumps({"count": 2, "sellers": [{"seller_id": "2800000001"}, {"seller_id": "2800000002"}]})},
        {"state": "inactive", "rule": "volume_drop", "labels": {"sector": "*", "unit": "*"}, "started_day": None,
         "values": "{}"},
    ]  # fmt: skip


def rewind_plan() -> RewindPlan:
    topics = ("d1.einvoice.issued", "d1.business.registry")
    partitions = tuple(PartitionPlan(t, p, 1_843_007 + p, 1_000_000 + p, 1_900_000) for t in topics for p in range(4))
    member = Member("m-1", "faust-0.15.3", "/127.0.0.1", ("d1.einvoice.issued[0, 1]",))
    members = GroupState("dev-d1", "Empty", (member,))
    return RewindPlan("dev-d1", Target("time", at_ms=1_717_311_600_000), partitions, members)


TABLES = {
    "report": lambda: adoption_table("Adoption of cash-register e-invoices, 2024-06-21 – 2024-06-27", report_rows()),
    "demo adoption": lambda: adoption_table("Adoption, week to 2024-06-27; Δ pt against the week before",
                                            report_rows()[:12], rate_format=".0%", with_non_cash=False),
    "demo districts": lambda: units_table([(name, 12_345 * i, 300 + i, 1.2e9 * i, 0.4)
                                           for i, name in enumerate(DISTRICTS.values())]),
    "demo sectors": lambda: sectors_table([(code, name, 23_456, 456, 3.4e9, 0.5) for code, name in SECTORS.items()]),
    "demo scenario": lambda: scenario_table(
        "Scenario: 36 of 60 issuers of VSIC 5610 in unit 380 stop from 2024-06-17",
        [(dt.date(2024, 6, 3) + dt.timedelta(weeks=w), 60 - 12 * w, 2_400 - 400 * w) for w in range(4)],
    ),
    "demo alerts": lambda: demo_alerts_table(demo_alert_rows()),
    "alerts list": lambda: alerts_table("2024-06-27", alert_instances()),
    "replay rewind": lambda: plan_table(rewind_plan()),
    "replay compare": lambda: compare_table("20261122105354", "rebuilt", [
        (("2024-06-02", "5610", "380", 1), (1_200, 1.2e8, 300), (1_260, 1.26e8, 301)),
        (("2024-06-02", "", "", 0), (12, 1.2e6, 3), (12, 1.2e6, 3)),
    ]),
    "replay status": lambda: rebuilds_table([
        ("20261122105354", "caught_up", "embedded", "chdb:///srv/einvoice/data/replay/rebuilds/20261122105354/clickhouse",
         "-", "analyst@host", "caught_up 2026-11-22T10:55:12Z"),
    ]),
}  # fmt: skip


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", TABLES)
def test_every_table_reads_whole(name, width):
    assert_whole(TABLES[name](), width)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_district_name_is_on_a_line_of_its_own_whole(width):
    text = assert_whole(TABLES["demo districts"](), width)
    for name in DISTRICTS.values():
        assert name in text, name


def test_the_report_keeps_its_table_at_80_columns_and_wraps_the_long_names():
    text = assert_whole(TABLES["report"](), 80)
    assert "┃" in text and "342,780,000" in text and NO_COMPARISON in text
    # beside the province's invoice count the unit column is narrow: names wrap at their spaces
    assert "│ 5610 │ Thành phố │" in text and "│      │ Thanh Hóa │" in text
    assert "│      │ Thường    │" in text and "│      │ Xuân      │" in text


def test_the_demo_adoption_table_is_a_table_at_80_and_blocks_at_50():
    assert "┃" in assert_whole(TABLES["demo adoption"](), 80)
    narrow = assert_whole(TABLES["demo adoption"](), 50)
    assert "┃" not in narrow and "unit:     Thành phố Thanh Hóa" in narrow and f"Δ pt:     {NO_COMPARISON}" in narrow


def test_tables_follow_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert stdout_console().width == 80
    monkeypatch.delenv("COLUMNS")
    assert stdout_console().width == 130  # piped, as under pytest: wide enough for the names on one line
