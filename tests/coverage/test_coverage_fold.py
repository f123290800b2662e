"""The compiled fold (coverage/_fold.c) against the Python fold, its reference: the same
per-node state (values and order) and the same errors for generated records — duplicate and
unknown nodes, unsorted and odd times, every probe type, every record struct, bad hashes — and
the same reports for generated files. Under CI=true the compiled fold must be the one in use."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from stella_bundle.api.models import ScannedVerifyBody, decode_verify_body, read_verify_body
from stella_bundle.coverage import VerifyOptions, compiled
from stella_bundle.coverage import engine as engine_module
from stella_bundle.coverage import scan as scan_module
from stella_bundle.coverage.fastdecode import LightRecord, PlainRecord, Record
from stella_bundle.coverage.scan import ObservationAggregator, PyNodeAggregate, _BadDate
from stella_bundle.errors import StellaError
from stella_bundle.formats.function_map import FunctionMap
from stella_bundle.formats.record import PROBE_TYPES, validate_record
from stella_bundle.store.base import encode_report
from tests.conftest import IN_CI, scaled_examples
from tests.coverage.test_coverage_parallel_scan import WINDOW, _map_outcome, _outcome, _write_map
from tests.coverage.test_coverage_parallel_scan import lines as ndjson_lines
from tests.functionmap.functionmap_helpers import make_map, write_debian_sbom

needs_compiled = pytest.mark.skipif(compiled.FOLD is None, reason=compiled.STATUS)

HEX = "0123456789abcdef"
MAP = ["sha256:" + HEX[i] * 64 for i in range(4)]
UNKNOWN = ["sha256:" + HEX[i] * 64 for i in range(10, 13)]
BAD_HASHES = ["sha256:XYZ", "sha256:" + "é" * 64, "", "sha256:" + "a" * 200]
STAMPS = [f"2026-01-23T00:{m:02d}:{s:02d}.000000Z" for m, s in ((5, 1), (0, 0), (59, 59), (5, 0))]


def test_the_compiled_fold_is_in_use_in_ci() -> None:
    """CI must not measure (or test) the fallback without saying so: setup.sh's editable
    install builds the extension, and a stale or missing build fails here."""
    if not IN_CI:
        pytest.skip(f"outside CI the fold in use may be the fallback: {compiled.STATUS}")
    assert compiled.STATUS == "compiled"
    assert scan_module.NodeAggregate is not PyNodeAggregate
    assert ObservationAggregator()._index is not None


@st.composite
def records(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from([LightRecord, PlainRecord, Record]))
    rare_bad = draw(st.integers(0, 30)) == 0  # a bad hash ends the fold: seldom
    node_hash = draw(st.sampled_from(BAD_HASHES if rare_bad else MAP * 3 + UNKNOWN * 2))
    observed = draw(
        st.sampled_from(STAMPS)
        | st.text(max_size=40)  # odd strings: long, empty, non-ASCII (the exact comparisons)
    )
    purl = draw(st.sampled_from([UNSET, "pkg:generic/a@1", "pkg:generic/b@2"]))
    name = draw(st.sampled_from(["f", "g\u00e9"]))
    probe = draw(st.sampled_from(PROBE_TYPES))
    if kind is Record:
        return Record(node_hash, name, observed, probe, purl)
    return kind(
        function_name=name, node_hash=node_hash, observed_at=observed, probe_type=probe, purl=purl
    )


def _run(aggregator: ObservationAggregator, blocks: list[tuple[bool, list[Any]]]) -> Any:
    """Fold the blocks (the ones marked Python-only by the Python loop, as another path would
    add nodes between two compiled folds); the state, in order, and the error if one."""
    error = None
    for python_only, block in blocks:
        index = aggregator._index
        if python_only:
            aggregator._index = None
        try:
            aggregator._plain_records(block)
        except _BadDate:
            error = "bad"
            break
        finally:
            aggregator._index = index
    state = aggregator.export()
    return [list(state[0].items()), list(state[1].items()), *state[2:]], error


@needs_compiled
@settings(max_examples=scaled_examples(300), deadline=None)
@given(
    blocks=st.lists(st.tuples(st.booleans(), st.lists(records(), max_size=30)), max_size=5),
    split=st.booleans(),
)
def test_compiled_fold_gives_the_python_folds_state(
    blocks: list[tuple[bool, list[Any]]], split: bool
) -> None:
    mine = ObservationAggregator(MAP if split else None, unsplit=not split)
    reference = ObservationAggregator(MAP if split else None, unsplit=not split, compiled=False)
    assert mine._index is not None and reference._index is None
    assert type(next(iter(reference.expected.values()), PyNodeAggregate())) is PyNodeAggregate
    assert _run(mine, blocks) == _run(reference, blocks)
    for node in mine.expected.values():
        assert isinstance(node, scan_module.NodeAggregate)


@needs_compiled
def test_counts_and_bits_are_python_ints_when_read() -> None:
    aggregator = ObservationAggregator(MAP)
    block = [
        LightRecord(function_name="f", node_hash=MAP[0], observed_at=STAMPS[i % 4], probe_type=p)
        for i, p in enumerate(PROBE_TYPES * 100)
    ]
    aggregator._plain_records(block)
    state = aggregator.expected[MAP[0]]
    assert state.count == len(block) and type(state.count) is int
    assert state.probe_mask == (1 << len(PROBE_TYPES)) - 1
    assert (state.first, state.last) == (min(STAMPS), max(STAMPS))
    state.count += 2**70  # the values stay Python ints: no C limit shows
    aggregator._plain_records(block[:1])
    assert state.count == len(block) + 2**70 + 1
    assert state.probe_types() == list(PROBE_TYPES)


@pytest.fixture(scope="module")
def fmap(tmp_path_factory: pytest.TempPathFactory) -> FunctionMap:
    sbom = write_debian_sbom(tmp_path_factory.mktemp("sbom") / "debian.cdx.json")
    return make_map(sbom, hot_functions=["openssl/SSL_read", "openssl/SSL_write", "net/connect"])


@needs_compiled
@settings(
    max_examples=scaled_examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_compiled_fold_gives_the_python_folds_reports(
    data: st.DataObject, fmap: FunctionMap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(scan_module, "_BLOCK", data.draw(st.sampled_from([300, 2000, 1 << 20])))
    nodes = sorted({(n.node_hash, n.symbol) for p in fmap.expected_paths for n in p.nodes})
    body = b"".join(data.draw(st.lists(ndjson_lines(nodes), min_size=5, max_size=80)))
    options = VerifyOptions(
        window_from=WINDOW.window_from if data.draw(st.booleans()) else None,
        workers=data.draw(st.sampled_from([1, 2])),
    )
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "observations.ndjson"
        path.write_bytes(body)
        map_file = _write_map(fmap, Path(directory), signed=False)
        outcomes = []
        for fold in (compiled.FOLD, None):
            with monkeypatch.context() as patch:
                patch.setattr(scan_module, "FOLD", fold)
                outcomes.append(
                    (
                        _outcome(fmap, path, options),
                        _map_outcome(map_file, path, dataclasses.replace(options, workers=2)),
                    )
                )
        assert outcomes[0] == outcomes[1]


# --- the compiled scan of plain canonical lines (Index.scan) ---------------------------------

# JSON texts of values, valid and not, for the fields the scan reads or passes over.
_GOOD_STAMPS = [*STAMPS, "2024-02-29T23:59:59.999999Z", "0001-01-01T00:00:00.000000Z"]
_BAD_STAMPS = [
    "2026-02-29T00:00:00.000000Z",  # not a leap year
    "2026-04-31T00:00:00.000000Z",
    "0000-01-01T00:00:00.000000Z",
    "2026-13-01T00:00:00.000000Z",
    "2026-01-23T24:00:00.000000Z",
    "2026-01-23T00:60:00.000000Z",
    "2026-01-23T00:00:60.000000Z",
    "2026-01-23T00:00:00Z",  # valid RFC 3339, not canonical: another path folds it
    "2026-01-23T00:00:00.000000+00:00",
    "2026-01-23t00:00:00.000000Z",
    "2026-01-2３T00:00:00.000000Z",  # a non-ASCII digit
]
_VALUES: dict[str, list[str]] = {
    "binary_path": ['"/usr/bin/x"', '""', '"é"', '"a\\\\b"'],
    "comm": ['"nginx"', '"tab\\t"', "1", "null"],
    "count": ["2"],
    "details": ['{"scope":{}}'],
    "function_name": ['"f"', '"fn_1"', '"a b<c>"', '""', '"gé"', '"q\\"x"', '"\\u0066"', "7"],
    "kind": ['"function"'],
    "node_hash": [
        *(f'"{h}"' for h in MAP * 3 + UNKNOWN * 2),
        '"sha256:' + "A" * 64 + '"',
        '"sha256:' + "a" * 63 + '"',
        '"sha256:' + "a" * 65 + '"',
        '"sha256:' + "g" * 64 + '"',
    ],
    "observed_at": [f'"{s}"' for s in _GOOD_STAMPS * 3 + _BAD_STAMPS],
    "pid": ["0", "7", "999999999999999", "1000000000000000", "07", "-1", "1.0", '"7"'],
    "probe_type": [f'"{p}"' for p in PROBE_TYPES] + ['"bogus"', '"UPROBE"'],
    "purl": ['"pkg:generic/a@1"', '"pkg:generic/b@2"', '""'],
}
_REQUIRED = ("function_name", "node_hash", "observed_at")


@st.composite
def raw_lines(draw: st.DrawFn, odd: bool = False) -> bytes:
    """One plain canonical line, or with `odd` one with exactly one oddity: a value of another
    type or spelling, a key missing, repeated, out of order or unknown, whitespace, a blank
    line."""
    keys = set(_REQUIRED)
    for optional in ("pid", "probe_type", "purl", "comm", "binary_path"):
        if draw(st.booleans()):
            keys.add(optional)
    oddity = draw(st.sampled_from(["value"] * 4 + ["key", "missing", "line"])) if odd else ""
    if oddity == "key":
        keys.add(draw(st.sampled_from(["count", "details", "kind", "unknown_field"])))
    if oddity == "missing":
        keys.discard(draw(st.sampled_from(_REQUIRED)))
    # One odd value of all those of the line's keys (each as likely as another).
    odd_pair = (
        draw(st.sampled_from(sorted((k, v) for k in keys for v in _odd_values(k))))
        if oddity == "value"
        else ("", "")
    )
    pairs = []
    for key in sorted(keys):
        if key == odd_pair[0]:
            pairs.append(f'"{key}":{odd_pair[1]}')
            continue
        good = [v for v in _VALUES.get(key, ['"x"']) if v not in _odd_values(key)]
        pairs.append(f'"{key}":{draw(st.sampled_from(good))}')
    if oddity == "line":
        change = draw(st.sampled_from(["reverse", "repeat", "space", "blank", "crlf"]))
        if change == "reverse":
            pairs.reverse()
        elif change == "repeat":
            pairs.append(pairs[0])
        elif change == "space":
            return ("{" + ", ".join(pairs) + "}\n").encode()
        elif change == "blank":
            return b"\n"
        elif change == "crlf":
            return ("{" + ",".join(pairs) + "}\r\n").encode()
    return ("{" + ",".join(pairs) + "}\n").encode()


def _odd_values(key: str) -> set[str]:
    """The values of `key` in _VALUES that are not a plain canonical line's."""
    values = _VALUES.get(key, [])
    plain = {
        "binary_path": ['"/usr/bin/x"', '""'],
        "comm": ['"nginx"'],
        "function_name": ['"f"', '"fn_1"', '"a b<c>"'],
        "node_hash": [f'"{h}"' for h in MAP + UNKNOWN],
        "observed_at": [f'"{s}"' for s in _GOOD_STAMPS],
        "pid": ["0", "7", "999999999999999"],
        "probe_type": [f'"{p}"' for p in PROBE_TYPES],
        "purl": ['"pkg:generic/a@1"', '"pkg:generic/b@2"', '""'],
    }.get(key, values)
    return set(values) - set(plain)


def _fold_outcome(aggregator: ObservationAggregator, block: bytes) -> Any:
    """The aggregator's state after feeding the block (the paths of BlockScan.feed), or the
    error that names the bad line."""
    try:
        scan_module.BlockScan(aggregator, "obs.ndjson").feed(block)
    except StellaError as exc:
        return type(exc).__name__, str(exc)
    state = aggregator.export()
    return [list(state[0].items()), list(state[1].items()), *state[2:]]


@needs_compiled
@settings(max_examples=scaled_examples(400), deadline=None)
@given(
    body=st.lists(raw_lines(), min_size=1, max_size=25),
    odd=st.none() | st.tuples(raw_lines(odd=True), st.integers(0, 25)),
    split=st.booleans(),
    window=st.sampled_from(
        [(None, None), (STAMPS[3], None), (None, STAMPS[0]), (STAMPS[1], STAMPS[3])]
    ),
    unterminated=st.booleans(),
)
def test_compiled_scan_folds_only_valid_plain_lines_as_the_python_fold_does(
    body: list[bytes],
    odd: tuple[bytes, int] | None,
    split: bool,
    window: tuple[str | None, str | None],
    unterminated: bool,
) -> None:
    """Index.scan folds a block only when every line is a record `validate_record` accepts
    (a strict subset), and then exactly as the reference fold does; any other block (here,
    one odd line among plain ones) it leaves untouched, and the Python paths give the
    reference's state or error."""
    if odd is not None:
        body.insert(odd[1], odd[0])
    block = b"".join(body)
    if unterminated and block.endswith(b"\n") and len(block) > 1:
        block = block[:-1]  # the last block of a file may lack its newline
    _check_compiled_scan(block, split, window)


def _check_compiled_scan(block: bytes, split: bool, window: tuple[str | None, str | None]) -> None:
    expected = MAP if split else None
    mine = ObservationAggregator(expected, *window, unsplit=not split)
    reference = ObservationAggregator(expected, *window, unsplit=not split, compiled=False)
    folded = mine._compiled_block(block)
    if folded is None:
        assert mine.records == 0 and not any(s.count for s in mine.expected.values())
        assert not mine.unexpected
    else:
        lines = block.split(b"\n")
        assert folded == len(lines) - (lines[-1] == b"")
        for number, line in enumerate(lines[:folded], start=1):
            validate_record(json.loads(line), "obs.ndjson", number)  # raises if not a record
    assert _fold_outcome(ObservationAggregator(expected, *window, unsplit=not split), block) == (
        _fold_outcome(reference, block)
    )
    if folded is not None:
        state = mine.export()
        assert [list(state[0].items()), list(state[1].items()), *state[2:]] == _fold_outcome(
            ObservationAggregator(expected, *window, unsplit=not split, compiled=False), block
        )


@needs_compiled
def test_compiled_scan_takes_the_bench_line_and_leaves_the_others() -> None:
    line = (
        f'{{"function_name":"fn_1","node_hash":"{MAP[0]}","observed_at":"{STAMPS[0]}",'
        f'"pid":1000,"probe_type":"uprobe"}}\n'
    ).encode()
    aggregator = ObservationAggregator(MAP)
    assert aggregator._compiled_block(line * 3) == 3
    assert aggregator.expected[MAP[0]].count == 3
    for other in (
        line.replace(b'"pid":1000', b'"pid":01000'),  # a leading zero: not JSON
        line.replace(b"fn_1", b"fn_\\u0031"),  # an escape: msgspec decodes it
        line.replace(b"2026-01-23", b"2026-02-29"),
        line.replace(b"2026-01-23", b"1900-02-29"),
        line.replace(b"uprobe", b"upr0be"),
        line.replace(b",", b", ", 1),
        line + b"\n",  # a blank line
    ):
        assert aggregator._compiled_block(line + other) is None
    assert aggregator.expected[MAP[0]].count == 3 and aggregator.records == 3


_ALL_KEYS = sorted({*_REQUIRED, "pid", "probe_type", "purl", "comm", "binary_path"})


@needs_compiled
@pytest.mark.parametrize(
    ("key", "value"), [(k, v) for k in _ALL_KEYS for v in sorted(_odd_values(k))]
)
def test_compiled_scan_leaves_every_odd_value(key: str, value: str) -> None:
    """Each odd value of the table alone in a line before a plain one (what the property test
    draws only now and then); first, so that its node's name is the odd line's."""
    good = {k: next(v for v in _VALUES[k] if v not in _odd_values(k)) for k in _ALL_KEYS}
    plain = "{" + ",".join(f'"{k}":{good[k]}' for k in _ALL_KEYS) + "}\n"
    odd = "{" + ",".join(f'"{k}":{value if k == key else good[k]}' for k in _ALL_KEYS) + "}\n"
    for split in (False, True):
        _check_compiled_scan((odd + plain).encode(), split, (None, None))


# --- the compiled scan of a verify body's records (parse_records, Index.fold_records) -------

_SPACES = ["", "", " ", "  ", "\n", "\t", "\r\n  "]
_BODY_OPTIONAL = (
    "pid",
    "probe_type",
    "purl",
    "comm",
    "binary_path",
    "kind",
    "host",
    "build_id",
    "container_id",
    "namespace",
    "pod_name",
)
_BODY_VALUES: dict[str, list[str]] = {
    **_VALUES,
    "kind": ['"function"', '"exec"', '"tls"', '"bogus"', '"FUNCTION"', "null"],
    "host": ['"node-1"', '"h\\u00e9"'],
    "count": ["2", "1"],
    "first_observed_at": [f'"{STAMPS[1]}"'],
    "details": ['{"argv":["a"]}'],
    "image_digest": ['"sha256:' + "a" * 64 + '"'],
}
_BODY_WINDOWS = [
    (None, None),
    ("2026-01-23T00:05:00.000000Z", None),
    (None, "2026-01-23T00:05:01.000000Z"),
    ("2026-01-23T00:00:00.000000Z", "2026-01-23T00:05:00.000000Z"),
    ("2026-01-23T01:05:00+01:00", "2026-01-23T00:05:00.5Z"),
]


@st.composite
def body_records(draw: st.DrawFn, hashes: list[str], odd: bool = False) -> str:
    """One record of a verify body as a JSON object's text: its keys in any order, JSON
    whitespace between its tokens; with `odd`, one oddity (a value of another type or
    spelling, a key unknown, repeated or of an aggregated record, an escape, a key missing)."""
    keys = [*_REQUIRED, *(k for k in _BODY_OPTIONAL if draw(st.booleans()))]
    oddity = (
        draw(
            st.sampled_from(
                ["value"] * 3 + ["unknown", "repeat", "aggregated", "escape", "missing"]
            )
        )
        if odd
        else ""
    )
    values = {}
    for key in keys:
        if key == "node_hash":
            values[key] = '"' + draw(st.sampled_from(hashes)) + '"'
        else:
            good = [v for v in _BODY_VALUES.get(key, ['"x"']) if v not in _odd_values(key)]
            good = [v for v in good if "\\" not in v and v != "null" and "é" not in v]
            if key == "kind":
                good = ['"function"', '"exec"', '"tls"']
            values[key] = draw(st.sampled_from(good))
    pairs = [(key, values[key]) for key in keys]
    if oddity == "value":
        key = draw(st.sampled_from(keys))
        odd = sorted({*_odd_values(key), *_BODY_VALUES.get(key, [])} - {values[key]})
        if odd:
            pairs = [(k, draw(st.sampled_from(odd)) if k == key else v) for k, v in pairs]
    elif oddity == "unknown":  # a key of its own, or a known key's name cut short or longer
        key = draw(st.sampled_from(["unknown_field", "pids", "purl_", "kin", "node_hashes", ""]))
        pairs.append((key, '"x"'))
    elif oddity == "repeat":
        key, value = draw(st.sampled_from(pairs))
        pairs.append((key, draw(st.sampled_from([value, *(_BODY_VALUES.get(key) or [value])]))))
    elif oddity == "aggregated":
        key = draw(st.sampled_from(["count", "first_observed_at", "details", "image_digest"]))
        pairs.append((key, draw(st.sampled_from(_BODY_VALUES[key]))))
    elif oddity == "escape":
        pairs = [(k, v.replace("_", "\\u005f", 1) if k == "function_name" else v) for k, v in pairs]
    elif oddity == "missing":
        pairs = [(k, v) for k, v in pairs if k != draw(st.sampled_from(_REQUIRED))]
    pairs = draw(st.permutations(pairs))

    def space() -> str:
        return draw(st.sampled_from(_SPACES))

    items = [f'{space()}"{k}"{space()}:{space()}{v}{space()}' for k, v in pairs]
    if draw(st.booleans()):  # json.dumps's spelling
        return "{" + ", ".join(f'"{k}": {v}' for k, v in pairs) + "}"
    return "{" + ",".join(items) + "}"


def _report_bytes(fmap: FunctionMap, records: Any, options: VerifyOptions) -> bytes:
    result = engine_module.verify_observations(fmap, records, options, source="<request body>")
    return encode_report(result.report().to_dict())


@needs_compiled
@settings(
    max_examples=scaled_examples(300),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_compiled_body_scan_gives_the_typed_decoders_reports(
    data: st.DataObject, fmap: FunctionMap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verify body's records checked and folded from the bytes (`read_verify_body`:
    `parse_records`, `Index.fold_records`) only when the typed decoder takes every one (a
    strict subset: each a record `validate_record` accepts), and then with the report, byte
    for byte, of the typed decoder + the compiled fold and of the Python fold, the body's
    window and options the same; any other body is the typed decoder's (or FastAPI's) as
    before."""
    hashes = sorted({n.node_hash for p in fmap.expected_paths for n in p.nodes})
    hashes = [*hashes, *UNKNOWN, *(["sha256:" + "A" * 64] if data.draw(st.booleans()) else [])]
    items = data.draw(st.lists(body_records(hashes), max_size=25))
    if data.draw(st.booleans()):
        items.insert(data.draw(st.integers(0, len(items))), data.draw(body_records(hashes, True)))
    space = data.draw(st.sampled_from(_SPACES))
    array = "[" + space + ("," + space).join(items) + data.draw(st.sampled_from(_SPACES)) + "]"
    if data.draw(st.integers(0, 15)) == 0:  # an array JSON refuses, or one of another value
        array = data.draw(
            st.sampled_from([array[:-1] + ",]", array.replace(",", ",\f", 1), "[1]", "[{}]"])
        )
    window = data.draw(st.sampled_from(_BODY_WINDOWS))
    members = [
        f'"{key}": "{value}"' for key, value in zip(("from", "to"), window, strict=True) if value
    ]
    if data.draw(st.booleans()):
        members.append('"fail_on_unexpected": true')
    if data.draw(st.booleans()):
        members.append('"probe_weights": {"uprobe": 0.5}')
    members.insert(data.draw(st.integers(0, len(members))), f'"observations"{space}:{space}{array}')
    if data.draw(st.integers(0, 10)) == 0:  # an outer key named twice: refused
        members.append(data.draw(st.sampled_from([*members, '"observations": []'])))
    outer = data.draw(st.sampled_from(["{%s}", "\n{ %s }\n"]))
    _check_body_scan(fmap, (outer % ", ".join(members)).encode(), monkeypatch)


def _check_body_scan(fmap: FunctionMap, raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    body = read_verify_body(raw)
    decoded = decode_verify_body(raw)
    assert (body is None) == (decoded is None), raw
    if not isinstance(body, ScannedVerifyBody):
        return  # the typed decoder's answer, as before
    assert decoded is not None, raw  # the scan takes a strict subset of what msgspec takes
    for number, record in enumerate(json.loads(raw)["observations"], start=1):
        validate_record(record, "<request body>", number)
    scanned = body.records()
    assert len(scanned) == len(json.loads(raw)["observations"])
    records = decoded.records()
    assert records is not None
    options = body.options()
    assert options == decoded.options()
    reports = [_report_bytes(fmap, scanned, options), _report_bytes(fmap, records, options)]
    with monkeypatch.context() as patch:
        patch.setattr(scan_module, "FOLD", None)  # the Python fold, the reference
        reports.append(_report_bytes(fmap, records, options))
        reports.append(_report_bytes(fmap, scanned, options))  # its decoded records, folded
    assert reports[0] == reports[1] == reports[2] == reports[3]


_BODY_KEYS = sorted({*_REQUIRED, *_BODY_OPTIONAL})


def _body_odd_values(key: str) -> list[str]:
    return sorted({*_odd_values(key), *_BODY_VALUES.get(key, [])} - {*_BODY_GOOD[key]})


_BODY_GOOD = {
    key: [
        v
        for v in _BODY_VALUES.get(key, ['"x"'])
        if v not in _odd_values(key) and "\\" not in v and v != "null" and "é" not in v
    ]
    for key in _BODY_KEYS
}
_BODY_GOOD["kind"] = ['"function"', '"exec"', '"tls"']


@needs_compiled
@pytest.mark.parametrize(
    ("key", "value"), [(k, v) for k in _BODY_KEYS for v in _body_odd_values(k)]
)
def test_compiled_body_scan_leaves_every_odd_value(
    key: str, value: str, fmap: FunctionMap, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each odd value of the table alone in a body's record before a plain one (what the
    property test draws only now and then): not scanned, or scanned as the typed path folds
    it."""
    good = {k: v[0] for k, v in _BODY_GOOD.items()}
    good["node_hash"] = f'"{fmap.expected_paths[0].nodes[0].node_hash}"'
    plain = "{" + ", ".join(f'"{k}": {good[k]}' for k in _BODY_KEYS) + "}"
    odd = "{" + ", ".join(f'"{k}": {value if k == key else good[k]}' for k in _BODY_KEYS) + "}"
    _check_body_scan(fmap, f'{{"observations": [{odd}, {plain}]}}'.encode(), monkeypatch)


@needs_compiled
def test_compiled_body_scan_takes_the_bench_body_and_leaves_the_others(fmap: FunctionMap) -> None:
    """The bench's body (json.dumps of collector records) is scanned, with a window too; a
    body with any oddity is left to the typed decoder, which decides as before (a repeated key included: msgspec
    takes its last value)."""
    node = fmap.expected_paths[0].nodes[0]
    record = {
        "node_hash": node.node_hash,
        "function_name": "fn_1",
        "purl": "pkg:generic/bench@1.0",
        "probe_type": "uprobe",
        "observed_at": STAMPS[0],
        "pid": 1000,
        "kind": "function",
    }
    raw = json.dumps({"observations": [record] * 3}).encode()
    body = read_verify_body(raw)
    assert isinstance(body, ScannedVerifyBody) and len(body.records()) == 3
    assert json.loads(_report_bytes(fmap, body.records(), body.options()))["records"]["read"] == 3
    text = raw.decode()
    for other in (
        text.replace('"pid": 1000', '"pid": 1000, "pid": 7', 1),  # a key named twice
        text.replace('"pid": 1000', '"pid": 1000, "count": 2', 1),
        text.replace('"pid": 1000', '"pid": 1000, "pids": 2', 1),
        text.replace('"pid": 1000', '"pid": 1000, "kin": 2', 1),
        text.replace('"pid": 1000', '"pidx: 1000', 1),  # not JSON: the key's quote is not there
        text.replace('"fn_1"', '"fn\\u005f1"', 1),
        text.replace('"function"', '"bogus"', 1),
        text.replace("2026-01-23", "2026-02-29", 1),
        text.replace(".000000Z", "Z", 1),
        text.replace("uprobe", "UPROBE", 1),
        text.replace(", ", ",\f", 1),
        text.replace("1000", "-1", 1),
        text.replace('"observations": [', '"observations": [{}, ', 1),
        '{"observations": []}',
    ):
        assert not isinstance(read_verify_body(other.encode()), ScannedVerifyBody), other
    windowed = read_verify_body(
        text.replace('"observations": [', '"to": null, "observations": [', 1).encode()
    )
    assert isinstance(windowed, ScannedVerifyBody) and windowed.options().window_to is None
    windowed = read_verify_body(
        text.replace("]}", '], "from": "2026-01-23T01:00:00+01:00"}').encode()
    )
    assert isinstance(windowed, ScannedVerifyBody)
    assert windowed.options().window_from == dt.datetime(2026, 1, 23, tzinfo=dt.UTC)
    array = text[text.index("[") : text.rindex("]") + 1]
    for twice in (  # the outer key check, as before
        text.replace("]}", '], "to": null, "to": null}'),
        text.replace("]}", f'], "to": null, "observations": {array}}}'),  # the same array
        text.replace("]}", '], "to": null, "observations": []}'),
        f'{{"observations": [], "to": null, "observations": {array}}}',
    ):
        assert read_verify_body(twice.encode()) is None, twice
        assert decode_verify_body(twice.encode()) is None
    repeated = read_verify_body(text.replace('"pid": 1000', '"pid": 1000, "pid": 7', 1).encode())
    assert repeated is not None and repeated.records()[0].pid == 7  # type: ignore[index]
