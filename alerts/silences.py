"""Silences are records on the compacted topic ``adoption.silences``: the CLI writes, the evaluator reads."""

from __future__ import annotations

import json
import time
import uuid

from kafka import KafkaProducer

from alerts.lifecycle import Silence
from base.kafka import DURABLE_PRODUCER

MATCHABLE = ("rule", "sector", "unit")


def add_silence(
    bootstrap: str, topic: str, matchers: dict[str, str], duration_s: float, comment: str, created_by: str
) -> Silence:
    if not matchers:
        raise ValueError("a silence needs at least one matcher (--rule, --sector or --unit)")
    unknown = set(matchers) - set(MATCHABLE)
    if unknown:
        raise ValueError(f"cannot match on {', '.join(sorted(unknown))}; use {', '.join(MATCHABLE)}")
    if duration_s <= 0:
        raise ValueError("the silence must last a positive time")
    now = time.time()
    silence = Silence(uuid.uuid4().hex[:12], matchers, now, now + duration_s, comment, created_by)
    body = {"silence_id": silence.silence_id, "matchers": matchers, "starts_at": silence.starts_at,
            "ends_at": silence.ends_at, "comment": comment, "created_by": created_by}  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=bootstrap, **DURABLE_PRODUCER)
    try:
        producer.send(topic, key=silence.silence_id.encode(), value=json.dumps(body, ensure_ascii=False).encode())
        producer.flush()
    finally:
        producer.close()
    return silence


def remove_silence(bootstrap: str, topic: str, silence_id: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, **DURABLE_PRODUCER)
    try:
        producer.send(topic, key=silence_id.encode(), value=None)
        producer.flush()
    finally:
        producer.close()


def parse_duration(text: str) -> float:
    """'90m', '4h', '2d' or seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise ValueError(f"duration {text!r}: use e.g. 90m, 4h, 2d") from None
