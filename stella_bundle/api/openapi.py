"""The API's OpenAPI document as committed in `schemas/openapi.json`.

Regenerate with `just openapi` (`python3 -m stella_bundle.api.openapi schemas/openapi.json`);
a test keeps the file equal to what the server publishes at `/openapi.json`.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

from ..formats.trust_root import TrustRoot
from ..fsutil import write_bytes_atomic
from .app import create_app
from .settings import ApiSettings


def openapi_document() -> dict[str, Any]:
    """The document of an app over placeholder settings (the document depends on none)."""
    settings = ApiSettings(
        "sqlite:///openapi-placeholder.sqlite",
        TrustRoot(expires=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)),
    )
    document: dict[str, Any] = create_app(settings).openapi()
    return document


def openapi_bytes() -> bytes:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 -m stella_bundle.api.openapi OUTPUT.json", file=sys.stderr)
        return 2
    write_bytes_atomic(argv[0], openapi_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
