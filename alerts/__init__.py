"""Falling-adoption alerts: rules (configuration), conditions (statistics), lifecycle, evaluator."""
