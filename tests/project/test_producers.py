"""Every producer of the project writes durably: acks=all and idempotent, from one definition.

The dead letters, alert events, silences and the simulator's feed are acknowledged to their writer
only once ``min.insync.replicas`` brokers hold them; a retry after a leader died mid-request does not
write them twice. A producer that forgot it would lose records on the first broker failure and no test
on one broker would notice, so the source itself is checked: every ``AIOKafkaProducer(...)`` and
``KafkaProducer(...)`` outside tests and benchmarks passes ``**DURABLE_PRODUCER`` and overrides
neither setting. Faust's own producer (the registry table's changelog) is held to ``acks=all``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from base.kafka import DURABLE_PRODUCER

ROOT = Path(__file__).resolve().parents[2]
NOT_PRODUCTION = {"tests", "bench", "fuzz", "native", ".venv", ".git", "node_modules", ".data"}
PRODUCERS = {"AIOKafkaProducer", "KafkaProducer"}


def producer_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted(ROOT.rglob("*.py")):
        if NOT_PRODUCTION & set(path.relative_to(ROOT).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in PRODUCERS:
                    calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def test_the_durable_settings_are_acks_all_with_idempotence():
    assert DURABLE_PRODUCER == {"acks": "all", "enable_idempotence": True}


def test_every_producer_in_the_project_code_is_durable():
    calls = producer_calls()
    # the dead letters (two), alert events, silences (two), the simulator's feed, the sample alert sender
    assert len(calls) >= 7, calls
    problems = []
    for where, call in calls:
        spread = [k.value for k in call.keywords if k.arg is None]
        if not any(isinstance(v, ast.Name) and v.id == "DURABLE_PRODUCER" for v in spread):
            problems.append(f"{where}: does not pass **DURABLE_PRODUCER")
        overridden = {k.arg for k in call.keywords} & set(DURABLE_PRODUCER)
        if overridden:
            problems.append(f"{where}: overrides {sorted(overridden)}")
    assert not problems, "\n".join(problems)


def test_the_workers_faust_producer_waits_for_all_in_sync_replicas(tmp_path):
    from base.config import Settings
    from streams.app import create_app

    app = create_app(Settings(data_dir=tmp_path), "127.0.0.1:9")
    assert app.conf.producer_acks == -1
