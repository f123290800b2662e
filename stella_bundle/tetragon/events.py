"""One Tetragon event (a `GetEventsResponse` as JSON, proto field names) → one observation record.

Field names are those of Tetragon's `events.proto`/`tetragon.proto` (tests/data/external/
tetragon/): `process_uprobe` {process, parent, path, symbol, policy_name, args…},
`process_kprobe` {function_name, args, return, action, kernel_stack_trace, user_stack_trace…},
`process_tracepoint` {subsys, event, args…}, `process_usdt` {path, provider, name…},
`process_exec`/`process_exit`, and beside the event `node_name`, `time`, `aggregation_info`.

`EventMapper.map` returns the record, or a string naming why the event cannot be one
(`kind:reason`): the caller counts those, nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Annotated, Any, Final

import msgspec

from ..canonical import MAX_SAFE_INTEGER
from ..evidence.encoding import encode_record
from ..evidence.timecheck import latest_sealable
from ..formats.record import ObservationError
from ..timeutil import format_timestamp, is_rfc3339_timestamp, parse_timestamp
from .nodes import NodeIndex, ResolvedNode
from .privacy import PrivacyFilter
from .protojson import (
    UINT32_MAX,
    UINT64_MAX,
    RepeatedFieldError,
    normalize_event,
    proto_int,
    proto_named,
)

# The rest of GetEventsResponse's `event` oneof: known, counted as unsupported (never a record).
# The kinds that become records are the keys of PROBE_TYPE.
OTHER_KINDS: Final = (
    "process_loader",
    "process_throttle",
    "process_lsm",
    "test",
    "rate_limit_info",
)
# Fields beside the event in a GetEventsResponse.
ENVELOPE_FIELDS: Final = frozenset(
    ("node_name", "time", "aggregation_info", "cluster_name", "node_labels")
)

# How Tetragon observes each kind: uprobes and USDT in user space; kprobes and tracepoints in
# the kernel; exec from the sched_process_exec tracepoint, exit from a kprobe on acct_process.
PROBE_TYPE: Final = {
    "process_uprobe": "uprobe",
    "process_usdt": "usdt",
    "process_kprobe": "kprobe",
    "process_tracepoint": "tracepoint",
    "process_exec": "tracepoint",
    "process_exit": "kprobe",
}
# Tetragon's cgroup rate limit began (ProcessThrottle, type THROTTLE_START): the cgroup's
# events are not sent until its THROTTLE_STOP, how many unknown. Refused as its kind is, and
# a gap in the seal (GAP_THROTTLED).
THROTTLE_START: Final = "process_throttle:throttle_start"
GAP_THROTTLED: Final = "gap.tetragon_throttled"
# Every member of GetEventsResponse's `event` oneof.
EVENT_KINDS: Final = frozenset((*PROBE_TYPE, *OTHER_KINDS))
EXEC_SYMBOL: Final = "execve"
EXEC_TRACEPOINT: Final = "sched/sched_process_exec"

# Container runtimes prefix Kubernetes container ids with their scheme.
_RUNTIME_SCHEMES: Final = ("containerd://", "cri-o://", "docker://", "crio://", "podman://")
_DIGEST_RE: Final = re.compile(r"sha256:[0-9a-f]{64}")
_TIME_RE: Final = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})"
)


class TimeNormalizer:
    """Tetragon's RFC 3339 times (nanoseconds, any offset) in the toolkit's form: UTC, `Z`,
    microseconds. The calendar check runs once per second of events; so does the check that
    the time is not after the bridge's clock (+ the verifier's skew, `latest_sealable`): a node
    clock ahead, or a forged year 9999, would otherwise seal into a chunk the verifier refuses
    whole. Such a time is invalid (the event is dropped and counted as for a missing time)."""

    def __init__(self) -> None:
        self._seconds: dict[str, bool] = {}

    @staticmethod
    def _not_future(moment: str) -> bool:
        return moment[:19] < latest_sealable()[:19]

    def __call__(self, value: Any) -> str | None:
        if type(value) is not str:
            return None
        if len(value) == 30 and value[19] == "." and value[29] == "Z":
            # Tetragon's usual form, nanoseconds in UTC: checked without the regex.
            prefix = value[:19]
            known = self._seconds.get(prefix)
            if known and value[20:29].isdigit() and value[20:29].isascii():
                return value[:26] + "Z"
        match = _TIME_RE.fullmatch(value)
        if match is None:
            return None
        prefix, fraction, zone = match.groups()
        if zone != "Z":
            try:
                moment = parse_timestamp(value[: match.start(3)].split(".")[0] + zone)
            except ValueError:
                return None
            micros = int((fraction or "").ljust(6, "0")[:6])
            try:
                normal = format_timestamp(moment + dt.timedelta(microseconds=micros))
            except OverflowError:
                return None
            return normal if self._not_future(normal) else None
        known = self._seconds.get(prefix)
        if known is None:
            known = is_rfc3339_timestamp(prefix + "Z") and self._not_future(prefix)
            if len(self._seconds) >= 65536:
                self._seconds.clear()
            self._seconds[prefix] = known
        if not known:
            return None
        if fraction is None:
            return prefix + ".000000Z"
        if len(fraction) >= 6:
            return f"{prefix}.{fraction[:6]}Z"
        return f"{prefix}.{fraction.ljust(6, '0')}Z"


def container_id_of(value: str) -> str:
    """`containerd://3e7c…` → `3e7c…` (the full id from process.pod.container.id)."""
    for scheme in _RUNTIME_SCHEMES:
        if value.startswith(scheme):
            return value[len(scheme) :]
    return value


# The kinds that become records, numbered: an identity carries its kind in its low 3 bits.
IDENTITY_KINDS: Final = tuple(PROBE_TYPE)
_KIND_NUMBER: Final = {kind: number for number, kind in enumerate(IDENTITY_KINDS)}
# The probe's own fields in an identity, per kind (proto names).
_PROBE_FIELDS: Final = {
    "process_uprobe": ("symbol",),
    "process_usdt": ("provider", "name"),
    "process_kprobe": ("function_name",),
    "process_tracepoint": ("subsys", "event"),
    "process_exec": (),
    "process_exit": (),
}


def _text(value: Any) -> str:
    return value if type(value) is str else ""


def identity_of(kind: str, time: str, exec_id: str, tid: int | None, *probe: str) -> int | None:
    """An event's identity: the same event read twice (an export concatenated, a gRPC stream
    replayed) has the same one, two events have two. Tetragon's exec_id names one process
    across the cluster (its node is in it) and over time; with the thread, the event's time
    (nanoseconds in UTC: `identity_time`) and its kind and probe (symbol, provider and name,
    function, subsystem and event), it names one firing. None without a time or an exec_id (such events
    are never taken for duplicates). A hash (64 bits, this process's; forked workers share it)
    of a flat tuple (the fast path builds the same one inline), cut to 58 bits, the kind in the
    3 bits above them (not the low bits: a set places an int by them)."""
    if not time or not exec_id:
        return None
    instant = identity_time(time)
    return (hash((instant, exec_id, tid, kind, *probe)) & _IDENTITY_HASH) | _KIND_NUMBER[kind] << 58


_IDENTITY_HASH: Final = (1 << 58) - 1


def identity_time(value: str) -> str:
    """A time as Tetragon writes most (UTC, nine fractional digits), whatever form it was
    written in (another offset, 0 to 9 digits: `.5Z` is `.500000000Z`), so that one event
    read in two forms is one; a time that is no RFC 3339 time as it is (its event is refused)."""
    if len(value) == 30 and value[29] == "Z" and value[19] == ".":
        return value
    match = _TIME_RE.fullmatch(value)
    if match is None:
        return value
    prefix, fraction, zone = match.groups()
    digits = (fraction or "").ljust(9, "0")
    if zone != "Z":
        try:
            moment = dt.datetime.fromisoformat(prefix + zone).astimezone(dt.UTC)
        except (ValueError, OverflowError):
            return value
        prefix = f"{moment.year:04d}{moment.strftime('-%m-%dT%H:%M:%S')}"
    return f"{prefix}.{digits}Z"


def identity_kind(identity: int) -> str:
    return IDENTITY_KINDS[identity >> 58]


def event_body(event: dict[str, Any]) -> tuple[str | None, Any]:
    """(kind, body) of an event: the member of GetEventsResponse's `event` oneof it holds, else
    its first key that is none of the fields beside the event (a kind this bridge does not
    know); (None, None) when it holds nothing, ("", None) when it holds two events (protobuf
    refuses a oneof set twice: recording one would drop the other unseen)."""
    kind = body = None
    for key, value in event.items():
        if key in EVENT_KINDS:
            if kind in EVENT_KINDS:
                return "", None
            kind, body = key, value
        elif kind is None and key not in ENVELOPE_FIELDS:
            kind, body = key, value
    return kind, body


def event_identity(event: Any) -> int | None:
    """`identity_of` a parsed event (a dict, as `EventMapper.map` read it: `mapper.event`),
    None if it has no identity."""
    if type(event) is not dict:
        return None
    kind, body = event_body(event)
    if not kind:
        return None
    fields = _PROBE_FIELDS.get(kind)
    if fields is None or type(body) is not dict:
        return None
    process = body.get("process")
    if type(process) is not dict:
        return None
    return identity_of(
        kind,
        _text(event.get("time")),
        _text(process.get("exec_id")),
        proto_int(process.get("tid")),
        *(_text(body.get(name)) for name in fields),
    )


def node_name_of(event: Any) -> str | None:
    """The node an event was observed on (its `node_name`, under either name), if it says."""
    if type(event) is not dict:
        return None
    if not proto_named(event):
        try:
            event = normalize_event(event)
        except RepeatedFieldError:
            return None
    node = event.get("node_name")
    return node if type(node) is str and node else None


class EventMapper:
    """Turns parsed events into records; counts privacy removals in `privacy.counts`."""

    def __init__(self, nodes: NodeIndex, privacy: PrivacyFilter | None = None) -> None:
        self.nodes = nodes
        self.privacy = privacy or PrivacyFilter()
        # Redactions and ignored fields (one counter with the privacy filter's).
        self.counts = self.privacy.counts
        self._time = TimeNormalizer()
        self._containers: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        # map_uprobe_run's shapes: (static fields, redactions, then the line's text around
        # observed_at and pid: head, middle, tail; without pid: head, tail).
        self._shapes: dict[tuple[Any, ...], _Shape] = {}
        self._good_seconds: set[str] = set()  # "YYYY-MM-DDTHH:MM:SS" of valid calendar times
        self._second = _NO_SECOND  # the one of them seen last (the inline check's)
        self.declined: dict[str, Any] | None = None  # see map_uprobe_run
        self.declined_identity: int | None = None  # the declined event's identity
        self.event: Any = None  # the event `map` read last, in Tetragon's own form
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any] | str]] = {
            "process_uprobe": self._uprobe,
            "process_kprobe": self._kprobe,
            "process_tracepoint": self._tracepoint,
            "process_usdt": self._usdt,
            "process_exec": self._exec,
            "process_exit": self._exec,
        }
        # Tetragon's own in-kernel drops (rate_limit_info), for the seal's loss counters.
        self.upstream_dropped = 0

    def kind_of(self, event: dict[str, Any]) -> str | None:
        return event_body(event)[0] or None

    def map(self, event: Any) -> dict[str, Any] | str:
        """The record for one parsed line, or `kind:reason` when it cannot be one."""
        if type(event) is not dict:
            return "line:not_an_object"
        if not proto_named(event):
            try:
                event = normalize_event(event)
            except RepeatedFieldError as exc:
                return f"{self.kind_of(event) or 'line'}:repeated_field:{exc.name}"
        self.event = event
        kind, body = event_body(event)
        if kind is None:
            return "line:no_event"
        if not kind:
            return "line:more_than_one_event"
        handler = self._handlers.get(kind)
        if handler is None:
            if kind == "rate_limit_info" and type(body) is dict:
                dropped = proto_int(body.get("number_of_dropped_process_events"), 0, UINT64_MAX)
                self.upstream_dropped += dropped or 0
            if kind == "process_throttle" and type(body) is dict:
                throttle = body.get("type")  # an enum: by name, or its number
                if throttle == "THROTTLE_START" or proto_int(throttle) == 1:
                    return THROTTLE_START
            if kind in OTHER_KINDS:
                return f"{kind}:unsupported_kind"
            return "unknown:unknown_kind"
        if type(body) is not dict:
            return f"{kind}:wrong_type:{kind}"
        self._kind = kind
        self._event = event
        self._body = body
        return handler(body)

    # --- per kind ----------------------------------------------------------------------------

    def _uprobe(self, body: dict[str, Any]) -> dict[str, Any] | str:
        path = body.get("path")
        symbol = body.get("symbol")
        if type(path) is not str or not path:
            return "process_uprobe:missing_or_wrong_type:path"
        if type(symbol) is not str or not symbol:
            # An uprobe by offset (no symbol) cannot be named as a function.
            return "process_uprobe:missing_or_wrong_type:symbol"
        node = self.nodes.user(path, symbol)
        if node is None:
            return "process_uprobe:unknown_binary_or_symbol"
        return self._record(node, "uprobe", "function", path, self._arguments(body))

    def _usdt(self, body: dict[str, Any]) -> dict[str, Any] | str:
        path = body.get("path")
        provider = body.get("provider")
        name = body.get("name")
        if type(path) is not str or not path:
            return "process_usdt:missing_or_wrong_type:path"
        if type(provider) is not str or type(name) is not str or not name:
            return "process_usdt:missing_or_wrong_type:provider/name"
        # A USDT probe is named provider:name in function maps (as `readelf -n` shows it).
        node = self.nodes.user(path, f"{provider}:{name}" if provider else name)
        if node is None:
            return "process_usdt:unknown_binary_or_probe"
        return self._record(node, "usdt", "function", path, self._arguments(body))

    def _kprobe(self, body: dict[str, Any]) -> dict[str, Any] | str:
        function = body.get("function_name")
        if type(function) is not str or not function:
            return "process_kprobe:missing_or_wrong_type:function_name"
        details = self._arguments(body)
        returned = body.get("return")
        if returned is not None:
            kept = self.privacy.arguments([returned])
            if kept:
                details["return"] = kept[0]
        for field, name in (
            ("kernel_stack_trace", "kernel_stack"),
            ("stack_trace", "kernel_stack"),  # the name before Tetragon 1.0
            ("user_stack_trace", "user_stack"),
        ):
            frames = body.get(field)
            if frames is not None:
                canonical = self.privacy.stack(frames)
                if canonical:
                    details[name] = canonical
        return self._record(self.nodes.kernel(function), "kprobe", "function", None, details)

    def _tracepoint(self, body: dict[str, Any]) -> dict[str, Any] | str:
        subsystem = body.get("subsys")
        event = body.get("event")
        if type(subsystem) is not str or type(event) is not str or not subsystem or not event:
            return "process_tracepoint:missing_or_wrong_type:subsys/event"
        node = self.nodes.kernel("", f"{subsystem}/{event}")
        return self._record(node, "tracepoint", "function", None, self._arguments(body))

    def _exec(self, body: dict[str, Any]) -> dict[str, Any] | str:
        kind = self._kind
        details: dict[str, Any] = {"event": kind}
        process = body.get("process")
        if type(process) is dict:
            binary = process.get("binary")
            if type(binary) is str and binary:  # "" is the field left out (protobuf)
                details["path"] = self.privacy.redact_path(binary)
            arguments = process.get("arguments")
            if type(arguments) is str and arguments:
                details["arguments"] = self.privacy.redact_text(arguments, "argv")
        if kind == "process_exit":
            signal = body.get("signal")
            if type(signal) is str and signal:
                details["signal"] = signal
            # uint32: 0, the default, is the field left out (as Tetragon writes it)
            status = proto_int(body.get("status"))
            if status:
                details["status"] = status
        node = self.nodes.kernel(EXEC_SYMBOL, EXEC_TRACEPOINT)
        return self._record(node, PROBE_TYPE[kind], "exec", None, details)

    # --- shared ------------------------------------------------------------------------------

    def _record(
        self,
        node: ResolvedNode,
        probe_type: str,
        kind: str,
        binary_path: str | None,
        details: dict[str, Any],
    ) -> dict[str, Any] | str:
        """Pull the common fields out of the event dict and assemble the record."""
        event = self._event
        observed = self._time(event.get("time"))
        if observed is None:
            observed = self._fallback_time()
            if observed is None:
                return f"{self._kind}:missing_or_invalid:time"
        host = event.get("node_name")
        count = None
        aggregation = event.get("aggregation_info")
        if type(aggregation) is dict:
            count = proto_int(aggregation.get("count"), 0, UINT64_MAX)
        pid = binary = None
        container: tuple[str, str, str, str] | None = None
        process = self._body.get("process")
        if process is not None and type(process) is not dict:
            self.counts[f"ignored.{self._kind}.process:wrong_type"] += 1
        elif process is not None:
            given_pid = process.get("pid")
            # A UInt32Value: "12" and 12.0 are 12 to a protobuf reader; anything else counted.
            pid = proto_int(given_pid)
            binary = process.get("binary")
            pod = process.get("pod")
            if type(pod) is dict:
                container = _container_key(pod)
            wrong = (
                ("pid", given_pid is not None and pid is None),
                ("binary", binary is not None and type(binary) is not str),
                ("pod", pod is not None and type(pod) is not dict),
            )
            for name, is_wrong in wrong:
                if is_wrong:
                    self.counts[f"ignored.{self._kind}.process.{name}:wrong_type"] += 1
        return self._assemble(
            node,
            probe_type,
            kind,
            observed,
            binary_path,
            host,
            count,
            pid,
            binary,
            container,
            details,
        )

    def _assemble(
        self,
        node: ResolvedNode,
        probe_type: str,
        kind: str,
        observed: str,
        binary_path: str | None,
        host: Any,
        count: int | None,
        pid: Any,
        binary: Any,
        container: tuple[str, str, str, str] | None,
        details: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The one place a record is built (the dict path and the typed fast path share it)."""
        record: dict[str, Any] = {
            "node_hash": node.node_hash,
            "function_name": node.symbol,
            "probe_type": probe_type,
            "observed_at": observed,
            "purl": node.purl,
            "kind": kind,
        }
        if binary_path is not None:
            record["binary_path"] = self.privacy.redact_path(binary_path)
        if node.build_id is not None:
            record["build_id"] = node.build_id
        if type(host) is str and host:
            record["host"] = host
        if count is not None and 1 < count <= MAX_SAFE_INTEGER:
            record["count"] = count
        if type(pid) is int and 0 <= pid <= MAX_SAFE_INTEGER:
            record["pid"] = pid
        if type(binary) is str and binary:
            record["comm"] = self.privacy.redact_path(binary.rpartition("/")[2])[:64]
        if container is not None:
            record.update(self._container(container))
        if details:
            record["details"] = details
        return record

    def _fallback_time(self) -> str | None:
        """Exports filtered by field lack `time`: the exit's own time, else the exec's."""
        body = self._body
        if self._kind == "process_exit":
            observed = self._time(body.get("time"))
            if observed is not None:
                return observed
        if self._kind in ("process_exec", "process_exit"):
            process = body.get("process")
            if type(process) is dict:
                return self._time(process.get("start_time"))
        return None

    def _container(self, key: tuple[str, str, str, str]) -> dict[str, Any]:
        """Record fields of (container id, pod name, namespace, image id), computed once."""
        fields = self._containers.get(key)
        if fields is None:
            fields = {}
            if key[0]:
                fields["container_id"] = container_id_of(key[0])
            if key[1]:
                fields["pod_name"] = key[1]
            if key[2]:
                fields["namespace"] = key[2]
            digest = _DIGEST_RE.search(key[3]) if key[3] else None
            if digest is not None:
                fields["image_digest"] = digest.group(0)
            if len(self._containers) >= 65536:
                self._containers.clear()
            self._containers[key] = fields
        return fields

    def _arguments(self, body: dict[str, Any]) -> dict[str, Any]:
        args = body.get("args")
        if args is None:
            return {}
        kept = self.privacy.arguments(args)
        return {"args": kept} if kept else {}

    # --- the fast path: process_uprobe lines decoded straight into typed structs --------------

    def map_uprobe_run(
        self,
        lines: list[bytes | None],
        start: int,
        run: list[str],
        times: list[str],
        identities: list[int | None] | None = None,
    ) -> int:
        """`lines[start:]` through the fast path while it takes them: each record's canonical
        line (as text) appended to `run`, its observed_at to `times` (for
        `ChunkWriter.append_encoded_run`) and its event's identity to `identities`. Returns the
        index of the first line it did not record (len(lines) when it took all); then
        `declined` holds what it made of that line: the record itself (arguments kept, or a
        record the encoder may refuse: `append` decides; its identity in `declined_identity`),
        or None: the general path (orjson + `map`) names whatever is wrong with it.

        msgspec decodes only the fields a record needs and skips the rest without building
        objects for them (the parent process, credentials, labels); the pod stays raw JSON, a
        part of the shape's key. An event whose shape (probe, node, process binary, pod) was
        seen and whose time is in the second seen last costs a decode, a dict look-up and a
        format; the rest goes through `_uprobe_event`, one event at a time.
        """
        decode = _decode_uprobe
        shapes = self._shapes
        counts = self.counts
        second = self._second
        add, add_time = run.append, times.append
        add_identity = (identities if identities is not None else []).append
        for index in range(start, len(lines)):
            data = lines[index]
            if data is None:
                break
            try:
                event = decode(data)
            except msgspec.MsgspecError:
                break
            body = event.process_uprobe
            time = event.time
            process = body.process if body is not None else None
            shape = None
            if (
                body is not None
                and body.args is None
                and process is not None
                and len(time) == 30
                and time.startswith(second)  # a second whose calendar date was checked
                and time[19] == "."
                and time[29] == "Z"
                and time.isascii()  # O(1) for a str
                and time[20:29].isdigit()
            ):
                shape = shapes.get(
                    (body.path, body.symbol, event.node_name, process.binary, bytes(process.pod))
                )
            # identity_of("process_uprobe", …) inline (kind number 0): a call less per event
            # (a shape is found for a time in Tetragon's usual form only: identity_time's).
            instant = time if shape is not None else identity_time(time)
            identity = (
                hash((instant, process.exec_id, process.tid, "process_uprobe", body.symbol))  # type: ignore[union-attr]
                & _IDENTITY_HASH
                if process is not None and process.exec_id and time
                else None
            )
            if shape is None:
                mapped = self._uprobe_event(event)
                if not isinstance(mapped, tuple):
                    self.declined = mapped
                    self.declined_identity = identity
                    return index
                add(mapped[0])
                add_time(mapped[1])
                add_identity(identity)
                second = self._second
                continue
            if shape[1]:
                counts["redacted.path"] += shape[1]
            observed = time[:26] + "Z"
            pid = process.pid  # type: ignore[union-attr]  # a shape is found with a process
            if pid is None:
                add(f"{shape[5]}{observed}{shape[6]}")
            else:
                add(f"{shape[2]}{observed}{shape[3]}{pid}{shape[4]}")
            add_time(observed)
            add_identity(identity)
        else:
            return len(lines)
        self.declined = None
        self.declined_identity = None
        return index

    def _observed(self, time: str) -> str | None:
        """The event's observed_at, or None when its time is invalid; a valid second of
        Tetragon's usual form (nanoseconds, UTC) is remembered for the inline check."""
        if (
            len(time) == 30
            and time[29] == "Z"
            and time[19] == "."
            and time.isascii()
            and time[20:29].isdigit()
            and time[:19] in self._good_seconds
        ):
            self._second = time[:19]
            return time[:26] + "Z"
        observed = self._time(time)
        if observed is not None and time[:26] + "Z" == observed:
            # A valid second: its 30-character UTC times pass inline from now on.
            if len(self._good_seconds) >= 65536:
                self._good_seconds.clear()
            self._good_seconds.add(time[:19])
            self._second = time[:19]
        return observed

    def _uprobe_event(self, event: _UprobeEvent) -> tuple[str, str] | dict[str, Any] | None:
        """`map_uprobe_run` for one decoded event the inline check did not take: its canonical
        line and observed_at, the record itself, or None (the general path)."""
        body = event.process_uprobe
        if body is None:
            return None
        observed = self._observed(event.time)
        if observed is None:
            return None
        process = body.process
        pid = None
        if process is None:
            key: tuple[Any, ...] = (body.path, body.symbol, event.node_name)
        else:
            pid = process.pid
            key = (body.path, body.symbol, event.node_name, process.binary, bytes(process.pod))
        if body.args is None:
            # Everything but the time and pid repeats across a process's events: assembled
            # once per key (probe, node, process binary, pod), with the redactions it took,
            # which are counted again for every event that reuses it.
            shape = self._shapes.get(key)
            if shape is not None:
                if shape[1]:
                    self.counts["redacted.path"] += shape[1]
                if pid is None:
                    return f"{shape[5]}{observed}{shape[6]}", observed
                return f"{shape[2]}{observed}{shape[3]}{pid}{shape[4]}", observed
        return self._uprobe_slow(body, event.node_name, observed, pid, key)

    def _uprobe_slow(
        self, body: _Uprobe, host: str, observed: str, pid: int | None, key: tuple[Any, ...]
    ) -> tuple[str, str] | dict[str, Any] | None:
        """`_uprobe_event` for an event whose shape is not known yet (or with arguments)."""
        if not body.path or not body.symbol:
            return None
        node = self.nodes.user(body.path, body.symbol)
        if node is None:
            return None
        binary = container = None
        process = body.process
        if process is not None:
            binary = process.binary
            try:
                pod = _decode_pod(process.pod) if process.pod else None
            except msgspec.MsgspecError:
                return None  # a field of the wrong type: the general path counts it
            if pod is not None:
                inner = pod.container
                image = inner.image if inner is not None else None
                container = (
                    inner.id if inner is not None else "",
                    pod.name,
                    pod.namespace,
                    image.id if image is not None else "",
                )
        if body.args is not None:
            kept = self.privacy.arguments(body.args)
            return self._assemble(
                node, "uprobe", "function", observed, body.path, host, None, pid, binary,
                container, {"args": kept} if kept else None,
            )  # fmt: skip
        before = self.counts.get("redacted.path", 0)
        static = self._assemble(
            node, "uprobe", "function", "", body.path, host, None, None, binary, container, None
        )
        del static["observed_at"]
        redactions = self.counts.get("redacted.path", 0) - before
        template = line_template(static)
        if template is None:  # records, built each time
            record = {**static, "observed_at": observed}
            if pid is not None:
                record["pid"] = pid
            return record
        # The record's canonical line from its encoded parts (see line_template): the time
        # and the pid put in their places by an f-string (text: one encode per run).
        head, middle, tail, head_no_pid, tail_no_pid = (part.decode() for part in template)
        shape = (static, redactions, head, middle, tail, head_no_pid, tail_no_pid)
        if len(self._shapes) >= 65536:
            self._shapes.clear()
        self._shapes[key] = shape
        if pid is None:
            return f"{head_no_pid}{observed}{tail_no_pid}", observed
        return f"{head}{observed}{middle}{pid}{tail}", observed


# Stand-ins for the two values that change from event to event of one process and probe. The
# encoder writes a canonical timestamp and an integer as they are (no escapes) and sorts keys,
# so a record's canonical line is its shape's line with its own time and pid in their place.
TIME_STAND_IN: Final = "1970-01-01T00:00:00.000000Z"
PID_STAND_IN: Final = MAX_SAFE_INTEGER

LineTemplate = tuple[bytes, bytes, bytes, bytes, bytes]


def line_template(static: dict[str, Any]) -> LineTemplate | None:
    """(head, middle, tail) around observed_at and pid in the encoder's own line of `static`
    plus both, and (head, tail) around observed_at without pid; None when the encoder refuses
    the record or a stand-in is not found exactly once (the caller then builds records)."""
    time_bytes, pid_bytes = TIME_STAND_IN.encode(), str(PID_STAND_IN).encode()
    try:
        with_pid = encode_record({**static, "observed_at": TIME_STAND_IN, "pid": PID_STAND_IN})
        without_pid = encode_record({**static, "observed_at": TIME_STAND_IN})
    except ObservationError:
        return None
    if (
        with_pid.count(time_bytes) != 1
        or with_pid.count(pid_bytes) != 1
        or without_pid.count(time_bytes) != 1
        or with_pid.index(time_bytes) > with_pid.index(pid_bytes)
    ):
        return None
    head, rest = with_pid.split(time_bytes)
    middle, tail = rest.split(pid_bytes)
    head_no_pid, tail_no_pid = without_pid.split(time_bytes)
    return head, middle, tail, head_no_pid, tail_no_pid


def _container_key(pod: dict[str, Any]) -> tuple[str, str, str, str]:
    container = pod.get("container")
    container = container if type(container) is dict else {}
    image = container.get("image")
    image = image if type(image) is dict else {}
    raw_id, name, namespace, image_id = (
        container.get("id"),
        pod.get("name"),
        pod.get("namespace"),
        image.get("id"),
    )
    return (
        raw_id if type(raw_id) is str else "",
        name if type(name) is str else "",
        namespace if type(namespace) is str else "",
        image_id if type(image_id) is str else "",
    )


# Typed views of the fields the fast path reads (tetragon.proto names). Nested objects accept
# unknown fields; the top level does not, so a line with a second event falls back, and so
# does anything unusual (an aggregation, a pid out of range, a value of another type): the
# general path maps or names it.
class _Image(msgspec.Struct, gc=False):
    id: str = ""


class _Container(msgspec.Struct, gc=False):
    id: str = ""
    image: _Image | None = None


class _Pod(msgspec.Struct, gc=False):
    namespace: str = ""
    name: str = ""
    container: _Container | None = None


_NO_JSON: Final = msgspec.Raw(b"")  # a field left out


class _Process(msgspec.Struct, gc=False):
    pid: Annotated[int, msgspec.Meta(ge=0, le=UINT32_MAX)] | None = None  # a UInt32Value
    binary: str = ""
    exec_id: str = ""  # with tid, part of the event's identity (event_identity)
    tid: Annotated[int, msgspec.Meta(ge=0, le=UINT32_MAX)] | None = None
    # exec_id under its json_name: the general path reads it (protojson.py); only null, the
    # field left out, is taken here.
    exec_id_by_json_name: None = msgspec.field(default=None, name="execId")
    # Its JSON as it stands (a view, no copy): part of the shape's key, decoded on a miss.
    pod: msgspec.Raw = _NO_JSON


class _Uprobe(msgspec.Struct, gc=False):
    process: _Process | None = None
    path: str = ""
    symbol: str = ""
    args: list[Any] | None = None


class _UprobeEvent(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    process_uprobe: _Uprobe | None = None
    node_name: str = ""
    time: str = ""
    aggregation_info: None = None
    cluster_name: msgspec.Raw = _NO_JSON
    node_labels: msgspec.Raw = _NO_JSON


_decode_uprobe = msgspec.json.Decoder(_UprobeEvent).decode
_decode_pod = msgspec.json.Decoder(_Pod | None).decode
# (static fields, redactions, head, middle, tail, head without pid, tail without pid)
_Shape = tuple[dict[str, Any], int, str, str, str, str, str]
# Never a prefix of a time the inline check takes (that one is ASCII).
_NO_SECOND: Final = "\uffff" * 19
