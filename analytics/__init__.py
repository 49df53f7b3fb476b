"""Reading ClickHouse: adoption metrics per segment and day, shared by the report, alerts and boards."""
