"""The bridge's assembled lines: a `process_uprobe` record's canonical line built from its
shape's encoded parts (time and pid put in) is byte for byte the encoder's line of the record
the general path makes of the same event, whatever the values hold."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stella_bundle.evidence.encoding import encode_record
from stella_bundle.formats.function_map import (
    Coverage,
    ExpectedNode,
    ExpectedPath,
    FunctionMap,
    SbomRef,
)
from stella_bundle.tetragon.events import (
    PID_STAND_IN,
    TIME_STAND_IN,
    EventMapper,
    TimeNormalizer,
    line_template,
)
from stella_bundle.tetragon.nodes import NodeIndex
from stella_bundle.tetragon.sources import split_lines
from stella_bundle.timeutil import is_rfc3339_timestamp
from tests.conftest import scaled_examples

LIBSSL = "/usr/lib/x86_64-linux-gnu/libssl.so.3"
PURL = "pkg:deb/debian/libssl3@3.0.15-1~deb12u1?arch=amd64"
SYMBOLS = ("SSL_read", "SSL_write")


def _nodes() -> NodeIndex:
    nodes = tuple(ExpectedNode.create(PURL, s, binary_path=LIBSSL) for s in SYMBOLS)
    fmap = FunctionMap(
        "t",
        "b",
        "2026-01-23T00:00:00.000000Z",
        SbomRef("sha256:" + "0" * 64, "CycloneDX", "1.5"),
        Coverage(),
        (),
        (ExpectedPath("p", "crypto", 50, False, nodes),),
    )
    return NodeIndex(fmap)


TEXT = st.sampled_from(
    [
        "",
        "api",
        'quo"te\\',
        "ünï\u2028",
        "\x00nul",
        TIME_STAND_IN,
        str(PID_STAND_IN),
        "/srv/" + TIME_STAND_IN,
        "sha256:" + "ab" * 32,
        "docker.io/shop/api@sha256:" + "ab" * 32,
        "containerd://" + "3e" * 32,
        "\ud800",
    ]
)
TIMES = st.sampled_from(
    [
        "2026-01-23T00:00:00.123456789Z",
        "2026-01-23T00:00:00Z",
        "2026-01-23T02:00:00.5+02:00",
        "2024-02-29T23:59:59.999999999Z",
        "2026-02-29T00:00:00.000000000Z",
        "2026-01-23T24:00:00.000000000Z",
    ]
)
PIDS = st.sampled_from([None, 0, 4242, PID_STAND_IN, -1, 2**53, True, "12"])


@st.composite
def uprobe_events(draw: Any) -> dict[str, Any]:
    process: dict[str, Any] = {"binary": draw(TEXT)}
    pid = draw(PIDS)
    if pid is not None:
        process["pid"] = pid
    if draw(st.booleans()):
        process["pod"] = {
            "namespace": draw(TEXT),
            "name": draw(TEXT),
            "container": {"id": draw(TEXT), "image": {"id": draw(TEXT)}},
        }
        # Fields the record does not take, and values the fast path leaves to the general one.
        process["pod"].update(
            draw(
                st.sampled_from(
                    [{}, {"pod_labels": {"app": "api"}}, {"container": None}, {"name": 7}]
                )
            )
        )
    return {
        "process_uprobe": {
            "process": process,
            "path": draw(st.sampled_from([LIBSSL, "/usr/lib/other.so"])),
            "symbol": draw(st.sampled_from([*SYMBOLS, "other"])),
        },
        "node_name": draw(TEXT),
        "time": draw(TIMES),
    }


def _fast_path(mapper: EventMapper, data: bytes) -> tuple[bytes, str] | dict[str, Any] | None:
    """What the fast path makes of one line: (canonical line, observed_at), the record, or
    None (the general path decides)."""
    run: list[str] = []
    times: list[str] = []
    if mapper.map_uprobe_run([data], 0, run, times) == 1:
        return run[0].encode(), times[0]
    return mapper.declined


@settings(max_examples=scaled_examples(500), deadline=None)
@given(events=st.lists(uprobe_events(), min_size=1, max_size=4))
def test_assembled_line_is_the_encoders_line(events: list[dict[str, Any]]) -> None:
    fast, general = EventMapper(_nodes()), EventMapper(_nodes())
    for event in events:
        try:
            data = orjson.dumps(event)
        except orjson.JSONEncodeError:  # a lone surrogate: no such line exists
            continue
        mapped = _fast_path(fast, data)
        if mapped is None:
            continue  # the general path decides the line
        record = general.map(orjson.loads(data))
        assert isinstance(record, dict)
        if isinstance(mapped, tuple):
            line, observed = mapped
            assert observed == record["observed_at"]
            assert line == encode_record(record)
        else:
            assert mapped == record
    assert fast.counts == general.counts  # redactions counted alike


def test_a_stand_in_inside_a_value_gives_no_template() -> None:
    static = {
        "node_hash": "sha256:" + "0" * 64,
        "function_name": "f",
        "probe_type": "uprobe",
        "binary_path": "/x/" + TIME_STAND_IN,
    }
    assert line_template(static) is None
    assert line_template({**static, "binary_path": f"/x/{PID_STAND_IN}"}) is None
    assert line_template({**static, "binary_path": "/x"}) is not None


@settings(max_examples=scaled_examples(300), deadline=None)
@given(value=st.one_of(TIMES, st.text(max_size=40), st.from_regex(r"[0-9T:.Z+-]{19,32}")))
def test_normalised_times_are_canonical(value: str) -> None:
    """What the assembled lines take on trust: a normalised time is the toolkit's form."""
    normalised = TimeNormalizer()(value)
    if normalised is not None:
        assert len(normalised) == 27 and normalised.endswith("Z")
        assert is_rfc3339_timestamp(normalised)


@settings(max_examples=scaled_examples(300), deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=40) | st.sampled_from([b"\n", b"x" * 3000]), max_size=60),
    repeat=st.sampled_from([1, 3, 200]),
)
def test_split_lines_is_bytes_split(pieces: list[bytes], repeat: int) -> None:
    """The reader's memchr split gives what `bytes.split(b"\\n")` gives, long lines or short."""
    block = b"".join(pieces) * repeat
    assert split_lines(block) == block.split(b"\n")
