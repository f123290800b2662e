"""Structure-aware mutations of a tar stream, as hypothesis strategies.

A tar is held as a list of entries (a 512-byte header and the content bytes); mutations rewrite
header fields (the checksum recomputed, so they reach the parser behind it), insert pax and GNU
long-name records, drop, duplicate and swap entries, alter contents, change the end of the archive,
and finally flip, cut and insert bytes of the serialised tar and of its gzip stream.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from typing import Any

from hypothesis import strategies as st

BLOCK = 512

# (offset, width) of each ustar header field.
FIELDS: dict[str, tuple[int, int]] = {
    "name": (0, 100),
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "typeflag": (156, 1),
    "linkname": (157, 100),
    "magic": (257, 6),
    "version": (263, 2),
    "uname": (265, 32),
    "devmajor": (329, 8),
    "prefix": (345, 155),
}
NUMERIC = ("mode", "uid", "gid", "size", "mtime", "devmajor")

Entry = tuple[bytes, bytes]  # header block, content

# --- parsing and writing -----------------------------------------------------------------------


def split_tar(raw: bytes) -> list[Entry]:
    """The entries of a well-formed tar (seeds only), up to the end marker."""
    entries: list[Entry] = []
    position = 0
    while position + BLOCK <= len(raw):
        header = raw[position : position + BLOCK]
        if header == b"\0" * BLOCK:
            break
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        body = raw[position + BLOCK : position + BLOCK + size]
        entries.append((header, body))
        position += BLOCK + size + (-size) % BLOCK
    return entries


def with_checksum(header: bytes) -> bytes:
    block = bytearray(header[:BLOCK].ljust(BLOCK, b"\0"))
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % (sum(block) & 0o777777)
    return bytes(block)


def set_field(header: bytes, field: str, value: bytes, fix_checksum: bool = True) -> bytes:
    offset, width = FIELDS[field]
    block = bytearray(header)
    block[offset : offset + width] = value[:width].ljust(width, b"\0")
    return with_checksum(bytes(block)) if fix_checksum else bytes(block)


def pax_records(records: list[tuple[bytes, bytes]], skew: int = 0) -> bytes:
    """`<length> <key>=<value>\\n` records, the length self-inclusive (off by `skew` if asked)."""
    out = []
    for key, value in records:
        body = b" " + key + b"=" + value + b"\n"
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length += 1
        out.append(str(max(length + skew, 0)).encode() + body)
    return b"".join(out)


def extension_entry(typeflag: bytes, body: bytes, name: bytes = b"././@PaxHeader") -> Entry:
    header = bytearray(BLOCK)
    header[0:100] = name[:100].ljust(100, b"\0")
    header[100:108] = b"0000644\0"
    header[124:136] = b"%011o\0" % len(body)
    header[136:148] = b"%011o\0" % 0
    header[156:157] = typeflag
    header[257:263] = b"ustar\0"
    header[263:265] = b"00"
    return with_checksum(bytes(header)), body


def join_tar(entries: list[Entry], end: str = "marker") -> bytes:
    out = io.BytesIO()
    for header, body in entries:
        out.write(header)
        out.write(body)
        out.write(b"\0" * ((-len(body)) % BLOCK))
    if end == "marker":
        out.write(b"\0" * 2 * BLOCK)
    elif end == "one-block":
        out.write(b"\0" * BLOCK)
    elif end == "zeros":
        out.write(b"\0" * 20 * BLOCK)
    elif end == "garbage":
        out.write(b"\0" * 2 * BLOCK + b"trailing bytes after the end marker")
    return out.getvalue()  # "none": no end marker at all


# --- seeds -------------------------------------------------------------------------------------


def _tar_with(format_: int, members: list[tuple[str, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format_) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_763_700_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def small_seeds() -> list[bytes]:
    """Uncompressed tars exercising pax, GNU long names, ustar prefixes and directories."""
    long_name = "evidence/" + "d" * 60 + "/" + "f" * 70 + ".ndjson.zst"
    return [
        _tar_with(
            tarfile.USTAR_FORMAT, [("manifest.json", b'{"a": 1}\n'), ("b/c.txt", b"x" * 700)]
        ),
        _tar_with(
            tarfile.PAX_FORMAT,
            [
                ("dir", None),
                (long_name, b"\x28\xb5\x2f\xfd" + b"z" * 40),
                ("caf\u00e9.json", b"{}"),
            ],
        ),
        _tar_with(tarfile.GNU_FORMAT, [(long_name, b"data" * 200), ("short", b"")]),
    ]


# --- strategies --------------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(
        [
            b"../escape",
            b"/etc/passwd",
            b"a/./b",
            b"a//b",
            b"a/b/",
            b".",
            b"",
            b"manifest.json",
            b"manifest.dsse.json",
            b"evidence/host-a/0000000001.ndjson.zst",
            b"caf\xc3\xa9",  # NFC
            b"cafe\xcc\x81",  # NFD: the same name, decomposed
            b"a\\b",
            b"x\x01y",
            b"\xff\xfe",
            b"A" * 100,
        ]
    ),
    st.text(min_size=0, max_size=120).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.binary(max_size=100),
)

NUMBERS = st.one_of(
    st.integers(min_value=0, max_value=8**11 - 1).map(lambda n: b"%011o\0" % n),
    st.sampled_from([0, 1, 511, 512, 513, 2**31, 2**33, 8**11 - 1]).map(lambda n: b"%011o\0" % n),
    # GNU base-256: positive and negative
    st.integers(min_value=0, max_value=2**88 - 1).map(lambda n: b"\x80" + n.to_bytes(11, "big")),
    st.binary(min_size=11, max_size=11).map(lambda b: b"\xff" + b),
    st.sampled_from([b"", b" " * 12, b"-1", b"0o17", b"1_0", b"8", b"9" * 12, b"+7", b" 7 "]),
    st.binary(max_size=12),
)

TYPEFLAGS = st.sampled_from(list(b"0123456789xgLKSVMDAZ\0 ")).map(lambda b: bytes([b]))

FIELD_VALUES: dict[str, Any] = {
    "name": NAMES,
    "linkname": NAMES,
    "prefix": NAMES,
    "typeflag": TYPEFLAGS,
    "magic": st.sampled_from([b"ustar\0", b"ustar ", b"\0" * 6, b"USTAR\0"])
    | st.binary(max_size=6),
    "version": st.sampled_from([b"00", b" \0"]) | st.binary(max_size=2),
    "uname": st.binary(max_size=32),
}

PAX_KEYS = st.sampled_from(
    [b"path", b"size", b"linkpath", b"mtime", b"uid", b"hdrcharset", b"GNU.sparse.size", b"comment"]
) | st.binary(max_size=12)
PAX_VALUES = st.one_of(
    st.sampled_from(
        [
            b"-1",
            b"-0",
            b"0",
            b"12",
            b" 12",
            b"1_000",
            b"0x10",
            b"1e3",
            "\uff11\uff12".encode(),  # fullwidth digits, which int() accepts
            b"99999999999999999999999",
            b"9" * 5000,  # more digits than int() converts by default
            b"../../etc/passwd",
            b"/abs",
            b"cafe\xcc\x81",
            b"\xff",
            b"",
        ]
    ),
    NAMES,
)

POSITIONS = st.integers(min_value=0, max_value=2**20)
INDEXES = st.integers(min_value=0, max_value=64)

BYTE_OPS = st.one_of(
    st.tuples(st.just("flip"), POSITIONS, st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("truncate"), POSITIONS),
    st.tuples(st.just("insert"), POSITIONS, st.binary(min_size=1, max_size=600)),
    st.tuples(st.just("delete"), POSITIONS, st.integers(min_value=1, max_value=1100)),
)


@st.composite
def field_ops(draw: Any) -> tuple[Any, ...]:
    field = draw(st.sampled_from(sorted(FIELDS)))
    value = draw(NUMBERS if field in NUMERIC else FIELD_VALUES[field])
    # Mostly with the checksum recomputed: a bad checksum stops the parser at the first check.
    fix = draw(st.integers(min_value=0, max_value=9)) != 0
    return ("field", draw(INDEXES), field, value, fix)


ENTRY_OPS = st.one_of(
    field_ops(),
    st.tuples(
        st.just("pax"),
        INDEXES,
        st.lists(st.tuples(PAX_KEYS, PAX_VALUES), min_size=1, max_size=3),
        st.sampled_from([0, 0, 0, -1, 1, -100, 10_000]),
        st.sampled_from([b"x", b"g"]),
    ),
    st.tuples(st.just("gnu-long"), INDEXES, st.sampled_from([b"L", b"K"]), NAMES),
    st.tuples(st.just("drop"), INDEXES),
    st.tuples(st.just("dup"), INDEXES),
    st.tuples(st.just("swap"), INDEXES, INDEXES),
    st.tuples(st.just("body"), INDEXES, BYTE_OPS),
)

END = st.sampled_from(["marker", "marker", "marker", "none", "one-block", "zeros", "garbage"])


def apply_bytes(data: bytes, op: tuple[Any, ...]) -> bytes:
    if not data and op[0] != "insert":
        return data
    position = op[1] % (len(data) + 1)
    if op[0] == "flip":
        position = op[1] % len(data)
        return data[:position] + bytes([data[position] ^ op[2]]) + data[position + 1 :]
    if op[0] == "truncate":
        return data[:position]
    if op[0] == "insert":
        return data[:position] + op[2] + data[position:]
    return data[:position] + data[position + op[2] :]  # delete


def apply_entry_op(entries: list[Entry], op: tuple[Any, ...]) -> list[Entry]:
    if not entries:
        return entries
    entries = list(entries)
    index = op[1] % len(entries)
    kind = op[0]
    if kind == "field":
        header, body = entries[index]
        entries[index] = (set_field(header, op[2], op[3], op[4]), body)
    elif kind == "pax":
        entries.insert(index, extension_entry(op[4], pax_records(op[2], op[3])))
    elif kind == "gnu-long":
        entries.insert(index, extension_entry(op[2], op[3] + b"\0", b"././@LongLink"))
    elif kind == "drop":
        del entries[index]
    elif kind == "dup":
        entries.insert(index, entries[index])
    elif kind == "swap":
        other = op[2] % len(entries)
        entries[index], entries[other] = entries[other], entries[index]
    elif kind == "body":
        header, body = entries[index]
        entries[index] = (header, apply_bytes(body, op[2]))
    return entries


TarRecipe = tuple[list[tuple[Any, ...]], str, list[tuple[Any, ...]], list[tuple[Any, ...]]]

NO_OPS: Any = st.just([])
RECIPES: Any = st.tuples(
    st.lists(ENTRY_OPS, max_size=4),
    END,
    NO_OPS | st.lists(BYTE_OPS, min_size=1, max_size=2),
    # Bytes of the gzip stream itself, in one example of four (most give a CRC or zlib error).
    NO_OPS | NO_OPS | NO_OPS | st.lists(BYTE_OPS, min_size=1, max_size=1),
)


def mutate_tar(raw: bytes, recipe: TarRecipe) -> bytes:
    """Apply a recipe to an uncompressed seed tar; return the gzip-compressed result."""
    entry_ops, end, tar_ops, gzip_ops = recipe
    entries = split_tar(raw)
    for op in entry_ops:
        entries = apply_entry_op(entries, op)
    data = join_tar(entries, end)
    for op in tar_ops:
        data = apply_bytes(data, op)
    compressed = gzip.compress(data, compresslevel=1, mtime=0)
    for op in gzip_ops:
        compressed = apply_bytes(compressed, op)
    return compressed
