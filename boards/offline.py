"""The offline report: the boards' key views as PNG charts and one self-contained HTML page.

The embedded mode has no Grafana, so ``einvoice-monitor report --format html|png`` runs the same
panel queries (boards/queries.py, through boards/runner.py) for a period and draws them with
matplotlib. DejaVu Sans, which matplotlib ships, has every Vietnamese diacritic.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.pyplot as plt
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure

from base.localtime import LOCAL_TZ
from boards.grafana import RATE_STEPS, variables
from boards.i18n import column, t
from boards.queries import BOARDS, COMPARISONS, NO_COMPARISON
from boards.runner import PanelResult, run_panel
from sinks.clickhouse.client import ClickHouseStore

# the boards' thresholds, as colours that read on white paper
RED, AMBER, GREEN, BLUE, GREY = "#c0392b", "#e67e22", "#27ae60", "#2c6fbb", "#7f8c8d"
RATE_COLOURS = {"red": RED, "orange": AMBER, "green": GREEN}
VIEWS = {
    "totals": ("overview", "totals"),
    "by_unit": ("overview", "by_unit"),
    "by_sector": ("overview", "by_sector"),
    "heatmap": ("overview", "heatmap"),
    "below_target": ("overview", "below_target"),
    "adoption": ("trends", "adoption"),
    "invoices": ("trends", "invoices"),
    "non_cash": ("trends", "non_cash"),
    "annotations": ("trends", "annotations"),
    "recent": ("alerts", "recent"),
    "dormant": ("drilldown", "dormant"),
}


@dataclass
class ReportData:
    first_day: dt.date
    last_day: dt.date
    lang: str
    sector: str
    unit: str
    views: dict[str, PanelResult] = field(default_factory=dict)

    def records(self, view: str) -> list[dict[str, Any]]:
        return self.views[view].records()


def collect(
    store: ClickHouseStore, first_day: dt.date, last_day: dt.date, lang: str = "vi", sector: str = "*", unit: str = "*"
) -> ReportData:
    """Run every view's panel query for the period (local days, both included)."""
    if last_day < first_day:
        raise ValueError(f"the period ends ({last_day}) before it starts ({first_day})")
    time_from = dt.datetime.combine(first_day, dt.time(0), LOCAL_TZ)
    time_to = dt.datetime.combine(last_day, dt.time(23, 59, 59), LOCAL_TZ)
    state = variables(sector, unit)
    data = ReportData(first_day, last_day, lang, sector, unit)
    for view, (board, key) in VIEWS.items():
        data.views[view] = run_panel(store, BOARDS[board](lang)[key], state, time_from, time_to)
    return data


def _rate_colour(rate: float) -> str:
    colour = RATE_STEPS[0][1]
    for threshold, name in RATE_STEPS[1:]:
        if threshold is not None and rate >= threshold:
            colour = name
    return RATE_COLOURS[colour]


def _local(value: dt.datetime) -> dt.datetime:
    """clickhouse-connect hands DateTime('tz') back as naive UTC."""
    return value.replace(tzinfo=dt.UTC).astimezone(LOCAL_TZ).replace(tzinfo=None) if value.tzinfo is None else value


def _bars(rows: list[dict[str, Any]], label: str, title: str, lang: str) -> Figure:
    rows = sorted(rows, key=lambda r: (r["adoption_rate"], str(r[label])))
    height = max(3.0, 0.32 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height), layout="constrained")
    names = [str(r[label]) for r in rows]
    rates = [r["adoption_rate"] for r in rows]
    ax.barh(names, rates, color=[_rate_colour(r) for r in rates])
    for y, (rate, row) in enumerate(zip(rates, rows, strict=True)):
        ax.text(rate + 0.01, y, f"{rate:.0%}  ({row['active']:,}/{row['eligible']:,})", va="center", fontsize=8)
    ax.invert_yaxis()  # the lowest rate on top: the ones that lag come first
    ax.set_xlim(0, 1.18)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel(column("adoption_rate", lang))
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


def _heatmap(rows: list[dict[str, Any]], title: str, lang: str) -> Figure:
    units = sorted({r["unit_name"] for r in rows})
    sectors = sorted({r["sector"] for r in rows})
    grid = [[float("nan")] * len(sectors) for _ in units]
    for r in rows:
        grid[units.index(r["unit_name"])][sectors.index(r["sector"])] = r["adoption_rate"]
    fig, ax = plt.subplots(
        figsize=(max(7, 0.6 * len(sectors) + 4), max(4, 0.3 * len(units) + 1.5)), layout="constrained"
    )
    cmap = ListedColormap([RED, AMBER, GREEN]).with_extremes(bad="#f2f2f2")
    bounds = [0.0] + [s for s, _ in RATE_STEPS[1:] if s is not None] + [1.0001]
    image = ax.imshow(grid, cmap=cmap, norm=BoundaryNorm(bounds, cmap.N), aspect="auto")
    for y, line in enumerate(grid):
        for x, value in enumerate(line):
            if value == value:  # not NaN
                ax.text(x, y, f"{value:.0%}", ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(len(sectors)), sectors, fontsize=8)
    ax.set_yticks(range(len(units)), units, fontsize=8)
    ax.set_xlabel(column("sector", lang))
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    fig.colorbar(image, ax=ax, format=matplotlib.ticker.PercentFormatter(1.0), shrink=0.6)
    return fig


def _series(
    rows: list[dict[str, Any]], columns: list[str], title: str, lang: str, alerts: list[dt.datetime], percent: bool
) -> Figure:
    fig, ax = plt.subplots(figsize=(10, 3.6), layout="constrained")
    times = [_local(r["time"]) for r in rows]
    for name, colour in zip(columns, (BLUE, GREEN, GREY), strict=False):
        values = [r[name] for r in rows]
        label = column(name, lang)
        if name in COMPARISONS and all(v is None for v in values):
            label = f"{label}: {NO_COMPARISON}"  # no baseline anywhere in the period: say so, draw nothing
        ax.plot(times, [v if v is not None else float("nan") for v in values], label=label,
                color=colour, linewidth=2 if name == columns[0] else 1.4,
                linestyle="-" if name == columns[0] else "--")  # fmt: skip
    for at in alerts:
        ax.axvline(at, color=RED, alpha=0.35, linewidth=1)
    if alerts:
        ax.plot([], [], color=RED, alpha=0.5, label=t("trends.annotations", lang))
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        ax.set_ylim(0, 1.05)
    else:
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%d/%m"))
    ax.set_title(title, loc="left", fontsize=12, fontweight="bold")
    ax.legend(loc="lower left", fontsize=8, ncols=4)
    ax.grid(alpha=0.3)
    return fig


def charts(data: ReportData) -> dict[str, Figure]:
    """One figure per chart view, keyed by the file name it is saved under."""
    lang = data.lang
    alerts = [_local(r["time"]) for r in data.records("annotations")]
    figures = {}
    if data.views["by_unit"].rows:
        figures["adoption_by_unit"] = _bars(data.records("by_unit"), "unit_name", t("overview.by_unit", lang), lang)
    if data.views["by_sector"].rows:
        figures["adoption_by_sector"] = _bars(
            data.records("by_sector"), "sector_name", t("overview.by_sector", lang), lang
        )
    if data.views["heatmap"].rows:
        figures["sector_by_unit"] = _heatmap(data.records("heatmap"), t("overview.heatmap", lang), lang)
    for view, columns, percent in (
        ("adoption", ["adoption_7d", "adoption_28d", "issuing_share"], True),
        ("invoices", ["invoices", "baseline_invoices"], False),
        ("non_cash", ["non_cash_share"], True),
    ):
        if data.views[view].rows:
            figures[f"trend_{view}"] = _series(
                data.records(view), columns, t(f"trends.{view}", lang), lang, alerts, percent
            )
    return figures


def default_path(reports: Path, data: ReportData, output_format: str) -> Path:
    """Where a report goes unless told: ``<reports>/adoption-<first>-<last>-<lang>`` (.html, or a directory)."""
    name = f"adoption-{data.first_day}-{data.last_day}-{data.lang}"
    return reports / (f"{name}.html" if output_format == "html" else name)


def write_html(data: ReportData, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path


def write_png(data: ReportData, out_dir: Path, dpi: int = 130) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in charts(data).items():
        path = out_dir / f"{name}.png"
        figure.savefig(path, dpi=dpi)
        plt.close(figure)
        paths.append(path)
    return paths


def _format(name: str, value: Any, lang: str) -> str:
    if value is None:
        return NO_COMPARISON if name in COMPARISONS else ""
    if isinstance(value, float) and name in {"adoption_rate", "adoption_change", "gap", "non_cash_share",
                                               "invoices_change", "issuing_share", "baseline_share"}:  # fmt: skip
        return f"{value:+.1%}" if name in ("adoption_change", "invoices_change") else f"{value:.1%}"
    if isinstance(value, int | float):
        return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.1f}"
    if isinstance(value, dt.datetime):
        return _local(value).strftime("%d/%m/%Y %H:%M")
    if isinstance(value, dt.date):
        return value.strftime("%d/%m/%Y")
    return str(value)


def _table(result: PanelResult, lang: str, columns: list[str] | None = None, limit: int = 50) -> str:
    columns = columns or result.columns
    if not result.rows:
        return f"<p class='none'>{html.escape(t('report.none', lang))}</p>"
    head = "".join(f"<th>{html.escape(column(c, lang))}</th>" for c in columns)
    body = []
    for record in result.records()[:limit]:
        cells = "".join(
            f"<td class='{'num' if isinstance(record[c], int | float) else ''}'>"
            f"{html.escape(_format(c, record[c], lang))}</td>"
            for c in columns
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _no_comparison_note(result: PanelResult, lang: str) -> str:
    """What "—" means, under a table that shows one."""
    shown = any(record[c] is None for record in result.records() for c in COMPARISONS if c in record)
    return f"<p class='none'>{html.escape(t('report.no_comparison', lang))}</p>" if shown else ""


STYLE = """
body{font-family:"DejaVu Sans",Arial,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9rem} img{max-width:100%;border:1px solid #eee;margin:.5rem 0}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0} th,td{padding:.25rem .6rem;border-bottom:1px solid #eee}
th{background:#f5f5f5;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.none{color:#888;font-style:italic}
"""


def render_html(data: ReportData) -> str:
    """One page, images inlined (base64): it can be mailed or archived as a single file."""
    lang = data.lang
    images = {}
    for name, figure in charts(data).items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
        images[name] = base64.b64encode(buffer.getvalue()).decode()

    def image(name: str) -> str:
        return f"<img alt='{name}' src='data:image/png;base64,{images[name]}'>" if name in images else ""

    scope = f"{column('sector', lang)}: {data.sector} · {column('unit', lang)}: {data.unit}"
    generated = dt.datetime.now(LOCAL_TZ).strftime("%d/%m/%Y %H:%M")
    sections = [
        f"<h1>{html.escape(t('report.title', lang))}</h1>",
        f"<p class='meta'>{html.escape(t('report.period', lang))}: {data.first_day:%d/%m/%Y} – "
        f"{data.last_day:%d/%m/%Y} · {html.escape(scope)} · {html.escape(t('report.generated', lang))} {generated}</p>",
        f"<h2>{html.escape(t('overview.totals', lang))}</h2>",
        _table(data.views["totals"], lang),
        _no_comparison_note(data.views["totals"], lang),
        f"<h2>{html.escape(t('overview.by_unit', lang))}</h2>",
        image("adoption_by_unit"),
        f"<h2>{html.escape(t('overview.by_sector', lang))}</h2>",
        image("adoption_by_sector"),
        f"<h2>{html.escape(t('overview.heatmap', lang))}</h2>",
        image("sector_by_unit"),
        f"<h2>{html.escape(t('overview.below_target', lang))}</h2>",
        _table(data.views["below_target"], lang),
        f"<h2>{html.escape(t('board.trends', lang))}</h2>",
        image("trend_adoption"),
        image("trend_invoices"),
        image("trend_non_cash"),
        f"<h2>{html.escape(t('alerts.recent', lang))}</h2>",
        _table(data.views["recent"], lang, ["day", "type", "rule", "severity", "sector", "unit", "suppressed_by"]),
        f"<h2>{html.escape(t('drilldown.dormant', lang))}</h2>",
        _table(data.views["dormant"], lang),
    ]
    return (
        f"<!DOCTYPE html><html lang='{lang}'><head><meta charset='utf-8'>"
        f"<title>{html.escape(t('report.title', lang))}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>"
    )
