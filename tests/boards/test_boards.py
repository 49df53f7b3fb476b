"""Every panel of every board, run the way Grafana would against ClickHouse filled by the simulator.

No Grafana server runs here: each panel's SQL is taken from the generated dashboard JSON, its
variables and the ClickHouse plugin's macros are expanded (boards/macros.py, after the plugin's
pkg/macros), and the result must have the columns and kinds the panel reads, rows, and come back
within a time budget. Then the boards must tell the scenario's story.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from base.localtime import LOCAL_TZ
from boards.grafana import DATASOURCE_UID, DEFAULT_VARIABLES, PLUGIN, dashboards, to_json_text
from boards.i18n import LANGUAGES
from boards.macros import MacroError, render
from boards.queries import BOARDS, PanelQuery, all_queries
from boards.runner import column_kind, run_panel
from sinks.clickhouse import ClickHouseStore
from sinks.dead_letter import H_REASON
from tests.filled import DROP, LAST_COMPLETE, START, FilledDeployment
from tests.support import read_topic

DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards"
TZ = LOCAL_TZ
JUNE = (dt.datetime(2024, 6, 1, tzinfo=TZ), dt.datetime(2024, 6, 30, 23, 59, 59, tzinfo=TZ))
BUDGET_S = 10.0  # per panel query on this data (chDB in process, 2 cores); Grafana's default timeout is 30 s


def time_range(board: str) -> tuple[dt.datetime, dt.datetime]:
    """What an analyst would pick: June 2024 for the data boards, recent hours for the live ones."""
    now = dt.datetime.now(dt.UTC)
    if board == "pipeline":
        return now - dt.timedelta(hours=1), now + dt.timedelta(minutes=1)
    if board == "alerts":  # events are dated by the data's days, deliveries by the wall clock
        return JUNE[0], now + dt.timedelta(minutes=1)
    return JUNE


@pytest.fixture(scope="module")
def store(filled_deployment: FilledDeployment) -> Iterator[ClickHouseStore]:
    opened = ClickHouseStore(filled_deployment.settings.clickhouse_dsn)
    try:
        yield opened
    finally:
        opened.close()


def panel_targets(board: dict) -> list[tuple[str, dict]]:
    # the ClickHouse targets; the pipeline board's Prometheus ones are checked in tests/deploy/test_prometheus_rules.py
    out = [(p["title"], t) for p in board["panels"] for t in p.get("targets", []) if "rawSql" in t]
    out += [(a["name"], a["target"]) for a in board.get("annotations", {}).get("list", []) if "target" in a]
    return out


# -- the JSON -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", LANGUAGES)
def test_committed_dashboards_are_what_the_code_generates(lang):
    generated = dashboards(lang)
    folder = DASHBOARDS_DIR / lang
    committed = sorted(p.name for p in folder.glob("*.json"))
    assert committed == sorted(f"{name}.json" for name in generated), "run: einvoice-monitor dashboards build"
    for name, board in generated.items():
        text = (folder / f"{name}.json").read_text(encoding="utf-8")
        assert text == to_json_text(board), f"{folder / name}.json is stale: run einvoice-monitor dashboards build"


def test_uids_are_stable_unique_and_every_target_uses_the_provisioned_datasource():
    uids = []
    for lang in LANGUAGES:
        for name, board in dashboards(lang).items():
            uids.append(board["uid"])
            assert board["uid"] == f"einvoice-{name}" + ("" if lang == "vi" else "-en")
            targets = panel_targets(board)
            assert targets, name
            for title, target in targets:
                assert target["datasource"] == {"type": PLUGIN, "uid": DATASOURCE_UID}, title
                assert target["editorType"] == "sql" and target["rawSql"].strip(), title
    assert len(uids) == len(set(uids)) == 10


def test_titles_are_vietnamese_by_default_and_english_with_lang_en():
    vi, en = dashboards("vi"), dashboards("en")
    assert vi["overview"]["title"].startswith("Tổng quan tỉnh")
    assert en["overview"]["title"].startswith("Province overview")
    assert "Tỷ lệ áp dụng theo đơn vị" in [p["title"] for p in vi["overview"]["panels"]]
    # the English build reads English sector names, the same columns otherwise
    assert "name_en" in json.dumps(en["overview"]) and "name_en" not in json.dumps(vi["overview"])


def test_the_json_carries_exactly_the_queries_of_boards_queries():
    """The tests below run boards.queries; this proves that is what the JSON holds."""
    for lang in LANGUAGES:
        expected = {q.sql.strip() for q in all_queries(lang).values()}
        in_json = {t["rawSql"] for board in dashboards(lang).values() for _, t in panel_targets(board)}
        assert in_json == expected


# -- every query, run ---------------------------------------------------------------------------------------------

PANELS = [(lang, board, key) for lang in LANGUAGES for (board, key) in all_queries(lang)]


@pytest.mark.parametrize(("lang", "board", "key"), PANELS, ids=[f"{lang}-{b}-{k}" for lang, b, k in PANELS])
def test_every_panel_query_runs_and_returns_what_the_panel_reads(store, lang, board, key):
    query: PanelQuery = BOARDS[board](lang)[key]
    time_from, time_to = time_range(board)
    result = run_panel(store, query, DEFAULT_VARIABLES, time_from, time_to)
    assert result.columns == list(query.columns), result.sql
    assert result.kinds == list(query.columns.values()), f"{dict(zip(result.columns, result.kinds, strict=True))}"
    if not query.may_be_empty:
        assert result.rows, f"{board}/{key} returned no rows:\n{result.sql}"
    assert result.seconds < BUDGET_S, f"{board}/{key} took {result.seconds:.1f} s"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_variable_queries_list_sectors_and_units(store, lang):
    board = dashboards(lang)["overview"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    sectors = store.query_rows(variables["sector"]["query"])
    units = store.query_rows(variables["unit"]["query"])
    assert ("5610", "5610 " + ("Nhà hàng và dịch vụ ăn uống phục vụ lưu động" if lang == "vi" else
                                "Restaurants and mobile food service")) in sectors  # fmt: skip
    assert ("380", "Thành phố Thanh Hóa") in units
    assert all(code != "*" for code, _ in units)
    assert [o.strip() for o in variables["period"]["query"].split(",")][1].endswith(": 28")


# -- the scenario's story, as the boards tell it -------------------------------------------------------------------


def panel(store, board: str, key: str, **variables: str) -> list[dict]:
    time_from, time_to = variables.pop("time_from", None), variables.pop("time_to", None)
    default_from, default_to = time_range(board)
    result = run_panel(
        store, BOARDS[board]("vi")[key], {**DEFAULT_VARIABLES, **variables},
        time_from or default_from, time_to or default_to,
    )  # fmt: skip
    return result.records()


def local_day(day: dt.date, end: bool = False) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(23, 59, 59) if end else dt.time(0), TZ)


def week_to(day: dt.date) -> dict[str, dt.datetime]:
    return {"time_from": local_day(day - dt.timedelta(days=6)), "time_to": local_day(day, end=True)}


def test_the_heatmap_and_drilldown_show_the_restaurants_of_the_city_falling(store):
    week_before = {
        "time_from": local_day(DROP - dt.timedelta(days=7)),
        "time_to": local_day(DROP - dt.timedelta(1), True),
    }
    last_week = {
        "time_from": local_day(LAST_COMPLETE - dt.timedelta(days=6)),
        "time_to": local_day(LAST_COMPLETE, True),
    }

    def city_restaurants(period: dict) -> dict:
        rows = panel(store, "drilldown", "segments", sector="5610", unit="380", **period)
        assert len(rows) == 1
        return rows[0]

    before, after = city_restaurants(week_before), city_restaurants(last_week)
    assert after["adoption_rate"] < before["adoption_rate"] - 0.3, (before, after)
    assert after["issuing_share"] < after["baseline_share"]
    # the heat map cell agrees with the drill-down
    cells = {
        (r["unit_name"], r["sector"]): r["adoption_rate"] for r in panel(store, "overview", "heatmap", **last_week)
    }
    assert cells[("Thành phố Thanh Hóa", "5610")] == pytest.approx(after["adoption_rate"])
    # and it is the city's worst sector that week, while other restaurants did not fall
    by_sector = panel(store, "overview", "by_sector", unit="380", **last_week)
    assert by_sector[0]["sector_name"].startswith("5610")
    others = [v for (unit, sector), v in cells.items() if sector == "5610" and unit != "Thành phố Thanh Hóa"]
    assert others and min(others) > after["adoption_rate"]


def test_the_dormant_table_names_the_silent_filling_station(store, filled_deployment):
    rows = panel(store, "drilldown", "dormant", time_to=local_day(LAST_COMPLETE, True))
    by_seller = {r["seller_id"]: r for r in rows}
    station = by_seller[filled_deployment.silent_seller]
    assert station["sector_name"].startswith("4730") and station["unit_name"] == "Huyện Hoằng Hóa"
    assert station["last_invoice_day"] == dt.date(2024, 6, 18)
    assert station["usual_daily_invoices"] >= 5 and station["seller_name"]
    assert set(by_seller) <= filled_deployment.dropped_sellers | {filled_deployment.silent_seller}
    # filtering by another unit leaves the station out
    assert filled_deployment.silent_seller not in {
        r["seller_id"] for r in panel(store, "drilldown", "dormant", unit="380")
    }


def test_alerts_board_shows_events_silence_and_deliveries(store, filled_deployment):
    recent = panel(store, "alerts", "recent")
    fired = {(r["rule"], r["sector"], r["unit"]) for r in recent if r["type"] == "firing"}
    assert ("adoption_drop", "5610", "380") in fired
    assert ("dormant_issuer", "", "399") in fired
    silences = panel(store, "alerts", "silences")
    assert [s["silence_id"] for s in silences] == [filled_deployment.silence_id]
    assert json.loads(silences[0]["matchers"]) == {"rule": "volume_drop", "unit": "399"}
    [delivery] = panel(store, "alerts", "deliveries")
    assert 1 <= delivery["delivered"] <= filled_deployment.deliveries and delivery["failed"] == 0
    assert delivery["last_status"] == 200 and delivery["endpoint_state"] == "enabled"
    # the trends board annotates the firing days of the chosen segment only
    notes = panel(store, "trends", "annotations", sector="5610", unit="380")
    scopes = {tuple(n["text"].split(" · ")[2].split(" / ")) for n in notes}
    assert ("5610", "380") in scopes
    assert all(scope[-1] in ("380", "*") and scope[0] in ("5610", "380", "*") for scope in scopes), scopes
    # clickhouse-connect hands DateTime('tz') back as naive UTC
    fired_days = [n["time"].replace(tzinfo=dt.UTC).astimezone(TZ).date() for n in notes if "adoption_drop" in n["text"]]
    assert fired_days and all(day > DROP for day in fired_days)


def test_pipeline_board_counts_what_the_worker_read_and_rejected(store, filled_deployment):
    settings = filled_deployment.settings
    [fresh] = panel(store, "pipeline", "freshness")
    assert fresh["last_evaluated_day"] == LAST_COMPLETE
    assert fresh["newest_issued_at"].date() == START + dt.timedelta(days=27)
    # the dead letters in the period are exactly the records on the DLQ topic
    reasons = panel(store, "pipeline", "dlq_reasons")
    dlq = read_topic(settings, settings.topics.invoices_dlq)
    by_reason = {r["reason"]: r["rejected"] for r in reasons if r["topic"] == settings.topics.invoices}
    assert by_reason == dict(Counter(dict(r.headers)[H_REASON].decode() for r in dlq))
    assert sum(r["rejected"] for r in reasons) == len(dlq) > 0
    # the ingest rate, integrated over its buckets, is every record the worker read
    start, end = time_range("pipeline")
    result = run_panel(store, BOARDS["pipeline"]("vi")["ingest_rate"], DEFAULT_VARIABLES, start, end, interval_s=60)
    assert round(sum(per_second * 60 for _, per_second in result.rows)) == filled_deployment.published


# -- hostile variable values and the macros ------------------------------------------------------------------------


def test_a_hostile_variable_value_stays_a_string(store):
    hostile = "5610' OR 1=1 --"
    rows = panel(store, "drilldown", "segments", sector=hostile)
    assert rows == []


def test_macros_expand_as_the_clickhouse_plugin_does():
    frm = dt.datetime(2024, 6, 3, 0, 0, tzinfo=dt.UTC)
    to = dt.datetime(2024, 6, 4, 12, 30, 15, 250000, tzinfo=dt.UTC)
    sql = (
        "SELECT $__timeInterval(ts), $__interval_s FROM t WHERE $__timeFilter(ts) AND $__timeFilter_ms(ts) "
        "AND $__dateFilter(d) AND x = ${sector:sqlstring} AND y = $unit AND $__fromTime < $__toTime_ms"
    )
    out = render(sql, {"sector": "it's", "unit": "380"}, frm, to, interval_s=60.7)
    assert out == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 60 second), 60 FROM t "
        "WHERE ts >= toDateTime(1717372800) AND ts <= toDateTime(1717504215) "
        "AND ts >= fromUnixTimestamp64Milli(1717372800000) AND ts <= fromUnixTimestamp64Milli(1717504215250) "
        "AND d >= toDate('2024-06-03') AND d <= toDate('2024-06-04') AND x = 'it''s' AND y = 380 "
        "AND toDateTime(1717372800) < fromUnixTimestamp64Milli(1717504215250)"
    )
    with pytest.raises(MacroError, match="no value"):
        render("SELECT ${missing}", {}, frm, to)
    with pytest.raises(MacroError, match="not one the ClickHouse plugin knows"):
        render("SELECT $__timeGroup(ts)", {}, frm, to)


def test_column_kinds():
    assert column_kind("Nullable(Float64)") == "number"
    assert column_kind("LowCardinality(Nullable(String))") == "string"
    assert column_kind("DateTime64(3, 'UTC')") == "time"
    assert column_kind("Nullable(Date)") == "date"
    assert column_kind("Array(LowCardinality(String))") == "strings"
    assert column_kind("Map(String, String)") is None
