"""Choosing the batch core: the compiled one when built, the Python reference with a warning otherwise."""

from __future__ import annotations

import logging
import sys

import pytest

from base.config import INVOICE_SUBJECT
from contracts.codec import SchemaCatalog
from contracts.validation import InvoiceRules
from streams import batch_core


def load(choice: str) -> batch_core.BatchCore:
    return batch_core.load(
        choice, topic="einvoice.issued", subject=INVOICE_SUBJECT, schemas=SchemaCatalog.load(),
        rules=InvoiceRules(), dedup_horizon_ms=72 * 3_600_000,
    )  # fmt: skip


def test_auto_takes_the_compiled_core_when_it_is_built():
    chosen = load("auto")
    assert chosen.kind == "compiled" and chosen.core is not None, f"{chosen.reason}: run `make native`"
    assert chosen.reason.startswith("einvoice_core ")


def test_without_the_compiled_core_auto_falls_back_loudly_and_compiled_refuses(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "einvoice_core", None)  # as if never built: the import fails
    with caplog.at_level(logging.WARNING, logger="streams.batch_core"):
        chosen = load("auto")
    assert (chosen.kind, chosen.core) == ("reference", None)
    assert "make native" in chosen.reason
    assert any("reference path" in r.message and "make native" in r.why for r in caplog.records)
    with pytest.raises(RuntimeError, match="make native"):
        load("compiled")


def test_reference_is_always_the_python_path_and_a_typo_is_refused():
    assert load("reference").kind == "reference"
    with pytest.raises(ValueError, match="auto, compiled, reference"):
        load("fast")


def test_a_core_that_disagrees_on_columns_or_local_time_is_refused_at_load(monkeypatch):
    import importlib
    import types

    real = importlib.import_module("einvoice_core")
    batch_core.check_shared_facts(real)  # the built core agrees with this checkout
    shared = ("STORED_COLUMNS", "DAY_MS", "LOCAL_OFFSET_MS")
    for name, wrong in (("STORED_COLUMNS", real.STORED_COLUMNS[::-1]), ("DAY_MS", 3_600_000), ("LOCAL_OFFSET_MS", 0)):
        facts = {n: getattr(real, n) for n in shared} | {name: wrong}
        stale = types.SimpleNamespace(**facts, InvoiceCore=real.InvoiceCore, __version__="old")
        monkeypatch.setitem(sys.modules, "einvoice_core", stale)
        with pytest.raises(RuntimeError, match=f"{name}.*make native"):
            load("auto")
