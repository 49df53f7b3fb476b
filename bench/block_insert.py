"""A block's insert and a partition's restore on chDB, side by side: what the window-free fence costs.

    .venv/bin/python bench/block_insert.py --blocks 40 --rows 40000

Two figures, each a ratio against a reference measured in the same run on the same data (the
machine is shared and noisy; absolute times drift by ±30 %):

- *insert*: a 40,000-row block of the compiled core into ``invoices`` and its four views, as the
  fenced insert sends it (``INSERT ... SELECT ... WHERE (chain check) = 0``, one statement)
  against the plain Native insert the unfenced path sends; the two alternate, block by block;
- *restore*: the repair of every partition's newest block (``InvoiceSink.repair``: each view
  compared with ``invoices`` over the block's days and hours) against the restore's other reads
  of the same partitions (``progress`` and the dedup keys of 72 hours), on the store the inserts
  filled.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sinks.clickhouse import ClickHouseStore, InvoiceSink, apply_migrations
from sinks.clickhouse.invoice_sink import CHAIN_TAKEN_SQL, STORED_COLUMNS, insert_settings
from tests.sinks.test_restore_blocks import compiled_block

PARTITIONS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=40, help="blocks of each kind (default 40)")
    parser.add_argument("--rows", type=int, default=40_000, help="rows a block (default 40,000: the default batch)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="einvoice-bench-") as scratch:
        store = ClickHouseStore(f"chdb://{Path(scratch) / 'ch'}")
        store.call(apply_migrations, store.client)
        fenced, plain = InvoiceSink(store, "einvoice.issued"), InvoiceSink(store, "einvoice.issued", fenced=False)
        times: dict[str, list[float]] = {"conditional": [], "plain": []}
        first = [0] * PARTITIONS
        for n in range(args.blocks * 2):
            partition = n % PARTITIONS
            kind = "conditional" if n % 2 == 0 else "plain"
            sink = fenced if kind == "conditional" else plain
            pending = compiled_block(sink, partition, first[partition], args.rows)
            first[partition] += args.rows
            block = store.call(sink.store.native, pending)
            started = time.perf_counter()
            if kind == "conditional":
                taken = sink._chain_at(partition, pending.start)
                store.call(
                    store.insert_block_unless, "invoices", STORED_COLUMNS, block, CHAIN_TAKEN_SQL, taken,
                    insert_settings(pending.token),
                )  # fmt: skip
            else:
                store.call(store.raw_insert, "invoices", list(STORED_COLUMNS), block, "Native",
                           insert_settings(pending.token))  # fmt: skip
            times[kind].append(time.perf_counter() - started)
        rows = store.query_rows("SELECT count() FROM invoices")[0][0]
        cond, base = statistics.median(times["conditional"]), statistics.median(times["plain"])
        print(f"insert of a {args.rows:,}-row block into invoices and its views, median of {args.blocks} each:")
        print(f"  plain Native insert      {base * 1000:8.1f} ms")
        print(f"  conditional (fenced)     {cond * 1000:8.1f} ms   ratio {cond / base:.2f}")

        progress = store.call(fenced.progress)
        newest = {p: progress[p].last_token for p in range(PARTITIONS)}
        repair_s, reads_s = [], []
        for _ in range(3):
            started = time.perf_counter()
            asyncio.run(fenced.repair(newest))
            repair_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            store.call(fenced.progress)
            for p in range(PARTITIONS):
                store.call(fenced.dedup_keys, p, 0)
            reads_s.append(time.perf_counter() - started)
        repair, reads = statistics.median(repair_s), statistics.median(reads_s)
        print(f"restore of {PARTITIONS} partitions on a store of {rows:,} rows, median of 3:")
        print(f"  progress + dedup keys    {reads * 1000:8.1f} ms")
        print(f"  repair of newest blocks  {repair * 1000:8.1f} ms   ratio {repair / reads:.2f}")
        store.close()


if __name__ == "__main__":
    main()
