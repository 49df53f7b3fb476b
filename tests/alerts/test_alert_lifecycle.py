"""Alert lifecycle, inhibition, silences and the statistics (pure logic)."""

from __future__ import annotations

import datetime as dt

import pytest

from alerts.lifecycle import Observation, Silence, advance, fingerprint, mark_notified
from alerts.observe import silence_observations
from alerts.rules import load_rules
from alerts.statistics import poisson_cdf, wilson_upper

DAY = dt.date(2024, 6, 1)
REPEAT = 24 * 3600.0


def obs(active, unit="399", sector="5610", rule="adoption_drop", held=False, for_=2, clear_for=2):
    return Observation(rule, {"sector": sector, "unit": unit}, active, "critical", for_, clear_for, {"x": 1}, held)


def run(instances, observations, day_index, now=None):
    day = DAY + dt.timedelta(days=day_index)
    events = advance(instances, observations, day, now or day_index * 86400.0, repeat_interval_s=REPEAT)
    mark_notified(instances, events)
    return events


def test_pending_then_firing_after_for_days_then_resolved_after_clear_for():
    instances = {}
    assert run(instances, [obs(True)], 0) == []
    fp = fingerprint("adoption_drop", {"sector": "5610", "unit": "399"})
    assert instances[fp].state == "pending"
    [fired] = run(instances, [obs(True)], 1)
    assert (fired.type, fired.day, fired.started_day, fired.suppressed_by) == ("firing", DAY + dt.timedelta(1), DAY, "")
    assert run(instances, [obs(False)], 2) == []  # one clear day is not enough
    [resolved] = run(instances, [obs(False)], 3)
    assert resolved.type == "resolved" and instances[fp].state == "resolved"


def test_a_one_day_blip_never_fires():
    instances = {}
    for i, active in enumerate([True, False, True, False]):
        assert run(instances, [obs(active)], i) == []


def test_repeat_while_firing_at_the_interval_with_a_stable_id():
    instances = {}
    run(instances, [obs(True)], 0)
    run(instances, [obs(True)], 1)
    assert run(instances, [obs(True)], 1, now=86400.0 + 3600) == []
    [repeat] = run(instances, [obs(True)], 2, now=2 * 86400.0 + 1)
    assert repeat.type == "repeat"
    again = advance(dict(instances), [obs(True)], DAY, 2 * 86400.0 + 1, repeat_interval_s=REPEAT)
    assert not again or again[0].event_id != repeat.event_id  # already notified in this slot


def test_held_days_change_nothing():
    instances = {}
    run(instances, [obs(True)], 0)
    assert run(instances, [obs(True, held=True)], 1) == []
    fp = fingerprint("adoption_drop", {"sector": "5610", "unit": "399"})
    assert instances[fp].state == "pending" and instances[fp].held_days == 1


def test_province_drop_inhibits_the_same_sectors_unit_alerts():
    instances = {}
    both = [obs(True, unit="*"), obs(True, unit="399"), obs(True, unit="380", sector="4711")]
    run(instances, both, 0)
    events = {e.labels["unit"] + "/" + e.labels["sector"]: e for e in run(instances, both, 1)}
    assert events["*/5610"].suppressed_by == ""
    assert events["399/5610"].suppressed_by.startswith("inhibited:")
    assert events["380/4711"].suppressed_by == ""


def test_a_sudden_drop_firing_mutes_the_same_segments_slide_alert_not_others():
    instances = {}
    day0 = [obs(True), obs(True, rule="adoption_slide"), obs(True, rule="adoption_slide", unit="380")]
    run(instances, day0, 0)
    events = {(e.rule, e.labels["unit"]): e for e in run(instances, day0, 1)}
    drop = fingerprint("adoption_drop", {"sector": "5610", "unit": "399"})
    assert events[("adoption_drop", "399")].suppressed_by == ""
    assert events[("adoption_slide", "399")].suppressed_by == f"inhibited:{drop}"  # its lapses say it again
    assert events[("adoption_slide", "380")].suppressed_by == ""


def test_silence_with_matchers_and_expiry():
    instances = {}
    silence = Silence("s1", {"sector": "5610"}, starts_at=0, ends_at=1.5 * 86400)
    for i in range(2):
        events = advance(instances, [obs(True)], DAY + dt.timedelta(i), i * 86400.0, repeat_interval_s=REPEAT,
                         silences=[silence])  # fmt: skip
        mark_notified(instances, events)
    assert [e.suppressed_by for e in events] == ["silence:s1"]
    # the silence expired, the alert still fires and nobody was told: notify now
    [late] = advance(instances, [obs(True)], DAY + dt.timedelta(2), 2 * 86400.0, repeat_interval_s=REPEAT,
                     silences=[silence])  # fmt: skip
    assert (late.type, late.suppressed_by) == ("firing", "")


def test_wilson_keeps_tiny_segments_quiet_and_sees_large_drops():
    assert wilson_upper(3, 5, 0.99) > 0.9  # 60% of five businesses: could well be 90%
    assert wilson_upper(300, 500, 0.99) < 0.66


@pytest.mark.parametrize(("k", "mean", "low", "high"), [(0, 3.0, 0.049, 0.05), (100, 100.0, 0.5, 0.55),
                                                         (800, 1000.0, 0.0, 1e-9)])  # fmt: skip
def test_poisson_cdf(k, mean, low, high):
    assert low <= poisson_cdf(k, mean) <= high


def test_default_rules_load_with_sector_overrides():
    rules = load_rules()
    assert rules.for_sector("adoption_drop", "4730").min_drop == 0.05
    assert rules.for_sector("adoption_drop", "5610").min_drop == 0.10
    assert rules.for_sector("dormant_issuer", "9602").silent_days == 3
    assert rules.evaluation.is_holiday(dt.date(2024, 2, 10))


def test_a_misspelt_setting_is_a_clear_error(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("adoption_drop:\n  min_drorp: 0.1\n")
    with pytest.raises(ValueError, match="min_drorp"):
        load_rules(path)


def test_a_grouped_alert_that_gains_a_member_notifies_again():
    instances = {}

    def dormant(sellers):
        return Observation("dormant_issuer", {"unit": "382"}, bool(sellers), "warning", 1, 1,
                           {"sellers": [{"seller_id": s} for s in sellers]})  # fmt: skip

    [first] = run(instances, [dormant(["a"])], 0)
    assert first.type == "firing" and first.values["new_sellers"] == ["a"]
    assert run(instances, [dormant(["a"])], 1, now=3600.0) == []
    [grew] = run(instances, [dormant(["a", "b"])], 2, now=7200.0)
    assert grew.type == "repeat" and [s["seller_id"] for s in grew.values["sellers"]] == ["a", "b"]
    assert grew.values["new_sellers"] == ["b"]  # the newcomer is told, not buried in the list


def test_a_rule_with_its_own_repeat_interval_reminds_at_it():
    """The default rules remind of a dormant seller weekly and of a segment's drop daily."""
    rules = load_rules()
    by_rule = rules.repeat_by_rule()
    assert by_rule == {"dormant_issuer": 7 * 86400.0}
    dormant = Observation("dormant_issuer", {"unit": "382"}, True, "warning", 1, 1, {"sellers": [{"seller_id": "a"}]})
    instances: dict = {}
    reminders: dict[str, list[int]] = {"dormant_issuer": [], "adoption_drop": []}
    for n in range(16):
        day = DAY + dt.timedelta(days=n)
        events = advance(instances, [dormant, obs(True)], day, n * 86400.0, repeat_interval_s=REPEAT,
                         repeat_by_rule=by_rule)  # fmt: skip
        mark_notified(instances, events)
        for event in events:
            if event.type == "repeat":
                reminders[event.rule].append(n)
    assert reminders["dormant_issuer"] == [7, 14]
    assert reminders["adoption_drop"] == list(range(2, 16))


def test_silent_hours_are_judged_against_the_days_own_level():
    """Two hours without invoices: an outage on an ordinary day, not on a stormy day at a third of its trade."""
    day = dt.date(2024, 6, 10)
    usual = {h: 12 for h in range(7, 21)}  # twelve invoices an hour from 7 to 21, every day of the week before

    def hourly(today: dict[int, int]) -> dict[str, dict[dt.datetime, int]]:
        counts = {dt.datetime.combine(day - dt.timedelta(days=k), dt.time(h)): n
                  for k in range(1, 8) for h, n in usual.items()}  # fmt: skip
        counts |= {dt.datetime.combine(day, dt.time(h)): n for h, n in today.items()}
        return {"399": counts}

    rules = load_rules()
    outage = {h: (0 if h in (10, 11) else 12) for h in usual}
    storm = {h: (0 if h in (10, 11) else 4) for h in usual}
    [seen] = silence_observations(hourly(outage), day, rules)
    assert seen.active and seen.values["silent_hours"] == [10, 11]
    [seen] = silence_observations(hourly(storm), day, rules)
    assert not seen.active and seen.values["day_level"] == round(4 / 12, 3)
