"""Time every board panel query, as Grafana would send it, on an existing deployment's ClickHouse.

    EINVOICE_DATA_DIR=.data python bench/board_queries.py --from 2024-06-03 --to 2024-06-27

Prints one line per panel (rows, milliseconds) and the slowest; the worker must be stopped in the
embedded mode (chDB belongs to one process).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from base.config import Settings
from base.localtime import LOCAL_TZ
from boards.grafana import DEFAULT_VARIABLES
from boards.queries import all_queries
from boards.runner import run_panel
from sinks.clickhouse import ClickHouseStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="first", required=True)
    parser.add_argument("--to", dest="last", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tz = LOCAL_TZ
    start = dt.datetime.combine(dt.date.fromisoformat(args.first), dt.time(0), tz)
    end = dt.datetime.combine(dt.date.fromisoformat(args.last), dt.time(23, 59, 59), tz)
    store = ClickHouseStore(Settings.from_env().clickhouse_dsn)
    results = {}
    try:
        for (board, key), query in all_queries("vi").items():
            timings = []
            rows = 0
            for _ in range(args.repeat):
                result = run_panel(store, query, DEFAULT_VARIABLES, start, end)
                timings.append(result.seconds)
                rows = len(result.rows)
            best = min(timings)
            results[f"{board}/{key}"] = {"rows": rows, "ms": round(best * 1000, 1)}
            print(f"{board + '/' + key:32} {rows:6} rows {best * 1000:8.1f} ms")
    finally:
        store.close()
    slowest = max(results.items(), key=lambda item: item[1]["ms"])
    print(f"slowest: {slowest[0]} {slowest[1]['ms']} ms; total {sum(r['ms'] for r in results.values()):.0f} ms")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
