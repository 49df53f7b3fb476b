"""ClickHouse: one client for chDB (embedded) and servers, versioned migrations, the batch writer."""

from sinks.clickhouse.client import ClickHouseStore, connect
from sinks.clickhouse.invoice_sink import INVOICE_COLUMNS, BlockWrite, InvoiceSink, PartitionProgress
from sinks.clickhouse.migrate import apply_migrations, open_store

__all__ = [
    "INVOICE_COLUMNS",
    "BlockWrite",
    "ClickHouseStore",
    "InvoiceSink",
    "PartitionProgress",
    "apply_migrations",
    "connect",
    "open_store",
]
