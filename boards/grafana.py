"""The five Grafana boards as code (grafana-foundation-sdk), in Vietnamese or English.

Every panel's SQL comes from :mod:`boards.queries`; this module only decides how it is shown.
Uids are stable (``einvoice-<board>``, ``-en`` for the English build) so that provisioning and
``dashboards publish`` update boards in place instead of adding copies.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models

from base.localtime import TIME_ZONE
from boards.i18n import column, t
from boards.macros import ALL, Variable, sqlstring
from boards.promql import PIPELINE as PIPELINE_PROMQL
from boards.promql import PromQuery
from boards.queries import BOARDS, COMPARISONS, NO_COMPARISON, ROLLUP, PanelQuery

PLUGIN = "grafana-clickhouse-datasource"
DATASOURCE_UID = "einvoice-clickhouse"
DATASOURCE = models.DataSourceRef(type_val=PLUGIN, uid=DATASOURCE_UID)
PLUGIN_VERSION = "4.11.2"
# The pipeline's Prometheus (deploy/grafana/provisioning/datasources/prometheus.yaml)
PROMETHEUS_UID = "einvoice-prometheus"
PROMETHEUS = models.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
TAGS = ["einvoice", "thanh-hoa"]
# Grafana inserts a custom "All" value as it is, whatever the format (@grafana/scenes CustomAllValue), so the
# roll-up marker is stored already quoted: `${sector:sqlstring}` reads '*' at "All" and '5610' otherwise.
ALL_VALUE = sqlstring(ROLLUP)
# red below 60 %, amber below the 80 % of supermarkets (the seed articles' anchor), green above
RATE_STEPS = [(None, "red"), (0.6, "orange"), (0.8, "green")]
DEFAULT_RANGE = ("now-30d", "now")


class ClickHouseQuery(cogbuilder.Builder[cogvariants.Dataquery]):
    """A raw-SQL query of the ClickHouse plugin (the SDK has no builder for it)."""

    def __init__(self, sql: str, time_series: bool, ref_id: str = "A") -> None:
        self._query = _ClickHouseTarget(sql.strip(), time_series, ref_id)

    def build(self) -> cogvariants.Dataquery:
        return self._query


class _ClickHouseTarget(cogvariants.Dataquery):
    def __init__(self, sql: str, time_series: bool, ref_id: str) -> None:
        self.sql, self.time_series, self.ref_id = sql, time_series, ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": DATASOURCE.to_json(),
            "pluginVersion": PLUGIN_VERSION,
            "editorType": "sql",
            "queryType": "timeseries" if self.time_series else "table",
            "format": 0 if self.time_series else 1,  # the plugin's Format: 0 time series, 1 table
            "rawSql": self.sql,
        }


def _thresholds(steps: list[tuple[float | None, str]]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=v, color=c) for v, c in steps])
    )


def _display_names(panel: Any, query: PanelQuery, lang: str) -> Any:
    for name in query.columns:
        label = column(name, lang)
        if label != name:
            panel = panel.override_by_name(name, [models.DynamicConfigValue(id_val="displayName", value=label)])
    return panel


PERCENT = [
    models.DynamicConfigValue(id_val="unit", value="percentunit"),
    models.DynamicConfigValue(id_val="decimals", value=1),
]
RATE_COLOURS = [
    models.DynamicConfigValue(
        id_val="thresholds",
        value={"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in RATE_STEPS]},
    ),
    models.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background", "mode": "basic"}),
    models.DynamicConfigValue(id_val="color", value={"mode": "thresholds"}),
]
# Grafana shows a Date column (the plugin hands it over as a time) as a date-time unless told otherwise
DAY = [models.DynamicConfigValue(id_val="unit", value="time:YYYY-MM-DD")]


# a comparison with nothing (NULL, boards.queries.COMPARISONS) reads "—", not an empty cell or "No data"
NOTHING_TO_COMPARE = [models.DynamicConfigValue(id_val="noValue", value=NO_COMPARISON)]


def _percent(panel: Any, names: list[str]) -> Any:
    for name in names:
        panel = panel.override_by_name(name, PERCENT)
    return panel


def _rate_colours(panel: Any, names: list[str]) -> Any:
    for name in names:
        panel = panel.override_by_name(name, RATE_COLOURS)
    return panel


PERCENT_COLUMNS = [
    "adoption_rate", "adoption_change", "adoption_7d", "adoption_28d", "issuing_share", "baseline_share",
    "non_cash_share", "invoices_change", "invoices_vs_baseline", "gap",
]  # fmt: skip


def _common(panel: Any, board: str, key: str, query: PanelQuery, lang: str, width: int, height: int) -> Any:
    panel = (
        panel.title(t(f"{board}.{key}", lang))
        .datasource(DATASOURCE)
        .with_target(ClickHouseQuery(query.sql, query.time_series))
        .span(width)
        .height(height)
    )
    panel = _percent(panel, [c for c in PERCENT_COLUMNS if c in query.columns])
    for name in (c for c in COMPARISONS if c in query.columns):
        panel = panel.override_by_name(name, NOTHING_TO_COMPARE)
    return panel


def _table(board: str, key: str, query: PanelQuery, lang: str, width: int = 24, height: int = 10) -> Any:
    panel = _display_names(_common(table.Panel(), board, key, query, lang, width, height), query, lang)
    for name, kind in query.columns.items():
        if kind == "date":
            panel = panel.override_by_name(name, DAY)
    panel = panel.filterable(True)
    return _rate_colours(panel, [c for c in ("adoption_rate", "issuing_share") if c in query.columns])


def _series(board: str, key: str, query: PanelQuery, lang: str, width: int = 12, height: int = 8) -> Any:
    panel = _display_names(_common(timeseries.Panel(), board, key, query, lang, width, height), query, lang)
    return panel.line_width(2).fill_opacity(10).show_points(common_models.VisibilityMode.AUTO)


def _prometheus_series(key: str, queries: tuple[PromQuery, ...], lang: str, unit: str = "") -> Any:
    """A time series panel of the pipeline board read from Prometheus."""
    panel = timeseries.Panel().title(t(f"pipeline.{key}", lang)).datasource(PROMETHEUS).span(12).height(8)
    for ref, query in zip("ABCDEFGH", queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).legend_format(query.legend).range().ref_id(ref)
        panel = panel.with_target(target.datasource(PROMETHEUS))
    panel = panel.unit(unit) if unit else panel
    return panel.line_width(2).fill_opacity(10).show_points(common_models.VisibilityMode.AUTO)


def _bars(board: str, key: str, query: PanelQuery, label: str, lang: str, width: int = 12) -> Any:
    """One bar a row, titled by the row's ``label`` column.

    Grafana titles a row by its other string fields, plus the field's name when other numbers remain
    (@grafana/data getSmartDisplayNameForRow), and a displayName on the field would title every bar alike:
    so the panel keeps only the label and the rate.
    """
    panel = _common(bargauge.Panel(), board, key, query, lang, width, 14).with_transformation(
        models.DataTransformerConfig(
            id_val="organize",
            options={"excludeByName": {name: True for name in query.columns if name not in (label, "adoption_rate")}},
        )
    )
    return (
        panel.orientation(common_models.VizOrientation.HORIZONTAL)
        .display_mode(common_models.BarGaugeDisplayMode.BASIC)
        .reduce_options(
            common.ReduceDataOptions().values(True).calcs(["lastNotNull"]).fields("/^adoption_rate$/").limit(100)
        )
        .thresholds(_thresholds(RATE_STEPS))
        .min(0)
        .max(1)
        .unit("percentunit")
    )


def _stat(board: str, key: str, query: PanelQuery, lang: str, width: int = 24, height: int = 5) -> Any:
    panel = _display_names(_common(stat.Panel(), board, key, query, lang, width, height), query, lang)
    return panel.reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).fields("/.*/")).color_mode(
        common_models.BigValueColorMode.NONE
    )


def _matrix(board: str, key: str, query: PanelQuery, lang: str, width: int, height: int) -> Any:
    """Rows by unit, a column a sector, coloured cells of the adoption rate.

    groupingToMatrix names the value columns after the sectors and the first one "unit_name\\sector", so the
    cells are styled by type (every number) and the corner column by that name.
    """
    panel = (
        table.Panel()
        .title(t(f"{board}.{key}", lang))
        .datasource(DATASOURCE)
        .with_target(ClickHouseQuery(query.sql, query.time_series))
        .span(width)
        .height(height)
        .with_transformation(
            models.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"columnField": "sector", "rowField": "unit_name", "valueField": "adoption_rate"},
            )
        )
        .override_by_name(
            "unit_name\\sector",
            [
                models.DynamicConfigValue(
                    id_val="displayName", value=f"{column('unit_name', lang)} \\ {column('sector', lang)}"
                )
            ],
        )
    )
    return panel.with_override(models.MatcherConfig(id_val="byType", options="number"), [*PERCENT, *RATE_COLOURS])


def _filter_variable(name: str, label: str, all_option: models.VariableOption, sql: str) -> Any:
    """A code list from ClickHouse (first column the value, second the text); "All" is the '*' roll-up."""
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(sql)
        .include_all(True)
        .all_value(ALL_VALUE)
        .current(all_option)
        .refresh(models.VariableRefresh.ON_DASHBOARD_LOAD)
    )


def _variables(board: Any, lang: str, with_target: bool = False) -> Any:
    sector_name = "name_en" if lang == "en" else "name"
    all_option = models.VariableOption(selected=True, text=t("all", lang), value="$__all")
    board = (
        board.with_variable(
            _filter_variable(
                "sector",
                t("var.sector", lang),
                all_option,
                f"SELECT vsic_code, concat(vsic_code, ' ', {sector_name}) FROM sectors FINAL ORDER BY vsic_code",
            )
        )
        .with_variable(
            _filter_variable(
                "unit",
                t("var.unit", lang),
                all_option,
                "SELECT code, name FROM admin_units FINAL WHERE code IN "
                "(SELECT DISTINCT unit FROM segment_adoption WHERE unit != '*') ORDER BY name",
            )
        )
        .with_variable(
            dashboard.CustomVariable("period")
            .label(t("var.period", lang))
            .values(f"{t('period.7', lang)} : 7, {t('period.28', lang)} : 28")
            .current(models.VariableOption(selected=True, text=t("period.7", lang), value="7"))
        )
    )
    if with_target:
        board = board.with_variable(
            dashboard.TextBoxVariable("target").label(t("var.target", lang)).default_value("0.8")
        )
    return board


def variables(sector: str = ROLLUP, unit: str = ROLLUP, period: str = "7", target: str = "0.8") -> dict[str, Variable]:
    """The boards' variables at a state a user can pick; ``ROLLUP`` is the "All" option."""

    def code(value: str) -> Variable:
        return Variable(ALL, all_value=ALL_VALUE) if value == ROLLUP else Variable(value)

    return {"sector": code(sector), "unit": code(unit), "period": Variable(period), "target": Variable(target)}


# the state a fresh board starts in
DEFAULT_VARIABLES = variables()


def _board(name: str, lang: str) -> Any:
    suffix = "" if lang == "vi" else "-en"
    return (
        dashboard.Dashboard(t(f"board.{name}", lang))
        .uid(f"einvoice-{name}{suffix}")
        .tags([*TAGS, language_tag(lang)])
        .timezone(TIME_ZONE)
        .time(*DEFAULT_RANGE)
        .refresh("5m")
        .editable()
        .link(
            dashboard.DashboardLink(t("folder", lang))
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags([language_tag(lang)])  # the menu lists the boards of this language only
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def language_tag(lang: str) -> str:
    return f"einvoice-{lang}"


def build_overview(lang: str) -> Any:
    q = BOARDS["overview"](lang)
    return (
        _variables(_board("overview", lang), lang, with_target=True)
        .with_panel(_stat("overview", "totals", q["totals"], lang))
        .with_panel(_bars("overview", "by_unit", q["by_unit"], "unit_name", lang))
        .with_panel(_bars("overview", "by_sector", q["by_sector"], "sector_name", lang))
        .with_panel(_matrix("overview", "heatmap", q["heatmap"], lang, width=16, height=14))
        .with_panel(_table("overview", "below_target", q["below_target"], lang, width=8, height=14))
    )


def build_trends(lang: str) -> Any:
    q = BOARDS["trends"](lang)
    annotation = q["annotations"]
    return (
        _variables(_board("trends", lang), lang)
        .annotation(
            dashboard.AnnotationQuery()
            .name(t("trends.annotations", lang))
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("red")
            .target(ClickHouseQuery(annotation.sql, time_series=False))  # type: ignore[arg-type]
        )
        .with_panel(_series("trends", "adoption", q["adoption"], lang).min(0).max(1))
        .with_panel(_series("trends", "issuers", q["issuers"], lang))
        .with_panel(_series("trends", "invoices", q["invoices"], lang))
        .with_panel(_series("trends", "non_cash", q["non_cash"], lang).min(0).max(1))
    )


def build_drilldown(lang: str) -> Any:
    q = BOARDS["drilldown"](lang)
    return (
        _variables(_board("drilldown", lang), lang)
        .with_panel(_table("drilldown", "segments", q["segments"], lang, height=12))
        .with_panel(_series("drilldown", "baseline", q["baseline"], lang, width=24).min(0).max(1))
        .with_panel(_table("drilldown", "dormant", q["dormant"], lang, height=12))
    )


def build_alerts(lang: str) -> Any:
    q = BOARDS["alerts"](lang)
    return (
        _board("alerts", lang)
        .with_panel(_table("alerts", "active", q["active"], lang, height=8))
        .with_panel(_series("alerts", "per_day", q["per_day"], lang, width=12).draw_style(
            common_models.GraphDrawStyle.BARS))
        .with_panel(_table("alerts", "silences", q["silences"], lang, width=12, height=8))
        .with_panel(_table("alerts", "deliveries", q["deliveries"], lang, height=7))
        .with_panel(_table("alerts", "recent", q["recent"], lang, height=12))
    )  # fmt: skip


def build_pipeline(lang: str) -> Any:
    q = BOARDS["pipeline"](lang)
    return (
        _board("pipeline", lang)
        .time("now-6h", "now")
        .refresh("30s")
        .with_panel(_stat("pipeline", "freshness", q["freshness"], lang, height=4))
        .with_panel(_series("pipeline", "ingest_rate", q["ingest_rate"], lang))
        .with_panel(_series("pipeline", "dlq_rate", q["dlq_rate"], lang))
        .with_panel(_series("pipeline", "consumer_lag", q["consumer_lag"], lang))
        .with_panel(_series("pipeline", "watermark_delay", q["watermark_delay"], lang).unit("s"))
        .with_panel(_table("pipeline", "dlq_reasons", q["dlq_reasons"], lang, height=8))
        .with_panel(_prometheus_series("workers_up", PIPELINE_PROMQL["workers_up"], lang))
        .with_panel(_prometheus_series("health_alerts", PIPELINE_PROMQL["health_alerts"], lang))
        .with_panel(_prometheus_series("latency_p99", PIPELINE_PROMQL["latency_p99"], lang, unit="s"))
        .with_panel(_prometheus_series("group_lag_by_partition", PIPELINE_PROMQL["group_lag_by_partition"], lang))
    )


BUILDERS: dict[str, Callable[[str], Any]] = {
    "overview": build_overview,
    "trends": build_trends,
    "drilldown": build_drilldown,
    "alerts": build_alerts,
    "pipeline": build_pipeline,
}


def dashboards(lang: str = "vi") -> dict[str, dict[str, Any]]:
    """Every board as Grafana's dashboard JSON model, keyed by board name."""
    boards = {}
    for name, build in BUILDERS.items():
        model = build(lang).build()
        boards[name] = json.loads(json.dumps(model, cls=JSONEncoder))
    return boards


def to_json_text(board: dict[str, Any]) -> str:
    """Stable text for committing and comparing (sorted keys, UTF-8, trailing newline)."""
    return json.dumps(board, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
