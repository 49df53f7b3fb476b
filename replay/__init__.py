"""Replay and backfill: rewind consumer groups, archive topics, publish archives, rebuild ClickHouse.

One concept per module: ``ranges`` (which offsets), ``members`` (who consumes), ``rewind``,
``archive`` (write and verify), ``publish``, ``databases`` (where a ClickHouse database lives),
``rebuild`` (fresh database, compare, switch, drop), ``audit``; ``cli`` is the Typer sub-app.
"""
