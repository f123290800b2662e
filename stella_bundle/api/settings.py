"""What the API server is built from: the store, the trust root, the tokens, its limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ..formats.trust_root import TrustRoot
from ..tetragon.service import NullRuntimeTraceService, RuntimeTraceService
from .tokens import TokenFile

if TYPE_CHECKING:
    from pathlib import Path

    from securesystemslib.signer import Signer

# Large enough for a sealed chunk of the default size (10,000 records, zstd) several times
# over, small enough that one request cannot fill the server's memory.
DEFAULT_MAX_BODY_BYTES: Final = 32 << 20
# At most this many windows in a coverage trend (each is one aggregation query).
MAX_TREND_WINDOWS: Final = 200
DEFAULT_TREND_WINDOWS: Final = 24
# At most this many records in one observations answer (a bound on a response's size).
MAX_QUERY_LIMIT: Final = 100_000
DEFAULT_QUERY_LIMIT: Final = 1000


def _null_service() -> RuntimeTraceService:
    from pathlib import Path

    return NullRuntimeTraceService(Path("/nonexistent"))


@dataclass
class ApiSettings:
    """`tokens=None` accepts every request as admin: `stella serve` allows that on loopback
    only. The trust root is required: evidence and signed maps are verified before storing."""

    store_url: str
    trust_root: TrustRoot
    tokens: TokenFile | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    runtime: RuntimeTraceService = field(default_factory=_null_service)
    runtime_signer: Signer | None = None  # the bridge's collector key, for POST runtime-traces
    work_dir: Path | None = None  # temporary files of uploads (default: the system's)
