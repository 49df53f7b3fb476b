"""Which code prepares invoice batches: the compiled core (Rust, ``native/``) or the Python reference.

The compiled core (``einvoice_core``, built by ``make native``) does per batch, outside the
interpreter, what :meth:`streams.ingest.InvoiceIngest._prepare` does per event: decode, validate,
key, dedup, join and encode the rows for ClickHouse; before that, it unpacks the fetched Kafka
record batches (:func:`streams.batch_fetch.unpack_in_core`). The Python code stays the readable reference;
``tests/streams/test_native_core.py`` holds the two to the same output. ``EINVOICE_BATCH_CORE``: ``auto``
uses the compiled core when it is installed and says loudly when it is not; ``compiled`` refuses to
start without it; ``reference`` always runs the Python path.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from base.localtime import DAY_MS, LOCAL_OFFSET_MS
from contracts.codec import SchemaCatalog
from contracts.validation import InvoiceRules
from sinks.clickhouse.invoice_sink import STORED_COLUMNS

if TYPE_CHECKING:
    from einvoice_core import InvoiceCore, KafkaRecords

log = logging.getLogger(__name__)

CHOICES = ("auto", "compiled", "reference")
MISSING = "the compiled batch core (einvoice_core) is not installed: run `make native` (needs Rust's cargo)"


@dataclass(frozen=True)
class BatchCore:
    """The core in use and why, for the log and ``/health``."""

    kind: str  # "compiled" or "reference"
    reason: str
    core: InvoiceCore | None = None


def load(
    choice: str, *, topic: str, subject: str, schemas: SchemaCatalog, rules: InvoiceRules, dedup_horizon_ms: int
) -> BatchCore:
    """Build the core ``choice`` asks for; raises when ``compiled`` is asked and cannot be had."""
    if choice not in CHOICES:
        raise ValueError(f"EINVOICE_BATCH_CORE must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "reference":
        return BatchCore("reference", "EINVOICE_BATCH_CORE=reference")
    try:
        module = importlib.import_module("einvoice_core")
    except ImportError:
        if choice == "compiled":
            raise RuntimeError(f"EINVOICE_BATCH_CORE=compiled but {MISSING}") from None
        log.warning("falling back to the Python reference path, several times slower", extra={"why": MISSING})
        return BatchCore("reference", MISSING)
    check_shared_facts(module)
    core = module.InvoiceCore(
        topic, subject, [(s.schema_id, s.subject, s.source) for s in schemas.entries()],
        rules.invoice_code_pattern, rules.future_tolerance_ms, rules.max_lateness_ms, rules.max_amount_vnd,
        rules.vat_tolerance_vnd, dedup_horizon_ms,
    )  # fmt: skip
    return BatchCore("compiled", f"einvoice_core {module.__version__}", core)


def check_shared_facts(module: object) -> None:
    """The core's column order and local-time constants are the Python side's, or it is refused at load.

    A core built from an older checkout would write its Native blocks in another column order, or
    count days at another offset: a loud start-up error, never a silently wrong row.
    """
    theirs = {
        "STORED_COLUMNS": tuple(getattr(module, "STORED_COLUMNS", ())),
        "DAY_MS": getattr(module, "DAY_MS", None),
        "LOCAL_OFFSET_MS": getattr(module, "LOCAL_OFFSET_MS", None),
    }
    ours = {"STORED_COLUMNS": STORED_COLUMNS, "DAY_MS": DAY_MS, "LOCAL_OFFSET_MS": LOCAL_OFFSET_MS}
    differ = sorted(name for name in ours if theirs[name] != ours[name])
    if differ:
        raise RuntimeError(
            f"the compiled batch core disagrees with this checkout on {', '.join(differ)}: rebuild it (make native)"
        )


def kafka_records(choice: str) -> type[KafkaRecords] | None:
    """The compiled core's unpacker of fetched record batches, when ``choice`` lets the core run and it is built.

    Taken before the consumer starts, so that its first fetch goes through it (:meth:`load` says
    what is missing, once the pipeline starts).
    """
    if choice == "reference":
        return None
    try:
        return importlib.import_module("einvoice_core").KafkaRecords  # type: ignore[no-any-return]
    except ImportError:
        return None
