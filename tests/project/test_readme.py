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


def folder_table() -> dict[str, str]:
    section = README.split("The folders are the architecture:", 1)[1].split("\n\n", 2)[1]
    row = re.compile(r"^\| `([a-z_]+)/`(?:, `[a-z_]+/`)? \| (.+) \|$", re.M)
    return {m.group(1): m.group(2) for m in row.finditer(section)}


def test_the_folder_table_names_every_package_and_only_files_that_exist():
    """Both directions: every top-level package has a row, every row a folder, every file a row names exists;
    and the worker's row names each of its modules (a new one is where a reader looks first)."""
    from tests.project.test_imports import LAYER

    rows = folder_table()
    packages = {p for p in LAYER if (ROOT / p).is_dir()} - {"tests", "bench", "fuzz"}
    assert packages <= set(rows), f"packages without a row in the README's folder table: {packages - set(rows)}"
    assert all((ROOT / folder).is_dir() for folder in rows), [f for f in rows if not (ROOT / f).is_dir()]
    for folder, text in rows.items():
        for name in re.findall(r"`([\w/]+\.py)`", text):
            found = (ROOT / name).is_file() if "/" in name else list((ROOT / folder).rglob(name))  # a/b.py: from root
            assert found, f"README: {folder}/ names {name}, which is not there"
    named = set(re.findall(r"`(\w+\.py)`", rows["streams"]))
    modules = {p.name for p in (ROOT / "streams").glob("*.py")} - {"__init__.py"}
    assert modules == named, f"streams/ modules not in its row: {modules - named}; named but gone: {named - modules}"
