"""Hatch build hook: compiles the optional C extensions: the fold (stella_bundle/coverage/_fold.c,
issue 15) and the record encoder (stella_bundle/evidence/_record.c, issue 4).

`pip install -e .` builds them into the source tree beside their sources (gitignored); a wheel
gets them as platform-specific files. Without a working C compiler (or Python headers) the
install still succeeds with a one-line warning, and the pure-Python code is used
(`stella_bundle.coverage.compiled`, `stella_bundle.evidence.encoding`). Each module records the
SHA-256 of the source it was built from: a stale build (the source changed since) is not loaded.

In a work tree that is not the installed one, `python3 hatch_build.py` builds them in place.
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
# (module, its source, the macro that receives the source's SHA-256), the fold first.
EXTENSIONS = (
    (MODULE, SOURCE, "STELLA_FOLD_SOURCE_SHA256"),
    ("stella_bundle/evidence/_record", Path("stella_bundle/evidence/_record.c"),
     "STELLA_RECORD_SOURCE_SHA256"),
)  # fmt: skip


def compile_extension(root: Path, relative: Path, macro: str, target: Path) -> str | None:
    """Compile the C source `relative` into `target`; None when done, else why not (one line)."""
    ldshared = sysconfig.get_config_var("LDSHARED")
    include = sysconfig.get_paths().get("include")
    if not ldshared or not include or not (Path(include) / "Python.h").is_file():
        return "no Python headers or shared-library linker for this Python"
    source = root / relative
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
             f'-D{macro}="{digest}"', str(source), "-o", partial],
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
        for module, source, macro in EXTENSIONS:
            name = module + suffix()
            if version == "editable":
                target = root / name
            else:
                target = Path(self.directory) / "_fold_build" / Path(name).name
            problem = compile_extension(root, source, macro, target)
            if problem is not None:
                self.app.display_warning(
                    f"stella-bundle: {source} not built ({problem}); its Python code is used"
                )
                continue
            if version != "editable":
                build_data["force_include"][str(target)] = name
            build_data["pure_python"] = False
            build_data["infer_tag"] = True


if __name__ == "__main__":
    failed = False
    for module, source, macro in EXTENSIONS:
        problem = compile_extension(ROOT, source, macro, ROOT / (module + suffix()))
        if problem is not None:
            print(
                f"stella-bundle: {source} not built ({problem}); its Python code is used",
                file=sys.stderr,
            )
            failed = True
        else:
            print(f"built {module + suffix()}")
    sys.exit(1 if failed else 0)
