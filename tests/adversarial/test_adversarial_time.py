"""Time rules of the chain verifier: each broken rule is its own finding and fails the verdict.

Hostile chains are made here from a valid chain written by the project's own writer: seals
and chunks rewritten, re-linked and re-signed by the real collector key, with an inverted
window, a window after `sealed_at`, a `sealed_at` going backwards, evidence dated 2099, a
window starting before the previous one ended, records whose own first/last window is inverted
or misses their `observed_at`, a record after its seal, records outside their seal's window.
`signals verify-chain`, `bundle verify` and `function-map verify --evidence` all give exit 1
naming the same finding, the bundle's FAILED report written in its output directory and
nothing elsewhere.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_bundle.evidence.measure import chunk_times
from stella_bundle.evidence.timecheck import (
    CLOCK_SKEW,
    EVIDENCE_FROM_FUTURE,
    OBSERVED_AFTER_SEAL,
    OBSERVED_OUTSIDE_RECORD_WINDOW,
    RECORD_AFTER_SEAL,
    RECORD_OUTSIDE_SEAL_WINDOW,
    RECORD_WINDOW_INVERTED,
    SEAL_TIME_REGRESSED,
    TIME_CODES,
    WINDOW_BEFORE_PREVIOUS,
    WINDOW_INVERTED,
)
from stella_bundle.store import open_store
from stella_bundle.store.rows import decoded_times, fast_decode
from stella_bundle.timeutil import format_timestamp, parse_timestamp
from tests.adversarial.chain_surgery import Predicate, RecordEdit, Records, SealEdit, rewrite_chain
from tests.bundle.bundle_helpers import (
    BundleInputs,
    build_reproducible,
    make_inputs,
    snapshot,
)
from tests.conftest import CliResult, scaled_examples

# Each verification inline and with worker processes (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("chunk_workers")


def _shift(value: str, delta: dt.timedelta) -> str:
    return format_timestamp(parse_timestamp(value) + delta)


# --- seal rules ----------------------------------------------------------------------------------


def window_swapped(seals: dict[int, Predicate]) -> None:
    window = seals[2]["window"]
    window["first_observed_at"], window["last_observed_at"] = (
        window["last_observed_at"],
        window["first_observed_at"],
    )


def sealed_before_its_records(seals: dict[int, Predicate]) -> None:
    seals[1]["sealed_at"] = _shift(seals[1]["window"]["first_observed_at"], -dt.timedelta(hours=1))


def last_observed_past_the_skew(seals: dict[int, Predicate]) -> None:
    seal = seals[3]
    seal["window"]["last_observed_at"] = _shift(seal["sealed_at"], CLOCK_SKEW * 2)
    seal["sealed_at"] = _shift(seal["sealed_at"], -dt.timedelta(minutes=1))


def sealed_at_goes_backwards(seals: dict[int, Predicate]) -> None:
    seals[3]["sealed_at"] = _shift(seals[2]["sealed_at"], -dt.timedelta(seconds=1))


def records_dated_2099_sealed_now(seals: dict[int, Predicate]) -> None:
    last = max(seals)
    seals[last]["window"]["last_observed_at"] = "2099-01-01T00:00:00.000000Z"


def everything_dated_2099(seals: dict[int, Predicate]) -> None:
    last = max(seals)
    seals[last]["window"]["last_observed_at"] = "2099-01-01T00:00:00.000000Z"
    seals[last]["sealed_at"] = "2099-01-01T00:00:01.000000Z"


def collected_live(seals: dict[int, Predicate]) -> None:
    """The test writer seals like an import (null boot_id); the window order rule is the live
    collector's, so the seals are made to say they were collected live."""
    for seal in seals.values():
        seal["collector"]["boot_id"] = "0f5a9d3c-6a3e-4c3b-9a51-3f0e1d2c4b5a"


def window_starts_before_previous_end(seals: dict[int, Predicate]) -> None:
    collected_live(seals)
    window = seals[3]["window"]
    window["first_observed_at"] = _shift(seals[2]["window"]["last_observed_at"], -CLOCK_SKEW * 2)


def window_narrowed_past_first_record(seals: dict[int, Predicate]) -> None:
    window = seals[2]["window"]
    window["first_observed_at"] = _shift(window["first_observed_at"], dt.timedelta(seconds=1))


# --- record rules (the seal's window follows the rewritten records) ------------------------------


def record_window_inverted(records: Records, seals: dict[int, Predicate]) -> None:
    record = records[2][5]
    record["first_observed_at"] = _shift(record["observed_at"], dt.timedelta(seconds=1))
    record["last_observed_at"] = _shift(record["observed_at"], -dt.timedelta(seconds=1))


def observed_outside_record_window(records: Records, seals: dict[int, Predicate]) -> None:
    record = records[2][7]
    record["first_observed_at"] = _shift(record["observed_at"], dt.timedelta(seconds=1))
    record["last_observed_at"] = _shift(record["observed_at"], dt.timedelta(seconds=2))


_AN_HOUR = dt.timedelta(hours=1)


def record_after_its_seal(records: Records, seals: dict[int, Predicate]) -> None:
    # Every seal is moved an hour back (below) so that the late record is not also "from the
    # future"; its seal's window follows it, which the seal rule sees too.
    last = max(records)
    late = _shift(seals[last]["sealed_at"], -_AN_HOUR + CLOCK_SKEW * 2)
    records[last][-1]["observed_at"] = late


def every_seal_an_hour_earlier(seals: dict[int, Predicate]) -> None:
    for seal in seals.values():
        seal["sealed_at"] = _shift(seal["sealed_at"], -_AN_HOUR)


def chunk_backfilled_an_hour_earlier(records: Records, seals: dict[int, Predicate]) -> None:
    for record in records[3]:
        record["observed_at"] = _shift(record["observed_at"], -_AN_HOUR)


# name: (record edit, seal edit, the finding the case must produce)
CASES: dict[str, tuple[RecordEdit | None, SealEdit | None, str]] = {
    "window-inverted": (None, window_swapped, WINDOW_INVERTED),
    "sealed-before-its-records": (None, sealed_before_its_records, OBSERVED_AFTER_SEAL),
    "last-observed-past-the-skew": (None, last_observed_past_the_skew, OBSERVED_AFTER_SEAL),
    "sealed-at-goes-backwards": (None, sealed_at_goes_backwards, SEAL_TIME_REGRESSED),
    "records-2099-sealed-now": (None, records_dated_2099_sealed_now, EVIDENCE_FROM_FUTURE),
    "everything-2099": (None, everything_dated_2099, EVIDENCE_FROM_FUTURE),
    "window-starts-before-previous-end": (
        None,
        window_starts_before_previous_end,
        WINDOW_BEFORE_PREVIOUS,
    ),
    "chunk-backfilled-an-hour-earlier": (
        chunk_backfilled_an_hour_earlier,
        collected_live,
        WINDOW_BEFORE_PREVIOUS,
    ),
    "record-window-inverted": (record_window_inverted, None, RECORD_WINDOW_INVERTED),
    "observed-outside-record-window": (
        observed_outside_record_window,
        None,
        OBSERVED_OUTSIDE_RECORD_WINDOW,
    ),
    "record-after-its-seal": (record_after_its_seal, every_seal_an_hour_earlier, RECORD_AFTER_SEAL),
    "window-narrowed-past-first-record": (
        None,
        window_narrowed_past_first_record,
        RECORD_OUTSIDE_SEAL_WINDOW,
    ),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, test_keys: Any) -> BundleInputs:
    return make_inputs(tmp_path_factory.mktemp("time-inputs"), test_keys)


def _build(inputs: Path, pristine: BundleInputs, bundle: Path, test_keys: Any) -> None:

    build_reproducible(
        inputs / pristine.function_map.name,
        inputs / "evidence",
        test_keys.signer("builder"),
        bundle,
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_time_rule_fails_every_entry_point(
    case: str,
    pristine: BundleInputs,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    record_edit, seal_edit, code = CASES[case]
    inputs = tmp_path / "inputs"
    shutil.copytree(pristine.directory, inputs)
    chain = inputs / "evidence" / "host-a"
    rewrite_chain(chain, test_keys.signer("collector"), records=record_edit, seals=seal_edit)

    chain_result = run_cli(
        "signals", "verify-chain", chain, "--trust-root", test_keys.trust_root, "--format", "json"
    )
    assert chain_result.exit_code == 1, chain_result.stderr
    findings = json.loads(chain_result.stdout)["chains"][0]["findings"]
    codes = {f["code"] for f in findings}
    assert code in codes, findings
    # Re-linked and re-signed: the broken time rule is the chain's only defect.
    assert {f["code"] for f in findings if f["severity"] == "error"} <= TIME_CODES, findings

    # function-map verify --evidence reads the chain with the same rules: one line, exit 1,
    # naming the first rule broken (one of verify-chain's findings).
    map_result = run_cli(
        "function-map", "verify", "--function-map", inputs / pristine.function_map.name,
        "--evidence", inputs / "evidence",
    )  # fmt: skip
    assert map_result.exit_code == 1, map_result.stdout + map_result.stderr
    lines = map_result.stderr.strip().splitlines()
    assert len(lines) == 1, map_result.stderr
    named = {c for c in TIME_CODES if re.search(rf"\b{c}:", lines[0])}
    assert named and named <= codes, (lines[0], codes)

    # A store's ingest verifies the chain as it stores it (the records' times taken from its
    # own decoding of them): the same refusal, one line, nothing stored.
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    ingest = run_cli(
        "observations", "ingest", "--evidence", inputs / "evidence",
        "--trust-root", test_keys.trust_root, "--store", store,
    )  # fmt: skip
    assert ingest.exit_code == 1, ingest.stdout + ingest.stderr
    lines = ingest.stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing stored" in lines[0], ingest.stderr
    assert {c for c in TIME_CODES if re.search(rf"\b{c}:", lines[0])} <= codes, lines[0]
    with open_store(store) as opened:
        assert opened.status().records == 0

    bundle = tmp_path / "time.stella.bundle.tgz"
    _build(inputs, pristine, bundle, test_keys)
    out = tmp_path / "work" / "out"
    before = snapshot(tmp_path)
    result = run_cli(
        "bundle", "verify", bundle, "--trust-root", test_keys.trust_root, "--output-dir", out
    )
    created = {p for p in snapshot(tmp_path) - before if not p.startswith("work")}
    assert not created, f"written outside the output directory: {created}"
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "step 'evidence-chains'" in lines[0], result.stderr
    # The first time rule broken is named; the case's own rule is among the report's.
    report = json.loads((out / "verification-report.json").read_text())["predicate"]
    assert report["verification_result"] == "FAILED"
    assert code in json.dumps(report), report["steps"]


def test_imported_chunks_may_overlap_in_time(
    pristine: BundleInputs, tmp_path: Path, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    """An import seals its input in input order (null boot_id): overlapping windows pass."""
    chain = tmp_path / "evidence" / "host-a"
    shutil.copytree(pristine.evidence / "host-a", chain)
    rewrite_chain(chain, test_keys.signer("collector"), records=chunk_backfilled_an_hour_earlier)
    result = run_cli("signals", "verify-chain", chain, "--trust-root", test_keys.trust_root)
    assert result.exit_code == 0, result.stdout + result.stderr


def test_pristine_chain_passes_the_time_rules(
    pristine: BundleInputs, test_keys: Any, run_cli: Callable[..., CliResult]
) -> None:
    result = run_cli(
        "signals",
        "verify-chain",
        pristine.evidence / "host-a",
        "--trust-root",
        test_keys.trust_root,
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    mapped = run_cli(
        "function-map", "verify", "--function-map", pristine.function_map,
        "--evidence", pristine.evidence,
    )  # fmt: skip
    assert mapped.exit_code == 0, mapped.stdout + mapped.stderr


# --- one fold of record times, whichever path reads the records ---------------------------------

_MOMENTS = st.datetimes(
    min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 1, 1), timezones=st.just(dt.UTC)
)


def _written(moment: dt.datetime, offset_minutes: int) -> str:
    """The toolkit's own form, or the same instant written with another UTC offset."""
    if offset_minutes == 0:
        return format_timestamp(moment)
    zone = dt.timezone(dt.timedelta(minutes=offset_minutes))
    return moment.astimezone(zone).isoformat()


@st.composite
def _records(draw: st.DrawFn) -> list[dict[str, Any]]:
    records = []
    for index in range(draw(st.integers(1, 30))):
        record: dict[str, Any] = {
            "node_hash": "sha256:" + f"{index:064x}",
            "function_name": f"f{index}",
            "probe_type": "uprobe",
            "observed_at": _written(draw(_MOMENTS), draw(st.sampled_from((0, 0, 0, 90, -330)))),
        }
        for name in ("first_observed_at", "last_observed_at"):
            if draw(st.integers(0, 9)) == 0:
                record[name] = _written(draw(_MOMENTS), 0)
        records.append(record)
    return records


@settings(max_examples=scaled_examples(60), deadline=None)
@given(records=_records(), cut=st.integers(1, 400))
def test_record_times_fold_identically_on_every_path(
    records: list[dict[str, Any]], cut: int
) -> None:
    """verify-chain's byte feed (cut anywhere), bundle verify's aggregator scan (its fast and
    slow paths) and the reader's record by record fold agree."""
    from stella_bundle.canonical import canonical_bytes
    from stella_bundle.coverage.scan import ObservationAggregator
    from stella_bundle.evidence.timecheck import ChunkTimes

    data = b"".join(canonical_bytes(r) + b"\n" for r in records)
    fed = ChunkTimes()
    for start in range(0, len(data), cut):
        fed.feed(data[start : start + cut])
    fed.finish()
    one_by_one = ChunkTimes()
    for record in records:
        one_by_one.add(
            record["observed_at"], record.get("first_observed_at"), record.get("last_observed_at")
        )
    scanned = ChunkTimes()
    aggregator = ObservationAggregator()
    aggregator.times = scanned
    aggregator.scan_stream(io.BytesIO(data), "chunk")

    def state(times: ChunkTimes) -> tuple[Any, ...]:
        return times.start, times.end, times.latest_observed, times.bad_record is None

    assert state(fed) == state(one_by_one) == state(scanned)

    # The store's ingest takes the times from its own fast decoding of the records (canonical
    # times only: written otherwise, the chunk is decoded by the slow path and fed as above).
    for record in records:
        for name in ("observed_at", "first_observed_at", "last_observed_at"):
            if name in record:
                record[name] = format_timestamp(parse_timestamp(record[name]))
    data = b"".join(canonical_bytes(r) + b"\n" for r in records)
    decoded = fast_decode("chain", 1, data)
    assert decoded is not None
    assert state(decoded_times(decoded)) == state(chunk_times([data]))


@pytest.mark.parametrize(
    ("first", "last", "code"),
    [
        ("2026-01-23T00:00:02.000000Z", "2026-01-23T00:00:01.000000Z", RECORD_WINDOW_INVERTED),
        (
            "2026-01-23T00:00:01.000000Z",
            "2026-01-23T00:00:02.000000Z",
            OBSERVED_OUTSIDE_RECORD_WINDOW,
        ),
    ],
)
def test_import_refuses_a_record_the_time_rules_refuse(
    first: str,
    last: str,
    code: str,
    pristine: BundleInputs,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    records = [dict(r) for r in pristine.records[:3]]
    records[1].update(
        observed_at="2026-01-23T00:00:00.000000Z", first_observed_at=first, last_observed_at=last
    )
    source = tmp_path / "obs.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    target = tmp_path / "evidence"
    result = run_cli(
        "observations", "import", source, "--target", target,
        "--key", test_keys.private("collector"),
    )  # fmt: skip
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ":2:" in lines[0] and code in lines[0], result.stderr
    assert not target.exists() or not any(target.rglob("*.seal.dsse.json"))


@pytest.mark.parametrize(
    "field", ["observed_at", "last_observed_at"], ids=["observed", "aggregated"]
)
def test_import_refuses_a_record_dated_after_its_clock(
    field: str,
    pristine: BundleInputs,
    tmp_path: Path,
    test_keys: Any,
    run_cli: Callable[..., CliResult],
) -> None:
    # Sealed, a record later than the writer's clock (+ skew) fails its whole chunk
    # (record_after_seal, evidence_from_future): `observations import` wrote such a chain and
    # exited 0. Refused now like the other time rules: the line named, nothing written.
    future = format_timestamp(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30))
    records = [dict(r) for r in pristine.records[:3]]
    if field == "observed_at":
        records[1]["observed_at"] = future
    else:
        records[1].update(first_observed_at=records[1]["observed_at"], last_observed_at=future)
    source = tmp_path / "obs.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    target = tmp_path / "evidence"
    result = run_cli(
        "observations", "import", source, "--target", target,
        "--key", test_keys.private("collector"),
    )  # fmt: skip
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and ":2:" in lines[0] and "after this clock" in lines[0], lines
    assert not target.exists() or not any(target.rglob("*.seal.dsse.json"))
