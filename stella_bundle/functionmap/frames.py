"""The symbol of one CycloneDX call-stack frame (`evidence.callstack.frames[]`).

CycloneDX splits a frame into `package`, `module` and `function` but does not say how a
language fills them, and producers differ: dep-scan writes a Java class fully qualified in
`module` (`com.example.WebController`), others write the bare class file (`Logger.class`)
beside its `package`. A Java frame is named here by its fully qualified `package.Class.method`
whatever the split, so two classes of one name in different packages never share a node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from packageurl import PackageURL

__all__ = ["frame_symbol", "is_java_frame", "java_symbol"]

# File suffixes of Java source and class files, as producers leave them on `module`.
_JAVA_SUFFIXES = (".java", ".class")
# A JVM method descriptor or a parameter list after the method name: `m(Ljava/lang/String;)V`.
_PARAMETERS_RE = re.compile(r"\s*\(.*$", re.DOTALL)


def frame_symbol(frame: Mapping[str, Any], purls: tuple[str, ...] = ()) -> str | None:
    """The node symbol of a frame; None when it names no function.

    `purls`: the components the frame belongs to (its owner, the stack's component): a maven
    purl makes it a Java frame even when no file suffix says so.
    """
    function = frame.get("function")
    if not isinstance(function, str) or not function.strip():
        return None
    package = _text(frame.get("package"))
    module = _text(frame.get("module"))
    if is_java_frame(frame, purls):
        return java_symbol(package, module, function)
    if module and not function.startswith(module + "."):
        return f"{module}.{function}"
    return function


def is_java_frame(frame: Mapping[str, Any], purls: tuple[str, ...] = ()) -> bool:
    files = (_text(frame.get("module")), _text(frame.get("fullFilename")))
    if any(name.endswith(_JAVA_SUFFIXES) for name in files):
        return True
    return any(_purl_type(purl) == "maven" for purl in purls)


def java_symbol(package: str, module: str, function: str) -> str:
    """`package.Class.method`, from any split of the three (suffixes, slashes and signature off).

    Inner classes keep the JVM's `$` (`Outer$Inner`): a dot would read as one more package.
    """
    package = _dotted(package)
    class_name = _strip_java_suffix(_dotted(module))
    method = _PARAMETERS_RE.sub("", function.strip())
    owner, _, method = method.rpartition(".")
    owner = _strip_java_suffix(owner)
    if owner and not _same_class(owner, class_name):
        # The function names its class: qualified, it is the whole answer; bare, the
        # module disagrees with it and the function's own word wins.
        class_name = owner
    elif len(owner) > len(class_name):
        class_name = owner  # the same class, written more fully in `function`
    qualified = _qualify(package, class_name)
    return f"{qualified}.{method}" if qualified else method


def _qualify(package: str, class_name: str) -> str:
    if not class_name:
        return package
    if not package or class_name == package or class_name.startswith(package + "."):
        return class_name  # already qualified: never `pkg.pkg.Class`
    first = class_name.split(".", 1)[0]
    if "." in class_name and first[:1].islower():
        return class_name  # qualified in another package (package names are lower case)
    return f"{package}.{class_name}"


def _same_class(a: str, b: str) -> bool:
    return not b or a == b or a.endswith("." + b) or b.endswith("." + a)


def _dotted(name: str) -> str:
    """`com/example/Logger.class` → `com.example.Logger.class`; stray dots trimmed."""
    return name.strip().replace("/", ".").replace("\\", ".").strip(".")


def _strip_java_suffix(name: str) -> str:
    for suffix in _JAVA_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _purl_type(purl: str) -> str:
    try:
        return str(PackageURL.from_string(purl).type)
    except ValueError:
        return ""
