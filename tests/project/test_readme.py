"""The README's promises that code can check: the two commands and the configuration table."""

from __future__ import annotations

import re
from pathlib import Path

from base.config import ENVIRONMENT, TOOL_ENVIRONMENT, Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_quickstart_has_the_two_commands_and_ci_runs_the_test_one():
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quickstart and "make test" in quickstart
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_every_setting_is_in_the_configuration_table_with_its_default():
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([A-Z_]+)` \| ([^|]+) \|", table, re.M)}
    defaults = Settings()
    for field, (variable, _doc) in ENVIRONMENT.items():
        assert variable in rows, f"{variable} missing from the README's configuration table"
        value = getattr(defaults, field)
        if value not in (None, ""):
            assert rows[variable].strip() == f"`{value}`", f"{variable}: README says {rows[variable]!r}, code {value!r}"


def test_the_tools_variables_are_in_the_table_and_the_table_holds_nothing_else():
    """Both directions: every variable the code reads is in the table, and every row is one the code reads."""
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.M))
    known = {variable for variable, _doc in ENVIRONMENT.values()} | set(TOOL_ENVIRONMENT)
    assert set(TOOL_ENVIRONMENT) <= rows, f"missing from the README: {set(TOOL_ENVIRONMENT) - rows}"
    assert rows <= known, f"in the README's table but read by nothing: {rows - known}"
