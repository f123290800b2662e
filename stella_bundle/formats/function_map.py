"""The function-map predicate (schemas/function-map.schema.json).

Defined in `functionmap/model.py` next to its generation (the node hash and the scope rules it
checks live in `functionmap/`); loading and signature checking stay there too.
"""

from __future__ import annotations

from ..functionmap.model import Coverage, ExpectedNode, ExpectedPath, FunctionMap, SbomRef
from ..functionmap.scope import Scope

__all__ = ["Coverage", "ExpectedNode", "ExpectedPath", "FunctionMap", "SbomRef", "Scope"]
