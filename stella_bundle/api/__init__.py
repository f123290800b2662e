"""The REST API and the coverage dashboard (DESIGN.md §8), served by `stella serve`.

`create_app(ApiSettings(...))` builds the ASGI application; see docs/api.md.
"""

from __future__ import annotations

from .app import create_app
from .settings import ApiSettings
from .tokens import TokenFile

__all__ = ["ApiSettings", "TokenFile", "create_app"]
