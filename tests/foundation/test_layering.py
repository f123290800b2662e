"""The layers of the library hold, and each shared rule is defined once (issue 10).

- `formats/` (one typed model per format) imports no stage: only the shared low-level modules
  below. A stage importing formats is the direction the library is built in; formats importing
  a stage would make a model depend on what produces or checks it.
- The shared helpers (canonical, errors, timeutil, jsonio, fsutil, compression, digests, sizes) import
  only each other; only the CLI imports the CLI; `bundle/` never imports `verify/`.
- The models are defined in `formats/` only; no stage defines a class of the same name.
- One definition each of: the integer bound (`MAX_SAFE_INTEGER`), a file's sha256
  (`digests.file_sha256`), a stream hashed as it is read or written (`digests.HashingReader`,
  `digests.HashingWriter`), the
  sha256 patterns (`digests`), bounded decompression
  (`compression.BoundedInflater`); roles are named through `formats.roles.RoleName`; canonical
  JSON (`canonical.canonical_bytes`: only canonical.py serialises with sorted keys); a
  timestamp's canonical form (`timeutil.canonical_timestamp`); YAML read
  (`configfile.read_yaml_config`: duplicate keys, alias bombs, places for errors).

Each check reads the source (AST), so it sees lazy imports inside functions too; each has a
test showing it catches what it is there to catch.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from stella_bundle.formats.roles import ROLES

PACKAGE = Path(__file__).resolve().parents[2] / "stella_bundle"

# What formats/ may import from the package: itself and the shared low-level modules.
FORMATS_MAY_IMPORT = frozenset({"formats", "canonical", "errors", "timeutil", "jsonio", "digests"})
# The stages (named in the message when one is imported).
STAGES = frozenset(
    {
        "functionmap",
        "evidence",
        "bundle",
        "attest",
        "observations",
        "coverage",
        "verify",
        "collector",
        "agent",
        "store",
        "api",
        "tetragon",
        "cli",
        "report",
        "demo",
        "schema",
    }
)
MODELS = frozenset(
    {
        "ObservationRecord",
        "FunctionMap",
        "ExpectedNode",
        "ExpectedPath",
        "Coverage",
        "SbomRef",
        "Scope",
        "SealPredicate",
        "ChunkContent",
        "PreviousLink",
        "CollectorInfo",
        "LossCounters",
        "ProbeFailure",
        "ProbeReattachment",
        "PruneRecord",
        "ManifestPredicate",
        "ManifestFile",
        "TrustRoot",
        "Role",
        "RoleName",
        "VerificationReport",
    }
)
SHA256_PATTERN = "[0-9a-f]{64}"
# String constants holding a sha256 pattern outside digests.py, each for a reason.
SHA256_PATTERN_ALLOWED = {
    "schema.py": "messages keyed by the published schemas' own patterns",
    "api/models.py": "pydantic's pattern, published in the OpenAPI document (sha256: optional)",
    "coverage/patterns.py": "the record-line decoders: one regex per line shape, digest inside",
    "collector/containers.py": "a container id (64 hex) inside a cgroup path",
    "collector/runtime_crio.py": "a container id; a digest found inside an image reference",
    "tetragon/events.py": "a digest found inside an image reference (search, not match)",
}
# Sorted-key JSON outside canonical.py, each for a reason (none claims to be canonical).
SORTED_JSON_ALLOWED = {
    "report/registry.py": "the indented JSON a command prints for people and scripts",
    "schema.py": "a value quoted in an error message",
    "collector/lockfile.py": "the indented lock file a person reads",
    "api/tokens.py": "the indented token file a person reads",
    "bundle/media.py": "the media cache's index of known files, private to this machine",
}
DECOMPRESSORS = frozenset({"ZstdDecompressor", "decompressobj", "GzipFile", "IGzipFile"})
ROLE_CALLS = frozenset(
    {"role", "role_keys", "verify_signers", "verify_statement", "verify_statement_file"}
)


@functools.cache
def _walk(node: ast.AST) -> tuple[ast.AST, ...]:
    """`ast.walk`, kept: every check below walks the same modules (and their functions) again."""
    return tuple(ast.walk(node))


@functools.cache
def _modules() -> tuple[tuple[str, ast.Module], ...]:
    """(path inside the package, its AST) of every module, parsed once for all the checks."""
    return tuple(
        (path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path)))
        for path in sorted(PACKAGE.rglob("*.py"))
    )


def _imported(tree: ast.Module, relpath: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module) of every import in a module of the package, lazy ones too."""
    package = ["stella_bundle", *relpath.split("/")[:-1]]
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.lineno, node.module or ""
                continue
            base = package[: len(package) - (node.level - 1)]
            module = ".".join([*base, *([node.module] if node.module else [])])
            if node.module is None:  # `from . import x`: each name is a module
                for alias in node.names:
                    yield node.lineno, f"{module}.{alias.name}"
            else:
                yield node.lineno, module


def formats_violations(tree: ast.Module, relpath: str) -> list[str]:
    """Imports of a formats/ module that reach past the low-level modules."""
    found = []
    for line, module in _imported(tree, relpath):
        parts = module.split(".")
        if parts[0] != "stella_bundle" or len(parts) < 2:
            continue
        if parts[1] not in FORMATS_MAY_IMPORT:
            what = "the stage" if parts[1] in STAGES else "the module"
            found.append(f"{relpath}:{line} imports {what} {module}")
    return found


def test_formats_imports_no_stage() -> None:
    found = [
        problem
        for relpath, tree in _modules()
        if relpath.startswith("formats/")
        for problem in formats_violations(tree, relpath)
    ]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "from ..evidence.seal import parse_seal\n",
        "from stella_bundle.attest import keys\n",
        "import stella_bundle.bundle.reader\n",
        "def f():\n    from ..functionmap.load import load_function_map\n",
        "from .. import coverage\n",
    ],
)
def test_the_formats_check_catches_a_stage_import(source: str) -> None:
    assert formats_violations(ast.parse(source), "formats/example.py")


def test_the_formats_check_lets_low_level_imports_through() -> None:
    source = "from ..canonical import MAX_SAFE_INTEGER\nfrom .seal import LossCounters\n"
    assert formats_violations(ast.parse(source), "formats/example.py") == []


# The shared helpers below every stage import only each other.
LOW_LEVEL = frozenset(
    {
        "canonical",
        "errors",
        "timeutil",
        "jsonio",
        "fsutil",
        "compression",
        "digests",
        "sizes",
        "configfile",
    }
)


def _imports_between_folders() -> Iterator[tuple[str, int, str]]:
    """(importing module, line, imported top-level part of the package) across folders."""
    for relpath, tree in _modules():
        own = relpath.split("/")[0].removesuffix(".py")
        for line, module in _imported(tree, relpath):
            parts = module.split(".")
            if parts[0] == "stella_bundle" and len(parts) > 1 and parts[1] != own:
                yield relpath, line, parts[1]


def test_the_shared_helpers_import_no_stage() -> None:
    found = [
        f"{relpath}:{line} imports {target}"
        for relpath, line, target in _imports_between_folders()
        if relpath.removesuffix(".py") in LOW_LEVEL and target not in LOW_LEVEL
    ]
    assert not found, "\n".join(found)


def test_only_the_cli_imports_the_cli_and_bundle_never_imports_verify() -> None:
    """The CLI wires the library, never the reverse; `verify/` reads archives through
    `bundle/`, which does not know it (docs/architecture.md)."""
    found = [
        f"{relpath}:{line} imports {target}"
        for relpath, line, target in _imports_between_folders()
        if (target == "cli" and not relpath.startswith(("cli/", "__main__")))
        or (target == "verify" and relpath.startswith("bundle/"))
    ]
    assert not found, "\n".join(found)


def test_no_stage_reaches_into_a_formats_private_name() -> None:
    """What a stage needs of a format is public in formats/ (the writer's fast path once read
    the record's field lists through underscore names)."""
    found = [
        f"{relpath}:{node.lineno} imports {alias.name} from {node.module}"
        for relpath, tree in _modules()
        if not relpath.startswith("formats/")
        for node in _walk(tree)
        if isinstance(node, ast.ImportFrom) and "formats" in (node.module or "").split(".")
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert not found, "\n".join(found)


def test_each_model_is_defined_in_formats_only() -> None:
    found = [
        f"{relpath}:{node.lineno} defines {node.name}"
        for relpath, tree in _modules()
        if not relpath.startswith("formats/")
        for node in _walk(tree)
        if isinstance(node, ast.ClassDef) and node.name in MODELS
    ]
    assert not found, "\n".join(found)


def _is_max_safe_integer_value(node: ast.AST) -> bool:
    """`2**53 - 1`, `(1 << 53) - 1` or the number itself."""
    if isinstance(node, ast.Constant) and node.value == 2**53 - 1:
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub):
        left = node.left
        return (
            isinstance(left, ast.BinOp)
            and isinstance(left.op, ast.Pow | ast.LShift)
            and isinstance(left.right, ast.Constant)
            and left.right.value == 53
        )
    return False


def test_max_safe_integer_is_defined_once() -> None:
    named, spelled = [], []
    for relpath, tree in _modules():
        for node in _walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "MAX_SAFE_INTEGER" for t in targets):
                    named.append(f"{relpath}:{node.lineno}")
            if _is_max_safe_integer_value(node):
                spelled.append(f"{relpath}:{getattr(node, 'lineno', 0)}")
    assert len(named) == 1 and named[0].startswith("canonical.py:"), named
    assert spelled == named, spelled


def test_the_bound_check_catches_a_second_spelling() -> None:
    for source in ("LIMIT = 2**53 - 1\n", "LIMIT = (1 << 53) - 1\n", "LIMIT = 9007199254740991\n"):
        values = [n for n in _walk(ast.parse(source)) if _is_max_safe_integer_value(n)]
        assert values, source


def _calls(tree: ast.AST) -> Iterator[ast.Call]:
    return (node for node in _walk(tree) if isinstance(node, ast.Call))


def _name_of(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def file_hashing_functions(tree: ast.Module, relpath: str) -> list[str]:
    """Functions that open a file and feed a fresh sha256 without writing anything: a file's
    digest computed by hand, which is `digests.file_sha256`'s job. (A function that writes
    hashes what it copies, in the same pass: the tar writer, media split and join.)"""
    found = []
    for node in _walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        calls = list(_calls(node))
        names = {_name_of(call) for call in calls}
        fresh_sha256 = any(
            _name_of(call) == "sha256" and not call.args and not call.keywords for call in calls
        )
        if fresh_sha256 and "open" in names and "update" in names and "write" not in names:
            found.append(f"{relpath}::{node.name}")
    return found


def test_a_files_sha256_is_computed_in_one_place() -> None:
    found = []
    file_digest_calls = []
    for relpath, tree in _modules():
        if relpath == "digests.py":
            continue
        found += file_hashing_functions(tree, relpath)
        file_digest_calls += [
            f"{relpath}:{call.lineno}" for call in _calls(tree) if _name_of(call) == "file_digest"
        ]
        found += [
            f"{relpath}:{node.lineno} defines {node.name}"
            for node in _walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.endswith("file_sha256")
        ]
    assert not found and not file_digest_calls, "\n".join(found + file_digest_calls)


def test_the_file_hash_check_catches_a_hand_written_loop() -> None:
    source = (
        "def digest(path):\n"
        "    h = hashlib.sha256()\n"
        "    with open(path, 'rb') as f:\n"
        "        for block in iter(lambda: f.read(1 << 20), b''):\n"
        "            h.update(block)\n"
        "    return h.hexdigest()\n"
    )
    assert file_hashing_functions(ast.parse(source), "x.py") == ["x.py::digest"]


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring constants of a module, its classes and functions."""
    found = set()
    for node in _walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def sha256_patterns(tree: ast.Module, relpath: str) -> list[str]:
    """String constants (docstrings aside) that spell a sha256 pattern."""
    docstrings = _docstrings(tree)
    return [
        f"{relpath}:{node.lineno} {node.value!r}"
        for node in _walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and SHA256_PATTERN in node.value
        and id(node) not in docstrings
    ]


def test_the_sha256_patterns_are_defined_once() -> None:
    for relpath in SHA256_PATTERN_ALLOWED:  # the list does not outlive its reasons
        tree = dict(_modules())[relpath]
        assert sha256_patterns(tree, relpath), f"{relpath} no longer needs its exception"
    found = [
        problem
        for relpath, tree in _modules()
        if relpath != "digests.py" and relpath not in SHA256_PATTERN_ALLOWED
        for problem in sha256_patterns(tree, relpath)
    ]
    assert not found, "\n".join(found)


def test_the_sha256_pattern_check_catches_a_copy() -> None:
    source = '"""A module: digests are [0-9a-f]{64}."""\nX = re.compile(r"^[0-9a-f]{64}$")\n'
    assert len(sha256_patterns(ast.parse(source), "x.py")) == 1


def hashing_readers(tree: ast.Module, relpath: str) -> list[str]:
    """Classes with a `read` or `write` method that feeds a digest: the job of
    `digests.HashingReader` and `digests.HashingWriter`."""
    found = []
    for node in _walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if (
                    isinstance(item, ast.FunctionDef)
                    and item.name in ("read", "write")
                    and "update" in {_name_of(call) for call in _calls(item)}
                ):
                    found.append(f"{relpath}:{node.lineno} {node.name}")
    return found


def test_one_hashing_reader_and_writer() -> None:
    found = [
        problem
        for relpath, tree in _modules()
        if relpath != "digests.py"
        for problem in hashing_readers(tree, relpath)
    ]
    assert not found, "\n".join(found)


def test_the_hashing_reader_check_catches_a_copy() -> None:
    source = (
        "class Tee:\n"
        "    def read(self, size=-1):\n"
        "        data = self.inner.read(size)\n"
        "        self.sha.update(data)\n"
        "        return data\n"
    )
    assert hashing_readers(ast.parse(source), "x.py") == ["x.py:1 Tee"]


def test_the_hashing_writer_check_catches_a_copy() -> None:
    source = (
        "class Sink:\n"
        "    def write(self, data):\n"
        "        self.digest.update(data)\n"
        "        return self.raw.write(data)\n"
    )
    assert hashing_readers(ast.parse(source), "x.py") == ["x.py:1 Sink"]


def test_every_decompression_goes_through_the_bounded_inflater() -> None:
    found = [
        f"{relpath}:{node.lineno} uses {node.attr}"
        for relpath, tree in _modules()
        if relpath != "compression.py"
        for node in _walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in DECOMPRESSORS
    ]
    assert not found, "\n".join(found)


def role_literals(tree: ast.Module, relpath: str) -> list[str]:
    """A role written as a string where code asks for or records a role."""
    found = []
    for call in _calls(tree):
        if _name_of(call) in ROLE_CALLS:
            found += [
                f"{relpath}:{arg.lineno} {_name_of(call)}({arg.value!r})"
                for arg in call.args
                if isinstance(arg, ast.Constant) and arg.value in ROLES
            ]
    for node in _walk(tree):
        if isinstance(node, ast.Dict):
            found += [
                f"{relpath}:{value.lineno} 'role': {value.value!r}"
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant)
                and key.value == "role"
                and isinstance(value, ast.Constant)
                and value.value in ROLES
            ]
    return found


def test_roles_are_named_through_the_enum() -> None:
    found = [
        problem
        for relpath, tree in _modules()
        if relpath != "formats/roles.py"
        for problem in role_literals(tree, relpath)
    ]
    assert not found, "\n".join(found)


def test_the_role_check_catches_a_literal() -> None:
    source = (
        "v.verify_statement(doc, 'builder', source=s)\n"
        "rows.append({'uri': u, 'role': 'collector'})\n"
        "root.role('auditor')\n"
    )
    assert len(role_literals(ast.parse(source), "x.py")) == 3


def classes_named_twice(modules: Iterator[tuple[str, ast.Module]]) -> dict[str, list[str]]:
    """Public class names defined in more than one place, with where."""
    where: dict[str, list[str]] = {}
    for relpath, tree in modules:
        for node in _walk(tree):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(relpath)
    return {name: paths for name, paths in where.items() if len(paths) > 1}


def test_no_two_public_classes_share_a_name() -> None:
    # Two public classes of one name are two different things, and a reader searching for one
    # finds the other: no exceptions (the last five pairs were renamed, issue 10).
    twice = classes_named_twice(iter(_modules()))
    assert not twice, twice


def test_the_class_name_check_catches_a_pair() -> None:
    modules = [
        ("a.py", ast.parse("class Health:\n    pass\nclass _Private:\n    pass\n")),
        ("b.py", ast.parse("class Health(BaseModel):\n    ok: bool\nclass _Private:\n    pass\n")),
    ]
    assert classes_named_twice(iter(modules)) == {"Health": ["a.py", "b.py"]}


def sorted_json_writers(tree: ast.Module, relpath: str) -> list[str]:
    """Serialisations with sorted keys (json's sort_keys, orjson's OPT_SORT_KEYS) and imports of
    the RFC 8785 package: canonical JSON made by hand, which is canonical.py's job."""
    found = [
        f"{relpath}:{line} imports {module}"
        for line, module in _imported(tree, relpath)
        if module.split(".")[0] == "rfc8785"
    ]
    for node in _walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "OPT_SORT_KEYS":
            found.append(f"{relpath}:{node.lineno} OPT_SORT_KEYS")
        sorted_keys = isinstance(node, ast.keyword) and node.arg == "sort_keys"
        if sorted_keys and not (isinstance(node.value, ast.Constant) and not node.value.value):
            found.append(f"{relpath}:{getattr(node.value, 'lineno', 0)} sort_keys")
    return found


def test_canonical_json_is_made_in_one_place() -> None:
    found = [
        problem
        for relpath, tree in _modules()
        if relpath != "canonical.py" and relpath not in SORTED_JSON_ALLOWED
        for problem in sorted_json_writers(tree, relpath)
    ]
    assert not found, "\n".join(found)
    still_there = {relpath for relpath, tree in _modules() if sorted_json_writers(tree, relpath)}
    assert set(SORTED_JSON_ALLOWED) <= still_there, "gone: drop from SORTED_JSON_ALLOWED"


@pytest.mark.parametrize(
    "source",
    [
        "import rfc8785\n",
        "import orjson\ndata = orjson.dumps(x, option=orjson.OPT_SORT_KEYS)\n",
        "import json\ndata = json.dumps(x, sort_keys=True, separators=(',', ':'))\n",
    ],
)
def test_the_canonical_json_check_catches_a_copy(source: str) -> None:
    assert sorted_json_writers(ast.parse(source), "x.py")


def timestamp_canonicalisers(tree: ast.Module, relpath: str) -> list[str]:
    """`format_timestamp(parse_timestamp(...))`: a timestamp's canonical form made by hand,
    which is `timeutil.canonical_timestamp`'s job."""
    return [
        f"{relpath}:{node.lineno}"
        for node in _calls(tree)
        if _name_of(node) == "format_timestamp"
        and any(
            isinstance(arg, ast.Call) and _name_of(arg) == "parse_timestamp" for arg in node.args
        )
    ]


def test_a_timestamps_canonical_form_is_made_in_one_place() -> None:
    found = [
        problem
        for relpath, tree in _modules()
        for problem in timestamp_canonicalisers(tree, relpath)
    ]
    assert len(found) == 1 and found[0].startswith("timeutil.py:"), found


def test_the_timestamp_check_catches_a_copy() -> None:
    source = "def canonical_time(v):\n    return format_timestamp(parse_timestamp(v))\n"
    assert timestamp_canonicalisers(ast.parse(source), "x.py") == ["x.py:2"]


YAML_READERS = frozenset({"safe_load", "load", "safe_load_all", "load_all", "compose", "full_load"})


def yaml_readers(tree: ast.Module, relpath: str) -> list[str]:
    """Calls of `yaml.safe_load` and its kin (each takes duplicate keys and alias bombs)."""
    return [
        f"{relpath}:{node.lineno}"
        for node in _walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in YAML_READERS
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "yaml"
    ]


def test_yaml_is_read_in_one_place() -> None:
    found = [problem for relpath, tree in _modules() for problem in yaml_readers(tree, relpath)]
    assert found == [], found
    reader = dict(_modules())["configfile.py"]
    assert any(
        isinstance(node, ast.Attribute) and node.attr == "SafeLoader" for node in _walk(reader)
    )


def test_the_yaml_check_catches_a_safe_load() -> None:
    source = "import yaml\n\ndef read(p):\n    return yaml.safe_load(open(p))\n"
    assert yaml_readers(ast.parse(source), "x.py") == ["x.py:4"]
