"""The `stella` command leaves the interpreter's last garbage collection nothing to walk."""

from __future__ import annotations

import subprocess
import sys


def test_entrypoint_freezes_the_heap_before_exit() -> None:
    """At exit every object is still referenced by its module, and the final collection would
    walk them all to free nothing (~0.05 s of CPU after `bundle verify`): the entry point
    freezes the heap first, so that collection skips it (`gc.get_freeze_count()` at exit)."""
    script = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: sys.stderr.write(f'frozen={gc.get_freeze_count()}\\n'))\n"
        "sys.argv = ['stella', '--version']\n"
        "from stella_bundle.cli import entrypoint\n"
        "entrypoint()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    frozen = int(result.stderr.rsplit("frozen=", 1)[1].split()[0])
    assert frozen > 10_000, result.stderr
