"""Metric and log sources, one module each. Each implements `Source` from `sources.base`."""
