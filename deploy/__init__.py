"""Deployment helpers (local infrastructure launchers)."""
