"""Observation NDJSON validation throughput: `stella schema validate` against jsonschema itself.

"ours": `validate_ndjson` (reads the file, parses each line, checks it with the hand-written
validator that tests prove equivalent to the schema, jsonschema only to explain a rejection).
Peers in the same run, over the same lines: a bare `json.loads` loop (the floor: parsing alone)
and the draft 2020-12 `jsonschema` validator of the shipped schema on every record (what a
general validator costs). jsonschema takes ~0.35 ms a record, so it checks the first
--peer-records lines (10,000: 3-4 s) and its rate is compared; the lines are alike, so its
rate does not depend on which. Always exits 0: the figures are the result.

Usage: python bench/schema.py [--records N] [--peer-records N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

from stella_bundle.canonical import canonical_bytes
from stella_bundle.schema import validate_ndjson, validator_for

EXAMPLE = (
    Path(__file__).resolve().parent.parent / "fixtures/schemas/examples/observation-record.json"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--peer-records", type=int, default=10_000)
    args = parser.parse_args()
    base = json.loads(EXAMPLE.read_text())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "observations.ndjson"
        with path.open("wb") as handle:
            for number in range(args.records):
                record = {**base, "pid": number, "count": 1 + number % 7}
                handle.write(canonical_bytes(record) + b"\n")
        size = path.stat().st_size

        start = time.perf_counter()
        with path.open("rb") as handle:
            for line in handle:
                json.loads(line)
        parse_only = time.perf_counter() - start

        start = time.perf_counter()
        checked = validate_ndjson(path)
        ours = time.perf_counter() - start
        assert checked == args.records

        validator = validator_for("observation-record")
        peer_records = min(args.peer_records, args.records)
        start = time.perf_counter()
        with path.open("rb") as handle:
            for line in itertools.islice(handle, peer_records):
                assert validator.is_valid(json.loads(line))
        general = (time.perf_counter() - start) * args.records / peer_records

    print(
        f"{args.records} observation records, {size / 1e6:.1f} MB NDJSON "
        f"(jsonschema: the first {peer_records}, its time scaled to all)"
    )
    for label, seconds in (
        ("json.loads only (floor)", parse_only),
        ("stella validate_ndjson", ours),
        ("jsonschema Draft202012Validator", general),
    ):
        print(f"  {label:34s} {args.records / seconds:>12,.0f} records/s  {seconds:7.2f} s")
    print(
        f"  ours vs jsonschema: {general / ours:.1f}x faster; ours vs parse floor: {ours / parse_only:.1f}x the time"
    )


if __name__ == "__main__":
    main()
