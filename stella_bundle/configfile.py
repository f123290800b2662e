"""Configuration files (stellaops.yaml; the JSON tokens and metadata files): read once by the
YAML library's node tree, so that an error names the file, line and column of the value.

`read_yaml_config` refuses what `yaml.safe_load` takes silently and a verdict must not depend
on: a key given twice in one mapping (PyYAML keeps the last), more than one document, text
that is not UTF-8 (PyYAML also reads UTF-16), aliases that expand past `MAX_CONFIG_NODES`
(a "billion laughs" file is a few hundred bytes) or refer to a node containing themselves.

Where each value is (`field path → line, column`) is kept per file; `ConfigError(…, path=file,
field="a.b[2].c")` looks its field up there (errors.py), so the section parsers keep naming
fields as they did and gain the place. A field not in the file (a missing key) is placed at its
nearest enclosing one.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from pathlib import Path
from typing import Any, Final

from .errors import ConfigError, MalformedDocumentError
from .jsonio import read_bytes

# Far beyond any real configuration (stellaops.yaml is a few kB), and a bound on what one
# file can make the parser and the section walkers do.
MAX_CONFIG_BYTES: Final = 4 << 20
# Nodes of the document with every alias expanded (what a walker of the values visits).
MAX_CONFIG_NODES: Final = 100_000
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"

Place = tuple[int, int]  # line, column (from 1)
_PLACES: dict[str, dict[str, Place]] = {}
_JSON_TEXT: dict[str, bytes] = {}  # JSON files: placed when an error first asks


def read_yaml_config(path: str | Path) -> Any:
    """The document of a YAML configuration file, its places remembered for errors."""
    source = str(path)
    data = read_bytes(path, MAX_CONFIG_BYTES)
    document, places = _compose(data, source)
    _PLACES[_key(source)] = places
    _JSON_TEXT.pop(_key(source), None)
    return document


def refuse_unknown_keys(
    mapping: dict[Any, Any],
    allowed: frozenset[str] | set[str],
    source: str | Path | None,
    prefix: str,
) -> None:
    """A key the reader does not read is refused, never left to its default (a misspelt
    `rotaton:` would leave every setting as it was without a word): the first unknown key by
    name, at `prefix` + key, with the keys allowed."""
    unknown = sorted((key for key in mapping if key not in allowed), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key (allowed: {', '.join(sorted(allowed))})",
            path=None if source is None else str(source),
            field=f"{prefix}{unknown[0]}",
        )


def read_json_config(path: str | Path) -> Any:
    """The document of a JSON configuration file (the toolkit's JSON rule: jsonio), its
    places found when an error asks for them."""
    from .jsonio import parse_json

    source = str(path)
    data = read_bytes(path, MAX_CONFIG_BYTES)
    try:
        document = parse_json(data, source)
    except MalformedDocumentError as exc:
        if exc.line is None:  # a key given twice has no line from json: placed here
            _place_repeated_key(data, source, exc)
        raise
    remember_json(source, data)
    return document


def _place_repeated_key(data: bytes, source: str, exc: MalformedDocumentError) -> None:
    try:
        _json_walk(data.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except _RepeatedKeyError as repeated:
        line, column = repeated.place
        raise ConfigError(
            f"{exc.message} (first at line {repeated.first[0]})",
            path=source,
            line=line,
            column=column,
            field=repeated.field,
        ) from exc
    except (ValueError, IndexError, AttributeError):
        return


def remember_json(source: str, data: bytes) -> None:
    """A JSON configuration file's text, for placing its errors (walked only when an error
    names one of its fields)."""
    _PLACES.pop(_key(source), None)
    if len(data) <= MAX_CONFIG_BYTES:
        _JSON_TEXT[_key(source)] = data


def place_of(source: str, field: str) -> Place | None:
    """Line and column of `field` (dotted, with [i] for list items) in `source`, or of the
    nearest enclosing field the file has; None when the file was not read here."""
    key = _key(source)
    places = _PLACES.get(key)
    if places is None and key in _JSON_TEXT:
        places = _json_places(_JSON_TEXT.pop(key))
        _PLACES[key] = places
    return _nearest(places, field) if places else None


def place_in_json(data: bytes, field: str) -> Place | None:
    """Line and column of `field` (or its nearest enclosing field) in a JSON document that
    `parse_json` has read: for the errors of a document that is not a configuration file
    (an SBOM's `components[3].purl`), found only when one is raised."""
    return _nearest(_json_places(data), field)


def _nearest(places: dict[str, Place], field: str) -> Place | None:
    while field:
        if field in places:
            return places[field]
        cut = max(field.rfind("."), field.rfind("["))
        field = field[:cut] if cut > 0 else ""
    return None


def _key(source: str) -> str:
    """Files by absolute path: `stellaops.yaml` read in one directory is not another's."""
    return os.path.abspath(source)


def _decode(data: bytes, source: str) -> str:
    try:
        return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise ConfigError(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x}; a configuration file is read as UTF-8)",
            path=source,
            line=line,
            column=column,
        ) from exc


def _compose(data: bytes, source: str) -> tuple[Any, dict[str, Place]]:
    import yaml  # here: the record pass and `bundle verify` never read a configuration

    text = _decode(data, source)
    # The Python loader, not libyaml's: the C composer recurses on the C stack, and a deeply
    # nested file crashes the process (the Python one raises RecursionError).
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, anywhere
        raise _unprintable(text, exc.position, source) from exc
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        _check_size(node, source)
        places: dict[str, Place] = {}
        _walk(node, "", loader, places, source)
        document = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or type(exc).__name__
        if exc.context and exc.problem and "single document" not in exc.context:
            problem = f"{exc.context}, {problem}"
        if "single document" in str(exc.context):
            problem = "more than one document (a configuration file holds one)"
        raise ConfigError(
            f"malformed YAML: {problem}",
            path=source,
            line=mark.line + 1 if mark is not None else None,
            column=mark.column + 1 if mark is not None else None,
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {str(exc).splitlines()[0]}", path=source) from exc
    except RecursionError as exc:
        raise ConfigError("malformed YAML: nested too deeply", path=source) from exc
    except ValueError as exc:  # an integer of more than 4300 digits
        raise ConfigError(
            f"malformed YAML: number out of range: {str(exc).splitlines()[0]}", path=source
        ) from exc
    finally:
        loader.dispose()
    return document, places


def _unprintable(text: str, position: int, source: str) -> ConfigError:
    before = text[:position]
    return ConfigError(
        f"malformed YAML: character U+{ord(text[position]):04X} is not allowed in YAML text "
        "(a control character? write it as an escape in a double-quoted string)",
        path=source,
        line=before.count("\n") + 1,
        column=position - (before.rfind("\n") + 1) + 1,
    )


_JSON_SPACE = re.compile(r"[ \t\n\r]*")
_JSON_SCALAR = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?|true|false|null")


def _json_places(data: bytes) -> dict[str, Place]:
    """Each value's place in a JSON document (`parse_json` has read it already), by the JSON
    grammar itself: YAML's reader refuses characters JSON allows in strings (DEL, C1 controls),
    counts U+0085 and U+2028 as line breaks, and cannot read tab indentation or keys of more
    than 1024 characters. Lines are counted at \\n, columns in characters (as `json` does).
    Iterative: a document as deep as `json` reads does not exhaust the stack here."""
    try:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
        return _json_walk(text)
    except (ValueError, IndexError, AttributeError, _RepeatedKeyError):  # no places, then
        return {}


class _RepeatedKeyError(Exception):
    def __init__(self, field: str, place: Place, first: Place) -> None:
        super().__init__(field)
        self.field, self.place, self.first = field, place, first


def _json_walk(text: str) -> dict[str, Place]:
    """Places by field; a key given twice in one object raises _RepeatedKeyError (the text
    of a document `parse_json` refused for it)."""
    starts = [0, *(match.end() for match in re.finditer("\n", text))]
    places: dict[str, Place] = {}
    # (bracket, field, [next item index], an object's keys: where each is)
    stack: list[tuple[str, str, list[int], dict[str, Place]]] = []

    def space(pos: int) -> int:
        return _JSON_SPACE.match(text, pos).end()  # type: ignore[union-attr]

    def place(pos: int) -> Place:
        line = bisect.bisect_right(starts, pos)
        return line, pos - starts[line - 1] + 1

    def member(pos: int, parent: str, keys: dict[str, Place]) -> tuple[str, int]:
        """The field of the member whose key starts at `pos`, and where its value starts."""
        key, end = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
        field = f"{parent}.{key}" if parent else key
        first = keys.setdefault(key, place(pos))
        if first != place(pos):
            raise _RepeatedKeyError(field, place(pos), first)
        end = space(end)
        if text[end] != ":":
            raise ValueError("expected ':'")
        return field, space(end + 1)

    pos, field = space(0), ""
    while True:
        # A value starts at `pos`; its name is `field`.
        if field:
            places.setdefault(field, place(pos))
        char = text[pos]
        if char in "{[":
            pos = space(pos + 1)
            if text[pos] not in "}]":
                stack.append((char, field, [0], {}))
                if char == "{":
                    field, pos = member(pos, field, stack[-1][3])
                else:
                    field = f"{field}[0]"
                continue
            pos += 1
        elif char == '"':
            pos = json.decoder.scanstring(text, pos + 1)[1]  # type: ignore[attr-defined]
        else:
            pos = _JSON_SCALAR.match(text, pos).end()  # type: ignore[union-attr]
        # After a value: the next member or item, or the end of its container(s).
        while True:
            pos = space(pos)
            if not stack:
                return places
            bracket, parent, index, keys = stack[-1]
            if text[pos] == ",":
                pos = space(pos + 1)
                if bracket == "{":
                    field, pos = member(pos, parent, keys)
                else:
                    index[0] += 1
                    field = f"{parent}[{index[0]}]"
                break
            stack.pop()
            pos += 1


def _check_size(root: Any, source: str) -> None:
    """The node count with aliases expanded, counted without expanding them (each node once,
    its expanded size remembered); a node reached again while its own children are being
    counted is an alias inside its own anchor."""
    import yaml

    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            mark = node.start_mark
            raise ConfigError(
                "an alias refers to the node that contains it (a recursive document)",
                path=source,
                line=mark.line + 1,
                column=mark.column + 1,
            )
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        if total > MAX_CONFIG_NODES:
            mark = node.start_mark
            raise ConfigError(
                f"more than {MAX_CONFIG_NODES} values once its aliases are expanded (an alias "
                "bomb?)",
                path=source,
                line=mark.line + 1,
                column=mark.column + 1,
            )
        sizes[key] = total
        return total

    size(root)


def _walk(node: Any, field: str, loader: Any, places: dict[str, Place], source: str) -> None:
    """Each value's place under its field name; a key twice in one mapping refused."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            name = f"{field}[{index}]"
            places.setdefault(name, (item.start_mark.line + 1, item.start_mark.column + 1))
            _walk(item, name, loader, places, source)
    elif isinstance(node, yaml.MappingNode):
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:  # `<<: *defaults`: explicit keys override, by design
                continue
            key = loader.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node)
            except TypeError:  # a mapping or list as a key: the constructor refuses it
                continue
            mark = key_node.start_mark
            if first is not key_node:
                shown = f"{field}.{key}" if field else str(key)
                raise ConfigError(
                    f"key {key!r} given twice in one mapping (first at line "
                    f"{first.start_mark.line + 1}); which one counts would be a guess",
                    path=source,
                    line=mark.line + 1,
                    column=mark.column + 1,
                    field=shown,
                )
            name = f"{field}.{key}" if field else str(key)
            # A value is placed where it is written, a block section (which starts on the
            # next line) where its key is.
            inline = isinstance(value_node, yaml.ScalarNode) or value_node.flow_style
            where = value_node.start_mark if inline else mark
            places.setdefault(name, (where.line + 1, where.column + 1))
            _walk(value_node, name, loader, places, source)
