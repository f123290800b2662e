"""Path enumeration over static call graphs against a recursive reference, on generated graphs:
the same paths in the same order, the same truncation (depth and count bounds)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stella_bundle.functionmap.callgraph import CallGraph, GraphNode, enumerate_paths
from tests.conftest import scaled_examples

NAMES = [f"n{i}" for i in range(6)]


def reference(graph: CallGraph, sinks: set[str], max_depth: int) -> tuple[list[list[str]], bool]:
    """Every simple path entrypoint → sink in depth-first pre-order, the plain recursive way."""
    useful = set(sinks)
    changed = True
    while changed:
        changed = False
        for caller, callees in graph.edges.items():
            if caller not in useful and useful.intersection(callees):
                useful.add(caller)
                changed = True
    paths: list[list[str]] = []
    truncated = False

    def visit(current: str, trail: list[str]) -> None:
        nonlocal truncated
        if current in sinks:
            paths.append(trail)
        callees = graph.edges.get(current, [])
        if len(trail) >= max_depth:
            truncated |= any(c in useful and c not in trail for c in callees)
            return
        for callee in callees:
            if callee in useful and callee not in trail:
                visit(callee, [*trail, callee])

    for entry in sorted(set(graph.entrypoints)):
        if entry in useful:
            visit(entry, [entry])
    return paths, truncated


graphs = st.builds(
    lambda edges, entries, sinks: CallGraph(
        nodes={name: GraphNode(name, "pkg:generic/x", name, None) for name in NAMES},
        edges={caller: callees for caller, callees in edges.items() if callees},
        entrypoints=entries,
        sinks=set(sinks),
        source="generated",
    ),
    st.dictionaries(st.sampled_from(NAMES), st.lists(st.sampled_from(NAMES), max_size=4)),
    st.lists(st.sampled_from(NAMES), max_size=3),
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=2),
)


@settings(max_examples=scaled_examples(300), deadline=None)
@given(graphs, st.integers(1, 7), st.integers(1, 30))
def test_paths_match_the_recursive_reference(graph: CallGraph, depth: int, limit: int) -> None:
    expected, deep = reference(graph, graph.sinks, depth)
    found = enumerate_paths(graph, lambda node: False, max_depth=depth, max_paths=limit)
    assert [[node.id for node in path] for path in found.paths] == expected[:limit]
    if len(expected) >= limit:
        assert found.truncated
    else:
        assert found.truncated == deep
