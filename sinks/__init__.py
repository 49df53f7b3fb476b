"""Writers to the outside world: ClickHouse (``clickhouse/``), the dead-letter topics, signed webhooks."""
