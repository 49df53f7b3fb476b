"""From one complete day's figures to observations, rule by rule (pure functions of the data)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Protocol

from alerts.lapses import LapseCounts
from alerts.lifecycle import PROVINCE, Observation
from alerts.rules import AdoptionDrop, AdoptionSlide, Rules, VolumeDrop
from alerts.statistics import fisher_greater, wilson_upper
from analytics.adoption import SegmentDay


class SellerVolumes(Protocol):
    """Per-seller invoices of one segment, for telling a segment's fall from one or two sellers' (a one-method seam)."""

    def invoices_by_seller(
        self, sector: str, unit: str, days: Sequence[dt.date]
    ) -> Mapping[str, Mapping[dt.date, int]]: ...


# the segment rules whose baseline stays the one they fired against while they fire
FROZEN_BASELINE_RULES = frozenset({"adoption_drop", "adoption_slide", "volume_drop"})


def _same_weekday_baseline(
    by_day: dict[dt.date, SegmentDay], day: dt.date, weeks: int, rules: Rules, data_start: dt.date
) -> list[SegmentDay]:
    days = [day - dt.timedelta(weeks=w) for w in range(1, weeks + 1)]
    return [by_day[d] for d in days if d in by_day and d >= data_start and not rules.evaluation.is_holiday(d)]


def _baseline_share(base: list[SegmentDay]) -> float:
    return sum(b.active_1d / b.eligible for b in base if b.eligible) / len(base)


def _baseline_invoices(base: list[SegmentDay]) -> float:
    return sum(b.invoices for b in base) / len(base)


def _weekday_baselines(
    by_day: dict[dt.date, SegmentDay], day: dt.date, weeks: int, rules: Rules, data_start: dt.date,
    measure: Callable[[list[SegmentDay]], float],
) -> dict[str, float]:  # fmt: skip
    """The baseline of each weekday (``"0"`` Monday … ``"6"``) as its last day up to ``day`` was judged against:
    what a firing alert keeps. A weekday with too little history has none (the live baseline is used for it).
    """
    out = {}
    for back in range(7):
        d = day - dt.timedelta(days=back)
        base = _same_weekday_baseline(by_day, d, weeks, rules, data_start)
        if len(base) * 2 >= weeks:
            out[str(d.weekday())] = round(measure(base), 4)
    return out


def _carried_baselines(
    frozen: dict[str, float] | None, active: bool, by_day: dict[dt.date, SegmentDay], day: dt.date, weeks: int,
    rules: Rules, data_start: dt.date, measure: Callable[[list[SegmentDay]], float],
) -> dict[str, float]:  # fmt: skip
    """The weekday baselines an observation carries: a firing alert's frozen ones, today's if it is active
    (what it will be judged against if it fires), else none."""
    if frozen is not None:
        return frozen
    return _weekday_baselines(by_day, day, weeks, rules, data_start, measure) if active else {}


def _judged_baseline(
    live: float, day: dt.date, frozen: Mapping[str, Any] | None
) -> tuple[float, dict[str, float] | None]:
    """(the baseline to judge ``day`` against, the frozen weekday baselines to carry): a firing alert's, else live.

    Once a segment rule fires, its baseline stays the one it fired against until it resolves: a
    drop that lasts would otherwise become its own baseline within ``baseline_weeks`` and "resolve"
    while it lasts. It resolves when the segment is back near what it was.
    """
    baselines = (frozen or {}).get("baselines")
    if isinstance(baselines, Mapping) and str(day.weekday()) in baselines:
        return float(baselines[str(day.weekday())]), dict(baselines)
    return live, None


def _series(rows: Iterable[SegmentDay]) -> dict[tuple[str, str], dict[dt.date, SegmentDay]]:
    series: dict[tuple[str, str], dict[dt.date, SegmentDay]] = defaultdict(dict)
    for row in rows:
        series[(row.sector, row.unit)][row.day] = row
    return series


def segment_baselines(
    rows: Iterable[SegmentDay], day: dt.date, rules: Rules, data_start: dt.date = dt.date.min,
    firing: Mapping[tuple[str, str, str], Mapping[str, Any]] | None = None,
) -> dict[tuple[str, str], tuple[float | None, float | None]]:  # fmt: skip
    """(baseline issuing share, baseline invoices) per segment on ``day``, as the rules see them.

    None where the history is too short to judge; the boards show these next to the day's figures.
    While adoption_drop or volume_drop fires on a segment (``firing``), its baseline is the frozen one
    the alert is judged against, not the live same-weekday mean that follows the drop down.
    """
    firing = firing or {}
    baselines = {}
    for (sector, unit), by_day in _series(rows).items():
        if day not in by_day:
            continue
        adoption = rules.for_sector("adoption_drop", sector)
        volume = rules.for_sector("volume_drop", sector)
        share_base = _same_weekday_baseline(by_day, day, adoption.baseline_weeks, rules, data_start)
        volume_base = _same_weekday_baseline(by_day, day, volume.baseline_weeks, rules, data_start)
        share = _baseline_share(share_base) if len(share_base) * 2 >= adoption.baseline_weeks else None
        invoices = _baseline_invoices(volume_base) if len(volume_base) * 2 >= volume.baseline_weeks else None
        share_frozen, invoices_frozen = (
            firing.get(("adoption_drop", sector, unit)),
            firing.get(("volume_drop", sector, unit)),
        )
        baselines[(sector, unit)] = (_shown_baseline(share, day, share_frozen),
                                     _shown_baseline(invoices, day, invoices_frozen))  # fmt: skip
    return baselines


def _shown_baseline(live: float | None, day: dt.date, frozen: Mapping[str, Any] | None) -> float | None:
    """What a board shows as the baseline: a firing alert's frozen one for the weekday, else the live one."""
    if frozen is not None:
        judged, carried = _judged_baseline(live or 0.0, day, frozen)
        if carried is not None:
            return judged
    return live


def segment_observations(
    rows: Iterable[SegmentDay], day: dt.date, rules: Rules, data_start: dt.date = dt.date.min,
    firing: Mapping[tuple[str, str, str], Mapping[str, Any]] | None = None, sellers: SellerVolumes | None = None,
    lapses: Mapping[dt.date, LapseCounts] | None = None,
) -> list[Observation]:  # fmt: skip
    """adoption_drop, adoption_slide and volume_drop for every segment and roll-up with figures on ``day``.

    Days before ``data_start`` (the first day with invoices) are no baseline: nobody issued
    then only because nothing was ingested yet. ``firing``: the values of the firing segment
    alerts by (rule, sector, unit), whose baseline stays the one they fired against. ``sellers``:
    the per-seller invoices a volume fall is checked against (who carries it); None skips the check.
    ``lapses``: the lapsed and active businesses per segment on the day and the same weekdays before,
    judged by the sellers' own habits (alerts.lapses); None counts them from the segment figures.
    """
    firing = firing or {}
    observations = []
    series = _series(rows)
    sectors_of: dict[str, list[str]] = defaultdict(list)
    for sector, unit in series:
        if PROVINCE not in (sector, unit):
            sectors_of[unit].append(sector)
    judged_cache: dict[tuple[str, str], dict[dt.date, _JudgedDay]] = {}

    def judged_volume(sector: str, unit: str) -> dict[dt.date, _JudgedDay]:
        """A segment's judged days for volume_drop, by day and in order: its own, and the reference of the
        unit's other sectors (computed once a call)."""
        if (sector, unit) not in judged_cache:
            rule = rules.for_sector("volume_drop", sector)
            judged = _judged_days(series[(sector, unit)], day, rule, rules, data_start)
            judged_cache[(sector, unit)] = {j.day: j for j in judged}
        return judged_cache[(sector, unit)]

    for (sector, unit), by_day in sorted(series.items()):
        today = by_day.get(day)
        if today is None:
            continue
        labels = {"sector": sector, "unit": unit}
        adoption = rules.for_sector("adoption_drop", sector)
        if adoption.enabled:
            frozen_drop = firing.get(("adoption_drop", sector, unit))
            observation = _drop_observation(by_day, day, adoption, rules, data_start, labels, frozen_drop)
            if observation is not None:
                observations.append(observation)
        slide = rules.for_sector("adoption_slide", sector)
        if slide.enabled:
            frozen_slide = firing.get(("adoption_slide", sector, unit))
            observation = _slide(by_day, day, slide, rules, data_start, labels, frozen_slide, lapses)
            if observation is not None:
                observations.append(observation)
        volume = rules.for_sector("volume_drop", sector)
        if volume.enabled:
            frozen_volume = firing.get(("volume_drop", sector, unit))
            others = (
                [judged_volume(s, unit) for s in sectors_of[unit] if s != sector]
                if PROVINCE not in (sector, unit) else []
            )  # fmt: skip
            judged = list(judged_volume(sector, unit).values())
            observation = _volume_observation(
                by_day, day, volume, rules, data_start, labels, judged, frozen_volume, sellers, others
            )
            if observation is not None:
                observations.append(observation)
    return _broad_rollups(observations, rules)


def _drop_observation(
    by_day: dict[dt.date, SegmentDay], day: dt.date, rule: AdoptionDrop, rules: Rules, data_start: dt.date,
    labels: dict[str, str], frozen: Mapping[str, Any] | None = None,
) -> Observation | None:  # fmt: skip
    """adoption_drop: the day's issuing share against the same weekday's, on the day alone or with the day before.

    The day is ``min_drop`` below its baseline and, on its own or together with the judged day
    before it (both ``min_drop`` down), the upper end of the Wilson interval is still below the
    baseline: in a segment of two dozen businesses one day cannot tell a drop from lumpy days, two
    days can. Firing, the baseline stays the one it fired against.
    """
    today = by_day[day]
    base = _same_weekday_baseline(by_day, day, rule.baseline_weeks, rules, data_start)
    if len(base) * 2 < rule.baseline_weeks:  # too little history to judge
        return None
    baseline, frozen_baselines = _judged_baseline(_baseline_share(base), day, frozen)
    share = today.active_1d / today.eligible if today.eligible else 0.0
    upper = wilson_upper(today.active_1d, today.eligible, rule.confidence)
    down = today.eligible >= rule.min_eligible and baseline - share >= rule.min_drop
    active = down and upper < baseline
    values: dict[str, Any] = {
        "issuing_share": round(share, 4), "baseline_share": round(baseline, 4), "upper_bound": round(upper, 4),
        "eligible": today.eligible, "active_today": today.active_1d, "adoption_7d": round(today.adoption_7d, 4),
        "active_7d": today.active_7d, "baseline_frozen": frozen_baselines is not None, "window_days": 1,
    }  # fmt: skip
    before = _judged_day_before(by_day, day, rules, data_start)
    if down and not active and before is not None:
        prev_base = _same_weekday_baseline(by_day, before.day, rule.baseline_weeks, rules, data_start)
        if len(prev_base) * 2 >= rule.baseline_weeks:
            prev_baseline, _ = _judged_baseline(_baseline_share(prev_base), before.day, frozen)
            prev_share = before.active_1d / before.eligible if before.eligible else 0.0
            issued, eligible = today.active_1d + before.active_1d, today.eligible + before.eligible
            pair_baseline = (baseline + prev_baseline) / 2
            pair_upper = wilson_upper(issued, eligible, rule.confidence)
            active = prev_baseline - prev_share >= rule.min_drop and pair_upper < pair_baseline
            if active:
                values.update(window_days=2, upper_bound=round(pair_upper, 4))
    values["baselines"] = _carried_baselines(
        frozen_baselines, active, by_day, day, rule.baseline_weeks, rules, data_start, _baseline_share
    )
    return Observation("adoption_drop", labels, active, rule.severity, rule.for_, rule.clear_for, values)


def _judged_day_before(
    by_day: dict[dt.date, SegmentDay], day: dt.date, rules: Rules, data_start: dt.date
) -> SegmentDay | None:
    """The last day before ``day`` that is judged (not a holiday), if the segment has figures for it."""
    d = day - dt.timedelta(days=1)
    while d >= data_start and rules.evaluation.is_holiday(d):
        d -= dt.timedelta(days=1)
    return by_day.get(d) if d >= data_start else None


def _log_ratio(invoices: float, baseline: float) -> float:
    return math.log((invoices + 1) / (baseline + 1))


@dataclass(frozen=True)
class _JudgedDay:
    day: dt.date
    invoices: int
    baseline: float
    baseline_days: tuple[dt.date, ...]


def _judged_days(
    by_day: dict[dt.date, SegmentDay], day: dt.date, rule: VolumeDrop, rules: Rules, data_start: dt.date
) -> list[_JudgedDay]:
    """The segment's days up to ``day`` that have a baseline, each with it: no holiday, none before the data."""
    out = []
    for back in range(rule.spread_days + rule.window_days, -1, -1):
        d = day - dt.timedelta(days=back)
        if d < data_start or d not in by_day or rules.evaluation.is_holiday(d):
            continue
        base = _same_weekday_baseline(by_day, d, rule.baseline_weeks, rules, data_start)
        if len(base) * 2 >= rule.baseline_weeks:
            out.append(_JudgedDay(d, by_day[d].invoices, _baseline_invoices(base), tuple(b.day for b in base)))
    return out


def _window_ratio(days: Sequence[_JudgedDay]) -> float:
    return _log_ratio(sum(j.invoices for j in days), sum(j.baseline for j in days))


def _unit_shift(days: Sequence[_JudgedDay], others: Sequence[Mapping[dt.date, _JudgedDay]], rule: VolumeDrop) -> float:
    """How the unit's other sectors moved over the same days: the median of their log ratios (0 with fewer
    than ``min_reference_sectors`` of ``min_baseline_invoices`` / 10 a day or more).

    A storm or a market day moves every sector of a unit; one sector's own fall (or another
    segment's real drop) does not move the median.
    """
    ratios = []
    for other in others:
        window = [other.get(j.day) for j in days]
        if all(w is not None for w in window):
            judged = [w for w in window if w is not None]
            if sum(w.baseline for w in judged) >= rule.min_baseline_invoices / 10 * len(judged):
                ratios.append(_window_ratio(judged))
    return statistics.median(ratios) if len(ratios) >= rule.min_reference_sectors else 0.0


def _window_test(
    judged: list[_JudgedDay], size: int, rule: VolumeDrop, others: Sequence[Mapping[dt.date, _JudgedDay]] = ()
) -> tuple[float, float] | None:
    """(ratio, p-value) of the last ``size`` judged days together, against the segment's own spread.

    The spread is the root mean square of the log ratios of the windows of that size over the
    ``spread_days`` before: a segment carried by a few lumpy sellers strays far on ordinary days, one
    of hundreds of steady sellers hardly at all, and a window of days strays less than one day. A
    Poisson test on the total knows neither. None when too few earlier windows can be judged.
    """
    if len(judged) < size:
        return None

    def relative(days: Sequence[_JudgedDay]) -> float:
        return _window_ratio(days) - _unit_shift(days, others, rule)

    window = judged[-size:]
    earlier = [relative(judged[i - size + 1 : i + 1]) for i in range(size - 1, len(judged) - 1)]
    earlier = earlier[-rule.spread_days :]
    if len(earlier) * 2 < rule.spread_days:
        return None
    baseline = sum(j.baseline for j in window)
    spread = max(math.sqrt(sum(r * r for r in earlier) / len(earlier)), 1 / math.sqrt(baseline + 1))
    ratio = relative(window)
    return math.exp(ratio), NormalDist().cdf(ratio / spread)


def _others_fall(
    sellers: SellerVolumes, sector: str, unit: str, window: Sequence[_JudgedDay], carriers: int
) -> tuple[float | None, list[dict[str, object]]]:
    """How far the segment fell over ``window`` without its ``carriers`` biggest fallers (None: nobody else
    issues there), and those.

    A fall that one or two lumpy sellers carry leaves the rest of the segment where it was: their
    story (dormant_issuer names a seller that stopped), not the segment's. A broad fall shows in
    the rest too.
    """
    days = sorted({j.day for j in window} | {d for j in window for d in j.baseline_days})
    volumes = sellers.invoices_by_seller(sector, unit, days)
    usual = {
        seller: sum(sum(v.get(d, 0) for d in j.baseline_days) / len(j.baseline_days) for j in window)
        for seller, v in volumes.items()
    }  # fmt: skip
    now = {seller: sum(v.get(j.day, 0) for j in window) for seller, v in volumes.items()}
    falls = sorted(((usual[seller] - now[seller], seller) for seller in volumes), reverse=True)
    rest = [seller for _, seller in falls[carriers:]]
    rest_usual = sum(usual[seller] for seller in rest)
    rest_now = sum(now[seller] for seller in rest)
    top = [{"seller_id": seller, "fall": round(fall, 1)} for fall, seller in falls[:carriers] if fall > 0]
    return (round(1 - rest_now / rest_usual, 4) if rest_usual > 0 else None), top


def _week_ratio(
    by_day: dict[dt.date, SegmentDay], day: dt.date, baselines: Mapping[str, float], rules: Rules
) -> float | None:
    """The invoices of the week up to ``day`` over the frozen baselines of those weekdays (holidays left out).

    A firing volume alert asks the whole week, not the day: one busy day (a pre-holiday Saturday)
    in a segment still at half its volume is no recovery.
    """
    week = [day - dt.timedelta(days=i) for i in range(7)]
    counted = [d for d in week if d in by_day and str(d.weekday()) in baselines and not rules.evaluation.is_holiday(d)]
    usual = sum(float(baselines[str(d.weekday())]) for d in counted)
    return round(sum(by_day[d].invoices for d in counted) / usual, 4) if usual > 0 else None


def _volume_observation(
    by_day: dict[dt.date, SegmentDay], day: dt.date, rule: VolumeDrop, rules: Rules, data_start: dt.date,
    labels: dict[str, str], judged: list[_JudgedDay], frozen: Mapping[str, Any] | None = None,
    sellers: SellerVolumes | None = None,
    others: Sequence[Mapping[dt.date, _JudgedDay]] = (),
) -> Observation | None:  # fmt: skip
    """volume_drop: the day's invoices against the same weekdays before, judged by the segment's own spread.

    Fires when the last two, or up to ``window_days``, judged days together are
    ``min_drop_ratio`` below their baselines and that far out for this segment (the log ratio beyond
    the ``p_value`` quantile of a normal with the segment's own spread for windows of that size,
    never less than Poisson's), each ratio less the median of the unit's ``others`` over the same
    days (a storm moves them all), and the segment without its ``max_carriers`` biggest fallers still
    fell by ``others_drop_share`` of ``min_drop_ratio``. Once firing, the weekday baselines stay
    those it fired against and it resolves when a week is back at ``recovered_share`` of them.
    ``judged``: the segment's judged days up to ``day`` (``_judged_days``).
    """
    if not judged or judged[-1].day != day:
        return None
    today = by_day[day]
    baseline, frozen_baselines = _judged_baseline(judged[-1].baseline, day, frozen)
    values: dict[str, Any] = {
        "invoices": today.invoices, "baseline_invoices": round(baseline, 1), "revenue_vnd": today.revenue_vnd,
        "baseline_frozen": frozen_baselines is not None,
    }  # fmt: skip
    if frozen_baselines is not None:  # firing: resolved only when its last week is back near what it was
        values["week_ratio"] = week = _week_ratio(by_day, day, frozen_baselines, rules)
        active = week is None or week < rule.recovered_share
    else:
        active = False
        for size in range(2, rule.window_days + 1):  # one day alone is too lumpy to judge a segment by
            tested = _window_test(judged, size, rule, others)
            if tested is None:
                continue
            ratio, p_value = tested
            values.update(window_days=size, window_ratio=round(ratio, 4), p_value=p_value)
            active = (
                judged[-1].baseline >= rule.min_baseline_invoices
                and ratio <= 1 - rule.min_drop_ratio
                and p_value < rule.p_value
            )
            if active:
                break
        sector, unit = labels["sector"], labels["unit"]
        if active and sellers is not None and PROVINCE not in (sector, unit):
            window = judged[-int(values["window_days"]) :]
            values["others_drop"], values["biggest_fallers"] = _others_fall(
                sellers, sector, unit, window, rule.max_carriers
            )
            active = values["others_drop"] is not None and values["others_drop"] >= (
                rule.min_drop_ratio * rule.others_drop_share
            )
    values["baselines"] = _carried_baselines(
        frozen_baselines, active, by_day, day, rule.baseline_weeks, rules, data_start, _baseline_invoices
    )
    return Observation("volume_drop", labels, active, rule.severity, rule.for_, rule.clear_for, values)


def _lapse_sample(
    by_day: dict[dt.date, SegmentDay], day: dt.date, rules: Rules, data_start: dt.date
) -> SegmentDay | None:
    """The day's figures if its lapses can be counted: 28 days of data behind it and no holiday in its week.

    A business *lapsed* on a day when it issued in the 28 days up to it but not in the last 7
    (``active_28d - active_7d``). A holiday week would count the closed shops as lapsed.
    """
    row = by_day.get(day)
    if row is None or day - dt.timedelta(days=27) < data_start:
        return None
    if any(rules.evaluation.is_holiday(day - dt.timedelta(days=i)) for i in range(7)):
        return None
    return row


def _lapses(
    by_day: dict[dt.date, SegmentDay], day: dt.date, key: tuple[str, str], rules: Rules, data_start: dt.date,
    lapses: Mapping[dt.date, LapseCounts] | None,
) -> tuple[SegmentDay, int, int] | None:  # fmt: skip
    """(the day's figures, lapsed, active businesses), or None when the day's lapses cannot be counted.

    From the sellers' own habits when ``lapses`` has the day (alerts.lapses), else from the segment
    figures: issued in the 28 days up to the day but not in the last 7, which needs no holiday in
    that week (it would count the closed shops as lapsed).
    """
    if lapses is None:
        row = _lapse_sample(by_day, day, rules, data_start)
        return None if row is None else (row, row.active_28d - row.active_7d, row.active_28d)
    row = by_day.get(day)
    known = day - dt.timedelta(days=rules.dormant_issuer.min_history_days) >= data_start  # the sellers' habits
    if row is None or not known or rules.evaluation.is_holiday(day) or day not in lapses:
        return None
    lapsed, active = lapses[day].get(key, (0, 0))
    return row, lapsed, active


def _slide(
    by_day: dict[dt.date, SegmentDay], day: dt.date, rule: AdoptionSlide, rules: Rules, data_start: dt.date,
    labels: dict[str, str], frozen: Mapping[str, Any] | None, lapses: Mapping[dt.date, LapseCounts] | None,
) -> Observation | None:  # fmt: skip
    """adoption_slide by two counts of the lapsed, the first that fires: by the sellers' own habits (fast:
    a regular seller that stopped counts after three days) and by a week without an invoice (steady:
    a slow seller that stopped counts after seven days whatever its habits, and the baseline weeks do
    not yet hold the slide's own first step). A firing alert keeps the count it fired by.
    """
    fired_by = (frozen or {}).get("lapse_by")
    seen = []
    if lapses is not None and fired_by in (None, "own_habits"):
        seen.append(_slide_observation(by_day, day, rule, rules, data_start, labels, frozen, lapses))
    if fired_by in (None, "seven_days"):
        seen.append(_slide_observation(by_day, day, rule, rules, data_start, labels, frozen, None))
    judged = [o for o in seen if o is not None]
    return next((o for o in judged if o.active), judged[0] if judged else None)


def _slide_observation(
    by_day: dict[dt.date, SegmentDay], day: dt.date, rule: AdoptionSlide, rules: Rules, data_start: dt.date,
    labels: dict[str, str], frozen: Mapping[str, Any] | None = None,
    lapses: Mapping[dt.date, LapseCounts] | None = None,
) -> Observation | None:  # fmt: skip
    """adoption_slide: the day's lapsed share against the same share one to ``baseline_weeks`` weeks ago.

    A business that stopped stays lapsed, so the first step of a slide stands out against weeks in
    which nobody lapsed, where the daily rule's same-weekday baseline has already followed it down.
    Judged by the sellers' own habits (``lapses``), a regular seller that stopped is lapsed after
    three silent days, not seven. Once firing, the baseline stays the one it fired against
    (``frozen``): a slide that goes on would otherwise become its own baseline within a month and
    "resolve" while it continues. Needs fewer businesses issuing (active, not lapsed) than in the
    baseline weeks too, so new adopters outnumbering the lapsed are no alert.
    """
    key = (labels["sector"], labels["unit"])
    counted = _lapses(by_day, day, key, rules, data_start, lapses)
    if counted is None:
        return None
    today, lapsed, active_28d = counted
    if frozen is not None and "usual_active" in frozen:
        usual_lapsed, usual_active = int(frozen["usual_lapsed"]), int(frozen["usual_active"])
        usual_issuing = frozen.get("usual_issuing")
    else:
        before = [
            sample for weeks in range(1, rule.baseline_weeks + 1)
            if (sample := _lapses(by_day, day - dt.timedelta(weeks=weeks), key, rules, data_start, lapses)) is not None
        ]  # fmt: skip
        if len(before) * 2 < rule.baseline_weeks:  # too little history to know the usual lapses
            return None
        usual_lapsed = sum(b[1] for b in before)
        usual_active = sum(b[2] for b in before)
        usual_issuing = round((usual_active - usual_lapsed) / len(before), 2)
    share = lapsed / active_28d if active_28d else 0.0
    usual = usual_lapsed / usual_active if usual_active else 0.0
    p_value = fisher_greater(lapsed, active_28d, usual_lapsed, usual_active)
    issuing = active_28d - lapsed  # active and not lapsed: fewer than usual, or new adopters made up for it
    active = (
        active_28d >= rule.min_active
        and lapsed >= rule.min_lapsed
        and share - usual >= rule.min_rise
        and p_value < rule.p_value
        and usual_issuing is not None
        and issuing < usual_issuing
    )
    values = {
        "lapsed": lapsed, "active_28d": active_28d, "lapsed_share": round(share, 4),
        "usual_lapsed_share": round(usual, 4), "p_value": p_value, "eligible": today.eligible,
        "active_7d": today.active_7d, "adoption_7d": round(today.adoption_7d, 4), "issuing": issuing,
        "usual_issuing": usual_issuing, "usual_lapsed": usual_lapsed, "usual_active": usual_active,
        "baseline_frozen": frozen is not None, "lapse_by": "own_habits" if lapses is not None else "seven_days",
    }  # fmt: skip
    return Observation("adoption_slide", labels, active, rule.severity, rule.for_, rule.clear_for, values)


def _broad_rollups(observations: list[Observation], rules: Rules) -> list[Observation]:
    """A roll-up ('*' sector or unit) stays active only when enough of its segments are active."""
    active_leaves: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for obs in observations:
        if obs.active and PROVINCE not in (obs.labels["sector"], obs.labels["unit"]):
            active_leaves[obs.rule].append((obs.labels["sector"], obs.labels["unit"]))
    out = []
    for obs in observations:
        sector, unit = obs.labels["sector"], obs.labels["unit"]
        if obs.active and PROVINCE in (sector, unit):
            needed = getattr(rules, obs.rule).rollup_min_segments
            under = [
                leaf for leaf in active_leaves[obs.rule]
                if sector in (PROVINCE, leaf[0]) and unit in (PROVINCE, leaf[1])
            ]  # fmt: skip
            if len(under) < needed:
                obs = dataclasses.replace(obs, active=False, values={**obs.values, "narrow": len(under)})
        out.append(obs)
    return out


def silence_observations(hourly: dict[str, dict[dt.datetime, int]], day: dt.date, rules: Rules) -> list[Observation]:
    """pipeline_silence per unit and for the province ('*'): runs of silent hours on ``day``.

    An hour is expected to carry the mean of the same hour over the ``baseline_days`` before, scaled
    by how the day's hours that did carry invoices compare with theirs: a storm that halves a unit's
    trade halves what its silent hours were expected to carry, an outage leaves the other hours as
    they were.
    """
    rule = rules.pipeline_silence
    if not rule.enabled:
        return []
    observations = []
    for unit, counts in sorted(hourly.items()):
        at = [dt.datetime.combine(day, dt.time(hour)) for hour in range(24)]
        expected = [
            sum(counts.get(a - dt.timedelta(days=k), 0) for k in range(1, rule.baseline_days + 1)) / rule.baseline_days
            for a in at
        ]  # fmt: skip
        carried = [h for h in range(24) if counts.get(at[h], 0) > 0]
        usual = sum(expected[h] for h in carried)
        level = min(1.0, sum(counts[at[h]] for h in carried) / usual) if usual > 0 else 1.0
        run = longest = 0
        silent_hours: list[int] = []
        for hour in range(24):
            if counts.get(at[hour], 0) == 0 and expected[hour] * level >= rule.min_expected_per_hour:
                run += 1
                silent_hours.append(hour)
                longest = max(longest, run)
            else:
                run = 0
        active = longest >= rule.min_silent_hours
        values = {"longest_silent_hours": longest, "silent_hours": silent_hours, "day_level": round(level, 3)}
        observations.append(
            Observation("pipeline_silence", {"unit": unit}, active, rule.severity, rule.for_, rule.clear_for, values)
        )
    return observations


def hold_segments(observations: list[Observation], silences: list[Observation]) -> list[Observation]:
    """Segment and dormant rules hold back where the pipeline was silent: an outage is no drop."""
    silent_units = {o.labels["unit"] for o in silences if o.active}
    if not silent_units:
        return observations
    held = []
    for obs in observations:
        unit = obs.labels.get("unit", "")
        hold = PROVINCE in silent_units or unit in silent_units or (unit == PROVINCE and bool(silent_units))
        held.append(dataclasses.replace(obs, held=True) if hold else obs)
    return held
