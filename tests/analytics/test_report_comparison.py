"""No comparison against nothing: a first period, a first week and a segment born in the period.

A small deployment written straight into chDB (no broker): restaurants of the city registered long
ago and issuing daily from 3 June 2024, the feed's first day; filling stations of Bỉm Sơn registered
as long and never issuing (a real 0 %); hairdressers of Quảng Xương registered on 10 June, issuing
from then on (a segment born in the second week). The report, its JSON and table, the boards (through
Grafana's own display code) and the offline report must say "nothing to compare" where the period
before has no data, and compare everywhere else.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from analytics.report import period_report
from base.config import Settings
from base.localtime import LOCAL_TZ
from boards.grafana import dashboards, variables
from boards.offline import charts, collect, render_html
from boards.queries import BOARDS, NO_COMPARISON
from boards.runner import PanelResult, run_panel
from cli.main import app
from deploy.kafka import free_port
from sinks.clickhouse import ClickHouseStore, apply_migrations
from tests.grafana_code import run_grafana

TZ = LOCAL_TZ
FEED_START, FEED_END = dt.date(2024, 6, 3), dt.date(2024, 6, 30)
BORN = dt.date(2024, 6, 10)
RESTAURANTS, STATIONS, HAIRDRESSERS = ("5610", "380"), ("4730", "381"), ("9602", "406")
SEGMENTS = {RESTAURANTS: (20, dt.date(2020, 1, 1), FEED_START), STATIONS: (10, dt.date(2020, 1, 1), None),
            HAIRDRESSERS: (12, BORN, BORN)}  # fmt: skip  # sellers, registered on, issuing from
FIRST_WEEK, SECOND_WEEK = (FEED_START, FEED_START + dt.timedelta(days=6)), (BORN, BORN + dt.timedelta(days=6))


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _fill(store: ClickHouseStore) -> None:
    registry, invoices, offset = [], [], 0
    received = dt.datetime(2024, 7, 1, tzinfo=dt.UTC)
    for (sector, unit), (count, registered, issuing_from) in SEGMENTS.items():
        for i in range(count):
            seller = f"{sector}{unit}{i:03d}"  # ten digits: an enterprise tax code
            offset += 1
            registry.append((seller, registered, f"Hộ kinh doanh {i}", sector, unit, 1, "ACTIVE", 0, offset, received))
            for day in _days(issuing_from, FEED_END) if issuing_from else []:
                offset += 1
                issued = dt.datetime.combine(day, dt.time(12), TZ)
                invoices.append((seller, f"M1-24-AAAAA-{offset:011d}", offset, issued, day, 100_000, 8_000, 1, 1,
                                 sector, unit, "invoices", 0, offset, received))  # fmt: skip
    store.call(store.client.insert, "registry_history", registry,
               column_names=["seller_id", "valid_from", "name", "vsic_code", "admin_unit_code", "obliged", "status",
                             "kafka_partition", "kafka_offset", "received_at"])  # fmt: skip
    store.call(store.client.insert, "invoices", invoices,
               column_names=["seller_id", "invoice_code", "invoice_key", "issued_at", "issue_date", "amount_vnd",
                             "vat_amount_vnd", "non_cash", "registered", "vsic_code", "admin_unit_code", "kafka_topic",
                             "kafka_partition", "kafka_offset", "received_at"])  # fmt: skip


def _figures(store: ClickHouseStore) -> None:
    """segment_adoption as the evaluator writes it: from the feed's first day, for segments with eligible
    businesses, without baselines until two same-weekdays of history exist."""
    rows = []
    at = dt.datetime(2024, 7, 1, tzinfo=dt.UTC)
    for day in _days(FEED_START, FEED_END):
        for sector, unit in (("*", "*"), RESTAURANTS, HAIRDRESSERS):
            eligible = 12 if (sector, unit) == HAIRDRESSERS else 20
            if (sector, unit) == HAIRDRESSERS and day < BORN:
                continue
            baseline_share = 1.0 if day >= FEED_START + dt.timedelta(days=14) else None
            baseline_invoices = None if baseline_share is None else float(eligible)
            rows.append((day, "district", sector, unit, eligible, eligible, eligible, eligible, 1.0, 1.0, 1.0,
                         baseline_share, eligible, baseline_invoices, eligible * 100_000, eligible * 8_000, eligible,
                         1.0, 0, at))  # fmt: skip
    store.call(store.client.insert, "segment_adoption", rows,
               column_names=["day", "level", "sector", "unit", "eligible", "active_1d", "active_7d", "active_28d",
                             "adoption_7d", "adoption_28d", "issuing_share", "baseline_share", "invoices",
                             "baseline_invoices", "revenue_vnd", "vat_vnd", "issuers", "non_cash_share", "holiday",
                             "evaluated_at"])  # fmt: skip


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(data_dir=tmp_path_factory.mktemp("comparison") / "data", web_port=free_port())
    settings.data_dir.mkdir(parents=True)
    store = ClickHouseStore(settings.clickhouse_dsn)
    try:
        store.call(apply_migrations, store.client)
        _fill(store)
        _figures(store)
    finally:
        store.close()
    return settings


@pytest.fixture
def store(deployment: Settings) -> Iterator[ClickHouseStore]:
    opened = ClickHouseStore(deployment.clickhouse_dsn)
    try:
        yield opened
    finally:
        opened.close()


def by_segment(rows: list) -> dict[tuple[str, str], object]:
    return {(r.sector, r.unit): r for r in rows}


# -- the report ----------------------------------------------------------------------------------------------------


def test_a_first_period_has_nothing_to_compare_in_the_report(store):
    """The issue's H1 report: the half-year before holds eligible businesses but no invoice at all."""
    rows = by_segment(period_report(store, dt.date(2024, 1, 1), dt.date(2024, 6, 30)))
    assert (rows[RESTAURANTS].eligible, rows[RESTAURANTS].adoption_7d, rows[STATIONS].adoption_7d) == (20, 1.0, 0.0)
    assert {key: (r.previous_adoption_7d, r.change) for key, r in rows.items()} == {key: (None, None) for key in rows}


def test_a_first_week_has_nothing_to_compare_and_the_second_compares(store):
    first = by_segment(period_report(store, *FIRST_WEEK))
    assert first[RESTAURANTS].adoption_7d == 1.0 and first[STATIONS].eligible == 10
    assert all(r.change is None and r.previous_adoption_7d is None for r in first.values())
    second = by_segment(period_report(store, *SECOND_WEEK))
    assert (second[RESTAURANTS].previous_adoption_7d, second[RESTAURANTS].change) == (1.0, 0.0)
    # eligible filling stations that never issued while the feed ran: a real 0 %, compared
    assert (second[STATIONS].previous_adoption_7d, second[STATIONS].change) == (0.0, 0.0)


def test_a_segment_born_in_the_period_has_nothing_to_compare_and_sorts_last_by_change(store):
    rows = period_report(store, *SECOND_WEEK, sort="change")
    born = by_segment(rows)
    for key in (HAIRDRESSERS, ("9602", "*"), ("*", "406")):
        assert born[key].eligible == 12 and born[key].adoption_7d == 1.0
        assert (born[key].previous_adoption_7d, born[key].change) == (None, None), key
    assert born[("*", "*")].change is not None
    changes = [r.change for r in rows]
    assert changes.index(None) == len(changes) - 3  # the three without a comparison come last


def run_report(settings: Settings, *args: str) -> str:
    env = {**settings.to_env(), "COLUMNS": "100"}
    result = CliRunner().invoke(app, ["report", "--min-eligible", "1", *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_json_says_null_and_the_table_says_dash(deployment):
    lines = [json.loads(line) for line in run_report(deployment, "--from", "2024-01-01", "--to", "2024-06-30",
                                                     "--format", "json").splitlines()]  # fmt: skip
    assert len(lines) == 10 and all(line["change"] is None and line["previous_adoption_7d"] is None for line in lines)
    table = run_report(deployment, "--from", SECOND_WEEK[0].isoformat(), "--to", SECOND_WEEK[1].isoformat())
    changes = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 8 and cells[0]:
            changes[(cells[0], cells[1])] = cells[5]
    assert changes[("9602", "Huyện Quảng Xương")] == NO_COMPARISON
    assert changes[("5610", "Thành phố Thanh Hóa")] == "+0.0"
    assert changes[("4730", "Thị xã Bỉm Sơn")] == "+0.0"
    assert list(changes.values()).count(NO_COMPARISON) == 3


# -- the boards and the offline report -----------------------------------------------------------------------------


def week(first: dt.date, last: dt.date) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.combine(first, dt.time(0), TZ), dt.datetime.combine(last, dt.time(23, 59, 59), TZ)


def totals(store: ClickHouseStore, first: dt.date, last: dt.date, sector: str = "*", unit: str = "*") -> PanelResult:
    return run_panel(store, BOARDS["overview"]("en")["totals"], variables(sector, unit), *week(first, last))


def grafana_shows(board: str, key: str, result: PanelResult) -> dict[str, list[str]]:
    """What Grafana's own display code draws for each field of the panel, from this result."""
    panel = next(
        p for p in dashboards("en")[board]["panels"]
        if any(t.get("rawSql") == BOARDS[board]("en")[key].sql.strip() for t in p.get("targets", []))
    )  # fmt: skip
    kinds = BOARDS[board]("en")[key].columns
    frame = {"fields": [{"name": name, "type": kinds[name], "values": [r[name] for r in result.records()]}
                        for name in result.columns]}  # fmt: skip
    [answer] = run_grafana({"display": [{"id": key, "panel": panel, "frame": frame}]})["display"]
    return {f["name"]: [v["text"] for v in f["values"]] for f in answer["fields"]}


def test_the_overview_compares_nothing_in_a_first_week_or_for_a_born_segment(store):
    [first] = totals(store, *FIRST_WEEK).records()
    assert first["adoption_rate"] == 1.0 and first["adoption_change"] is None and first["invoices_change"] is None
    [second] = totals(store, *SECOND_WEEK).records()
    assert second["adoption_change"] == 0.0 and second["invoices_change"] == 0.0
    [born] = totals(store, *SECOND_WEEK, *HAIRDRESSERS).records()
    assert born["eligible"] == 12 and born["adoption_change"] is None and born["invoices_change"] is None
    # a period after the feed's last day compares nothing against the week before, either
    [after] = totals(store, FEED_END + dt.timedelta(days=1), FEED_END + dt.timedelta(days=7)).records()
    assert after["adoption_change"] is None and after["invoices_change"] is None
    shown = grafana_shows("overview", "totals", totals(store, *SECOND_WEEK, *HAIRDRESSERS))
    assert shown["adoption_change"] == [NO_COMPARISON] and shown["invoices_change"] == [NO_COMPARISON]
    assert shown["adoption_rate"] == ["100.0"]
    assert grafana_shows("overview", "totals", totals(store, *SECOND_WEEK))["adoption_change"] == ["0.0"]


def test_the_drilldown_shows_a_dash_where_a_segment_has_no_baseline(store):
    result = run_panel(store, BOARDS["drilldown"]("en")["segments"], variables(), *week(*SECOND_WEEK))
    rows = {r["unit_name"]: r for r in result.records()}
    assert rows["Huyện Quảng Xương"]["baseline_share"] is None
    shown = grafana_shows("drilldown", "segments", result)
    for name in ("baseline_share", "baseline_invoices", "invoices_vs_baseline"):
        assert shown[name] == [NO_COMPARISON] * len(rows), name


def test_the_offline_report_says_dash_in_its_table_and_its_chart(store):
    data = collect(store, *FIRST_WEEK, lang="en")
    page = render_html(data)
    totals_table = page.split("<table>", 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<td class='[^']*'>([^<]*)</td>", totals_table).count(NO_COMPARISON) == 2
    assert "the period before (or the baseline) has no data" in page
    legend = [text.get_text() for text in charts(data)["trend_invoices"].axes[0].get_legend().get_texts()]
    assert legend[:2] == ["Invoices", f"Baseline invoices: {NO_COMPARISON}"]
    # three weeks in, a baseline exists for the last week: the legend names it plainly
    later = charts(collect(store, FEED_START, FEED_END, lang="en"))["trend_invoices"]
    assert [t.get_text() for t in later.axes[0].get_legend().get_texts()][:2] == ["Invoices", "Baseline invoices"]
