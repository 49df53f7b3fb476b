"""The committed boards, proven with Grafana's own code instead of our reading of it.

For every committed dashboard (vi and en), every panel and annotation target, and every variable state a
user can reach (the default, "All", each single value, a multi-value selection where a variable allows
one), Grafana 11.6's own interpolation (@grafana/scenes under Node, tests/grafana_js) turns the SQL into
what the ClickHouse plugin receives; the plugin's macros are expanded (boards/macros.py, its Go code cannot
run here) and the query runs on chDB over the simulated deployment. boards/macros.py, which the offline
report uses, must produce the same SQL as Grafana's code for every one of those cases.

Then @grafana/data's own transformations, field overrides and display processors show what the panels
draw: the bar gauges' titles, the matrix's percent cells and colours, dates as dates.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from base.localtime import LOCAL_TZ
from boards.grafana import dashboards, language_tag
from boards.i18n import LANGUAGES, column
from boards.macros import ALL, Variable, expand_macros, interpolate
from boards.queries import PanelQuery, all_queries
from boards.runner import run_sql
from sinks.clickhouse import ClickHouseStore
from tests.filled import FilledDeployment
from tests.grafana_code import run_grafana

TZ = LOCAL_TZ
JUNE = (dt.datetime(2024, 6, 3, tzinfo=TZ), dt.datetime(2024, 6, 27, 23, 59, 59, tzinfo=TZ))
HOSTILE = "0.8' OR 1=1 --"
# panels that show one segment's own figures: a single value with data must show rows
OWN_SERIES = {("overview", "totals"), ("trends", "adoption"), ("trends", "issuers"), ("trends", "invoices"),
              ("trends", "non_cash"), ("drilldown", "baseline")}  # fmt: skip


def time_range(board: str) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    if board == "pipeline":
        return now - dt.timedelta(hours=1), now + dt.timedelta(minutes=1)
    if board == "alerts":
        return JUNE[0], now + dt.timedelta(minutes=1)
    return JUNE


@dataclass(frozen=True)
class Case:
    """One target of one board at one variable state."""

    lang: str
    board: str
    key: str
    query: PanelQuery
    sql: str  # rawSql as committed
    state: str  # e.g. "default", "sector=5610"
    entries: tuple[dict[str, Any], ...]  # the templating entries at that state (current and options set)

    @property
    def name(self) -> str:
        return f"{self.lang}/{self.board}/{self.key} [{self.state}]"

    def python_variables(self) -> dict[str, Variable]:
        """The same state in boards.macros' terms."""
        out = {}
        for entry in self.entries:
            value = entry.get("current", {}).get("value", entry.get("query", ""))
            text = entry.get("current", {}).get("text")
            out[entry["name"]] = Variable(
                tuple(value) if isinstance(value, list) else str(value),
                tuple(text) if isinstance(text, list) else text,
                entry.get("allValue") or None,
                tuple(str(o["value"]) for o in entry.get("options", [])),
            )
        return out


def with_current(entry: dict[str, Any], value: Any, text: Any) -> dict[str, Any]:
    return {**entry, "current": {"selected": True, "value": value, "text": text}}


def reachable_states(
    board: dict[str, Any], options: dict[str, list[dict[str, str]]]
) -> Iterator[tuple[str, tuple[dict[str, Any], ...]]]:
    """The default state, then each variable moved alone to each state it can take."""
    entries = [{**e, "options": options.get(e["name"], [])} for e in board["templating"].get("list", [])]
    yield "default", tuple(entries)
    for i, entry in enumerate(entries):
        moved: list[tuple[str, dict[str, Any]]] = []
        if entry["type"] == "textbox":
            for value in ("0.5", HOSTILE):
                moved.append((value, with_current(entry, value, value)))
        else:
            if entry.get("includeAll"):
                moved.append(("All", with_current(entry, [ALL] if entry.get("multi") else ALL, "All")))
            for option in entry["options"]:
                value, text = option["value"], option["text"]
                moved.append((value, with_current(entry, [value] if entry.get("multi") else value, text)))
            if entry.get("multi") and len(entry["options"]) >= 2:
                two = entry["options"][:2]
                moved.append(("+".join(o["value"] for o in two), with_current(
                    entry, [o["value"] for o in two], [o["text"] for o in two])))  # fmt: skip
        for label, state in moved:
            yield f"{entry['name']}={label}", (*entries[:i], state, *entries[i + 1 :])


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    # the ClickHouse targets; the pipeline board's Prometheus ones are checked in tests/deploy/test_prometheus_rules.py
    out = [(p["title"], t) for p in board["panels"] for t in p.get("targets", []) if "rawSql" in t]
    out += [(a["name"], a["target"]) for a in board.get("annotations", {}).get("list", []) if "target" in a]
    return out


@pytest.fixture(scope="module")
def store(filled_deployment: FilledDeployment) -> Iterator[ClickHouseStore]:
    opened = ClickHouseStore(filled_deployment.settings.clickhouse_dsn)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(scope="module")
def cases(store: ClickHouseStore) -> list[Case]:
    """Every (board, target, reachable state), in both languages."""
    boards = {lang: dashboards(lang) for lang in LANGUAGES}
    # what each variable offers: a query variable runs its SQL (first column the value, second the text, as
    # the plugin's metricFindQuery reads it), a custom one is parsed by Grafana's CustomVariable
    custom = [
        {"id": f"{lang}/{name}/{e['name']}", "variable": e}
        for lang, by_name in boards.items()
        for name, board in by_name.items()
        for e in board["templating"].get("list", [])
        if e["type"] == "custom"
    ]
    parsed = {o["id"]: o["options"] for o in run_grafana({"options": custom})["options"]}
    out = []
    for lang, by_name in boards.items():
        by_sql = {q.sql.strip(): (b, k, q) for (b, k), q in all_queries(lang).items()}
        for name, board in by_name.items():
            options: dict[str, list[dict[str, str]]] = {}
            for entry in board["templating"].get("list", []):
                if entry["type"] == "query":
                    rows = store.query_rows(entry["query"])
                    options[entry["name"]] = [{"value": str(r[0]), "text": str(r[-1])} for r in rows]
                elif entry["type"] == "custom":
                    options[entry["name"]] = parsed[f"{lang}/{name}/{entry['name']}"]
            for state, entries in reachable_states(board, options):
                for _title, target in targets(board):
                    b, k, query = by_sql[target["rawSql"]]
                    out.append(Case(lang, b, k, query, target["rawSql"], state, entries))
    return out


@pytest.fixture(scope="module")
def grafana_sql(cases: list[Case]) -> dict[str, str]:
    """Each case's SQL as Grafana 11.6's own code interpolates it."""
    request = {
        "interpolate": [
            {"id": str(i), "sql": c.sql, "variables": list(c.entries), "interval_ms": 3_600_000}
            for i, c in enumerate(cases)
        ]
    }
    return {c.name: r["sql"] for c, r in zip(cases, run_grafana(request)["interpolate"], strict=True)}


def test_every_reachable_state_is_covered(cases):
    counts = {(c.lang, c.board) for c in cases}
    assert len(counts) == 10
    states = {c.state for c in cases if c.lang == "vi" and c.board == "overview"}
    assert {"default", "sector=All", "unit=All", "sector=5610", "unit=380", "period=28", f"target={HOSTILE}"} <= states
    assert len(states) > 40, sorted(states)
    assert len(cases) > 1000


def test_boards_macros_produces_the_sql_grafanas_own_code_does(cases, grafana_sql):
    differ = [
        (c.name, grafana_sql[c.name], interpolate(c.sql, c.python_variables()))
        for c in cases
        if interpolate(c.sql, c.python_variables()) != grafana_sql[c.name]
    ]
    assert not differ, f"{len(differ)} of {len(cases)} differ; first:\n" + "\n\n".join(
        f"{name}\n grafana: {g}\n ours:    {o}" for name, g, o in differ[:3]
    )


def test_at_the_default_state_variables_select_the_rollup_rows(cases, grafana_sql):
    """What broke in real Grafana: its custom "All" value is inserted unquoted whatever the format."""
    case = next(c for c in cases if (c.lang, c.board, c.key, c.state) == ("vi", "overview", "totals", "default"))
    assert "sector = '*' AND unit = '*'" in grafana_sql[case.name]
    assert "if('7' = '28'" in grafana_sql[case.name]


def test_every_query_runs_in_every_reachable_state(store, cases, grafana_sql):
    with_data = segments_with_data(store)
    failures = []
    for case in cases:
        time_from, time_to = time_range(case.board)
        sql = expand_macros(grafana_sql[case.name], time_from, time_to, interval_s=3600)
        try:
            result = run_sql(store, sql)
        except Exception as exc:  # every failure is collected and reported at once
            failures.append(f"{case.name}: {str(exc).splitlines()[0][:300]}")
            continue
        if result.columns != list(case.query.columns) or result.kinds != list(case.query.columns.values()):
            failures.append(f"{case.name}: columns {list(zip(result.columns, result.kinds, strict=True))}")
        elif must_show_rows(case, with_data) and not result.rows:
            failures.append(f"{case.name}: no rows")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:20])


def segments_with_data(store: ClickHouseStore) -> set[tuple[str, str]]:
    first, last = (d.date() for d in JUNE)
    return set(
        store.query_rows(
            "SELECT DISTINCT sector, unit FROM segment_adoption FINAL WHERE day BETWEEN {f:Date} AND {l:Date}",
            {"f": first, "l": last},
        )
    )


def must_show_rows(case: Case, with_data: set[tuple[str, str]]) -> bool:
    """The default state shows data on every panel that may not be empty; a single segment with data shows
    its own figures."""
    if case.query.may_be_empty:
        return False
    if case.state == "default" or case.state.endswith("=All") or case.state.startswith("period="):
        return True
    state = case.python_variables()
    sector, unit = (state[n].value if n in state else ALL for n in ("sector", "unit"))
    segment = ("*" if sector == ALL else sector, "*" if unit == ALL else unit)
    return (case.board, case.key) in OWN_SERIES and segment in with_data


def test_a_hostile_target_stays_a_string(store, cases, grafana_sql):
    case = next(
        c for c in cases if (c.lang, c.board, c.key, c.state) == ("vi", "overview", "below_target", f"target={HOSTILE}")
    )
    sql = expand_macros(grafana_sql[case.name], *JUNE, interval_s=3600)
    assert "toFloat64OrDefault('0.8'' OR 1=1 --', 0.8)" in sql
    store.call(store.client.query, sql)  # runs: the value is one string literal


def test_multi_value_selections_interpolate_as_grafana_does(cases):
    """No board variable allows several values today; were one to, boards.macros formats them as Grafana."""
    case = next(c for c in cases if (c.lang, c.board, c.key, c.state) == ("en", "overview", "totals", "default"))
    sql = "SELECT ${sector:sqlstring}, $sector, ${sector:csv}, ${sector:raw}, ${sector:text}, ${unit:singlequote}"
    entries = [dict(e, multi=True) for e in case.entries]
    states = []
    for values in (["5610", "4730"], ["it's", 'a "b"'], [ALL]):
        moved = [with_current(e, values, values) if e["name"] == "sector" else e for e in entries]
        states.append(moved)
    got = run_grafana({"interpolate": [{"id": str(i), "sql": sql, "variables": s} for i, s in enumerate(states)]})[
        "interpolate"
    ]
    for state, answer in zip(states, got, strict=True):
        ours = interpolate(
            sql, Case("en", "overview", "totals", case.query, sql, "multi", tuple(state)).python_variables()
        )
        assert ours == answer["sql"]
    assert got[0]["sql"].startswith("SELECT '5610','4730', '5610','4730', 5610,4730, 5610,4730, ")


def test_the_old_custom_all_value_fails_as_it_did_in_grafana(store, cases):
    """The check catches the defect it was written for: allValue "*" (unquoted) breaks the default state."""
    case = next(c for c in cases if (c.lang, c.board, c.key, c.state) == ("vi", "overview", "totals", "default"))
    old = [dict(e, allValue="*") if e.get("allValue") else e for e in case.entries]
    [answer] = run_grafana({"interpolate": [{"id": "0", "sql": case.sql, "variables": old}]})["interpolate"]
    assert "sector = * AND unit = *" in answer["sql"]
    with pytest.raises(Exception, match=r"(?i)syntax|argument"):
        store.call(store.client.query, expand_macros(answer["sql"], *JUNE, interval_s=3600))


# -- what the panels draw, by @grafana/data ------------------------------------------------------------------------


def frame(store: ClickHouseStore, case_sql: str, query: PanelQuery) -> dict[str, Any]:
    """A query result as the plugin hands it to the panel: dates and times as epoch milliseconds."""
    result = store.call(store.client.query, case_sql)

    def cell(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return int(value.replace(tzinfo=value.tzinfo or dt.UTC).timestamp() * 1000)
        if isinstance(value, dt.date):
            return int(dt.datetime.combine(value, dt.time(0), dt.UTC).timestamp() * 1000)
        return value

    columns = list(result.column_names)
    return {
        "fields": [
            {"name": name, "type": query.columns[name], "values": [cell(row[i]) for row in result.result_rows]}
            for i, name in enumerate(columns)
        ]
    }


def panel_of(board: dict[str, Any], sql: str) -> dict[str, Any]:
    return next(p for p in board["panels"] if any(t.get("rawSql") == sql for t in p.get("targets", [])))


def shown(store, cases, grafana_sql, lang: str, board: str, key: str, state: str = "default") -> dict[str, Any]:
    case = next(c for c in cases if (c.lang, c.board, c.key, c.state) == (lang, board, key, state))
    time_from, time_to = time_range(board)
    sql = expand_macros(grafana_sql[case.name], time_from, time_to, interval_s=3600)
    panel = panel_of(dashboards(lang)[board], case.sql)
    [answer] = run_grafana({"display": [{"id": case.name, "panel": panel, "frame": frame(store, sql, case.query)}]})[
        "display"
    ]
    return answer


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize(("key", "label"), [("by_unit", "unit_name"), ("by_sector", "sector_name")])
def test_bar_gauges_name_each_bar_by_its_row(store, cases, grafana_sql, lang, key, label):
    answer = shown(store, cases, grafana_sql, lang, "overview", key)
    case = next(c for c in cases if (c.lang, c.board, c.key, c.state) == (lang, "overview", key, "default"))
    rows = store.call(store.client.query, expand_macros(grafana_sql[case.name], *JUNE, interval_s=3600)).named_results()
    bars = answer["titles"]
    assert [b["title"] for b in bars] == [r[label] for r in rows]
    assert len({b["title"] for b in bars}) == len(bars) > 3
    assert all(b["suffix"] == "%" for b in bars)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_sector_by_unit_matrix_shows_percents_in_threshold_colours(store, cases, grafana_sql, lang):
    answer = shown(store, cases, grafana_sql, lang, "overview", "heatmap")
    corner, *cells = answer["fields"]
    assert corner["name"] == "unit_name\\sector"
    assert corner["displayName"] == f"{column('unit_name', lang)} \\ {column('sector', lang)}"
    assert corner["cellType"] is None and len(cells) > 5
    assert "5610" in {f["name"] for f in cells}  # a column a sector
    colours = {}
    for field in cells:
        assert (field["unit"], field["decimals"], field["colorMode"], field["cellType"]) == (
            "percentunit",
            1,
            "thresholds",
            "color-background",
        ), field["name"]
        for value in field["values"]:
            if value["text"] not in ("", "-"):
                assert value["suffix"] == "%" and "." in value["text"], value
                colours.setdefault(value["color"], set()).add(float(value["text"]))
    # red below 60 %, orange below 80 %, green from 80 %: three colours, each for its own band
    assert len(colours) >= 2, colours
    bands = sorted((min(v), max(v)) for v in colours.values())
    assert all(hi < next_lo for (_, hi), (next_lo, _) in itertools.pairwise(bands)), bands


@pytest.mark.parametrize(("board", "key", "name"), [("drilldown", "dormant", "last_invoice_day"),
                                                    ("alerts", "recent", "day")])  # fmt: skip
def test_date_columns_show_as_dates(store, cases, grafana_sql, board, key, name):
    answer = shown(store, cases, grafana_sql, "vi", board, key)
    field = next(f for f in answer["fields"] if f["name"] == name)
    texts = [v["text"] for v in field["values"]]
    assert texts and all(len(t) == 10 and dt.date.fromisoformat(t) for t in texts), texts[:5]


def test_the_dashboard_menu_lists_the_boards_of_one_language():
    boards = {lang: dashboards(lang) for lang in LANGUAGES}
    for lang, by_name in boards.items():
        for board in by_name.values():
            [link] = board["links"]
            assert link["type"] == "dashboards" and link["tags"] == [language_tag(lang)]
            # Grafana's dashboard search returns the boards carrying every tag of the link
            listed = {
                b["uid"] for boards_of in boards.values() for b in boards_of.values()
                if set(link["tags"]) <= set(b["tags"])
            }  # fmt: skip
            assert listed == {b["uid"] for b in by_name.values()}
