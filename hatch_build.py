"""Hatch build hook: compiles the optional C fold (stella_bundle/coverage/_fold.c, issue 15).

`pip install -e .` builds it into the source tree beside its source (gitignored); a wheel gets
it as a platform-specific file. Without a working C compiler (or Python headers) the install
still succeeds with a one-line warning, and the pure-Python fold is used
(`stella_bundle.coverage.compiled`). The module records the SHA-256 of the source it was built
from: a stale build (the source changed since) is not loaded.

In a work tree that is not the installed one, `python3 hatch_build.py` builds it in place.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script, outside a build
    BuildHookInterface = object  # type: ignore[assignment,misc]

ROOT = Path(__file__).resolve().parent
SOURCE = Path("stella_bundle") / "coverage" / "_fold.c"
MODULE = "stella_bundle/coverage/_fold"


def compile_fold(root: Path, target: Path) -> str | None:
    """Compile the fold into `target`; None when done, else why not (one line)."""
    ldshared = sysconfig.get_config_var("LDSHARED")
    include = sysconfig.get_paths().get("include")
    if not ldshared or not include or not (Path(include) / "Python.h").is_file():
        return "no Python headers or shared-library linker for this Python"
    source = root / SOURCE
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    command = shlex.split(ldshared)
    if os.environ.get("CC"):  # the compiler asked for, with the linker's own options
        command[0:1] = shlex.split(os.environ["CC"])
    flags = shlex.split(sysconfig.get_config_var("CCSHARED") or "")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        result = subprocess.run(
            [*command, *flags, "-O2", "-DNDEBUG", "-Wall", f"-I{include}",
             f'-DSTELLA_FOLD_SOURCE_SHA256="{digest}"', str(source), "-o", partial],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    except OSError as exc:
        os.unlink(partial)
        return f"no C compiler ({exc.strerror}: {command[0]})"
    if result.returncode != 0:
        os.unlink(partial)
        first = (result.stderr.strip().splitlines() or ["?"])[0]
        return f"the compiler failed: {first}"
    os.chmod(partial, 0o755)
    os.replace(partial, target)  # a running process keeps the file it mapped
    return None


def suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


class FoldBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        name = MODULE + suffix()
        if version == "editable":
            target = root / name
        else:
            target = Path(self.directory) / "_fold_build" / Path(name).name
        problem = compile_fold(root, target)
        if problem is not None:
            self.app.display_warning(
                f"stella-bundle: C fold not built ({problem}); the Python fold is used"
            )
            return
        if version != "editable":
            build_data["force_include"][str(target)] = name
        build_data["pure_python"] = False
        build_data["infer_tag"] = True


if __name__ == "__main__":
    problem = compile_fold(ROOT, ROOT / (MODULE + suffix()))
    if problem is not None:
        print(
            f"stella-bundle: C fold not built ({problem}); the Python fold is used", file=sys.stderr
        )
        sys.exit(1)
    print(f"built {MODULE + suffix()}")
