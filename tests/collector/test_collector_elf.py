"""Symbol resolution: file offsets for PIE and shared objects, version suffixes, build ids,
stripped binaries reported as not observable."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from collector_support import LIBC, LIBCRYPTO

from stella_bundle.collector.elfsym import resolve_symbol
from stella_bundle.collector.features import KernelFeatures
from stella_bundle.collector.plan import build_plan, find_binary
from stella_bundle.errors import CollectorEnvironmentError
from stella_bundle.formats.function_map import ExpectedNode
from stella_bundle.functionmap.elf import index_binary


def _nm_offset(binary: Path, symbol: str) -> int:
    """The offset via binutils: st_value minus the segment vaddr plus its file offset."""
    out = subprocess.run(
        ["nm", "-D", "--defined-only", str(binary)]
        if "lib" in binary.name
        else ["nm", str(binary)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    value = next(
        int(line.split()[0], 16)
        for line in out.splitlines()
        if line.split()[-1].split("@")[0] == symbol
    )
    headers = subprocess.run(
        ["readelf", "-lW", str(binary)], capture_output=True, text=True, check=True
    ).stdout
    for line in headers.splitlines():
        parts = line.split()
        if parts and parts[0] == "LOAD":
            offset, vaddr, memsz = int(parts[1], 16), int(parts[2], 16), int(parts[5], 16)
            if vaddr <= value < vaddr + memsz:
                return value - vaddr + offset
    raise AssertionError("no segment")


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils")
def test_pie_executable_offset_and_build_id(workload_bin: Path) -> None:
    resolved = resolve_symbol(str(workload_bin), "stella_work_hot")
    assert resolved.offset == _nm_offset(workload_bin, "stella_work_hot")
    notes = subprocess.run(
        ["readelf", "-n", str(workload_bin)], capture_output=True, text=True
    ).stdout
    build_id = re.search(r"Build ID: ([0-9a-f]+)", notes)
    assert build_id and resolved.build_id == build_id.group(1)


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils")
def test_shared_object_and_version_suffix() -> None:
    plain = resolve_symbol(LIBC, "getpid")
    versioned = resolve_symbol(LIBC, "getpid@@GLIBC_2.2.5")
    assert plain.offset == versioned.offset == _nm_offset(Path(LIBC), "getpid")
    assert resolve_symbol(LIBCRYPTO, "EVP_Digest").offset > 0


def test_stripped_binary_is_not_observable(workload_bin: Path, tmp_path: Path) -> None:
    stripped = tmp_path / "stripped"
    shutil.copy(workload_bin, stripped)
    subprocess.run(["strip", "--strip-all", str(stripped)], check=True)
    with pytest.raises(
        CollectorEnvironmentError, match="not observable: the binary is stripped"
    ) as info:
        resolve_symbol(str(stripped), "stella_work_hot")
    assert str(stripped) in str(info.value)


def test_missing_symbol_and_missing_binary_name_the_file(workload_bin: Path) -> None:
    with pytest.raises(CollectorEnvironmentError, match="not defined in this binary"):
        resolve_symbol(str(workload_bin), "no_such_function")
    with pytest.raises(CollectorEnvironmentError, match="binary not found"):
        resolve_symbol("/nonexistent/bin", "main")


def test_binary_found_for_a_debian_purl_without_binary_path() -> None:
    found = find_binary("pkg:deb/debian/libc6@2.36", "getpid")
    assert "libc.so.6" in found


def test_plan_reports_unobservable_nodes_and_build_id_mismatch(
    workload_bin: Path, tmp_path: Path, features: KernelFeatures
) -> None:
    stripped = tmp_path / "stripped"
    shutil.copy(workload_bin, stripped)
    subprocess.run(["strip", "--strip-all", str(stripped)], check=True)
    nodes = [
        ExpectedNode.create("pkg:generic/w", "stella_work_hot", binary_path=str(workload_bin)),
        ExpectedNode.create("pkg:generic/w", "stella_work_parse", binary_path=str(stripped)),
        ExpectedNode.create(
            "pkg:generic/w", "stella_work_never", binary_path=str(workload_bin), build_id="00" * 20
        ),
        ExpectedNode.create("pkg:generic/linux-kernel", "no_such_kernel_symbol"),
    ]
    plan = build_plan(nodes, features)
    assert [s.symbol for s in plan.specs] == ["stella_work_hot"]
    reasons = {u.symbol: u.reason for u in plan.unobservable}
    assert "stripped" in reasons["stella_work_parse"]
    assert "build-id" in reasons["stella_work_never"]
    assert "has no probe" in reasons["no_such_kernel_symbol"]


def test_config_file_collector_keys_are_checked(tmp_path: Path) -> None:
    from stella_bundle.collector.run import collector_settings
    from stella_bundle.errors import ConfigError

    settings = collector_settings(
        {"mode": "count", "filters": {"target_containers": ["abc"], "path_denylist": ["/proc/**"]}},
        "stellaops.yaml",
    )
    assert settings == {"mode": "count", "containers": ["abc"], "path_deny": ["/proc/**"]}
    with pytest.raises(ConfigError, match=r"stellaops.yaml: field 'signals.moed'"):
        collector_settings({"moed": "count"}, "stellaops.yaml")
    with pytest.raises(ConfigError, match=r"signals.filters.paths"):
        collector_settings({"filters": {"paths": []}}, "stellaops.yaml")


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs binutils")
def test_build_id_is_the_gnu_note_not_a_usdt_note() -> None:
    """python3 carries SystemTap USDT notes (type 3 too, owner "stapsdt"): the build id is
    the GNU one readelf names."""
    python = Path("/usr/bin/python3").resolve()
    notes = subprocess.run(["readelf", "-n", str(python)], capture_output=True, text=True).stdout
    assert "stapsdt" in notes
    build_id = re.search(r"Build ID: ([0-9a-f]+)", notes)
    assert build_id and index_binary(str(python)).build_id == build_id.group(1)


def test_a_copy_of_a_binary_is_indexed_once_and_a_replaced_one_again(
    workload_bin: Path, tmp_path: Path
) -> None:
    """Every container of an image has its own copy of a library (another inode): the same
    build id and size share one index. A file replaced in place is read again."""
    first, second = tmp_path / "a" / "libcrypto.so.3", tmp_path / "b" / "libcrypto.so.3"
    for copy in (first, second):
        copy.parent.mkdir()
        shutil.copy2(LIBCRYPTO, copy)
    one, other = index_binary(str(first)), index_binary(str(second))
    assert one.functions is other.functions
    assert (one.path, other.path) == (str(first), str(second))
    assert resolve_symbol(str(second), "EVP_Digest").binary_path == str(second)
    # Replaced by another binary at the same path: its own symbols, not the cached ones.
    shutil.copy2(workload_bin, first)
    replaced = index_binary(str(first))
    assert "stella_work_hot" in replaced.functions and "EVP_Digest" not in replaced.functions


def test_ifunc_resolvers_are_not_offered_as_functions() -> None:
    """An STT_GNU_IFUNC symbol's address is its resolver, run once at load: a probe there
    would never see a call, so the index does not offer it (libc's strcpy is one)."""
    out = subprocess.run(
        ["readelf", "-sW", "--dyn-syms", LIBC], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split() for line in out.splitlines()]
    kinds = {row[3] for row in rows if len(row) >= 8 and row[7].startswith("strcpy@")}
    assert kinds == {"IFUNC"}
    functions = index_binary(LIBC).functions
    assert "strcpy" not in functions and "malloc" in functions
