"""The realistic world (``noise="realistic"``) has the properties it claims, measured on a generated feed.

Each property is checked in the realistic world and, where it could hold by chance, shown absent in
the default world of the same population: a test that passes with the noise switched off proves
nothing about it. The default world is pinned byte for byte to its output before the realistic world
existed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from simulator.engine import DUPLICATE, Simulation, SimulationConfig
from simulator.noise import WEEKDAYS

START = dt.date(2024, 8, 12)  # a Monday; four weeks to 8 September, over National Day (2–3 September)
DAYS = 28
HOLIDAY = (dt.date(2024, 9, 2), dt.date(2024, 9, 3))


def seller_days(sim: Simulation) -> np.ndarray:
    """(sellers, days) invoices issued per seller and issue day (malformed ones too: they were issued)."""
    out = np.zeros((len(sim.population), sim.config.days))
    for j in range(sim.config.days):
        cols = sim.generate_day(j)
        out[:, j] = np.bincount(cols.seller[cols.kind != DUPLICATE], minlength=len(sim.population))
    return out


def run(noise: str) -> tuple[Simulation, np.ndarray]:
    sim = Simulation(SimulationConfig(scale=0.005, start=START, days=DAYS, seed=3, noise=noise))
    return sim, seller_days(sim)


@pytest.fixture(scope="module")
def realistic() -> tuple[Simulation, np.ndarray, dict]:
    sim, counts = run("realistic")
    return sim, counts, sim.ground_truth()["noise"]


@pytest.fixture(scope="module")
def default() -> tuple[Simulation, np.ndarray]:
    return run("poisson")


def rows_of(sim: Simulation, entries: list) -> np.ndarray:
    ids = [e if isinstance(e, str) else e["seller_id"] for e in entries]
    return np.array([sim.population.index_of[s] for s in ids], dtype=np.int64)


def day_index(day: str | dt.date) -> int:
    return ((dt.date.fromisoformat(day) if isinstance(day, str) else day) - START).days


def regular_rows(sim: Simulation, truth: dict) -> np.ndarray:
    """Issuers active all window long with none of the realistic world's special traits."""
    special = set()
    for key in ("stopped", "started", "part_time", "closed_weekday"):
        special |= {e["seller_id"] for e in truth[key]}
    special |= set(truth["holiday"]["closed"])
    pop = sim.population
    rows = np.flatnonzero(pop.adopter & (pop.adoption_day <= sim.first_day))
    return np.array([r for r in rows.tolist() if pop.seller_ids[r] not in special])


def test_the_default_world_is_byte_identical_to_before():
    """Digests of the feed and ground truth, taken before the realistic world was added (commit 9661f63)."""

    def digest(**kwargs) -> str:
        sim = Simulation(SimulationConfig(scale=0.003, start=dt.date(2024, 8, 26), days=10, seed=3, **kwargs))
        h = hashlib.sha256()
        for r in sim.feed_records():
            h.update(r.key + r.value + str(r.timestamp_ms).encode() + r.kind.encode())
        h.update(json.dumps(sim.ground_truth(), sort_keys=True, default=str).encode())
        return h.hexdigest()

    assert digest() == "ec3e0691d1f6870eddb2d2a9fb79a104a1f9a91541dfe8aacd6798a960249c43"
    assert digest(scenarios=(Path("scenarios/sector_drop.yaml"),)) == (
        "1608d3cae34169457eb71d0448efcc13013fe3b44a35bb3b6cd789db441e1383"
    )
    assert digest(noise="realistic") != digest()


def test_seller_days_are_over_dispersed_only_in_the_realistic_world(realistic, default):
    sim, counts, truth = realistic
    rows = regular_rows(sim, truth)
    busy = rows[default[1][rows].mean(axis=1) >= 5]  # the same sellers in both worlds
    assert len(busy) > 50

    def vmr(c: np.ndarray) -> np.ndarray:
        return c.var(axis=1, ddof=1) / c.mean(axis=1)

    plain, lumpy = vmr(default[1][busy]), vmr(counts[busy])
    assert 0.8 < np.median(plain) < 1.6  # Poisson, with a weekly cycle and the month turn absent
    assert np.median(lumpy) > 4  # gamma-Poisson: 1 + rate / k
    # the dispersion varies by seller: excess variance per invoice spreads over an order of magnitude
    excess = (lumpy - 1) / counts[busy].mean(axis=1)
    assert np.percentile(excess, 90) > 4 * np.percentile(excess, 10)


def test_the_harsh_world_is_the_realistic_one_pushed_further(realistic):
    """``noise="harsh"`` reads [noise.harsh] over [noise]: lumpier sellers, more closed weekdays, more churn."""
    sim, counts, truth = realistic
    harsh = Simulation(SimulationConfig(scale=0.005, start=START, days=DAYS, seed=3, noise="harsh"))
    harsh_counts, harsh_truth = seller_days(harsh), harsh.ground_truth()["noise"]
    assert harsh_truth["model"] == "harsh" and truth["model"] == "realistic"
    rows = regular_rows(sim, truth)
    busy = rows[counts[rows].mean(axis=1) >= 5]

    def vmr(c: np.ndarray) -> np.ndarray:
        return c.var(axis=1, ddof=1) / c.mean(axis=1)

    assert np.median(vmr(harsh_counts[busy])) > 1.5 * np.median(vmr(counts[busy]))
    for key in ("stopped", "part_time", "closed_weekday"):
        assert len(harsh_truth[key]) > 1.3 * len(truth[key]), key


def test_sellers_closed_on_a_fixed_weekday_issue_nothing_that_day(realistic, default):
    sim, counts, truth = realistic
    closed = truth["closed_weekday"]
    assert len(closed) > 20
    weekdays = np.array([(START + dt.timedelta(days=j)).weekday() for j in range(DAYS)])
    open_elsewhere = 0
    for entry in closed:
        row = sim.population.index_of[entry["seller_id"]]
        that_day = weekdays == WEEKDAYS.index(entry["weekday"])
        assert counts[row, that_day].sum() == 0, entry
        open_elsewhere += counts[row, ~that_day].sum() > 0
    assert open_elsewhere > 0.8 * len(closed)
    # the same sellers in the default world do issue on their "closed" weekday
    days = np.array([weekdays == WEEKDAYS.index(e["weekday"]) for e in closed])
    assert (default[1][rows_of(sim, closed)] * days).sum() > 0


def test_part_time_sellers_have_days_without_a_single_invoice(realistic, default):
    sim, counts, truth = realistic
    part = rows_of(sim, truth["part_time"])
    assert len(part) >= 5
    steady = default[1][part].mean(axis=1) >= 3  # busy enough that a zero day is no accident
    assert steady.sum() >= 3
    idle = (counts[part[steady]] == 0).mean(axis=1)
    open_share = np.array([e["open_share"] for e in truth["part_time"]])[steady]
    assert np.all(idle >= 0.5 * (1 - open_share))
    assert np.mean(idle) > 0.2
    assert (default[1][part[steady]] == 0).mean() < 0.05


def test_stopped_sellers_issue_nothing_from_their_stop_day_and_starters_nothing_before(realistic):
    sim, counts, truth = realistic
    assert truth["stopped"] and truth["started"]
    issued_before = 0
    for entry in truth["stopped"]:
        row, first = sim.population.index_of[entry["seller_id"]], day_index(entry["from"])
        assert 0 < first < DAYS and counts[row, first:].sum() == 0, entry
        issued_before += counts[row, :first].sum() > 0
    assert issued_before >= 0.7 * len(truth["stopped"])
    issued_after = 0
    for entry in truth["started"]:
        row, first = sim.population.index_of[entry["seller_id"]], day_index(entry["from"])
        assert counts[row, :first].sum() == 0, entry
        issued_after += counts[row, first:].sum() > 0
    assert issued_after >= 0.7 * len(truth["started"])
    # a stopped seller stays in the registry
    registered = {r["seller_id"] for r in sim.registrations()}
    assert {e["seller_id"] for e in truth["stopped"]} <= registered


def test_the_holiday_is_quieter_and_its_closures_are_in_the_ground_truth(realistic, default):
    sim, counts, truth = realistic
    assert truth["holiday"]["days"] == [d.isoformat() for d in HOLIDAY]
    closed = rows_of(sim, truth["holiday"]["closed"])
    assert len(closed) > 10
    on_holiday = [day_index(d) for d in HOLIDAY]
    assert counts[np.ix_(closed, on_holiday)].sum() == 0
    assert default[1][np.ix_(closed, on_holiday)].sum() > 0

    def holiday_ratio(c: np.ndarray) -> float:
        """The holiday's volume over the same weekdays' mean in the other weeks."""
        total = c.sum(axis=0)
        ratios = []
        for j in on_holiday:
            others = [k for k in range(j % 7, DAYS, 7) if k != j]
            ratios.append(total[j] / total[others].mean())
        return float(np.mean(ratios))

    assert holiday_ratio(counts) < 0.85
    assert holiday_ratio(default[1]) > 0.9


def test_district_days_vary_more_in_the_realistic_world(realistic, default):
    """District shocks and storms: a district's day over its sellers' Poisson expectation."""
    sim, counts, truth = realistic
    assert truth["storms"]
    unit = sim.population.unit
    regular = regular_rows(sim, truth)

    def spread(c: np.ndarray) -> float:
        by_unit = np.array([c[regular[unit[regular] == u]].sum(axis=0) for u in range(len(sim.ref.units))])
        big = by_unit.mean(axis=1) > 200
        ratio = by_unit[big] / by_unit[big].mean(axis=1, keepdims=True)
        return float(np.median(ratio.std(axis=1)))

    assert spread(counts) > 1.5 * spread(default[1])


def test_the_command_line_writes_the_realistic_world_and_its_ground_truth(tmp_path, monkeypatch):
    monkeypatch.setenv("EINVOICE_DATA_DIR", str(tmp_path / "data"))
    args = ["simulate", "--to", "files", "--scale", "0.002", "--days", "3", "--start", "2024-09-01"]
    result = CliRunner().invoke(app, [*args, "--noise", "realistic", "--out", str(tmp_path / "real")])
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "real" / "ground_truth.json").read_text())
    assert truth["config"]["noise"] == "realistic"
    assert truth["noise"]["holiday"]["days"] == ["2024-09-02", "2024-09-03"]
    assert {"stopped", "started", "part_time", "closed_weekday", "storms"} <= set(truth["noise"])
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "plain")])
    assert result.exit_code == 0, result.output
    plain = json.loads((tmp_path / "plain" / "ground_truth.json").read_text())
    assert "noise" not in plain and "noise" not in plain["config"]
    bad = CliRunner().invoke(app, [*args, "--noise", "wild", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
