"""Avro contracts and the local schema registry index (data files next to this module)."""
