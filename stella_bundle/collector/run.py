"""`signals start` as a library call: function map → plan → loaded probes → evidence writer.

The CLI only parses options and shows status; everything else (config file merge, chain id,
probe set, kernel features) is decided here so tests and other tools can drive it.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..attest.keys import load_signer
from ..errors import CollectorEnvironmentError, ConfigError
from ..formats.scope import NO_SCOPE_WARNING
from .containers import CgroupResolver, MetadataMap
from .features import DEFAULT_TRACEFS, KernelFeatures, detect
from .loader import DEFAULT_RING_SIZE, ProbeRuntime, ProbeSet
from .plan import AttachPlan, build_plan
from .runtime_containerd import ContainerdMetadata
from .runtime_crio import CrioMetadata
from .runtimes import RuntimeMetadata
from .session import Collector, CollectorConfig

if TYPE_CHECKING:
    from ..functionmap.load import LoadedFunctionMap

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SCALE_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_duration_ms(text: str | int | float, field_name: str) -> int:
    """`1000ms`, `1s`, `2.5s`, `5m`, or a bare number of milliseconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return int(text)
    match = _DURATION_RE.match(str(text))
    if not match:
        raise ConfigError(
            f"expected a duration such as 1000ms, 1s or 5m, got {text!r}", field=field_name
        )
    return int(float(match.group(1)) * _SCALE_MS[match.group(2) or "ms"])


def collector_settings(other: dict[str, Any], source: str | Path | None) -> dict[str, Any]:
    """The collector's keys of the `signals:` section, checked; `filters:` flattened."""
    from ..evidence.config import collector_keys

    settings = collector_keys(other, source)
    if settings.get("enabled") is False:
        raise ConfigError(
            "collection is disabled in this file (enabled: false)",
            path=source,
            field="signals.enabled",
        )
    return settings


@dataclass
class StartOptions:
    function_map: Path
    target: Path | None = None
    key: Path | None = None
    mode: str | None = None
    window_seconds: float | None = None
    aggregation_window: str | None = None
    sampling_rate: float | None = None
    pids: tuple[int, ...] = ()
    containers: tuple[str, ...] = ()
    path_allow: tuple[str, ...] = ()
    path_deny: tuple[str, ...] = ()
    config: Path | None = None
    probes_dir: Path | None = None
    chain_id: str | None = None
    trust_root: Path | None = None
    container_metadata: Path | None = None
    ring_size: int = DEFAULT_RING_SIZE
    tracefs_path: Path = DEFAULT_TRACEFS
    # The agent's runtime_agent settings (None: not set, the defaults above apply).
    disabled_attach_types: frozenset[str] | None = None  # None: STELLA_PROBES_DISABLE
    flush_interval_seconds: float | None = None
    max_probes: int | None = None
    attach_timeout_ms: int | None = None
    # Probes other maps of the same agent already hold (max_probes is the agent's total).
    probes_in_use: int = 0
    health_check_seconds: float | None = None  # None: the collector's default


@dataclass
class PreparedSession:
    collector: Collector
    plan: AttachPlan
    writer: Any
    features: KernelFeatures
    chain_dir: Path
    function_map: LoadedFunctionMap
    chain_id: str
    notes: list[str] = field(default_factory=list)
    # Said after the collection started (a map without a scope: collected host-wide).
    warnings: list[str] = field(default_factory=list)

    @property
    def scope_summary(self) -> str:
        scope = self.collector.config.scope
        return f"scope {scope.describe()}" if scope is not None else "HOST-WIDE (no scope)"


def chain_id_for(service: str, digest: str | None = None) -> str:
    """SERVICE-HOST, the default chain of a map on this host; with the map file's sha256
    (the agent's map directory), SERVICE-HOST-<first 12 hex digits>: another version of a map
    starts its own chain."""
    raw = f"{service}-{socket.gethostname()}"
    if digest is None:
        return re.sub(r"[^A-Za-z0-9._-]", "-", raw)[:128]
    return re.sub(r"[^A-Za-z0-9._-]", "-", raw)[:115] + "-" + digest[:12]


def prepare(
    options: StartOptions,
    *,
    loaded_map: LoadedFunctionMap | None = None,
    features: KernelFeatures | None = None,
) -> PreparedSession:
    """Everything up to (not including) attaching: errors here leave nothing half-written.

    `loaded_map`: the map already read and checked (the agent hashes the bytes it verified);
    `features`: already detected (once per agent, not once per map)."""
    from ..evidence.config import (
        UNCLEAN_RESTART_REASON,
        WriterConfig,
        load_signals_config,
        read_boot_id,
    )
    from ..evidence.writer import ChunkWriter
    from ..formats.seal import CollectorInfo
    from ..functionmap.load import load_function_map

    settings: dict[str, Any] = {}
    writer_config = WriterConfig()
    target, key, chain_id = options.target, options.key, options.chain_id
    if options.config is not None:
        loaded = load_signals_config(options.config)
        settings = collector_settings(dict(loaded.other), options.config)
        writer_config = loaded.writer
        target = target or loaded.output_directory
        key = key or loaded.key_file
        chain_id = chain_id or loaded.chain_id
    if target is None:
        raise ConfigError(
            "no evidence directory: pass --target or set signals.output_directory", field="target"
        )
    if key is None:
        raise ConfigError("no signing key: pass --key or set signals.signing.key_file", field="key")

    def pick(value: Any, name: str, default: Any) -> Any:
        return value if value not in (None, ()) else settings.get(name, default)

    aggregation = pick(options.aggregation_window, "aggregation_window", "1000ms")
    config = CollectorConfig(
        mode=str(pick(options.mode, "mode", "coverage")),
        window_seconds=float(pick(options.window_seconds, "window_seconds", 1800)),
        aggregation_ms=parse_duration_ms(aggregation, "aggregation_window"),
        sampling_rate=float(pick(options.sampling_rate, "sampling_rate", 1.0)),
        pids=tuple(int(p) for p in pick(options.pids, "pids", ())),
        containers=tuple(str(c) for c in pick(options.containers, "containers", ())),
        path_allow=tuple(str(g) for g in pick(options.path_allow, "path_allow", ())),
        path_deny=tuple(str(g) for g in pick(options.path_deny, "path_deny", ())),
        attach_timeout_ms=options.attach_timeout_ms,
    )
    if options.health_check_seconds is not None:
        config.health_check_seconds = options.health_check_seconds
    if options.flush_interval_seconds is not None:
        writer_config = dataclasses.replace(
            writer_config, flush_interval_seconds=options.flush_interval_seconds
        )
    if loaded_map is None:
        loaded_map = load_function_map(options.function_map, options.trust_root)
    config.scope = loaded_map.function_map.scope
    service = str(getattr(loaded_map.function_map, "service", "service"))
    chain_id = chain_id or chain_id_for(service)
    signer = load_signer(key)

    if features is None:
        features = detect(options.tracefs_path, disable=options.disabled_attach_types)
    if not features.has("capabilities") and not features.has("bpf_syscall"):
        raise CollectorEnvironmentError(features.features["capabilities"].detail)
    plan = build_plan(list(loaded_map.nodes()), features)
    if not plan.specs:
        reasons = "; ".join(u.reason for u in plan.unobservable[:3])
        raise CollectorEnvironmentError(
            f"no node of the function map can be observed here: {reasons}"
        )
    in_use = options.probes_in_use
    if options.max_probes is not None and len(plan.specs) + in_use > options.max_probes:
        others = f" ({in_use} held by the agent's other maps)" if in_use else ""
        raise ConfigError(
            f"the function map needs {len(plan.specs)} probes on this host, more than the "
            f"limit of {options.max_probes}{others}: raise the limit or narrow the map "
            "(function-map generate --hot-functions)",
            field="probes.max_concurrent",
        )
    probes_dir = options.probes_dir or pick(None, "probes_dir", None)
    probe_set = ProbeSet.open(probes_dir)
    for object_name in plan.programs_by_object():
        probe_set.verified(object_name)  # refuse a tampered set before any evidence is written
    runtime = ProbeRuntime(probe_set, features, ring_size=options.ring_size)
    metadata_path = options.container_metadata or settings.get("container_metadata")
    resolver = CgroupResolver(
        metadata=MetadataMap.load(metadata_path), runtime=_runtime_metadata(settings, options)
    )
    info = CollectorInfo(
        id=f"stella-collector/{socket.gethostname()}",
        host=config.host,
        boot_id=read_boot_id(),
        version=__version__,
        probe_set_sha256=probe_set.lock.probe_set_sha256,
    )
    writer = ChunkWriter.open(target, chain_id, signer, writer_config, info)
    if writer.head.final is False:
        # The previous collector of this chain did not stop cleanly (killed, crashed, power
        # lost): what it had read but not yet written, and everything while no collector ran,
        # is unknown. Its interrupted chunk was recovered and sealed just now; the gap is
        # declared in the first seal of this run, never left for the reader to guess.
        writer.add_loss(by_reason={UNCLEAN_RESTART_REASON: 1})
        writer.flush()  # durable at once: killed again before a flush, the gap stays declared
    collector = Collector(plan, runtime, writer, config, resolver)
    notes = [f"not observable: {u.purl}#{u.symbol} ({u.reason})" for u in plan.unobservable]
    warnings = [f"HOST-WIDE COLLECTION: {NO_SCOPE_WARNING}"] if config.scope is None else []
    return PreparedSession(
        collector,
        plan,
        writer,
        features,
        Path(target) / chain_id,
        loaded_map,
        chain_id,
        notes,
        warnings,
    )


def _runtime_metadata(settings: dict[str, Any], options: StartOptions) -> RuntimeMetadata:
    """The runtimes' state where `signals:` says it is (containerd_root, crio_storage_roots)."""
    source = options.config
    root = settings.get("containerd_root")
    containerd = ContainerdMetadata(Path(root)) if root else None
    roots = settings.get("crio_storage_roots")
    crio = None
    if roots is not None:
        if not roots or not all(isinstance(item, str) and item for item in roots):
            raise ConfigError(
                "expected a list of directories (CRI-O's run and graph roots)",
                path=source,
                field="signals.crio_storage_roots",
            )
        crio = CrioMetadata(tuple(Path(item) for item in roots))
    return RuntimeMetadata(containerd=containerd, crio=crio)
