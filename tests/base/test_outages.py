"""The reconnect noise of a Kafka outage becomes its start, a summary a minute and its end.

The messages are the clients' own, as a worker logged them while a node of a three-node cluster was
killed (aiokafka 0.14, kafka-python 3.0); the clock is a fake one moved by the test.
"""

from __future__ import annotations

import logging

import pytest

from base.logs import LogfmtFormatter
from base.outages import OutageLog

NODE_2 = [
    ("aiokafka", "Unable connect to node with id 2: [Errno 111] Connect call failed ('127.0.0.1', 53507)"),
    (
        "aiokafka.consumer.fetcher",
        "Failed fetch messages from 2: NodeNotReadyError: Attempt to send a request to "
        "node which is not ready (node id 2).",
    ),
    (
        "aiokafka.consumer.fetcher",
        "Failed fetch offsets from 2: NodeNotReadyError: Attempt to send a request to "
        "node which is not ready (node id 2).",
    ),
    ("aiokafka.consumer.group_coordinator", "Marking the coordinator dead (node 2)for group einvoice-monitor."),
    (
        "kafka.net.connection",
        "<KafkaConnection node_id=2 broker_version=(4, 1) (disconnected)>: Connection lost: "
        "KafkaConnectionError: 111 ECONNREFUSED",
    ),
    (
        "aiokafka.producer.sender",
        "Got error produce response: NodeNotReadyError: Attempt to send a request to node "
        "which is not ready (node id 2).",
    ),
]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self, outages: OutageLog) -> None:
        super().__init__()
        self.addFilter(outages)
        self.setFormatter(LogfmtFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def setup():
    clock = Clock()
    outages = OutageLog(summary_every_s=60.0, quiet_s=10.0, clock=clock)
    handler = Lines(outages)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield clock, outages, handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def error(logger: str, message: str) -> None:
    logging.getLogger(logger).error(message)


def test_an_outage_of_over_two_minutes_at_fifty_lines_a_second_is_four_lines(setup):
    clock, outages, handler = setup
    for tick in range(130 * 50):  # 50 client errors a second for 130 s
        clock.now = 1000.0 + tick / 50
        error(*NODE_2[tick % len(NODE_2)])
    clock.now += 10.0
    outages.tick()
    assert len(handler.lines) == 4, handler.lines
    start, *summaries, end = handler.lines
    assert "level=warning" in start and 'msg="kafka node unreachable;' in start and "node=2" in start
    assert 'client_error="Unable connect to node with id 2' in start
    assert [("still unreachable" in s, "node=2" in s) for s in summaries] == [(True, True)] * 2
    assert 'msg="kafka node errors stopped" node=2 seconds=130.0 suppressed=6499' in end


def test_each_node_has_its_own_outage_and_other_lines_pass(setup):
    clock, outages, handler = setup
    error(*NODE_2[0])
    error("aiokafka", "Unable connect to node with id 3: [Errno 111] Connect call failed ('127.0.0.1', 1)")
    error(*NODE_2[1])
    logging.getLogger("streams.ingest").info("restore done")
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Heartbeat session expired - marking coordinator dead"
    )
    logging.getLogger("kafkaesque").error("Unable connect to node with id 2")  # not a client's logger
    clock.now += 10.0
    outages.tick()
    said = [line.split("msg=", 1)[1] for line in handler.lines]
    assert len(said) == 7, said
    assert said[0].startswith('"kafka node unreachable;') and "node=2" in said[0]
    assert said[1].startswith('"kafka node unreachable;') and "node=3" in said[1]
    assert said[2:5] == ['"restore done"', '"Heartbeat session expired - marking coordinator dead"',
                         '"Unable connect to node with id 2"']  # fmt: skip
    assert sorted(s.split(" node=")[1].split()[0] for s in said[5:]) == ["2", "3"]
    assert all(s.startswith('"kafka node errors stopped"') for s in said[5:])


def test_a_node_failing_again_after_it_recovered_is_a_new_outage(setup):
    clock, _, handler = setup
    error(*NODE_2[0])
    clock.now += 11.0
    error(*NODE_2[0])  # the first record after the quiet time closes the old outage, then opens a new one
    assert [("errors stopped" in line, "unreachable;" in line) for line in handler.lines] == [
        (False, True), (True, False), (False, True)
    ]  # fmt: skip


def test_the_workers_logging_config_filters_with_it():
    from base.logs import logging_config
    from base.outages import OUTAGES

    config = logging_config("info")
    assert config["handlers"]["stderr"]["filters"] == ["outages"]
    logging.config.dictConfig(config)
    try:
        assert OUTAGES in logging.getLogger().handlers[0].filters
    finally:
        logging.getLogger().handlers.clear()


def test_a_client_error_naming_no_node_is_said_once_and_its_repeats_counted(setup):
    clock, outages, handler = setup
    for n in range(100):  # kafka-python's admin and metadata clients, retrying while a node is down
        clock.now = 1000.0 + n / 10
        error("kafka.net.manager", "Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
    clock.now += 10.0
    outages.tick()
    assert len(handler.lines) == 2, handler.lines
    assert (
        'logger=kafka.net.manager msg="Connection failed: KafkaConnectionError: 111 ECONNREFUSED"' in handler.lines[0]
    )
    assert 'msg="kafka client error stopped repeating"' in handler.lines[1] and "suppressed=99" in handler.lines[1]
