"""`stella agent run` over a directory of signed function maps (runtime_agent.function_maps):
real eBPF, real fixture binaries, the real CLI as a subprocess.

Two maps on two binaries are collected at once into two chains, each verifying on its own; a
map added while running is collected; a map removed is detached (the agent's bpf link file
descriptors, counted in /proc, fall by its probes) and its chain final-sealed; a changed map
ends its chain and starts another; unsigned and badly signed maps are one error line each while
the others go on; SIGTERM final-seals every chain within the unit's TimeoutStopSec.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_support import start_workload
from prometheus_client.parser import text_string_to_metric_families
from service_support import free_port, function_map_file, http_get, wait_for, wait_ready

from stella_bundle.attest.dsse import envelope_bytes, sign_statement
from stella_bundle.canonical import sha256_hex
from stella_bundle.collector.run import chain_id_for
from stella_bundle.evidence.chain import verify_chain
from stella_bundle.evidence.reader import iter_chain_records
from stella_bundle.evidence.seal import parse_seal
from stella_bundle.formats.function_map import ExpectedNode
from stella_bundle.functionmap.elf import index_binary

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
WORKLOAD = "pkg:generic/stella-workload@1.0.0"
BLOCKING = "pkg:generic/stella-blocking@1.0.0"


class Agent:
    """The agent as a subprocess, its log in a file (read while it runs, never a full pipe)."""

    def __init__(
        self,
        tmp_path: Path,
        maps: Path,
        test_keys: Any,
        probes: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        stall_seconds: float | None = None,
    ) -> None:
        self.port = free_port()
        self.evidence = tmp_path / "evidence"
        self.log = tmp_path / "agent.log"
        config = tmp_path / "stellaops.yaml"
        document = {
            "runtime_agent": {
                "function_maps": {"directory": str(maps), "poll_seconds": 0.3},
                # In the map directory, as the packaged config has it: not taken for a map.
                "trust_root": str(maps / "trust-root.json"),
                "metrics": {
                    "listen": f"127.0.0.1:{self.port}",
                    **({"stall_seconds": stall_seconds} if stall_seconds else {}),
                },
                "probes": probes or {},
                "export": {
                    "output_path": str(self.evidence),
                    "flush_interval_ms": 500,
                    "aggregation_window_ms": 200,
                },
            },
            "signals": {"signing": {"key_file": str(test_keys.private("collector"))}},
        }
        config.write_text(yaml.safe_dump(document))
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stella_bundle", "agent", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **(env or {})},
            )

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def ready(self) -> None:
        wait_ready(self.port, self.process, 60)
        assert self.process.poll() is None, self.log.read_text()

    def metric(self, name: str, label: str = "chain") -> dict[str, float]:
        """label value (the chain, unless said) → value of one metric, as scraped now."""
        status, text = http_get(self.port, "/metrics")
        assert status == 200
        values: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    values[sample.labels[label]] = sample.value
        return values

    def stop(self, timeout: float) -> float:
        """SIGTERM; the seconds until the agent exited (0 asserted)."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=timeout)
        took = time.monotonic() - started
        assert self.process.returncode == 0, self.log.read_text()
        return took

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def bpf_links(pid: int) -> int:
    """The process's open bpf link file descriptors, as the kernel lists them."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue  # closed meanwhile
        count += "link_type:" in text
    return count


def signed(path: Path, nodes: list[ExpectedNode], service: str, keys: Any, **kw: Any) -> Path:
    """A map signed by `keys` (the function-map role unless said), as function-map sign does."""
    role = kw.pop("role", "function-map")
    statement = json.loads(
        function_map_file(path.with_suffix(".tmp"), nodes, service, **kw).read_text()
    )
    path.with_suffix(".tmp").unlink()
    path.write_bytes(envelope_bytes(sign_statement(statement, [keys.signer(role)])))
    return path


def drop_in(maps: Path, source: Path) -> Path:
    """Into the watched directory atomically (a hidden name, then renamed), as operators should."""
    hidden = maps / f".{source.name}"
    hidden.write_bytes(source.read_bytes())
    hidden.rename(maps / source.name)
    return maps / source.name


def chain_of(agent: Agent, map_file: Path, service: str) -> Path:
    return agent.evidence / chain_id_for(service, sha256_hex(map_file.read_bytes()))


def _written(chain: Path) -> int:
    """Records in the chain's open chunks (written, not sealed yet)."""
    return sum(path.read_bytes().count(b"\n") for path in chain.glob("*.ndjson.partial"))


def final_sealed(chain: Path) -> bool:
    seals = sorted(chain.glob("*.seal.dsse.json"))
    return bool(seals) and parse_seal(seals[-1].read_bytes()).predicate.final


def function_map_verify(map_file: Path, chain: Path, keys: Any, since: str) -> Any:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return subprocess.run(
        [sys.executable, "-m", "stella_bundle", "function-map", "verify", "--function-map",
         str(map_file), "--trust-root", str(keys.trust_root), "--evidence", str(chain),
         "--from", since, "--to", now, "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def run_blocking(blocking_bin: Path) -> None:
    process = subprocess.Popen(
        [str(blocking_bin)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    assert process.stdout.readline().startswith("ready")
    process.stdin.write("go\n")
    process.stdin.flush()
    assert process.stdout.readline().strip() == "inside"
    process.stdin.write("release\n")
    process.stdin.flush()
    assert process.wait(timeout=30) == 0


def workload_map_nodes(workload_bin: Path, *symbols: str) -> list[ExpectedNode]:
    return [ExpectedNode.create(WORKLOAD, s, binary_path=str(workload_bin)) for s in symbols]


def blocking_map_nodes(blocking_bin: Path) -> list[ExpectedNode]:
    return [
        ExpectedNode.create(BLOCKING, "stella_block_until_released", binary_path=str(blocking_bin))
    ]


def timeout_stop_sec() -> float:
    unit = (ROOT / "deploy" / "systemd" / "stella-agent.service").read_text()
    match = re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.MULTILINE)
    assert match, "the unit sets TimeoutStopSec"
    return float(match.group(1))


@pytest.fixture
def maps(tmp_path: Path, test_keys: Any) -> Path:
    directory = tmp_path / "maps"
    directory.mkdir()
    (directory / "trust-root.json").write_bytes(test_keys.trust_root.read_bytes())
    return directory


@pytest.mark.slow
def test_two_maps_on_two_binaries_two_chains_each_verifying_bad_maps_refused(
    ebpf: None, workload_bin: Path, blocking_bin: Path, tmp_path: Path, maps: Path, test_keys: Any
) -> None:
    since = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    workload_map = signed(
        maps / "workload.dsse.json",
        workload_map_nodes(workload_bin, "stella_work_parse", "stella_work_hot"),
        "stella-workload",
        test_keys,
    )
    blocking_map = signed(
        maps / "blocking.dsse.json", blocking_map_nodes(blocking_bin), "stella-blocking", test_keys
    )
    # Unsigned (a bare Statement) and signed by a key the trust root does not hold.
    function_map_file(maps / "unsigned.json", blocking_map_nodes(blocking_bin), "stella-unsigned")
    signed(
        maps / "stranger.dsse.json",
        blocking_map_nodes(blocking_bin),
        "stella-stranger",
        test_keys,
        role="stranger",
    )
    # Well signed, but max_concurrent is the agent's total: the two maps above (taken first,
    # in name order) hold all 3 probes.
    signed(
        maps / "zz-over-limit.dsse.json",
        workload_map_nodes(workload_bin, "stella_work_never"),
        "stella-extra",
        test_keys,
    )
    agent = Agent(tmp_path, maps, test_keys, probes={"max_concurrent": 3})
    try:
        agent.ready()
        assert agent.metric("stella_function_map_refused", "function_map") == {
            "unsigned.json": 1.0,
            "stranger.dsse.json": 1.0,
            "zz-over-limit.dsse.json": 1.0,
        }
        work = start_workload(workload_bin, "--calls", "10")
        work.go()
        run_blocking(blocking_bin)
        wait_for(
            lambda: (
                len(agent.metric("stella_observations_total")) == 2
                and min(agent.metric("stella_observations_total").values()) >= 1
            ),
            30,
            "records in both chains",
        )
        took = agent.stop(timeout=timeout_stop_sec())
    finally:
        agent.kill()
    assert took < timeout_stop_sec()
    log = agent.lines()
    errors = [line for line in log if line.startswith("error:")]
    assert len(errors) == 3, log
    (unsigned,) = [e for e in errors if str(maps / "unsigned.json") in e]
    assert "not signed" in unsigned and "the other maps keep collecting" in unsigned
    (stranger,) = [e for e in errors if str(maps / "stranger.dsse.json") in e]
    assert "not signed by any trusted key" in stranger, stranger
    (over,) = [e for e in errors if str(maps / "zz-over-limit.dsse.json") in e]
    assert "probes.max_concurrent" in over and "(3 held by the agent's other maps)" in over
    # Exactly the two good maps have chains (nothing written for the refused ones).
    workload_chain = chain_of(agent, workload_map, "stella-workload")
    blocking_chain = chain_of(agent, blocking_map, "stella-blocking")
    assert sorted(p.name for p in agent.evidence.iterdir()) == sorted(
        [workload_chain.name, blocking_chain.name]
    )
    for map_file, chain, symbols in (
        (workload_map, workload_chain, {"stella_work_parse", "stella_work_hot"}),
        (blocking_map, blocking_chain, {"stella_block_until_released"}),
    ):
        assert verify_chain(chain, test_keys.trust_root).passed
        assert final_sealed(chain)
        # Each chain holds its own map's records only.
        assert {r["function_name"] for r in iter_chain_records(chain)} == symbols
        verified = function_map_verify(map_file, chain, test_keys, since)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["verified"] is True

    # The auditor's command over the whole evidence directory: two chains, both pass, both final.
    checked = subprocess.run(
        [sys.executable, "-m", "stella_bundle", "signals", "verify-chain", str(agent.evidence),
         "--trust-root", str(test_keys.trust_root), "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    verdict = json.loads(checked.stdout)
    assert verdict["passed"] is True
    assert sorted((c["chain_id"], c["final_seal"]) for c in verdict["chains"]) == sorted(
        [(workload_chain.name, True), (blocking_chain.name, True)]
    )

    # Restarted with the same maps, SIGKILLed after collecting, started again: the same two
    # chains continue (no third chain), the killed run's records recovered, nothing lost.
    chains = sorted(agent.evidence.iterdir())
    killed = Agent(tmp_path, maps, test_keys, probes={"max_concurrent": 3})
    try:
        killed.ready()
        start_workload(workload_bin, "--calls", "10").go()
        run_blocking(blocking_bin)
        observed = wait_for(
            lambda: (
                (counts := killed.metric("stella_observations_total"))
                and len(counts) == 2
                and min(counts.values()) >= 1
                and counts
            ),
            30,
            "records in both chains",
        )
        # Written to the open chunks (a flush interval, 0.5 s, on a quiet machine), not sealed:
        # waited for, since a loaded machine may flush later than any fixed sleep.
        wait_for(
            lambda: all(
                _written(agent.evidence / chain) >= count for chain, count in observed.items()
            ),
            30,
            "the records written to the open chunks",
        )
    finally:
        killed.kill()
    again = Agent(tmp_path, maps, test_keys, probes={"max_concurrent": 3})
    try:
        again.ready()
        again.stop(timeout=timeout_stop_sec())
    finally:
        again.kill()
    assert sorted(agent.evidence.iterdir()) == chains
    for chain in chains:
        assert verify_chain(chain, test_keys.trust_root).passed
        assert final_sealed(chain)
        reasons = [
            parse_seal(seal.read_bytes()).predicate.reason
            for seal in sorted(chain.glob("*.seal.dsse.json"))
        ]
        assert "recovered" in reasons, reasons
    # One first hit per node and run: both runs' records are in each chain.
    assert sorted(r["function_name"] for r in iter_chain_records(workload_chain)) == [
        "stella_work_hot",
        "stella_work_hot",
        "stella_work_parse",
        "stella_work_parse",
    ]
    assert [r["function_name"] for r in iter_chain_records(blocking_chain)] == [
        "stella_block_until_released"
    ] * 2


def test_maps_added_removed_and_changed_while_running(
    ebpf: None, workload_bin: Path, blocking_bin: Path, tmp_path: Path, maps: Path, test_keys: Any
) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    # stella_work_never is never called: its probe stays attached (coverage mode detaches a
    # probe at its first hit), so each map holds a link to detach when it goes.
    workload_map = signed(
        maps / "workload.dsse.json",
        workload_map_nodes(workload_bin, "stella_work_parse", "stella_work_never"),
        "stella-workload",
        test_keys,
        optional=1,
    )
    blocking_staged = signed(
        staging / "blocking.dsse.json",
        [*blocking_map_nodes(blocking_bin), *workload_map_nodes(workload_bin, "stella_work_never")],
        "stella-blocking",
        test_keys,
        optional=1,
    )
    agent = Agent(tmp_path, maps, test_keys)
    try:
        agent.ready()
        workload_chain = chain_of(agent, workload_map, "stella-workload")
        assert agent.metric("stella_probes_attached") == {workload_chain.name: 2.0}
        assert bpf_links(agent.process.pid) == 2

        # Added while running: attached and collected into a chain of its own; a bad map
        # dropped in at the same time is one error line, and the others go on.
        blocking_map = drop_in(maps, blocking_staged)
        (maps / "bad.dsse.json").write_text('{"payloadType": "nope"')
        blocking_chain = chain_of(agent, blocking_map, "stella-blocking")
        wait_for(
            lambda: agent.metric("stella_probes_attached").get(blocking_chain.name) == 2.0,
            30,
            "attached",
        )
        run_blocking(blocking_bin)
        wait_for(
            lambda: agent.metric("stella_observations_total").get(blocking_chain.name, 0) >= 1,
            30,
            "the added map's record",
        )
        # Its first hit detached stella_block_until_released; stella_work_never stays.
        wait_for(
            lambda: (
                agent.metric("stella_probes_attached")
                == {workload_chain.name: 2.0, blocking_chain.name: 1.0}
            ),
            30,
            "coverage detach",
        )
        assert bpf_links(agent.process.pid) == 3

        # Removed: its probe detached (the kernel's link count falls by one), its series gone,
        # its chain final-sealed; the other map still collects.
        blocking_map.unlink()
        wait_for(
            lambda: blocking_chain.name not in agent.metric("stella_probes_attached"),
            30,
            "removed",
        )
        assert bpf_links(agent.process.pid) == 2
        assert final_sealed(blocking_chain)
        assert verify_chain(blocking_chain, test_keys.trust_root).passed
        assert {r["function_name"] for r in iter_chain_records(blocking_chain)} == {
            "stella_block_until_released"
        }
        start_workload(workload_bin, "--calls", "10").go()
        wait_for(
            lambda: agent.metric("stella_observations_total").get(workload_chain.name, 0) >= 1,
            30,
            "the remaining map still collects",
        )

        # Replaced by a version the trust root does not verify: refused, and the verified
        # version keeps collecting (its chain not ended).
        drop_in(
            maps,
            signed(
                staging / "workload.dsse.json",
                workload_map_nodes(workload_bin, "stella_work_hot"),
                "stella-workload",
                test_keys,
                role="stranger",
            ),
        )
        wait_for(
            lambda: (
                "workload.dsse.json" in agent.metric("stella_function_map_refused", "function_map")
            ),
            30,
            "the unverified update refused",
        )
        assert workload_chain.name in agent.metric("stella_probes_attached")
        assert not final_sealed(workload_chain)

        # Changed (another sha256): its chain ends with a final seal, a new chain starts.
        changed_staged = signed(
            staging / "workload.dsse.json",
            workload_map_nodes(workload_bin, "stella_work_hot", "stella_work_never"),
            "stella-workload",
            test_keys,
            optional=1,
        )
        changed = drop_in(maps, changed_staged)
        new_chain = chain_of(agent, changed, "stella-workload")
        assert new_chain != workload_chain
        wait_for(
            lambda: agent.metric("stella_probes_attached") == {new_chain.name: 2.0},
            30,
            "the new version",
        )
        assert final_sealed(workload_chain)
        start_workload(workload_bin, "--calls", "10").go()
        wait_for(
            lambda: agent.metric("stella_observations_total").get(new_chain.name, 0) >= 1,
            30,
            "the new version collects",
        )
        assert agent.metric("stella_function_map_refused", "function_map") == {"bad.dsse.json": 1.0}
        agent.stop(timeout=timeout_stop_sec())
    finally:
        agent.kill()
    assert {r["function_name"] for r in iter_chain_records(workload_chain)} == {"stella_work_parse"}
    assert {r["function_name"] for r in iter_chain_records(new_chain)} == {"stella_work_hot"}
    for chain in (workload_chain, new_chain, blocking_chain):
        assert verify_chain(chain, test_keys.trust_root).passed
        assert final_sealed(chain)
    log = agent.lines()
    bad, update = [line for line in log if line.startswith("error:")]  # once each, not per poll
    assert str(maps / "bad.dsse.json") in bad
    assert str(maps / "workload.dsse.json") in update and "not signed by any trusted key" in update
    assert "its verified version" in update and "keeps collecting" in update
    assert any(
        "blocking.dsse.json removed: 1 probes detached" in line and blocking_chain.name in line
        for line in log
    ), log
    assert any("workload.dsse.json changed" in line for line in log), log


def test_sigterm_final_seals_every_chain_within_the_units_stop_timeout(
    ebpf: None, tmp_path: Path, maps: Path, test_keys: Any
) -> None:
    """Two maps of 1,000 libcrypto probes each: the stop detaches and seals both in parallel,
    within the systemd unit's TimeoutStopSec."""
    from collector_support import LIBCRYPTO

    from stella_bundle.functionmap.elf import index_binary

    functions = sorted(index_binary(LIBCRYPTO).functions)[:2000]
    halves = {"crypto-a": functions[:1000], "crypto-b": functions[1000:]}
    map_files = {
        service: signed(
            maps / f"{service}.dsse.json",
            [ExpectedNode.create("pkg:deb/debian/libssl3", s, binary_path=LIBCRYPTO) for s in half],
            service,
            test_keys,
        )
        for service, half in halves.items()
    }
    agent = Agent(tmp_path, maps, test_keys)
    try:
        agent.ready()
        attached = agent.metric("stella_probes_attached")
        assert len(attached) == 2 and all(v > 0 for v in attached.values()), attached
        took = agent.stop(timeout=timeout_stop_sec())
    finally:
        agent.kill()
    assert took < timeout_stop_sec()
    for service, map_file in map_files.items():
        chain = chain_of(agent, map_file, service)
        assert final_sealed(chain), chain
        assert verify_chain(chain, test_keys.trust_root).passed
    stopped = [line for line in agent.lines() if " stopped: " in line]
    assert len(stopped) == 2, agent.lines()


def test_systemd_hears_ready_watchdog_and_stopping_with_a_map_directory(
    ebpf: None, workload_bin: Path, tmp_path: Path, maps: Path, test_keys: Any
) -> None:
    """The packaged unit (Type=notify, WatchdogSec=) runs the map directory: READY=1 once the
    maps are attached, watchdog pings from the directory's loop, STOPPING=1 on SIGTERM."""
    import socket

    signed(
        maps / "workload.dsse.json",
        workload_map_nodes(workload_bin, "stella_work_parse", "stella_work_never"),
        "stella-workload",
        test_keys,
    )
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(60)
        env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
        agent = Agent(tmp_path, maps, test_keys, env=env)
        try:
            ready = listener.recv(4096).decode().splitlines()
            assert ready[0] == "READY=1"
            assert ready[1].startswith("STATUS=collecting: 1 function maps, 2 probes attached")
            pings = [listener.recv(4096).decode() for _ in range(3)]
            assert pings == ["WATCHDOG=1"] * 3
            agent.process.send_signal(signal.SIGTERM)
            while (message := listener.recv(4096).decode()) == "WATCHDOG=1":
                pass
            assert message.splitlines()[0] == "STOPPING=1"
            assert agent.process.wait(timeout=60) == 0
        finally:
            agent.kill()


def _frozen_fs_at(directory: Path, image: Path) -> None:
    """An ext4 filesystem of its own (a loop device) mounted at `directory`: fsfreeze on it
    blocks every write there, as a snapshot backup or a hung volume does."""
    directory.mkdir(parents=True)
    subprocess.run(["truncate", "-s", "32M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(directory)], check=True)
    (directory / "lost+found").rmdir()  # the chain directory holds the chain's files only


STALL = 8.0


@pytest.mark.slow
def test_one_maps_stalled_loop_makes_the_agent_unhealthy_until_it_turns_again(
    ebpf: None, workload_bin: Path, blocking_bin: Path, tmp_path: Path, maps: Path, test_keys: Any
) -> None:
    """One map's loop stuck for real (its chain's filesystem frozen: the writer blocks in the
    kernel) while the other map collects on: past the stall time systemd's watchdog pings stop
    and /healthz answers 503 (one stuck map is a stuck agent: the restart systemd or the
    kubelet then does is what brings it back); the filesystem thawed, the loop turns again,
    the pings and /healthz come back, and both chains end final-sealed and verifying."""
    import socket

    workload_map = signed(
        maps / "workload.dsse.json",
        workload_map_nodes(workload_bin, "stella_work_parse", "stella_work_hot"),
        "stella-workload",
        test_keys,
    )
    blocking_map = signed(
        maps / "blocking.dsse.json", blocking_map_nodes(blocking_bin), "stella-blocking", test_keys
    )
    stuck_chain = (
        tmp_path
        / "evidence"
        / chain_id_for("stella-workload", sha256_hex(workload_map.read_bytes()))
    )
    blocking_chain = stuck_chain.with_name(
        chain_id_for("stella-blocking", sha256_hex(blocking_map.read_bytes()))
    )
    _frozen_fs_at(stuck_chain, tmp_path / "chain.ext4")
    frozen = False
    address = str(tmp_path / "notify")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
            listener.bind(address)
            listener.settimeout(60)
            env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"}
            # A stall time of 8 s (metrics.stall_seconds; 30 s unless set, which this test
            # waited out): the same rule, a quarter of the wait.
            agent = Agent(tmp_path, maps, test_keys, env=env, stall_seconds=STALL)
            try:
                assert listener.recv(4096).decode().startswith("READY=1")
                assert [listener.recv(4096).decode() for _ in range(3)] == ["WATCHDOG=1"] * 3
                assert http_get(agent.port, "/healthz")[0] == 200
                subprocess.run(["fsfreeze", "--freeze", str(stuck_chain)], check=True)
                frozen, froze_at = True, time.monotonic()
                # A record for the frozen chain: its next flush blocks that map's loop.
                subprocess.run([str(workload_bin), "--calls", "3"], check=True, timeout=30)
                _, text = wait_for(
                    lambda: r if (r := http_get(agent.port, "/healthz"))[0] == 503 else None,
                    90,
                    "/healthz bad",
                )
                bad_after = time.monotonic() - froze_at
                assert "collection loop stalled" in text
                # Not before the stall time: a slow turn is no stuck loop; and counted from the
                # stuck map's last turn, not from when the pings stopped.
                assert STALL - 1 < bad_after < STALL + 20, bad_after
                listener.settimeout(0.1)
                with contextlib.suppress(TimeoutError):
                    while True:  # pings sent before the stall time passed
                        listener.recv(4096)
                listener.settimeout(2)
                with pytest.raises(TimeoutError):
                    listener.recv(4096)  # pings every 0.2 s while alive: none now
                # The other map collects on meanwhile.
                run_blocking(blocking_bin)
                wait_for(
                    lambda: agent.metric("stella_observations_total").get(blocking_chain.name),
                    30,
                    "the other map's records",
                )
                subprocess.run(["fsfreeze", "--unfreeze", str(stuck_chain)], check=True)
                frozen = False
                listener.settimeout(30)
                assert listener.recv(4096).decode() == "WATCHDOG=1"
                wait_for(lambda: http_get(agent.port, "/healthz")[0] == 200, 30, "/healthz good")
                assert agent.stop(timeout_stop_sec()) < timeout_stop_sec()
            finally:
                agent.kill()
        for chain in (stuck_chain, blocking_chain):
            assert final_sealed(chain), chain
            assert verify_chain(chain, test_keys.trust_root).passed
        parsed = {r["function_name"] for r in iter_chain_records(stuck_chain)}
        assert "stella_work_parse" in parsed  # written once the filesystem thawed
    finally:
        if frozen:
            subprocess.run(["fsfreeze", "--unfreeze", str(stuck_chain)], check=False)
        subprocess.run(["umount", "-l", str(stuck_chain)], check=False)


def test_a_binary_replaced_under_a_map_of_the_directory_is_reattached_and_said(
    ebpf: None, workload_bin: Path, tmp_path: Path, maps: Path, test_keys: Any
) -> None:
    """Probe health in the agent over a map directory: the health line names the map, the
    counter moves on that map's chain, its seal names the replacement (the one-map agent's
    case is tests/collector/test_collector_health.py)."""
    binary = tmp_path / "bin" / "stella-workload"
    binary.parent.mkdir()
    shutil.copy2(workload_bin, binary)
    map_file = signed(
        maps / "workload.dsse.json",
        workload_map_nodes(binary, "stella_work_parse", "stella_work_hot"),
        "stella-workload",
        test_keys,
    )
    agent = Agent(tmp_path, maps, test_keys, probes={"health_check_interval_ms": 200})
    try:
        agent.ready()
        staged = binary.with_name(".new")
        shutil.copy2(workload_bin, staged)  # same build, a new file: the probes' inode is gone
        staged.rename(binary)
        wait_for(
            lambda: [line for line in agent.lines() if "health: binary_replaced" in line],
            30,
            "the health line",
        )
        chain = chain_of(agent, map_file, "stella-workload")
        counters = wait_for(
            lambda: (
                values
                if (values := agent.metric("stella_probe_reattach_total", "reason")).get(
                    "binary_replaced"
                )
                == 2
                else None
            ),
            10,
            "the reattach counter",
        )
        assert counters["link_lost"] == 0
        agent.stop(60)
    finally:
        agent.kill()
    (line,) = [line for line in agent.lines() if "health: binary_replaced" in line]
    assert line.startswith("warning: workload.dsse.json: health: binary_replaced ")
    assert str(binary) in line and "2 probe(s) reattached" in line
    named = [
        item
        for seal in sorted(chain.glob("*.seal.dsse.json"))
        for item in parse_seal(seal.read_bytes()).predicate.probe_reattachments
    ]
    build = index_binary(str(workload_bin)).build_id
    assert [(n.reason, n.previous_build_id, n.build_id, n.reattached) for n in named] == [
        ("binary_replaced", build, build, 2)
    ]
    assert verify_chain(chain, test_keys.trust_root).passed
