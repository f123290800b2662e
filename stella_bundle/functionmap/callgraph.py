"""Static-analysis call graphs (schemas/static-callgraph.schema.json): bounded path enumeration.

Paths are simple (no node twice), start at an entrypoint and end at a sink; enumeration stops at
`max_depth` nodes per path and `max_paths` in total, and says when it was cut short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MalformedDocumentError
from ..jsonio import load_json
from ..schema import validate_document

DEFAULT_MAX_DEPTH = 16
DEFAULT_MAX_PATHS = 5000


@dataclass(frozen=True)
class GraphNode:
    id: str
    purl: str
    symbol: str
    tag: str | None


@dataclass
class CallGraph:
    nodes: dict[str, GraphNode]
    edges: dict[str, list[str]]
    entrypoints: list[str]
    sinks: set[str]
    source: str


@dataclass
class Enumeration:
    paths: list[list[GraphNode]] = field(default_factory=list)
    truncated: bool = False


def load_callgraph(path: str | Path) -> CallGraph:
    source = str(path)
    document = load_json(path)
    # The toolkit's one schema check: its message says what was expected and shows the value
    # clipped (jsonschema's own echoed the whole value: a 100 kB error line).
    validate_document("static-callgraph", document, source)
    nodes: dict[str, GraphNode] = {}
    for index, raw in enumerate(document["nodes"]):
        if raw["id"] in nodes:
            raise MalformedDocumentError(
                f"duplicate node id {raw['id']!r}", path=source, field=f"nodes[{index}].id"
            )
        nodes[raw["id"]] = GraphNode(raw["id"], raw["purl"], raw["symbol"], raw.get("tag"))
    edges: dict[str, list[str]] = {}
    for index, edge in enumerate(document["edges"]):
        for end in ("from", "to"):
            if edge[end] not in nodes:
                raise MalformedDocumentError(
                    f"edge refers to unknown node {edge[end]!r}",
                    path=source,
                    field=f"edges[{index}].{end}",
                )
        edges.setdefault(edge["from"], []).append(edge["to"])
    for name in ("entrypoints", "sinks"):
        for index, node_id in enumerate(document.get(name, [])):
            if node_id not in nodes:
                raise MalformedDocumentError(
                    f"unknown node {node_id!r}", path=source, field=f"{name}[{index}]"
                )
    # Sorted adjacency makes enumeration order, and so truncation, deterministic.
    for callees in edges.values():
        callees.sort()
    return CallGraph(
        nodes, edges, list(document["entrypoints"]), set(document.get("sinks", [])), source
    )


def enumerate_paths(
    graph: CallGraph,
    is_sink: Callable[[GraphNode], bool],
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_paths: int = DEFAULT_MAX_PATHS,
) -> Enumeration:
    """Every simple path entrypoint → sink of at most `max_depth` nodes (at most `max_paths`)."""
    result = Enumeration()
    sinks = {node_id for node_id, node in graph.nodes.items() if is_sink(node)} | graph.sinks
    if not sinks:
        return result
    useful = _reaching(graph, sinks)
    for entry in sorted(set(graph.entrypoints)):
        if entry in useful and not _walk(graph, entry, sinks, useful, max_depth, max_paths, result):
            break
    return result


def _reaching(graph: CallGraph, sinks: set[str]) -> set[str]:
    """The nodes from which some sink is reachable: the only ones worth walking."""
    reverse: dict[str, list[str]] = {}
    for caller, callees in graph.edges.items():
        for callee in callees:
            reverse.setdefault(callee, []).append(caller)
    useful = set(sinks)
    frontier = list(sinks)
    while frontier:
        current = frontier.pop()
        for caller in reverse.get(current, []):
            if caller not in useful:
                useful.add(caller)
                frontier.append(caller)
    return useful


def _walk(
    graph: CallGraph,
    entry: str,
    sinks: set[str],
    useful: set[str],
    max_depth: int,
    max_paths: int,
    result: Enumeration,
) -> bool:
    """Add the paths from one entrypoint (depth first); False once `max_paths` is reached."""
    stack: list[tuple[str, list[str]]] = [(entry, [entry])]
    while stack:
        current, trail = stack.pop()
        if current in sinks:
            result.paths.append([graph.nodes[n] for n in trail])
            if len(result.paths) >= max_paths:
                result.truncated = True
                return False
        callees = graph.edges.get(current, [])
        if len(trail) >= max_depth:
            if any(c in useful and c not in trail for c in callees):
                result.truncated = True
            continue
        for callee in reversed(callees):
            if callee in useful and callee not in trail:
                stack.append((callee, [*trail, callee]))
    return True
