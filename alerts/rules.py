"""Alert rules from one YAML file, with per-sector overrides; validated when loaded."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from analytics.public_holidays import DateRange, is_holiday

DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")


@dataclass(frozen=True)
class Evaluation:
    interval_s: float = 30.0
    allowed_lateness_hours: float = 48.0
    max_consumer_lag: int = 50_000
    level: str = "district"
    max_days_per_run: int = 62
    repeat_interval_hours: float = 24.0
    extra_holidays: tuple[DateRange, ...] = ()  # on top of the public holidays (analytics.public_holidays)

    def is_holiday(self, day: dt.date) -> bool:
        """A day neither evaluated nor used as a baseline: a public holiday, an official day off or an extra day."""
        return is_holiday(day, self.extra_holidays)


@dataclass(frozen=True)
class Rule:
    """What every rule has: on or off, how loud, and how many evaluations (days; seconds for the lag)
    its condition must hold before it fires (``for``) and be gone before it resolves (``clear_for``)."""

    enabled: bool = True
    severity: str = "warning"
    for_: float = 2
    clear_for: float = 2
    repeat_interval_hours: float | None = None  # reminders while firing; None: evaluation.repeat_interval_hours


@dataclass(frozen=True)
class AdoptionDrop(Rule):
    severity: str = "critical"
    baseline_weeks: int = 4
    min_drop: float = 0.10
    min_eligible: int = 15
    confidence: float = 0.99
    rollup_min_segments: int = 3


@dataclass(frozen=True)
class AdoptionSlide(Rule):
    """A gradual decline: more of a segment's businesses stopped issuing this week than usually do."""

    baseline_weeks: int = 4
    min_active: int = 20
    min_lapsed: int = 3
    min_rise: float = 0.05
    p_value: float = 0.005
    lapse_silent_days: int = 3
    lapse_chance: float = 0.01
    rollup_min_segments: int = 3


@dataclass(frozen=True)
class VolumeDrop(Rule):
    for_: float = 1
    baseline_weeks: int = 4
    min_drop_ratio: float = 0.40
    min_baseline_invoices: int = 150
    p_value: float = 0.001
    window_days: int = 3
    spread_days: int = 28
    max_carriers: int = 2
    others_drop_share: float = 0.5
    recovered_share: float = 0.9
    min_reference_sectors: int = 3
    rollup_min_segments: int = 3


@dataclass(frozen=True)
class DormantIssuer(Rule):
    lookback_days: int = 56
    min_history_days: int = 14
    min_active_share: float = 0.5
    silent_days: int = 2
    max_chance: float = 0.0001
    min_daily_invoices: float = 5.0
    for_: float = 1
    clear_for: float = 1
    repeat_interval_hours: float | None = 168.0  # a stopped seller stays named for weeks: a weekly reminder


@dataclass(frozen=True)
class PipelineSilence(Rule):
    severity: str = "critical"
    baseline_days: int = 7
    min_silent_hours: int = 2
    min_expected_per_hour: float = 5.0
    for_: float = 1
    clear_for: float = 1


@dataclass(frozen=True)
class PipelineLag(Rule):
    """Consumer lag judged by its burn-down: over the limit and not clearing in time (seconds, not days)."""

    severity: str = "critical"
    clear_within_s: float = 900.0
    rate_window_s: float = 120.0
    for_: float = 120.0
    clear_for: float = 60.0


@dataclass(frozen=True)
class Rules:
    evaluation: Evaluation = Evaluation()
    adoption_drop: AdoptionDrop = AdoptionDrop()
    adoption_slide: AdoptionSlide = AdoptionSlide()
    volume_drop: VolumeDrop = VolumeDrop()
    dormant_issuer: DormantIssuer = DormantIssuer()
    pipeline_silence: PipelineSilence = PipelineSilence()
    pipeline_lag: PipelineLag = PipelineLag()
    sector_overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def repeat_by_rule(self) -> dict[str, float]:
        """Seconds between reminders of the rules that set their own ``repeat_interval_hours``."""
        rules = {name: getattr(self, name) for name in SECTIONS}
        return {name: r.repeat_interval_hours * 3600 for name, r in rules.items() if r.repeat_interval_hours}

    def for_sector(self, rule: str, sector: str) -> Any:
        """The rule's parameters with the sector's overrides applied."""
        base = getattr(self, rule)
        override = self.sector_overrides.get(rule, {}).get(sector)
        return dataclasses.replace(base, **override) if override else base


SECTIONS: dict[str, type[Rule]] = {
    "adoption_drop": AdoptionDrop, "adoption_slide": AdoptionSlide, "volume_drop": VolumeDrop,
    "dormant_issuer": DormantIssuer, "pipeline_silence": PipelineSilence, "pipeline_lag": PipelineLag,
}  # fmt: skip


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in (raw or {}).items():
        name = "for_" if key == "for" else key
        if name == "sectors":
            continue
        if name not in names:
            raise ValueError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(names))})")
        values[name] = value
    return cls(**values)


def _date_range(item: Any, where: str) -> DateRange:
    """``[first, last]`` (both included) or a single date, checked."""

    def day(value: Any) -> dt.date:
        if isinstance(value, dt.datetime):  # YAML reads "2024-02-08 00:00" as a time, not a day
            raise ValueError
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))

    pair = item if isinstance(item, list | tuple) else [item, item]
    try:
        if len(pair) != 2:
            raise ValueError
        first, last = day(pair[0]), day(pair[1])
    except ValueError:
        raise ValueError(f"{where}: {item!r} is neither a date nor a [first, last] pair (YYYY-MM-DD)") from None
    if last < first:
        raise ValueError(f"{where}: {item!r} ends before it starts")
    return first, last


def load_rules(path: Path | None = None) -> Rules:
    """Read and check a rules file; errors name the file and the setting."""
    path = path or DEFAULT_RULES
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ValueError(f"rules file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"rules file {path} is not valid YAML: {exc}") from None
    evaluation_raw = dict(raw.get("evaluation") or {})
    # `holidays:` is what rules files said before the public holidays came from the package: its
    # ranges still count, as extra days (they repeat the package's days or add to them)
    extra: list[DateRange] = []
    for key in ("extra_holidays", "holidays"):
        items = evaluation_raw.pop(key, None) or []
        if not isinstance(items, list):
            raise ValueError(f"{path}: evaluation.{key} must be a list of dates or [first, last] ranges")
        extra += [_date_range(item, f"{path}: evaluation.{key}") for item in items]
    evaluation = _build(Evaluation, evaluation_raw, f"{path}: evaluation")
    evaluation = dataclasses.replace(evaluation, extra_holidays=tuple(extra))
    if evaluation.level not in ("province", "district", "commune"):
        raise ValueError(f"{path}: evaluation.level must be province, district or commune")
    rules: dict[str, Any] = {"evaluation": evaluation}
    overrides: dict[str, dict[str, dict[str, Any]]] = {}
    for name, cls in SECTIONS.items():
        section = raw.get(name) or {}
        rules[name] = _build(cls, section, f"{path}: {name}")
        sectors = section.get("sectors") or {}
        for sector, values in sectors.items():
            _build(cls, values, f"{path}: {name}.sectors.{sector}")  # validates the keys
            overrides.setdefault(name, {})[str(sector)] = {("for_" if k == "for" else k): v for k, v in values.items()}
    unknown = set(raw) - {"evaluation", *SECTIONS}
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
    return Rules(**rules, sector_overrides=overrides)
