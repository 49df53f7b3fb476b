"""The simulated population: who the businesses are, where, in which sector, and when they adopted.

Built once per run from the reference file, a scale and a seed. The columns (numpy arrays, one
row per business) feed the day-by-day generator; :class:`Business` objects give the registry and
the tests a readable view of the same rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from simulator.model import adoption_days, allocate, day_number, from_day_number, sector_counts
from simulator.reference import LEGAL_FORMS, Reference, nfc

NEVER = np.iinfo(np.int64).max // 4  # adoption day of a business that never adopts
ENTERPRISE, BRANCH, HOUSEHOLD = 0, 1, 2
_REGISTER_LETTERS = np.array(list("ABCDEFGHJKLMNPQRSTUVXYZ"))
_SYMBOL_LETTERS = np.array(list("ABCDEGHKLMNPQRSTUVXY"))
PROVINCE_TAX_PREFIX = "28"  # Thanh Hóa's enterprise tax codes start with its tax-office code
PROVINCE_PERSONAL_PREFIX = "038"  # the citizen-id prefix of people registered in Thanh Hóa


@dataclass(frozen=True)
class Business:
    """One business of the registry (or an issuer missing from it, ``in_registry`` False)."""

    seller_id: str
    name: str
    vsic_code: str
    admin_unit_code: str
    obliged: bool
    adopter: bool
    registers: tuple[str, ...]
    valid_from: dt.date
    legal_form: str = "enterprise"
    adopted_on: dt.date | None = None
    in_registry: bool = True

    def registration(self, **changes: Any) -> dict[str, Any]:
        """The BusinessRegistration value of this business (``changes`` for a later version)."""
        value = {
            "seller_id": self.seller_id, "name": self.name, "vsic_code": self.vsic_code,
            "admin_unit_code": self.admin_unit_code, "obliged": self.obliged, "status": "ACTIVE",
            "valid_from": self.valid_from,
        }  # fmt: skip
        value.update(changes)
        return value


def _place_name(unit_name: str) -> str:
    """ "Huyện Hoằng Hóa" -> "Hoằng Hóa": the part of a unit's name a company would carry."""
    for prefix in ("Thành phố ", "Thị xã ", "Huyện "):
        if unit_name.startswith(prefix):
            return unit_name[len(prefix) :]
    return unit_name


class Population:
    """Rows of businesses as columns; index ``i`` is the same business in every column."""

    def __init__(self, ref: Reference, scale: float, seed: int, unregistered: int = 0) -> None:
        self.ref = ref
        self.scale = scale
        self.seed = seed
        rng = np.random.default_rng([seed, 0x504F50])  # "POP"
        self._build(rng, unregistered)

    # -- construction -------------------------------------------------------------------------

    def _build(self, rng: np.random.Generator, unregistered: int) -> None:
        ref = self.ref
        unit_weight = np.array([u.weight for u in ref.units])
        unit_factor = np.array([ref.unit_adoption_factor[u.kind] for u in ref.units])
        sector, unit, obliged, adopter, adopted = [], [], [], [], []
        for s, sec in enumerate(ref.sectors):
            counts = sector_counts(sec, self.scale)
            weights = unit_weight * np.array([sec.unit_affinity.get(u.code, 1.0) for u in ref.units])
            eligible = allocate(counts.eligible, weights)
            adopters = allocate(counts.june, eligible * unit_factor, cap=eligible)
            not_obliged = allocate(counts.not_obliged, weights)
            by_rank = adoption_days(ref, counts)
            # which adopter adopted when: a random rank each, so early adopters are spread over units
            ranks = rng.permutation(counts.june)
            taken = 0
            for u in range(len(ref.units)):
                n_e, n_a, n_o = int(eligible[u]), int(adopters[u]), int(not_obliged[u])
                n = n_e + n_o
                sector.append(np.full(n, s))
                unit.append(np.full(n, u))
                obliged.append(np.arange(n) < n_e)
                adopter.append(np.arange(n) < n_a)
                days = np.full(n, NEVER, dtype=np.int64)
                days[:n_a] = by_rank[ranks[taken : taken + n_a]]
                taken += n_a
                adopted.append(days)
        if unregistered:
            # Issuers whose registration never reached the registry feed ("data not synchronised"):
            # adopters from before the period, in sectors and units by weight.
            june = np.array([sec.adopters_june for sec in ref.sectors], dtype=np.float64)
            sector.append(rng.choice(len(ref.sectors), size=unregistered, p=june / june.sum()))
            unit.append(rng.choice(len(ref.units), size=unregistered, p=unit_weight / unit_weight.sum()))
            obliged.append(np.ones(unregistered, dtype=bool))
            adopter.append(np.ones(unregistered, dtype=bool))
            adopted.append(np.full(unregistered, day_number(ref.early_from), dtype=np.int64))
        self.sector = np.concatenate(sector).astype(np.int64)
        self.unit = np.concatenate(unit).astype(np.int64)
        self.obliged = np.concatenate(obliged)
        self.adopter = np.concatenate(adopter)
        self.adoption_day = np.concatenate(adopted)
        n = len(self.sector)
        self.in_registry = np.ones(n, dtype=bool)
        if unregistered:
            self.in_registry[n - unregistered :] = False
        self._draw_attributes(rng, n)
        self._draw_ids_and_names(rng, n)

    def _draw_attributes(self, rng: np.random.Generator, n: int) -> None:
        ref = self.ref
        sectors = ref.sectors
        forms = np.array([[sec.legal_forms[f] for f in LEGAL_FORMS] for sec in sectors])
        cum = np.cumsum(forms, axis=1)[self.sector]
        self.legal_form = (rng.random(n)[:, None] > cum[:, :-1]).sum(axis=1).astype(np.int64)
        # registered before 2024 mostly, some during H1 2024; never after the adoption day
        start, end = day_number(ref.period_start), day_number(ref.period_end)
        oldest = day_number(ref.oldest_registration)
        in_period = rng.random(n) < ref.registered_in_period_share
        valid_from = np.where(in_period, rng.integers(start, end + 1, n), rng.integers(oldest, start, n))
        self.valid_from_day = np.minimum(valid_from, self.adoption_day)
        # activity: lognormal multiplier of the sector's invoices/day, mean exactly 1 over its adopters
        activity = rng.lognormal(0.0, ref.activity_sigma, n)
        ipd = np.array([sec.invoices_per_day for sec in sectors])[self.sector]
        self.rate = np.zeros(n)
        for s in range(len(sectors)):
            rows = (self.sector == s) & self.adopter
            if rows.any():
                self.rate[rows] = ipd[rows] * activity[rows] / activity[rows].mean()
        median = np.array([sec.ticket_median_vnd for sec in sectors], dtype=np.float64)[self.sector]
        self.price = median * rng.lognormal(0.0, ref.price_sigma, n)
        vat_invoice = (self.legal_form != HOUSEHOLD) & (rng.random(n) < ref.enterprise_vat_invoice_share)
        self.form = np.where(vat_invoice, 1, 2).astype(np.int64)
        self.vat_rate = np.where(vat_invoice, np.array([sec.vat_rate for sec in sectors])[self.sector], 0)
        self.v2 = rng.random(n) < ref.v2_seller_share
        lo = np.array([sec.registers[0] for sec in sectors])[self.sector]
        hi = np.array([sec.registers[1] for sec in sectors])[self.sector]
        self.register_count = rng.integers(lo, hi + 1)
        self.register_first = np.concatenate(([0], np.cumsum(self.register_count)[:-1]))
        self.register_owner = np.repeat(np.arange(n), self.register_count)
        letters = _REGISTER_LETTERS[rng.integers(0, len(_REGISTER_LETTERS), n)]
        base = rng.integers(1, 9000, n)
        within = np.arange(len(self.register_owner)) - self.register_first[self.register_owner]
        numbers = base[self.register_owner] + within
        self.register_ids = [
            f"{letters[o]}{k:04d}" for o, k in zip(self.register_owner.tolist(), numbers.tolist(), strict=True)
        ]
        pairs = _SYMBOL_LETTERS[rng.integers(0, len(_SYMBOL_LETTERS), (n, 2))]
        self.symbol_tail = [a + b for a, b in pairs.tolist()]

    def _draw_ids_and_names(self, rng: np.random.Generator, n: int) -> None:
        ref, names = self.ref, self.ref.names
        enterprise = np.flatnonzero(self.legal_form == ENTERPRISE)
        household = np.flatnonzero(self.legal_form == HOUSEHOLD)
        branch = np.flatnonzero(self.legal_form == BRANCH)
        ids: list[str] = [""] * n
        label: list[str] = [""] * n
        # enterprises and chain head offices: 10 digits, one pool so no two collide
        heads_needed = sum(len(s.chains) for s in ref.sectors) + len(branch) // 999 + len(ref.sectors)
        pool = rng.choice(10**8, size=len(enterprise) + heads_needed, replace=False)
        for i, k in zip(enterprise.tolist(), pool[: len(enterprise)].tolist(), strict=True):
            ids[i] = f"{PROVINCE_TAX_PREFIX}{k:08d}"
        spare = iter(pool[len(enterprise) :].tolist())
        # household businesses: the 12-digit personal id (province 038, century/sex digit, birth year, 6 digits)
        if len(household) > 10**6:
            raise ValueError("more than a million household businesses: the personal-id tails would repeat")
        tails = rng.choice(10**6, size=len(household), replace=False)
        born = rng.integers(1955, 2006, len(household))
        sex = rng.integers(0, 2, len(household))
        for i, tail, year, female in zip(household.tolist(), tails.tolist(), born.tolist(), sex.tolist(), strict=True):
            century = (0 if year < 2000 else 2) + female
            ids[i] = f"{PROVINCE_PERSONAL_PREFIX}{century}{year % 100:02d}{tail:06d}"
        # branches: head office code + "-NNN", numbered per chain; a chain past 999 branches gets a new code
        chain_of = rng.integers(0, 1 << 30, n)
        heads: dict[tuple[int, int], tuple[str, int]] = {}
        shop_word_pick = rng.integers(0, 1 << 30, n)
        for i in branch.tolist():
            sec = ref.sectors[self.sector[i]]
            c = int(chain_of[i] % len(sec.chains))
            code, used = heads.get((self.sector[i], c), ("", 999))
            if used == 999:
                code, used = f"{sec.chains[c].tax_prefix}{next(spare):08d}", 0
            heads[(self.sector[i], c)] = (code, used + 1)
            ids[i] = f"{code}-{used + 1:03d}"
            word = sec.shop_words[shop_word_pick[i] % len(sec.shop_words)]
            label[i] = nfc(f"Chi nhánh {sec.chains[c].name} - {word} số {used + 1}")
        picks = rng.integers(0, 1 << 30, (n, 5))
        for i in np.concatenate((enterprise, household)).tolist():
            sec = ref.sectors[self.sector[i]]
            p = picks[i]
            word = sec.shop_words[p[0] % len(sec.shop_words)]
            trade = names.trade[p[1] % len(names.trade)]
            if self.legal_form[i] == ENTERPRISE:
                kind = names.company_kinds[p[2] % len(names.company_kinds)]
                place = _place_name(ref.units[self.unit[i]].name)
                label[i] = nfc(f"{kind} {trade} {place}")
            elif p[3] % 2:
                label[i] = nfc(f"Hộ kinh doanh {word} {trade}")
            else:
                person = f"{names.surnames[p[2] % len(names.surnames)]} {names.middle[p[3] % len(names.middle)]}"
                label[i] = nfc(f"Hộ kinh doanh {person} {names.given[p[4] % len(names.given)]}")
        self.seller_ids = ids
        self.names = label

    # -- views --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.sector)

    @cached_property
    def businesses(self) -> list[Business]:
        ref = self.ref
        out = []
        for i in range(len(self)):
            first = int(self.register_first[i])
            adopted = int(self.adoption_day[i])
            out.append(
                Business(
                    seller_id=self.seller_ids[i], name=self.names[i],
                    vsic_code=ref.sectors[self.sector[i]].vsic_code, admin_unit_code=ref.units[self.unit[i]].code,
                    obliged=bool(self.obliged[i]), adopter=bool(self.adopter[i]),
                    registers=tuple(self.register_ids[first : first + int(self.register_count[i])]),
                    valid_from=from_day_number(self.valid_from_day[i]), legal_form=LEGAL_FORMS[self.legal_form[i]],
                    adopted_on=None if adopted == NEVER else from_day_number(adopted),
                    in_registry=bool(self.in_registry[i]),
                )
            )  # fmt: skip
        return out

    @cached_property
    def index_of(self) -> dict[str, int]:
        return {seller_id: i for i, seller_id in enumerate(self.seller_ids)}

    @cached_property
    def key_bytes(self) -> list[bytes]:
        """Kafka keys: the seller id, ASCII."""
        return [s.encode("ascii") for s in self.seller_ids]

    def vsic_code(self, i: int) -> str:
        return self.ref.sectors[self.sector[i]].vsic_code

    def unit_code(self, i: int) -> str:
        return self.ref.units[self.unit[i]].code

    def segment_rows(self, vsic_code: str | None, unit_codes: list[str] | None) -> np.ndarray:
        """Row mask of a segment (None = any sector / any unit)."""
        mask = np.ones(len(self), dtype=bool)
        if vsic_code is not None:
            codes = [s.vsic_code for s in self.ref.sectors]
            mask &= self.sector == codes.index(vsic_code)
        if unit_codes is not None:
            units = [u.code for u in self.ref.units]
            mask &= np.isin(self.unit, [units.index(code) for code in unit_codes])
        return mask
