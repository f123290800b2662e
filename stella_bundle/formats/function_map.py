"""The function-map predicate (DESIGN.md §4, schemas/function-map.schema.json) as typed classes.

Reading one from disk (a Statement or its DSSE envelope, with or without a trust root) is
`functionmap/load.py`; generating one is `functionmap/generate.py`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..canonical import MAX_SAFE_INTEGER
from ..digests import PREFIXED_SHA256_RE
from ..errors import SchemaValidationError
from ..timeutil import is_rfc3339_timestamp
from .node_hash import canonical_purl, normalize_symbol
from .node_hash import node_hash as compute_node_hash
from .record import PROBE_TYPES
from .scope import Scope, scope_from_predicate

# Higher is more important (DESIGN: crypto > auth > net > file > general).
TAG_PRIORITY: Mapping[str, int] = {
    "crypto": 50,
    "auth": 40,
    "exec": 35,
    "net": 30,
    "file": 20,
    "general": 10,
}
DEFAULT_PRIORITY = TAG_PRIORITY["general"]

_TAG_RE = re.compile(r"^[a-z][a-z0-9_-]*\Z")
_PURL_RE = re.compile(r"^pkg:[A-Za-z][A-Za-z0-9.+-]*/")

DEFAULT_MIN_RATE = 0.95
DEFAULT_WINDOW_SECONDS = 1800

_PREDICATE_FIELDS = (
    "service",
    "build_id",
    "generated_at",
    "sbom",
    "coverage",
    "hot_functions",
    "expected_paths",
    "scope",
)
_COVERAGE_FIELDS = ("min_observation_rate", "window_seconds", "fail_on_unexpected", "tag_min_rates")


def _known(data: Mapping[str, Any], known: tuple[str, ...], where: str, source: Any) -> None:
    """Unknown fields are refused, as by every format model (see stella_bundle/formats)."""
    extra = sorted(data.keys() - set(known))
    if extra:
        raise _fail("unknown field", source, where + extra[0])


def priority_of(tag: str) -> int:
    return TAG_PRIORITY.get(tag, DEFAULT_PRIORITY)


def _fail(message: str, source: str | Path | None, field_name: str) -> SchemaValidationError:
    return SchemaValidationError(message, path=source, field=field_name)


def _req(data: Mapping[str, Any], key: str, kind: type, where: str, source: Any) -> Any:
    if key not in data:
        raise _fail("required field is missing", source, f"{where}{key}")
    value = data[key]
    if kind is int and isinstance(value, bool):
        raise _fail("expected an integer", source, f"{where}{key}")
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind):
        raise _fail(f"expected {kind.__name__}", source, f"{where}{key}")
    return value


# The fields of a node as `generate` writes most of them (no binary, build id or probe types).
_PLAIN_NODE_FIELDS: Final = frozenset(("purl", "symbol", "node_hash"))
_PATH_FIELDS: Final = frozenset(("path_id", "tag", "priority", "optional", "nodes"))


@dataclass(frozen=True)
class ExpectedNode:
    """One function of one component that the service is expected to run."""

    purl: str
    symbol: str
    node_hash: str
    binary_path: str | None = None
    build_id: str | None = None
    probe_types: tuple[str, ...] | None = None

    @classmethod
    def create(
        cls,
        purl: str,
        symbol: str,
        *,
        binary_path: str | None = None,
        build_id: str | None = None,
        probe_types: tuple[str, ...] | None = None,
    ) -> ExpectedNode:
        return cls(
            canonical_purl(purl),
            normalize_symbol(symbol),
            compute_node_hash(purl, symbol),
            binary_path,
            build_id,
            probe_types,
        )

    @classmethod
    def quick(cls, data: Any) -> ExpectedNode | None:
        """The node of a plain `{purl, symbol, node_hash}` object that passes every check of
        `from_dict`, else None (`from_dict` then names what is wrong). A 20,000-node map is
        read four times faster this way."""
        if type(data) is not dict or data.keys() != _PLAIN_NODE_FIELDS:
            return None
        purl, symbol, node_hash = data["purl"], data["symbol"], data["node_hash"]
        if (
            type(purl) is str
            and type(symbol) is str
            and symbol
            and _PURL_RE.match(purl)
            and compute_node_hash(purl, symbol) == node_hash
        ):
            return cls(purl, symbol, node_hash)
        return None

    @classmethod
    def from_dict(
        cls, data: Any, source: str | Path | None = None, where: str = "node."
    ) -> ExpectedNode:
        if not isinstance(data, dict):
            raise _fail("expected an object", source, where.rstrip("."))
        known = {"purl", "symbol", "node_hash", "binary_path", "build_id", "probe_types"}
        extra = sorted(data.keys() - known)
        if extra:
            raise _fail("unknown field", source, where + extra[0])
        probe_types = data.get("probe_types")
        if "probe_types" in data:
            if not isinstance(probe_types, list) or not all(p in PROBE_TYPES for p in probe_types):
                raise _fail(
                    f"expected a list of probe types ({', '.join(PROBE_TYPES)})",
                    source,
                    where + "probe_types",
                )
            probe_types = tuple(probe_types)
        for optional in ("binary_path", "build_id"):
            if optional in data and not isinstance(data[optional], str):
                raise _fail("expected a string", source, where + optional)
        if probe_types is not None and len(set(probe_types)) != len(probe_types):
            raise _fail("probe types must be unique", source, where + "probe_types")
        for optional in ("binary_path", "build_id"):
            if optional in data and not data[optional]:
                raise _fail("must not be empty", source, where + optional)
        node = cls(
            purl=_req(data, "purl", str, where, source),
            symbol=_req(data, "symbol", str, where, source),
            node_hash=_req(data, "node_hash", str, where, source),
            binary_path=data.get("binary_path"),
            build_id=data.get("build_id"),
            probe_types=probe_types,
        )
        if not _PURL_RE.match(node.purl):
            raise _fail("expected a package URL (pkg:TYPE/...)", source, where + "purl")
        if not node.symbol:
            raise _fail("must not be empty", source, where + "symbol")
        expected = compute_node_hash(node.purl, node.symbol)
        if expected != node.node_hash:
            raise _fail(
                f"node_hash {node.node_hash} does not match purl and symbol (expected {expected})",
                source,
                where + "node_hash",
            )
        return node

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "purl": self.purl,
            "symbol": self.symbol,
            "node_hash": self.node_hash,
        }
        if self.binary_path is not None:
            out["binary_path"] = self.binary_path
        if self.build_id is not None:
            out["build_id"] = self.build_id
        if self.probe_types is not None:
            out["probe_types"] = list(self.probe_types)
        return out


@dataclass(frozen=True)
class ExpectedPath:
    """An ordered chain of nodes, entrypoint to sink."""

    path_id: str
    tag: str
    priority: int
    optional: bool
    nodes: tuple[ExpectedNode, ...]

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None, index: int = 0) -> ExpectedPath:
        plain = cls._plain(data, source, index)
        if plain is not None:
            return plain
        where = f"expected_paths[{index}]."
        if not isinstance(data, dict):
            raise _fail("expected an object", source, where.rstrip("."))
        extra = sorted(data.keys() - {"path_id", "tag", "priority", "optional", "nodes"})
        if extra:
            raise _fail("unknown field", source, where + extra[0])
        nodes = _req(data, "nodes", list, where, source)
        if not nodes:
            raise _fail("a path needs at least one node", source, where + "nodes")
        path_id = _req(data, "path_id", str, where, source)
        if not path_id:
            raise _fail("must not be empty", source, where + "path_id")
        tag = _req(data, "tag", str, where, source)
        if not _TAG_RE.match(tag):
            raise _fail("expected a lowercase tag such as crypto", source, where + "tag")
        priority = _req(data, "priority", int, where, source)
        if not 0 <= priority <= MAX_SAFE_INTEGER:
            raise _fail("expected 0 to 2**53 - 1", source, where + "priority")
        quick = ExpectedNode.quick
        return cls(
            path_id=path_id,
            tag=tag,
            priority=priority,
            optional=_req(data, "optional", bool, where, source),
            nodes=tuple(
                quick(n) or ExpectedNode.from_dict(n, source, f"{where}nodes[{i}].")
                for i, n in enumerate(nodes)
            ),
        )

    @classmethod
    def _plain(cls, data: Any, source: str | Path | None, index: int) -> ExpectedPath | None:
        """The path of an object as `generate` writes it (exact JSON types, each value as
        `from_dict` checks it), without building the field names of messages (10,000 paths
        read 0.03 s faster); None for any other, which `from_dict` reads and names."""
        if type(data) is not dict or data.keys() != _PATH_FIELDS:
            return None
        path_id, tag, priority = data["path_id"], data["tag"], data["priority"]
        optional, nodes = data["optional"], data["nodes"]
        if not (
            type(path_id) is str
            and path_id
            and type(tag) is str
            and _TAG_RE.match(tag)
            and type(priority) is int
            and 0 <= priority <= MAX_SAFE_INTEGER
            and type(optional) is bool
            and type(nodes) is list
            and nodes
        ):
            return None
        quick = ExpectedNode.quick
        return cls(
            path_id=path_id,
            tag=tag,
            priority=priority,
            optional=optional,
            nodes=tuple(
                quick(n)
                or ExpectedNode.from_dict(n, source, f"expected_paths[{index}].nodes[{i}].")
                for i, n in enumerate(nodes)
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "path_id": self.path_id,
            "tag": self.tag,
            "priority": self.priority,
            "optional": self.optional,
            "nodes": [n.to_dict() for n in self.nodes],
        }

    @property
    def sink(self) -> ExpectedNode:
        return self.nodes[-1]


@dataclass(frozen=True)
class Coverage:
    min_observation_rate: float = DEFAULT_MIN_RATE
    window_seconds: int = DEFAULT_WINDOW_SECONDS
    fail_on_unexpected: bool = True
    tag_min_rates: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> Coverage:
        if not isinstance(data, dict):
            raise _fail("expected an object", source, "coverage")
        where = "coverage."
        _known(data, _COVERAGE_FIELDS, where, source)
        rates = data.get("tag_min_rates", {})
        if not isinstance(rates, dict) or not all(
            _TAG_RE.match(k)
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            and 0 <= v <= 1
            for k, v in rates.items()
        ):
            raise _fail("expected tag → rate between 0 and 1", source, where + "tag_min_rates")
        rate = _req(data, "min_observation_rate", float, where, source)
        if not 0 <= rate <= 1:
            raise _fail("expected a rate between 0 and 1", source, where + "min_observation_rate")
        window = _req(data, "window_seconds", int, where, source)
        if not 1 <= window <= MAX_SAFE_INTEGER:
            raise _fail("expected 1 to 2**53 - 1 seconds", source, where + "window_seconds")
        return cls(
            min_observation_rate=rate,
            window_seconds=window,
            fail_on_unexpected=_req(data, "fail_on_unexpected", bool, where, source),
            tag_min_rates={str(k): float(v) for k, v in rates.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_observation_rate": self.min_observation_rate,
            "window_seconds": self.window_seconds,
            "fail_on_unexpected": self.fail_on_unexpected,
            "tag_min_rates": dict(sorted(self.tag_min_rates.items())),
        }


@dataclass(frozen=True)
class SbomRef:
    digest: str
    format: str
    spec_version: str
    # What generate passed over in the SBOM, by reason (frames without a function, …): nothing
    # is dropped without a count in the signed map. Written only when something was.
    skipped: Mapping[str, int] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "digest": self.digest,
            "format": self.format,
            "spec_version": self.spec_version,
        }
        if self.skipped:
            out["skipped"] = dict(sorted(self.skipped.items()))
        return out


@dataclass(frozen=True)
class FunctionMap:
    """The predicate of a function-map Statement."""

    service: str
    build_id: str
    generated_at: str
    sbom: SbomRef
    coverage: Coverage
    hot_functions: tuple[str, ...]
    expected_paths: tuple[ExpectedPath, ...]
    # The workload whose records count (None: every process on the host, warned about).
    scope: Scope | None = None

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> FunctionMap:
        if not isinstance(data, dict):
            raise _fail("the function-map predicate must be an object", source, "predicate")
        _known(data, _PREDICATE_FIELDS, "", source)
        sbom = _req(data, "sbom", dict, "", source)
        _known(sbom, ("digest", "format", "spec_version", "skipped"), "sbom.", source)
        hot = data.get("hot_functions", [])
        if not isinstance(hot, list) or not all(isinstance(h, str) and h for h in hot):
            raise _fail("expected a list of glob strings", source, "hot_functions")
        paths = _req(data, "expected_paths", list, "", source)
        parsed = tuple(ExpectedPath.from_dict(p, source, i) for i, p in enumerate(paths))
        seen: set[str] = set()
        for index, path in enumerate(parsed):
            if path.path_id in seen:
                raise _fail(
                    f"duplicate path_id {path.path_id!r}",
                    source,
                    f"expected_paths[{index}].path_id",
                )
            seen.add(path.path_id)
        service = _req(data, "service", str, "", source)
        if not service:
            raise _fail("must not be empty", source, "service")
        generated_at = _req(data, "generated_at", str, "", source)
        if not is_rfc3339_timestamp(generated_at):
            raise _fail("expected an RFC 3339 timestamp", source, "generated_at")
        digest = _req(sbom, "digest", str, "sbom.", source)
        if not PREFIXED_SHA256_RE.match(digest):
            raise _fail("expected 'sha256:' and 64 lowercase hex digits", source, "sbom.digest")
        for name in ("format", "spec_version"):
            if not _req(sbom, name, str, "sbom.", source):
                raise _fail("must not be empty", source, f"sbom.{name}")
        return cls(
            service=service,
            build_id=_req(data, "build_id", str, "", source),
            generated_at=generated_at,
            sbom=SbomRef(
                digest=digest,
                format=sbom["format"],
                spec_version=sbom["spec_version"],
                skipped=_skipped(sbom.get("skipped"), source),
            ),
            coverage=Coverage.from_dict(_req(data, "coverage", dict, "", source), source),
            hot_functions=tuple(hot),
            expected_paths=parsed,
            scope=scope_from_predicate(data, source),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "service": self.service,
            "build_id": self.build_id,
            "generated_at": self.generated_at,
            "sbom": self.sbom.to_dict(),
            "coverage": self.coverage.to_dict(),
            "hot_functions": list(self.hot_functions),
            "expected_paths": [p.to_dict() for p in self.expected_paths],
        }
        if self.scope is not None:
            out["scope"] = self.scope.to_dict()
        return out

    def nodes(self) -> list[ExpectedNode]:
        """Every distinct node (by node_hash), in first-seen order; what the collector probes."""
        seen: dict[str, ExpectedNode] = {}
        for path in self.expected_paths:
            for node in path.nodes:
                seen.setdefault(node.node_hash, node)
        return list(seen.values())

    @functools.cached_property
    def node_hashes(self) -> tuple[str, ...]:
        """The hashes of `nodes()`, in that order; worked out once per map (the API verifies
        against the map it keeps on every request: 20 us of 100 paths each time)."""
        return tuple(node.node_hash for node in self.nodes())


def _skipped(value: Any, source: str | Path | None) -> dict[str, int]:
    """`sbom.skipped`: counts (integers >= 1) by a non-empty reason; absent: nothing skipped."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise _fail("expected a non-empty object of counts by reason", source, "sbom.skipped")
    for reason, count in value.items():
        if (
            not reason
            or isinstance(count, bool)
            or not isinstance(count, int)
            or not 1 <= count <= MAX_SAFE_INTEGER
        ):
            raise _fail(
                f"expected an integer from 1 to 2**53 - 1, found {count!r}",
                source,
                f"sbom.skipped.{reason}",
            )
    return dict(value)
