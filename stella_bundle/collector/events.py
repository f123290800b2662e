"""The kernel event record (mirror of probes/include/stella_event.h) and its constants."""

from __future__ import annotations

import ctypes
import ipaddress
from typing import Final

COMM_LEN: Final = 16
PATH_LEN: Final = 256
MAX_NODES: Final = 4096

MODE_COVERAGE: Final = 0
MODE_COUNT: Final = 1
MODE_TRACE: Final = 2
MODES: Final = {"coverage": MODE_COVERAGE, "count": MODE_COUNT, "trace": MODE_TRACE}

KIND_FUNCTION: Final = 0
KIND_FILE: Final = 1
KIND_EXEC: Final = 2
KIND_NET: Final = 3
KIND_TLS: Final = 4
KIND_CGROUP: Final = 5  # container lifecycle (cgroup.bpf.o), never a record
CGROUP_COOKIE: Final = 0xFFFFFFFF
KIND_NAMES: Final = {
    KIND_FUNCTION: "function",
    KIND_FILE: "file",
    KIND_EXEC: "exec",
    KIND_NET: "net",
    KIND_TLS: "tls",
}

STAT_RINGBUF_DROPPED: Final = 0
STAT_SAMPLED_OUT: Final = 1
STAT_FILTERED_OUT: Final = 2
STAT_COUNTER_FULL: Final = 3
STAT_HITS: Final = 4
STAT_MAX: Final = 8

SCOPE_CGROUP: Final = 1
SCOPE_EXE: Final = 2
CGROUP_LEVELS: Final = 16

AF_INET: Final = 2
AF_INET6: Final = 10

TCP_STATES: Final = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}


class StellaConfig(ctypes.Structure):
    _fields_ = [
        ("mode", ctypes.c_uint32),
        ("sample_ppm", ctypes.c_uint32),
        ("filter_enabled", ctypes.c_uint32),
        ("scope", ctypes.c_uint32),
    ]


class ExeKey(ctypes.Structure):
    """struct stella_exe_key: an executable by inode and the kernel's dev_t."""

    _fields_ = [
        ("ino", ctypes.c_uint64),
        ("dev", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class StellaEvent(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("cookie", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("kind", ctypes.c_uint32),
        ("aux", ctypes.c_uint32),
        ("family", ctypes.c_uint16),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("aux2", ctypes.c_uint16),
        ("saddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
        ("comm", ctypes.c_char * COMM_LEN),
        ("path", ctypes.c_char * PATH_LEN),
    ]


class NodeKey(ctypes.Structure):
    _fields_ = [
        ("node", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
    ]


class NodeCount(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_uint64),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


EVENT_SIZE: Final = ctypes.sizeof(StellaEvent)


def decode_text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def format_address(family: int, raw: bytes) -> str | None:
    if family == AF_INET:
        return str(ipaddress.IPv4Address(bytes(raw[:4])))
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(bytes(raw[:16])))
    return None


# --- USDT (mirror of probes/usdt.bpf.c) ----------------------------------------------------

AUDIT_NAME_LEN: Final = 64
PY_TEXT_LEN: Final = 128
PY_OBJS: Final = 5


class UsdtArgC(ctypes.Structure):
    _fields_ = [
        ("value", ctypes.c_int64),
        ("reg_off", ctypes.c_uint32),
        ("kind", ctypes.c_uint32),
    ]


class UsdtSpecC(ctypes.Structure):
    _fields_ = [
        ("args", UsdtArgC * 2),
        ("py_str_data", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class AuditTargetC(ctypes.Structure):
    _fields_ = [("node", ctypes.c_uint32), ("kind", ctypes.c_uint32)]


class PyObjC(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_char * 16),
        ("head", ctypes.c_uint8 * 24),
        ("text", ctypes.c_char * PY_TEXT_LEN),
    ]


class AuditTail(ctypes.Structure):
    """What follows the struct stella_event header in an audit event."""

    _fields_ = [
        ("name", ctypes.c_char * AUDIT_NAME_LEN),
        ("count", ctypes.c_int64),
        ("obj", PyObjC * PY_OBJS),
    ]
