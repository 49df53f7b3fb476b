"""The generator: a population and its scenarios in, the feed out, day by day, in arrival order.

Per local issue day, the invoices of all active issuers are drawn at once as numpy columns
(counts, hours, registers, amounts, payment methods, delays), then malformed records, feed
duplicates and outages are applied. Records leave in the order the feed received them
(Kafka timestamp), one receive day at a time: an event issued on day d arrives on day d or later,
so once day d is generated, every record received before its end is known.

Randomness comes from numpy generators seeded with (seed, purpose[, day]): the same seed and
arguments give the same records, byte for byte.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from base.config import INVOICE_SUBJECT, REGISTRY_SUBJECT
from base.localtime import DAY_MS, HOUR_MS, LOCAL_OFFSET_MS, TIME_ZONE
from contracts.codec import AvroCodec, SchemaCatalog
from contracts.validation import NON_CASH_METHODS
from simulator.encoding import PAYMENT_METHODS, EncodedBatch, SellerTables, encode_archive_records
from simulator.feed import MALFORMED_KINDS, TOO_OLD_DELAY_MS, FeedRecord, corrupt, local_datetime
from simulator.model import day_factors, day_number, hour_cdf
from simulator.noise import NOISES, NoiseWorld
from simulator.population import ENTERPRISE, Population
from simulator.reference import DEFAULT_REFERENCE, load_reference
from simulator.scenarios import Effects, Scenario, load_scenario, resolve_scenarios, stopped_on

VALID, DUPLICATE, MALFORMED = 0, 1, 2  # kind codes; malformed kind k is MALFORMED + k
MAX_TICKET_VND = 500_000_000  # a lognormal tail beyond this is not a cash-register sale
CHUNK = 200_000  # rows encoded at a time: bounds memory at scale 1.0


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines the output; the same config gives the same bytes."""

    scale: float = 0.01
    start: dt.date = dt.date(2024, 6, 1)
    days: int = 7
    seed: int = 1
    late_share: float = 0.03
    duplicate_share: float = 0.02
    malformed_share: float = 0.01
    malformed_kinds: tuple[str, ...] = MALFORMED_KINDS
    volume: float = 1.0  # multiplies every issuer's rate, on top of the scale (tests, demos)
    target_invoices: int | None = None  # overrides volume: about this many valid invoices in the run
    unregistered: int = 0  # extra issuers missing from the registry feed
    scenarios: tuple[Path, ...] = ()
    reference: Path = DEFAULT_REFERENCE
    noise: str = "poisson"  # or "realistic": lumpy, closing, churning sellers (simulator/noise.py); or "harsh"

    def __post_init__(self) -> None:
        if self.scale <= 0 or self.days < 1:
            raise ValueError("scale must be positive and days at least 1")
        for name in ("late_share", "duplicate_share", "malformed_share"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1)")
        unknown = set(self.malformed_kinds) - set(MALFORMED_KINDS)
        if unknown or not self.malformed_kinds:
            raise ValueError(f"malformed kinds must be among {', '.join(MALFORMED_KINDS)}")
        if self.noise not in NOISES:
            raise ValueError(f"noise must be one of {', '.join(NOISES)}")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "noise" and value == "poisson":
                continue  # the default world's ground truth stays byte for byte what it was
            if f.name == "scenarios":
                value = [p.name for p in value]
            elif f.name == "reference":
                value = Path(value).name
            elif isinstance(value, dt.date):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


def registry_scale(businesses: int, reference: Path = DEFAULT_REFERENCE) -> float:
    """The scale at which the registry holds about ``businesses`` businesses (tests size feeds by sellers)."""
    ref = load_reference(reference)
    return businesses / sum(s.eligible + s.not_obliged for s in ref.sectors)


@dataclass
class Columns:
    """Feed records, column-wise; ``issued`` is the clean local wall-clock time in ms."""

    seller: np.ndarray  # row of the population
    register: np.ndarray  # row of the population's register table
    seq: np.ndarray  # the register's sequence number
    issued: np.ndarray
    amount: np.ndarray  # VND before VAT; the VAT follows from the seller's rate
    payment: np.ndarray  # index into PAYMENT_METHODS
    tail: np.ndarray  # row of SellerTables.tail: 0 (v1), 1 (v2, no buyer), 2+ (a buyer's tax code)
    arrival: np.ndarray  # record timestamp, UTC epoch ms
    kind: np.ndarray  # VALID, DUPLICATE or MALFORMED + k

    def __len__(self) -> int:
        return len(self.seller)

    def take(self, index: np.ndarray) -> Columns:
        return Columns(*(getattr(self, f.name)[index] for f in fields(self)))

    def slice(self, a: int, b: int) -> Columns:
        return Columns(*(getattr(self, f.name)[a:b] for f in fields(self)))

    @classmethod
    def concat(cls, parts: list[Columns]) -> Columns:
        if len(parts) == 1:
            return parts[0]
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)))

    @classmethod
    def empty(cls) -> Columns:
        return cls(*(np.zeros(0, dtype=np.int64) for _ in fields(cls)))

    def vat(self, population: Population) -> np.ndarray:
        return self.amount * population.vat_rate[self.seller] // 100


@dataclass
class Stats:
    """What was emitted, by kind: the run's own accounting (also in the ground-truth file)."""

    records: int = 0
    valid: int = 0
    duplicate: int = 0
    late: int = 0
    malformed: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "valid": self.valid, "duplicate": self.duplicate, "late": self.late,
                "malformed": dict(sorted(self.malformed.items()))}  # fmt: skip


class Simulation:
    """One run: population, scenario effects, and the feed they produce."""

    def __init__(self, config: SimulationConfig, scenarios: list[Scenario] | None = None) -> None:
        self.config = config
        self.ref = load_reference(config.reference)
        self.population = Population(self.ref, config.scale, config.seed, config.unregistered)
        self.scenarios = scenarios if scenarios is not None else [load_scenario(p) for p in config.scenarios]
        self.first_day = day_number(config.start)
        self.factors = day_factors(self.ref, config.start, config.days)
        self.volume = 1.0
        baseline = self.expected_issued_per_day().sum()
        if config.target_invoices is not None:
            issued = config.target_invoices / (1 - config.malformed_share)
            self.volume = issued / baseline if baseline > 0 else 1.0
        else:
            self.volume = config.volume
        self.noise = (
            NoiseWorld(self.ref, self.population, config.seed, config.start, config.days, config.noise)
            if config.noise != "poisson" else None
        )  # fmt: skip
        exclude = self.noise.not_for_scenarios() if self.noise is not None else None
        self.effects: Effects = resolve_scenarios(self.scenarios, self.population, config.seed, self.volume, exclude)
        pop = self.population
        enterprises = np.flatnonzero(pop.legal_form == ENTERPRISE)
        self.buyers = [pop.seller_ids[i] for i in enterprises[: min(len(enterprises), 5000)].tolist()]
        if not self.buyers:
            self.buyers = ["2800000001"]
        schemas = SchemaCatalog.load()
        self.codec = AvroCodec(schemas, INVOICE_SUBJECT)
        self.registry_codec = AvroCodec(schemas, REGISTRY_SUBJECT)
        self.tables = SellerTables.build(
            pop.seller_ids, pop.form, pop.v2, pop.symbol_tail, pop.register_ids, pop.register_owner, self.buyers,
            schema_ids=(self.codec.schemas.version(INVOICE_SUBJECT, 1).schema_id, self.codec.reader.schema_id),
        )  # fmt: skip
        self._prepare_sector_tables()
        self.stats = Stats()

    # -- model at the population level ---------------------------------------------------------

    def expected_issued_per_day(self) -> np.ndarray:
        """Expected invoices issued per day of the run (valid + malformed), no scenario, with this volume."""
        pop = self.population
        out = np.zeros(self.config.days)
        for j in range(self.config.days):
            rows = pop.adopter & (pop.adoption_day <= self.first_day + j)
            out[j] = float((pop.rate[rows] * self.factors[pop.sector[rows], j]).sum()) * self.volume
        return out

    def expected_records(self) -> int:
        """About how many records the run emits (for progress bars)."""
        issued = self.expected_issued_per_day().sum()
        valid = issued * (1 - self.config.malformed_share)
        return int(issued + valid * self.config.duplicate_share)

    def _prepare_sector_tables(self) -> None:
        ref = self.ref
        profiles = sorted(ref.hour_profiles)
        self._profile_of_sector = np.array([profiles.index(s.hours) for s in ref.sectors])
        self._hour_cdf = np.concatenate([hour_cdf(ref, p) + k for k, p in enumerate(profiles)])
        self._sigma = np.array([s.ticket_sigma for s in ref.sectors])
        self._non_cash = np.array([s.non_cash for s in ref.sectors])
        splits = np.array([[s.non_cash_split.get(m, 0.0) for m in NON_CASH_METHODS] for s in ref.sectors])
        cum = np.cumsum(splits, axis=1) / splits.sum(axis=1, keepdims=True)
        self._split_cdf = (cum + np.arange(len(splits))[:, None]).ravel()  # sector s's CDF shifted by s
        self._method_code = np.array([PAYMENT_METHODS.index(m) for m in NON_CASH_METHODS])
        self._kind_code = np.array([MALFORMED + MALFORMED_KINDS.index(k) for k in self.config.malformed_kinds])
        self._thin_masks = []
        for thinning in self.effects.thinnings:
            mask = np.zeros(len(self.population), dtype=bool)
            mask[thinning.rows] = True
            self._thin_masks.append((mask, thinning))
        self._counters = np.random.default_rng([self.config.seed, 0x534551]).integers(
            0, 50_000, len(self.population.register_ids)
        )  # "SEQ": registers have been counting since adoption
        self._issued_total = 0
        self._malformed_total = 0
        self._valid_total = 0
        self._duplicate_total = 0

    # -- one issue day ------------------------------------------------------------------------

    def generate_day(self, j: int) -> Columns:
        """Every record issued on day ``j`` of the run (valid, malformed, duplicates), unordered."""
        cfg, ref, pop = self.config, self.ref, self.population
        day = self.first_day + j
        rng = np.random.default_rng([cfg.seed, 0x494E56, day])  # "INV"
        rows = np.flatnonzero(pop.adopter & (pop.adoption_day <= day))
        rows = rows[~stopped_on(self.effects, day, len(pop))[rows]]
        lam = pop.rate[rows] * self.factors[pop.sector[rows], j] * self.volume
        if self.noise is not None:
            lam = lam * self.noise.day_multiplier(rows, j)
        counts = rng.poisson(lam)
        for mask, thinning in self._thin_masks:
            if thinning.first_day <= day and (thinning.end_day is None or day < thinning.end_day):
                sel = mask[rows] & (counts > 0)
                counts[sel] = np.maximum(1, rng.binomial(counts[sel], thinning.factor))
        seller = np.repeat(rows, counts)
        n = len(seller)
        sector = pop.sector[seller]
        profile = self._profile_of_sector[sector]
        hour = np.searchsorted(self._hour_cdf, rng.random(n) + profile, side="right") - profile * 24
        issued = day * DAY_MS + np.clip(hour, 0, 23) * HOUR_MS + rng.integers(0, HOUR_MS, n)
        register = pop.register_first[seller] + (rng.random(n) * pop.register_count[seller]).astype(np.int64)
        ticket = pop.price[seller] * np.exp(self._sigma[sector] * rng.standard_normal(n))
        amount = np.clip(np.rint(ticket / 1000.0), 1, MAX_TICKET_VND // 1000).astype(np.int64) * 1000
        non_cash = rng.random(n) < self._non_cash[sector]
        method = np.searchsorted(self._split_cdf, rng.random(n) + sector, side="right") - sector * 3
        payment = np.where(non_cash, self._method_code[np.clip(method, 0, 2)], 0)
        v2 = pop.v2[seller]
        b2b = v2 & (rng.random(n) < ref.b2b_share)
        tail = np.where(b2b, 2 + rng.integers(0, len(self.buyers), n), v2.astype(np.int64))
        lo, hi = ref.normal_delay_ms
        delay = rng.integers(lo, hi + 1, n)
        late = rng.random(n) < cfg.late_share
        lo_min, hi_min = ref.late_delay_minutes
        late_ms = np.exp(rng.uniform(math.log(lo_min), math.log(hi_min), n)) * 60_000
        delay = np.where(late, late_ms.astype(np.int64), delay)
        arrival = issued - LOCAL_OFFSET_MS + delay
        kind = np.zeros(n, dtype=np.int8)
        # malformed: exactly floor(share × issued so far), kinds in turn, rows at random
        self._issued_total += n
        due = int(cfg.malformed_share * self._issued_total) - self._malformed_total
        if due > 0:
            pick = rng.choice(n, size=due, replace=False)
            order = (self._malformed_total + np.arange(due)) % len(self._kind_code)
            kind[pick] = self._kind_code[order]
            self._malformed_total += due
            too_old = kind == MALFORMED + MALFORMED_KINDS.index("issued_too_old")
            arrival[too_old] = issued[too_old] - LOCAL_OFFSET_MS + TOO_OLD_DELAY_MS
        # sequence numbers per register, in issue-time order
        order = np.argsort(register * DAY_MS + (issued - day * DAY_MS))
        reg_sorted = register[order]
        first = np.flatnonzero(np.r_[True, reg_sorted[1:] != reg_sorted[:-1]])
        rank = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
        seq = np.empty(n, dtype=np.int64)
        seq[order] = self._counters[reg_sorted] + rank + 1
        self._counters += np.bincount(register, minlength=len(self._counters))
        cols = Columns(seller.astype(np.int32), register.astype(np.int32), seq, issued, amount,
                       payment.astype(np.int8), tail.astype(np.int32), arrival, kind)  # fmt: skip
        # feed duplicates: the same bytes again, seconds to minutes later
        valid = np.flatnonzero(kind == VALID)
        self._valid_total += len(valid)
        due = int(cfg.duplicate_share * self._valid_total) - self._duplicate_total
        if due > 0:
            dups = cols.take(np.sort(rng.choice(valid, size=due, replace=False)))
            lo, hi = ref.duplicate_delay_ms
            dups.arrival = dups.arrival + rng.integers(lo, hi + 1, due)
            dups.kind = np.full(due, DUPLICATE, dtype=np.int8)
            self._duplicate_total += due
            cols = Columns.concat([cols, dups])
        for outage in self.effects.outages:
            hit = (cols.arrival >= outage.start_ms) & (cols.arrival < outage.end_ms)
            drain = int(ref.outage_drain_minutes * 60_000)
            cols.arrival[hit] = outage.end_ms + rng.integers(0, drain, int(hit.sum()))
        return cols

    # -- arrival order ------------------------------------------------------------------------

    def receive_days(self) -> Iterator[tuple[dt.date, Columns]]:
        """(local receive day, its records sorted by timestamp), one day at a time."""
        pending = Columns.empty()
        for j in range(self.config.days):
            pending = Columns.concat([pending, self.generate_day(j)])
            horizon = (self.first_day + j + 1) * DAY_MS - LOCAL_OFFSET_MS  # nothing later is received earlier
            due = np.flatnonzero(pending.arrival < horizon)
            rest = np.flatnonzero(pending.arrival >= horizon)
            yield from self._split_by_day(pending.take(due[np.argsort(pending.arrival[due], kind="stable")]))
            pending = pending.take(rest)
        yield from self._split_by_day(pending.take(np.argsort(pending.arrival, kind="stable")))

    def _split_by_day(self, cols: Columns) -> Iterator[tuple[dt.date, Columns]]:
        """Sorted records cut at local midnights."""
        if not len(cols):
            return
        days = (cols.arrival + LOCAL_OFFSET_MS) // DAY_MS
        bounds = np.flatnonzero(np.r_[True, days[1:] != days[:-1], True])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            part = cols.slice(a, b)
            self._count(part)
            yield dt.date(1970, 1, 1) + dt.timedelta(days=int(days[a])), part

    def _count(self, cols: Columns) -> None:
        stats = self.stats
        stats.records += len(cols)
        valid = cols.kind == VALID
        stats.valid += int(valid.sum())
        stats.duplicate += int((cols.kind == DUPLICATE).sum())
        delay = cols.arrival - (cols.issued - LOCAL_OFFSET_MS)
        stats.late += int((valid & (delay > self.ref.normal_delay_ms[1])).sum())
        for code, n in zip(*np.unique(cols.kind[cols.kind >= MALFORMED], return_counts=True), strict=True):
            stats.malformed[MALFORMED_KINDS[int(code) - MALFORMED]] += int(n)

    # -- bytes --------------------------------------------------------------------------------

    def chunks(self, cols: Columns, size: int = CHUNK) -> Iterator[Columns]:
        for a in range(0, len(cols), size):
            yield cols.slice(a, a + size)

    def encode(self, cols: Columns) -> EncodedBatch:
        """Archive records of ``cols`` (values Confluent-framed), malformed ones broken as labelled."""
        malformed = np.flatnonzero(cols.kind >= MALFORMED).tolist()
        replacements = {row: self._malformed_value(cols, row) for row in malformed}
        return encode_archive_records(
            self.tables, cols.seller, cols.register, cols.seq, cols.issued, cols.amount,
            self.population.vat_rate[cols.seller], cols.vat(self.population), cols.payment, cols.tail, cols.arrival,
            replacements,
        )  # fmt: skip

    def clean_value(self, cols: Columns, row: int) -> dict[str, Any]:
        """The InvoiceIssued value of a row, as a dict (the slow path: malformed records, tests)."""
        pop = self.population
        seller = int(cols.seller[row])
        issued = local_datetime(int(cols.issued[row]))
        yy = f"{issued.year % 100:02d}"
        form = int(pop.form[seller])
        register = pop.register_ids[int(cols.register[row])]
        amount, rate = int(cols.amount[row]), int(pop.vat_rate[seller])
        value: dict[str, Any] = {
            "seller_id": pop.seller_ids[seller], "invoice_form": form,
            "invoice_symbol": f"C{yy}M{pop.symbol_tail[seller]}",
            "invoice_code": f"M{form}-{yy}-{register}-{int(cols.seq[row]):011d}", "issued_at": issued,
            "amount_vnd": amount, "vat_rate": rate, "vat_amount_vnd": amount * rate // 100,
            "payment_method": PAYMENT_METHODS[int(cols.payment[row])],
            "register_id": register,
        }  # fmt: skip
        if pop.v2[seller]:
            tail = int(cols.tail[row])
            value["buyer_tax_code"] = self.buyers[tail - 2] if tail >= 2 else None
        return value

    def _malformed_value(self, cols: Columns, row: int) -> bytes:
        kind = MALFORMED_KINDS[int(cols.kind[row]) - MALFORMED]
        version = 2 if self.population.v2[int(cols.seller[row])] else 1
        return corrupt(kind, self.clean_value(cols, row), self.codec, version, int(cols.arrival[row]),
                       int(cols.seq[row]))  # fmt: skip

    def label(self, code: int) -> str:
        if code == VALID:
            return "valid"
        if code == DUPLICATE:
            return "duplicate"
        return f"malformed:{MALFORMED_KINDS[code - MALFORMED]}"

    def feed_records(self) -> Iterator[FeedRecord]:
        """Every record with its label, in arrival order (small runs: tests, the demo)."""
        pop = self.population
        labels = [self.label(code) for code in range(MALFORMED + len(MALFORMED_KINDS))]
        forms = pop.form.tolist()
        epoch = dt.datetime(1970, 1, 1)
        for _day, cols in self.receive_days():
            for chunk in self.chunks(cols):
                values = self.encode(chunk).values()
                columns = zip(
                    values, chunk.seller.tolist(), chunk.register.tolist(), chunk.seq.tolist(), chunk.issued.tolist(),
                    chunk.arrival.tolist(), chunk.kind.tolist(), chunk.amount.tolist(), chunk.vat(pop).tolist(),
                    strict=True,
                )  # fmt: skip
                for value, seller, reg, seq, issued_ms, arrival, kind, amount, vat in columns:
                    issued = epoch + dt.timedelta(milliseconds=issued_ms)
                    code = f"M{forms[seller]}-{issued.year % 100:02d}-{pop.register_ids[reg]}-{seq:011d}"
                    yield FeedRecord(pop.key_bytes[seller], value, arrival, labels[kind], pop.seller_ids[seller], code,
                                     issued, amount, vat)  # fmt: skip

    # -- registry -----------------------------------------------------------------------------

    @property
    def registry_timestamp_ms(self) -> int:
        """Registry records are stamped an hour before the first issue day (deterministic output)."""
        return self.first_day * DAY_MS - LOCAL_OFFSET_MS - HOUR_MS

    def registrations(self) -> list[dict[str, Any]]:
        """BusinessRegistration values in publishing order: each business, then the scenarios' later versions."""
        businesses = self.population.businesses
        out = [b.registration() for b in businesses if b.in_registry]
        for version in sorted(self.effects.versions, key=lambda v: (v.valid_from, v.row)):
            out.append(businesses[version.row].registration(valid_from=version.valid_from, **version.changes))
        return out

    def ground_truth(self) -> dict[str, Any]:
        """What the run did: its configuration, each scenario change, and the emitted counts."""
        return {
            "generator": "einvoice-monitor simulate",
            "config": {**self.config.as_dict(), "volume": self.volume},
            "window": {"first_issue_day": self.config.start.isoformat(),
                       "last_issue_day": (self.config.start + dt.timedelta(days=self.config.days - 1)).isoformat(),
                       "time_zone": TIME_ZONE},
            "population": {"businesses": len(self.population), "registered": int(self.population.in_registry.sum()),
                           "adopters": int(self.population.adopter.sum())},
            "changes": self.effects.truth,
            "emitted": self.stats.as_dict(),
            **({"noise": self.noise.truth()} if self.noise is not None else {}),
        }  # fmt: skip
