"""Runs of bench/suite.py side by side: one column per results file, each measurement a row.

Before and after a change, run the suite from a worktree of each commit on the same machine, one
after the other (the machine's noise moves absolute figures by 30 % and more; the ratios against
the bare loop of the same run move far less), then:

    .venv/bin/python bench/compare.py before=/tmp/before/bench/results/before.json \\
        after=bench/results/after.json

Prints a Markdown table; a measurement a run does not have shows as "-".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def load(spec: str) -> tuple[str, list[dict[str, Any]]]:
    """``name=path`` (or a path, named by its file) as the run's name and its table rows."""
    name, _, path = spec.rpartition("=")
    table = json.loads(Path(path).read_text(encoding="utf-8"))["table"]
    return name or Path(path).stem, table


def side_by_side(runs: list[tuple[str, list[dict[str, Any]]]]) -> str:
    measurements: list[str] = []
    for _, table in runs:
        measurements += [row["measurement"] for row in table if row["measurement"] not in measurements]
    lines = ["| measurement | " + " | ".join(name for name, _ in runs) + " | unit |"]
    lines.append("|---|" + "---:|" * len(runs) + "---|")
    for measurement in measurements:
        cells, unit = [], ""
        for _, table in runs:
            row = next((r for r in table if r["measurement"] == measurement), None)
            if row is None:
                cells.append("-")
                continue
            value, unit = row["value"], row["unit"]
            cells.append(f"{value:,}" if isinstance(value, int) else str(value))
        lines.append(f"| {measurement} | " + " | ".join(cells) + f" | {unit} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="NAME=RESULTS.json", help="results files of bench/suite.py")
    args = parser.parse_args()
    print(side_by_side([load(spec) for spec in args.runs]))


if __name__ == "__main__":
    main()
