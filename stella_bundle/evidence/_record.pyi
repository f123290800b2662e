"""Types of the compiled record encoder (_record.c); see evidence/encoding.py."""

from typing import Any, Final

SOURCE_SHA256: Final[str]

class Encoder:
    """Checks and writes plain observation records."""

    def __init__(
        self,
        fields: tuple[tuple[str, int, bool, int], ...],
        probe_types: frozenset[str],
        kinds: frozenset[str],
        max_int: int,
        /,
    ) -> None: ...
    def encode(self, record: Any, /) -> bytes | None: ...
