"""The airgap loader: lock-checked probe objects loaded with libbpf, attached, read and closed.

Objects are read once, checked against probes.lock.json, and exactly those bytes are opened
(bpf_object__open_mem), so no file swapped after the check can be loaded. Every libbpf
failure is turned into one line saying what to do (capability, tracefs, symbol).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..errors import CollectorEnvironmentError
from .events import (
    AUDIT_NAME_LEN,
    MAX_NODES,
    STAT_MAX,
    AuditTargetC,
    ExeKey,
    NodeCount,
    NodeKey,
    StellaConfig,
    UsdtSpecC,
)
from .features import CAPABILITY_HINT, TRACEFS_HINT, KernelFeatures
from .libbpf import (
    BPF_TRACE_FENTRY,
    BPF_TRACE_FEXIT,
    BPF_TRACE_UPROBE_MULTI,
    BpfError,
    Libbpf,
    RingBuffer,
)
from .lockfile import LOCK_NAME, PACKAGE_BPF_DIR, ProbeLock, load_lock, verified_bytes

DEFAULT_RING_SIZE: Final = 1 << 22  # 4 MiB; a power of two multiple of the page size
# Links closed at once when many are detached: each close waits for an RCU grace period
# (~60 ms here) inside the kernel, without the GIL, and concurrent waits share grace periods;
# measured by bench/agent.py (2,000 uprobe_multi links: ~0.5 s with 256, ~126 s one by one).
DETACH_THREADS: Final = 256

# The kernel's errnos of a failed uprobe attach, in words (524 has no libc name: ENOTSUPP is
# kernel-internal, and strerror says "Unknown error 524").
ENOTSUPP: Final = 524
_ATTACH_ERRNO_MEANINGS: Final[dict[int, str]] = {
    ENOTSUPP: "ENOTSUPP: the kernel cannot probe this function's first instruction (x86 uprobes "
    "refuse lock-prefixed and some other instructions)",
    errno.EINVAL: "EINVAL: the offset is not an instruction boundary of this binary",
    errno.ENOENT: "ENOENT: symbol or binary not found",
    errno.EEXIST: "EEXIST: a probe is already attached at this offset",
    errno.EBUSY: "EBUSY: the probe point is in use",
}


def attach_errno_meaning(number: int) -> str:
    return _ATTACH_ERRNO_MEANINGS.get(number) or f"{errno.errorcode.get(number, number)}: " + (
        os.strerror(number)
    )


class ProbeAttachError(CollectorEnvironmentError):
    """One probe could not be attached (not a permission problem): the collector records it
    with its errno and goes on with the others."""

    def __init__(self, message: str, errno_number: int) -> None:
        super().__init__(message)
        self.errno_number = errno_number


def explain(
    exc: BpfError, what: str, features: KernelFeatures | None = None
) -> CollectorEnvironmentError:
    """One clear line for a libbpf failure."""
    if exc.err in (errno.EPERM, errno.EACCES):
        return CollectorEnvironmentError(
            f"{what}: permission denied by the kernel; {CAPABILITY_HINT}"
        )
    if "tracepoint" in exc.call and features is not None and not features.has("tracefs"):
        return CollectorEnvironmentError(
            f"{what}: tracefs is not mounted at {features.tracefs_path}; {TRACEFS_HINT}"
        )
    last = next((line for line in reversed(exc.log) if line.strip()), "")
    hint = f" (libbpf: {last})" if last else ""
    return CollectorEnvironmentError(f"{what}: {exc.strerror}{hint}")


@dataclass
class LoadedObject:
    name: str
    handle: int
    buffer: ctypes.Array[ctypes.c_char]
    programs: dict[str, int]
    map_fds: dict[str, int]


@dataclass
class ProbeSet:
    """The lock and the directory whose objects it covers."""

    lock: ProbeLock
    directory: Path

    @classmethod
    def open(cls, probes_dir: str | Path | None = None) -> ProbeSet:
        directory = Path(probes_dir) if probes_dir is not None else PACKAGE_BPF_DIR
        return cls(load_lock(directory / LOCK_NAME), directory)

    def verified(self, name: str) -> bytes:
        return verified_bytes(self.lock, self.directory, name)


@dataclass(frozen=True)
class Link:
    """An attachment: a libbpf bpf_link pointer, or a raw link fd (uprobe_multi)."""

    handle: int
    raw_fd: bool = False


@dataclass
class ProbeRuntime:
    """Loaded objects of one collection session, their links and maps."""

    probe_set: ProbeSet
    features: KernelFeatures
    ring_size: int = DEFAULT_RING_SIZE
    lib: Libbpf = field(default_factory=Libbpf.get)
    objects: dict[str, LoadedObject] = field(default_factory=dict)
    ring: RingBuffer | None = None
    # (object, program) pairs loaded for uprobe_multi links.
    multi: set[tuple[str, str]] = field(default_factory=set)
    _detaching: list[threading.Thread] = field(default_factory=list)

    def load(
        self, wanted: dict[str, set[str]], config: StellaConfig, *, prefer_multi: bool = True
    ) -> None:
        """Load each object with only the wanted programs, then write its config.

        `prefer_multi`: attach uprobes through uprobe_multi links where the kernel has them
        (a first-hit detach stops trapping at once, and many close in parallel); perf-event
        uprobes otherwise.
        """
        if not self.features.has("btf"):
            raise CollectorEnvironmentError(
                "kernel BTF (/sys/kernel/btf/vmlinux) is missing: CO-RE probes cannot be "
                "relocated; use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
            )
        use_multi = prefer_multi and self.features.has("uprobe_multi")
        for name in sorted(wanted):
            data = self.probe_set.verified(name)
            try:
                handle, buffer = self.lib.open_mem(data, name.removesuffix(".bpf.o"))
            except BpfError as exc:
                raise explain(exc, f"opening probe object {name}", self.features) from exc
            programs = {self.lib.program_name(p): p for p in self.lib.programs(handle)}
            uprobe_programs = {
                p.name
                for p in self.probe_set.lock.objects[name].programs
                if p.attach_type in ("uprobe", "uretprobe", "usdt")
            }
            for program_name, program in programs.items():
                enabled = program_name in wanted[name]
                self.lib.lib.bpf_program__set_autoload(program, enabled)
                if enabled and use_multi and program_name in uprobe_programs:
                    self.lib.lib.bpf_program__set_expected_attach_type(
                        program, BPF_TRACE_UPROBE_MULTI
                    )
                    self.multi.add((name, program_name))
            maps = {self.lib.map_name(m): m for m in self.lib.maps(handle)}
            if "events" in maps:
                self.lib.lib.bpf_map__set_max_entries(maps["events"], self.ring_size)
            try:
                self.lib.check_int("bpf_object__load", self.lib.lib.bpf_object__load(handle))
            except BpfError as exc:
                self.lib.lib.bpf_object__close(handle)
                # A type the doctor's trial found refused (fentry under lockdown) explains the
                # failure better than a generic permission hint.
                refused = sorted(
                    {
                        p.attach_type
                        for p in self.probe_set.lock.objects[name].programs
                        if p.name in wanted[name] and not self.features.has(p.attach_type)
                    }
                    & set(self.features.attach_types)
                )
                if refused and self.features.has("bpf_syscall"):
                    reasons = "; ".join(
                        f"{t}: {self.features.attach_types[t].evidence()}" for t in refused
                    )
                    raise CollectorEnvironmentError(
                        f"loading probe object {name}: {exc.strerror}; {reasons}"
                    ) from exc
                raise explain(exc, f"loading probe object {name}", self.features) from exc
            fds = {map_name: int(self.lib.lib.bpf_map__fd(m)) for map_name, m in maps.items()}
            loaded = LoadedObject(name, handle, buffer, programs, fds)
            self.objects[name] = loaded
            self.lib.update(fds["config"], ctypes.c_uint32(0), config)

    def set_usdt_spec(self, obj: str, cookie: int, spec: UsdtSpecC) -> None:
        """Where the USDT probe attached with `cookie` finds its arguments."""
        self.lib.update(self.objects[obj].map_fds["usdt_specs"], ctypes.c_uint32(cookie), spec)

    def set_audit_event(self, obj: str, event: str, node: int, kind: int) -> None:
        """An audit event the function map names: its node and record kind (others are
        dropped in the kernel)."""
        key = ctypes.create_string_buffer(event.encode()[: AUDIT_NAME_LEN - 1], AUDIT_NAME_LEN)
        self.lib.update(
            self.objects[obj].map_fds["audit_names"], key, AuditTargetC(node=node, kind=kind)
        )

    def set_filters(self, pids: set[int], cgroup_ids: set[int]) -> None:
        one = ctypes.c_uint8(1)
        for obj in self.objects.values():
            for pid in pids:
                self.lib.update(obj.map_fds["filter_pids"], ctypes.c_uint32(pid), one)
            for cgroup_id in cgroup_ids:
                self.lib.update(obj.map_fds["filter_cgroups"], ctypes.c_uint64(cgroup_id), one)

    def set_scope(self, cgroup_ids: set[int], executables: set[tuple[int, int]]) -> None:
        """The workload's cgroups (whole subtrees) and executables (inode, kernel dev_t)."""
        one = ctypes.c_uint8(1)
        for obj in self.objects.values():
            for cgroup_id in cgroup_ids:
                self.lib.update(obj.map_fds["scope_cgroups"], ctypes.c_uint64(cgroup_id), one)
            for inode, device in executables:
                self.lib.update(obj.map_fds["scope_exes"], ExeKey(ino=inode, dev=device), one)

    def unset_scope(
        self, cgroup_ids: set[int], executables: set[tuple[int, int]] | None = None
    ) -> None:
        """Cgroups and executables no longer in scope (a container stopped: ids are reused)."""
        for obj in self.objects.values():
            for cgroup_id in cgroup_ids:
                self.lib.delete(obj.map_fds["scope_cgroups"], ctypes.c_uint64(cgroup_id))
            for inode, device in executables or ():
                self.lib.delete(obj.map_fds["scope_exes"], ExeKey(ino=inode, dev=device))

    def attach_uprobe(
        self,
        obj: str,
        program: str,
        binary: str,
        offset: int,
        cookie: int,
        *,
        retprobe: bool = False,
        ref_ctr_offset: int = 0,
    ) -> Link:
        """Attach one uprobe (a uretprobe with `retprobe`; a USDT probe with its semaphore's
        file offset in `ref_ctr_offset`); ProbeAttachError (with the errno) when this function
        cannot be probed, CollectorEnvironmentError when no probe can (permission)."""
        prog = self.objects[obj].programs[program]
        try:
            if (obj, program) in self.multi:
                return Link(
                    self.lib.attach_uprobe_multi(
                        prog, binary, offset, cookie, retprobe, ref_ctr_offset
                    ),
                    True,
                )
            return Link(
                self.lib.attach_uprobe(
                    prog,
                    binary,
                    offset,
                    cookie,
                    retprobe=retprobe,
                    ref_ctr_offset=ref_ctr_offset,
                )
            )
        except BpfError as exc:
            kind = "uretprobe" if retprobe else "usdt probe" if ref_ctr_offset else "uprobe"
            what = f"attaching {kind} at {binary}+{offset:#x}"
            if exc.err in (errno.EPERM, errno.EACCES):
                raise explain(exc, what, self.features) from exc
            raise ProbeAttachError(f"{what}: {attach_errno_meaning(exc.err)}", exc.err) from exc

    def attach_tracepoint(self, obj: str, program: str, tracepoint: str, cookie: int) -> Link:
        if not self.features.has("tracefs"):
            raise CollectorEnvironmentError(
                f"cannot attach tracepoint {tracepoint}: tracefs is not mounted at "
                f"{self.features.tracefs_path}; {TRACEFS_HINT}"
            )
        category, name = tracepoint.split("/", 1)
        prog = self.objects[obj].programs[program]
        try:
            return Link(self.lib.attach_tracepoint(prog, category, name, cookie))
        except BpfError as exc:
            raise explain(exc, f"attaching tracepoint {tracepoint}", self.features) from exc

    def attach_raw_tracepoint(self, obj: str, program: str, name: str | None, cookie: int) -> Link:
        """A raw tracepoint (by name) or a tp_btf program (name None: its BTF target)."""
        prog = self.objects[obj].programs[program]
        try:
            return Link(self.lib.attach_raw_tracepoint(prog, name, cookie), True)
        except BpfError as exc:
            what = f"attaching {'raw tracepoint ' + name if name else 'tp_btf ' + program}"
            raise explain(exc, what, self.features) from exc

    def attach_tracing(self, obj: str, program: str, attach_type: str, cookie: int) -> Link:
        """fentry/fexit (never executed on the development machine: its kernel refuses them)."""
        kind = BPF_TRACE_FENTRY if attach_type == "fentry" else BPF_TRACE_FEXIT
        try:
            return Link(
                self.lib.attach_tracing(self.objects[obj].programs[program], kind, cookie), True
            )
        except BpfError as exc:
            raise explain(exc, f"attaching {attach_type} {program}", self.features) from exc

    def attach_kprobe(self, obj: str, program: str, function: str, cookie: int) -> Link:
        try:
            return Link(
                self.lib.attach_kprobe(self.objects[obj].programs[program], function, cookie)
            )
        except BpfError as exc:
            raise explain(exc, f"attaching kprobe {function}", self.features) from exc

    def link_identity(self, link: Link) -> tuple[int, int] | None:
        """(link id, program id) the kernel gives the link's fd now; None when the fd is
        closed or names no BPF object. The same fd naming another id means the link was lost
        and its number reused (health.py compares with what it saw at attach)."""
        fd = link.handle if link.raw_fd else self.lib.link_fd(link.handle)
        ids = self.lib.object_ids(fd) if fd >= 0 else None
        return None if ids is None else (ids[1], ids[2])

    def program_id(self, obj: str, program: str) -> int | None:
        """The kernel's id of a loaded program (what its links must name)."""
        loaded = self.objects.get(obj)
        if loaded is None or program not in loaded.programs:
            return None
        ids = self.lib.object_ids(int(self.lib.lib.bpf_program__fd(loaded.programs[program])))
        return None if ids is None else ids[1]

    def abandon(self, link: Link) -> None:
        """Forget a link found lost without closing its fd: that number may be another
        file's by now (closing it would break whoever owns it)."""
        if not link.raw_fd:
            self.lib.forget_link(link.handle)

    def forget_first_seen(self, nodes: set[int]) -> None:
        """Coverage mode: the next hit of these nodes is a first hit again (a replaced
        binary's first call is evidence of the new build)."""
        for obj in self.objects.values():
            fd = obj.map_fds["first_seen"]
            for key in self.lib.keys(fd, NodeKey):
                assert isinstance(key, NodeKey)
                if key.node in nodes:
                    self.lib.delete(fd, key)

    def _release(self, link: Link) -> None:
        if link.raw_fd:
            os.close(link.handle)
        else:
            self.lib.destroy_link(link.handle)

    def detach(self, link: Link, wait: bool = True) -> None:
        """Detach; `wait=False` returns at once (the kernel's RCU wait runs in a thread, so one
        slow teardown does not delay the next first-hit detach)."""
        if wait:
            self._release(link)
            return
        thread = threading.Thread(target=self._release, args=(link,), daemon=True)
        thread.start()
        # Give the GIL away now: otherwise the new thread may wait a whole switch interval
        # (5 ms) before it reaches close(), and every call meanwhile still traps.
        time.sleep(0.0001)
        self._detaching = [t for t in self._detaching if t.is_alive()]
        self._detaching.append(thread)

    def detach_many(self, links: Iterable[Link]) -> None:
        """Detach many links at once: closed from a thread pool, so their RCU waits overlap
        instead of adding up (a uprobe_multi close returns once its own grace period ends)."""
        pending = list(links)
        if len(pending) <= 1:
            for link in pending:
                self._release(link)
            return
        with ThreadPoolExecutor(min(DETACH_THREADS, len(pending))) as pool:
            for _ in pool.map(self._release, pending):
                pass

    def wait_detached(self) -> None:
        for thread in self._detaching:
            thread.join()
        self._detaching.clear()

    def open_ring(self, callback: Callable[[int, int], int]) -> None:
        for obj in self.objects.values():
            fd = obj.map_fds["events"]
            if self.ring is None:
                self.ring = self.lib.ring_buffer(fd, callback)
            else:
                self.ring.add(fd)

    def poll(self, timeout_ms: int) -> int:
        return self.ring.poll(timeout_ms) if self.ring is not None else 0

    def _percpu_sum(self, fd: int, index: int) -> int:
        values = (ctypes.c_uint64 * self.lib.num_cpus)()
        if not self.lib.lookup(fd, ctypes.c_uint32(index), values):
            return 0
        return sum(values)

    def stats(self) -> list[int]:
        """The per-CPU stats counters (events.STAT_*), summed over CPUs and objects."""
        totals = [0] * STAT_MAX
        for obj in self.objects.values():
            for index in range(STAT_MAX):
                totals[index] += self._percpu_sum(obj.map_fds["stats"], index)
        return totals

    def node_hits(self, obj: str, node: int) -> int:
        """How often the node's probe fired in the kernel (before filters and modes)."""
        if not 0 <= node < MAX_NODES:
            return 0
        return self._percpu_sum(self.objects[obj].map_fds["node_hits"], node)

    def counts(self) -> Iterator[tuple[int, int, int, int, bytes]]:
        """(node, pid, cgroup id, cumulative count, comm) for every in-kernel counter."""
        for obj in self.objects.values():
            fd = obj.map_fds["counts"]
            for key in self.lib.keys(fd, NodeKey):
                assert isinstance(key, NodeKey)
                values = (NodeCount * self.lib.num_cpus)()  # one slot per possible CPU
                if self.lib.lookup(fd, key, values):
                    total = sum(int(v.count) for v in values)
                    comm = next((bytes(v.comm) for v in values if v.count), b"")
                    yield key.node, key.pid, key.cgroup_id, total, comm

    def clear_first_seen(self) -> None:
        for obj in self.objects.values():
            fd = obj.map_fds["first_seen"]
            for key in self.lib.keys(fd, NodeKey):
                self.lib.delete(fd, key)

    def close(self) -> None:
        self.wait_detached()
        if self.ring is not None:
            self.ring.free()
            self.ring = None
        for obj in self.objects.values():
            self.lib.lib.bpf_object__close(obj.handle)
        self.objects.clear()
