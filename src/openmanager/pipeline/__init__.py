"""The stream pipeline: live state, ingestion, fan-out to sessions."""
