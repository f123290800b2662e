"""The compiled per-record fold (`_fold.c`, built by hatch_build.py at install), when present.

`FOLD` is the extension module (types in `_fold.pyi`), or None when the pure-Python fold is
used: not built (no compiler at install), built from another version of `_fold.c` than the one
beside it (a stale build: `pip install -e .` or `python3 hatch_build.py` builds it again), or
`STELLA_FOLD=python` in the environment (the reference fold, for comparisons). `STATUS` says
which, in one line. Under CI=true a test fails unless `STATUS` is "compiled", so CI never
measures the fallback without saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..native import load_compiled

__all__ = ["FOLD", "STATUS"]

STATUS: str
if TYPE_CHECKING:  # typed by _fold.pyi; None at run time when the Python fold is used
    from . import _fold as FOLD
else:
    FOLD, STATUS = load_compiled(
        "stella_bundle.coverage._fold",
        Path(__file__).with_name("_fold.c"),
        "STELLA_FOLD",
        "the C fold",
    )
