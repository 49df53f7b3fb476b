"""Scenario effects are in the output, and the ground truth says exactly what they were."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from base.localtime import DAY_MS
from cli.simulate import resolve_window
from simulator.archive import ArchiveOptions, write_archive
from simulator.engine import DUPLICATE, VALID, Columns, Simulation, SimulationConfig
from simulator.scenarios import ScenarioError, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
START = dt.date(2024, 6, 3)
DAYS = 14
CHANGE_DAY = dt.date(2024, 6, 10)


def run(*files: str, scale: float = 0.05, seed: int = 7) -> tuple[Simulation, Columns]:
    """A run's records as columns (the generator's own form: fast to check in bulk)."""
    config = SimulationConfig(scale=scale, start=START, days=DAYS, seed=seed,
                              scenarios=tuple(SCENARIOS / f for f in files))  # fmt: skip
    sim = Simulation(config)
    return sim, Columns.concat([cols for _day, cols in sim.receive_days()])


@pytest.fixture(scope="module")
def baseline():
    return run()


def issued_by_seller_day(sim: Simulation, cols: Columns, kinds: str = "issued") -> dict[str, set[dt.date]]:
    """Local issue days of each seller's invoices (valid and malformed: what the register issued)."""
    keep = cols.kind != DUPLICATE if kinds == "issued" else cols.kind == VALID
    pairs = np.unique(cols.seller[keep].astype(np.int64) * 100_000 + cols.issued[keep] // DAY_MS)
    days: dict[str, set[dt.date]] = defaultdict(set)
    for seller, day in zip((pairs // 100_000).tolist(), (pairs % 100_000).tolist(), strict=True):
        days[sim.population.seller_ids[seller]].add(dt.date(1970, 1, 1) + dt.timedelta(days=day))
    return days


def segment_rows(sim: Simulation, vsic: str, unit: str) -> np.ndarray:
    return np.flatnonzero(sim.population.segment_rows(vsic, [unit]))


def test_every_scenario_file_loads_and_resolves_at_its_own_window():
    files = sorted(SCENARIOS.glob("*.yaml"))
    assert {f.name for f in files} >= {"sector_drop.yaml", "silent_issuer.yaml", "volume_drop.yaml",
                                       "registry_change.yaml", "feed_outage.yaml", "demo.yaml"}  # fmt: skip
    assert (SCENARIOS / "README.md").exists()
    for path in files:
        scenario = load_scenario(path)
        scale, start, days = resolve_window([scenario], None, None, None, None)
        sim = Simulation(SimulationConfig(scale=scale, start=start, days=days, scenarios=(path,)), [scenario])
        assert len(sim.effects.truth) == len(scenario.changes)
        for entry in sim.effects.truth:
            assert entry["expect"] in ("alert", "no_alert")
            if entry["kind"] in ("sector_drop", "silent_issuer", "registry_change"):
                assert entry["sellers"], entry


def test_sector_drop_stops_the_chosen_share_and_nobody_else(baseline):
    sim, cols = run("sector_drop.yaml")
    (truth,) = sim.effects.truth
    assert truth["kind"] == "sector_drop" and truth["expect"] == "alert" and truth["from"] == "2024-06-10"
    assert truth["segments"] == [{"vsic_code": "5610", "admin_unit_code": "399"}]
    details = truth["details"]
    assert details["stopped"] == round(0.6 * details["issuers_before"]) == len(truth["sellers"]) > 5
    days = issued_by_seller_day(sim, cols)
    for seller in truth["sellers"]:
        assert days[seller], f"{seller} issued before the drop"
        assert max(days[seller]) < CHANGE_DAY
    # the rest of the segment keeps issuing after the drop; other segments as in the baseline
    vsic = {b.seller_id: (b.vsic_code, b.admin_unit_code) for b in sim.population.businesses}
    others = [s for s, seg in vsic.items() if seg == ("5610", "399") and s not in truth["sellers"] and days[s]]
    assert others and all(max(days[s]) >= CHANGE_DAY for s in others)
    base_days = issued_by_seller_day(*baseline)
    affected = set(truth["sellers"])
    kept = [s for s in base_days if s not in affected]
    assert sum(len(days[s]) for s in kept) == pytest.approx(sum(len(base_days[s]) for s in kept), rel=0.01)


def test_silent_issuer_is_a_regular_that_goes_quiet():
    sim, cols = run("silent_issuer.yaml")
    (truth,) = sim.effects.truth
    (seller,) = truth["sellers"]
    assert truth["details"]["expected_invoices_per_day"] >= 100
    assert truth["segments"] == [{"vsic_code": "4730", "admin_unit_code": "380"}]
    row = sim.population.index_of[seller]
    mine = (cols.seller == row) & (cols.kind == VALID)
    per_day = np.bincount(cols.issued[mine] // DAY_MS - (START - dt.date(1970, 1, 1)).days, minlength=DAYS)
    from_index = (dt.date.fromisoformat(truth["from"]) - START).days
    assert per_day[:from_index].min() > 20
    assert per_day[from_index:].sum() == 0


def test_volume_drop_keeps_every_issuer_issuing(baseline):
    sim, cols = run("volume_drop.yaml")
    (truth,) = sim.effects.truth
    assert truth["details"]["factor"] == 0.4 and truth["sellers"] == []
    segment = segment_rows(sim, "4711", "380")

    def profile(c: Columns) -> tuple[dict, dict]:
        issuers, invoices = defaultdict(set), defaultdict(int)
        keep = (c.kind != DUPLICATE) & np.isin(c.seller, segment)
        for seller, day in zip(c.seller[keep].tolist(), (c.issued[keep] // DAY_MS).tolist(), strict=True):
            date = dt.date(1970, 1, 1) + dt.timedelta(days=day)
            issuers[date].add(seller)
            invoices[date] += 1
        return issuers, invoices

    issuers, invoices = profile(cols)
    base_issuers, base_invoices = profile(baseline[1])
    assert len(base_issuers) == DAYS
    for day in sorted(base_issuers):
        assert issuers[day] == base_issuers[day]  # the same issuers every day, before and after
        ratio = invoices[day] / base_invoices[day]
        assert ratio == pytest.approx(1.0 if day < CHANGE_DAY else 0.4, abs=0.08)


def test_registry_change_moves_one_seller_and_closes_three():
    sim, cols = run("registry_change.yaml")
    move, close = sim.effects.truth
    assert (move["expect"], close["expect"]) == ("no_alert", "no_alert")
    versions = defaultdict(list)
    for value in sim.registrations():
        versions[value["seller_id"]].append(value)
    (mover,) = move["sellers"]
    first, second = versions[mover]
    assert (first["admin_unit_code"], second["admin_unit_code"]) == ("380", "405")
    assert second["valid_from"] == dt.date(2024, 6, 5) and first["valid_from"] < second["valid_from"]
    assert move["segments"] == [{"vsic_code": "5610", "admin_unit_code": "380"},
                                {"vsic_code": "5610", "admin_unit_code": "405"}]  # fmt: skip
    days = issued_by_seller_day(sim, cols)
    assert max(days[mover]) >= dt.date(2024, 6, 10)  # a move does not stop the invoices
    assert len(close["sellers"]) == 3
    for seller in close["sellers"]:
        assert versions[seller][-1]["status"] == "CLOSED"
        assert versions[seller][-1]["valid_from"] == dt.date(2024, 6, 8)
        assert max(days[seller]) < dt.date(2024, 6, 8)


def test_feed_outage_delays_but_loses_nothing(baseline):
    sim, cols = run("feed_outage.yaml")
    (truth,) = sim.effects.truth
    start_ms, end_ms = truth["details"]["received_nothing_utc_ms"]
    assert truth["from"] == "2024-06-12T09:00" and truth["until"] == "2024-06-12T15:00"
    assert not ((cols.arrival >= start_ms) & (cols.arrival < end_ms)).any()
    backlog = (cols.arrival >= end_ms) & (cols.arrival < end_ms + 30 * 60_000)
    assert backlog.sum() > 1000
    # the same invoices as without the outage (same kinds, sellers, registers, sequence numbers), some later
    base = baseline[1]

    def identity(c: Columns) -> np.ndarray:
        order = np.lexsort((c.seq, c.register, c.kind))
        return np.stack([c.kind[order], c.register[order], c.seq[order], c.issued[order]])

    assert np.array_equal(identity(cols), identity(base))
    assert sim.stats.late > baseline[0].stats.late


def test_ground_truth_file_next_to_the_output(tmp_path):
    config = SimulationConfig(scale=0.01, start=START, days=DAYS, seed=3,
                              scenarios=(SCENARIOS / "sector_drop.yaml", SCENARIOS / "feed_outage.yaml"))  # fmt: skip
    sim = Simulation(config)
    write_archive(sim, ArchiveOptions(tmp_path))
    truth = json.loads((tmp_path / "ground_truth.json").read_text(encoding="utf-8"))
    assert truth["config"]["scenarios"] == ["sector_drop.yaml", "feed_outage.yaml"]
    assert truth["window"] == {"first_issue_day": "2024-06-03", "last_issue_day": "2024-06-16",
                               "time_zone": "Asia/Ho_Chi_Minh"}  # fmt: skip
    assert [(c["file"], c["kind"], c["expect"]) for c in truth["changes"]] == [
        ("sector_drop.yaml", "sector_drop", "alert"), ("feed_outage.yaml", "feed_outage", "no_alert")
    ]  # fmt: skip
    assert truth["changes"][0]["scenario"] == "Restaurants in Hoằng Hóa stop issuing"
    assert truth["emitted"]["records"] == sim.stats.records and sum(truth["emitted"]["malformed"].values()) > 0
    # same seed, same ground truth
    again = Simulation(config)
    assert again.effects.truth == sim.effects.truth


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("changes: []", "non-empty list"),
        ("changes:\n  - kind: meteor\n", "needs `kind`"),
        ("changes:\n  - {kind: sector_drop, vsic_code: '5610', share: 1.5, from: 2024-06-10}\n", "share"),
        (
            "changes:\n  - {kind: sector_drop, vsic_code: '5610', admin_unit_code: '999', share: 0.5,"
            " from: 2024-06-10}\n",
            "unknown administrative unit",
        ),
        ("changes:\n  - {kind: feed_outage, from: '2024-06-12T09:00', hours: 30}\n", "hours"),
        ("changes:\n  - {kind: volume_drop, vsic_code: '0000', factor: 0.5, from: 2024-06-10}\n", "VSIC"),
        ("run: {weeks: 3}\nchanges:\n  - {kind: feed_outage, from: '2024-06-12T09:00', hours: 3}\n", "unknown keys"),
    ],
)
def test_bad_scenarios_are_refused_with_a_reason(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError, match=message):
        scenario = load_scenario(path)
        Simulation(SimulationConfig(scale=0.003, start=START, days=2), [scenario])


def test_toml_scenarios_too(tmp_path):
    path = tmp_path / "outage.toml"
    path.write_text('name = "x"\n[[changes]]\nkind = "feed_outage"\nfrom = "2024-06-03T10:00"\nhours = 2\n')
    sim = Simulation(SimulationConfig(scale=0.003, start=START, days=2), [load_scenario(path)])
    assert sim.effects.truth[0]["until"] == "2024-06-03T12:00"
