"""Grafana's own frontend code under Node (tests/grafana_js), for the board tests.

`make grafana-js` installs the packages (Grafana 11.6's @grafana/scenes and @grafana/data); a test
that needs them fails with that command when they are missing, it is never skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

GRAFANA_JS = Path(__file__).resolve().parent / "grafana_js"


def run_grafana(request: dict[str, Any], timeout_s: float = 600) -> dict[str, Any]:
    """One request to tests/grafana_js/grafana.cjs (see its header for the shapes)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js 20 (the board tests run Grafana's own code under it)")
    if not (GRAFANA_JS / "node_modules" / "@grafana" / "scenes").is_dir():
        pytest.fail("Grafana's packages are not installed: run `make grafana-js` (or `make test`, which does)")
    done = subprocess.run(
        [node, str(GRAFANA_JS / "grafana.cjs")],
        input=json.dumps(request, default=str),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"Grafana's code under Node failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout)
