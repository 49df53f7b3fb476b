"""The consumer-lag judgement: is the worker behind, or only catching up? (pure logic)

A large lag alone says nothing bad: a worker that starts on a day's backlog, or after a broker
outage, is over any useful limit for a while and then done. What needs a person is a lag that is
over the limit **and** will not be gone soon: the worker is stuck, or draining slower than the
feed fills it. So each evaluator tick adds a (time, lag) sample; the drain rate is the fall of the
lag over the last ``rate_window_s`` seconds, the time to clear is lag ÷ drain rate, and a sample is
*behind* when the lag is over the limit and that time is over ``clear_within_s`` (never clearing,
if it is not falling). The alert fires once the samples were behind for ``for_`` seconds in a row
and resolves after ``clear_for`` seconds in a row that were not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alerts.rules import PipelineLag

BEHIND, HEALTHY, UNKNOWN = "behind", "healthy", "unknown"


@dataclass(frozen=True)
class LagJudgement:
    """The newest sample's verdict, with the figures an alert recipient needs to judge it."""

    at: float
    lag: int
    limit: int
    drain_per_s: float | None  # records per second the lag fell over the rate window; None with one sample
    clears_in_s: float | None  # lag ÷ drain rate; None when the lag is not falling (or unknown)
    verdict: str  # behind, healthy or unknown (a first sample over the limit: no rate yet)
    behind_for_s: float  # how long the samples have been behind, in a row (0 unless behind)
    healthy_for_s: float  # how long they have not been behind, in a row (0 unless healthy)

    def values(self, rule: PipelineLag) -> dict[str, float | int | None]:
        return {
            "consumer_lag": self.lag, "max_consumer_lag": self.limit,
            "drain_per_s": None if self.drain_per_s is None else round(self.drain_per_s, 1),
            "clears_in_s": None if self.clears_in_s is None else round(self.clears_in_s),
            "clear_within_s": rule.clear_within_s, "behind_for_s": round(self.behind_for_s),
        }  # fmt: skip


class LagWatch:
    """The recent (time, lag) samples of one evaluator, and the verdict on the newest.

    Verdicts are kept as they were given: each sample is judged once, against the samples before it.
    """

    def __init__(self, limit: int, rule: PipelineLag) -> None:
        self.limit = limit
        self.rule = rule
        self.samples: list[tuple[float, int]] = []  # the rate window, plus the sample just before it
        self.verdict = UNKNOWN
        self.since = 0.0  # when the current verdict began
        self.last: LagJudgement | None = None

    def add(self, at: float, lag: int) -> LagJudgement:
        earlier = [s for s in self.samples if s[0] < at]
        # the oldest earlier sample within the window, else the one just before (ticks sparser than the window)
        inside = [s for s in earlier if s[0] >= at - self.rule.rate_window_s]
        base = inside[0] if inside else (earlier[-1] if earlier else None)
        drain = (base[1] - lag) / (at - base[0]) if base is not None else None
        clears_in = lag / drain if drain is not None and drain > 0 else None
        if lag <= self.limit:
            verdict = HEALTHY
        elif drain is None:
            verdict = UNKNOWN
        else:
            verdict = BEHIND if clears_in is None or clears_in > self.rule.clear_within_s else HEALTHY
        if verdict != self.verdict or not earlier:
            self.verdict, self.since = verdict, at
        held = at - self.since
        self.samples = (inside or earlier[-1:]) + [(at, lag)]
        self.last = LagJudgement(
            at, lag, self.limit, drain, clears_in, verdict,
            behind_for_s=held if verdict == BEHIND else 0.0, healthy_for_s=held if verdict == HEALTHY else 0.0,
        )  # fmt: skip
        return self.last


def judge_lag(samples: Sequence[tuple[float, int]], limit: int, rule: PipelineLag) -> LagJudgement:
    """The verdict on the newest of ``samples`` ((time in s, lag in records), oldest first, at least one)."""
    watch = LagWatch(limit, rule)
    for at, lag in samples:
        judged = watch.add(at, lag)
    return judged


def condition_holds(judged: LagJudgement, rule: PipelineLag, firing: bool) -> bool:
    """pipeline_lag's condition: behind for ``for_`` seconds; once firing, until not behind for ``clear_for``."""
    if firing:
        return judged.healthy_for_s < rule.clear_for
    return rule.enabled and judged.verdict == BEHIND and judged.behind_for_s >= rule.for_
