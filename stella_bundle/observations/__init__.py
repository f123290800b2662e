"""Reading observation records from NDJSON (the record itself: stella_bundle/formats/record.py)."""
