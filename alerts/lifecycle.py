"""Alert instances: pending → firing → resolved, repeats, inhibition and silences.

Pure logic: :func:`advance` takes the day's observations and returns the events to send. One
evaluation is one complete local day, so "held for N evaluations" means N complete days.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

PROVINCE = "*"
SEGMENT_RULES = ("adoption_drop", "adoption_slide", "volume_drop")


def fingerprint(rule: str, labels: dict[str, str]) -> str:
    text = rule + "|" + "|".join(f"{k}={labels[k]}" for k in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Observation:
    """What one rule saw for one set of labels on one day."""

    rule: str
    labels: dict[str, str]
    active: bool
    severity: str
    for_: int
    clear_for: int
    values: dict[str, Any] = field(default_factory=dict)
    held: bool = False  # the scope has a data problem today: change nothing


@dataclass
class Instance:
    fingerprint: str
    rule: str
    labels: dict[str, str]
    severity: str
    state: str = "inactive"  # inactive, pending, firing, resolved
    held_days: int = 0
    clear_days: int = 0
    started_day: dt.date | None = None
    fired_day: dt.date | None = None
    resolved_day: dt.date | None = None
    last_notified_at: float | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["values"] = json.dumps(self.values, ensure_ascii=False, default=str)
        return row


@dataclass(frozen=True)
class Silence:
    silence_id: str
    matchers: dict[str, str]  # label or "rule" -> exact value
    starts_at: float
    ends_at: float
    comment: str = ""
    created_by: str = ""

    def matches(self, instance: Instance, now: float) -> bool:
        if not self.starts_at <= now < self.ends_at:
            return False
        labels = {**instance.labels, "rule": instance.rule}
        return all(labels.get(k) == v for k, v in self.matchers.items())


@dataclass(frozen=True)
class AlertEvent:
    event_id: str
    type: str  # firing, resolved, repeat
    fingerprint: str
    rule: str
    labels: dict[str, str]
    severity: str
    day: dt.date
    started_day: dt.date | None
    values: dict[str, Any]
    emitted_at: float
    suppressed_by: str = ""  # "", "silence:<id>" or "inhibited:<fingerprint>"

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "day": self.day.isoformat(),
                "started_day": self.started_day.isoformat() if self.started_day else None}  # fmt: skip


def _event(instance: Instance, kind: str, day: dt.date, now: float, slot: str) -> AlertEvent:
    return AlertEvent(
        event_id=f"{instance.fingerprint}-{kind}-{slot}",
        type=kind, fingerprint=instance.fingerprint, rule=instance.rule, labels=dict(instance.labels),
        severity=instance.severity, day=day, started_day=instance.started_day, values=dict(instance.values),
        emitted_at=now,
    )  # fmt: skip


def advance(
    instances: dict[str, Instance],
    observations: Iterable[Observation],
    day: dt.date,
    now: float,
    *,
    repeat_interval_s: float,
    silences: Iterable[Silence] = (),
    repeat_by_rule: Mapping[str, float] | None = None,
) -> list[AlertEvent]:
    """Apply one day's observations; return the events (suppressed ones carry ``suppressed_by``).

    ``repeat_by_rule``: the rules whose reminders come at another interval than ``repeat_interval_s``.
    """
    events: list[AlertEvent] = []
    touched: list[Instance] = []
    for obs in observations:
        fp = fingerprint(obs.rule, obs.labels)
        instance = instances.get(fp)
        if instance is None:
            if not obs.active or obs.held:
                continue
            instance = instances[fp] = Instance(fp, obs.rule, dict(obs.labels), obs.severity)
        if obs.held:
            continue
        touched.append(instance)
        if obs.active:
            newcomers = _new_members(instance.values, obs.values)
            instance.values = dict(obs.values)
            if "sellers" in obs.values:  # a grouped alert says who joined it today, so no newcomer is buried
                instance.values["new_sellers"] = newcomers
            instance.held_days += 1
            instance.clear_days = 0
            if instance.state in ("inactive", "resolved"):
                instance.state, instance.started_day, instance.resolved_day = "pending", day, None
            if instance.state == "pending" and instance.held_days >= obs.for_:
                instance.state, instance.fired_day = "firing", day
                events.append(_event(instance, "firing", day, now, day.isoformat()))
            elif instance.state == "firing":
                unnotified = instance.last_notified_at is None
                interval = (repeat_by_rule or {}).get(obs.rule, repeat_interval_s)
                due = not unnotified and now - instance.last_notified_at >= interval  # type: ignore[operator]
                if unnotified:
                    events.append(_event(instance, "firing", day, now, (instance.fired_day or day).isoformat()))
                elif newcomers:  # a grouped alert (dormant sellers of a unit) gained members: say so now
                    events.append(_event(instance, "repeat", day, now, f"{day.isoformat()}-grew"))
                elif due:
                    events.append(_event(instance, "repeat", day, now, str(int(now // interval))))
        else:
            instance.clear_days += 1
            instance.held_days = 0
            if instance.state == "pending":
                instance.state, instance.started_day = "inactive", None
            elif instance.state == "firing" and instance.clear_days >= obs.clear_for:
                instance.state, instance.resolved_day = "resolved", day
                resolved = _event(instance, "resolved", day, now, day.isoformat())
                if instance.last_notified_at is None:  # nobody heard it fire: nothing to resolve for them
                    resolved = dataclasses.replace(resolved, suppressed_by="never-notified")
                instance.last_notified_at = None
                events.append(resolved)
    return [_suppress(e, instances, now, list(silences)) for e in events]


def _new_members(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Who joined a grouped alert's member list (``sellers``) since the day before."""
    old = {str(m.get("seller_id")) for m in before.get("sellers", [])}
    return [str(m.get("seller_id")) for m in after.get("sellers", []) if str(m.get("seller_id")) not in old]


def _suppress(event: AlertEvent, instances: dict[str, Instance], now: float, silences: list[Silence]) -> AlertEvent:
    if event.suppressed_by:
        return event
    instance = instances[event.fingerprint]
    for silence in silences:
        if silence.matches(instance, now):
            return dataclasses.replace(event, suppressed_by=f"silence:{silence.silence_id}")
    if event.rule in SEGMENT_RULES and instance.labels.get("unit") != PROVINCE and event.type != "resolved":
        province = fingerprint(event.rule, {"sector": instance.labels.get("sector", ""), "unit": PROVINCE})
        parent = instances.get(province)
        if parent is not None and parent.state == "firing":
            return dataclasses.replace(event, suppressed_by=f"inhibited:{province}")
    if event.rule == "adoption_slide" and event.type != "resolved":
        # a sudden drop of the same segment already says it: its businesses lapse a week later
        sudden = fingerprint("adoption_drop", instance.labels)
        drop = instances.get(sudden)
        if drop is not None and drop.state == "firing":
            return dataclasses.replace(event, suppressed_by=f"inhibited:{sudden}")
    return event


def mark_notified(instances: dict[str, Instance], events: Iterable[AlertEvent]) -> None:
    for event in events:
        if not event.suppressed_by and event.type in ("firing", "repeat"):
            instances[event.fingerprint].last_notified_at = event.emitted_at
