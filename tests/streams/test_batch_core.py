"""Choosing the batch core: the compiled one when built, the Python reference with a warning otherwise."""

from __future__ import annotations

import logging
import sys

import pytest

from base.config import INVOICE_SUBJECT
from streams import batch_core
from streams.codec import SchemaCatalog
from streams.validation import InvoiceRules


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
