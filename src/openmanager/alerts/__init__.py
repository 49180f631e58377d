"""Alerts: rules, the lifecycle engine (pure), silences, and the service that runs them in the hub."""
