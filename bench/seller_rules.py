"""What judging every seller by its own habits costs the evaluator per day (issue 24).

    .venv/bin/python bench/seller_rules.py                 # 54,600 sellers (Thanh Hóa), 117 days each
    .venv/bin/python bench/seller_rules.py --sellers 5000  # quicker

``dormant_issuer`` and ``adoption_slide`` read each seller's own history (alerts/dormant.py,
alerts/lapses.py): each evaluated day the evaluator counts the lapsed sellers of every segment on the
day and on the same weekday of the four weeks before (``lapse_counts``, five passes) and names the
dormant ones (``dormant_observations``, one pass). A synthetic province in memory (no store: the
query that feeds them is timed by the evaluator's own log), each seller issuing on 90 % of days with
1–60 invoices: the seconds each takes, side by side with the segment-figure rules of the same day
(``segment_observations`` on 27 districts × 20 sectors without seller data) as the reference, and the
ratio. Prints a table; writes bench/results/seller_rules.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import time
from pathlib import Path

from alerts.dormant import SellerActivity, dormant_observations
from alerts.lapses import lapse_counts
from alerts.observe import segment_observations
from alerts.rules import load_rules
from analytics.adoption import SegmentDay

DAY = dt.date(2024, 9, 20)
HISTORY_DAYS = 117  # what the evaluator reads: 56 days of habits + 60 reported + the day
UNITS = [str(380 + k) for k in range(27)]
SECTORS = [f"{4700 + k}" for k in range(20)]


def province(sellers: int, seed: int = 1) -> list[SellerActivity]:
    rng = random.Random(seed)
    start = DAY - dt.timedelta(days=HISTORY_DAYS - 1)
    out = []
    for i in range(sellers):
        daily = {start + dt.timedelta(days=j): rng.randint(1, 60) for j in range(HISTORY_DAYS) if rng.random() < 0.9}
        out.append(SellerActivity(f"s{i}", SECTORS[i % len(SECTORS)], UNITS[i % len(UNITS)], frozenset(daily),
                                  "ACTIVE", 30.5, daily))  # fmt: skip
    return out


def segment_rows(sellers: list[SellerActivity]) -> list[SegmentDay]:
    """The segment figures of the same province (what the rules without seller data read)."""
    per = len(sellers) // (len(UNITS) * len(SECTORS)) or 1
    start = DAY - dt.timedelta(days=HISTORY_DAYS - 1)
    rows = []
    for n in range(HISTORY_DAYS):
        day = start + dt.timedelta(days=n)
        for sector in SECTORS:
            for unit in UNITS:
                active = int(per * 0.9)
                rows.append(SegmentDay(day, sector, unit, per, active, per, per, 1.0, 1.0, active * 30, 0, 0, active,
                                       0.0))  # fmt: skip
    return rows


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sellers", type=int, default=54_600, help="sellers in the synthetic province")
    args = parser.parse_args()
    rules = load_rules()
    start = DAY - dt.timedelta(days=HISTORY_DAYS - 1)
    sellers = province(args.sellers)
    rows = segment_rows(sellers)
    weekdays = [DAY - dt.timedelta(weeks=w) for w in range(rules.adoption_slide.baseline_weeks + 1)]
    results = {
        "segment rules, figures only (reference)": timed(lambda: segment_observations(rows, DAY, rules, start)),
        "lapse_counts, 5 days": timed(lambda: [lapse_counts(sellers, d, rules, start) for d in weekdays]),
        "dormant_observations": timed(lambda: dormant_observations(sellers, UNITS, DAY, rules, start)),
    }
    reference = results["segment rules, figures only (reference)"]
    print(f"{args.sellers:,} sellers, {HISTORY_DAYS} days each, one evaluated day")
    print(f"{'step':<42} {'seconds':>8} {'ratio':>7}")
    for name, seconds in results.items():
        print(f"{name:<42} {seconds:>8.2f} {seconds / reference:>7.2f}")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "seller_rules.json").write_text(json.dumps({"sellers": args.sellers, "seconds": results}, indent=2))


if __name__ == "__main__":
    main()
