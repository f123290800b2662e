"""Java call-stack frames become fully qualified `package.Class.method`, however split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stella_bundle.functionmap.frames import frame_symbol
from tests.functionmap.functionmap_helpers import JAVA_SBOM, make_map

LOG4J = "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1?type=jar"
QUALIFIED = "com.apache.logging.log4j.core.Logger.logMessage"


PACKAGE = "com.apache.logging.log4j.core"

# (package, module, function) as producers split a Java frame, and the one symbol expected.
SHAPES = [
    # The shape: the package beside a bare class file.
    (PACKAGE, "Logger.class", "logMessage", QUALIFIED),
    # dep-scan's shape: the class already qualified in `module` (no duplication).
    (PACKAGE, PACKAGE + ".Logger", "logMessage", QUALIFIED),
    (PACKAGE, "Logger.java", "logMessage", QUALIFIED),
    (PACKAGE, "Logger", "logMessage", QUALIFIED),
    # Class file paths, with or without the package beside them.
    (None, "com/apache/logging/log4j/core/Logger.class", "logMessage", QUALIFIED),
    (PACKAGE, "com/apache/logging/log4j/core/Logger.class", "logMessage", QUALIFIED),
    # The class in `function`, bare or qualified; a JVM descriptor after the method name.
    (PACKAGE, None, "Logger.logMessage", QUALIFIED),
    (PACKAGE, "Logger.class", "Logger.logMessage", QUALIFIED),
    (PACKAGE, "Logger.class", QUALIFIED, QUALIFIED),
    (PACKAGE, "Logger.class", "logMessage(Ljava/lang/String;)V", QUALIFIED),
    # Inner classes keep the JVM's `$`.
    ("org.example", "Outer$Inner.class", "run", "org.example.Outer$Inner.run"),
    ("org.example", "org.example.Outer$Inner", "run", "org.example.Outer$Inner.run"),
    ("org.example", "Outer$1.class", "lambda$run$0", "org.example.Outer$1.lambda$run$0"),
    # A class qualified in another package than the frame's `package` is left alone.
    ("com.example.app", "org.other.Helper", "go", "org.other.Helper.go"),
]


@pytest.mark.parametrize(("package", "module", "function", "expected"), SHAPES)
def test_java_frame_shapes_give_one_qualified_symbol(
    package: str | None, module: str | None, function: str, expected: str
) -> None:
    frame = {"package": package, "module": module, "function": function}
    frame = {key: value for key, value in frame.items() if value is not None}
    assert frame_symbol(frame, (LOG4J,)) == expected


def test_a_class_file_suffix_marks_a_java_frame_without_a_maven_purl() -> None:
    frame = {"package": "org.example", "module": "Outer$Inner.class", "function": "run"}
    assert frame_symbol(frame, ("pkg:generic/app@1",)) == "org.example.Outer$Inner.run"
    source = {"package": "org.example", "module": "Main", "function": "main",
              "fullFilename": "src/main/java/org/example/Main.java"}  # fmt: skip
    assert frame_symbol(source) == "org.example.Main.main"


def test_other_languages_keep_module_dot_function() -> None:
    python = {"package": "requests", "module": "requests.sessions", "function": "Session.send"}
    assert frame_symbol(python, ("pkg:pypi/requests@2.31.0",)) == "requests.sessions.Session.send"
    assert frame_symbol({"function": "SSL_write"}, ("pkg:deb/debian/libssl3@3",)) == "SSL_write"
    assert frame_symbol({"module": "x", "function": ""}) is None


def _sbom_with_stacks(path: Path, stacks: dict[str, list[dict[str, Any]]]) -> Path:
    components = [
        {
            "type": "library",
            "group": "org.apache.logging.log4j",
            "name": name,
            "version": "2.14.1",
            "purl": f"pkg:maven/org.apache.logging.log4j/{name}@2.14.1?type=jar",
            "bom-ref": name,
            "evidence": {"callstack": {"frames": frames}},
        }
        for name, frames in stacks.items()
    ]
    document = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {"component": {"type": "application", "name": "app", "bom-ref": "app"}},
        "components": components,
    }
    path.write_text(json.dumps(document))
    return path


def test_generate_names_both_shapes_alike_and_keeps_same_named_classes_apart(
    tmp_path: Path,
) -> None:
    sbom = _sbom_with_stacks(
        tmp_path / "stacks.cdx.json",
        {
            # the frame, then dep-scan's split of the same function
            "log4j-core": [
                {"package": "com.apache.logging.log4j.core", "module": "Logger.class",
                 "function": "logMessage", "line": 10},
                {"package": "org.other", "module": "Logger.class", "function": "logMessage"},
            ],
            "log4j-api": [
                {"package": "com.apache.logging.log4j.core",
                 "module": "com.apache.logging.log4j.core.Logger", "function": "logMessage"},
            ],
        },
    )  # fmt: skip
    fmap = make_map(sbom)
    paths = {p.path_id.split("/")[1]: p for p in fmap.expected_paths}
    core = [n.symbol for n in paths["log4j-core"].nodes]
    assert core == [QUALIFIED, "org.other.Logger.logMessage"]
    assert [n.symbol for n in paths["log4j-api"].nodes] == [QUALIFIED]
    first, second = paths["log4j-core"].nodes
    assert first.node_hash != second.node_hash  # two Loggers, two functions


def test_dep_scan_frames_are_already_qualified_and_unchanged() -> None:
    document = json.loads(JAVA_SBOM.read_text())
    frames = [
        frame
        for component in document["components"]
        for frame in component.get("evidence", {}).get("callstack", {}).get("frames", [])
    ]
    assert frames
    for frame in frames:
        assert frame["module"].startswith(frame["package"] + ".")
        expected = f"{frame['module']}.{frame['function']}"
        assert frame_symbol(frame, ("pkg:maven/com.example/vuln-spring@0.0.1",)) == expected
