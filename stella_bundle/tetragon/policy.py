"""The `TracingPolicy` (cilium.io/v1alpha1) a function map needs: exactly its nodes' probes.

User-space nodes become `uprobes` (one entry per binary, its symbols listed, its build id as
a `binaryDigests` entry when the map records one), USDT nodes
(`provider:name` with probe type usdt) `usdts`, kernel nodes (pkg:generic/linux-kernel)
`tracepoints` or `kprobes`: the tracepoint or kprobe the toolkit's own collector would use for
that node (collector/plan.py KERNEL_SOURCES), a `subsystem/event` symbol as a tracepoint, any
other kernel function as a kprobe (`syscall: true` for `sys_*`). Field names follow Tetragon's
CRD (`pkg/k8s/apis/cilium.io/client/crds/v1alpha1/cilium.io_tracingpolicies.yaml`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..collector.plan import KERNEL_SOURCES
from ..formats.flat import read_flat, read_list
from ..formats.function_map import ExpectedNode, FunctionMap
from ..formats.node_hash import KERNEL_PURL, canonical_purl, normalize_symbol

API_VERSION: Final = "cilium.io/v1alpha1"
KIND: Final = "TracingPolicy"
_NAME_INVALID_RE: Final = re.compile(r"[^a-z0-9.-]+")


@dataclass(frozen=True)
class NotProbed:
    node_hash: str
    purl: str
    symbol: str
    reason: str


@dataclass(frozen=True)
class _PolicyFields:
    output: str
    name: str
    probes: int
    not_probed: object


@dataclass(frozen=True)
class PolicyWritten:
    """What `tetragon policy` prints: the TracingPolicy written, its probes, the nodes it
    cannot name (with why)."""

    output: str
    name: str
    probes: int
    not_probed: tuple[NotProbed, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "name": self.name,
            "probes": self.probes,
            "not_probed": [dataclasses.asdict(item) for item in self.not_probed],
        }

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> PolicyWritten:
        values = read_flat(_PolicyFields, data, source, "policy")
        items = read_list(values["not_probed"], source, "not_probed")
        return cls(
            values["output"],
            values["name"],
            values["probes"],
            tuple(
                NotProbed(**read_flat(NotProbed, item, source, f"not_probed[{index}]"))
                for index, item in enumerate(items)
            ),
        )


@dataclass
class PolicyResult:
    document: dict[str, Any]
    # Nodes the policy cannot name, with why (a user-space node without binary_path).
    not_probed: list[dict[str, str]] = field(default_factory=list)

    def written(self, output: Path) -> PolicyWritten:
        """The result printed once the policy is written at `output`."""
        return PolicyWritten(
            str(output),
            self.document["metadata"]["name"],
            self.probe_count,
            tuple(NotProbed(**item) for item in self.not_probed),
        )

    @property
    def probe_count(self) -> int:
        spec = self.document["spec"]
        return (
            sum(len(entry["symbols"]) for entry in spec.get("uprobes", []))
            + len(spec.get("usdts", []))
            + len(spec.get("kprobes", []))
            + len(spec.get("tracepoints", []))
        )


def policy_name(service: str) -> str:
    """A DNS-1123 subdomain name: lowercase, digits, '-' and '.', at most 253 characters."""
    name = _NAME_INVALID_RE.sub("-", f"stella-{service}".lower()).strip("-.")
    return name[:253].rstrip("-.") or "stella"


def _kernel_probe(node: ExpectedNode) -> tuple[str, dict[str, Any]]:
    symbol = normalize_symbol(node.symbol)
    preferred = node.probe_types or ("tracepoint", "kprobe")
    source = KERNEL_SOURCES.get(symbol)
    if source is not None:
        for probe_type in (*preferred, "tracepoint", "kprobe"):
            if probe_type in source.variants:
                target = source.variants[probe_type][2]
                return _kernel_entry(probe_type, target)
    if "/" in symbol or ":" in symbol:
        return _kernel_entry("tracepoint", symbol.replace(":", "/", 1))
    return _kernel_entry("kprobe", symbol)


def _kernel_entry(probe_type: str, target: str) -> tuple[str, dict[str, Any]]:
    if probe_type == "tracepoint":
        subsystem, _, event = target.partition("/")
        return "tracepoints", {"subsystem": subsystem, "event": event}
    entry: dict[str, Any] = {"call": target}
    if target.startswith("sys_"):
        entry["syscall"] = True  # Tetragon adds the architecture prefix (__x64_sys_…)
    else:
        entry["syscall"] = False
    return "kprobes", entry


def _uprobe_entry(path: str, symbols: list[str], build_ids: set[str | None]) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": path, "symbols": symbols}
    (build_id,) = build_ids if len(build_ids) == 1 else (None,)
    if build_id:
        # Probe only the build the map was made from: Tetragon skips (does not reject the
        # policy for) a binary whose ELF build id differs.
        entry["binaryDigests"] = [f"build-id:{build_id.lower()}"]
        entry["ignore"] = {"digestVerificationFailure": True}
    return entry


def build_policy(function_map: FunctionMap, name: str | None = None) -> PolicyResult:
    uprobes: dict[str, list[str]] = {}
    build_ids: dict[str, set[str | None]] = {}
    usdts: list[dict[str, Any]] = []
    kernel: dict[str, list[dict[str, Any]]] = {"kprobes": [], "tracepoints": []}
    not_probed: list[dict[str, str]] = []
    for node in function_map.nodes():
        if canonical_purl(node.purl) == KERNEL_PURL:
            section, entry = _kernel_probe(node)
            if entry not in kernel[section]:
                kernel[section].append(entry)
            continue
        if not node.binary_path:
            not_probed.append(
                {
                    "node_hash": node.node_hash,
                    "purl": node.purl,
                    "symbol": node.symbol,
                    "reason": "no binary_path in the function map: a uprobe needs the binary",
                }
            )
            continue
        if node.probe_types and "usdt" in node.probe_types and ":" in node.symbol:
            provider, _, probe = node.symbol.partition(":")
            usdts.append({"path": node.binary_path, "provider": provider, "name": probe})
            continue
        symbols = uprobes.setdefault(node.binary_path, [])
        if node.symbol not in symbols:
            symbols.append(node.symbol)
        build_ids.setdefault(node.binary_path, set()).add(node.build_id)
    spec: dict[str, Any] = {}
    if uprobes:
        spec["uprobes"] = [
            _uprobe_entry(path, symbols, build_ids[path]) for path, symbols in uprobes.items()
        ]
    if usdts:
        spec["usdts"] = usdts
    if kernel["kprobes"]:
        spec["kprobes"] = kernel["kprobes"]
    if kernel["tracepoints"]:
        spec["tracepoints"] = kernel["tracepoints"]
    document = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name or policy_name(function_map.service),
            "labels": {"app.kubernetes.io/managed-by": "stella"},
            "annotations": {
                "stella.ops/service": function_map.service,
                "stella.ops/build-id": function_map.build_id,
            },
        },
        "spec": spec,
    }
    return PolicyResult(document, not_probed)
