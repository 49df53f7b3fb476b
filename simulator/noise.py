"""The realistic world: what a real feed does that the simulator's Poisson default does not.

An independent feed showed the alert rules, tuned on near-Poisson seller-days, naming sellers who
never stopped and segments that never fell. This module draws, once per run, the traits that did
it: lumpy sellers (gamma-Poisson days), a fixed closed weekday, part-time sellers, churn (sellers
stopping for good and starting), the month turn, district-wide daily shocks, and a public holiday
with closures. The engine multiplies each day's Poisson rates by :meth:`NoiseWorld.day_multiplier`,
per batch, and only in ``noise="realistic"``: the default path draws exactly what it drew before.

The numbers live in the reference file's ``[noise]`` table (reasoning in simulator/README.md);
:meth:`NoiseWorld.truth` writes what was drawn, so a scorer can tell a stopped seller from a
closed, part-time or holiday-shut one.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from analytics.public_holidays import official_holidays
from simulator.model import day_number, from_day_number
from simulator.population import BRANCH, ENTERPRISE, HOUSEHOLD, Population
from simulator.reference import Reference

NOISES = ("poisson", "realistic", "harsh")  # harsh: the realistic world with [noise.harsh] on top
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NEVER = np.iinfo(np.int64).max // 4  # stop day of a seller who never stops
EPOCH_WEEKDAY = 3  # 1970-01-01, day number 0, was a Thursday


def weekday_of(day: int) -> int:
    """Monday = 0 of a day number (what ``dt.date.weekday`` gives, without building dates per row)."""
    return (day + EPOCH_WEEKDAY) % 7


@dataclass(frozen=True)
class NoiseParams:
    """The ``[noise]`` table of the reference file, typed and checked."""

    dispersion_median: float
    dispersion_sigma: float
    closed_weekday_share: dict[str, float]
    always_open_sectors: tuple[str, ...]
    closed_weekday_weights: tuple[float, ...]
    part_time_share: float
    part_time_open: tuple[float, float]
    stop_share: float
    start_share: float
    month_end: tuple[float, ...]
    month_start: tuple[float, ...]
    district_sigma: float
    storm_probability: float
    storm_factor: float
    market_every_days: int
    market_factor: float
    market_unit_kinds: tuple[str, ...]
    holiday: str
    holiday_factors: dict[str, float]
    holiday_closed_household_share: float

    def holiday_factor(self, week_profile: str) -> float:
        return self.holiday_factors.get(week_profile, self.holiday_factors.get("default", 1.0))


@cache
def load_noise(path: Path, world: str = "realistic") -> NoiseParams:
    """The ``[noise]`` table of a reference file; for the harsh world, with its ``[noise.harsh]`` on top."""
    raw = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("noise")
    if raw is None:
        raise ValueError(f"{Path(path).name} has no [noise] table: the realistic world needs one")
    if world != "realistic":
        if world not in raw:
            raise ValueError(f"{Path(path).name} has no [noise.{world}] table")
        raw = {**raw, **raw[world]}
    params = NoiseParams(
        dispersion_median=float(raw["dispersion_median"]), dispersion_sigma=float(raw["dispersion_sigma"]),
        closed_weekday_share={k: float(v) for k, v in raw["closed_weekday_share"].items()},
        always_open_sectors=tuple(str(s) for s in raw["always_open_sectors"]),
        closed_weekday_weights=tuple(float(x) for x in raw["closed_weekday_weights"]),
        part_time_share=float(raw["part_time_share"]),
        part_time_open=(float(raw["part_time_open"][0]), float(raw["part_time_open"][1])),
        stop_share=float(raw["stop_share"]), start_share=float(raw["start_share"]),
        month_end=tuple(float(x) for x in raw["month_end"]), month_start=tuple(float(x) for x in raw["month_start"]),
        district_sigma=float(raw["district_sigma"]), storm_probability=float(raw["storm_probability"]),
        storm_factor=float(raw["storm_factor"]), market_every_days=int(raw["market_every_days"]),
        market_factor=float(raw["market_factor"]), market_unit_kinds=tuple(str(k) for k in raw["market_unit_kinds"]),
        holiday=str(raw["holiday"]), holiday_factors={k: float(v) for k, v in raw["holiday_factors"].items()},
        holiday_closed_household_share=float(raw["holiday_closed_household_share"]),
    )  # fmt: skip
    if len(params.closed_weekday_weights) != 7 or min(params.closed_weekday_weights) < 0:
        raise ValueError("noise.closed_weekday_weights needs 7 non-negative weights (Monday..Sunday)")
    if params.part_time_share + params.stop_share + params.start_share >= 1:
        raise ValueError("noise: part-time, stopping and starting shares must leave regular sellers")
    if not 0 < params.part_time_open[0] <= params.part_time_open[1] <= 1:
        raise ValueError("noise.part_time_open must be [low, high] within (0, 1]")
    if params.dispersion_median <= 0 or params.market_every_days < 1:
        raise ValueError("noise: dispersion_median must be positive and market_every_days at least 1")
    return params


class NoiseWorld:
    """Per-seller traits and per-day factors of one run, drawn once from its seed (deterministic)."""

    def __init__(
        self, ref: Reference, population: Population, seed: int, start: dt.date, days: int, world: str = "realistic"
    ) -> None:
        self.ref = ref
        self.world = world
        self.params = p = load_noise(ref.path, world)
        self.population = pop = population
        self.first_day = day_number(start)
        self.days = days
        self.seed = seed
        rng = np.random.default_rng([seed, 0x4E4F49])  # "NOI"
        n = len(pop)
        # lumpiness: shape k of the gamma multiplier, per seller
        self.dispersion = p.dispersion_median * np.exp(p.dispersion_sigma * rng.standard_normal(n))
        # churn and part-time: disjoint groups of the issuers active on the window's first day
        issuing = np.flatnonzero(pop.adopter & (pop.adoption_day <= self.first_day))
        order = rng.permutation(issuing)
        n_stop, n_start = round(p.stop_share * len(order)), round(p.start_share * len(order))
        n_part = round(p.part_time_share * len(order))
        stoppers = np.sort(order[:n_stop])
        starters = np.sort(order[n_stop : n_stop + n_start])
        self.part_time = np.zeros(n, dtype=bool)
        self.part_time[order[n_stop + n_start : n_stop + n_start + n_part]] = True
        self.open_share = np.where(self.part_time, rng.uniform(*p.part_time_open, n), 1.0)
        self.stop_day = np.full(n, NEVER, dtype=np.int64)
        self.start_day = np.zeros(n, dtype=np.int64)
        later = max(days - 1, 1)  # a change on the first day would leave no trace of the seller before it
        self.stop_day[stoppers] = self.first_day + 1 + rng.integers(0, later, len(stoppers))
        self.start_day[starters] = self.first_day + 1 + rng.integers(0, later, len(starters))
        # a fixed closed weekday (not for part-time sellers, whose days are irregular anyway)
        open_sectors = [i for i, s in enumerate(ref.sectors) if s.vsic_code in p.always_open_sectors]
        always_open = np.isin(pop.sector, open_sectors)
        form_share = np.zeros(n)
        for form, name in ((ENTERPRISE, "enterprise"), (BRANCH, "branch"), (HOUSEHOLD, "household")):
            form_share[pop.legal_form == form] = p.closed_weekday_share.get(name, 0.0)
        closes = (rng.random(n) < form_share) & ~always_open & ~self.part_time
        weights = np.asarray(p.closed_weekday_weights) / sum(p.closed_weekday_weights)
        self.closed_weekday = np.where(closes, rng.choice(7, size=n, p=weights), -1)
        # the open days carry the week's trade: the regulars come on another day
        self.open_day_rate = np.where(closes, 7.0 / 6.0, 1.0)
        # the holiday: its official days in the window, and the household shops shut for them
        window = [start + dt.timedelta(days=j) for j in range(days)]
        self.holiday_days = [
            day_number(d) for d in window if p.holiday in (official_holidays(d.year).get(d) or "").split("; ")
        ]
        self.holiday_closed = (
            (pop.legal_form == HOUSEHOLD) & ~always_open & (rng.random(n) < p.holiday_closed_household_share)
        )
        self.calendar = self._calendar(window)
        self.unit_factor, self.storms = self._district_factors(rng, window)

    def _calendar(self, window: list[dt.date]) -> np.ndarray:
        """(sectors, days): month turn × the holiday's factor for those still open."""
        p, ref = self.params, self.ref
        out = np.ones((len(ref.sectors), len(window)))
        for j, d in enumerate(window):
            from_end = ((d.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - d).days  # 1 on the last day
            if from_end <= len(p.month_end):
                out[:, j] *= p.month_end[len(p.month_end) - from_end]
            if d.day <= len(p.month_start):
                out[:, j] *= p.month_start[d.day - 1]
            if day_number(d) in self.holiday_days:
                out[:, j] *= [p.holiday_factor(s.week) for s in ref.sectors]
        return out

    def _district_factors(self, rng: np.random.Generator, window: list[dt.date]) -> tuple[np.ndarray, list[dict]]:
        """(units, days) factors: weather noise, storms, market days; and the storms, for the ground truth."""
        p, units = self.params, self.ref.units
        shape = (len(units), len(window))
        sigma = p.district_sigma
        factor = np.exp(sigma * rng.standard_normal(shape) - sigma * sigma / 2)  # mean 1
        storm = rng.random(shape) < p.storm_probability
        factor[storm] *= p.storm_factor
        market = np.array([u.kind in p.market_unit_kinds for u in units])
        phase = rng.integers(0, p.market_every_days, len(units))
        on_market = (np.arange(len(window))[None, :] + phase[:, None]) % p.market_every_days == 0
        factor[market[:, None] & on_market] *= p.market_factor
        storms = [
            {"admin_unit_code": units[u].code, "day": window[j].isoformat(), "factor": p.storm_factor}
            for u, j in zip(*np.nonzero(storm), strict=True)
        ]
        return factor, storms

    # -- per day --------------------------------------------------------------------------------

    def day_multiplier(self, rows: np.ndarray, j: int) -> np.ndarray:
        """Multipliers of day ``j``'s Poisson rates for ``rows``: 0 when closed, else calendar × district × G."""
        pop = self.population
        day = self.first_day + j
        rng = np.random.default_rng([self.seed, 0x4E4F49, day])
        closed = (self.closed_weekday[rows] == weekday_of(day)) | (day < self.start_day[rows])
        closed |= day >= self.stop_day[rows]
        closed |= self.part_time[rows] & (rng.random(len(rows)) >= self.open_share[rows])
        if day in self.holiday_days:
            closed |= self.holiday_closed[rows]
        k = self.dispersion[rows]
        lumpy = rng.gamma(k, 1.0 / k)
        m = self.open_day_rate[rows] * self.calendar[pop.sector[rows], j] * self.unit_factor[pop.unit[rows], j]
        return np.where(closed, 0.0, m * lumpy)

    # -- ground truth ---------------------------------------------------------------------------

    def not_for_scenarios(self) -> np.ndarray:
        """Row mask of the sellers a scenario change must not pick: stopping, starting or part-time ones."""
        return (self.stop_day < NEVER) | (self.start_day > 0) | self.part_time

    def truth(self) -> dict[str, Any]:
        """What was drawn, for the issuers: who stopped or started when, who is part-time, closed when."""
        pop = self.population
        ids = pop.seller_ids
        issuer = pop.adopter
        iso = lambda day: from_day_number(int(day)).isoformat()  # noqa: E731
        return {
            "model": self.world,
            "params": asdict(self.params),
            "stopped": [{"seller_id": ids[i], "from": iso(self.stop_day[i])}
                        for i in np.flatnonzero(issuer & (self.stop_day < NEVER)).tolist()],
            "started": [{"seller_id": ids[i], "from": iso(self.start_day[i])}
                        for i in np.flatnonzero(issuer & (self.start_day > 0)).tolist()],
            "part_time": [{"seller_id": ids[i], "open_share": round(float(self.open_share[i]), 3)}
                          for i in np.flatnonzero(issuer & self.part_time).tolist()],
            "closed_weekday": [{"seller_id": ids[i], "weekday": WEEKDAYS[int(self.closed_weekday[i])]}
                               for i in np.flatnonzero(issuer & (self.closed_weekday >= 0)).tolist()],
            "holiday": {"name": self.params.holiday, "days": [iso(d) for d in self.holiday_days],
                        "closed": [ids[i] for i in np.flatnonzero(issuer & self.holiday_closed).tolist()]
                        if self.holiday_days else []},
            "storms": self.storms,
        }  # fmt: skip
