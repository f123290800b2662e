"""The fast canonical-line scan agrees with full parsing + validate_record, valid or not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stella_bundle.canonical import canonical_bytes
from stella_bundle.coverage.fastdecode import DecodedRecords, LightRecord, PlainRecord, Record
from stella_bundle.coverage.patterns import canonical_line
from stella_bundle.coverage.scan import ObservationAggregator
from stella_bundle.errors import InputError
from stella_bundle.formats.record import PROBE_TYPES, validate_record
from stella_bundle.observations.ndjson import iter_json_lines
from stella_bundle.timeutil import format_timestamp, parse_timestamp
from tests.conftest import scaled_examples

HASHES = ["sha256:" + c * 64 for c in "0123456789ab"]
TIMES = [
    "2026-01-23T00:00:00.000000Z",
    "2026-01-23T00:00:01.500000Z",
    "2026-01-23T01:00:00+01:00",  # valid, not canonical: the full path
    "2024-02-29T12:00:00.000000Z",  # leap day: the full path checks the calendar
    "2026-02-29T12:00:00.000000Z",  # impossible
    "2026-13-01T00:00:00.000000Z",  # impossible
    "2026-01-23 00:00:00Z",  # not RFC 3339
]
VALUES = {
    "node_hash": st.sampled_from([*HASHES, "sha256:XYZ", "md5:00"]),
    "function_name": st.sampled_from(
        ["SSL_read", "", 'a"b\\c', "ünï", "x\u2028y", "x\ud800", "a\nb"]
    ),
    "probe_type": st.sampled_from([*PROBE_TYPES, "laser"]),
    "observed_at": st.sampled_from(TIMES),
    "first_observed_at": st.sampled_from(TIMES),
    "last_observed_at": st.sampled_from(TIMES),
    "count": st.sampled_from([1, 2, 0, -1, 2**53, 1.5, "3", None]),
    "pid": st.sampled_from([0, 42, -3, True]),
    "purl": st.sampled_from(["pkg:deb/debian/libssl3@3.0.19", 7]),
    "kind": st.sampled_from(["function", "tls", "bogus"]),
    "details": st.sampled_from(
        [{}, {"argv": ["a", "b"], "port": 443}, {"x": {"y": 1}}, [1], {"f": 0.5}]
    ),
    "image_digest": st.sampled_from(["sha256:" + "f" * 64, "sha256:FF"]),
    "extra_field": st.just("x"),
    "comm": st.sampled_from(["nginx", "a\\b", ""]),
}
REQUIRED = ("node_hash", "function_name", "observed_at")


@st.composite
def records(draw: Any) -> dict[str, Any]:
    keys = set(REQUIRED)
    if draw(st.booleans()):
        keys.discard(draw(st.sampled_from(REQUIRED)))  # sometimes a required field is missing
    keys |= set(draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=5)))
    return {key: draw(VALUES[key]) for key in sorted(keys)}


def _canonical(value: str) -> str:
    return format_timestamp(parse_timestamp(value))


def reference(path: Path) -> dict[str, tuple[int, str, str, frozenset[str]]]:
    """What verification must see, computed the slow, obvious way."""
    out: dict[str, list[Any]] = {}
    for number, value in iter_json_lines(path):
        valid = validate_record(value, path, number)
        start = _canonical(valid.get("first_observed_at") or valid["observed_at"])
        end = _canonical(valid.get("last_observed_at") or valid["observed_at"])
        entry = out.setdefault(valid["node_hash"], [0, "~", "", set()])
        entry[0] += valid.get("count", 1)
        entry[1] = min(entry[1], start)
        entry[2] = max(entry[2], end)
        entry[3].add(valid["probe_type"])
    return {h: (e[0], e[1], e[2], frozenset(e[3])) for h, e in out.items()}


def scanned(path: Path) -> dict[str, tuple[int, str, str, frozenset[str]]]:
    aggregator = ObservationAggregator()
    aggregator.scan_file(path)
    return {
        h: (s.count, s.first, s.last, frozenset(s.probe_types()))
        for h, s in aggregator.unexpected.items()
    }


def _outcome(function: Any, path: Path) -> Any:
    try:
        return ("ok", function(path))
    except InputError as exc:
        return ("error", exc.line)


@settings(
    max_examples=scaled_examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batch=st.lists(records(), min_size=1, max_size=6), pretty=st.lists(st.booleans(), max_size=6)
)
def test_fast_scan_matches_full_validation(
    tmp_path: Path, batch: list[dict[str, Any]], pretty: list[bool]
) -> None:
    lines = []
    for index, value in enumerate(batch):
        if index < len(pretty) and pretty[index]:
            lines.append(
                json.dumps(value, ensure_ascii=True).encode()
            )  # spaces, escapes: full path
        else:
            try:
                lines.append(canonical_bytes(value))
            except InputError:
                lines.append(json.dumps(value).encode())
    path = tmp_path / "obs.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert _outcome(scanned, path) == _outcome(reference, path)


def test_regex_rejects_what_validation_rejects() -> None:
    base = {
        "function_name": "f",
        "node_hash": HASHES[0],
        "observed_at": TIMES[0],
        "probe_type": "uprobe",
    }
    assert canonical_line().fullmatch(canonical_bytes(base).decode())
    for change in (
        {"count": 0},
        {"pid": 2**53},
        {"observed_at": "2026-01-23T24:00:00.000000Z"},
        {"function_name": ""},
        {"kind": "bogus"},
        {"details": {"f": [1, {"x": 1}]}},
        {"zzz": 1},
    ):
        line = json.dumps({**base, **change}, sort_keys=True, separators=(",", ":"))
        assert canonical_line().fullmatch(line) is None, change


def test_impossible_dates_in_canonical_lines_name_the_line(tmp_path: Path) -> None:
    base = {
        "function_name": "f",
        "node_hash": HASHES[1],
        "observed_at": TIMES[0],
        "probe_type": "usdt",
    }
    good = canonical_bytes(base)
    for stamp in (
        "2026-04-31T00:00:00.000000Z",
        "2025-02-29T00:00:00.000000Z",
        "0000-01-01T00:00:00.000000Z",
    ):
        path = tmp_path / "obs.ndjson"
        path.write_bytes(good + b"\n" + canonical_bytes({**base, "observed_at": stamp}) + b"\n")
        with pytest.raises(InputError) as caught:
            scanned(path)
        assert caught.value.line == 2 and caught.value.field == "observed_at"
    path.write_bytes(
        good + b"\n" + canonical_bytes({**base, "observed_at": "2024-02-29T00:00:00.000000Z"})
    )
    assert scanned(path)[HASHES[1]][2] == "2026-01-23T00:00:00.000000Z"


def test_crlf_blank_lines_and_no_final_newline(tmp_path: Path) -> None:
    base = {
        "function_name": "f",
        "node_hash": HASHES[1],
        "observed_at": TIMES[0],
        "probe_type": "usdt",
    }
    line = canonical_bytes(base)
    path = tmp_path / "obs.ndjson"
    path.write_bytes(line + b"\r\n\n" + line + b"\n   \n" + line)
    assert scanned(path)[HASHES[1]][0] == 3


@pytest.mark.parametrize("size", [1, 3])
def test_block_boundaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    import stella_bundle.coverage.scan as scan

    monkeypatch.setattr(scan, "_BLOCK", size * 97)
    rows = [
        {
            "function_name": f"f{i}",
            "node_hash": HASHES[i % 3],
            "observed_at": TIMES[i % 2],
            "probe_type": "uprobe",
        }
        for i in range(50)
    ]
    path = tmp_path / "obs.ndjson"
    path.write_bytes(b"".join(canonical_bytes(r) + b"\n" for r in rows))
    assert scanned(path) == reference(path)
    data = path.read_bytes().splitlines(keepends=True)
    data[37] = b"{broken\n"
    path.write_bytes(b"".join(data))
    with pytest.raises(InputError) as caught:
        scanned(path)
    assert caught.value.line == 38


@settings(
    max_examples=scaled_examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    keys=st.sets(st.sampled_from(["count", "first_observed_at", "last_observed_at", "pid", "purl",
                                  "kind", "comm", "probe_type", "image_digest"])),
    data=st.data(),
)  # fmt: skip
def test_uniform_shapes_match_full_validation(tmp_path: Path, keys: set[str], data: Any) -> None:
    """Blocks of one key set take the shape-specialised pattern: same answers, same errors."""
    chosen = sorted({*REQUIRED, *keys})
    rows = [
        {key: data.draw(VALUES[key]) for key in chosen} for _ in range(data.draw(st.integers(1, 8)))
    ]
    lines = []
    for row in rows:
        try:
            lines.append(canonical_bytes(row))
        except InputError:
            lines.append(json.dumps(row, sort_keys=True, separators=(",", ":")).encode())
    path = tmp_path / "obs.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert _outcome(scanned, path) == _outcome(reference, path)


def test_duplicate_keys_last_wins_like_json(tmp_path: Path) -> None:
    line = (
        f'{{"function_name":"f","node_hash":"{HASHES[0]}","node_hash":"{HASHES[1]}","observed_at":"{TIMES[0]}"}}\n'
    ).encode()
    path = tmp_path / "obs.ndjson"
    path.write_bytes(line * 3)
    assert scanned(path) == reference(path)
    assert list(scanned(path)) == [HASHES[1]]


def test_scan_stream_public_api(tmp_path: Path) -> None:
    import io

    base = {
        "function_name": "f",
        "node_hash": HASHES[2],
        "observed_at": TIMES[0],
        "probe_type": "fentry",
    }
    data = canonical_bytes(base) + b"\n" + b"{nope\n"
    aggregator = ObservationAggregator()
    with pytest.raises(InputError) as caught:
        aggregator.scan_stream(io.BytesIO(data), "bundle.tgz!evidence/c/0000000001.ndjson.zst")
    assert caught.value.line == 2 and "0000000001" in str(caught.value)
    fresh = ObservationAggregator()
    fresh.scan_stream(io.BytesIO(data[: data.index(b"\n") + 1]), "x")
    assert fresh.unexpected[HASHES[2]].count == 1


@settings(
    max_examples=scaled_examples(100),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batch=st.lists(
        st.fixed_dictionaries(
            {
                "function_name": st.just("f"),
                "node_hash": st.sampled_from(HASHES[:4]),
                "observed_at": st.sampled_from(TIMES[:2]),
            },
            optional={
                "probe_type": st.sampled_from(PROBE_TYPES),
                "pid": st.sampled_from([0, 42, -3]),
                "count": st.sampled_from([1, 3, 0]),
                "first_observed_at": st.sampled_from(TIMES[:2]),
            },
        ),
        min_size=1,
        max_size=8,
    ),
    window=st.sampled_from([(None, TIMES[0]), (TIMES[1], None), (TIMES[0], TIMES[1])]),
)
def test_plain_and_full_decoding_with_a_window(
    tmp_path: Path, batch: list[dict[str, Any]], window: tuple[str | None, str | None]
) -> None:
    """Plain records (decoded without count/first/last fields) and full ones, under a time
    window: the same counts, window exclusions and errors as full validation."""
    path = tmp_path / "obs.ndjson"
    path.write_bytes(b"".join(canonical_bytes(r) + b"\n" for r in batch))
    window_from, window_to = window

    def windowed_reference(path: Path) -> tuple[dict[str, int], int]:
        counts: dict[str, int] = {}
        outside = 0
        for number, value in iter_json_lines(path):
            valid = validate_record(value, path, number)
            start = valid.get("first_observed_at") or valid["observed_at"]
            end = valid["observed_at"]
            if (window_from and end < window_from) or (window_to and start > window_to):
                outside += 1
                continue
            counts[valid["node_hash"]] = counts.get(valid["node_hash"], 0) + valid.get("count", 1)
        return counts, outside

    def windowed_scan(path: Path) -> tuple[dict[str, int], int]:
        aggregator = ObservationAggregator([HASHES[0]], window_from, window_to)
        aggregator.scan_file(path)
        states = {**aggregator.expected, **aggregator.unexpected}
        return {h: s.count for h, s in states.items() if s.count}, aggregator.outside_window

    assert _outcome(windowed_scan, path) == _outcome(windowed_reference, path)


def test_timestamp_block_check_matches_canonical_form() -> None:
    """The joined-values fullmatch accepts exactly the lists of canonical timestamps."""
    from stella_bundle.coverage.fastdecode import _all_canonical

    good = ["2026-01-23T00:00:00.000000Z", "2024-02-29T23:59:59.999999Z"]
    assert _all_canonical(good) and _all_canonical(good[:1]) and _all_canonical([])
    for bad in [
        "2026-01-23T24:00:00.000000Z",
        "2026-01-23T00:60:00.000000Z",
        "2026-01-23T00:00:00.00000Z",
        "2026-01-23T00:00:00.000000+00:00",
        "2026-01-23T00:00:00.000000Z\n2026-01-23T00:00:00.000000Z",  # one value, two lines
        "2026-01-23T00:00:00.000000Z ",
        "２026-01-23T00:00:00.000000Z",  # a non-ASCII digit
        "",
    ]:
        assert not _all_canonical([*good, bad]), bad
        assert not _all_canonical([bad]), bad


_STAMP_CHARS = "0123456789-T:.Z \nx٣２"


@st.composite
def _near_timestamps(draw: st.DrawFn) -> str:
    """A canonical timestamp with a few characters changed, cut or an hour of 00-29."""
    stamp = list(
        draw(st.sampled_from(["2026-01-23T12:34:56.123456Z", "1999-12-31T23:59:59.000000Z"]))
    )
    for _ in range(draw(st.integers(0, 3))):
        stamp[draw(st.integers(0, len(stamp) - 1))] = draw(st.sampled_from(_STAMP_CHARS))
    if draw(st.booleans()):
        stamp[11:13] = f"{draw(st.integers(0, 29)):02d}"
    return "".join(stamp)[: draw(st.sampled_from([27, 27, 27, 26, 28]))]


# 300 in CI (was 1000): a fifth of the old count already reaches every line and branch of
# _canonical_joined (coverage.py, issue 10's test time); the named edge cases are the test above.
@settings(max_examples=scaled_examples(300), deadline=None)
@given(stamps=st.lists(_near_timestamps(), max_size=4))
def test_timestamp_block_check_is_the_regular_expression(stamps: list[str]) -> None:
    """The template-and-offsets check accepts exactly what one fullmatch of the canonical
    timestamp expression over the newline-joined values accepts (its reference)."""
    from stella_bundle.coverage.fastdecode import CANONICAL_TS_LINES, _canonical_joined

    joined = "\n".join(stamps)
    reference = (
        bool(stamps)
        and joined.count("\n") == len(stamps) - 1
        and CANONICAL_TS_LINES.fullmatch(joined) is not None
    )
    assert (_canonical_joined(stamps) is not None) == reference


def test_block_dates_checked_for_one_day_and_many() -> None:
    """One shared day is checked once; mixed days each; an impossible day anywhere rejects."""
    from stella_bundle.coverage.fastdecode import PlainRecord, _observed

    def block(*stamps: str) -> list[PlainRecord]:
        return [PlainRecord(function_name="f", node_hash=HASHES[0], observed_at=s) for s in stamps]

    day = "2026-01-23T00:00:00.000000Z"
    leap = "2024-02-29T12:00:00.000000Z"
    impossible = "2026-02-29T12:00:00.000000Z"
    assert _observed(block(day, day)) == [day, day]
    assert _observed(block(leap, day, leap)) == [leap, day, leap]
    assert _observed(block(impossible, impossible)) is None
    assert _observed(block(day, impossible)) is None
    assert _observed(block(impossible, day)) is None
    assert _observed(block()) is None


def test_fast_decoder_enums_match_the_record_format() -> None:
    # msgspec needs Literal types; both decoders take them from formats.record, so the fast path
    # accepts and refuses exactly the probe types and kinds the validator does.
    from typing import get_type_hints

    import msgspec

    from stella_bundle.coverage import fastdecode
    from stella_bundle.formats.record import KINDS, ProbeType, RecordKind

    for struct in (fastdecode.Record, fastdecode.PlainRecord):
        hints = get_type_hints(struct, include_extras=True)
        assert hints["probe_type"] is ProbeType
        assert RecordKind in get_args(hints["kind"])
    for probe in PROBE_TYPES:
        assert msgspec.convert(probe, ProbeType) == probe
    for kind in KINDS:
        assert msgspec.convert(kind, RecordKind) == kind
    for wrong, target in (("kprobe2", ProbeType), ("socket", RecordKind)):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(wrong, target)


@pytest.mark.parametrize(
    ("name", "accepted"), [("x\ud800", False), ("\udfffx", False), ("\N{GRINNING FACE}", True)]
)
def test_surrogate_escapes_decided_like_full_validation(
    tmp_path: Path, name: str, accepted: bool
) -> None:
    """A lone surrogate is refused by every reader; a pair is text (found by hypothesis)."""
    row = {"function_name": name, "node_hash": HASHES[0], "observed_at": TIMES[0]}
    path = tmp_path / "obs.ndjson"
    path.write_bytes(json.dumps(row, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    outcome = _outcome(scanned, path)
    assert outcome == _outcome(reference, path)
    assert (outcome[0] == "ok") is accepted


def _folded(aggregator: ObservationAggregator) -> Any:
    states = {**aggregator.expected, **aggregator.unexpected}
    return (
        {
            h: (s.count, s.first, s.last, s.probe_mask, s.function_name, s.purl)
            for h, s in states.items()
            if s.count
        },
        aggregator.records,
        aggregator.outside_window,
    )


def _decoded_records(batch: list[dict[str, Any]]) -> DecodedRecords | None:
    """As the API decodes a verify body: as the smallest record type that takes them all."""
    for kind in (LightRecord, PlainRecord, Record):
        try:
            return DecodedRecords(msgspec.json.decode(json.dumps(batch), type=list[kind]))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return None  # the API parses such a body with orjson: the dicts above


@settings(max_examples=scaled_examples(400), deadline=None)
@given(
    batch=st.lists(records(), min_size=1, max_size=6),
    window=st.sampled_from([(None, None), (None, TIMES[0]), (TIMES[1], None)]),
)
def test_parsed_records_fast_path_matches_one_by_one(
    batch: list[dict[str, Any]], window: tuple[str | None, str | None]
) -> None:
    """A JSON body's records folded whole (`add_parsed`, msgspec) or one by one
    (`add_record` + `validate_record`): the fast path accepts only lists the full path
    accepts, folds them the same, and leaves the records and the aggregator untouched when
    it declines."""
    expected = HASHES[:2]
    copies = json.loads(json.dumps(batch))
    fast = ObservationAggregator(expected, *window)
    accepted = fast.add_parsed(copies)
    assert copies == batch  # never changed, accepted or not
    # The same records decoded from the JSON bytes straight into structs (the API's verify
    # body): taken and folded exactly as the parsed dicts are, and given back as the same dicts.
    decoded = _decoded_records(batch)
    if decoded is not None:
        typed = ObservationAggregator(expected, *window)
        assert typed.add_parsed(decoded) == accepted
        assert _folded(typed) == _folded(fast)
        assert decoded.as_dicts() == [{"probe_type": "unknown", **r} for r in batch]
    slow = ObservationAggregator(expected, *window)
    try:
        for number, record in enumerate(batch, start=1):
            slow.add_record(dict(record), "<body>", number)
    except InputError:
        assert not accepted
        assert _folded(fast) == _folded(ObservationAggregator(expected, *window))
        return
    if accepted:
        assert _folded(fast) == _folded(slow)
    else:
        assert _folded(fast) == _folded(ObservationAggregator(expected, *window))


def test_parsed_records_fast_path_takes_the_common_body() -> None:
    """The shapes the API receives are taken whole: plain and aggregated records."""
    plain = [
        {"node_hash": HASHES[i % 3], "function_name": "f", "observed_at": TIMES[i % 2], "pid": i}
        for i in range(50)
    ]
    aggregated = [
        {**plain[0], "count": 3, "first_observed_at": TIMES[0], "last_observed_at": TIMES[1]},
        {**plain[1], "details": {"argv": ["a"]}, "image_digest": "sha256:" + "f" * 64},
    ]
    for batch in (plain, aggregated):
        assert ObservationAggregator(HASHES[:1]).add_parsed(batch)
    leap = [{**plain[0], "first_observed_at": "2026-02-29T00:00:00.000000Z"}]
    assert not ObservationAggregator(HASHES[:1]).add_parsed(leap)  # the full path names it


def test_light_decoder_has_plain_decoders_rules_for_its_fields() -> None:
    # LightRecord is tried first: each of its fields must be typed exactly as PlainRecord's,
    # defaults included, so that whichever decoder takes a block gives the same values.
    from typing import get_type_hints

    from stella_bundle.coverage import fastdecode

    light = get_type_hints(fastdecode.LightRecord, include_extras=True)
    plain = get_type_hints(fastdecode.PlainRecord, include_extras=True)
    assert set(light) < set(plain)
    for name, hint in light.items():
        assert hint == plain[name], name
    defaults = dict(
        zip(
            fastdecode.PlainRecord.__struct_fields__[::-1],
            fastdecode.PlainRecord.__struct_defaults__[::-1],
            strict=False,
        )
    )
    for name, default in zip(
        fastdecode.LightRecord.__struct_fields__[::-1],
        fastdecode.LightRecord.__struct_defaults__[::-1],
        strict=False,
    ):
        assert defaults[name] == default, name


LIGHT_VALUES = {
    "function_name": st.sampled_from(["SSL_read", "", 'a"b', 7, None]),
    "node_hash": st.sampled_from([HASHES[0], HASHES[1], "md5:00", 3]),
    "observed_at": st.sampled_from(TIMES[:2]),
    "pid": st.sampled_from([0, 42, -3, 2**53, 1.5, "1", True]),
    "probe_type": st.sampled_from(["uprobe", "kprobe", "laser", None]),
    "purl": st.sampled_from(["pkg:generic/x@1", 7, None]),
    "comm": st.sampled_from(["nginx", 3]),
}


@settings(max_examples=scaled_examples(300), deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from(sorted(LIGHT_VALUES)), st.none(), min_size=1).flatmap(
            lambda keys: st.fixed_dictionaries({k: LIGHT_VALUES[k] for k in keys})
        ),
        min_size=1,
        max_size=5,
    )
)
def test_light_then_plain_decoding_is_plain_decoding(batch: list[dict[str, Any]]) -> None:
    """decode_block (light records first, PlainRecords when a line has another key) takes and
    refuses the blocks the PlainRecord decoder alone would, with the same field values."""
    from stella_bundle.coverage import fastdecode

    block = b"\n".join(json.dumps(value, separators=(",", ":")).encode() for value in batch) + b"\n"
    decoded = fastdecode.decode_block(block, len(batch))
    try:
        plain = fastdecode._PLAIN_DECODER.decode_lines(block)
    except msgspec.ValidationError:
        plain = None
    if plain is None:
        # Only the full decoder may still take it: records with keys neither light decoder has.
        assert decoded is None or type(decoded[0][0]) is Record
        return
    expected = plain
    if decoded is None:
        assert fastdecode._observed(expected) is None
        return
    records, _, aggregated = decoded
    assert not aggregated
    fields = fastdecode.LightRecord.__struct_fields__
    as_plain = [
        {f: getattr(r, f) for f in fastdecode.PlainRecord.__struct_fields__} for r in expected
    ]
    got = [
        {f: getattr(r, f, msgspec.UNSET) for f in fastdecode.PlainRecord.__struct_fields__}
        for r in records
    ]
    assert got == as_plain
    if all(set(value) <= set(fields) for value in batch):
        assert all(type(r) is fastdecode.LightRecord for r in records)
