"""A partition's block as the invoice sink writes it, and what the sink asks of the store that keeps it.

The contract between :class:`sinks.clickhouse.invoice_sink.InvoiceSink` (buffering, the steps of a
block's write) and its store: :class:`InvoiceStore`, one narrow protocol, with a ClickHouse
implementation (:mod:`sinks.clickhouse.invoice_store`) and an in-memory one for the tests
(:mod:`sinks.clickhouse.memory`), as httpx's transports and its mock transport.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sinks.clickhouse.reconcile import Repair

T = TypeVar("T")

INVOICE_COLUMNS: tuple[str, ...] = (
    "seller_id", "invoice_code", "invoice_key", "invoice_form", "invoice_symbol", "issued_at", "issue_date",
    "amount_vnd", "vat_rate", "vat_amount_vnd", "payment_method", "non_cash", "register_id", "buyer_tax_code",
    "seller_kind", "registered", "vsic_code", "admin_unit_code", "schema_id",
    "kafka_topic", "kafka_partition", "kafka_offset", "received_at",
)  # fmt: skip
STORED_COLUMNS = (*INVOICE_COLUMNS, "insert_token")


@dataclass(frozen=True)
class PartitionProgress:
    """What ClickHouse already holds of one source partition."""

    max_offset: int  # the chain's end: the last record offset of the newest block that landed
    max_issued_local_ms: int | None
    last_token: str
    rows: int


@dataclass(frozen=True)
class BlockWrite:
    """What became of one block's write (steps 3 to 5 of the fence, docs/architecture.md)."""

    rows: int
    last_offset: int  # the offset the chain reaches when the block is ours: its end (fenced) or its last row
    seconds: float  # the insert's, retries included
    moved_past: bool = False  # the chain check found a block at or past the start: nothing was inserted
    landed: tuple[str, ...] = ()  # fenced: the row tokens of the blocks that landed at the block's start

    def ours(self, pending: PendingInsert) -> bool:
        """Did this block land (unfenced: was it inserted)?"""
        return not self.moved_past and (not pending.fenced or pending.row_token in self.landed)


class EncodedRows(Protocol):
    """A partition's rows already encoded by the compiled core (einvoice_core.Prepared)."""

    rows: int
    first_offset: int
    last_offset: int

    def native(self, token: str) -> bytes: ...


@dataclass
class PartitionBatch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    blocks: list[EncodedRows] = field(default_factory=list)
    first_offset: int = -1
    last_offset: int = -1

    def __len__(self) -> int:
        return len(self.rows) + sum(b.rows for b in self.blocks)


def dedup_token(row_token: str) -> str:
    """The insert_deduplication_token of the insert whose rows carry ``row_token``."""
    return row_token.split("..", 1)[0]


def block_range(row_token: str) -> tuple[int, int] | None:
    """(start, end) record offsets of a fenced block's token ``topic/partition/start..end``; None for older ones."""
    if ".." not in row_token:
        return None
    head, end = row_token.rsplit("..", 1)
    return int(head.rsplit("/", 1)[1]), int(end)


@dataclass(frozen=True)
class PendingInsert:
    """One partition's next block, taken from the buffer: what one insert writes.

    Fenced (the default), the block covers the records ``start..end``, where ``start`` follows the
    end of the partition's last block that landed, rejected and duplicate records included; its
    deduplication token names ``start`` only, so that any two writers of the partition that begin
    a block there write the same token and only the first insert lands (docs/architecture.md, Exactly once).
    Unfenced, the token names the rows' first and last offsets, as before the fence.
    """

    topic: str
    partition: int
    start: int
    end: int
    batch: PartitionBatch
    fenced: bool = True

    @property
    def rows(self) -> int:
        return len(self.batch)

    @property
    def row_token(self) -> str:
        """The token each row carries (``insert_token``), from which the block's range can be read back."""
        if self.fenced:
            return f"{self.topic}/{self.partition}/{self.start}..{self.end}"
        return f"{self.topic}/{self.partition}/{self.batch.first_offset}-{self.batch.last_offset}"

    @property
    def token(self) -> str:
        return dedup_token(self.row_token)


class InvoiceStore(Protocol):
    """What the invoice sink needs of the store that keeps the invoices and their chain of blocks.

    The blocking methods run on the store's own thread (:meth:`run`, :meth:`until_done`).
    """

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking call on the store's thread."""
        ...

    async def until_done(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking call on the store's thread, again after a backoff each time it raises."""
        ...

    def chain_moved_past(self, topic: str, partition: int, start: int) -> bool:
        """Blocking: has a block starting at or after record ``start`` landed?"""
        ...

    def insert(self, pending: PendingInsert) -> None:
        """Blocking: the block, under its token; fenced, only if no block at or past its start has landed."""
        ...

    def landed_at(self, topic: str, partition: int, start: int) -> tuple[str, ...]:
        """Blocking: the row tokens of the partition's blocks that landed starting at record ``start``."""
        ...

    def progress(self, topic: str) -> dict[int, PartitionProgress]:
        """Blocking: per partition, the chain's end, the newest issue time and the newest block."""
        ...

    def dedup_keys(self, topic: str, partition: int, since_day: int) -> tuple[Any, Any]:
        """Blocking: (invoice_key, local day) columns of the partition's invoices from ``since_day`` on."""
        ...

    def repair(self, topic: str, newest: Mapping[int, str]) -> list[Repair]:
        """Blocking: each partition's newest block (partition -> its rows' token) made whole in every view."""
        ...
