"""The command line, ``einvoice-monitor``, and the demo: the top layer, where every package meets.

``main`` is the Typer app and its small commands; ``replay``, ``simulate`` and ``dashboards`` are
the larger subcommands; ``common`` holds what they share (consoles, settings, the Kafka address);
``demo`` runs everything end to end on one machine. Nothing below imports this package.
"""
