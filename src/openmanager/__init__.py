"""OpenManager Vibe: a self-hosted, real-time server-fleet monitoring hub."""

__version__ = "0.1.0"
