"""Events/s of the reference ``InvoiceIngest._prepare`` and of ``InvoiceCore.prepare`` + ``native()``.

    .venv/bin/python native/bench_prepare.py [--invoices 200000] [--sellers 20000] [--batch 5000]

The same simulator records (2% duplicates, 1% malformed, 3% late, both schema versions) in batches
of ``--batch`` per partition (4 partitions), one thread, nothing else: no Kafka, no ClickHouse.
The reference runs with an in-memory sink (its rows are not encoded; clickhouse-connect would
encode them at insert time); the compiled path includes Native encoding of every batch and,
in the third line, building its argument lists from the SourceRecords. Prints numbers only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from einvoice_core import InvoiceCore

from base.config import INVOICE_SUBJECT
from contracts.codec import SCHEMAS_DIR, AvroCodec, SchemaCatalog
from contracts.records import SourceRecord
from contracts.registry import as_version, merge_version
from contracts.validation import InvoiceRules, InvoiceValidator
from kafka_io.publish import partition_for
from simulator.engine import Simulation, SimulationConfig, registry_scale
from streams.dedup import InvoiceDeduplicator
from streams.ingest import BatchOutcome, InvoiceIngest, PartitionRecords
from streams.metrics import IngestMetrics
from streams.partition import NO_WATERMARK

TOPIC = "einvoice.issued"
HORIZON_MS = 72 * 3_600_000


class NullSink:
    def add(self, partition: int, offset: int, row: tuple) -> None:
        pass


class NullDeadLetters:
    def add(self, dead_letter: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=200_000)
    parser.add_argument("--sellers", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()

    sim = Simulation(
        SimulationConfig(scale=registry_scale(args.sellers), start=dt.date(2024, 6, 1), days=3, seed=1,
                         target_invoices=args.invoices)
    )  # fmt: skip
    feed = list(sim.feed_records())
    table: dict[str, list[dict]] = {}
    for value in sim.registrations():
        table[value["seller_id"]] = merge_version(table.get(value["seller_id"]), as_version(value))
    by_partition: dict[int, list[SourceRecord]] = defaultdict(list)
    for r in feed:
        p = partition_for(r.key, args.partitions)
        by_partition[p].append(SourceRecord(p, len(by_partition[p]), r.key, r.value, r.timestamp_ms))
    batches = []  # (partition, records) round-robin over partitions
    rounds = max((len(v) + args.batch - 1) // args.batch for v in by_partition.values())
    for i in range(rounds):
        for p in sorted(by_partition):
            part = by_partition[p][i * args.batch : (i + 1) * args.batch]
            if part:
                batches.append((p, part))
    total = sum(len(b) for _, b in batches)

    # the reference
    schemas = SchemaCatalog.load()
    codec = AvroCodec(schemas, INVOICE_SUBJECT)
    ingest = InvoiceIngest(
        topic=TOPIC, codec=codec, validator=InvoiceValidator(), sink=NullSink(), dead_letters=NullDeadLetters(),
        lookup_seller=table.get, dedup_horizon_ms=HORIZON_MS, metrics=IngestMetrics(),
    )  # fmt: skip
    for p in by_partition:
        ingest.partitions.start(p, 0).restore(-1, -1, NO_WATERMARK, InvoiceDeduplicator(HORIZON_MS))
    started = time.perf_counter()
    for p, records in batches:
        state = ingest.partitions.owners[p]
        ingest._prepare(state, PartitionRecords(p, records), BatchOutcome())
        state.dedup.advance(state.watermark_local_ms)
        state.dedup.compact()
    reference_s = time.perf_counter() - started

    # the compiled core
    rules = InvoiceRules()
    index = json.loads((SCHEMAS_DIR / "registry.json").read_text(encoding="utf-8"))
    entries = [
        (i["id"], i["subject"], (SCHEMAS_DIR / i["file"]).read_text(encoding="utf-8"))
        for i in sorted(index["schemas"], key=lambda i: i["version"])
    ]  # oldest version first: the reader schema is the subject's last entry
    core = InvoiceCore(
        TOPIC, INVOICE_SUBJECT, entries, rules.invoice_code_pattern, rules.future_tolerance_ms, rules.max_lateness_ms,
        rules.max_amount_vnd, rules.vat_tolerance_vnd, HORIZON_MS,
    )  # fmt: skip
    empty = np.empty(0, dtype=np.int64)
    for p in by_partition:
        core.restore(p, -1, -1, NO_WATERMARK, empty, empty)
    columns = [
        (p, [r.offset for r in b], [r.key for r in b], [r.value for r in b], [r.timestamp_ms for r in b])
        for p, b in batches
    ]
    rows = blocks = 0
    started = time.perf_counter()
    for p, offsets, keys, values, timestamps in columns:
        prepared = core.prepare(p, offsets, keys, values, timestamps, table.get)
        if prepared.rows:
            blocks += len(prepared.native(f"{TOPIC}/{p}/{prepared.first_offset}-{prepared.last_offset}"))
        rows += prepared.rows
        if prepared.rows:
            core.committed(p, written_offset=prepared.last_offset)
    core_s = time.perf_counter() - started

    # the compiled core again (fresh state), the argument lists built inside the timing
    core2 = InvoiceCore(
        TOPIC, INVOICE_SUBJECT, entries, rules.invoice_code_pattern, rules.future_tolerance_ms, rules.max_lateness_ms,
        rules.max_amount_vnd, rules.vat_tolerance_vnd, HORIZON_MS,
    )  # fmt: skip
    for p in by_partition:
        core2.restore(p, -1, -1, NO_WATERMARK, empty, empty)
    started = time.perf_counter()
    for p, b in batches:
        prepared = core2.prepare(
            p, [r.offset for r in b], [r.key for r in b], [r.value for r in b], [r.timestamp_ms for r in b], table.get
        )
        if prepared.rows:
            prepared.native(f"{TOPIC}/{p}/{prepared.first_offset}-{prepared.last_offset}")
    core_lists_s = time.perf_counter() - started

    print(f"records                    {total:>12,}   ({len(batches)} batches of <= {args.batch:,} per partition)")
    print(f"rows                       {rows:>12,}   Native {blocks / 2**20:,.1f} MiB")
    print(f"reference _prepare         {total / reference_s:>12,.0f} events/s   {reference_s:8.3f} s")
    print(f"core prepare + native      {total / core_s:>12,.0f} events/s   {core_s:8.3f} s"
          f"   ({reference_s / core_s:.1f}x)")  # fmt: skip
    print(f"  + building the lists     {total / core_lists_s:>12,.0f} events/s   {core_lists_s:8.3f} s")


if __name__ == "__main__":
    main()
