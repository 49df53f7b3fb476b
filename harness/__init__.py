"""Stand-ins for outside systems on one machine, for tests, benchmarks and the demo.

``chdb_http``: a loopback ClickHouse HTTP endpoint over a chDB directory, so several worker
processes can share one embedded store. ``webhook_receiver``: a receiver that verifies signed
webhooks and records what it got. Neither is deployed: production has a ClickHouse server and
the subscribers' own endpoints.
"""
