"""Writers to the outside world: ClickHouse, the dead-letter topic (later: webhooks, Grafana)."""
