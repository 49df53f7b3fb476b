"""Scenario files: changes against the baseline feed, and the ground truth of what they did.

A scenario (YAML or TOML, see ``scenarios/README.md``) lists changes; each is resolved against
the population of a run (which sellers, chosen reproducibly from the seed) into effects the
generator applies, and into a ground-truth entry that tests score alerts against.
"""

from __future__ import annotations

import datetime as dt
import tomllib
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from base.localtime import LOCAL_OFFSET_MS, LOCAL_TZ, local_ms
from simulator.model import day_number
from simulator.population import Population

MAX_OUTAGE_HOURS = 20.0  # late events (≤ 48 h) delayed further must stay within the 72 h validity limit
KINDS = ("sector_drop", "silent_issuer", "volume_drop", "registry_change", "feed_outage")
RUN_KEYS = ("start", "days", "scale")


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True)
class Scenario:
    path: Path
    name: str
    description: str
    run: dict[str, Any]
    changes: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Stop:
    """Sellers (rows) that issue nothing on days [first_day, end_day)."""

    rows: np.ndarray
    first_day: int
    end_day: int | None


@dataclass(frozen=True)
class Thinning:
    """Sellers whose invoices are kept with probability ``factor`` (at least one a day if any)."""

    rows: np.ndarray
    factor: float
    first_day: int
    end_day: int | None


@dataclass(frozen=True)
class Outage:
    """The feed receives nothing in [start_ms, end_ms) (UTC); the backlog arrives after."""

    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class RegistryVersion:
    row: int
    valid_from: dt.date
    changes: dict[str, Any]


@dataclass
class Effects:
    stops: list[Stop] = field(default_factory=list)
    thinnings: list[Thinning] = field(default_factory=list)
    outages: list[Outage] = field(default_factory=list)
    versions: list[RegistryVersion] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)


def load_scenario(path: Path | str) -> Scenario:
    """Read and check a scenario file (.yaml, .yml or .toml)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("changes"), list) or not raw["changes"]:
        raise ScenarioError(f"{path}: needs a non-empty list `changes`")
    run = raw.get("run") or {}
    unknown = set(run) - set(RUN_KEYS)
    if unknown:
        raise ScenarioError(f"{path}: unknown keys in `run`: {sorted(unknown)} (known: {', '.join(RUN_KEYS)})")
    for i, change in enumerate(raw["changes"]):
        if not isinstance(change, dict) or change.get("kind") not in KINDS:
            raise ScenarioError(f"{path}: change {i} needs `kind`, one of {', '.join(KINDS)}")
    return Scenario(path, str(raw.get("name", path.stem)), str(raw.get("description", "")).strip(), dict(run),
                    tuple(raw["changes"]))  # fmt: skip


def parse_date(value: Any, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return _local(value).date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ScenarioError(f"{what}: {value!r} is not a date (YYYY-MM-DD)") from None


def parse_datetime(value: Any, what: str) -> dt.datetime:
    """A naive local wall-clock time (Asia/Ho_Chi_Minh); aware values are converted."""
    if isinstance(value, dt.datetime):
        return _local(value)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    try:
        return _local(dt.datetime.fromisoformat(str(value)))
    except ValueError:
        raise ScenarioError(f"{what}: {value!r} is not a local date-time (YYYY-MM-DDTHH:MM)") from None


def _local(value: dt.datetime) -> dt.datetime:
    return value.astimezone(LOCAL_TZ).replace(tzinfo=None) if value.tzinfo else value


class _Resolver:
    """Turns the changes of several scenarios into effects, against one population."""

    def __init__(self, population: Population, seed: int, volume: float, exclude: np.ndarray | None) -> None:
        self.pop = population
        self.seed = seed
        self.volume = volume
        self.effects = Effects()
        self.taken = np.zeros(len(population), dtype=bool)  # a seller is affected by one change at most
        # sellers a chosen change must not pick (the realistic world's churning and part-time ones)
        self.exclude = np.zeros(len(population), dtype=bool) if exclude is None else exclude

    def resolve(self, scenario: Scenario) -> None:
        handlers: dict[str, Callable[[dict[str, Any], np.random.Generator, str], dict[str, Any]]] = {
            "sector_drop": self._sector_drop, "silent_issuer": self._silent_issuer,
            "volume_drop": self._volume_drop, "registry_change": self._registry_change,
            "feed_outage": self._feed_outage,
        }  # fmt: skip
        for index, change in enumerate(scenario.changes):
            kind = change["kind"]
            what = f"{scenario.path.name}: change {index} ({kind})"
            rng = np.random.default_rng([self.seed, zlib.crc32(scenario.path.name.encode()), index])
            entry = handlers[kind](change, rng, what)
            self.effects.truth.append(
                {"scenario": scenario.name, "file": scenario.path.name, "index": index, "kind": kind, **entry}
            )

    # -- helpers ------------------------------------------------------------------------------

    def _units(self, change: dict[str, Any], what: str) -> list[str] | None:
        value = change.get("admin_unit_code")
        if value is None:
            return None
        codes = [str(value)] if isinstance(value, str | int) else [str(v) for v in value]
        known = {u.code for u in self.pop.ref.units}
        if set(codes) - known:
            raise ScenarioError(f"{what}: unknown administrative unit(s) {sorted(set(codes) - known)}")
        return codes

    def _sector(self, change: dict[str, Any], what: str, required: bool) -> str | None:
        value = change.get("vsic_code")
        if value is None:
            if required:
                raise ScenarioError(f"{what}: needs vsic_code")
            return None
        code = str(value)
        if code not in {s.vsic_code for s in self.pop.ref.sectors}:
            raise ScenarioError(f"{what}: unknown VSIC code {code!r}")
        return code

    def _window(self, change: dict[str, Any], what: str) -> tuple[dt.date, dt.date | None]:
        if "from" not in change:
            raise ScenarioError(f"{what}: needs `from` (a date)")
        first = parse_date(change["from"], f"{what} from")
        until = parse_date(change["until"], f"{what} until") if change.get("until") is not None else None
        if until is not None and until <= first:
            raise ScenarioError(f"{what}: `until` must be after `from`")
        return first, until

    def _issuers(self, vsic: str | None, units: list[str] | None, on: dt.date) -> np.ndarray:
        """Rows of registered adopters of a segment issuing on ``on``, not taken by another change."""
        pop = self.pop
        mask = pop.segment_rows(vsic, units) & pop.adopter & pop.in_registry & ~self.taken & ~self.exclude
        mask &= pop.adoption_day <= day_number(on)
        return np.flatnonzero(mask)

    def _by_seller_id(self, change: dict[str, Any], what: str) -> np.ndarray | None:
        if change.get("seller_id") is None:
            return None
        seller_id = str(change["seller_id"])
        if seller_id not in self.pop.index_of:
            raise ScenarioError(f"{what}: seller {seller_id} is not in the population (scale and seed matter)")
        return np.array([self.pop.index_of[seller_id]])

    def _segments(self, rows: np.ndarray) -> list[dict[str, str]]:
        pairs = sorted({(self.pop.vsic_code(i), self.pop.unit_code(i)) for i in rows.tolist()})
        return [{"vsic_code": v, "admin_unit_code": u} for v, u in pairs]

    def _sellers(self, rows: np.ndarray) -> list[str]:
        return sorted(self.pop.seller_ids[i] for i in rows.tolist())

    @staticmethod
    def _iso(day: dt.date | None) -> str | None:
        return None if day is None else day.isoformat()

    # -- kinds --------------------------------------------------------------------------------

    def _sector_drop(self, change: dict[str, Any], rng: np.random.Generator, what: str) -> dict[str, Any]:
        vsic, units = self._sector(change, what, required=True), self._units(change, what)
        share = float(change.get("share", 0))
        if not 0 < share <= 1:
            raise ScenarioError(f"{what}: share must be in (0, 1], got {share}")
        first, until = self._window(change, what)
        candidates = self._issuers(vsic, units, first)
        count = min(len(candidates), max(1, round(share * len(candidates)))) if len(candidates) else 0
        rows = np.sort(rng.choice(candidates, size=count, replace=False)) if count else candidates
        self._stop(rows, first, until)
        segments = [{"vsic_code": vsic, "admin_unit_code": u} for u in (units or [u.code for u in self.pop.ref.units])]
        return {
            "expect": "alert", "from": self._iso(first), "until": self._iso(until), "segments": segments,
            "sellers": self._sellers(rows),
            "details": {"share": share, "issuers_before": len(candidates), "stopped": int(count)},
        }  # fmt: skip

    def _silent_issuer(self, change: dict[str, Any], rng: np.random.Generator, what: str) -> dict[str, Any]:
        first, until = self._window(change, what)
        rows = self._by_seller_id(change, what)
        minimum = float(change.get("min_invoices_per_day", 20))
        if rows is None:
            vsic, units = self._sector(change, what, required=False), self._units(change, what)
            # regular: adopted four weeks before and issuing at least `minimum` a day on average
            candidates = self._issuers(vsic, units, first - dt.timedelta(days=28))
            candidates = candidates[self.pop.rate[candidates] * self.volume >= minimum]
            if not len(candidates):
                raise ScenarioError(f"{what}: no regular issuer ({minimum:g}+ invoices a day) matches")
            rows = np.array([rng.choice(candidates)])
        self._stop(rows, first, until)
        return {
            "expect": "alert", "from": self._iso(first), "until": self._iso(until), "segments": self._segments(rows),
            "sellers": self._sellers(rows),
            "details": {"expected_invoices_per_day": round(float(self.pop.rate[rows[0]] * self.volume), 1)},
        }  # fmt: skip

    def _volume_drop(self, change: dict[str, Any], rng: np.random.Generator, what: str) -> dict[str, Any]:
        vsic, units = self._sector(change, what, required=True), self._units(change, what)
        factor = float(change.get("factor", -1))
        if not 0 <= factor < 1:
            raise ScenarioError(f"{what}: factor (the share of the volume left) must be in [0, 1)")
        first, until = self._window(change, what)
        rows = np.flatnonzero(self.pop.segment_rows(vsic, units) & self.pop.adopter & ~self.taken)
        self.effects.thinnings.append(Thinning(rows, factor, day_number(first), _day(until)))
        self.taken[rows] = True
        segments = [{"vsic_code": vsic, "admin_unit_code": u} for u in (units or [u.code for u in self.pop.ref.units])]
        return {
            "expect": "alert", "from": self._iso(first), "until": self._iso(until), "segments": segments,
            "sellers": [], "details": {"factor": factor, "issuers_keep_issuing": True, "sellers_in_segment": len(rows)},
        }  # fmt: skip

    def _registry_change(self, change: dict[str, Any], rng: np.random.Generator, what: str) -> dict[str, Any]:
        action = change.get("action")
        if action not in ("move", "close"):
            raise ScenarioError(f"{what}: action must be move or close")
        first = parse_date(change.get("from"), f"{what} from")
        rows = self._by_seller_id(change, what)
        if rows is None:
            vsic, units = self._sector(change, what, required=False), self._units(change, what)
            candidates = self._issuers(vsic, units, first)
            count = int(change.get("count", 1))
            if len(candidates) < count:
                raise ScenarioError(f"{what}: {count} sellers wanted, {len(candidates)} match")
            rows = np.sort(rng.choice(candidates, size=count, replace=False))
        details: dict[str, Any] = {"action": action}
        segments = self._segments(rows)
        if action == "move":
            target = change.get("to_admin_unit_code")
            if target is None or str(target) not in {u.code for u in self.pop.ref.units}:
                raise ScenarioError(f"{what}: a move needs to_admin_unit_code, a known unit")
            for row in rows.tolist():
                self.effects.versions.append(RegistryVersion(row, first, {"admin_unit_code": str(target)}))
            details["to_admin_unit_code"] = str(target)
            segments += [{"vsic_code": s["vsic_code"], "admin_unit_code": str(target)} for s in segments]
            self.taken[rows] = True
        else:
            for row in rows.tolist():
                self.effects.versions.append(RegistryVersion(row, first, {"status": "CLOSED"}))
            self._stop(rows, first, None)
        return {
            # the denominator moves with the business: adoption does not fall, no alert is due
            "expect": "no_alert", "from": self._iso(first), "until": None, "segments": segments,
            "sellers": self._sellers(rows), "details": details,
        }  # fmt: skip

    def _feed_outage(self, change: dict[str, Any], rng: np.random.Generator, what: str) -> dict[str, Any]:
        start = parse_datetime(change.get("from"), f"{what} from")
        hours = float(change.get("hours", 0))
        if not 0 < hours <= MAX_OUTAGE_HOURS:
            raise ScenarioError(f"{what}: hours must be in (0, {MAX_OUTAGE_HOURS:g}]")
        end = start + dt.timedelta(hours=hours)
        start_ms = _utc_ms(start)
        end_ms = _utc_ms(end)
        self.effects.outages.append(Outage(start_ms, end_ms))
        return {
            # the registers kept issuing; the events arrive late, after the outage: not a drop
            "expect": "no_alert", "from": start.isoformat(timespec="minutes"),
            "until": end.isoformat(timespec="minutes"), "segments": [], "sellers": [],
            "details": {"hours": hours, "received_nothing_utc_ms": [start_ms, end_ms]},
        }  # fmt: skip

    def _stop(self, rows: np.ndarray, first: dt.date, until: dt.date | None) -> None:
        self.effects.stops.append(Stop(rows, day_number(first), _day(until)))
        self.taken[rows] = True


def _day(value: dt.date | None) -> int | None:
    return None if value is None else day_number(value)


def _utc_ms(local: dt.datetime) -> int:
    return local_ms(local) - LOCAL_OFFSET_MS


def resolve_scenarios(
    scenarios: Sequence[Scenario],
    population: Population,
    seed: int,
    volume: float,
    exclude: np.ndarray | None = None,
) -> Effects:
    """Effects and ground truth of the scenarios' changes, in file order (``exclude``: rows no change picks)."""
    resolver = _Resolver(population, seed, volume, exclude)
    for scenario in scenarios:
        resolver.resolve(scenario)
    return resolver.effects


def stopped_on(effects: Effects, day: int, size: int) -> np.ndarray:
    """Row mask of the sellers that issue nothing on ``day``."""
    mask = np.zeros(size, dtype=bool)
    for stop in effects.stops:
        if stop.first_day <= day and (stop.end_day is None or day < stop.end_day):
            mask[stop.rows] = True
    return mask
