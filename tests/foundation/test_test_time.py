"""The rules that keep the suite short without proving less in CI (issue 10, test time).

Property tests take their example count from the hypothesis profile (tests/conftest.py: "ci"
under CI=true, "dev" otherwise), so a count written as a bare number would run the same in both;
tests marked `slow` are left out by `just test-quick` only: `just test`, which CI runs, has no
marker filter.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from hypothesis import settings

from tests.conftest import IN_CI, pytest_collection_modifyitems, scaled_examples

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS = REPO_ROOT / "tests"


def _bare_counts(path: Path) -> list[str]:
    """`max_examples=<literal>` keywords in one test file, as "file:line"."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        literal = isinstance(node, ast.keyword) and isinstance(node.value, ast.Constant)
        if literal and node.arg == "max_examples":
            found.append(f"{path.relative_to(REPO_ROOT)}:{node.value.lineno}")
    return found


def test_property_tests_take_their_count_from_the_profile() -> None:
    # The fuzz targets scale their own profiles (tests/fuzz/fuzz_support.fuzz_settings).
    files = [p for p in TESTS.rglob("*.py") if "fuzz" not in p.parts and p.name != "conftest.py"]
    bare = [hit for path in files for hit in _bare_counts(path)]
    assert not bare, f"max_examples written as a number (use scaled_examples(n)): {bare}"


def test_ci_runs_the_counts_written_and_a_local_run_a_fifth() -> None:
    profile = settings().max_examples
    if IN_CI:
        assert profile == 100 and scaled_examples(1500) == 1500
    else:
        assert scaled_examples(1500) == 1500 * profile // 100
    assert scaled_examples(1) == 10  # never fewer than 10


def _recipe(name: str) -> str:
    text = (REPO_ROOT / "Justfile").read_text()
    match = re.search(rf"^{name} \*ARGS:.*\n((?:    .*\n)+)", text, re.MULTILINE)
    assert match, f"Justfile has no recipe {name!r}"
    return match.group(1)


def test_ci_runs_the_slow_tests_and_the_quick_command_leaves_them_out() -> None:
    assert '"$JUST" test' in (REPO_ROOT / ".ci" / "run").read_text()
    assert not re.search(r"pytest.* -m ", _recipe("test")) and "slow" not in _recipe("test")
    assert '-m "not slow"' in _recipe("test-quick")


def test_the_longest_files_go_first_and_xdist_keeps_that_order() -> None:
    """`just test` gives each worker whole files in collection order (--no-loadscope-reorder:
    xdist's own order, most tests first, left the long files of few tests to the end), and
    tests/conftest.py sorts the files by tests/file_seconds.json, longest first."""
    for name in ("test", "test-quick"):
        assert "--dist loadfile --no-loadscope-reorder" in _recipe(name)
    seconds = json.loads((TESTS / "file_seconds.json").read_text())
    missing = [path for path in seconds if not (REPO_ROOT / path).is_file()]
    assert not missing, f"tests/file_seconds.json names files that are gone: {missing}"
    assert list(seconds.values()) == sorted(seconds.values(), reverse=True)
    items = [_Item(f"{path}::test_{n}") for n, path in enumerate(["tests/b.py", *seconds][:4])]
    items.append(_Item("tests/b.py::test_late"))  # a file's tests stay together, in order
    pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    order = [item.nodeid for item in items]
    assert order[:3] == [f"{path}::test_{n + 1}" for n, path in enumerate([*seconds][:3])]
    assert order[3:] == ["tests/b.py::test_0", "tests/b.py::test_late"]


class _Item:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
