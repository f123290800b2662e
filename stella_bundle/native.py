"""Loading an optional C extension built by hatch_build.py, with its fallback named.

`load_compiled` gives the module, or None when the Python code must be used instead: not built
(no compiler at install), built from another version of its source than the one beside it (a
stale build: `pip install -e .` or `python3 hatch_build.py` builds it again), or switched off by
an environment variable (the reference code, for comparisons). The status says which, in one line.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from types import ModuleType


def load_compiled(
    module: str, source: Path, switch: str, what: str
) -> tuple[ModuleType | None, str]:
    """(module or None, status): `module` (dotted) built from `source`; `switch=python` in the
    environment refuses it; `what` names it in the status ("the C record encoder")."""
    try:
        loaded = importlib.import_module(module)
    except ImportError:
        return None, f"python ({what} is not built)"
    if os.environ.get(switch) == "python":
        return None, f"python ({switch}=python)"
    try:
        text = source.read_bytes()
    except OSError:
        return loaded, "compiled"  # an installed wheel without the source: the module it shipped
    if hashlib.sha256(text).hexdigest() != loaded.SOURCE_SHA256:
        return None, f"python ({what} was built from another {source.name}: build it again)"
    return loaded, "compiled"
