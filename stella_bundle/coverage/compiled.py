"""The compiled per-record fold (`_fold.c`, built by hatch_build.py at install), when present.

`FOLD` is the extension module (types in `_fold.pyi`), or None when the pure-Python fold is
used: not built (no compiler at install), built from another version of `_fold.c` than the one
beside it (a stale build: `pip install -e .` or `python3 hatch_build.py` builds it again), or
`STELLA_FOLD=python` in the environment (the reference fold, for comparisons). `STATUS` says
which, in one line. Under CI=true a test fails unless `STATUS` is "compiled", so CI never
measures the fallback without saying so.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final

__all__ = ["FOLD", "STATUS"]

STATUS: str
try:
    from . import _fold as FOLD
except ImportError:
    FOLD = None  # type: ignore[assignment]
    STATUS = "python (the C fold is not built)"
else:
    STATUS = "compiled"
    if os.environ.get("STELLA_FOLD") == "python":
        FOLD = None  # type: ignore[assignment]
        STATUS = "python (STELLA_FOLD=python)"
    else:
        try:
            _SOURCE: Final = Path(__file__).with_name("_fold.c").read_bytes()
        except OSError:
            pass  # an installed wheel without the source: the module is the one it shipped
        else:
            if hashlib.sha256(_SOURCE).hexdigest() != FOLD.SOURCE_SHA256:
                FOLD = None  # type: ignore[assignment]
                STATUS = "python (the C fold was built from another _fold.c: build it again)"
