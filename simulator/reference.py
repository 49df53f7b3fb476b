"""The model's numbers, read from one reference file (``reference/thanh_hoa.toml``) and checked.

Everything the simulator assumes about Thanh Hóa lives in that file, with its source or reasoning;
this module only gives it types and refuses a file that does not add up.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from analytics.public_holidays import days_off, lunar_new_year
from contracts.validation import NON_CASH_METHODS, VAT_RATES, nfc  # nfc: the normalisation names are stored in

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
DEFAULT_REFERENCE = REFERENCE_DIR / "thanh_hoa.toml"
LEGAL_FORMS = ("enterprise", "branch", "household")


@dataclass(frozen=True)
class Unit:
    code: str
    name: str
    weight: float
    kind: str


@dataclass(frozen=True)
class Chain:
    name: str
    tax_prefix: str


@dataclass(frozen=True)
class Sector:
    vsic_code: str
    name: str
    eligible: int
    not_obliged: int
    adopters_jan: int
    adopters_march: int
    adopters_june: int
    invoices_per_day: float
    ticket_median_vnd: int
    ticket_sigma: float
    vat_rate: int
    non_cash: float
    non_cash_split: dict[str, float]
    hours: str
    week: str
    pre_tet_peak: float
    tet_dip_scale: float
    registers: tuple[int, int]
    legal_forms: dict[str, float]
    unit_affinity: dict[str, float]
    shop_words: tuple[str, ...]
    chains: tuple[Chain, ...]

    @property
    def adoption_june(self) -> float:
        return self.adopters_june / self.eligible


@dataclass(frozen=True)
class Holiday:
    """A public holiday's effect on volume; its days come from the one calendar, for any year."""

    name: str
    official: str  # the holiday's English name in the `holidays` package
    factors: dict[str, float]

    def factor(self, profile: str) -> float:
        return self.factors.get(profile, self.factors.get("default", 1.0))

    def days(self, year: int) -> tuple[dt.date, dt.date] | None:
        """The holiday's run of days off in ``year``, with the adjoining weekend (a long weekend travels)."""
        return days_off(self.official, year)


@dataclass(frozen=True)
class Names:
    surnames: tuple[str, ...]
    middle: tuple[str, ...]
    given: tuple[str, ...]
    trade: tuple[str, ...]
    company_kinds: tuple[str, ...]


@dataclass(frozen=True)
class Reference:
    """The typed content of the reference file."""

    path: Path
    period_start: dt.date
    period_end: dt.date
    march_anchor: dt.date
    june_anchor: dt.date
    active_issuers_march: int
    active_issuers_june: int
    invoices_h1: int
    early_from: dt.date
    unit_adoption_factor: dict[str, float]
    registered_in_period_share: float
    oldest_registration: dt.date
    normal_delay_ms: tuple[int, int]
    late_delay_minutes: tuple[float, float]
    duplicate_delay_ms: tuple[int, int]
    outage_drain_minutes: float
    v2_seller_share: float
    b2b_share: float
    non_cash_split: dict[str, float]
    activity_sigma: float
    price_sigma: float
    enterprise_vat_invoice_share: float
    hour_profiles: dict[str, tuple[float, ...]]
    week_profiles: dict[str, tuple[float, ...]]
    tet_date: dt.date  # Tết of the period's year (lunar calendar); model.day_factor places each year's own
    tet_pre: tuple[float, ...]
    tet_dip: tuple[float, ...]
    holidays: tuple[Holiday, ...]
    units: tuple[Unit, ...]
    sectors: tuple[Sector, ...]
    names: Names

    def sector(self, vsic_code: str) -> Sector:
        for sector in self.sectors:
            if sector.vsic_code == vsic_code:
                return sector
        raise KeyError(f"no sector {vsic_code!r} in {self.path.name}")

    def unit(self, code: str) -> Unit:
        for unit in self.units:
            if unit.code == code:
                return unit
        raise KeyError(f"no administrative unit {code!r} in {self.path.name}")


def _pair(value: list[Any], what: str) -> tuple[Any, Any]:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{what} must be [low, high], got {value!r}")
    return value[0], value[1]


def _sector(raw: dict[str, Any], default_split: dict[str, float]) -> Sector:
    adopters = raw["adopters"]
    sector = Sector(
        vsic_code=str(raw["vsic_code"]),
        name=nfc(raw["name"]),
        eligible=int(raw["eligible"]),
        not_obliged=int(raw.get("not_obliged", 0)),
        adopters_jan=int(adopters["jan"]),
        adopters_march=int(adopters["march"]),
        adopters_june=int(adopters["june"]),
        invoices_per_day=float(raw["invoices_per_day"]),
        ticket_median_vnd=int(raw["ticket_median_vnd"]),
        ticket_sigma=float(raw["ticket_sigma"]),
        vat_rate=int(raw["vat_rate"]),
        non_cash=float(raw["non_cash"]),
        non_cash_split=dict(raw.get("non_cash_split", default_split)),
        hours=str(raw["hours"]),
        week=str(raw["week"]),
        pre_tet_peak=float(raw["pre_tet_peak"]),
        tet_dip_scale=float(raw["tet_dip_scale"]),
        registers=_pair(raw["registers"], "registers"),
        legal_forms={k: float(raw["legal_forms"].get(k, 0.0)) for k in LEGAL_FORMS},
        unit_affinity={str(k): float(v) for k, v in raw.get("unit_affinity", {}).items()},
        shop_words=tuple(nfc(w) for w in raw["shop_words"]),
        chains=tuple(Chain(nfc(c["name"]), str(c["tax_prefix"])) for c in raw.get("chains", ())),
    )
    code = sector.vsic_code
    if not (0 <= sector.adopters_jan <= sector.adopters_march <= sector.adopters_june <= sector.eligible):
        raise ValueError(f"sector {code}: adopters must grow and stay within eligible")
    if sector.vat_rate not in VAT_RATES:
        raise ValueError(f"sector {code}: VAT rate {sector.vat_rate} is not one of {sorted(VAT_RATES)}")
    if abs(sum(sector.legal_forms.values()) - 1) > 1e-6 or abs(sum(sector.non_cash_split.values()) - 1) > 1e-6:
        raise ValueError(f"sector {code}: legal_forms and non_cash_split must each sum to 1")
    if set(sector.non_cash_split) - set(NON_CASH_METHODS):
        raise ValueError(f"sector {code}: non-cash methods are {NON_CASH_METHODS}")
    if sector.legal_forms["branch"] > 0 and not sector.chains:
        raise ValueError(f"sector {code}: branches need at least one chain (their head office)")
    if sector.registers[0] < 1:
        raise ValueError(f"sector {code}: a business has at least one register")
    return sector


def load_reference(path: Path = DEFAULT_REFERENCE) -> Reference:
    """Read and check a reference file; the default is Thanh Hóa."""
    return _load(Path(path).resolve())


@cache
def _load(path: Path) -> Reference:
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    cal, feed, tet = raw["calibration"], raw["feed"], raw["tet"]
    if "date" in tet or any("from" in h for h in raw.get("holidays", ())):
        raise ValueError(
            f"{path.name}: holiday dates come from analytics.public_holidays now: drop tet.date, and give each"
            " [[holidays]] an `official` name (the holidays package's English name) instead of from/to"
        )
    default_split = dict(feed["non_cash_split"])
    hour_profiles = {k: tuple(float(x) for x in v) for k, v in raw["hour_profiles"].items()}
    week_profiles = {k: tuple(float(x) for x in v) for k, v in raw["week_profiles"].items()}
    sectors = tuple(_sector(s, default_split) for s in raw["sectors"])
    units = tuple(Unit(str(u["code"]), nfc(u["name"]), float(u["weight"]), str(u["kind"])) for u in raw["units"])
    reference = Reference(
        path=path,
        period_start=cal["period_start"],
        period_end=cal["period_end"],
        march_anchor=cal["march_anchor"],
        june_anchor=cal["june_anchor"],
        active_issuers_march=int(cal["active_issuers_march"]),
        active_issuers_june=int(cal["active_issuers_june"]),
        invoices_h1=int(cal["invoices_h1"]),
        early_from=raw["adoption"]["early_from"],
        unit_adoption_factor={k: float(v) for k, v in raw["adoption"]["unit_factor"].items()},
        registered_in_period_share=float(raw["registry"]["registered_in_period_share"]),
        oldest_registration=raw["registry"]["oldest_registration"],
        normal_delay_ms=_pair(feed["normal_delay_ms"], "normal_delay_ms"),
        late_delay_minutes=_pair(feed["late_delay_minutes"], "late_delay_minutes"),
        duplicate_delay_ms=_pair(feed["duplicate_delay_ms"], "duplicate_delay_ms"),
        outage_drain_minutes=float(feed["outage_drain_minutes"]),
        v2_seller_share=float(feed["v2_seller_share"]),
        b2b_share=float(feed["b2b_share"]),
        non_cash_split=default_split,
        activity_sigma=float(feed["activity_sigma"]),
        price_sigma=float(feed["price_sigma"]),
        enterprise_vat_invoice_share=float(feed["enterprise_vat_invoice_share"]),
        hour_profiles=hour_profiles,
        week_profiles=week_profiles,
        tet_date=lunar_new_year(cal["period_start"].year),
        tet_pre=tuple(float(x) for x in tet["pre"]),
        tet_dip=tuple(float(x) for x in tet["dip"]),
        holidays=tuple(
            Holiday(nfc(h["name"]), h["official"], {k: float(v) for k, v in h["factors"].items()})
            for h in raw.get("holidays", ())
        ),
        units=units,
        sectors=sectors,
        names=Names(**{k: tuple(nfc(x) for x in v) for k, v in raw["names"].items()}),
    )
    _check(reference)
    return reference


def _check(ref: Reference) -> None:
    codes = [u.code for u in ref.units]
    if len(set(codes)) != len(codes):
        raise ValueError("duplicate administrative unit codes")
    if len({s.vsic_code for s in ref.sectors}) != len(ref.sectors):
        raise ValueError("duplicate sector codes")
    for unit in ref.units:
        if unit.kind not in ref.unit_adoption_factor:
            raise ValueError(f"unit {unit.code}: kind {unit.kind!r} has no adoption factor")
    for name, profile in (*ref.hour_profiles.items(), *ref.week_profiles.items()):
        if min(profile) < 0 or sum(profile) <= 0:
            raise ValueError(f"profile {name}: weights must be non-negative and not all zero")
    for name, profile in ref.hour_profiles.items():
        if len(profile) != 24:
            raise ValueError(f"hour profile {name} needs 24 weights")
    for name, profile in ref.week_profiles.items():
        if len(profile) != 7:
            raise ValueError(f"week profile {name} needs 7 weights (Monday..Sunday)")
    for sector in ref.sectors:
        if sector.hours not in ref.hour_profiles or sector.week not in ref.week_profiles:
            raise ValueError(f"sector {sector.vsic_code}: unknown hour or week profile")
        if set(sector.unit_affinity) - set(codes):
            raise ValueError(f"sector {sector.vsic_code}: unit_affinity names unknown units")
    for holiday in ref.holidays:
        if holiday.days(ref.period_start.year) is None:
            raise ValueError(
                f"holiday {holiday.name}: no public holiday named {holiday.official!r} in {ref.period_start.year}"
            )
    if len(ref.tet_pre) != 7:
        raise ValueError("tet.pre needs 7 values (the days Tết-7 .. Tết-1)")
