"""Types of the compiled fold (_fold.c); see coverage/compiled.py."""

from collections.abc import Callable
from typing import Any, Final

SOURCE_SHA256: Final[str]

class NodeState:
    """What was seen of one node_hash (coverage.scan.NodeAggregate's fields)."""

    count: int
    first: str
    last: str
    probe_mask: int
    function_name: str | None
    purl: str | None
    def __init__(self) -> None: ...

class Index:
    """Node hash bytes -> NodeState, a cache of an aggregator's dicts."""

    def __init__(self, bits: dict[str, int], seed: int, kinds: tuple[str, ...] = ()) -> None: ...
    def fold(self, records: list[Any], resolve: Callable[[Any], object], /) -> None: ...
    def scan(
        self,
        block: bytes,
        resolve: Callable[[str, str, str | None], object],
        window_from: str | None,
        window_to: str | None,
        /,
    ) -> tuple[int, int] | None: ...
    def fold_records(
        self,
        records: Records,
        resolve: Callable[[str, str, str | None], object],
        window_from: str | None,
        window_to: str | None,
        /,
    ) -> tuple[int, int] | None: ...
    def clear(self) -> None: ...
    def __len__(self) -> int: ...

class Records:
    """An array of plain records checked by parse_records, for Index.fold_records."""

    def __len__(self) -> int: ...

def parse_records(
    array: bytes | memoryview, bits: dict[str, int], kinds: tuple[str, ...], /
) -> Records | None: ...
