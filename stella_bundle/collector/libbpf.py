"""A small typed ctypes binding over Debian's libbpf.so.1 (open, load, attach, maps, ring buffer).

Only the calls the collector needs. libbpf >= 1.0 returns NULL and sets errno for pointer
results and -errno for int results; every failure becomes a BpfError carrying the errno and the
libbpf log lines printed while the call ran, so the caller can explain it in one line.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import os
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

from ..errors import UnsupportedError

LIBBPF_SONAME: Final = "libbpf.so.1"

# Program types used by feature probes (kernel UAPI enum bpf_prog_type).
BPF_PROG_TYPE_KPROBE: Final = 2
BPF_PROG_TYPE_TRACEPOINT: Final = 5
BPF_PROG_TYPE_TRACING: Final = 26
# Map types (enum bpf_map_type).
BPF_MAP_TYPE_RINGBUF: Final = 27
# Helper ids (enum bpf_func_id).
BPF_FUNC_get_attach_cookie: Final = 174
# bpf() commands and attach types used without libbpf support (libbpf 1.1 predates them).
SYS_BPF_X86_64: Final = 321
BPF_RAW_TRACEPOINT_OPEN: Final = 17
BPF_LINK_CREATE: Final = 28
BPF_OBJ_GET_INFO_BY_FD: Final = 15
BPF_TRACE_FENTRY: Final = 24
BPF_TRACE_FEXIT: Final = 25
BPF_TRACE_UPROBE_MULTI: Final = 48


class BpfError(OSError):
    """A libbpf call failed; `log` holds what libbpf printed meanwhile."""

    def __init__(self, call: str, err: int, log: list[str]) -> None:
        self.call = call
        self.err = abs(err)
        self.log = log
        detail = os.strerror(self.err) if self.err else "unknown error"
        super().__init__(self.err, f"{call}: {detail}")


class _ObjectOpenOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_attach_prog_fd", ctypes.c_uint32),
        ("kconfig", ctypes.c_char_p),
        ("btf_custom_path", ctypes.c_char_p),
        ("kernel_log_buf", ctypes.c_char_p),
        ("kernel_log_size", ctypes.c_size_t),
        ("kernel_log_level", ctypes.c_uint32),
    ]


class _UprobeOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("ref_ctr_offset", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("retprobe", ctypes.c_bool),
        ("func_name", ctypes.c_char_p),
    ]


class _KprobeOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("offset", ctypes.c_size_t),
        ("retprobe", ctypes.c_bool),
    ]


class _TracepointOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
    ]


_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
SAMPLE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)

_P = ctypes.c_void_p
_SIGNATURES: Final[dict[str, tuple[Any, list[Any]]]] = {
    "libbpf_set_print": (_P, [_PRINT_FN]),
    "bpf_object__open_mem": (_P, [_P, ctypes.c_size_t, ctypes.POINTER(_ObjectOpenOpts)]),
    "bpf_object__load": (ctypes.c_int, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__find_program_by_name": (_P, [_P, ctypes.c_char_p]),
    "bpf_object__find_map_by_name": (_P, [_P, ctypes.c_char_p]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_program__name": (ctypes.c_char_p, [_P]),
    "bpf_program__section_name": (ctypes.c_char_p, [_P]),
    "bpf_program__set_autoload": (ctypes.c_int, [_P, ctypes.c_bool]),
    "bpf_program__set_expected_attach_type": (ctypes.c_int, [_P, ctypes.c_int]),
    "bpf_program__fd": (ctypes.c_int, [_P]),
    "bpf_program__attach_uprobe_opts": (
        _P,
        [_P, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(_UprobeOpts)],
    ),
    "bpf_program__attach_kprobe_opts": (
        _P,
        [_P, ctypes.c_char_p, ctypes.POINTER(_KprobeOpts)],
    ),
    "bpf_program__attach_tracepoint_opts": (
        _P,
        [_P, ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(_TracepointOpts)],
    ),
    "bpf_link__destroy": (ctypes.c_int, [_P]),
    "bpf_link__fd": (ctypes.c_int, [_P]),
    "bpf_link__disconnect": (None, [_P]),
    "bpf_map__name": (ctypes.c_char_p, [_P]),
    "bpf_map__fd": (ctypes.c_int, [_P]),
    "bpf_map__set_max_entries": (ctypes.c_int, [_P, ctypes.c_uint32]),
    "bpf_map_lookup_elem": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "bpf_map_update_elem": (ctypes.c_int, [ctypes.c_int, _P, _P, ctypes.c_uint64]),
    "bpf_map_delete_elem": (ctypes.c_int, [ctypes.c_int, _P]),
    "bpf_map_get_next_key": (ctypes.c_int, [ctypes.c_int, _P, _P]),
    "ring_buffer__new": (_P, [ctypes.c_int, SAMPLE_FN, _P, _P]),
    "ring_buffer__add": (ctypes.c_int, [_P, ctypes.c_int, SAMPLE_FN, _P]),
    "ring_buffer__poll": (ctypes.c_int, [_P, ctypes.c_int]),
    "ring_buffer__consume": (ctypes.c_int, [_P]),
    "ring_buffer__free": (None, [_P]),
    "libbpf_num_possible_cpus": (ctypes.c_int, []),
    "libbpf_probe_bpf_prog_type": (ctypes.c_int, [ctypes.c_int, _P]),
    "libbpf_probe_bpf_map_type": (ctypes.c_int, [ctypes.c_int, _P]),
    "libbpf_probe_bpf_helper": (ctypes.c_int, [ctypes.c_int, ctypes.c_int, _P]),
}


class Libbpf:
    """The loaded library with typed signatures and a captured log."""

    _instance: Libbpf | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL(LIBBPF_SONAME, use_errno=True)
        except OSError as exc:
            raise UnsupportedError(
                f"cannot load {LIBBPF_SONAME} ({exc}); install Debian's libbpf1 package"
            ) from exc
        for name, (restype, argtypes) in _SIGNATURES.items():
            func = getattr(self.lib, name)
            func.restype = restype
            func.argtypes = argtypes
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._vsnprintf = libc.vsnprintf
        self._vsnprintf.restype = ctypes.c_int
        self._vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, _P]
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self.log: list[str] = []
        self.verbose = False
        self._print_cb = _PRINT_FN(self._on_print)
        self.lib.libbpf_set_print(self._print_cb)
        self.num_cpus = max(1, int(self.lib.libbpf_num_possible_cpus()))

    @classmethod
    def get(cls) -> Libbpf:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _on_print(self, level: int, fmt: bytes | None, args: int | None) -> int:
        if fmt is None:
            return 0
        buf = ctypes.create_string_buffer(2048)
        self._vsnprintf(buf, len(buf), fmt, args)
        text = buf.value.decode("utf-8", "replace").rstrip()
        # Debug output is mostly noise; warnings and info explain failures.
        if level < 2 or self.verbose:
            self.log.append(text)
            del self.log[:-200]
        return 0

    def take_log(self) -> list[str]:
        lines, self.log = self.log, []
        return lines

    def check_ptr(self, call: str, value: int | None) -> int:
        if not value:
            raise BpfError(call, ctypes.get_errno() or errno_mod.EINVAL, self.take_log())
        return value

    def check_int(self, call: str, value: int) -> int:
        if value < 0:
            raise BpfError(call, value, self.take_log())
        return value

    # Objects ---------------------------------------------------------------------------------
    def open_mem(self, data: bytes, name: str) -> tuple[int, ctypes.Array[ctypes.c_char]]:
        """Open an object from bytes; the returned buffer must outlive the object."""
        buffer = ctypes.create_string_buffer(data, len(data))
        opts = _ObjectOpenOpts(sz=ctypes.sizeof(_ObjectOpenOpts), object_name=name.encode())
        self.take_log()
        obj = self.lib.bpf_object__open_mem(buffer, len(data), ctypes.byref(opts))
        return self.check_ptr(f"open {name}", obj), buffer

    def programs(self, obj: int) -> Iterator[int]:
        prog = self.lib.bpf_object__next_program(obj, None)
        while prog:
            yield prog
            prog = self.lib.bpf_object__next_program(obj, prog)

    def maps(self, obj: int) -> Iterator[int]:
        m = self.lib.bpf_object__next_map(obj, None)
        while m:
            yield m
            m = self.lib.bpf_object__next_map(obj, m)

    def program_name(self, prog: int) -> str:
        return (self.lib.bpf_program__name(prog) or b"").decode()

    def map_name(self, m: int) -> str:
        return (self.lib.bpf_map__name(m) or b"").decode()

    # Attach ----------------------------------------------------------------------------------
    def attach_uprobe(
        self,
        prog: int,
        binary: str,
        offset: int,
        cookie: int,
        pid: int = -1,
        retprobe: bool = False,
        ref_ctr_offset: int = 0,
    ) -> int:
        """A perf-event uprobe (or uretprobe); `ref_ctr_offset`: the file offset of a USDT
        semaphore the kernel increments in every process while the probe is attached."""
        opts = _UprobeOpts(
            sz=ctypes.sizeof(_UprobeOpts),
            ref_ctr_offset=ref_ctr_offset,
            bpf_cookie=cookie,
            retprobe=retprobe,
            func_name=None,
        )
        self.take_log()
        link = self.lib.bpf_program__attach_uprobe_opts(
            prog, pid, binary.encode(), offset, ctypes.byref(opts)
        )
        return self.check_ptr(f"attach uprobe {binary}+{offset:#x}", link)

    def attach_uprobe_multi(
        self,
        prog: int,
        binary: str,
        offset: int,
        cookie: int,
        retprobe: bool = False,
        ref_ctr_offset: int = 0,
    ) -> int:
        """A BPF uprobe_multi link (kernel >= 6.6) for one offset; returns the link fd.

        Closing a uprobe_multi link removes the breakpoint before waiting for RCU, unlike the
        perf-event uprobe link, which keeps trapping for tens of milliseconds while it is torn
        down. libbpf 1.1 has no API for it, so the bpf(BPF_LINK_CREATE) call is made here.
        """
        path = ctypes.create_string_buffer(binary.encode())
        offsets = (ctypes.c_uint64 * 1)(offset)
        ref_ctr_offsets = (ctypes.c_uint64 * 1)(ref_ctr_offset)
        cookies = (ctypes.c_uint64 * 1)(cookie)
        attr = ctypes.create_string_buffer(64)
        prog_fd = int(self.lib.bpf_program__fd(prog))
        struct.pack_into("IIII", attr, 0, prog_fd, 0, BPF_TRACE_UPROBE_MULTI, 0)
        struct.pack_into(
            "QQQQIII",
            attr,
            16,
            ctypes.addressof(path),
            ctypes.addressof(offsets),
            ctypes.addressof(ref_ctr_offsets) if ref_ctr_offset else 0,
            ctypes.addressof(cookies),
            1,
            1 if retprobe else 0,  # BPF_F_UPROBE_MULTI_RETURN
            0,
        )
        return self._bpf(BPF_LINK_CREATE, attr, f"attach uprobe_multi {binary}+{offset:#x}")

    def _bpf(self, command: int, attr: ctypes.Array[ctypes.c_char], call: str) -> int:
        """The bpf() syscall for commands libbpf 1.1 cannot issue; returns the new fd."""
        ctypes.set_errno(0)
        fd = int(self._syscall(SYS_BPF_X86_64, command, attr, len(attr)))
        if fd < 0:
            raise BpfError(call, ctypes.get_errno(), self.take_log())
        return fd

    def attach_raw_tracepoint(self, prog: int, name: str | None, cookie: int) -> int:
        """A raw tracepoint link with a BPF cookie (kernel >= 6.10; libbpf 1.1 cannot pass the
        cookie); `name` None for a tp_btf program, whose target is its BTF attach id. Returns
        the link fd."""
        label = f"attach raw_tracepoint {name}" if name else "attach tp_btf"
        buf = ctypes.create_string_buffer(name.encode()) if name else None
        attr = ctypes.create_string_buffer(24)
        prog_fd = int(self.lib.bpf_program__fd(prog))
        struct.pack_into("QIIQ", attr, 0, ctypes.addressof(buf) if buf else 0, prog_fd, 0, cookie)
        return self._bpf(BPF_RAW_TRACEPOINT_OPEN, attr, label)

    def attach_tracing(self, prog: int, attach_type: int, cookie: int) -> int:
        """An fentry/fexit link with a BPF cookie through BPF_LINK_CREATE (the target is the
        program's BTF attach id, resolved by libbpf at load). Returns the link fd."""
        attr = ctypes.create_string_buffer(32)
        prog_fd = int(self.lib.bpf_program__fd(prog))
        struct.pack_into("IIIIIIQ", attr, 0, prog_fd, 0, attach_type, 0, 0, 0, cookie)
        return self._bpf(BPF_LINK_CREATE, attr, "attach tracing")

    def attach_kprobe(self, prog: int, function: str, cookie: int, retprobe: bool = False) -> int:
        opts = _KprobeOpts(sz=ctypes.sizeof(_KprobeOpts), bpf_cookie=cookie, retprobe=retprobe)
        self.take_log()
        link = self.lib.bpf_program__attach_kprobe_opts(prog, function.encode(), ctypes.byref(opts))
        return self.check_ptr(f"attach kprobe {function}", link)

    def attach_tracepoint(self, prog: int, category: str, name: str, cookie: int) -> int:
        opts = _TracepointOpts(sz=ctypes.sizeof(_TracepointOpts), bpf_cookie=cookie)
        self.take_log()
        link = self.lib.bpf_program__attach_tracepoint_opts(
            prog, category.encode(), name.encode(), ctypes.byref(opts)
        )
        return self.check_ptr(f"attach tracepoint {category}:{name}", link)

    def destroy_link(self, link: int) -> None:
        self.lib.bpf_link__destroy(link)

    def link_fd(self, link: int) -> int:
        return int(self.lib.bpf_link__fd(link))

    def forget_link(self, link: int) -> None:
        """Free libbpf's link object without closing its fds (their numbers may belong to
        someone else by now: a link found lost is never closed again)."""
        self.lib.bpf_link__disconnect(link)
        self.lib.bpf_link__destroy(link)

    def object_ids(self, fd: int) -> tuple[int, int, int] | None:
        """The first three u32 of the kernel's info about the BPF object behind `fd` (for a
        link: type, link id, program id; for a program: type, program id, ...); None when
        `fd` is closed or names no BPF object (BPF_OBJ_GET_INFO_BY_FD, no libbpf state)."""
        info = ctypes.create_string_buffer(16)
        attr = ctypes.create_string_buffer(16)
        struct.pack_into("IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
        ctypes.set_errno(0)
        if int(self._syscall(SYS_BPF_X86_64, BPF_OBJ_GET_INFO_BY_FD, attr, len(attr))) < 0:
            return None
        kind, first, second = struct.unpack_from("III", info, 0)
        return kind, first, second

    # Maps ------------------------------------------------------------------------------------
    def lookup(self, fd: int, key: ctypes._CData, value: ctypes._CData) -> bool:
        rc = self.lib.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))
        if rc == 0:
            return True
        if -rc == errno_mod.ENOENT or ctypes.get_errno() == errno_mod.ENOENT:
            return False
        raise BpfError("bpf_map_lookup_elem", rc, self.take_log())

    def update(self, fd: int, key: ctypes._CData, value: ctypes._CData, flags: int = 0) -> None:
        rc = self.lib.bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), flags)
        self.check_int("bpf_map_update_elem", rc)

    def delete(self, fd: int, key: ctypes._CData) -> None:
        self.lib.bpf_map_delete_elem(fd, ctypes.byref(key))

    def keys(self, fd: int, key_type: type[ctypes._CData]) -> list[ctypes._CData]:
        """All keys of a hash map (a snapshot; entries may change meanwhile)."""
        result: list[ctypes._CData] = []
        current = key_type()
        rc = self.lib.bpf_map_get_next_key(fd, None, ctypes.byref(current))
        while rc == 0:
            result.append(current)
            nxt = key_type()
            rc = self.lib.bpf_map_get_next_key(fd, ctypes.byref(current), ctypes.byref(nxt))
            current = nxt
        return result

    # Ring buffer -----------------------------------------------------------------------------
    def ring_buffer(self, map_fd: int, callback: Callable[[int, int], int]) -> RingBuffer:
        return RingBuffer(self, map_fd, callback)


class RingBuffer:
    """libbpf's ring_buffer manager over one or more BPF_MAP_TYPE_RINGBUF maps."""

    def __init__(self, lib: Libbpf, map_fd: int, callback: Callable[[int, int], int]) -> None:
        self._lib = lib

        def on_sample(_ctx: int | None, data: int | None, size: int) -> int:
            # A negative return (-EAGAIN) makes libbpf stop this poll round and return, so a
            # sustained flood cannot keep the caller inside ring_buffer__poll forever.
            return callback(data or 0, size)

        self._cb = SAMPLE_FN(on_sample)
        lib.take_log()
        self._rb = lib.check_ptr(
            "ring_buffer__new", lib.lib.ring_buffer__new(map_fd, self._cb, None, None)
        )

    def add(self, map_fd: int) -> None:
        self._lib.check_int(
            "ring_buffer__add", self._lib.lib.ring_buffer__add(self._rb, map_fd, self._cb, None)
        )

    def poll(self, timeout_ms: int) -> int:
        rc = int(self._lib.lib.ring_buffer__poll(self._rb, timeout_ms))
        if rc < 0 and -rc not in (errno_mod.EINTR, errno_mod.EAGAIN):
            raise BpfError("ring_buffer__poll", rc, self._lib.take_log())
        return max(rc, 0)

    def consume(self) -> int:
        return max(int(self._lib.lib.ring_buffer__consume(self._rb)), 0)

    def free(self) -> None:
        if self._rb:
            self._lib.lib.ring_buffer__free(self._rb)
            self._rb = 0
