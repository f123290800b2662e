"""Observation records (DESIGN.md §4): the model, validation, and NDJSON reading."""
