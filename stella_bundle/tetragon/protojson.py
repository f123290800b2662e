"""Tetragon's events in the one JSON form the mapper reads: protobuf's JSON mapping with proto
field names, as Tetragon's export (Go's protojson, `UseProtoNames`) and the gRPC reader
(`MessageToDict`, proto names) write it.

A protobuf JSON reader (Tetragon's own `tetra getevents` reading a file, `json_format.Parse`)
accepts more than that, and all of it names the same event: lowerCamelCase names (a field's
`json_name`) beside the proto names, 32-bit integers as strings and 64-bit ones as numbers,
integral numbers with a fraction or an exponent, enum values by number, `null` for a field left
out. Evidence must not depend on which form a producer chose (a shipper re-serialising the
export, another protobuf writer). Names, types and presence come from Tetragon's own API (the
descriptor set the gRPC reader loads), so map keys (labels) and free-form values are never
renamed. A value of the wrong type is left as it is, for the mapper to count.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Final

from ..canonical import MAX_SAFE_INTEGER

# FieldDescriptorProto.Type (google/protobuf/descriptor.proto): protobuf itself is imported
# only when an event needs this module (the descriptor set costs ~80 ms to load).
_DOUBLE, _FLOAT, _INT64, _UINT64, _INT32, _FIXED64, _FIXED32, _BOOL, _STRING = range(1, 10)
_MESSAGE, _BYTES, _UINT32, _ENUM, _SFIXED32, _SFIXED64, _SINT32, _SINT64 = range(11, 19)

_I32: Final = (-(1 << 31), (1 << 31) - 1)
UINT32_MAX: Final = (1 << 32) - 1
_U32: Final = (0, UINT32_MAX)
_I64: Final = (-(1 << 63), (1 << 63) - 1)
UINT64_MAX: Final = (1 << 64) - 1
_U64: Final = (0, UINT64_MAX)
_DIGITS: Final = re.compile(r"-?[0-9]+")


class RepeatedFieldError(ValueError):
    """One field given twice (by its proto name and its json_name): protobuf refuses it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def proto_int(value: Any, low: int = _U32[0], high: int = _U32[1]) -> int | None:
    """A protobuf integer as a JSON reader takes it: a number (integral, also as 12.0 or 1e3)
    or a decimal string, within [low, high] (uint32 by default); None for anything else."""
    kind = type(value)
    if kind is int:
        number = value
    elif kind is str:
        if not value.isascii() or _DIGITS.fullmatch(value) is None:
            return None
        number = int(value)
    elif kind is float:
        # A double past 2**53 is no longer the integer that was written.
        if not math.isfinite(value) or not value.is_integer() or abs(value) > MAX_SAFE_INTEGER:
            return None
        number = int(value)
    else:  # bool too: JSON's true is no number
        return None
    return number if low <= number <= high else None


class _Message:
    """How to read one message type: by key (proto name or json_name), its field's entry."""

    __slots__ = ("fields",)

    def __init__(self) -> None:
        self.fields: dict[str, _Field] = {}


# (proto name, repeated, form, the form's detail, default: a value that is the field left out
# (proto3 scalars without presence) or _NO_DEFAULT)
_Field = tuple[str, bool, str, Any, Any]
_NO_DEFAULT: Final = object()

_WRAPPERS: Final = {
    "google.protobuf.Int32Value": (*_I32, False),
    "google.protobuf.UInt32Value": (*_U32, False),
    "google.protobuf.Int64Value": (*_I64, True),
    "google.protobuf.UInt64Value": (*_U64, True),
}
# 64-bit integers are written as strings (a JSON number is a double to many readers).
_INTEGERS: Final = {
    _INT32: (*_I32, False),
    _SINT32: (*_I32, False),
    _SFIXED32: (*_I32, False),
    _UINT32: (*_U32, False),
    _FIXED32: (*_U32, False),
    _INT64: (*_I64, True),
    _SINT64: (*_I64, True),
    _SFIXED64: (*_I64, True),
    _UINT64: (*_U64, True),
    _FIXED64: (*_U64, True),
}
_SCALAR_DEFAULTS: Final = {_STRING: "", _BYTES: "", _BOOL: False}


def _build(descriptor: Any, built: dict[str, _Message]) -> _Message:
    found = built.get(descriptor.full_name)
    if found is not None:
        return found
    message = built[descriptor.full_name] = _Message()
    for field in descriptor.fields:
        repeated = field.is_repeated
        form, detail = _form(field, built)
        if form == "map" or form == "map_scalar":
            repeated = False
        default: Any = _NO_DEFAULT
        if not repeated and not field.has_presence:
            if form == "int":
                default = "0" if detail[2] else 0
            elif form == "enum":
                default = detail[0]
            else:
                default = _SCALAR_DEFAULTS.get(field.type, _NO_DEFAULT)
        entry = (field.name, repeated, form, detail, default)
        message.fields[field.name] = entry
        if field.json_name != field.name:
            message.fields[field.json_name] = entry
    return message


def _form(field: Any, built: dict[str, _Message]) -> tuple[str, Any]:
    """How a field's value is read: (form, detail)."""
    if field.type in _INTEGERS:
        return "int", _INTEGERS[field.type]
    if field.type == _ENUM:
        return "enum", {value.number: value.name for value in field.enum_type.values}
    if field.type != _MESSAGE:
        return "as_is", None  # strings, bytes (base64), bools, floats: as they came
    sub = field.message_type
    if sub.GetOptions().map_entry:
        value_field = sub.fields_by_name["value"]
        form, detail = _form(value_field, built)
        return ("map", detail) if form == "message" else ("map_scalar", (form, detail))
    if sub.full_name in _WRAPPERS:
        return "int", _WRAPPERS[sub.full_name]
    if sub.full_name.startswith("google.protobuf."):
        # Timestamps (the mapper's TimeNormalizer reads every RFC 3339 form) and the rest of
        # the well-known types, whose JSON is not an object of their fields.
        return "as_is", None
    return "message", _build(sub, built)


@functools.cache
def _messages() -> dict[str, _Message]:
    from .grpc_source import message_classes

    _, response = message_classes()
    built: dict[str, _Message] = {}
    _build(response.DESCRIPTOR, built)
    return built


def proto_named(event: dict[str, Any]) -> bool:
    """Whether the event's own keys, its body's and its process's are lower case, as proto
    names are (json_names of more than one word are not): then nothing the mapper reads is
    under another name (the objects it reads deeper, pod, container, image, stack frames,
    have one-word names only; arguments are normalised when kept). Far cheaper than
    `normalize_event`; a label with capitals (node_labels) only costs the walk."""
    if not _lower_case(event):
        return False
    for value in event.values():
        if type(value) is dict:
            if not _lower_case(value):
                return False
            process = value.get("process")
            if type(process) is dict and not _lower_case(process):
                return False
    return True


# Keys found lower case (a superset test in C: most events repeat the same few dozen keys).
_LOWER_CASE: Final[set[str]] = set()


def _lower_case(keys: dict[str, Any]) -> bool:
    if _LOWER_CASE.issuperset(keys):
        return True
    if not all(key.islower() for key in keys):
        return False
    if len(_LOWER_CASE) >= 65536:
        _LOWER_CASE.clear()
    _LOWER_CASE.update(keys)
    return True


def normalize_event(event: dict[str, Any]) -> dict[str, Any]:
    """A `GetEventsResponse` as Tetragon writes it (see the module's doc); RepeatedFieldError
    when a field is given under both its names."""
    return _message(event, _messages()["tetragon.GetEventsResponse"])


def normalize_argument(argument: Any) -> Any:
    """One `KprobeArgument` (of a kprobe's, uprobe's… `args`) in Tetragon's form."""
    if type(argument) is not dict:
        return argument
    return _message(argument, _messages()["tetragon.KprobeArgument"])


def _message(value: dict[str, Any], spec: _Message) -> dict[str, Any]:
    fields = spec.fields
    out: dict[str, Any] = {}
    for key, item in value.items():
        entry = fields.get(key)
        if entry is None:  # a field this version of the API does not know: as it is
            out[key] = item
            continue
        name, repeated, form, detail, default = entry
        if name in out or (name != key and name in value):
            raise RepeatedFieldError(name)
        if item is None:  # null: the field left out
            continue
        if repeated:
            if type(item) is not list:
                out[name] = item  # the wrong type: as it is, for the mapper to count
            elif item:
                out[name] = [_value(element, form, detail) for element in item]
            continue
        item = _value(item, form, detail)
        if item != default or type(item) is not type(default):  # a default: left out
            out[name] = item
    return out


def _value(item: Any, form: str, detail: Any) -> Any:
    if form == "as_is":
        return item
    if form == "message":
        return _message(item, detail) if type(item) is dict else item
    if form == "int":
        low, high, as_text = detail
        number = proto_int(item, low, high)
        if number is None:
            return item
        return str(number) if as_text else number
    if form == "enum":
        if type(item) is int:  # by number: its name when the API knows it
            return detail.get(item, item)
        return item
    if type(item) is not dict:  # a map of the wrong type
        return item
    if form == "map":
        return {k: _message(v, detail) if type(v) is dict else v for k, v in item.items()}
    return {k: _value(v, *detail) for k, v in item.items()}  # a map of scalars
