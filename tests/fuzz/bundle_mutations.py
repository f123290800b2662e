"""Mutations of a real bundle at the level of its members, re-signed where a key holder could.

Most verification code sits behind a signature check, so a mutation of a signed document is
re-signed with the key of the role that signs it (builder for the manifest, function-map for the
maps, collector for the seals), and the manifest is re-made over the altered members: the input
is then what an insider holding those keys could produce, and reaches the parsers and checks
behind the signatures. Without re-signing, the mutation tests the signature and digest checks.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import tarfile
from typing import Any

import zstandard
from fuzz_support import seed_keys
from hypothesis import strategies as st
from json_mutations import MUTATIONS, mutated_json
from tar_mutations import BYTE_OPS, apply_bytes

from stella_bundle.attest.dsse import sign_payload
from stella_bundle.bundle.layout import entry_order

Members = list[tuple[str, bytes]]
PAYLOAD_TYPE = "application/vnd.in-toto+json"


@functools.cache
def signer(role: str) -> Any:
    return seed_keys().signer(role)


def role_of(name: str) -> str:
    if name.startswith("manifest"):
        return "builder"
    if name.startswith("function-maps/"):
        return "function-map"
    return "collector"


def sign(payload: bytes, role: str) -> bytes:
    envelope = sign_payload(payload, PAYLOAD_TYPE, [signer(role)])
    return json.dumps(envelope.to_dict()).encode()


def payload_of(envelope: bytes) -> bytes:
    return base64.b64decode(json.loads(envelope)["payload"])


def remanifest(members: Members, manifest_payload: bytes) -> Members:
    """A new manifest over the members as they are now (as a builder with the key would)."""
    statement = json.loads(manifest_payload)
    body = [(n, d) for n, d in members if n not in ("manifest.json", "manifest.dsse.json")]
    files = {n: (hashlib.sha256(d).hexdigest(), len(d)) for n, d in body}
    listed = [{"path": n, "sha256": s, "size": z} for n, (s, z) in sorted(files.items())]
    statement["subject"] = [{"name": f["path"], "digest": {"sha256": f["sha256"]}} for f in listed]
    statement["predicate"]["files"] = listed
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    return [("manifest.json", payload), ("manifest.dsse.json", sign(payload, "builder")), *body]


def sort_members(members: Members) -> Members:
    head = [m for m in members if m[0] in ("manifest.json", "manifest.dsse.json")]
    body = [m for m in members if m[0] not in ("manifest.json", "manifest.dsse.json")]
    return head + sorted(body, key=lambda m: entry_order(m[0]))


def write_tar(members: Members) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_763_700_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# --- strategies --------------------------------------------------------------------------------

PICK = st.integers(min_value=0, max_value=64)
JSON_MUTATIONS = st.lists(MUTATIONS, min_size=1, max_size=2)

OPS = st.one_of(
    # A JSON member: for an envelope, its payload statement (re-signed) or the envelope itself.
    st.tuples(st.just("json"), PICK, JSON_MUTATIONS, st.sampled_from(["payload", "envelope"])),
    # One record (or line) of the last chunk of the chain, its seal re-signed to match.
    st.tuples(st.just("chunk"), PICK, JSON_MUTATIONS | st.tuples(BYTE_OPS)),
    # One line of the observations view.
    st.tuples(st.just("view"), PICK, JSON_MUTATIONS | st.tuples(BYTE_OPS)),
    st.tuples(st.just("bytes"), PICK, BYTE_OPS),
    st.tuples(st.just("rename"), PICK, st.sampled_from(["x", "/", "-", ".json", "é", "\u0301"])),
    st.tuples(st.just("drop"), PICK),
    st.tuples(st.just("dup"), PICK),
)

BundleRecipe = tuple[list[tuple[Any, ...]], bool, bool]
RECIPES: Any = st.tuples(
    st.lists(OPS, min_size=1, max_size=3),
    st.booleans() | st.just(True),  # re-make and re-sign the manifest (mostly)
    st.booleans() | st.just(True),  # keep the builder's entry order (mostly)
)


def _json_members(members: Members) -> list[int]:
    return [i for i, (n, _) in enumerate(members) if n.endswith(".json")]


def _mutate_lines(data: bytes, pick: int, how: Any) -> bytes:
    lines = data.split(b"\n")
    index = pick % len(lines)
    if isinstance(how, tuple):  # (byte op,); JSON mutations come as a list
        lines[index] = apply_bytes(lines[index], how[0])
    else:
        try:
            document = json.loads(lines[index])
        except ValueError:
            document = {}
        lines[index] = mutated_json(document, list(how))
    return b"\n".join(lines)


def _last_chunk(members: Members) -> tuple[int, int] | None:
    """Indexes of the last chunk and of its seal."""
    chunks = [i for i, (n, _) in enumerate(members) if n.endswith(".ndjson.zst")]
    if not chunks:
        return None
    chunk = chunks[-1]
    seal_name = members[chunk][0].replace(".ndjson.zst", ".seal.dsse.json")
    seals = [i for i, (n, _) in enumerate(members) if n == seal_name]
    return (chunk, seals[0]) if seals else None


def _reseal(members: Members, chunk: int, seal: int, content: bytes) -> None:
    """Replace the chunk's content and re-sign its seal with facts that match it."""
    compressed = zstandard.ZstdCompressor(level=1).compress(content)
    name, _ = members[chunk]
    members[chunk] = (name, compressed)
    statement = json.loads(payload_of(members[seal][1]))
    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(compressed).hexdigest()
    statement["predicate"]["content"].update(
        bytes=len(content),
        records=sum(1 for line in content.split(b"\n") if line.strip()),
        sha256=hashlib.sha256(content).hexdigest(),
    )
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    members[seal] = (members[seal][0], sign(payload, "collector"))


def apply_op(members: Members, op: tuple[Any, ...]) -> Members:
    """One mutation; an op that no longer applies (its target was broken by an earlier op, or
    is nested too deep for the test's own JSON tools) leaves the members as they were."""
    try:
        return _apply_op(list(members), op)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        return members
    except zstandard.ZstdError:
        return members


def _apply_op(members: Members, op: tuple[Any, ...]) -> Members:
    kind = op[0]
    if kind == "json":
        candidates = _json_members(members)
        index = candidates[op[1] % len(candidates)]
        name, data = members[index]
        if name.endswith(".dsse.json") and op[3] == "payload":
            payload = mutated_json(json.loads(payload_of(data)), op[2])
            members[index] = (name, sign(payload, role_of(name)))
            if name == "manifest.dsse.json":  # keep manifest.json the signed payload
                members[0] = ("manifest.json", payload)
        else:
            members[index] = (name, mutated_json(json.loads(data), op[2]))
    elif kind == "chunk":
        found = _last_chunk(members)
        if found is not None:
            chunk, seal = found
            content = zstandard.ZstdDecompressor().decompressobj().decompress(members[chunk][1])
            _reseal(members, chunk, seal, _mutate_lines(content, op[1], op[2]))
    elif kind == "view":
        views = [i for i, (n, _) in enumerate(members) if n.startswith("observations/")]
        if views:
            name, data = members[views[0]]
            members[views[0]] = (name, _mutate_lines(data, op[1], op[2]))
    else:
        index = op[1] % len(members)
        name, data = members[index]
        if kind == "bytes":
            members[index] = (name, apply_bytes(data, op[2]))
        elif kind == "rename":
            cut = op[1] % (len(name) + 1)
            members[index] = (name[:cut] + op[2] + name[cut:], data)
        elif kind == "drop":
            del members[index]
        elif kind == "dup":
            members.insert(index, members[index])
    return members


def mutate_bundle(members: Members, recipe: BundleRecipe) -> bytes:
    """Apply the recipe to the seed's members; return the new .stella.bundle.tgz bytes."""
    import gzip

    ops, resign, ordered = recipe
    manifest_touched = False
    for op in ops:
        before = members[:2]
        members = apply_op(members, op)
        manifest_touched |= members[:2] != before
    if resign and not manifest_touched:
        members = remanifest(members, members[0][1])
    if ordered:
        members = sort_members(members)
    return gzip.compress(write_tar(members), compresslevel=1, mtime=0)
