"""Configuration files are read by one helper (configfile): an error names the file, line and
column of the offending value for every reader (the store, signals, agent and tetragon sections
of stellaops.yaml; the JSON tokens and container metadata files), and what PyYAML would take
silently is refused: a key twice in a mapping, alias bombs and recursive aliases, text that is
not UTF-8, more than one document."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.agent.config import load_agent_settings
from stella_bundle.api.tokens import TokenFile
from stella_bundle.collector.containers import MetadataMap
from stella_bundle.configfile import MAX_CONFIG_NODES
from stella_bundle.errors import ConfigError
from stella_bundle.evidence.config import load_signals_config, read_stellaops
from stella_bundle.store.config import store_settings
from stella_bundle.tetragon.config import load_tetragon_config


def _error(read: Callable[[Path], Any], path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert caught.value.exit_code == 2
    line = str(caught.value)
    assert "\n" not in line
    return line


READERS: dict[str, Callable[[Path], Any]] = {
    "store": lambda path: store_settings(None, path),
    "signals": load_signals_config,
    "agent": load_agent_settings,
    "tetragon": load_tetragon_config,
}

# (reader, file text, the field, line:column of its value)
PLACED = [
    (
        "store",
        "# stellaops.yaml\nsignals: {}\n\nobservation_store:\n  type: sqlite\n"
        "  retention_hours: abc\n",
        "observation_store.retention_hours",
        "6:20",
    ),
    (
        "store",
        "runtime_agent:\n  observation_store:\n    max_batch_size:   -3\n",
        "runtime_agent.observation_store.max_batch_size",
        "3:23",
    ),
    (
        "signals",
        "signals:\n  output_directory: /tmp/x\n  rotation:\n    max_records: 10\n"
        "    max_size_mb: [1, 2]\n",
        "signals.rotation.max_size_mb",
        "5:18",
    ),
    (
        "tetragon",
        "tetragon:\n  enabled: true\n  max_line_bytes: 10\n",
        "tetragon.max_line_bytes",
        "3:19",
    ),
    (
        "tetragon",
        "tetragon: {enabled: true, privacy: {nonsense: 1}}\n",
        "tetragon.privacy.nonsense",
        "1:47",
    ),
    (
        "agent",
        "runtime_agent:\n  function_map: fm.json\n  metrics:\n    stall_seconds: -1\n",
        "runtime_agent.metrics.stall_seconds",
        "4:20",
    ),
    # A missing key is placed at the section it belongs in.
    (
        "store",
        "\n\nobservation_store:\n  type: postgres\n",
        "observation_store.url",
        "3:1",
    ),
]


@pytest.mark.parametrize("reader, text, field, place", PLACED)
def test_an_error_names_the_file_line_and_column(
    tmp_path: Path, reader: str, text: str, field: str, place: str
) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text(text)
    line = _error(READERS[reader], path)
    assert line.startswith(f"{path}:{place}: field '{field}"), line


def test_json_configuration_files_are_placed_too(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        '{\n  "version": 1,\n  "tokens": [\n'
        '    {"name": "a", "sha256": "' + "0" * 64 + '", "scopes": ["read"]},\n'
        '    {"name": "b", "sha256": "xyz", "scopes": ["read"]}\n  ]\n}\n'
    )
    assert _error(TokenFile.load, tokens).startswith(f"{tokens}:5:29: field 'tokens[1].sha256'")
    metadata = tmp_path / "containers.json"
    metadata.write_text('{"containers": {\n  "abc": {"pod_name": "p"},\n  "def": 7\n}}\n')
    assert _error(MetadataMap.load, metadata).startswith(f"{metadata}:3:10: field 'containers.def'")


@pytest.mark.parametrize(
    "text, place",
    [
        # Indented with tabs, as editors write JSON: YAML cannot read tab indentation.
        ('{\n\t"containers": {\n\t\t"web": {},\n\t\t"abc": 7\n\t}\n}\n', "4:10"),
        # A key past YAML's 1024-character limit of a simple key (a container id is any string).
        ('{"containers": {"' + "k" * 1100 + '": {},\n "abc": 7}}', "2:9"),
        # NEL and U+2028 inside a string: line breaks to YAML, not to JSON (nor an editor).
        ('{"containers": {"a\x85b\u2028c": {},\n "abc": 7}}', "2:9"),
        # DEL in a string: JSON allows it, YAML's reader raised (an internal error, exit 3).
        ('{"containers": {"a\x7fb": {},\n "abc": 7}}', "2:9"),
    ],
    ids=["tabs", "long-key", "nel-u2028", "del"],
)
def test_json_files_are_placed_by_the_json_grammar(tmp_path: Path, text: str, place: str) -> None:
    metadata = tmp_path / "containers.json"
    metadata.write_text(text, encoding="utf-8")
    line = _error(MetadataMap.load, metadata)
    assert line.startswith(f"{metadata}:{place}: field 'containers.abc': expected an object"), line


@pytest.mark.parametrize(
    "text, place, code",
    [
        ('signals:\n  chain_id: "a\x7fb"\n', "2:15", "U+007F"),
        ("observation_store:\n  path: x\x80.sqlite\n", "2:10", "U+0080"),
        ("# \ufffe\n", "1:3", "U+FFFE"),
    ],
)
def test_a_character_yaml_does_not_allow_is_placed(
    tmp_path: Path, run_cli: Any, text: str, place: str, code: str
) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text(text, encoding="utf-8")
    assert _error(read_stellaops, path).startswith(
        f"{path}:{place}: malformed YAML: character {code} is not allowed"
    )
    done = run_cli("store", "status", "--config", path)
    assert done.exit_code == 2
    assert done.stderr.startswith(f"error: {path}:{place}: malformed YAML: character {code}")
    assert done.stderr.count("\n") == 1, done.stderr


@pytest.mark.parametrize(
    "text, place, words",
    [
        ("observation_store:\n  type: sqlite\n  type: postgres\n", "3:3", "first at line 2"),
        ("signals: {}\nobservation_store: {}\nsignals: {chain_id: x}\n", "3:1", "line 1"),
        ("a:\n  - {x: 1, x: 1}\n", "2:12", "key 'x' given twice"),
        # Keys equal once read (true and True are one boolean; 1 and 0x1 one integer).
        ("a: {true: 1, True: 2}\n", "1:14", "given twice"),
        ("a: {1: x, 0x1: y}\n", "1:11", "given twice"),
    ],
)
def test_a_key_given_twice_is_refused(tmp_path: Path, text: str, place: str, words: str) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text(text)
    line = _error(read_stellaops, path)
    assert line.startswith(f"{path}:{place}: "), line
    assert words in line, line


def test_merge_keys_and_modest_aliases_are_read(tmp_path: Path) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text(
        "defaults: &d {type: sqlite, retention_hours: 24}\n"
        "observation_store:\n  <<: *d\n  retention_hours: 48\n"
        "copies: [*d, *d, *d]\n"
    )
    settings = store_settings(None, path)
    assert settings.retention_hours == 48.0 and settings.url.startswith("sqlite:")


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "stellaops.yaml"
    rows = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [
        f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)
    ]  # 9**10 values: billions
    path.write_text("\n".join(rows) + "\nobservation_store: {type: sqlite}\n")
    started = time.process_time()
    line = _error(read_stellaops, path)
    assert time.process_time() - started < 5  # a bound on the refusal, not a benchmark
    assert f"more than {MAX_CONFIG_NODES} values once its aliases are expanded" in line
    assert line.startswith(f"{path}:")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text("observation_store: &loop\n  type: sqlite\n  again: *loop\n")
    line = _error(read_stellaops, path)
    assert line.startswith(f"{path}:1:20: an alias refers to the node that contains it"), line


@pytest.mark.parametrize(
    "data, place",
    [
        (b"observation_store:\n  path: caf\xe9.sqlite\n", "2:12"),  # Latin-1
        ("observation_store: {}\n".encode("utf-16"), "1:1"),  # UTF-16 with its BOM
        (b"a: \xed\xa0\x80\n", "1:4"),  # a UTF-8-encoded surrogate
    ],
)
def test_text_that_is_not_utf8_is_refused(tmp_path: Path, data: bytes, place: str) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_bytes(data)
    line = _error(read_stellaops, path)
    assert line.startswith(f"{path}:{place}: not UTF-8 text"), line


def test_a_utf8_bom_and_one_marked_document_are_read(tmp_path: Path) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_bytes(b"\xef\xbb\xbf---\nobservation_store: {retention_hours: 5}\n...\n")
    assert store_settings(None, path).retention_hours == 5.0


def test_more_than_one_document_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text("observation_store: {retention_hours: 5}\n---\nobservation_store: {}\n")
    line = _error(read_stellaops, path)
    assert line.startswith(f"{path}:2:1: malformed YAML: more than one document"), line


def test_the_cli_prints_the_place(tmp_path: Path, run_cli: Any) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text("observation_store:\n  retention_hours: abc\n")
    done = run_cli("store", "status", "--config", path)
    assert done.exit_code == 2
    assert done.stderr.startswith(
        f"error: {path}:2:20: field 'observation_store.retention_hours': expected a positive "
    ), done.stderr


@pytest.mark.parametrize(
    "reader, text, place, words",
    [
        ("store", "observaton_store:\n  retention_hours: 5\n", "1:1", "'observation_store'"),
        ("signals", "Signals:\n  output_directory: /x\n", "1:1", "'signals'"),
        ("tetragon", "alerts: []\ntetragn: {enabled: false}\n", "2:10", "'tetragon'"),
        ("agent", "runtime-agent:\n  function_map: fm.json\n", "1:1", "'runtime_agent'"),
    ],
)
def test_a_section_a_typo_away_from_ours_is_refused(
    tmp_path: Path, reader: str, text: str, place: str, words: str
) -> None:
    """Read as absent, these left every setting at its default without a word."""
    path = tmp_path / "stellaops.yaml"
    path.write_text(text)
    line = _error(READERS[reader], path)
    assert line.startswith(f"{path}:{place}: field '"), line
    assert f"unknown section: did you mean {words}?" in line, line


def test_other_products_sections_are_passed_over(tmp_path: Path) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text(
        "alerts:\n  - name: function-map-coverage-low\n    severity: warning\n"
        "scanner: {workers: 4}\nobservation_store: {retention_hours: 5}\n"
    )
    assert store_settings(None, path).retention_hours == 5.0


@pytest.mark.parametrize(
    "text, place, field",
    [
        # A misspelt writer section: the rotation was the default, for `observations import`
        # and `tetragon ingest` (only `signals start` checked the section's keys).
        ("signals:\n  output_directory: /x\n  rotaton:\n    max_size_mb: 1\n", "3:3", "rotaton"),
        ("signals:\n  chain_idd: node-7\n", "2:14", "chain_idd"),
        ("signals:\n  filters: {path_allowlist: [/etc], paths: [/x]}\n", "2:44", "filters.paths"),
        ("signals:\n  mode: 5\n", "2:9", "mode"),
        # Two names of one setting: key_file won, key was ignored.
        ("signals:\n  signing: {key_file: a.pem,\n    key: b.pem}\n", "3:10", "signing.key"),
    ],
)
def test_a_signals_key_is_checked_by_every_reader(
    tmp_path: Path, run_cli: Any, text: str, place: str, field: str
) -> None:
    path = tmp_path / "stellaops.yaml"
    path.write_text(text)
    assert _error(load_signals_config, path).startswith(f"{path}:{place}: field 'signals.{field}'")
    done = run_cli("observations", "import", "--config", path, tmp_path / "none.ndjson")
    assert done.exit_code == 2
    assert done.stderr.startswith(f"error: {path}:{place}: field 'signals.{field}'"), done.stderr


_DIGEST = '"sha256": "' + "0" * 64 + '"'


@pytest.mark.parametrize(
    "text, place, field, words",
    [
        (
            '{"version": 1, "tokens": [\n {"name": "ci", ' + _DIGEST + ', "scopes": ["read"],'
            ' "expires_at": "2026-01-01T00:00:00Z"}]}',
            "2:129",
            "tokens[0].expires_at",
            "unknown key (allowed: created_at, name, scopes, sha256)",
        ),
        ('{"version": 1, "tokens": [],\n "token": []}', "2:11", "token", "unknown key"),
        (
            '{"version": 1, "tokens": [{"name": "ci", ' + _DIGEST + ', "scopes": ["read"],\n'
            ' "created_at": 5}]}',
            "2:16",
            "tokens[0].created_at",
            "expected a time string, got 5",
        ),
    ],
)
def test_a_tokens_file_key_the_server_does_not_read_is_refused(
    tmp_path: Path, text: str, place: str, field: str, words: str
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(text)
    line = _error(TokenFile.load, tokens)
    assert line.startswith(f"{tokens}:{place}: field '{field}': {words}"), line


@pytest.mark.parametrize(
    "text, place, field, words",
    [
        (
            '{"containers": {"abc": {\n  "pod": "web-1"}}}',
            "2:10",
            "containers.abc.pod",
            "unknown key",
        ),
        ('{"containers": {"abc": {\n  "image": null}}}', "2:12", "containers.abc.image", "string"),
        ('{"containers": {},\n "pods": {}}', "2:10", "pods", "unknown key"),
    ],
)
def test_container_metadata_is_read_as_written_or_refused(
    tmp_path: Path, text: str, place: str, field: str, words: str
) -> None:
    """A misspelt name was dropped and a null recorded as the string "None" in the evidence."""
    metadata = tmp_path / "containers.json"
    metadata.write_text(text)
    line = _error(MetadataMap.load, metadata)
    assert line.startswith(f"{metadata}:{place}: field '{field}'"), line
    assert words in line, line


@pytest.mark.parametrize(
    "read, text, place, field",
    [
        (TokenFile.load, '{"version": 1,\n "tokens": [{"name": "a",\n   "name": "b"}]}', "3:4",
         "tokens[0].name"),
        (MetadataMap.load, '{"containers": {"abc": {"pod_name": "p"},\n  "abc": {}}}', "2:3",
         "containers.abc"),
    ],
)  # fmt: skip
def test_a_key_given_twice_in_a_json_file_is_placed(
    tmp_path: Path, read: Callable[[Path], Any], text: str, place: str, field: str
) -> None:
    """json gives no line for it: the error named the file only."""
    path = tmp_path / "config.json"
    path.write_text(text)
    line = _error(read, path)
    assert line.startswith(f"{path}:{place}: field '{field}': malformed JSON: key "), line
    assert "appears twice in one object (first at line" in line, line


def test_an_error_quoting_a_huge_value_is_still_a_short_line(tmp_path: Path) -> None:
    """`expected a number, got '…'` quoted the whole value: a 3 MB string made a 3 MB line."""
    path = tmp_path / "stellaops.yaml"
    path.write_text('signals:\n  rotation:\n    max_size_mb: "' + "x" * 3_000_000 + '"\n')
    line = _error(load_signals_config, path)
    assert line.startswith(f"{path}:3:18: field 'signals.rotation.max_size_mb': expected a number")
    assert len(line) < 2_500 and line.endswith("…"), len(line)
